//! REST API v1, its OpenAPI document, and the routes of the console and `/metrics`.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use ferry_mirror::report::now_ms;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::aggregate::{CheckpointView, FlowDetail, FlowState, FlowSummary, Latency, PartitionView, Point, ProcessView, TopicView};
use crate::collect::{ClusterView, UpstreamHeartbeat};
use crate::AppState;

/// The error body of every non-2xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    pub(crate) status: u16,
    /// Stable machine-readable code: `not_found`, `unauthorized`, `cluster_unreachable`, `not_ready`.
    pub(crate) code: String,
    pub(crate) message: String,
}

pub(crate) fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody { error: ErrorDetail { status: status.as_u16(), code: code.to_string(), message: message.to_string() } };
    (status, Json(body)).into_response()
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthBody {
    /// `ok`, `ready`, or `starting`.
    pub(crate) status: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ferry API", description = "Replication health of `ferry mirror` deployments, aggregated across processes, and the consumer groups of every cluster. Every endpoint but health and readiness needs `Authorization: Bearer <token>` when `ferry serve` runs with `--api-token-file`."),
    paths(health, ready, clusters, flows, flow, flow_series, crate::monitoring::overview, crate::monitoring::brokers, crate::monitoring::topics, crate::monitoring::topic, crate::monitoring::groups, crate::monitoring::group, crate::history::group, crate::history::topic, crate::monitoring::canary,
        crate::alerts::list, crate::alerts::policies, crate::alerts::notifiers, crate::alerts::put_policy, crate::alerts::put_notifier, crate::alerts::delete_policy, crate::alerts::delete_notifier, crate::sql_jobs::sql_jobs, crate::sql_jobs::stop, crate::sql_jobs::restart, crate::flink_jobs::flink_jobs, crate::flink_jobs::stop, crate::flink_jobs::restart, crate::sql_console::tables, crate::sql_console::sample, crate::sql_registry::registry_tables),
    components(schemas(ErrorBody, ErrorDetail, HealthBody, ClusterView, UpstreamHeartbeat, FlowSummary, FlowDetail, FlowState, Latency, TopicView, PartitionView, CheckpointView, ProcessView, Point,
        crate::monitoring::GroupSummary, crate::monitoring::GroupPage, crate::monitoring::ClusterOverview, crate::monitoring::TopicSummary, crate::monitoring::TopicPage, crate::monitoring::TopicDetail,
        ferry_monitor::cluster::BrokerView, ferry_monitor::cluster::TopicView, ferry_monitor::cluster::TopicPartitionView, ferry_monitor::collect::GroupView, ferry_monitor::collect::PartitionView, ferry_monitor::groups::PartitionLag, ferry_monitor::collect::MemberView,
        ferry_monitor::collect::Assigned, ferry_monitor::lag::LagSeconds, ferry_monitor::lag::Method, ferry_monitor::status::Status, ferry_monitor::status::Verdict, ferry_monitor::status::Trend,
        ferry_monitor::canary::CanaryState, ferry_monitor::canary::CanaryView, crate::history::GroupHistory, crate::history::TopicHistory, crate::history::PartitionSeries, crate::history::Resolution, ferry_monitor::history::Point,
        crate::alerts::AlertsView, crate::alerts::HistoryEntry, crate::alerts::PolicyMap, crate::alerts::NotifierMap, crate::alerts::Delivery, ferry_monitor::alerts::Policy, ferry_monitor::alerts::Entity, ferry_monitor::alerts::Firing,
        ferry_monitor::notify::Notifier, ferry_monitor::notify::SmtpSecurity, crate::sql_jobs::SqlJobView, crate::sql_jobs::SqlPipelineView, crate::sql_jobs::CommandSent, crate::sql_jobs::SqlViewInfo, crate::sql_jobs::SqlEndpointInfo, crate::flink_jobs::FlinkJobView, crate::flink_jobs::StoppedJob, crate::flink_jobs::RestartedJob, crate::sql_console::TablesRequest, crate::sql_console::SampleRequest, crate::sql_console::TableView, crate::sql_console::ColumnView, crate::sql_registry::RegistryTableView)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "replication", description = "Flows, topics, partitions, checkpoints"), (name = "monitoring", description = "Brokers, topics and consumer groups of every cluster: lag in records and seconds, status"), (name = "alerts", description = "Alert policies on groups, topics, brokers and flows; notifiers (webhook, Slack-compatible, e-mail); what fires"), (name = "sql", description = "`ferry sql` jobs, as their reports tell: state, throughput, watermark, late rows, views; stop and restart; jobs on Apache Flink clusters (--flink-gateway): list with their metrics, stop with a savepoint, restart from it; the console's tables (from a job file or the schema registry) and sampled queries"), (name = "service", description = "Health and readiness"))
)]
pub struct ApiDoc;

