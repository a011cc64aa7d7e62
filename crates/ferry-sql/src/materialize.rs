//! `CREATE MATERIALIZED VIEW name [WITH (…)] AS SELECT …`: the query is planned as an INSERT's
//! is, its rows are kept by primary key in a [`crate::view::ViewTable`], and the endpoints'
//! queries (`'endpoint.NAME' = 'SELECT … FROM name WHERE col = {param}'`) are planned against the
//! view with their parameters as placeholders, then bound and compiled per request.
//!
//! Options (SQL Stream Builder's view settings): `primary-key` (default: the GROUP BY keys),
//! `retention` (a duration; rows not changed for that long go), `min-row-retention-count` (rows
//! kept whatever their age), `ignore-nulls` (a NULL does not overwrite a value), `endpoint.NAME`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion_common::config::ConfigOptions;
use datafusion_common::tree_node::TreeNode;
use datafusion_common::{ParamValues, ScalarValue};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::LogicalPlan;
use datafusion_sql::planner::SqlToRel;
use sqlparser::ast::Query;
use sqlparser::parser::Parser;

use crate::error::{fail, Pos, Result, SqlError};
use crate::format::{Format, JsonOptions};
use crate::ops::{Operators, Rows, Step};
use crate::parse::{FlinkDialect, OptionDdl};
use crate::plan::{analyze, df_error, filter_step, parser_options, project_step, scan_projection, translate_query, Pipeline, Provider, Sink};
use crate::view::{Endpoint, ViewPlan};

/// The built-in endpoints every view has.
pub const ALL: &str = "all";
pub const LOOKUP: &str = "lookup";

pub(crate) fn pipeline(provider: &mut Provider, pos: Pos, name: &str, options: &[OptionDdl], query: &Query) -> Result<Pipeline> {
    let planner = SqlToRel::new_with_options(&*provider, parser_options());
    let logical = planner.sql_statement_to_plan(sqlparser::ast::Statement::Query(Box::new(query.clone()))).map_err(|e| df_error(&e, pos))?;
    let logical = analyze(logical, provider, pos)?;
    let props = ExecutionProps::new();
    let mut steps = Vec::new();
    let source = translate_query(provider, &logical, pos, &props, &mut steps)?;
    let schema = Arc::new(logical.schema().as_arrow().clone());
    for (i, f) in schema.fields().iter().enumerate() {
        if schema.fields().iter().skip(i + 1).any(|g| g.name() == f.name()) {
            return fail(pos, format!("materialized view {name}: two columns are named {}; name them with AS", f.name()));
        }
    }
    let mut key_option = None;
    let mut retention = None;
    let mut min_rows = 0;
    let mut ignore_nulls = false;
    let mut endpoint_options = Vec::new();
    for o in options {
        match o.key.as_str() {
            "primary-key" => key_option = Some(o),
            "retention" => retention = Some(crate::plan::parse_duration(&o.value).map_err(|e| SqlError::new(o.pos, format!("'retention' = '{}': {e}", o.value)))?).filter(|d| !d.is_zero()),
            "min-row-retention-count" => min_rows = o.value.trim().parse().map_err(|_| SqlError::new(o.pos, format!("'min-row-retention-count' = '{}': not a whole number", o.value)))?,
            "ignore-nulls" => {
                ignore_nulls = match o.value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return fail(o.pos, format!("'ignore-nulls' = '{}': true or false", o.value)),
                }
            }
            k if k.starts_with("endpoint.") => endpoint_options.push(o),
            other => return fail(o.pos, format!("materialized view {name}: unknown option '{other}' (primary-key, retention, min-row-retention-count, ignore-nulls, endpoint.NAME)")),
        }
    }
    let column = |n: &str| schema.fields().iter().position(|f| f.name() == n);
    let key: Vec<usize> = match key_option {
        Some(o) => {
            let mut key = Vec::new();
            for part in o.value.split(',').map(str::trim) {
                match column(part) {
                    Some(i) if !key.contains(&i) => key.push(i),
                    Some(_) => return fail(o.pos, format!("'primary-key': {part} is listed twice")),
                    None => return fail(o.pos, format!("'primary-key': the view has no column {part}")),
                }
            }
            key
        }
        None => {
            let group_keys: Option<Vec<String>> = steps.iter().rev().find_map(|s| match s {
                Step::Aggregate(a) => Some((0..a.keys.len()).map(|k| a.output.field(k).name().clone()).collect()),
                _ => None,
            });
            let Some(group_keys) = group_keys.filter(|k| !k.is_empty()) else {
                return fail(pos, format!("materialized view {name} needs a primary key: the query has no GROUP BY, so declare one with WITH ('primary-key' = 'column, …')"));
            };
            let mut key = Vec::new();
            for k in &group_keys {
                match column(k) {
                    Some(i) => key.push(i),
                    None => return fail(pos, format!("materialized view {name}: the GROUP BY key {k} is not one of its columns; select it, or declare WITH ('primary-key' = 'column, …')")),
                }
            }
            key
        }
    };
    provider.materialized.insert(name.to_string(), schema.clone());
    let mut endpoints = BTreeMap::new();
    for o in endpoint_options {
        let endpoint = o.key.trim_start_matches("endpoint.");
        if endpoint.is_empty() || !endpoint.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return fail(o.pos, format!("endpoint name '{endpoint}': letters, digits, '-' and '_'"));
        }
        if endpoint == ALL || endpoint == LOOKUP {
            return fail(o.pos, format!("endpoint '{endpoint}' is built in"));
        }
        endpoints.insert(endpoint.to_string(), plan_endpoint(provider, name, o)?);
    }
    let updating = crate::ops::updating(&steps);
    let view = ViewPlan { name: name.to_string(), pos, schema: schema.clone(), key, retention, min_rows, ignore_nulls, endpoints };
    Ok(Pipeline { pos, source, steps, sink: Sink::View(Arc::new(view)), output: schema, updating, idle_timeout: None, checkpoint_interval: None, parallelism: None, logical: format!("{}", logical.display_indent()) })
}

