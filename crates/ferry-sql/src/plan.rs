//! From a parsed job file to what runs: tables, and per `INSERT` a pipeline of Arrow operators
//! from a source table to a sink table. DataFusion plans each query (SQL to a logical plan, with
//! Flink's identifier rules) and compiles its expressions; the logical plan is then translated
//! node by node into Ferry's operators, and a node Ferry cannot run yet is refused with its place
//! in the file. Pure: nothing here touches a cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion_common::config::ConfigOptions;
use datafusion_common::tree_node::TreeNode;
use datafusion_common::{Column as DfColumn, DFSchema, DataFusionError, TableReference};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::planner::ExprPlanner;
use datafusion_expr::{AggregateUDF, Expr, ExprSchemable, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_sql::planner::{ContextProvider, ParserOptions, PlannerContext, SqlToRel};

use crate::catalog::{ColumnSource, Table};
use crate::error::{fail, Pos, Result, SqlError};
use crate::ops::{Aggregate, AggregatePlan, Step};
use crate::parse::{parse_script, Insert, Script, Statement};
use crate::tvf::WindowTvf;

/// A whole job: its tables and what runs.
pub struct Job {
    pub settings: Vec<(String, String)>,
    pub tables: BTreeMap<String, Arc<ScanTable>>,
    pub pipelines: Vec<Pipeline>,
}

/// A table as its readers see it: every column (physical, metadata, computed) with its Arrow
/// type, and the computed columns' compiled expressions.
pub struct ScanTable {
    pub table: Table,
    /// All columns, in declaration order.
    pub schema: SchemaRef,
    /// Physical and metadata columns, in order: what is decoded and attached.
    pub base: SchemaRef,
    /// For each column of `schema`: its index in `base`, or the expression computing it from `base`.
    pub columns: Vec<ColumnPlan>,
    /// The watermark: rowtime column index in `schema` and the expression over `schema`.
    /// For a processing-time attribute, the column itself.
    pub watermark: Option<(usize, Arc<dyn PhysicalExpr>)>,
    /// The time attribute is processing time (`p AS PROCTIME()`, no WATERMARK): the
    /// watermark follows the wall clock.
    pub processing_time: bool,
}

pub enum ColumnPlan {
    Base(usize),
    Computed(Arc<dyn PhysicalExpr>),
}

/// One `INSERT`: records of `source` through `steps` into `sink`.
pub struct Pipeline {
    pub pos: Pos,
    pub source: Arc<ScanTable>,
    pub steps: Vec<Step>,
    pub sink: Sink,
    /// The sink's persisted columns, in order: what `steps` produce.
    pub output: SchemaRef,
    /// Whether the output is a changelog (an updating aggregate): only upsert-kafka takes it.
    pub updating: bool,
    /// `SET 'table.exec.source.idle-timeout'`: a source partition without rows this long does
    /// not hold the watermark back.
    pub idle_timeout: Option<std::time::Duration>,
    /// `SET 'execution.checkpointing.interval'` (with `--state-dir`; 10 s when not set).
    pub checkpoint_interval: Option<std::time::Duration>,
    /// `SET 'parallelism.default'`: the pipeline's subtasks (`crate::subtasks`); when not set,
    /// the run's default (the machine's cores).
    pub parallelism: Option<usize>,
    /// The logical plan, for `explain`.
    pub logical: String,
}

/// Where a pipeline's rows go: a table (a topic) or a materialized view (served over REST).
pub enum Sink {
    Table(Arc<ScanTable>),
    View(Arc<crate::view::ViewPlan>),
    /// `ferry sql sample`: rows printed as they arrive, with their change kind.
    Print(SchemaRef),
}

impl Sink {
    pub fn name(&self) -> &str {
        match self {
            Sink::Table(t) => &t.table.name,
            Sink::View(v) => &v.name,
            Sink::Print(_) => "sample",
        }
    }
}

/// Parses and plans a job file.
pub fn plan_script(text: &str) -> Result<Job> {
    plan(&parse_script(text)?)
}

/// DataFusion's view of a table or view.
#[derive(Debug)]
struct Source {
    schema: SchemaRef,
}

impl TableSource for Source {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// What queries may name: tables, views, and the built-in functions.
pub(crate) struct Provider {
    tables: HashMap<String, Arc<ScanTable>>,
    views: HashMap<String, (LogicalPlan, Pos)>,
    /// Materialized views (their endpoints' queries read them).
    pub(crate) materialized: HashMap<String, SchemaRef>,
    windows: Vec<WindowTvf>,
    functions: HashMap<String, Arc<ScalarUDF>>,
    aggregates: HashMap<String, Arc<AggregateUDF>>,
    planners: Vec<Arc<dyn ExprPlanner>>,
    options: ConfigOptions,
    /// `SET 'table.exec.state.ttl'`: how long a regular join keeps a row it has not seen again.
    pub(crate) state_ttl: Option<std::time::Duration>,
    /// Tables read `FOR SYSTEM_TIME AS OF` (by `__ferry_versioned_N`).
    pub(crate) versioned: Vec<crate::temporal::Versioned>,
}

impl Provider {
    fn new() -> Self {
        let mut functions = HashMap::new();
        for f in datafusion_functions::all_default_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                functions.insert(name.to_ascii_lowercase(), f.clone());
            }
        }
        // Flink's names DataFusion lacks.
        functions.insert("mod".to_string(), Arc::new(crate::functions::modulo()));
        functions.insert("proctime".to_string(), Arc::new(crate::functions::proctime()));
        let mut aggregates = HashMap::new();
        for f in datafusion_functions_aggregate::all_default_aggregate_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                aggregates.insert(name.to_ascii_lowercase(), f.clone());
            }
        }
        // AVG typed as Flink types it (an integer column's average is of its type).
        aggregates.insert("avg".to_string(), Arc::new(AggregateUDF::from(crate::functions::FlinkAvg::new())));
        let planners: Vec<Arc<dyn ExprPlanner>> = vec![
            Arc::new(datafusion_functions::core::planner::CoreFunctionPlanner::default()),
            Arc::new(datafusion_functions::unicode::planner::UnicodeFunctionPlanner),
            Arc::new(datafusion_functions::datetime::planner::DatetimeFunctionPlanner),
            // COUNT(*) as COUNT(1).
            Arc::new(datafusion_functions_aggregate::planner::AggregateFunctionPlanner),
        ];
        Provider { tables: HashMap::new(), views: HashMap::new(), materialized: HashMap::new(), windows: Vec::new(), functions, aggregates, planners, options: ConfigOptions::default(), state_ttl: None, versioned: Vec::new() }
    }
}

