//! `ferry sql` jobs as their reports tell (`ferry_kafka::job_report`): a reader per cluster of
//! the configuration follows `ferry-sql-jobs.internal`, each job run's latest report is kept, and
//! `GET /api/v1/sql/jobs` lists them with a state: running, finished, failed, or lost (a running
//! job whose reports stopped: its process died or cannot reach the cluster). `POST
//! /api/v1/sql/jobs/{process}/stop` and `…/restart` send a running job a command
//! ([`ferry_kafka::job_report::JobCommand`]) on the cluster its reports come from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_kafka::job_report::{Command, JobCommand, JobReport, JobState, ViewReport, JOBS_TOPIC, JOB_REPORT_INTERVAL};
use ferry_kafka::ClusterClient;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::api::{error_body, ErrorBody};
use crate::AppState;

/// A run that has not reported for this many intervals is lost.
const LOST_AFTER_INTERVALS: u32 = 3;

/// How long a job run that ended (or was lost) stays listed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Every job run's latest report, by (cluster, job, process).
#[derive(Default)]
pub struct SqlJobs {
    runs: BTreeMap<(String, String, String), JobReport>,
    /// Each cluster reports come from, for the commands sent back.
    clusters: BTreeMap<String, ClusterClient>,
    /// Records of the topic that are not reports.
    pub ignored: u64,
}

impl SqlJobs {
    pub fn apply(&mut self, cluster: &str, value: Option<&[u8]>) {
        match value.and_then(JobReport::decode) {
            Some(r) => {
                let key = (cluster.to_string(), r.job.clone(), r.process.clone());
                // Reports of one run arrive in order on one partition; keep the latest.
                if self.runs.get(&key).is_none_or(|old| old.at_ms <= r.at_ms) {
                    self.runs.insert(key, r);
                }
            }
            None => self.ignored += 1,
        }
    }

    /// The runs as the API shows them, newest first, at `now_ms`; runs quiet for an hour go.
    pub fn views(&mut self, now_ms: i64) -> Vec<SqlJobView> {
        self.runs.retain(|_, r| now_ms - r.at_ms < FORGET_AFTER.as_millis() as i64);
        let lost_after = (JOB_REPORT_INTERVAL * LOST_AFTER_INTERVALS).as_millis() as i64;
        let mut out: Vec<SqlJobView> = self
            .runs
            .iter()
            .map(|((cluster, _, _), r)| {
                let state = match r.state {
                    JobState::Running if now_ms - r.at_ms > lost_after => "lost",
                    JobState::Running => "running",
                    JobState::Finished => "finished",
                    JobState::Failed => "failed",
                };
                SqlJobView {
                    commands: r.commands,
                    restartable: r.restartable,
                    restarts: r.restarts,
                    engine: r.engine.clone(),
                    views: r.views.iter().map(|v| view_info(r.views_url.as_deref(), v)).collect(),
                    job: r.job.clone(),
                    file: r.file.clone(),
                    process: r.process.clone(),
                    cluster: cluster.clone(),
                    state: state.to_string(),
                    error: r.error.clone(),
                    started_ms: r.started_ms,
                    report_age_ms: now_ms - r.at_ms,
                    records_in: r.pipelines.iter().map(|p| p.records_in).sum(),
                    records_out: r.pipelines.iter().map(|p| p.records_out).sum(),
                    late: r.pipelines.iter().map(|p| p.late).sum(),
                    pipelines: r
                        .pipelines
                        .iter()
                        .map(|p| SqlPipelineView {
                            line: p.line,
                            source: p.source.clone(),
                            sink: p.sink.clone(),
                            records_in: p.records_in,
                            records_out: p.records_out,
                            skipped: p.skipped,
                            late: p.late,
                            expired: p.expired,
                            state_rows: p.state_rows,
                            watermark_ms: p.watermark_ms,
                            watermark_lag_ms: p.watermark_ms.map(|w| r.at_ms - w),
                        })
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then_with(|| a.job.cmp(&b.job)));
        out
    }
}

/// A `ferry sql` job run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SqlJobView {
    pub job: String,
    /// `ferry` (its queries run in the process), or `flink` (they run on a Flink cluster and the
    /// process serves their views from the changelogs Flink writes).
    pub engine: String,
    /// The materialized views it serves.
    pub views: Vec<SqlViewInfo>,
    /// It takes commands: stop, and restart when `restartable` (it has a state directory).
    pub commands: bool,
    pub restartable: bool,
    /// Times it was restarted by a command.
    pub restarts: u32,
    pub file: String,
    /// `host:pid:start-ms` of the process running it.
    pub process: String,
    /// The cluster its reports come from (its first source table's).
    pub cluster: String,
    /// running, finished, failed, or lost (no report for three intervals of 2 s).
    pub state: String,
    pub error: Option<String>,
    pub started_ms: i64,
    /// How old its latest report is.
    pub report_age_ms: i64,
    pub records_in: u64,
    pub records_out: u64,
    /// Rows dropped as late, over its pipelines.
    pub late: u64,
    pub pipelines: Vec<SqlPipelineView>,
}

/// A materialized view a job serves.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SqlViewInfo {
    pub name: String,
    /// `name TYPE` of each column.
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    pub rows: u64,
    pub watermark_ms: Option<i64>,
    pub endpoints: Vec<SqlEndpointInfo>,
}

