//! Planning a join (DataFusion's `Join` node) into [`crate::join::JoinPlan`]: each side's
//! operators, the equality keys taken from the ON condition, what remains of it as a filter over
//! the joined row, and whether it is an interval join (both sides' time attributes bounded by
//! each other, as Flink recognises one).

use std::sync::Arc;

use datafusion_common::{Column as DfColumn, DFSchema, ScalarValue};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::{BinaryExpr, Expr, JoinType, Operator};

use crate::error::{fail, Pos, Result};
use crate::join::{Interval, JoinKind, JoinPlan, Temporal};
use crate::ops::Step;
use crate::plan::{physical, translate, Provider, ScanTable};

/// Plans `j`; `condition` is a WHERE over a join without one (`FROM a, b WHERE a.k = b.k`),
/// taken as its ON condition.
pub(crate) fn join(provider: &Provider, j: &datafusion_expr::logical_plan::Join, condition: Option<&Expr>, pos: Pos, props: &ExecutionProps, steps: &mut Vec<Step>) -> Result<Arc<ScanTable>> {
    let kind = match j.join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        JoinType::Right => JoinKind::Right,
        JoinType::Full => JoinKind::Full,
        other => return fail(pos, format!("{other} joins: not supported yet (INNER, LEFT, RIGHT and FULL OUTER are)")),
    };
    if !steps.is_empty() {
        return fail(pos, "a join under other operators of the same table: not supported yet");
    }
    let mut sides: [Vec<Step>; 2] = [Vec::new(), Vec::new()];
    let left = translate(provider, &j.left, pos, props, &mut sides[0])?;
    let right = translate(provider, &j.right, pos, props, &mut sides[1])?;
    if sides.iter().flatten().any(|s| matches!(s, Step::Join(_))) {
        return fail(pos, "joins of more than two tables: not supported yet (join two, or write one join's result to a topic and read it)");
    }
    // A window table function's rows joined as they are would be a window join; a window
    // aggregate's rows (final, appended) join as any appended rows do.
    let window_aggregate = |side: &[Step]| side.iter().any(|s| matches!(s, Step::Aggregate(a) if a.window.is_some() || a.session_gap.is_some()));
    if sides.iter().any(|side| side.iter().any(|s| matches!(s, Step::Window { .. })) && !window_aggregate(side)) {
        return fail(pos, "a join of window table functions (a window join): not supported yet; a join of window aggregates is");
    }
    let schemas = [j.left.schema().clone(), j.right.schema().clone()];
    // The ON condition: equal keys (one side each), and the rest.
    let mut conjuncts: Vec<Expr> = j.on.iter().map(|(l, r)| l.clone().eq(r.clone())).collect();
    for f in j.filter.iter().chain(condition) {
        conjuncts.extend(datafusion_expr::utils::split_conjunction(f).into_iter().cloned());
    }
    let side_of = |e: &Expr| -> Option<usize> {
        let columns = e.column_refs();
        if columns.is_empty() {
            return None;
        }
        (0..2).find(|s| columns.iter().all(|c| schemas[*s].has_column(c)))
    };
    let mut keys: [Vec<Expr>; 2] = [Vec::new(), Vec::new()];
    let mut rest = Vec::new();
    for c in conjuncts {
        if let Expr::BinaryExpr(BinaryExpr { left: a, op: Operator::Eq, right: b }) = &c {
            match (side_of(a), side_of(b)) {
                (Some(0), Some(1)) => {
                    keys[0].push(a.as_ref().clone());
                    keys[1].push(b.as_ref().clone());
                    continue;
                }
                (Some(1), Some(0)) => {
                    keys[0].push(b.as_ref().clone());
                    keys[1].push(a.as_ref().clone());
                    continue;
                }
                _ => {}
            }
        }
        rest.push(c);
    }
    if keys[0].is_empty() {
        return fail(pos, "a join needs an equality between the two tables in its ON condition (a.k = b.k): a join without one would keep and compare every row of both");
    }
    // A side that aggregates has no time attribute any more (Flink's rule: a window's
    // window_end is a plain TIMESTAMP after the aggregate), so its joins are regular joins.
    let aggregated = |s: usize| sides[s].iter().any(|step| matches!(step, Step::Aggregate(_)));
    let time = [rowtime(&left, &schemas[0]).filter(|_| !aggregated(0)), rowtime(&right, &schemas[1]).filter(|_| !aggregated(1))];
    let temporal = match versioned_side(provider, &j.left).is_some() {
        true => return fail(pos, "FOR SYSTEM_TIME AS OF goes on the right of a join: the versioned table is looked up, the left table probes it"),
        false => match versioned_side(provider, &j.right) {
            Some(v) => Some(temporal(v, &right, &keys[1], time, time[0].map(|t| schemas[0].field(t).name().as_str()), kind, pos)?),
            None => None,
        },
    };
    let interval = if temporal.is_some() { None } else { interval(&rest, &schemas, time) };
    if let Some(i) = interval {
        if sides.iter().any(|s| crate::ops::updating(s)) {
            return fail(pos, "an interval join over an updating input: not supported (Flink's interval join takes appended rows only)");
        }
        if i.lower > i.upper {
            return fail(pos, format!("the join's time bounds leave no interval (right time - left time between {} ms and {} ms)", i.lower, i.upper));
        }
    }
    let physical_keys = |s: usize| keys[s].iter().map(|k| physical(k, &schemas[s], pos, props)).collect::<Result<Vec<_>>>();
    let keys = [physical_keys(0)?, physical_keys(1)?];
    let filter = match datafusion_expr::utils::conjunction(rest) {
        Some(f) => Some(physical(&f, &j.schema, pos, props)?),
        None => None,
    };
    steps.push(Step::Join(Box::new(JoinPlan {
        right,
        sides,
        schemas: [Arc::new(schemas[0].as_arrow().clone()), Arc::new(schemas[1].as_arrow().clone())],
        keys,
        filter,
        kind,
        interval,
        temporal,
        ttl: provider.state_ttl,
        output: Arc::new(j.schema.as_arrow().clone()),
    })));
    Ok(left)
}