impl Provider {
    /// The window table function a `__ferry_window_N` name stands for.
    fn window(&self, name: &str) -> Option<&WindowTvf> {
        name.strip_prefix(crate::tvf::PREFIX).and_then(|n| n.parse::<usize>().ok()).and_then(|n| self.windows.get(n))
    }

    /// The relation a `__ferry_versioned_N` name stands for.
    pub(crate) fn versioned(&self, name: &str) -> Option<&crate::temporal::Versioned> {
        name.strip_prefix(crate::temporal::PREFIX).and_then(|n| n.parse::<usize>().ok()).and_then(|n| self.versioned.get(n))
    }

    /// A table's or view's columns.
    fn relation_schema(&self, name: &str) -> Option<SchemaRef> {
        if let Some(t) = self.tables.get(name) {
            return Some(t.schema.clone());
        }
        self.views.get(name).map(|(plan, _)| Arc::new(plan.schema().as_arrow().clone()))
    }
}

impl ContextProvider for Provider {
    fn get_table_source(&self, name: TableReference) -> datafusion_common::Result<Arc<dyn TableSource>> {
        let key = name.table();
        if let Some(t) = self.tables.get(key) {
            return Ok(Arc::new(Source { schema: t.schema.clone() }));
        }
        if let Some((plan, _)) = self.views.get(key) {
            return Ok(Arc::new(Source { schema: Arc::new(plan.schema().as_arrow().clone()) }));
        }
        if let Some(schema) = self.materialized.get(key) {
            return Ok(Arc::new(Source { schema: schema.clone() }));
        }
        if let Some(v) = self.versioned(key) {
            return match self.tables.get(&v.table) {
                Some(t) => Ok(Arc::new(Source { schema: t.schema.clone() })),
                None => Err(DataFusionError::Plan(format!("{} FOR SYSTEM_TIME AS OF: a versioned table is a table declared with CREATE TABLE (with a PRIMARY KEY and a WATERMARK)", v.table))),
            };
        }
        if let Some(tvf) = self.window(key) {
            let input = self.relation_schema(&tvf.table).ok_or_else(|| DataFusionError::Plan(format!("table or view {} is not declared in the job file", tvf.table)))?;
            let time = input.index_of(&tvf.time_column).map_err(|_| DataFusionError::Plan(format!("{} has no column {}", tvf.table, tvf.time_column)))?;
            return Ok(Arc::new(Source { schema: crate::ops::window_schema(&input, time) }));
        }
        Err(DataFusionError::Plan(format!("table or view {key} is not declared in the job file")))
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.functions.get(&name.to_ascii_lowercase()).cloned()
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.aggregates.get(&name.to_ascii_lowercase()).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        name.eq_ignore_ascii_case("row_number").then(|| Arc::new(WindowUDF::from(crate::topn::RowNumber::default())))
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.aggregates.keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        vec!["row_number".to_string()]
    }
}

pub(crate) fn parser_options() -> ParserOptions {
    ParserOptions {
        // Flink: `1.5` is DECIMAL(2, 1), identifiers keep their case.
        parse_float_as_decimal: true,
        enable_ident_normalization: false,
        support_varchar_with_length: true,
        enable_options_value_normalization: false,
        collect_spans: true,
        map_string_types_to_utf8view: false,
        default_null_ordering: datafusion_sql::planner::NullOrdering::NullsMax,
    }
}

/// A DataFusion error as a job error: at the place DataFusion names, else at `pos`.
pub(crate) fn df_error(e: &DataFusionError, pos: Pos) -> SqlError {
    let at = e.diagnostic().and_then(|d| d.span).filter(|s| s.start.line > 0).map_or(pos, |s| Pos::new(s.start.line, s.start.column));
    let message = match e.diagnostic() {
        Some(d) => d.message.clone(),
        None => e.strip_backtrace().to_string(),
    };
    let message = message.strip_prefix("Error during planning: ").unwrap_or(&message).to_string();
    SqlError::new(at, message)
}

pub fn plan(script: &Script) -> Result<Job> {
    plan_as(script, false)
}

/// Plans the last statement of `script`, a query, for `ferry sql sample`: the tables, views and
/// settings before it are used, their INSERTs and materialized views are not run.
/// `query` sampled over the tables and views of `tables` (a job file's text, its INSERTs not
/// run): one parse sees both, and a mistake's place is told in the text it is in (the error's
/// flag: true in the query, false in the tables).
pub fn plan_sample_over(tables: &str, query: &str) -> std::result::Result<Job, (bool, SqlError)> {
    let query = query.trim().trim_end_matches(';');
    let head = format!("{tables}\n;\n");
    let table_lines = head.matches('\n').count() as u64;
    let combined = format!("{head}{query}");
    crate::parse::parse_script(&combined).and_then(|s| plan_sample(&s)).map_err(|mut e| {
        let in_query = e.pos.line > table_lines;
        if in_query {
            e.pos = Pos::new(e.pos.line - table_lines, e.pos.column);
        }
        (in_query, e)
    })
}

pub fn plan_sample(script: &Script) -> Result<Job> {
    let Some(last) = script.statements.last() else { return fail(Pos::new(1, 1), "no query to sample") };
    if !matches!(last.statement, Statement::Select(_)) {
        return fail(last.pos, "the statement to sample is a SELECT query");
    }
    plan_as(script, true)
}