/// The OpenAPI document of this instance: without a token no route requires one, so the
/// document claims no security requirement (clients and schemathesis trust it).
pub fn api_doc(token_required: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if !token_required {
        doc.security = None;
        if let Some(c) = doc.components.as_mut() {
            c.security_schemes.clear();
        }
    }
    doc
}

pub(crate) fn routes(state: AppState, token_required: bool) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/ready", get(ready))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/flows/{flow}", get(flow))
        .route("/api/v1/flows/{flow}/series", get(flow_series))
        .route("/api/v1/clusters/{cluster}/overview", get(crate::monitoring::overview))
        .route("/api/v1/clusters/{cluster}/brokers", get(crate::monitoring::brokers))
        .route("/api/v1/clusters/{cluster}/topics", get(crate::monitoring::topics))
        .route("/api/v1/clusters/{cluster}/topics/{topic}", get(crate::monitoring::topic))
        .route("/api/v1/clusters/{cluster}/groups", get(crate::monitoring::groups))
        .route("/api/v1/clusters/{cluster}/groups/{group}", get(crate::monitoring::group))
        .route("/api/v1/clusters/{cluster}/canary", get(crate::monitoring::canary))
        .route("/api/v1/clusters/{cluster}/groups/{group}/history", get(crate::history::group))
        .route("/api/v1/clusters/{cluster}/topics/{topic}/history", get(crate::history::topic))
        .route("/api/v1/sql/jobs", get(crate::sql_jobs::sql_jobs))
        .route("/api/v1/sql/jobs/{process}/stop", axum::routing::post(crate::sql_jobs::stop))
        .route("/api/v1/sql/jobs/{process}/restart", axum::routing::post(crate::sql_jobs::restart))
        .route("/api/v1/sql/tables", axum::routing::post(crate::sql_console::tables))
        .route("/api/v1/sql/sample", axum::routing::post(crate::sql_console::sample))
        .route("/api/v1/sql/registry-tables", get(crate::sql_registry::registry_tables))
        .route("/api/v1/sql/flink/jobs", get(crate::flink_jobs::flink_jobs))
        .route("/api/v1/sql/flink/jobs/{id}/stop", axum::routing::post(crate::flink_jobs::stop))
        .route("/api/v1/sql/flink/jobs/{id}/restart", axum::routing::post(crate::flink_jobs::restart))
        .route("/api/v1/alerts", get(crate::alerts::list))
        .route("/api/v1/alerts/policies", get(crate::alerts::policies))
        .route("/api/v1/alerts/notifiers", get(crate::alerts::notifiers))
        .route("/api/v1/alerts/policies/{name}", put(crate::alerts::put_policy).delete(crate::alerts::delete_policy))
        .route("/api/v1/alerts/notifiers/{name}", put(crate::alerts::put_notifier).delete(crate::alerts::delete_notifier))
        .route("/metrics", get(metrics))
        .route("/", get(console))
        .route("/index.html", get(console))
        .route("/schemas", get(schemas_page))
        .route("/sql", get(sql_page))
        .route("/monitor", get(monitor_page))
        .route("/console.css", get(console_css))
        .route("/api/v1/registry/{*path}", get(crate::registry::proxy))
        .fallback(not_found)
        .with_state(state)
        .merge(SwaggerUi::new("/api/docs").url("/openapi.json", api_doc(token_required)))
}

async fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "not_found", "no such endpoint (see /openapi.json)")
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/api/v1/health", tag = "service", security(()), responses((status = 200, body = HealthBody)))]
async fn health() -> Json<HealthBody> {
    Json(HealthBody { status: "ok".into() })
}

/// Readiness: every target cluster's metrics have been read up to date once.
#[utoipa::path(get, path = "/api/v1/ready", tag = "service", security(()), responses((status = 200, body = HealthBody), (status = 503, body = ErrorBody)))]
async fn ready(State(state): State<AppState>) -> Response {
    if state.shared.ready() {
        Json(HealthBody { status: "ready".into() }).into_response()
    } else {
        error_body(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "still reading mirror metrics from the target clusters")
    }
}

fn cluster_views(state: &AppState, now: i64) -> Vec<ClusterView> {
    let summaries = state.shared.aggregator.lock().unwrap().summaries(now);
    let mut views: Vec<ClusterView> = state.shared.clusters.lock().unwrap().values().cloned().collect();
    for v in &mut views {
        v.upstream = summaries
            .iter()
            .filter(|s| s.target == v.alias)
            .map(|s| UpstreamHeartbeat { source: s.source.clone(), heartbeat_age_ms: s.heartbeat_age_ms })
            .collect();
    }
    views
}