/// The side's time attribute (its source's WATERMARK column, by name) in its rows, if it kept it.
fn rowtime(source: &ScanTable, schema: &DFSchema) -> Option<usize> {
    let (i, _) = source.watermark.as_ref()?;
    let name = source.schema.field(*i).name();
    schema.fields().iter().position(|f| f.name() == name)
}

/// A column plus a constant interval (`ts`, `ts + INTERVAL …`, `ts - INTERVAL …`), in ms.
fn time_offset(e: &Expr) -> Option<(&DfColumn, i64)> {
    match e {
        Expr::Column(c) => Some((c, 0)),
        Expr::Cast(c) => time_offset(&c.expr),
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Plus | Operator::Minus), right }) => {
            let (c, base) = time_offset(left)?;
            let ms = interval_ms(right)?;
            Some((c, if *op == Operator::Plus { base + ms } else { base - ms }))
        }
        _ => None,
    }
}

fn interval_ms(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000),
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds)),
        Expr::Cast(c) => interval_ms(&c.expr),
        _ => None,
    }
}

/// The bounds on `right time - left time` that the condition's conjuncts set, when it sets both.
fn interval(conjuncts: &[Expr], schemas: &[Arc<DFSchema>; 2], time: [Option<usize>; 2]) -> Option<Interval> {
    let [Some(lt), Some(rt)] = time else { return None };
    let is_time = |c: &DfColumn| -> Option<usize> {
        (0..2).find(|s| schemas[*s].has_column(c) && schemas[*s].index_of_column(c).ok() == Some(if *s == 0 { lt } else { rt }))
    };
    let (mut lower, mut upper) = (None::<i64>, None::<i64>);
    let mut bound = |a: &Expr, op: Operator, b: &Expr| {
        let (Some((ca, oa)), Some((cb, ob))) = (time_offset(a), time_offset(b)) else { return };
        let (Some(sa), Some(sb)) = (is_time(ca), is_time(cb)) else { return };
        if sa == sb {
            return;
        }
        // a + oa OP b + ob, as right - left against a constant.
        let (op, limit) = if sa == 0 {
            // left + oa OP right + ob  <=>  right - left  OP'  oa - ob
            let flipped = match op {
                Operator::Lt => Operator::Gt,
                Operator::LtEq => Operator::GtEq,
                Operator::Gt => Operator::Lt,
                Operator::GtEq => Operator::LtEq,
                _ => return,
            };
            (flipped, oa - ob)
        } else {
            (op, ob - oa)
        };
        match op {
            Operator::Lt => upper = Some(upper.map_or(limit - 1, |u| u.min(limit - 1))),
            Operator::LtEq => upper = Some(upper.map_or(limit, |u| u.min(limit))),
            Operator::Gt => lower = Some(lower.map_or(limit + 1, |l| l.max(limit + 1))),
            Operator::GtEq => lower = Some(lower.map_or(limit, |l| l.max(limit))),
            _ => {}
        }
    };
    for c in conjuncts {
        match c {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => bound(left, *op, right),
            Expr::Between(b) if !b.negated => {
                bound(&b.expr, Operator::GtEq, &b.low);
                bound(&b.expr, Operator::LtEq, &b.high);
            }
            _ => {}
        }
    }
    Some(Interval { time: [lt, rt], lower: lower?, upper: upper? })
}