fn plan_as(script: &Script, sample: bool) -> Result<Job> {
    let statements = &script.statements;
    let mut provider = Provider::new();
    provider.windows = script.windows.clone();
    provider.versioned = script.versioned.clone();
    let mut settings = Vec::new();
    let mut inserts: Vec<(Pos, &Insert)> = Vec::new();
    let mut materialized = Vec::new();
    let mut sampled = None;
    for s in statements {
        match &s.statement {
            Statement::CreateTable(ddl) => {
                if provider.tables.contains_key(&ddl.name) || provider.views.contains_key(&ddl.name) {
                    return fail(s.pos, format!("{} is declared twice", ddl.name));
                }
                let table = Table::from_ddl(ddl, s.pos)?;
                let scan = scan_table(table, &provider)?;
                provider.tables.insert(ddl.name.clone(), Arc::new(scan));
            }
            Statement::CreateView { name, query } => {
                if provider.tables.contains_key(name) || provider.views.contains_key(name) {
                    return fail(s.pos, format!("{name} is declared twice"));
                }
                let planner = SqlToRel::new_with_options(&provider, parser_options());
                let plan = planner.sql_statement_to_plan(sqlparser::ast::Statement::Query(query.clone())).map_err(|e| df_error(&e, s.pos))?;
                let plan = analyze(plan, &provider, s.pos)?;
                provider.views.insert(name.clone(), (plan, s.pos));
            }
            Statement::Insert(_) | Statement::StatementSet(_) | Statement::CreateMaterializedView { .. } if sample => {}
            Statement::Select(query) if sample => sampled = Some((s.pos, query)),
            Statement::Insert(insert) => inserts.push((s.pos, insert)),
            Statement::StatementSet(list) => inserts.extend(list.iter().map(|(p, i)| (*p, i))),
            Statement::Set { key, value } => settings.push((key.clone(), value.clone())),
            Statement::CreateMaterializedView { name, options, query } => {
                if provider.tables.contains_key(name) || provider.views.contains_key(name) || materialized.iter().any(|(_, n, _, _)| *n == name) {
                    return fail(s.pos, format!("{name} is declared twice"));
                }
                materialized.push((s.pos, name, options, query));
            }
            Statement::Select(_) => {
                return fail(s.pos, "a query in a job file must write its rows somewhere: INSERT INTO a table (or sample it with `ferry sql sample`)");
            }
        }
    }
    for (key, _) in &settings {
        if !KNOWN_SETTINGS.contains(&key.as_str()) {
            let pos = statements.iter().find(|s| matches!(&s.statement, Statement::Set { key: k, .. } if k == key)).map_or_else(Pos::default, |s| s.pos);
            return fail(pos, format!("setting '{key}' is not supported (known: {})", KNOWN_SETTINGS.join(", ")));
        }
    }
    let mut idle_timeout = None;
    let mut checkpoint_interval = None;
    let mut parallelism = None;
    for s in statements {
        if let Statement::Set { key, value } = &s.statement {
            let duration = || parse_duration(value).map_err(|e| SqlError::new(s.pos, format!("'{key}' = '{value}': {e}")));
            match key.as_str() {
                "table.exec.source.idle-timeout" => idle_timeout = Some(duration()?),
                "execution.checkpointing.interval" => checkpoint_interval = Some(duration()?).filter(|d| !d.is_zero()),
                "table.exec.state.ttl" => provider.state_ttl = Some(duration()?).filter(|d| !d.is_zero()),
                "parallelism.default" => match value.trim().parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => parallelism = Some(n),
                    _ => return fail(s.pos, format!("'parallelism.default' = '{value}': a number of subtasks from 1 to 256 is expected")),
                },
                _ => {}
            }
        }
    }
    let mut pipelines = Vec::new();
    for (pos, insert) in inserts {
        pipelines.push(pipeline(&provider, pos, insert)?);
    }
    for (pos, name, options, query) in materialized {
        pipelines.push(crate::materialize::pipeline(&mut provider, pos, name, options, query)?);
    }
    if let Some((pos, query)) = sampled {
        pipelines.push(sample_pipeline(&provider, pos, query)?);
    }
    for p in &mut pipelines {
        p.idle_timeout = idle_timeout;
        p.checkpoint_interval = checkpoint_interval;
        p.parallelism = parallelism;
    }
    if pipelines.is_empty() {
        return fail(Pos::new(1, 1), "the job has no INSERT INTO or CREATE MATERIALIZED VIEW: nothing would run");
    }
    let tables = provider.tables.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(Job { settings, tables, pipelines })
}

/// `SET` keys a job may carry (Flink's; the others are refused rather than ignored).
const KNOWN_SETTINGS: &[&str] = &["pipeline.name", "table.exec.state.ttl", "table.exec.source.idle-timeout", "execution.checkpointing.interval", "parallelism.default", "table.local-time-zone"];

/// A duration as Flink writes them: `500 ms`, `5 s`, `10 min`, `1 h`, `1 d` (a bare number is
/// milliseconds).
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| "expected a whole number and a unit, as '5 s'".to_string())?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "m" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => return Err(format!("unknown unit '{other}' (ms, s, min, h, d)")),
    };
    n.checked_mul(ms).map(std::time::Duration::from_millis).ok_or_else(|| "too long".to_string())
}

