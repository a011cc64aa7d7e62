//! The REST API of a running job's materialized views, with SQL Stream Builder's URL and
//! parameters: `GET /api/v1/query/{view}/{endpoint}?key=…&limit=…&offset=…&param=…` answers a
//! JSON array of row objects, in primary-key order. Every view has the endpoints `all` (every
//! row) and `lookup` (the row under the key given as parameters, one per key column; 404 when
//! absent). Freshness in headers: `X-Ferry-Watermark` (ms, absent before the first watermark),
//! `X-Ferry-Source-Offsets` (`topic/partition=next offset`, comma-separated), and
//! `X-Total-Count` (rows matched before paging). `GET /api/v1/views` lists views and endpoints.
//!
//! With API keys (`--api-token-file`), a request gives one as `key=` or `Authorization: Bearer`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use datafusion_common::ScalarValue;
use ferry_kafka::job_report::{ColumnReport, EndpointReport, ViewReport};
use serde_json::json;

use crate::materialize::{self, ALL, LOOKUP};
use crate::view::Views;

/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 100_000;

#[derive(Clone)]
struct Api {
    views: Views,
    tokens: Arc<Vec<String>>,
}

pub fn router(views: Views, tokens: Vec<String>) -> Router {
    Router::new()
        .route("/api/v1/query/{view}/{endpoint}", get(query))
        .route("/api/v1/views", get(list))
        .with_state(Api { views, tokens: Arc::new(tokens) })
}

/// Serves the views on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, views: Views, tokens: Vec<String>) -> std::io::Result<()> {
    axum::serve(listener, router(views, tokens)).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({ "error": message.into() }).to_string()).into_response()
}

fn authorized(api: &Api, params: &HashMap<String, String>, headers: &HeaderMap) -> bool {
    if api.tokens.is_empty() {
        return true;
    }
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let given = params.get("key").map(String::as_str).or(bearer);
    given.is_some_and(|g| api.tokens.iter().any(|t| constant_time_eq(t.as_bytes(), g.as_bytes())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn paging(params: &HashMap<String, String>) -> Result<(usize, usize), String> {
    let limit = match params.get("limit") {
        None => 100,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(format!("limit '{v}': a whole number from 1 to {MAX_LIMIT}")),
        },
    };
    let offset = match params.get("offset") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| format!("offset '{v}': a whole number from 0"))?,
    };
    Ok((limit, offset))
}

async fn query(State(api): State<Api>, Path((view, endpoint)): Path<(String, String)>, Query(params): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    if !authorized(&api, &params, &headers) {
        return error(StatusCode::UNAUTHORIZED, "an API key is required: key=… or Authorization: Bearer …");
    }
    let Some(table) = api.views.get(&view).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("no materialized view {view}"));
    };
    let (limit, offset) = match paging(&params) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let is_lookup = endpoint == LOOKUP;
    // Evaluated off the async workers: a large view takes a while to scan.
    let answer = tokio::task::spawn_blocking(move || -> Result<(Vec<String>, usize, HeaderMap), Response> {
        let mut t = table.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let plan = t.plan.clone();
        let rows = if endpoint == LOOKUP {
            let mut key = Vec::new();
            for k in &plan.key {
                let field = plan.schema.field(*k);
                let Some(text) = params.get(field.name()) else {
                    return Err(error(StatusCode::BAD_REQUEST, format!("lookup takes the primary key: parameter {} is required", field.name())));
                };
                let value = ScalarValue::try_from_string(text.clone(), field.data_type()).map_err(|_| error(StatusCode::BAD_REQUEST, format!("parameter {}: '{text}' is not a {}", field.name(), field.data_type())))?;
                key.push(value);
            }
            match t.lookup(&key).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))? {
                Some(b) => b,
                None => return Err(error(StatusCode::NOT_FOUND, "no row under that key")),
            }
        } else {
            let all = t.batch().map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            if endpoint == ALL {
                all
            } else {
                let Some(e) = plan.endpoints.get(&endpoint) else {
                    let mut names: Vec<&str> = vec![ALL, LOOKUP];
                    names.extend(plan.endpoints.keys().map(String::as_str));
                    return Err(error(StatusCode::NOT_FOUND, format!("view {view} has no endpoint {endpoint} (it has {})", names.join(", "))));
                };
                let values = materialize::parameters(e, &params).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
                let steps = materialize::bind(e, values).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
                materialize::evaluate(&steps, all).map_err(|m| error(StatusCode::BAD_REQUEST, m))?
            }
        };
        let total = rows.num_rows();
        let page = rows.slice(offset.min(total), limit.min(total.saturating_sub(offset)));
        let objects = materialize::json_rows(&page).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let mut headers = HeaderMap::new();
        if let Some(w) = t.watermark {
            headers.insert("x-ferry-watermark", HeaderValue::from(w));
        }
        let offsets: Vec<String> = t.offsets.iter().map(|((topic, p), o)| format!("{topic}/{p}={o}")).collect();
        if let Ok(v) = HeaderValue::from_str(&offsets.join(",")) {
            headers.insert("x-ferry-source-offsets", v);
        }
        headers.insert("x-total-count", HeaderValue::from(total));
        Ok((objects, total, headers))
    })
    .await;
    match answer {
        Ok(Ok((objects, _, mut headers))) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let body = if is_lookup { objects.into_iter().next().unwrap_or_default() } else { format!("[{}]", objects.join(",")) };
            (StatusCode::OK, headers, body).into_response()
        }
        Ok(Err(response)) => response,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list(State(api): State<Api>, Query(params): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    if !authorized(&api, &params, &headers) {
        return error(StatusCode::UNAUTHORIZED, "an API key is required: key=… or Authorization: Bearer …");
    }
    let views = describe(&api.views);
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], serde_json::to_string(&views).unwrap_or_default()).into_response()
}

/// The views as `GET /api/v1/views` lists them and the job's reports tell `ferry serve`: columns,
/// key, rows, watermark and endpoints (the built-in `all` and `lookup` first), by name.
pub fn describe(views: &Views) -> Vec<ViewReport> {
    let mut names: Vec<&String> = views.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let t = views[name].read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let plan = &t.plan;
            let columns = plan.schema.fields().iter().map(|f| ColumnReport { name: f.name().clone(), ty: crate::types::FlinkType::from_arrow(f.data_type()).map_or_else(|| f.data_type().to_string(), |t| t.to_string()) }).collect();
            let key: Vec<String> = plan.key.iter().map(|k| plan.schema.field(*k).name().clone()).collect();
            let mut endpoints = vec![EndpointReport { name: ALL.into(), parameters: Vec::new(), query: None }, EndpointReport { name: LOOKUP.into(), parameters: key.clone(), query: None }];
            endpoints.extend(plan.endpoints.iter().map(|(n, e)| EndpointReport { name: n.clone(), parameters: e.params.iter().map(|(p, _)| p.clone()).collect(), query: Some(e.sql.clone()) }));
            ViewReport { name: name.clone(), columns, primary_key: key, rows: t.len() as u64, watermark: t.watermark, endpoints }
        })
        .collect()
}
