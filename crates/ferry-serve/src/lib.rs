//! `ferry serve`: the SRM Service + Streams Messaging Manager replication page equivalent.
//!
//! Every `ferry mirror` process publishes raw metrics reports to `ferry-metrics.internal` on
//! each flow's target ([`ferry_mirror::report`]). `ferry serve` follows those topics
//! ([`collect`]), aggregates across processes and restarts ([`aggregate`], pure), and serves:
//!
//! - `/api/v1/...`: JSON, documented by the OpenAPI 3 document at `/openapi.json` and the
//!   interactive page at `/api/docs` (assets built into the binary);
//! - `/metrics`: the aggregated series in Prometheus text format;
//! - `/`: the web console, a page per role built into the binary (`/` replication, `/schemas`
//!   the schema registry, read through `/api/v1/registry/...`: [`registry`]).
//!
//! Any number of `serve` instances can run: each reads the topics on its own.

pub mod aggregate;
pub mod alerts;
mod api;
mod auth;
pub mod history;
mod monitoring;
pub mod collect;
mod prometheus;
mod registry;
pub mod sql_jobs;
pub mod flink_jobs;
pub mod sql_console;
pub mod sql_registry;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use ferry_mirror::MirrorConfig;
use tokio_util::sync::CancellationToken;

pub use crate::api::{api_doc, ApiDoc};
pub use crate::collect::Shared;
pub use crate::registry::Registry;

/// The bearer token that API and console require, if any. Never logged or shown.
#[derive(Clone, Default)]
pub struct Token(Option<Arc<str>>);

impl Token {
    pub fn new(token: Option<String>) -> Token {
        Token(token.map(Into::into))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Token(<redacted>)" } else { "Token(none)" })
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) shared: Arc<Shared>,
    /// The registry the Schemas page reads, if any.
    pub(crate) registry: Option<Arc<Registry>>,
    /// Every cluster's consumer groups, polled (none in API tests without clusters).
    pub(crate) monitor: Option<Arc<ferry_monitor::collect::Monitor>>,
    /// Alert policies, notifiers and their evaluation (none in API tests that do not need them).
    pub(crate) alerts: Option<Arc<alerts::Alerts>>,
    /// The monitoring history (none in API tests that do not need it).
    pub(crate) history: Option<Arc<history::Recorder>>,
    /// The SQL Gateways of the Flink clusters whose jobs the API lists and stops.
    pub(crate) flink: Arc<Vec<String>>,
}

/// The whole HTTP surface over `shared` (and `registry`, for the Schemas page).
pub fn router(shared: Arc<Shared>, registry: Option<Arc<Registry>>, monitor: Option<Arc<ferry_monitor::collect::Monitor>>, alerts: Option<Arc<alerts::Alerts>>, token: Token) -> Router {
    let state = AppState { shared, registry, monitor, alerts, history: None, flink: Arc::default() };
    api::routes(state, token.0.is_some()).layer(axum::middleware::from_fn_with_state(token, auth::require_token))
}

/// How often every cluster's consumer groups are polled.
pub const MONITOR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the metrics of `config`'s flows, polls every cluster, evaluates `alerts` after every
/// poll, and serves HTTP on `listen` until `cancel`.
/// What `serve` runs besides the replication view.
pub struct Services {
    /// The registry the Schemas page reads.
    pub registry: Option<Registry>,
    pub alerts: Arc<alerts::Alerts>,
    pub history: Arc<history::Recorder>,
    /// Cluster aliases to run the latency canary on.
    pub canary: Vec<String>,
    /// SQL Gateways of Flink clusters (`--flink-gateway`).
    pub flink_gateways: Vec<String>,
}

pub async fn serve(config: &MirrorConfig, listen: SocketAddr, services: Services, token: Token, cancel: CancellationToken) -> std::io::Result<()> {
    let Services { registry, alerts, history, canary, flink_gateways } = services;
    let shared = Arc::new(Shared::new(config));
    collect::start(config, shared.clone(), cancel.clone());
    let monitor = ferry_monitor::collect::Monitor::start(&config.clusters, MONITOR_INTERVAL, cancel.clone());
    for c in config.clusters.iter().filter(|c| canary.contains(&c.alias)) {
        monitor.start_canary(c, cancel.clone());
    }
    let state = AppState { shared: shared.clone(), registry: registry.map(Arc::new), monitor: Some(monitor.clone()), alerts: Some(alerts.clone()), history: Some(history.clone()), flink: Arc::new(flink_gateways) };
    let evaluating = state.clone();
    let stop = cancel.clone();
    let evaluation = tokio::spawn(async move {
        // Polls land every MONITOR_INTERVAL on each cluster's own clock: looking every second
        // judges each one soon after it lands (a poll is evaluated once).
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut saved = std::time::Instant::now();
        while !stop.is_cancelled() {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            let now = ferry_mirror::report::now_ms();
            let polled = alerts.evaluate(&evaluating, now);
            history.record(&polled, now);
            if saved.elapsed() >= std::time::Duration::from_secs(60) {
                saved = std::time::Instant::now();
                let h = history.clone();
                let _ = tokio::task::spawn_blocking(move || h.save(now)).await;
            }
        }
        let _ = tokio::task::spawn_blocking(move || history.save(ferry_mirror::report::now_ms())).await;
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, auth = token.0.is_some(), "ferry serve listening");
    let app = api::routes(state, token.0.is_some()).layer(axum::middleware::from_fn_with_state(token, auth::require_token));
    let ended = cancel.clone();
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await;
    // The history's last minute is saved before the process ends.
    ended.cancel();
    let _ = evaluation.await;
    served
}