/// A table's columns as Arrow fields, and its computed columns and watermark compiled.
fn scan_table(table: Table, provider: &Provider) -> Result<ScanTable> {
    let qualifier = TableReference::bare(table.name.as_str());
    let mut base_fields = Vec::new();
    let mut plans = Vec::new();
    for c in &table.columns {
        match &c.source {
            ColumnSource::Computed(_) => plans.push(None),
            _ => {
                plans.push(Some(base_fields.len()));
                base_fields.push(Field::new(&c.name, c.ty.arrow(), c.nullable));
            }
        }
    }
    let base = Arc::new(Schema::new(base_fields));
    let base_df = DFSchema::try_from_qualified_schema(qualifier.clone(), &base).map_err(|e| df_error(&e, table.pos))?;
    let planner = SqlToRel::new_with_options(provider, parser_options());
    let props = ExecutionProps::new();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let mut table = table;
    for (i, plan) in plans.into_iter().enumerate() {
        let c = &table.columns[i];
        match plan {
            Some(b) => {
                fields.push(base.field(b).clone());
                columns.push(ColumnPlan::Base(b));
            }
            None => {
                let ColumnSource::Computed(sql) = &c.source else { unreachable!("computed columns only") };
                let expr = planner.sql_to_expr((**sql).clone(), &base_df, &mut PlannerContext::new()).map_err(|e| df_error(&e, c.pos))?;
                let expr = coerce(vec![expr], &base_df, provider, c.pos)?.remove(0);
                let field = expr.to_field(&base_df).map_err(|e| df_error(&e, c.pos))?.1;
                let (t, nullable) = (field.data_type().clone(), field.is_nullable());
                let physical = physical(&expr, &base_df, c.pos, &props)?;
                fields.push(Field::new(&c.name, t.clone(), nullable));
                columns.push(ColumnPlan::Computed(physical));
                if let Some(ty) = crate::types::FlinkType::from_arrow(&t) {
                    table.columns[i].ty = ty;
                }
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let watermark = match &table.watermark {
        None => None,
        Some((i, sql, pos)) => {
            let df = DFSchema::try_from_qualified_schema(qualifier, &schema).map_err(|e| df_error(&e, *pos))?;
            let rowtime = schema.field(*i).data_type();
            if !matches!(rowtime, DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Second, _)) {
                return fail(*pos, format!("table {}: the rowtime column {} must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {rowtime}", table.name, schema.field(*i).name()));
            }
            let expr = planner.sql_to_expr(sql.clone(), &df, &mut PlannerContext::new()).map_err(|e| df_error(&e, *pos))?;
            let expr = coerce(vec![expr], &df, provider, *pos)?.remove(0);
            let t = expr.get_type(&df).map_err(|e| df_error(&e, *pos))?;
            if !matches!(t, DataType::Timestamp(..)) {
                return fail(*pos, format!("table {}: the watermark expression is {t}, not a timestamp", table.name));
            }
            Some((*i, physical(&expr, &df, *pos, &props)?))
        }
    };
    // Without a WATERMARK, a `PROCTIME()` column is the time attribute, and time is the clock's.
    let proctime = table.columns.iter().position(|c| matches!(&c.source, ColumnSource::Computed(sql) if is_proctime(sql)));
    let (watermark, processing_time) = match (watermark, proctime) {
        (None, Some(i)) => (Some((i, Arc::new(datafusion_physical_expr::expressions::Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>)), true),
        (w, _) => (w, false),
    };
    Ok(ScanTable { table, schema, base, columns, watermark, processing_time })
}

/// `PROCTIME()`.
fn is_proctime(e: &sqlparser::ast::Expr) -> bool {
    matches!(e, sqlparser::ast::Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("proctime") && match &f.args {
        sqlparser::ast::FunctionArguments::None => true,
        sqlparser::ast::FunctionArguments::List(l) => l.args.is_empty(),
        sqlparser::ast::FunctionArguments::Subquery(_) => false,
    })
}

/// DataFusion's analyzer: type coercion (and its checks) on a planned query.
pub(crate) fn analyze(plan: LogicalPlan, provider: &Provider, pos: Pos) -> Result<LogicalPlan> {
    datafusion_optimizer::Analyzer::new().execute_and_check(plan, &provider.options, |_, _| {}).map_err(|e| df_error(&e, pos))
}

/// Expressions over `schema`, type-coerced as in a query (a projection over an empty relation
/// of that schema, analyzed).
fn coerce(exprs: Vec<Expr>, schema: &DFSchema, provider: &Provider, pos: Pos) -> Result<Vec<Expr>> {
    let input = Arc::new(LogicalPlan::EmptyRelation(datafusion_expr::EmptyRelation { produce_one_row: false, schema: Arc::new(schema.clone()) }));
    let n = exprs.len();
    let aliased: Vec<Expr> = exprs.into_iter().enumerate().map(|(i, e)| e.alias(format!("__ferry_{i}"))).collect();
    let plan = LogicalPlan::Projection(datafusion_expr::Projection::try_new(aliased, input).map_err(|e| df_error(&e, pos))?);
    match analyze(plan, provider, pos)? {
        LogicalPlan::Projection(p) if p.expr.len() == n => Ok(p.expr.into_iter().map(|e| match e {
            Expr::Alias(a) => *a.expr,
            other => other,
        }).collect()),
        _ => fail(pos, "the expression could not be typed"),
    }
}

pub(crate) fn physical(expr: &Expr, schema: &DFSchema, pos: Pos, props: &ExecutionProps) -> Result<Arc<dyn PhysicalExpr>> {
    datafusion_physical_expr::create_physical_expr(expr, schema, props, &PhysicalPlanningContext::default()).map_err(|e| df_error(&e, pos))
}

fn pipeline(provider: &Provider, pos: Pos, insert: &Insert) -> Result<Pipeline> {
    let Some(sink) = provider.tables.get(&insert.table).cloned() else {
        let what = if provider.views.contains_key(&insert.table) { "is a view; INSERT INTO a table" } else { "is not declared in the job file" };
        return fail(insert.table_pos, format!("{} {what}", insert.table));
    };
    let planner = SqlToRel::new_with_options(provider, parser_options());
    let logical = planner.sql_statement_to_plan(sqlparser::ast::Statement::Query(insert.query.clone())).map_err(|e| df_error(&e, pos))?;
    let logical = analyze(logical, provider, pos)?;
    let props = ExecutionProps::new();
    let mut steps = Vec::new();
    let source = translate_query(provider, &logical, pos, &props, &mut steps)?;

    // The query's columns to the sink's persisted columns: by position, or by the INSERT's list.
    let persisted: Vec<(usize, &crate::catalog::Column)> = sink.table.persisted().collect();
    let out_schema = logical.schema();
    let out_fields: Vec<&Field> = out_schema.fields().iter().map(AsRef::as_ref).collect();
    let targets: Vec<usize> = if insert.columns.is_empty() {
        if out_fields.len() != persisted.len() {
            let want: Vec<String> = persisted.iter().map(|(_, c)| format!("{} {}", c.name, c.ty)).collect();
            return fail(pos, format!("the query has {} columns, table {} takes {}: [{}]", out_fields.len(), sink.table.name, persisted.len(), want.join(", ")));
        }
        (0..persisted.len()).collect()
    } else {
        let mut targets = Vec::new();
        for name in &insert.columns {
            match persisted.iter().position(|(_, c)| &c.name == name) {
                Some(i) if !targets.contains(&i) => targets.push(i),
                Some(_) => return fail(insert.table_pos, format!("column {name} is listed twice")),
                None => return fail(insert.table_pos, format!("table {} has no writable column {name}", sink.table.name)),
            }
        }
        if targets.len() != out_fields.len() {
            return fail(pos, format!("the INSERT lists {} columns and the query has {}", targets.len(), out_fields.len()));
        }
        targets
    };
    let unqualified = DFSchema::try_from(Schema::new(out_fields.iter().map(|f| (*f).clone()).collect::<Vec<_>>())).map_err(|e| df_error(&e, pos))?;
    let mut exprs = Vec::new();
    let mut fields = Vec::new();
    for (j, (col_index, column)) in persisted.iter().enumerate() {
        let want = sink.schema.field(*col_index).data_type().clone();
        let expr = match targets.iter().position(|t| *t == j) {
            Some(q) => {
                let from = out_fields[q].data_type();
                if !assignable(from, &want) {
                    return fail(pos, format!("column {} of table {} is {}, the query gives {} ({}): CAST it", column.name, sink.table.name, column.ty, crate::types::FlinkType::from_arrow(from).map_or_else(|| from.to_string(), |t| t.to_string()), out_fields[q].name()));
                }
                let c = Expr::Column(DfColumn::new_unqualified(out_fields[q].name()));
                if from == &want { c } else { datafusion_expr::cast(c, want.clone()) }
            }
            None => Expr::Literal(datafusion_common::ScalarValue::try_from(&want).map_err(|e| df_error(&e, pos))?, None),
        };
        exprs.push(physical(&expr, &unqualified, pos, &props)?);
        fields.push(Field::new(&column.name, want, true));
    }
    let output = Arc::new(Schema::new(fields));
    steps.push(Step::Project(exprs, output.clone()));
    let updating = crate::ops::updating(&steps);
    if updating && !sink.table.kafka.upsert {
        return fail(pos, format!("table {} (connector 'kafka') takes appended rows only, and this query updates rows it has emitted (GROUP BY without a window): write it to an 'upsert-kafka' table with a PRIMARY KEY, or aggregate over a window", sink.table.name));
    }
    Ok(Pipeline { pos, source, steps, sink: Sink::Table(sink), output, updating, idle_timeout: None, checkpoint_interval: None, parallelism: None, logical: format!("{}", logical.display_indent()) })
}

fn sample_pipeline(provider: &Provider, pos: Pos, query: &sqlparser::ast::Query) -> Result<Pipeline> {
    let planner = SqlToRel::new_with_options(provider, parser_options());
    let logical = planner.sql_statement_to_plan(sqlparser::ast::Statement::Query(Box::new(query.clone()))).map_err(|e| df_error(&e, pos))?;
    let logical = analyze(logical, provider, pos)?;
    let props = ExecutionProps::new();
    let mut steps = Vec::new();
    let source = translate_query(provider, &logical, pos, &props, &mut steps)?;
    let output = Arc::new(logical.schema().as_arrow().clone());
    let updating = crate::ops::updating(&steps);
    Ok(Pipeline { pos, source, steps, sink: Sink::Print(output.clone()), output, updating, idle_timeout: None, checkpoint_interval: None, parallelism: None, logical: format!("{}", logical.display_indent()) })
}

/// Whether a query column of type `from` may be written to a column of type `to` without a CAST
/// (Flink's implicit widening).
fn assignable(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let rank = |t: &DataType| match t {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(3),
        Int64 => Some(4),
        Float32 => Some(5),
        Float64 => Some(6),
        _ => None,
    };
    match (from, to) {
        _ if from == to => true,
        (Null, _) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8) => true,
        (Binary | LargeBinary | BinaryView, Binary) => true,
        (Timestamp(_, a), Timestamp(_, b)) => a.is_some() == b.is_some(),
        // Within one type root Flink casts implicitly; a value that does not fit fails the job.
        (Decimal128(..), Decimal128(..)) => true,
        (Int8 | Int16 | Int32 | Int64, Decimal128(..)) => true,
        (Decimal128(..), Float32 | Float64) => true,
        (Struct(a), Struct(b)) => a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| assignable(x.data_type(), y.data_type())),
        (List(a), List(b)) => assignable(a.data_type(), b.data_type()),
        _ => matches!((rank(from), rank(to)), (Some(a), Some(b)) if a <= b),
    }
}

/// A whole query's operators (see [`translate`]), checked whole.
pub(crate) fn translate_query(provider: &Provider, plan: &LogicalPlan, pos: Pos, props: &ExecutionProps, steps: &mut Vec<Step>) -> Result<Arc<ScanTable>> {
    let source = translate(provider, plan, pos, props, steps)?;
    let sessions = steps.iter().filter(|s| matches!(s, Step::Window { kind: crate::tvf::WindowKind::Session { .. }, .. })).count();
    if sessions > steps.iter().filter(|s| matches!(s, Step::Aggregate(a) if a.session_gap.is_some())).count() {
        return fail(pos, "SESSION windows are supported in a window aggregate (GROUP BY window_start, window_end, …)");
    }
    if steps.iter().any(|s| matches!(s, Step::Rank(r) if r.limit == 0)) {
        return fail(pos, "ROW_NUMBER() OVER (…) is supported as Top-N: filter its rank with rn <= N, rn < N or rn = 1 in the enclosing query");
    }
    // A versioned table is read only by a temporal join.
    let mut versioned_scans = 0;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            versioned_scans += usize::from(provider.versioned(scan.table_name.table()).is_some());
        }
        Ok(datafusion_common::tree_node::TreeNodeRecursion::Continue)
    });
    let temporal_joins = steps.iter().filter(|s| matches!(s, Step::Join(j) if j.temporal.is_some())).count();
    if versioned_scans > temporal_joins {
        return fail(pos, "FOR SYSTEM_TIME AS OF reads a table as versions for a temporal join: put it on the right of a JOIN … ON its primary key");
    }
    Ok(source)
}

