//! What the registry tells Prometheus: requests by route, method and status with their latency,
//! the schemas and subjects it holds, whether this instance leads, and writes forwarded. The
//! exporter is the binary's ([`crate::run`] takes its render function); this module only
//! records.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

use crate::state::Deleted;
use crate::store::Store;

pub const REQUESTS: &str = "ferry_registry_requests_total";
pub const LATENCY: &str = "ferry_registry_request_seconds";
pub const SCHEMAS: &str = "ferry_registry_schemas";
pub const SUBJECTS: &str = "ferry_registry_subjects";
pub const LEADER: &str = "ferry_registry_leader";
pub const FORWARDED: &str = "ferry_registry_forwarded_total";

/// Counts and times every request by its route template (`/subjects/{subject}/versions`, so
/// subject names do not become label values).
pub async fn observe(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS, "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!(LATENCY, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// Sets the gauges read from the state (at scrape time, so they are never stale).
pub fn gauges(store: &Store) {
    let state = store.state.read().unwrap();
    metrics::gauge!(SCHEMAS).set(state.schema_count() as f64);
    metrics::gauge!(SUBJECTS).set(state.subjects("", Deleted::Exclude).len() as f64);
    drop(state);
    metrics::gauge!(LEADER).set(if store.leadership.borrow().me { 1.0 } else { 0.0 });
}

/// Renders the exporter's text, gauges refreshed first.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

pub async fn scrape(State((store, render)): State<(Arc<Store>, Render)>) -> String {
    gauges(&store);
    render()
}
