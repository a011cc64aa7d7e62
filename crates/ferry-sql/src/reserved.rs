//! Flink's reserved words. Flink (Calcite) refuses a reserved word as a name unless it is quoted
//! with backticks (`` `value` ``, `` `out` ``); sqlparser, which Ferry parses with, accepts many of
//! them. A job file Ferry accepts must be one Flink accepts, so an unquoted reserved word used as a
//! table, column, field or alias name is refused here, with its place and the quoted spelling.
//!
//! `flink_reserved.txt` is the list Flink's own parser reports (`FlinkSqlParserImpl`'s metadata,
//! `isReservedWord` over its tokens), one word a line, sorted; the test kit asks Flink again and
//! compares, so the list follows the Flink version the tests run.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::OnceLock;

use sqlparser::ast::{Expr, Ident, ObjectName, Query, SelectItem, SetExpr, TableFactor, Visit, Visitor};

use crate::error::{Pos, SqlError};

const LIST: &str = include_str!("flink_reserved.txt");

/// Flink's reserved words, upper case.
pub fn words() -> &'static HashSet<&'static str> {
    static WORDS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    WORDS.get_or_init(|| LIST.lines().map(str::trim).filter(|w| !w.is_empty()).collect())
}

pub fn is_reserved(word: &str) -> bool {
    words().contains(word.to_ascii_uppercase().as_str())
}

/// An unquoted reserved word used as a name: refused where it is.
pub(crate) fn check(ident: &Ident) -> Result<(), SqlError> {
    check_word(&ident.value, ident.quote_style.is_some(), Pos::from(ident.span.start))
}

/// [`check`] for a name read from tokens (the window table functions' DESCRIPTOR).
pub(crate) fn check_word(word: &str, quoted: bool, pos: Pos) -> Result<(), SqlError> {
    if !quoted && is_reserved(word) {
        return Err(SqlError::new(pos, format!("{word} is a reserved word in Flink SQL: quote it with backticks (`{word}`) to use it as a name")));
    }
    Ok(())
}