/// Appends the operators for `plan` to `steps`; returns the source table it reads.
pub(crate) fn translate(provider: &Provider, plan: &LogicalPlan, pos: Pos, props: &ExecutionProps, steps: &mut Vec<Step>) -> Result<Arc<ScanTable>> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            let table = provider.versioned(name).map_or(name, |v| v.table.as_str());
            let source = if let Some(t) = provider.tables.get(table) {
                if t.table.kafka.upsert {
                    // Upserts by primary key become a changelog before anything reads them.
                    steps.push(Step::Changelog(Box::new(crate::changelog::ChangelogPlan { key: t.table.primary_key.clone(), schema: t.schema.clone() })));
                }
                t.clone()
            } else if let Some((view, _)) = provider.views.get(name) {
                translate(provider, view, pos, props, steps)?
            } else if let Some(tvf) = provider.window(name) {
                window(provider, tvf, pos, props, steps)?
            } else if provider.materialized.contains_key(name) {
                return fail(pos, format!("{name} is a materialized view: it is served over REST, not read by queries"));
            } else {
                return fail(pos, format!("{name} is not declared"));
            };
            steps.extend(scan_projection(scan, pos, props)?);
            if !scan.filters.is_empty() || scan.fetch.is_some() {
                return fail(pos, "a scan with pushed-down filters or a fetch limit is not supported");
            }
            Ok(source)
        }
        LogicalPlan::Aggregate(a) => {
            let source = translate(provider, &a.input, pos, props, steps)?;
            // An aggregate of an aggregate (or of a join or a Top-N) reads that step's output:
            // a window table function before it belongs to the earlier step.
            let since = steps.iter().rposition(|s| matches!(s, Step::Aggregate(_) | Step::Rank(_) | Step::Join(_) | Step::Changelog(_))).map_or(0, |i| i + 1);
            if a.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
                return fail(pos, "GROUPING SETS, ROLLUP and CUBE: not supported yet");
            }
            let input = a.input.schema();
            // Over a changelog (an upsert-kafka table) every change is taken back as well as added.
            let retracting = crate::ops::updating(steps);
            let keys = a.group_expr.iter().map(|e| physical(e, input, pos, props)).collect::<Result<Vec<_>>>()?;
            let key_named = |n: &str| a.group_expr.iter().position(|e| matches!(e, Expr::Column(c) if c.name == n));
            // Grouped by window_start and window_end of a window table function: a window
            // aggregate, whose rows are final when the watermark passes the window's end.
            let mut session_gap = None;
            let window = match steps[since..].iter_mut().rev().find_map(|s| match s {
                Step::Window { drop_late, kind, .. } => Some((drop_late, *kind)),
                _ => None,
            }) {
                Some((drop_late, kind)) => {
                    let w = key_named("window_start").zip(key_named("window_end"));
                    match kind {
                        // Sessions merge in the aggregate, which judges lateness itself.
                        crate::tvf::WindowKind::Session { gap } if w.is_some() => session_gap = Some(gap),
                        _ => *drop_late = w.is_some(),
                    }
                    w
                }
                // Grouped by the window_start and window_end of a window aggregate before it
                // (renamed or not): a cascading window aggregate, final when its windows are.
                None => cascaded_window(&steps[since.saturating_sub(1)..], &keys),
            };
            let arrow_input = input.as_arrow();
            let context = PhysicalPlanningContext::default();
            let mut aggregates = Vec::new();
            for e in &a.aggr_expr {
                let lowered = datafusion_physical_expr::aggregate::LoweredAggregateBuilder::new(e, input, arrow_input, props, &context).build().map_err(|e| df_error(&e, pos))?;
                if !lowered.order_bys.is_empty() {
                    return fail(pos, format!("{e}: ORDER BY inside an aggregate function is not supported yet"));
                }
                if retracting {
                    crate::ops::check_retractable(&lowered.aggregate).map_err(|m| SqlError::new(pos, format!("{e} over an updating input (an upsert-kafka table): {m}")))?;
                }
                aggregates.push(Aggregate { function: lowered.aggregate, filter: lowered.filter });
            }
            steps.push(Step::Aggregate(Box::new(AggregatePlan { keys, window, session_gap, aggregates, output: Arc::new(a.schema.as_arrow().clone()), retracting })));
            Ok(source)
        }
        LogicalPlan::Filter(f) => {
            // `FROM a, b WHERE a.k = b.k`: the WHERE is the join's condition (as Flink's planner
            // pushes it into the join).
            if let LogicalPlan::Join(j) = f.input.as_ref() {
                if j.join_type == datafusion_expr::JoinType::Inner && j.on.is_empty() && j.filter.is_none() {
                    return crate::plan_join::join(provider, j, Some(&f.predicate), pos, props, steps);
                }
            }
            let source = translate(provider, &f.input, pos, props, steps)?;
            // The filter on a ROW_NUMBER's rank makes it a Top-N.
            let pending = steps.iter_mut().rev().find_map(|s| match s {
                Step::Rank(r) if r.limit == 0 => Some(r),
                _ => None,
            });
            if let Some(rank) = pending {
                let (bound, rest) = crate::topn::rank_bound(&f.predicate, &f.input);
                let Some(n) = bound else {
                    return fail(pos, "ROW_NUMBER() OVER (…) is supported as Top-N: filter its rank with rn <= N, rn < N or rn = 1 in the enclosing query");
                };
                rank.limit = n;
                if let Some(rest) = datafusion_expr::utils::conjunction(rest) {
                    steps.push(Step::Filter(physical(&rest, f.input.schema(), pos, props)?));
                }
                return Ok(source);
            }
            steps.push(filter_step(f, pos, props)?);
            Ok(source)
        }
        LogicalPlan::Window(w) => {
            let source = translate(provider, &w.input, pos, props, steps)?;
            if crate::ops::updating(steps) {
                return fail(pos, "ROW_NUMBER over an updating result (an aggregate, a Top-N or an upsert-kafka table): not supported yet");
            }
            let [Expr::WindowFunction(function)] = w.window_expr.as_slice() else {
                return fail(pos, "one ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) per query is supported (Top-N); other OVER windows are not supported yet");
            };
            if function.fun.name() != "row_number" {
                return fail(pos, format!("{}() OVER (…): only ROW_NUMBER (Top-N) is supported yet", function.fun.name()));
            }
            let params = &function.params;
            if params.order_by.is_empty() {
                return fail(pos, "ROW_NUMBER() OVER (…) needs an ORDER BY (Top-N)");
            }
            let input = w.input.schema();
            let partition = params.partition_by.iter().map(|e| physical(e, input, pos, props)).collect::<Result<Vec<_>>>()?;
            let order = params
                .order_by
                .iter()
                .map(|s| Ok((physical(&s.expr, input, pos, props)?, arrow::compute::SortOptions { descending: !s.asc, nulls_first: s.nulls_first })))
                .collect::<Result<Vec<_>>>()?;
            let output = Arc::new(w.schema.as_arrow().clone());
            let rank_name = output.fields().last().map(|f| f.name().clone()).unwrap_or_default();
            steps.push(Step::Rank(Box::new(crate::topn::RankPlan { partition, order, limit: 0, rank_name, output })));
            Ok(source)
        }
        LogicalPlan::Projection(p) => {
            let source = translate(provider, &p.input, pos, props, steps)?;
            steps.push(project_step(p, pos, props)?);
            Ok(source)
        }
        LogicalPlan::SubqueryAlias(a) => translate(provider, &a.input, pos, props, steps),
        LogicalPlan::Join(j) => crate::plan_join::join(provider, j, None, pos, props, steps),
        other => {
            let what = match other {
                LogicalPlan::Sort(_) => "ORDER BY on a stream",
                LogicalPlan::Limit(_) => "LIMIT on a stream",
                LogicalPlan::Union(_) => "UNION",
                LogicalPlan::Distinct(_) => "SELECT DISTINCT",
                LogicalPlan::Values(_) => "VALUES (a stream is read from a table)",
                LogicalPlan::EmptyRelation(_) => "a query without FROM (a stream is read from a table)",
                _ => "this kind of query",
            };
            fail(pos, format!("{what}: not supported yet"))
        }
    }
}

