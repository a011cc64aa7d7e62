//! The SQL console's engine side: the tables a job file declares (`POST /api/v1/sql/tables`)
//! and a query sampled over them (`POST /api/v1/sql/sample`), as `ferry sql sample` does, its
//! rows streamed back as they arrive (newline-delimited JSON) until the limit, the time limit,
//! or the reader goes away (the sampling job is then cancelled).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};
use utoipa::ToSchema;

use crate::api::{error_body, ErrorBody};

/// Rows a sample gives at most, and how long it runs at most.
const MAX_ROWS: u64 = 10_000;
const MAX_TIME: Duration = Duration::from_secs(120);

#[derive(Debug, Deserialize, ToSchema)]
pub struct TablesRequest {
    /// A job file's statements: CREATE TABLE, CREATE TEMPORARY VIEW, SET (INSERTs are not run).
    pub tables: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SampleRequest {
    /// The tables and views the query reads (a job file's statements).
    pub tables: String,
    /// One SELECT query.
    pub query: String,
    /// Rows to sample at most (default 100, at most 10,000).
    #[serde(default)]
    pub limit: Option<u64>,
}

/// A table of a job file.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableView {
    pub name: String,
    /// `kafka` or `upsert-kafka`.
    pub connector: String,
    pub topic: String,
    pub columns: Vec<ColumnView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ColumnView {
    pub name: String,
    /// Its Flink SQL type.
    #[serde(rename = "type")]
    pub ty: String,
}

fn bad_request(message: &str) -> Response {
    error_body(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// The tables a job file declares, with their columns and types.
#[utoipa::path(post, path = "/api/v1/sql/tables", tag = "sql", request_body = TablesRequest,
    responses((status = 200, body = [TableView]), (status = 400, description = "a statement Ferry refuses (`tables:LINE:COLUMN: reason`)", body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn tables(body: Result<Json<TablesRequest>, JsonRejection>) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(&e.body_text()),
    };
    let script = match ferry_sql::parse::parse_script(&request.tables) {
        Ok(s) => s,
        Err(e) => return bad_request(&format!("tables:{}:{}: {}", e.pos.line, e.pos.column, e.message)),
    };
    let mut out = Vec::new();
    for s in &script.statements {
        if let ferry_sql::parse::Statement::CreateTable(ddl) = &s.statement {
            match ferry_sql::catalog::Table::from_ddl(ddl, s.pos) {
                Ok(t) => out.push(TableView {
                    name: t.name.clone(),
                    connector: if t.kafka.upsert { "upsert-kafka" } else { "kafka" }.into(),
                    topic: t.kafka.topic.clone(),
                    columns: t.columns.iter().map(|c| ColumnView { name: c.name.clone(), ty: format!("{}{}", c.ty, if c.nullable { "" } else { " NOT NULL" }) }).collect(),
                }),
                Err(e) => return bad_request(&format!("tables:{}:{}: {}", e.pos.line, e.pos.column, e.message)),
            }
        }
    }
    Json(out).into_response()
}

/// The rows a sampling job sends, a line each; its job is cancelled when the response goes.
struct Rows {
    rx: tokio::sync::mpsc::Receiver<String>,
    _cancel: DropGuard,
}

impl futures_core::Stream for Rows {
    type Item = Result<String, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|line| line.map(|mut l| {
            l.push('\n');
            Ok(l)
        }))
    }
}

/// Samples a query over a job file's tables: each row as it arrives, a JSON object per line
/// (`{"kind":"+I","row":{…}}`, Flink's change kinds), until `limit` rows, 2 minutes, or the
/// input's end; an error after the first row ends the stream with `{"error":"…"}`.
#[utoipa::path(post, path = "/api/v1/sql/sample", tag = "sql", request_body = SampleRequest,
    responses((status = 200, description = "rows as newline-delimited JSON", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "the tables or the query refused (`tables:LINE:COLUMN: reason` or `query:LINE:COLUMN: reason`)", body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn sample(body: Result<Json<SampleRequest>, JsonRejection>) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(&e.body_text()),
    };
    let job = match ferry_sql::plan::plan_sample_over(&request.tables, &request.query) {
        Ok(job) => job,
        Err((in_query, e)) => return bad_request(&format!("{}:{}:{}: {}", if in_query { "query" } else { "tables" }, e.pos.line, e.pos.column, e.message)),
    };
    let limit = request.limit.unwrap_or(100).clamp(1, MAX_ROWS);
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
    let cancel = CancellationToken::new();
    let (stop, timer) = (cancel.clone(), cancel.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(MAX_TIME) => timer.cancel(),
            () = timer.cancelled() => {}
        }
    });
    let errors = tx.clone();
    tokio::task::spawn_blocking(move || {
        let to: ferry_sql::run::SampleSink = Arc::new(move |line| tx.blocking_send(line).is_ok());
        if let Err(e) = ferry_sql::run::sample_into(&job, Some(limit), to, &stop) {
            let _ = errors.blocking_send(serde_json::json!({"error": e.to_string()}).to_string());
        }
        stop.cancel();
    });
    let rows = Rows { rx, _cancel: cancel.drop_guard() };
    ([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")], Body::from_stream(rows)).into_response()
}
