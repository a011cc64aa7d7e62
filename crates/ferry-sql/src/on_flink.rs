//! A job file for `--engine flink`: the statements Flink runs, and, for its materialized views
//! (Ferry's statement, not Flink's), what Ferry runs beside it to serve them. Each view's query
//! runs on Flink into an upsert-kafka changelog topic keyed by the view's primary key; Ferry reads
//! that topic as an upsert table into the view, with the view's own options, so the REST answers
//! are those of the embedded engine. Pure, but for [`ensure_topic`].

use arrow::datatypes::{DataType, TimeUnit};

use crate::plan::{Job, Sink};
use crate::statements::{self, Text};
use crate::{Pos, SqlError};

/// What runs where.
pub struct FlinkPlan {
    /// For the gateway, in order, each with its line in the job file (a view's two statements
    /// carry the view's line).
    pub statements: Vec<Text>,
    /// A Ferry job file serving the views from their changelog topics (none without views).
    pub views_job: Option<String>,
    /// Each changelog topic, with the Kafka properties of the cluster it lives on.
    pub topics: Vec<(String, Vec<(String, String)>)>,
}

/// Flink's name for an Arrow type of a view's column.
pub fn flink_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 => "STRING".into(),
        DataType::Binary | DataType::LargeBinary => "BYTES".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Timestamp(unit, tz) => {
            let precision = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            };
            if tz.is_some() { format!("TIMESTAMP_LTZ({precision})") } else { format!("TIMESTAMP({precision})") }
        }
        _ => return None,
    })
}