/// For an aggregate over `steps` (the window aggregate before it, then projections and filters),
/// the indices in `keys` of that aggregate's window_start and window_end, when the keys are
/// those two columns (followed through the projections by position).
fn cascaded_window(steps: &[Step], keys: &[Arc<dyn PhysicalExpr>]) -> Option<(usize, usize)> {
    let (first, rest) = steps.split_first()?;
    let Step::Aggregate(a) = first else { return None };
    // A window aggregate's output starts with its keys.
    let (mut ws, mut we) = a.window.filter(|_| a.session_gap.is_none())?;
    let column = |e: &Arc<dyn PhysicalExpr>| (e.as_ref() as &dyn std::any::Any).downcast_ref::<datafusion_physical_expr::expressions::Column>().map(|c| c.index());
    for step in rest {
        match step {
            Step::Filter(_) => {}
            Step::Project(exprs, _) => {
                ws = exprs.iter().position(|e| column(e) == Some(ws))?;
                we = exprs.iter().position(|e| column(e) == Some(we))?;
            }
            _ => return None,
        }
    }
    Some((keys.iter().position(|k| column(k) == Some(ws))?, keys.iter().position(|k| column(k) == Some(we))?))
}

/// The columns a scan keeps, if it keeps fewer than its table has.
pub(crate) fn scan_projection(scan: &datafusion_expr::TableScan, pos: Pos, props: &ExecutionProps) -> Result<Option<Step>> {
    let Some(projection) = &scan.projection else { return Ok(None) };
    let input = DFSchema::try_from(Schema::new(scan.source.schema().fields().iter().map(|f| f.as_ref().clone()).collect::<Vec<_>>())).map_err(|e| df_error(&e, pos))?;
    let exprs = projection.iter().map(|i| physical(&Expr::Column(DfColumn::new_unqualified(input.field(*i).name())), &input, pos, props)).collect::<Result<Vec<_>>>()?;
    Ok(Some(Step::Project(exprs, Arc::new(scan.projected_schema.as_arrow().clone()))))
}