/// The versioned table a join side reads (`FOR SYSTEM_TIME AS OF`), if it is one.
fn versioned_side<'a>(provider: &'a Provider, plan: &datafusion_expr::LogicalPlan) -> Option<&'a crate::temporal::Versioned> {
    use datafusion_expr::LogicalPlan as P;
    match plan {
        P::TableScan(scan) => provider.versioned(scan.table_name.table()),
        P::SubqueryAlias(a) => versioned_side(provider, &a.input),
        P::Projection(p) => versioned_side(provider, &p.input),
        P::Filter(f) => versioned_side(provider, &f.input),
        _ => None,
    }
}

/// A temporal join's checks (Flink's): an event-time `AS OF` the left side's time attribute, a
/// versioned table with a primary key and a time attribute, joined on its primary key.
fn temporal(v: &crate::temporal::Versioned, right: &ScanTable, right_keys: &[Expr], time: [Option<usize>; 2], left_time_name: Option<&str>, kind: JoinKind, pos: Pos) -> Result<Temporal> {
    if !matches!(kind, JoinKind::Inner | JoinKind::Left) {
        return fail(v.pos, "a temporal join is an INNER or LEFT JOIN");
    }
    let as_of = match &v.as_of {
        sqlparser::ast::Expr::Identifier(i) => i.value.clone(),
        sqlparser::ast::Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()).unwrap_or_default(),
        other => return fail(v.pos, format!("FOR SYSTEM_TIME AS OF {other}: the left table's time attribute is needed (a column with a WATERMARK)")),
    };
    let Some(left_time) = time[0] else {
        return fail(v.pos, format!("FOR SYSTEM_TIME AS OF {as_of}: the left table has no time attribute (declare a WATERMARK on it); processing-time temporal joins are not supported"));
    };
    let Some(right_time) = time[1] else {
        return fail(v.pos, format!("{} FOR SYSTEM_TIME AS OF: a versioned table needs a WATERMARK (its rows' times are the versions')", v.table));
    };
    if left_time_name != Some(as_of.as_str()) {
        return fail(v.pos, format!("FOR SYSTEM_TIME AS OF {as_of}: the left table's time attribute is {} (its WATERMARK column); processing-time temporal joins are not supported", left_time_name.unwrap_or("?")));
    }
    if right.table.primary_key.is_empty() {
        return fail(v.pos, format!("{} FOR SYSTEM_TIME AS OF: a versioned table needs a PRIMARY KEY", v.table));
    }
    let pk: std::collections::BTreeSet<&str> = right.table.primary_key.iter().map(|i| right.table.columns[*i].name.as_str()).collect();
    let joined: std::collections::BTreeSet<&str> = right_keys.iter().filter_map(|k| if let Expr::Column(c) = k { Some(c.name.as_str()) } else { None }).collect();
    if pk != joined || joined.len() != right_keys.len() {
        return fail(pos, format!("a temporal join joins on the versioned table's PRIMARY KEY ({}); this one on {}", pk.into_iter().collect::<Vec<_>>().join(", "), right_keys.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")));
    }
    Ok(Temporal { time: [left_time, right_time] })
}
