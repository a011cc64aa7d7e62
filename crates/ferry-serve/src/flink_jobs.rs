//! Jobs on Apache Flink clusters (`ferry serve --flink-gateway URL`, repeatable), through their
//! SQL Gateways (`ferry_flink`): `GET /api/v1/sql/flink/jobs` lists them, `POST
//! /api/v1/sql/flink/jobs/{id}/stop` stops one with a savepoint (resumed with `ferry sql run
//! --engine flink --from-savepoint PATH`). A running job's metrics come from the JobManager whose
//! REST address the gateway's configuration gives. The gateway's calls block: they run on
//! blocking threads, each gateway asked in turn.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_flink::{Gateway, GatewayError, JobManager, JobMetrics};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{error_body, ErrorBody};
use crate::AppState;

/// A job of a Flink cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlinkJobView {
    /// The SQL Gateway that listed it.
    pub gateway: String,
    pub id: String,
    pub name: String,
    /// Flink's state, in lower case: running, finished, failed, canceled, …
    pub state: String,
    /// A running job's progress from its JobManager's metrics (null until Flink has them, which
    /// its metric fetcher refreshes every 10 s by default): records its sources emitted, …
    pub records_in: Option<u64>,
    /// … records its sinks took, …
    pub records_out: Option<u64>,
    /// … rows its window operators dropped as late, …
    pub late: Option<u64>,
    /// … and the least watermark at its sinks (ms) and how far it is behind the clock.
    pub watermark_ms: Option<i64>,
    pub watermark_lag_ms: Option<i64>,
    /// Why the metrics are missing, when the JobManager could not be read.
    pub metrics_error: Option<String>,
}

/// A job stopped with a savepoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoppedJob {
    pub id: String,
    /// Where its savepoint is (`--from-savepoint` resumes from it).
    pub savepoint: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopParams {
    /// Let event time run to its end first (windows fire), as Flink's WITH DRAIN.
    #[serde(default)]
    drain: bool,
}

fn unreachable(e: &GatewayError) -> Response {
    error_body(StatusCode::BAD_GATEWAY, "flink_unreachable", &e.to_string())
}

/// The jobs of every configured Flink cluster (none configured: an empty list), a running job's
/// with its throughput counters, late rows and watermark from its JobManager.
#[utoipa::path(get, path = "/api/v1/sql/flink/jobs", tag = "sql",
    responses((status = 200, body = [FlinkJobView]), (status = 401, body = ErrorBody), (status = 502, description = "a gateway cannot be reached or refused", body = ErrorBody)))]
pub(crate) async fn flink_jobs(State(state): State<AppState>) -> Response {
    let gateways = state.flink.clone();
    let listed = tokio::task::spawn_blocking(move || -> Result<Vec<FlinkJobView>, GatewayError> {
        let mut out = Vec::new();
        for url in gateways.iter() {
            let gateway = Gateway::connect(url)?;
            let jobs = gateway.jobs()?;
            // The metrics come from the JobManager the gateway submits to; without them the jobs
            // are still listed, with the reason.
            let jobmanager = if jobs.iter().any(|j| j.status == "RUNNING") { Some(gateway.jobmanager_url().and_then(|u| JobManager::new(&u))) } else { None };
            for j in jobs {
                let (metrics, metrics_error) = match (&jobmanager, j.status == "RUNNING") {
                    (Some(Ok(jm)), true) => match jm.metrics(&j.id) {
                        Ok(m) => (m, None),
                        Err(e) => (JobMetrics::default(), Some(e.to_string())),
                    },
                    (Some(Err(e)), true) => (JobMetrics::default(), Some(e.to_string())),
                    _ => (JobMetrics::default(), None),
                };
                let now = ferry_mirror::report::now_ms();
                out.push(FlinkJobView {
                    gateway: url.clone(),
                    id: j.id,
                    name: j.name,
                    state: j.status.to_ascii_lowercase(),
                    records_in: metrics.records_in,
                    records_out: metrics.records_out,
                    late: metrics.late,
                    watermark_ms: metrics.watermark_ms,
                    watermark_lag_ms: metrics.watermark_ms.map(|w| now - w),
                    metrics_error,
                });
            }
        }
        Ok(out)
    })
    .await;
    match listed {
        Ok(Ok(jobs)) => Json(jobs).into_response(),
        Ok(Err(e)) => unreachable(&e),
        Err(e) => error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
    }
}

/// Stops a running Flink job with a savepoint.
#[utoipa::path(post, path = "/api/v1/sql/flink/jobs/{id}/stop", tag = "sql",
    params(("id" = String, Path, description = "the Flink job id"), StopParams),
    responses((status = 200, body = StoppedJob), (status = 400, description = "`drain` not true or false", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, description = "no configured cluster runs it", body = ErrorBody), (status = 502, description = "a gateway cannot be reached, or Flink refused", body = ErrorBody)))]
pub(crate) async fn stop(State(state): State<AppState>, Path(id): Path<String>, params: Result<Query<StopParams>, QueryRejection>) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return error_body(StatusCode::BAD_REQUEST, "bad_request", &e.body_text()),
    };
    let gateways = state.flink.clone();
    let outcome = tokio::task::spawn_blocking(move || -> Result<Option<StoppedJob>, GatewayError> {
        for url in gateways.iter() {
            let gateway = Gateway::connect(url)?;
            if gateway.jobs()?.iter().any(|j| j.id == id && j.status == "RUNNING") {
                let savepoint = gateway.stop_with_savepoint(&id, params.drain)?;
                return Ok(Some(StoppedJob { id, savepoint }));
            }
        }
        Ok(None)
    })
    .await;
    match outcome {
        Ok(Ok(Some(stopped))) => Json(stopped).into_response(),
        Ok(Ok(None)) => error_body(StatusCode::NOT_FOUND, "not_found", "no running job with this id on the Flink clusters ferry serve knows (--flink-gateway)"),
        Ok(Err(e)) => unreachable(&e),
        Err(e) => error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
    }
}