pub(crate) fn filter_step(f: &datafusion_expr::Filter, pos: Pos, props: &ExecutionProps) -> Result<Step> {
    Ok(Step::Filter(physical(&f.predicate, f.input.schema(), pos, props)?))
}

pub(crate) fn project_step(p: &datafusion_expr::Projection, pos: Pos, props: &ExecutionProps) -> Result<Step> {
    let exprs = p.expr.iter().map(|e| physical(e, p.input.schema(), pos, props)).collect::<Result<Vec<_>>>()?;
    Ok(Step::Project(exprs, Arc::new(p.schema.as_arrow().clone())))
}

/// A window table function: its table's (or view's) operators, then the window's.
fn window(provider: &Provider, tvf: &WindowTvf, pos: Pos, props: &ExecutionProps, steps: &mut Vec<Step>) -> Result<Arc<ScanTable>> {
    let (source, input) = if let Some(t) = provider.tables.get(&tvf.table) {
        if t.table.kafka.upsert {
            return fail(tvf.table_pos, format!("a window over the upsert-kafka table {} (a changelog): window table functions take appended rows only, as in Flink", tvf.table));
        }
        (t.clone(), t.schema.clone())
    } else if let Some((view, _)) = provider.views.get(&tvf.table) {
        (translate(provider, view, pos, props, steps)?, Arc::new(view.schema().as_arrow().clone()))
    } else {
        return fail(tvf.table_pos, format!("{} is not declared in the job file", tvf.table));
    };
    if crate::ops::updating(steps) {
        return fail(tvf.table_pos, format!("a window over {}, an updating result (a changelog): window table functions take appended rows only, as in Flink", tvf.table));
    }
    if steps.iter().any(|s| matches!(s, Step::Join(_))) {
        return fail(tvf.table_pos, format!("a window over {}, a join: not supported yet", tvf.table));
    }
    let Ok(time) = input.index_of(&tvf.time_column) else {
        return fail(tvf.time_pos, format!("{} has no column {}", tvf.table, tvf.time_column));
    };
    // The time attribute: the source's rowtime column (named as declared, through views).
    match &source.watermark {
        Some((i, _)) if source.schema.field(*i).name() == &tvf.time_column => {}
        Some((i, _)) => return fail(tvf.time_pos, format!("DESCRIPTOR({}): the time attribute of {} is {} (its WATERMARK)", tvf.time_column, tvf.table, source.schema.field(*i).name())),
        None => return fail(tvf.time_pos, format!("DESCRIPTOR({}): table {} declares no WATERMARK, so it has no event time to put rows in windows by (add WATERMARK FOR {} AS {} - INTERVAL '5' SECOND)", tvf.time_column, source.table.name, tvf.time_column, tvf.time_column)),
    }
    steps.push(Step::Window { kind: tvf.kind, time, output: crate::ops::window_schema(&input, time), drop_late: false });
    Ok(source)
}

