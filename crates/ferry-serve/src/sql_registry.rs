//! The SQL console's tables from the schema registry (`ferry serve --registry URL`): each
//! subject named after a topic's values (`<topic>-value`, Confluent's default subject naming),
//! its latest Avro schema turned into the table's columns as Flink derives them
//! (`ferry_sql::avro::columns_of`), with a `CREATE TABLE` over the topic in the `avro-confluent`
//! format, ready for the editor. Subjects that do not make a table (another schema type, a type
//! Flink has not) are listed with the reason.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::{error_body, ErrorBody};
use crate::sql_console::ColumnView;
use crate::AppState;

/// Subjects read at most per call (their latest versions are one request each).
const MAX_SUBJECTS: usize = 200;

/// A table the registry's schemas describe.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryTableView {
    pub subject: String,
    pub topic: String,
    pub version: Option<i64>,
    /// The cluster of `ferry serve`'s configuration that holds the topic (the first one when
    /// none is seen to).
    pub cluster: Option<String>,
    pub columns: Vec<ColumnView>,
    /// The `CREATE TABLE` statement (none when the subject makes no table).
    pub ddl: Option<String>,
    /// Why the subject makes no table.
    pub error: Option<String>,
}

/// An identifier as Flink SQL reads it: backquoted unless a plain name.
fn ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !ferry_sql::reserved::is_reserved(name);
    if plain { name.to_string() } else { ferry_sql::on_flink::name(name) }
}

/// The `CREATE TABLE` over `topic` with `columns` (`name TYPE`), in the `avro-confluent` format
/// of the registry at `registry`, on the cluster at `bootstrap`.
pub(crate) fn ddl(topic: &str, columns: &[(String, String)], bootstrap: &str, registry: &str) -> String {
    let columns: Vec<String> = columns.iter().map(|(n, t)| format!("  {} {t}", ident(n))).collect();
    format!(
        "CREATE TABLE {} (\n{}\n) WITH (\n  'connector' = 'kafka',\n  'topic' = {},\n  'properties.bootstrap.servers' = {},\n  'format' = 'avro-confluent',\n  'avro-confluent.url' = {},\n  'scan.startup.mode' = 'earliest-offset'\n);",
        ident(topic),
        columns.join(",\n"),
        ferry_sql::on_flink::quote(topic),
        ferry_sql::on_flink::quote(bootstrap),
        ferry_sql::on_flink::quote(registry)
    )
}

/// Tables from the schema registry's subjects (`<topic>-value`), each with its columns and a
/// `CREATE TABLE` statement, or why it makes none.
#[utoipa::path(get, path = "/api/v1/sql/registry-tables", tag = "sql",
    responses((status = 200, body = [RegistryTableView]), (status = 401, body = ErrorBody), (status = 404, description = "no schema registry configured (--registry)", body = ErrorBody), (status = 502, description = "the registry cannot be read", body = ErrorBody)))]
pub(crate) async fn registry_tables(State(state): State<AppState>) -> Response {
    let Some(registry) = &state.registry else {
        return error_body(StatusCode::NOT_FOUND, "no_registry", "no schema registry is configured (ferry serve --registry URL)");
    };
    let subjects = match registry.get_json("/subjects").await {
        Ok(s) => s,
        Err(e) => return error_body(StatusCode::BAD_GATEWAY, "registry_unreachable", &e),
    };
    let mut subjects: Vec<String> = subjects.as_array().into_iter().flatten().filter_map(|s| s.as_str()).filter(|s| s.ends_with("-value")).map(str::to_string).collect();
    subjects.sort();
    subjects.truncate(MAX_SUBJECTS);
    // Where each topic lives: the clusters the monitor sees it on, else the first cluster.
    let clusters: Vec<(String, String)> = state.shared.clusters.lock().unwrap().values().map(|c| (c.alias.clone(), c.address.clone())).collect();
    let holder = |topic: &str| -> Option<(String, String)> {
        let seen = state.monitor.as_ref().and_then(|m| clusters.iter().find(|(alias, _)| m.cluster(alias).is_some_and(|s| s.topics.iter().any(|t| t.topic == topic))));
        seen.or(clusters.first()).cloned()
    };
    let mut out = Vec::new();
    for subject in subjects {
        let topic = subject.trim_end_matches("-value").to_string();
        let cluster = holder(&topic);
        let mut table = RegistryTableView { subject: subject.clone(), topic: topic.clone(), version: None, cluster: cluster.as_ref().map(|c| c.0.clone()), columns: Vec::new(), ddl: None, error: None };
        match registry.get_json(&format!("/subjects/{}/versions/latest", crate::sql_jobs::encode(&subject))).await {
            Err(e) => table.error = Some(e),
            Ok(latest) => {
                table.version = latest["version"].as_i64();
                let kind = latest["schemaType"].as_str().unwrap_or("AVRO");
                let columns = if kind == "AVRO" {
                    ferry_sql::avro::columns_of(latest["schema"].as_str().unwrap_or_default())
                } else {
                    Err(format!("a {kind} schema: only Avro subjects become tables here (the avro-confluent format)"))
                };
                match columns {
                    Ok(columns) => {
                        let typed: Vec<(String, String)> = columns.iter().map(|(n, t, nullable)| (n.clone(), format!("{t}{}", if *nullable { "" } else { " NOT NULL" }))).collect();
                        table.columns = typed.iter().map(|(name, ty)| ColumnView { name: name.clone(), ty: ty.clone() }).collect();
                        table.ddl = Some(ddl(&topic, &typed, cluster.as_ref().map_or("HOST:9092", |c| c.1.as_str()), registry.url()));
                    }
                    Err(e) => table.error = Some(e),
                }
            }
        }
        out.push(table);
    }
    Json(out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_table_is_written_as_flink_reads_it() {
        let text = ddl("orders-avro", &[("id".into(), "BIGINT NOT NULL".into()), ("user".into(), "STRING".into()), ("from".into(), "STRING".into())], "127.0.0.1:9092", "http://127.0.0.1:8081");
        assert!(text.starts_with("CREATE TABLE `orders-avro` (\n  id BIGINT NOT NULL,\n  `user` STRING,\n  `from` STRING\n)"), "{text}");
        assert!(text.contains("'topic' = 'orders-avro'") && text.contains("'format' = 'avro-confluent'") && text.contains("'avro-confluent.url' = 'http://127.0.0.1:8081'"), "{text}");
        // Ferry's own parser takes it.
        let script = ferry_sql::parse::parse_script(&text).unwrap();
        assert_eq!(script.statements.len(), 1);
    }
}