/// An endpoint's query: `{param}` becomes the placeholder `$param`; it must read the view only.
fn plan_endpoint(provider: &Provider, view: &str, o: &OptionDdl) -> Result<Endpoint> {
    let mut sql = String::new();
    let mut rest = o.value.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return fail(o.pos, format!("'{}': an unclosed {{", o.key));
        };
        let param = &rest[open + 1..open + close];
        if param.is_empty() || !param.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || param.starts_with(|c: char| c.is_ascii_digit()) {
            return fail(o.pos, format!("'{}': parameter {{{param}}}: letters, digits and '_'", o.key));
        }
        if ["key", "limit", "offset"].contains(&param) {
            return fail(o.pos, format!("'{}': parameter {{{param}}} is taken by the API (key, limit, offset)", o.key));
        }
        sql.push_str(&rest[..open]);
        sql.push('$');
        sql.push_str(param);
        rest = &rest[open + close + 1..];
    }
    sql.push_str(rest);
    let what = |m: String| SqlError::new(o.pos, format!("'{}': {m}", o.key));
    let query = Parser::new(&FlinkDialect).try_with_sql(&sql).and_then(|mut p| p.parse_query()).map_err(|e| what(e.to_string()))?;
    let planner = SqlToRel::new_with_options(provider, parser_options());
    let plan = planner.sql_statement_to_plan(sqlparser::ast::Statement::Query(query)).map_err(|e| what(df_error(&e, o.pos).message))?;
    let plan = analyze(plan, provider, o.pos).map_err(|e| what(e.message))?;
    let mut reads = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            reads.push(scan.table_name.table().to_string());
        }
        Ok(datafusion_common::tree_node::TreeNodeRecursion::Continue)
    })
    .map_err(|e| what(e.to_string()))?;
    if reads.iter().any(|r| r != view) || reads.is_empty() {
        return fail(o.pos, format!("'{}': an endpoint reads its own view {view} only", o.key));
    }
    let types = plan.get_parameter_types().map_err(|e| what(e.to_string()))?;
    let mut params: Vec<(String, DataType)> = types.into_iter().map(|(k, t)| (k.trim_start_matches('$').to_string(), t.unwrap_or(DataType::Utf8))).collect();
    params.sort();
    let endpoint = Endpoint { sql: o.value.clone(), plan, params };
    // Compiles now, with NULL for every parameter: a query Ferry cannot run is refused here.
    let nulls: HashMap<String, ScalarValue> = endpoint.params.iter().map(|(k, t)| (k.clone(), ScalarValue::try_from(t).unwrap_or(ScalarValue::Null))).collect();
    bind(&endpoint, nulls).map_err(what)?;
    Ok(endpoint)
}