/// The job as text: tables, and per pipeline its logical plan and operators.
pub fn explain(job: &Job) -> String {
    let mut out = String::new();
    for (name, t) in &job.tables {
        out.push_str(&format!("table {name}: topic {} ({}{})\n", t.table.kafka.topic, if t.table.kafka.upsert { "upsert-kafka" } else { "kafka" }, t.table.kafka.key_format.as_ref().map_or(String::new(), |_| ", keyed".to_string())));
        for (f, c) in t.schema.fields().iter().zip(&t.table.columns) {
            let how = match &c.source {
                ColumnSource::Physical { in_key: true, in_value: true } => "key and value".to_string(),
                ColumnSource::Physical { in_key: true, .. } => "key".to_string(),
                ColumnSource::Physical { .. } => "value".to_string(),
                ColumnSource::Metadata { key, is_virtual } => format!("metadata {key:?}{}", if *is_virtual { ", virtual" } else { "" }),
                ColumnSource::Computed(e) => format!("computed: {e}"),
            };
            out.push_str(&format!("  {} {} ({how})\n", f.name(), c.ty));
        }
        match &t.watermark {
            Some((i, _)) if t.processing_time => out.push_str(&format!("  processing time: {} (PROCTIME(); windows follow the clock)\n", t.schema.field(*i).name())),
            Some((i, e)) => out.push_str(&format!("  watermark for {} as {e}\n", t.schema.field(*i).name())),
            None => {}
        }
    }
    for (i, p) in job.pipelines.iter().enumerate() {
        out.push_str(&format!("\npipeline {} (line {}): {} -> {}\n", i + 1, p.pos.line, p.source.table.name, p.sink.name()));
        out.push_str("  logical plan:\n");
        for line in p.logical.lines() {
            out.push_str(&format!("    {line}\n"));
        }
        out.push_str("  operators:\n");
        out.push_str(&format!("    scan {} (topic {})\n", p.source.table.name, p.source.table.kafka.topic));
        for s in &p.steps {
            out.push_str(&format!("    {s}\n"));
        }
        match &p.sink {
            Sink::Table(t) => out.push_str(&format!("    sink {} (topic {})\n", t.table.name, t.table.kafka.topic)),
            Sink::Print(_) => out.push_str("    print rows with their change kind\n"),
            Sink::View(v) => {
                let key: Vec<&str> = v.key.iter().map(|k| v.schema.field(*k).name().as_str()).collect();
                let endpoints: Vec<&str> = ["all", "lookup"].into_iter().chain(v.endpoints.keys().map(String::as_str)).collect();
                out.push_str(&format!("    materialized view {} keyed by ({}), endpoints: {}\n", v.name, key.join(", "), endpoints.join(", ")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = "CREATE TABLE orders (\n  id BIGINT,\n  customer STRING,\n  amount DECIMAL(10, 2),\n  ts TIMESTAMP(3),\n  part INT METADATA FROM 'partition' VIRTUAL,\n  big AS amount > 100,\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND\n) WITH ('connector' = 'kafka', 'topic' = 'orders', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\nCREATE TABLE results (id BIGINT, who STRING, doubled DECIMAL(12, 2)) WITH ('connector' = 'kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\n";

    #[test]
    fn a_filter_and_projection_through_a_view() {
        let job = plan_script(&format!("{ORDERS}CREATE TEMPORARY VIEW big_orders AS SELECT * FROM orders WHERE big;\nINSERT INTO results SELECT id, UPPER(customer), amount * 2 FROM big_orders WHERE part >= 0;")).unwrap();
        assert_eq!(job.pipelines.len(), 1);
        let p = &job.pipelines[0];
        assert_eq!(p.source.table.name, "orders");
        assert_eq!(p.output.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["id", "who", "doubled"]);
        assert!(matches!(p.steps[0], Step::Filter(_)));
        assert!(p.source.watermark.is_some());
        assert!(explain(&job).contains("filter"), "{}", explain(&job));
        assert!(matches!(p.source.columns[5], ColumnPlan::Computed(_)));
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let e = plan_script(&format!("{ORDERS}INSERT INTO results SELECT id, nope, amount FROM orders;")).err().unwrap();
        assert_eq!(e.pos.line, 11, "{e}");
        assert!(e.message.contains("nope"), "{e}");
        let e = plan_script(&format!("{ORDERS}INSERT INTO results SELECT id, customer FROM orders;")).err().unwrap();
        assert!(e.message.contains("the query has 2 columns, table results takes 3"), "{e}");
        let e = plan_script(&format!("{ORDERS}INSERT INTO results SELECT customer, id, amount FROM orders;")).err().unwrap();
        assert!(e.message.contains("column id of table results is BIGINT, the query gives STRING"), "{e}");
        let e = plan_script(&format!("{ORDERS}INSERT INTO results SELECT id, customer, amount FROM orders UNION ALL SELECT id, customer, amount FROM orders;")).err().unwrap();
        assert!(e.message.contains("UNION: not supported yet"), "{e}");
        let e = plan_script(&format!("{ORDERS}INSERT INTO nowhere SELECT * FROM orders;")).err().unwrap();
        assert_eq!((e.pos, e.message.as_str()), (Pos::new(11, 13), "nowhere is not declared in the job file"));
        let e = plan_script(&format!("{ORDERS}SET 'foo' = 'bar';\nINSERT INTO results SELECT id, customer, amount FROM orders;")).err().unwrap();
        assert!(e.message.contains("setting 'foo'"), "{e}");
    }

    /// A `PROCTIME()` column without a WATERMARK is the table's processing-time attribute:
    /// windows over it follow the clock; with a WATERMARK, the rowtime stays the attribute.
    #[test]
    fn a_proctime_column_is_the_processing_time_attribute() {
        let table = |watermark: &str| format!("CREATE TABLE clicks (user_id BIGINT, ts TIMESTAMP(3), p AS PROCTIME(){watermark}) WITH ('connector' = 'kafka', 'topic' = 'c', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\nCREATE TABLE counts (user_id BIGINT, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'kafka', 'topic' = 'o', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\n");
        let query = "INSERT INTO counts SELECT user_id, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(p), INTERVAL '10' SECOND)) GROUP BY user_id, window_start, window_end;";
        let job = plan_script(&format!("{}{query}", table(""))).unwrap();
        let source = &job.pipelines[0].source;
        assert!(source.processing_time);
        assert_eq!(source.watermark.as_ref().map(|(i, _)| source.schema.field(*i).name().as_str()), Some("p"));
        assert!(!job.pipelines[0].updating, "a processing-time window aggregate appends");
        let e = plan_script(&format!("{}{query}", table(", WATERMARK FOR ts AS ts"))).err().expect("the rowtime is the attribute").to_string();
        assert!(e.contains("DESCRIPTOR(p): the time attribute of clicks is ts"), "{e}");
    }
}