/// A REST endpoint of a view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SqlEndpointInfo {
    pub name: String,
    pub parameters: Vec<String>,
    /// Its query (none for the built-in `all` and `lookup`).
    pub query: Option<String>,
    /// Where to call it, each parameter left to fill (`…?min=`); none when the job serves its
    /// views nowhere (no `--listen`).
    pub url: Option<String>,
}

/// Percent-encodes a path segment or query name.
pub(crate) fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn view_info(base: Option<&str>, v: &ViewReport) -> SqlViewInfo {
    SqlViewInfo {
        name: v.name.clone(),
        columns: v.columns.iter().map(|c| format!("{} {}", c.name, c.ty)).collect(),
        primary_key: v.primary_key.clone(),
        rows: v.rows,
        watermark_ms: v.watermark,
        endpoints: v
            .endpoints
            .iter()
            .map(|e| {
                let url = base.map(|b| {
                    let query = e.parameters.iter().map(|p| format!("{}=", encode(p))).collect::<Vec<_>>().join("&");
                    format!("{}/api/v1/query/{}/{}{}{query}", b.trim_end_matches('/'), encode(&v.name), encode(&e.name), if query.is_empty() { "" } else { "?" })
                });
                SqlEndpointInfo { name: e.name.clone(), parameters: e.parameters.clone(), query: e.query.clone(), url }
            })
            .collect(),
    }
}

/// One INSERT (or materialized view) of a job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SqlPipelineView {
    /// Its line in the job file.
    pub line: u64,
    pub source: String,
    pub sink: String,
    pub records_in: u64,
    pub records_out: u64,
    pub skipped: u64,
    pub late: u64,
    /// Rows the state TTL dropped.
    pub expired: u64,
    pub state_rows: u64,
    pub watermark_ms: Option<i64>,
    /// The report's time minus the watermark (event time behind the clock).
    pub watermark_lag_ms: Option<i64>,
}

/// Every `ferry sql` job that reported to a cluster of the configuration in the last hour, newest
/// first, with its pipelines' throughput counters, watermark and late rows.
#[utoipa::path(get, path = "/api/v1/sql/jobs", tag = "sql", responses((status = 200, body = [SqlJobView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn sql_jobs(State(state): State<AppState>) -> Json<Vec<SqlJobView>> {
    Json(state.shared.sql_jobs.lock().unwrap().views(ferry_mirror::report::now_ms()))
}

/// A command accepted for a job run.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandSent {
    pub process: String,
    /// `stop` or `restart`.
    pub command: String,
}

/// Sends `command` to the running job run `process`, on the cluster its reports come from.
async fn send(state: AppState, process: String, command: Command) -> Response {
    let found = {
        let mut jobs = state.shared.sql_jobs.lock().unwrap();
        let now = ferry_mirror::report::now_ms();
        let view = jobs.views(now).into_iter().find(|v| v.process == process);
        view.and_then(|v| jobs.clusters.get(&v.cluster).cloned().map(|c| (c, v)))
    };
    let Some((cluster, run)) = found else {
        return error_body(StatusCode::NOT_FOUND, "not_found", &format!("no ferry sql job run {process} reported in the last hour"));
    };
    let verb = if command == Command::Stop { "stop" } else { "restart" };
    let refused = if run.state != "running" {
        Some(format!("job {} ({process}) is {}: only a running job can {verb}", run.job, run.state))
    } else if !run.commands {
        Some(format!("job {} ({process}) takes no commands (the Flink engine's view server, or a ferry older than commands)", run.job))
    } else if command == Command::Restart && !run.restartable {
        Some(format!("job {} ({process}) runs without --state-dir: a restart would read its tables again from their startup mode", run.job))
    } else {
        None
    };
    if let Some(m) = refused {
        return error_body(StatusCode::CONFLICT, "conflict", &m);
    }
    let sent = JobCommand { version: 1, process: process.clone(), command, at_ms: ferry_mirror::report::now_ms() }.send(&cluster).await;
    match sent {
        Ok(()) => (StatusCode::ACCEPTED, Json(CommandSent { process, command: verb.into() })).into_response(),
        Err(e) => error_body(StatusCode::BAD_GATEWAY, "cluster_unreachable", &format!("cannot send the command: {e}")),
    }
}

/// Stops a running job run as Ctrl-C does (a last checkpoint, offsets committed; it reports
/// finished and its process exits).
#[utoipa::path(post, path = "/api/v1/sql/jobs/{process}/stop", tag = "sql", operation_id = "stop_sql_job",
    params(("process" = String, Path, description = "the run's process, `host:pid:start-ms`")),
    responses((status = 202, body = CommandSent), (status = 401, body = ErrorBody), (status = 404, description = "no such run reported in the last hour", body = ErrorBody), (status = 409, description = "the run is not running, or takes no commands", body = ErrorBody), (status = 502, description = "the cluster it reports to cannot be written", body = ErrorBody)))]
