//! Jobs on Apache Flink clusters (`ferry serve --flink-gateway URL`, repeatable), through their
//! SQL Gateways (`ferry_flink`): `GET /api/v1/sql/flink/jobs` lists them, `POST
//! /api/v1/sql/flink/jobs/{id}/stop` stops one with a savepoint (resumed with `ferry sql run
//! --engine flink --from-savepoint PATH`), and `POST /api/v1/sql/flink/jobs/{id}/restart` starts
//! a job Ferry submitted again from its savepoint (a running one is stopped with a savepoint
//! first), with the statements `ferry sql run --engine flink` recorded for it
//! ([`FLINK_JOBS_TOPIC`], read on every cluster). A running job's metrics come from the JobManager whose
//! REST address the gateway's configuration gives. The gateway's calls block: they run on
//! blocking threads, each gateway asked in turn.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_flink::{Gateway, GatewayError, JobManager, JobMetrics};
use ferry_kafka::job_report::{FlinkSubmission, FLINK_JOBS_TOPIC};
use ferry_kafka::ClusterClient;
use tokio_util::sync::CancellationToken;
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
    /// Ferry submitted it and knows its statements: it can be restarted from its savepoint.
    pub restartable: bool,
    /// The job it restarted, if it did.
    pub restarted_from: Option<String>,
    /// The job that restarted it (or was started from its savepoint), if one did.
    pub restarted_as: Option<String>,
    /// The savepoint an ended job Ferry submitted resumes from (none: nothing to resume).
    pub savepoint: Option<String>,
}

/// The JobManager behind `gateway`, found on first use.
fn jobmanager<'a>(slot: &'a mut Option<Result<JobManager, String>>, gateway: &Gateway) -> Result<&'a JobManager, String> {
    slot.get_or_insert_with(|| gateway.jobmanager_url().and_then(|u| JobManager::new(&u)).map_err(|e| e.to_string())).as_ref().map_err(Clone::clone)
}

/// Every recorded submission, by Flink job id, with the cluster it was read from.
#[derive(Default)]
pub struct Submissions {
    by_job: HashMap<String, (ClusterClient, FlinkSubmission)>,
    /// Jobs being restarted now (a second restart of one would resume its savepoint twice).
    restarting: std::collections::HashSet<String>,
    /// Records of the topic that are not submissions.
    pub ignored: u64,
}

impl Submissions {
    pub fn apply(&mut self, cluster: &ClusterClient, value: Option<&[u8]>) {
        match value.and_then(FlinkSubmission::decode) {
            Some(s) => {
                self.by_job.insert(s.flink_job.clone(), (cluster.clone(), s));
            }
            None => self.ignored += 1,
        }
    }

    fn get(&self, id: &str) -> Option<(ClusterClient, FlinkSubmission)> {
        self.by_job.get(id).cloned()
    }

    /// The job started from `savepoint`, if one was.
    fn resumed_from(&self, savepoint: &str) -> Option<&str> {
        self.by_job.values().find(|(_, s)| s.from_savepoint.as_deref() == Some(savepoint)).map(|(_, s)| s.flink_job.as_str())
    }

    /// The job that restarted `id`, if one did.
    fn restarted_as(&self, id: &str) -> Option<&str> {
        self.by_job.values().find(|(_, s)| s.restarted_from.as_deref() == Some(id)).map(|(_, s)| s.flink_job.as_str())
    }
}

/// Follows the submissions topic of `cluster` until `cancel`.
pub fn follow(cluster: ClusterClient, submissions: Arc<Mutex<Submissions>>, cancel: CancellationToken) {
    crate::collect::follow_topic(&cluster, FLINK_JOBS_TOPIC, "flink job submissions", &cancel, |v| submissions.lock().unwrap().apply(&cluster, v), || {}, || {});
}

