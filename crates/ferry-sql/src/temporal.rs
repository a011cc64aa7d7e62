//! `FOR SYSTEM_TIME AS OF`: a table read as versions over time (Flink's temporal join).
//!
//! DataFusion's planner ignores a relation's version, so a query naming `rates FOR SYSTEM_TIME
//! AS OF o.ts` would silently become a regular join. Before planning, each such relation is
//! renamed `__ferry_versioned_N` (aliased as it was written, so `rates.x` still resolves) and the
//! `AS OF` expression is kept; the provider answers that name with the table's columns, and the
//! join planner sees a versioned right side.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart, Query, SetExpr, TableAlias, TableFactor, TableVersion, TableWithJoins};

use crate::error::{Pos, Result, SqlError};

pub const PREFIX: &str = "__ferry_versioned_";

/// A relation read `FOR SYSTEM_TIME AS OF` an expression.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub table: String,
    /// The `AS OF` expression, as written (`o.ts`).
    pub as_of: sqlparser::ast::Expr,
    pub pos: Pos,
}

/// Renames every versioned relation of `query` and records it in `out`.
pub fn rewrite(query: &mut Query, pos: Pos, out: &mut Vec<Versioned>) -> Result<()> {
    set_expr(&mut query.body, pos, out)
}

fn set_expr(body: &mut SetExpr, pos: Pos, out: &mut Vec<Versioned>) -> Result<()> {
    match body {
        SetExpr::Select(select) => {
            for t in &mut select.from {
                table_with_joins(t, pos, out)?;
            }
            Ok(())
        }
        SetExpr::Query(q) => rewrite(q, pos, out),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr(left, pos, out)?;
            set_expr(right, pos, out)
        }
        _ => Ok(()),
    }
}

fn table_with_joins(t: &mut TableWithJoins, pos: Pos, out: &mut Vec<Versioned>) -> Result<()> {
    factor(&mut t.relation, pos, out)?;
    for j in &mut t.joins {
        factor(&mut j.relation, pos, out)?;
    }
    Ok(())
}

fn factor(f: &mut TableFactor, pos: Pos, out: &mut Vec<Versioned>) -> Result<()> {
    match f {
        TableFactor::Table { name, alias, version, .. } => {
            let Some(v) = version.take() else { return Ok(()) };
            let TableVersion::ForSystemTimeAsOf(as_of) = v else {
                return Err(SqlError::new(pos, format!("{name}: only FOR SYSTEM_TIME AS OF is supported as a table version")));
            };
            let table = name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.clone()).unwrap_or_default();
            if alias.is_none() {
                *alias = Some(TableAlias { explicit: true, name: Ident::new(table.clone()), columns: Vec::new(), at: None });
            }
            *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(format!("{PREFIX}{}", out.len())))]);
            out.push(Versioned { table, as_of, pos });
            Ok(())
        }
        TableFactor::Derived { subquery, .. } => rewrite(subquery, pos, out),
        TableFactor::NestedJoin { table_with_joins: t, .. } => table_with_joins(t, pos, out),
        _ => Ok(()),
    }
}