/// A string literal in Flink SQL.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A backquoted identifier in Flink SQL.
pub fn name(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The changelog topic of view `view` of job `job`.
pub fn changelog_topic(job: &str, view: &str) -> String {
    let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect::<String>();
    format!("ferry-view-{}-{}", clean(job), clean(view))
}

/// Splits `text` (planned as `job`) for Flink; `job_name` names the changelog topics.
pub fn plan(text: &str, job: &Job, job_name: &str) -> Result<FlinkPlan, SqlError> {
    let mut out = FlinkPlan { statements: Vec::new(), views_job: None, topics: Vec::new() };
    let mut served = String::new();
    for s in statements::split(text) {
        let Some((view, query)) = statements::materialized_view(&s.text) else {
            out.statements.push(s);
            continue;
        };
        let pos = Pos::new(s.line, 1);
        let fail = |m: String| SqlError::new(pos, m);
        let p = job.pipelines.iter().find(|p| matches!(&p.sink, Sink::View(v) if v.name.eq_ignore_ascii_case(&view))).ok_or_else(|| fail(format!("view {view} was not planned")))?;
        let Sink::View(v) = &p.sink else { unreachable!("found as a view") };
        let table = format!("__ferry_view_{}", v.name);
        let topic = changelog_topic(job_name, &v.name);
        let mut columns = Vec::new();
        for f in v.schema.fields() {
            let t = flink_type(f.data_type()).ok_or_else(|| fail(format!("view {}: column {} of type {} cannot go through a changelog topic yet", v.name, f.name(), f.data_type())))?;
            columns.push(format!("{} {t}", name(f.name())));
        }
        let key: Vec<String> = v.key.iter().map(|k| v.schema.field(*k).name().clone()).collect();
        if key.is_empty() {
            return Err(fail(format!("view {}: a view on Flink needs a primary key (GROUP BY keys or 'primary-key')", v.name)));
        }
        // The changelog lives on the cluster of the view's source table, with its client settings.
        let properties: Vec<(String, String)> = p.source.table.kafka.properties.iter().filter(|(k, _)| k != "group.id").cloned().collect();
        let with_properties: String = properties.iter().map(|(k, val)| format!(",\n  {} = {}", quote(&format!("properties.{k}")), quote(val))).collect();
        let ddl = format!(
            "CREATE TABLE {} (\n  {},\n  PRIMARY KEY ({}) NOT ENFORCED\n) WITH (\n  'connector' = 'upsert-kafka', 'topic' = {}, 'key.format' = 'json', 'value.format' = 'json'{with_properties}\n)",
            name(&table),
            columns.join(",\n  "),
            key.iter().map(|k| name(k)).collect::<Vec<_>>().join(", "),
            quote(&topic)
        );
        out.statements.push(Text { line: s.line, text: ddl.clone() });
        out.statements.push(Text { line: s.line, text: format!("INSERT INTO {} {query}", name(&table)) });
        // The view's own options, as Ferry's parser reads them.
        let mut options: Vec<(String, String)> = match crate::parse::parse_script(&s.text).map(|script| script.statements.into_iter().next().map(|l| l.statement)) {
            Ok(Some(crate::parse::Statement::CreateMaterializedView { options, .. })) => options.into_iter().map(|o| (o.key, o.value)).collect(),
            _ => Vec::new(),
        };
        if !options.iter().any(|(k, _)| k.eq_ignore_ascii_case("primary-key")) {
            options.push(("primary-key".into(), key.join(",")));
        }
        let options: Vec<String> = options.iter().map(|(k, val)| format!("{} = {}", quote(k), quote(val))).collect();
        served.push_str(&format!("{ddl};\nCREATE MATERIALIZED VIEW {} WITH ({}) AS SELECT * FROM {};\n", name(&v.name), options.join(", "), name(&table)));
        out.topics.push((topic, properties));
    }
    if !served.is_empty() {
        out.views_job = Some(served);
    }
    Ok(out)
}

/// Creates `topic` (one partition: a view's changes stay in order) unless it exists, on the
/// cluster of `properties`.
pub async fn ensure_topic(topic: &str, properties: &[(String, String)]) -> Result<(), String> {
    let cluster = crate::catalog::cluster_client(format!("changelog {topic}"), properties).ok_or_else(|| format!("topic {topic}: no bootstrap.servers"))?;
    let spec = ferry_kafka::NewTopicSpec { name: topic.to_string(), partitions: 1, replication_factor: -1, configs: Default::default() };
    ferry_kafka::Admin::connect(&cluster).map_err(|e| e.to_string())?.create_topics(&[spec]).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_becomes_a_changelog_table_on_flink_and_an_upsert_view_on_ferry() {
        let text = "CREATE TABLE bids (item STRING, price BIGINT) WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'properties.security.protocol' = 'PLAINTEXT', 'format' = 'json');\n\nCREATE MATERIALIZED VIEW totals WITH ('endpoint.top' = 'SELECT * FROM totals WHERE total > {min}')\nAS SELECT item, SUM(price) AS total FROM bids GROUP BY item;\n";
        let job = crate::plan::plan_script(text).unwrap();
        let plan = plan(text, &job, "my job").unwrap();
        let lines: Vec<u64> = plan.statements.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![1, 3, 3]);
        assert!(plan.statements[1].text.contains("CREATE TABLE `__ferry_view_totals` (\n  `item` STRING,\n  `total` BIGINT,\n  PRIMARY KEY (`item`) NOT ENFORCED"), "{}", plan.statements[1].text);
        assert!(plan.statements[1].text.contains("'topic' = 'ferry-view-my_job-totals'") && plan.statements[1].text.contains("'properties.security.protocol' = 'PLAINTEXT'"), "{}", plan.statements[1].text);
        assert_eq!(plan.statements[2].text, "INSERT INTO `__ferry_view_totals` SELECT item, SUM(price) AS total FROM bids GROUP BY item");
        let served = plan.views_job.unwrap();
        assert!(served.contains("CREATE MATERIALIZED VIEW `totals` WITH ('endpoint.top' = 'SELECT * FROM totals WHERE total > {min}', 'primary-key' = 'item') AS SELECT * FROM `__ferry_view_totals`"), "{served}");
        // Ferry plans what it serves: the same columns and endpoint.
        let served_job = crate::plan::plan_script(&served).unwrap();
        let Sink::View(v) = &served_job.pipelines[0].sink else { panic!("a view") };
        assert_eq!(v.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["item", "total"]);
        assert!(v.endpoints.contains_key("top"));
        assert_eq!(plan.topics, vec![("ferry-view-my_job-totals".to_string(), vec![("bootstrap.servers".to_string(), "127.0.0.1:9092".to_string()), ("security.protocol".to_string(), "PLAINTEXT".to_string())])]);
    }
}