/// A job started again from a savepoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestartedJob {
    pub id: String,
    /// The savepoint it resumed from.
    pub savepoint: String,
    /// The new job's id.
    pub restarted: String,
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
    let submissions = state.shared.flink_submissions.clone();
    let listed = tokio::task::spawn_blocking(move || -> Result<Vec<FlinkJobView>, GatewayError> {
        let mut out = Vec::new();
        for url in gateways.iter() {
            let gateway = Gateway::connect(url)?;
            let jobs = gateway.jobs()?;
            // The metrics come from the JobManager the gateway submits to; without them the jobs
            // are still listed, with the reason.
            let mut jm = None;
            for j in jobs {
                let running = j.status == "RUNNING";
                let (metrics, metrics_error) = if running {
                    match jobmanager(&mut jm, &gateway).and_then(|jm| jm.metrics(&j.id).map_err(|e| e.to_string())) {
                        Ok(m) => (m, None),
                        Err(e) => (JobMetrics::default(), Some(e)),
                    }
                } else {
                    (JobMetrics::default(), None)
                };
                let now = ferry_mirror::report::now_ms();
                let (submitted, mut restarted_as) = {
                    let known = submissions.lock().unwrap();
                    (known.get(&j.id).map(|(_, s)| s), known.restarted_as(&j.id).map(str::to_string))
                };
                // An ended job Ferry submitted resumes from its savepoint, unless a job was
                // started from that savepoint already (`ferry sql run --from-savepoint` too).
                let savepoint = if submitted.is_some() && restarted_as.is_none() && ferry_flink::gateway::terminal(&j.status) {
                    jobmanager(&mut jm, &gateway).ok().and_then(|jm| jm.latest_savepoint(&j.id).ok().flatten())
                } else {
                    None
                };
                if let Some(p) = &savepoint {
                    restarted_as = submissions.lock().unwrap().resumed_from(p).map(str::to_string);
                }
                out.push(FlinkJobView {
                    savepoint: savepoint.filter(|_| restarted_as.is_none()),
                    restarted_as,
                    restartable: submitted.is_some(),
                    restarted_from: submitted.and_then(|s| s.restarted_from),
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
#[utoipa::path(post, path = "/api/v1/sql/flink/jobs/{id}/stop", tag = "sql", operation_id = "stop_flink_job",
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

/// Why a restart did not happen.
enum RestartError {
    Gateway(GatewayError),
    /// The job cannot be resumed (no savepoint, or a state that is neither running nor ended).
    Conflict(String),
}

impl From<GatewayError> for RestartError {
    fn from(e: GatewayError) -> RestartError {
        RestartError::Gateway(e)
    }
}

/// Starts a job Ferry submitted again from its savepoint, with the statements recorded for it:
/// a running job is stopped with a savepoint first; an ended one resumes from its latest
/// savepoint (or retained checkpoint). The new job is recorded as restarting the old one.
#[utoipa::path(post, path = "/api/v1/sql/flink/jobs/{id}/restart", tag = "sql", operation_id = "restart_flink_job",
    params(("id" = String, Path, description = "the Flink job id")),
    responses((status = 200, body = RestartedJob), (status = 401, body = ErrorBody),
        (status = 404, description = "no statements recorded for the job (not submitted by `ferry sql run --engine flink`), or its gateway is not one ferry serve knows", body = ErrorBody),
        (status = 409, description = "nothing to resume from (no savepoint), the job is neither running nor ended, or it was restarted already", body = ErrorBody),
        (status = 502, description = "a gateway cannot be reached, or Flink refused", body = ErrorBody)))]
pub(crate) async fn restart(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let (found, restarted_as, busy) = {
        let mut submissions = state.shared.flink_submissions.lock().unwrap();
        let busy = !submissions.restarting.insert(id.clone());
        (submissions.get(&id), submissions.restarted_as(&id).map(str::to_string), busy)
    };
    if busy {
        return error_body(StatusCode::CONFLICT, "conflict", &format!("Flink job {id} is being restarted"));
    }
    // On a task of its own: a client that goes away mid-restart does not leave the new job
    // unrecorded or the old one marked busy.
    let task = tokio::spawn(async move {
        let response = restart_once(&state, id.clone(), found, restarted_as).await;
        state.shared.flink_submissions.lock().unwrap().restarting.remove(&id);
        response
    });
    task.await.unwrap_or_else(|e| error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()))
}

async fn restart_once(state: &AppState, id: String, found: Option<(ClusterClient, FlinkSubmission)>, restarted_as: Option<String>) -> Response {
    let Some((cluster, submission)) = found else {
        return error_body(StatusCode::NOT_FOUND, "not_found", &format!("no statements are recorded for Flink job {id}: only jobs submitted by ferry sql run --engine flink can be restarted here"));
    };
    // Its savepoint was resumed already: a second copy would write everything since twice.
    if let Some(other) = restarted_as {
        return error_body(StatusCode::CONFLICT, "conflict", &format!("Flink job {id} was restarted already, as {other}: restart that one"));
    }
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    if !state.flink.iter().any(|g| same(g, &submission.gateway)) {
        return error_body(StatusCode::NOT_FOUND, "not_found", &format!("Flink job {id} went through the SQL Gateway at {}, which ferry serve does not know (--flink-gateway)", submission.gateway));
    }
    let recorded = submission.clone();
    let submissions = state.shared.flink_submissions.clone();
    let outcome = tokio::task::spawn_blocking(move || -> Result<(String, ferry_flink::Submitted), RestartError> {
        let gateway = Gateway::connect(&recorded.gateway)?;
        let status = gateway.jobs()?.into_iter().find(|j| j.id == id).map(|j| j.status);
        let savepoint = match status.as_deref() {
            Some("RUNNING") => gateway.stop_with_savepoint(&id, false)?,
            Some(s) if ferry_flink::gateway::terminal(s) => {
                let jm = JobManager::new(&gateway.jobmanager_url()?)?;
                let savepoint = jm.latest_savepoint(&id)?.ok_or_else(|| RestartError::Conflict(format!("Flink job {id} is {s} and Flink kept no savepoint or checkpoint of it to resume from")))?;
                if let Some(other) = submissions.lock().unwrap().resumed_from(&savepoint) {
                    return Err(RestartError::Conflict(format!("the savepoint of Flink job {id} ({savepoint}) was resumed already, by {other}")));
                }
                savepoint
            }
            Some(s) => return Err(RestartError::Conflict(format!("Flink job {id} is {s}: restart it once it runs or has ended"))),
            None => return Err(RestartError::Conflict(format!("the Flink cluster no longer knows job {id}"))),
        };
        let mut properties = recorded.properties.clone();
        properties.push(("execution.savepoint.path".into(), savepoint.clone()));
        let statements: Vec<(u64, String)> = recorded.statements.iter().map(|s| (0, s.clone())).collect();
        let started = gateway.submit(&format!("ferry-{}", recorded.job), &properties, &statements, Duration::from_secs(120)).map_err(|e| RestartError::Gateway(e.error))?;
        let new = started.into_iter().last().ok_or_else(|| RestartError::Conflict("the recorded statements started no job".into()))?;
        Ok((savepoint, new))
    })
    .await;
    match outcome {
        Ok(Ok((savepoint, new))) => {
            let record = FlinkSubmission { flink_job: new.job_id.clone(), statements: new.statements, from_savepoint: Some(savepoint.clone()), restarted_from: Some(submission.flink_job.clone()), submitted_ms: ferry_mirror::report::now_ms(), ..submission.clone() };
            if let Err(e) = record.record(&cluster).await {
                tracing::warn!(job = %new.job_id, error = %e, "the restarted job runs, but its statements could not be recorded: it cannot be restarted again from here");
            }
            state.shared.flink_submissions.lock().unwrap().apply(&cluster, Some(record.encode().as_bytes()));
            Json(RestartedJob { id: submission.flink_job, savepoint, restarted: new.job_id }).into_response()
        }
        Ok(Err(RestartError::Conflict(m))) => error_body(StatusCode::CONFLICT, "conflict", &m),
        Ok(Err(RestartError::Gateway(e))) => unreachable(&e),
        Err(e) => error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
    }
}