/// The clusters of the configuration, whether they are reachable, and the heartbeat age of each
/// flow into them.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "replication", responses((status = 200, body = [ClusterView]), (status = 401, body = ErrorBody)))]
async fn clusters(State(state): State<AppState>) -> Json<Vec<ClusterView>> {
    Json(cluster_views(&state, now_ms()))
}

/// Every flow with its state, throughput, latency, lag and heartbeat age.
#[utoipa::path(get, path = "/api/v1/flows", tag = "replication", responses((status = 200, body = [FlowSummary]), (status = 401, body = ErrorBody)))]
async fn flows(State(state): State<AppState>) -> Json<Vec<FlowSummary>> {
    Json(state.shared.aggregator.lock().unwrap().summaries(now_ms()))
}

/// Checks that `flow` exists and its target is not known to be unreachable.
fn check_flow(state: &AppState, flow: &str) -> Result<(), Response> {
    let target = {
        let agg = state.shared.aggregator.lock().unwrap();
        if !agg.flow_names().any(|f| f == flow) {
            let known: Vec<&str> = agg.flow_names().collect();
            return Err(error_body(StatusCode::NOT_FOUND, "not_found", &format!("no flow '{flow}' (flows: {})", known.join(", "))));
        }
        agg.summaries(now_ms()).into_iter().find(|s| s.flow == flow).map(|s| s.target)
    };
    if let Some(target) = target {
        if let Some(c) = state.shared.clusters.lock().unwrap().get(&target) {
            if c.reachable == Some(false) {
                let message = format!("cluster '{}' ({}) is unreachable: {}", c.alias, c.address, c.error.clone().unwrap_or_default());
                return Err(error_body(StatusCode::SERVICE_UNAVAILABLE, "cluster_unreachable", &message));
            }
        }
    }
    Ok(())
}

/// One flow: per topic and partition throughput, latency and lag; checkpoint age per group; the
/// processes serving it.
#[utoipa::path(get, path = "/api/v1/flows/{flow}", tag = "replication",
    params(("flow" = String, Path, description = "`source->target`, URL-encoded (`a-%3Eb`)")),
    responses((status = 200, body = FlowDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, description = "the flow's target cluster is unreachable", body = ErrorBody)))]
async fn flow(State(state): State<AppState>, Path(flow): Path<String>) -> Response {
    if let Err(r) = check_flow(&state, &flow) {
        return r;
    }
    match state.shared.aggregator.lock().unwrap().detail(&flow, now_ms()) {
        Some(d) => Json(d).into_response(),
        None => error_body(StatusCode::NOT_FOUND, "not_found", &format!("no flow '{flow}'")),
    }
}

/// The last hour of a flow in 10 s buckets: records/s, bytes/s, p99 latency, lag.
#[utoipa::path(get, path = "/api/v1/flows/{flow}/series", tag = "replication",
    params(("flow" = String, Path, description = "`source->target`, URL-encoded")),
    responses((status = 200, body = [Point]), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn flow_series(State(state): State<AppState>, Path(flow): Path<String>) -> Response {
    if let Err(r) = check_flow(&state, &flow) {
        return r;
    }
    match state.shared.aggregator.lock().unwrap().series(&flow) {
        Some(points) => Json(points).into_response(),
        None => error_body(StatusCode::NOT_FOUND, "not_found", &format!("no flow '{flow}'")),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let now = now_ms();
    let clusters = cluster_views(&state, now);
    let details: Vec<FlowDetail> = {
        let agg = state.shared.aggregator.lock().unwrap();
        agg.flow_names().filter_map(|f| agg.detail(f, now)).collect()
    };
    let polled: Vec<(String, std::sync::Arc<ferry_monitor::collect::ClusterSnapshot>)> = match &state.monitor {
        Some(m) => clusters.iter().filter_map(|c| Some((c.alias.clone(), m.cluster(&c.alias)?))).collect(),
        None => Vec::new(),
    };
    let canaries: Vec<(String, ferry_monitor::canary::CanaryState)> = match &state.monitor {
        Some(m) => clusters.iter().filter_map(|c| Some((c.alias.clone(), m.canary(&c.alias)?))).collect(),
        None => Vec::new(),
    };
    let text = crate::prometheus::render(&details, &clusters, &polled, &canaries);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn console() -> Html<&'static str> {
    Html(include_str!("console.html"))
}

async fn monitor_page() -> Html<&'static str> {
    Html(include_str!("monitor.html"))
}

async fn schemas_page() -> Html<&'static str> {
    Html(include_str!("schemas.html"))
}

async fn sql_page() -> Html<&'static str> {
    Html(include_str!("sql.html"))
}

async fn console_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("console.css"))
}