pub(crate) async fn stop(State(state): State<AppState>, Path(process): Path<String>) -> Response {
    send(state, process, Command::Stop).await
}

/// Restarts a running job run from its checkpoint, with its job file as it is now (a file that
/// no longer plans, or changes the views, is refused by the job: its report tells why).
#[utoipa::path(post, path = "/api/v1/sql/jobs/{process}/restart", tag = "sql", operation_id = "restart_sql_job",
    params(("process" = String, Path, description = "the run's process, `host:pid:start-ms`")),
    responses((status = 202, body = CommandSent), (status = 401, body = ErrorBody), (status = 404, description = "no such run reported in the last hour", body = ErrorBody), (status = 409, description = "the run is not running, takes no commands, or has no state directory", body = ErrorBody), (status = 502, description = "the cluster it reports to cannot be written", body = ErrorBody)))]
pub(crate) async fn restart(State(state): State<AppState>, Path(process): Path<String>) -> Response {
    send(state, process, Command::Restart).await
}

/// Follows the jobs topic of `cluster` until `cancel`; an unreachable cluster is retried with
/// backoff and said once.
pub fn follow(cluster: ClusterClient, jobs: Arc<Mutex<SqlJobs>>, cancel: CancellationToken) {
    jobs.lock().unwrap().clusters.insert(cluster.alias.clone(), cluster.clone());
    crate::collect::follow_topic(&cluster, JOBS_TOPIC, "sql job reports", &cancel, |v| jobs.lock().unwrap().apply(&cluster.alias, v), || {}, || {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_kafka::job_report::{PipelineReport, JOB_REPORT_VERSION};

    fn report(job: &str, process: &str, at_ms: i64, state: JobState, records_in: u64) -> Vec<u8> {
        JobReport {
            version: JOB_REPORT_VERSION,
            job: job.into(),
            file: format!("{job}.sql"),
            process: process.into(),
            started_ms: 1_000,
            at_ms,
            state,
            error: None,
            pipelines: vec![PipelineReport { line: 4, source: "orders".into(), sink: "big".into(), records_in, watermark_ms: Some(at_ms - 500), ..PipelineReport::default() }],
            engine: "ferry".into(),
            views_url: None,
            views: Vec::new(),
            commands: true,
            restartable: false,
            restarts: 0,
        }
        .encode()
        .into_bytes()
    }

    #[test]
    fn runs_are_running_finished_or_lost_by_their_latest_report() {
        let mut jobs = SqlJobs::default();
        jobs.apply("a", Some(&report("orders", "h:1:1", 10_000, JobState::Running, 5)));
        jobs.apply("a", Some(&report("orders", "h:1:1", 12_000, JobState::Running, 9)));
        // An older report arriving late does not win.
        jobs.apply("a", Some(&report("orders", "h:1:1", 11_000, JobState::Running, 7)));
        jobs.apply("a", Some(&report("totals", "h:2:1", 12_000, JobState::Finished, 3)));
        jobs.apply("a", Some(b"not a report"));
        jobs.apply("a", None);
        assert_eq!(jobs.ignored, 2);
        let views = jobs.views(13_000);
        let orders = views.iter().find(|v| v.job == "orders").unwrap();
        assert_eq!((orders.state.as_str(), orders.records_in, orders.report_age_ms), ("running", 9, 1_000));
        assert_eq!(orders.pipelines[0].watermark_lag_ms, Some(500));
        assert_eq!(views.iter().find(|v| v.job == "totals").unwrap().state, "finished");
        // No report for more than three intervals: lost; after an hour, forgotten.
        assert_eq!(jobs.views(12_000 + 6_001).iter().find(|v| v.job == "orders").unwrap().state, "lost");
        assert!(jobs.views(12_000 + 3_600_000).is_empty());
    }

    #[test]
    fn a_views_endpoints_get_urls_with_their_parameters_to_fill() {
        use ferry_kafka::job_report::{ColumnReport, EndpointReport};
        let view = ViewReport {
            name: "per user".into(),
            columns: vec![ColumnReport { name: "user".into(), ty: "STRING".into() }],
            primary_key: vec!["user".into()],
            rows: 7,
            watermark: None,
            endpoints: vec![EndpointReport { name: "all".into(), ..EndpointReport::default() }, EndpointReport { name: "busy".into(), parameters: vec!["min".into(), "max n".into()], query: Some("SELECT".into()) }],
        };
        let info = view_info(Some("http://h:8090/"), &view);
        assert_eq!(info.columns, ["user STRING"]);
        assert_eq!(info.endpoints[0].url.as_deref(), Some("http://h:8090/api/v1/query/per%20user/all"));
        assert_eq!(info.endpoints[1].url.as_deref(), Some("http://h:8090/api/v1/query/per%20user/busy?min=&max%20n="));
        assert_eq!(view_info(None, &view).endpoints[0].url, None);
    }
}