/// Every name a query uses: column references, tables, table and column aliases.
pub(crate) fn check_query(query: &Query) -> Result<(), SqlError> {
    match query.visit(&mut Names::default()) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The names in an expression (a computed column, a watermark).
pub(crate) fn check_expr(expr: &Expr) -> Result<(), SqlError> {
    match expr.visit(&mut Names::default()) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[derive(Default)]
struct Names {
    /// Time units given to functions as bare words (`TIMESTAMPDIFF(SECOND, a, b)`): keywords
    /// there, which sqlparser reads as identifiers.
    units: HashSet<(u64, u64)>,
}

const UNITS: [&str; 12] = ["MICROSECOND", "MILLISECOND", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "QUARTER", "YEAR", "DECADE", "CENTURY"];

fn found(ident: &Ident) -> ControlFlow<SqlError> {
    match check(ident) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => ControlFlow::Break(e),
    }
}

fn aliases(body: &SetExpr) -> ControlFlow<SqlError> {
    match body {
        SetExpr::Select(select) => {
            for item in &select.projection {
                if let SelectItem::ExprWithAlias { alias, .. } = item {
                    found(alias)?;
                }
            }
            ControlFlow::Continue(())
        }
        SetExpr::SetOperation { left, right, .. } => {
            aliases(left)?;
            aliases(right)
        }
        // A nested query is visited by itself.
        _ => ControlFlow::Continue(()),
    }
}

impl Visitor for Names {
    type Break = SqlError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<SqlError> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                found(&cte.alias.name)?;
            }
        }
        aliases(&query.body)
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<SqlError> {
        for part in &relation.0 {
            if let Some(ident) = part.as_ident() {
                found(ident)?;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<SqlError> {
        let alias = match factor {
            TableFactor::Table { alias, .. } | TableFactor::Derived { alias, .. } => alias.as_ref(),
            _ => None,
        };
        if let Some(alias) = alias {
            found(&alias.name)?;
            for column in &alias.columns {
                found(&column.name)?;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<SqlError> {
        match expr {
            Expr::Function(f) => {
                if let sqlparser::ast::FunctionArguments::List(list) = &f.args {
                    for arg in &list.args {
                        if let sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(Expr::Identifier(i))) = arg {
                            if i.quote_style.is_none() && UNITS.contains(&i.value.to_ascii_uppercase().as_str()) {
                                self.units.insert((i.span.start.line, i.span.start.column));
                            }
                        }
                    }
                }
                ControlFlow::Continue(())
            }
            Expr::Identifier(i) if self.units.contains(&(i.span.start.line, i.span.start.column)) => ControlFlow::Continue(()),
            Expr::Identifier(i) => found(i),
            Expr::CompoundIdentifier(parts) => parts.iter().try_for_each(found),
            _ => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(sql: &str) -> Option<String> {
        crate::parse::parse_script(sql).err().map(|e| e.to_string())
    }

    const TABLE: &str = "CREATE TABLE t (id BIGINT, `value` INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'kafka');\n";

    #[test]
    fn the_list_is_flinks() {
        assert!(words().len() > 400, "{}", words().len());
        for w in ["OUT", "VALUE", "DATETIME", "USER", "COUNT", "TIMESTAMP", "YEAR", "RESULT"] {
            assert!(is_reserved(w) && is_reserved(&w.to_lowercase()), "{w}");
        }
        for w in ["ID", "TS", "NAME", "PRICE", "WINDOW_START", "CUSTOMER", "AMOUNT"] {
            assert!(!is_reserved(w), "{w}");
        }
    }

    #[test]
    fn an_unquoted_reserved_word_as_a_name_is_refused_where_it_is() {
        let cases = [
            ("CREATE TABLE t (id BIGINT, out INT) WITH ('connector' = 'kafka');", "1:28: out is a reserved word"),
            ("CREATE TABLE t (id BIGINT, r ROW<value INT>) WITH ('connector' = 'kafka');", "1:34: value is a reserved word"),
            ("CREATE TABLE user (id BIGINT) WITH ('connector' = 'kafka');", "1:14: user is a reserved word"),
            (&format!("{TABLE}SELECT id AS result FROM t;"), "2:14: result is a reserved word"),
            (&format!("{TABLE}SELECT t.id, out FROM t;"), "2:14: out is a reserved word"),
            (&format!("{TABLE}SELECT x.id FROM t AS year;"), "2:23: year is a reserved word"),
            (&format!("{TABLE}SELECT * FROM t WHERE dateTime > 0;"), "2:23: dateTime is a reserved word"),
            (&format!("{TABLE}SELECT id FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(timestamp), INTERVAL '1' SECOND));"), "2:49: timestamp is a reserved word"),
            (&format!("{TABLE}CREATE TABLE s (id BIGINT, n AS id + `value`, m AS value * 2) WITH ('connector' = 'kafka');"), "2:52: value is a reserved word"),
        ];
        for (sql, want) in cases {
            let got = refusal(sql).unwrap_or_else(|| panic!("accepted: {sql}"));
            assert!(got.starts_with(want), "{sql}\n got {got}\nwant {want}");
            assert!(got.contains("quote it with backticks"), "{got}");
        }
    }

    #[test]
    fn quoted_names_keywords_functions_and_types_are_accepted() {
        let ok = [
            format!("{TABLE}SELECT id, `value`, COUNT(*) AS `count`, CAST(ts AS TIMESTAMP(3)) AS `out` FROM t GROUP BY id, `value`, ts;"),
            format!("{TABLE}SELECT id, EXTRACT(YEAR FROM ts), TIMESTAMPDIFF(SECOND, ts, ts), CURRENT_TIMESTAMP FROM t WHERE `value` > 0 AND ts > TIMESTAMP '2020-01-01 00:00:00';"),
            format!("{TABLE}SELECT `t`.`value` FROM t AS `t`;"),
        ];
        for sql in ok {
            assert_eq!(refusal(&sql), None, "{sql}");
        }
    }
}