/// A request's parameters, parsed into their types.
pub fn parameters(endpoint: &Endpoint, given: &HashMap<String, String>) -> std::result::Result<HashMap<String, ScalarValue>, String> {
    let mut out = HashMap::new();
    for (name, t) in &endpoint.params {
        let Some(text) = given.get(name) else { return Err(format!("parameter {name} is required")) };
        let value = ScalarValue::try_from_string(text.clone(), t).map_err(|_| format!("parameter {name}: '{text}' is not a {}", crate::types::FlinkType::from_arrow(t).map_or_else(|| t.to_string(), |f| f.to_string())))?;
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// The endpoint's query with `values` bound, as operators over the view's rows.
pub fn bind(endpoint: &Endpoint, values: HashMap<String, ScalarValue>) -> std::result::Result<Vec<Step>, String> {
    let values = ParamValues::Map(values.into_iter().map(|(k, v)| (k, v.into())).collect());
    let plan = endpoint.plan.clone().with_param_values(values).map_err(|e| e.strip_backtrace().to_string())?;
    let plan = datafusion_optimizer::Analyzer::new().execute_and_check(plan, &ConfigOptions::default(), |_, _| {}).map_err(|e| e.strip_backtrace().to_string())?;
    let mut steps = Vec::new();
    compile(&plan, &mut steps).map_err(|e| e.message)?;
    Ok(steps)
}

fn compile(plan: &LogicalPlan, steps: &mut Vec<Step>) -> Result<()> {
    let props = ExecutionProps::new();
    let pos = Pos::default();
    match plan {
        LogicalPlan::TableScan(scan) => {
            steps.extend(scan_projection(scan, pos, &props)?);
            Ok(())
        }
        LogicalPlan::Filter(f) => {
            compile(&f.input, steps)?;
            steps.push(filter_step(f, pos, &props)?);
            Ok(())
        }
        LogicalPlan::Projection(p) => {
            compile(&p.input, steps)?;
            steps.push(project_step(p, pos, &props)?);
            Ok(())
        }
        LogicalPlan::SubqueryAlias(a) => compile(&a.input, steps),
        _ => fail(pos, "an endpoint selects columns and filters rows (no aggregates, joins, ORDER BY or LIMIT; paging is limit and offset)"),
    }
}

/// Runs an endpoint's operators over the view's rows.
pub fn evaluate(steps: &[Step], rows: RecordBatch) -> std::result::Result<RecordBatch, String> {
    let mut ops = Operators::new(steps)?;
    Ok(ops.process(Rows::new(rows), i64::MIN)?.batch)
}

/// Rows as JSON objects (column name to value; timestamps as Flink's JSON format writes them).
pub fn json_rows(batch: &RecordBatch) -> std::result::Result<Vec<String>, String> {
    let encoded = crate::format::encode(&Format::Json(JsonOptions::default()), batch)?;
    Ok(encoded.into_iter().map(|v| v.map_or_else(|| "null".to_string(), |b| String::from_utf8_lossy(&b).into_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::RowKind;
    use crate::plan::plan_script;
    use crate::view::ViewTable;
    use arrow::array::{Int64Array, Int8Array, StringArray};

    const BIDS: &str = "CREATE TABLE bids (item STRING, price BIGINT) WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\n";

    #[test]
    fn a_view_is_keyed_by_its_group_and_endpoints_bind_their_parameters() {
        let job = plan_script(&format!("{BIDS}CREATE MATERIALIZED VIEW totals WITH (\n  'retention' = '1 h',\n  'endpoint.cheap' = 'SELECT item, total FROM totals WHERE total < {{max}} AND item <> ''x'''\n) AS SELECT item, COUNT(*) AS n, SUM(price) AS total FROM bids GROUP BY item;")).unwrap();
        let p = &job.pipelines[0];
        let Sink::View(v) = &p.sink else { panic!("a view") };
        assert_eq!(v.key, [0]);
        let cheap = &v.endpoints["cheap"];
        assert_eq!(cheap.params, [("max".to_string(), DataType::Int64)]);
        let mut t = ViewTable::new(v.clone()).unwrap();
        let batch = RecordBatch::try_new(
            crate::format::nullable_like(&v.schema),
            vec![Arc::new(StringArray::from(vec!["a", "b", "c"])), Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(Int64Array::from(vec![10, 50, 5]))],
        )
        .unwrap();
        t.apply(&Rows { batch, kinds: Some(Int8Array::from(vec![RowKind::Insert as i8; 3])), watermarks: None }, 0).unwrap();
        let given: HashMap<String, String> = [("max".to_string(), "20".to_string())].into();
        let steps = bind(cheap, parameters(cheap, &given).unwrap()).unwrap();
        let out = evaluate(&steps, t.batch().unwrap()).unwrap();
        assert_eq!(json_rows(&out).unwrap(), [r#"{"item":"a","total":10}"#, r#"{"item":"c","total":5}"#]);
        let bad: HashMap<String, String> = [("max".to_string(), "lots".to_string())].into();
        assert_eq!(parameters(cheap, &bad).unwrap_err(), "parameter max: 'lots' is not a BIGINT");
        assert_eq!(parameters(cheap, &HashMap::new()).unwrap_err(), "parameter max is required");
    }

    #[test]
    fn view_mistakes_are_refused_where_they_are_written() {
        let e = plan_script(&format!("{BIDS}CREATE MATERIALIZED VIEW v AS SELECT item, price FROM bids;")).err().unwrap();
        assert!(e.message.contains("needs a primary key"), "{e}");
        let e = plan_script(&format!("{BIDS}CREATE MATERIALIZED VIEW v WITH ('primary-key' = 'nope') AS SELECT item, price FROM bids;")).err().unwrap();
        assert!(e.message.contains("the view has no column nope") && e.pos.line == 2, "{e}");
        let e = plan_script(&format!("{BIDS}CREATE MATERIALIZED VIEW v WITH ('primary-key' = 'item', 'endpoint.x' = 'SELECT COUNT(*) FROM v') AS SELECT item, price FROM bids;")).err().unwrap();
        assert!(e.message.contains("an endpoint selects columns and filters rows"), "{e}");
        let e = plan_script(&format!("{BIDS}CREATE MATERIALIZED VIEW v WITH ('primary-key' = 'item', 'endpoint.x' = 'SELECT * FROM bids') AS SELECT item, price FROM bids;")).err().unwrap();
        assert!(e.message.contains("reads its own view v only"), "{e}");
        let e = plan_script(&format!("{BIDS}CREATE MATERIALIZED VIEW v WITH ('primary-key' = 'item', 'retain' = '5') AS SELECT item, price FROM bids;")).err().unwrap();
        assert!(e.message.contains("unknown option 'retain'"), "{e}");
        // An append-only query keyed by a declared column works too.
        plan_script(&format!("{BIDS}CREATE MATERIALIZED VIEW v WITH ('primary-key' = 'item', 'endpoint.by-price' = 'SELECT * FROM v WHERE price > {{p}}') AS SELECT item, price FROM bids;")).unwrap();
    }
}
