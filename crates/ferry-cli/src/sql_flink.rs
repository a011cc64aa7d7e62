//! `ferry sql run --engine flink`, `ferry sql stop` and `ferry sql jobs`: a job file submitted to
//! an Apache Flink cluster through its SQL Gateway, followed, stopped with a savepoint and
//! resumed from it. The gateway client is `ferry_flink`; the gateway's calls block, so
//! they run on blocking threads.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ferry_flink::{Gateway, GatewayError, Submitted};
use ferry_kafka::job_report::{FlinkSubmission, FLINK_SUBMISSION_VERSION};

use crate::mirror::EXIT_CONFIG;

/// How long a statement may take to be accepted (an INSERT: until Flink has its job).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ferry: {message}");
    ExitCode::FAILURE
}

/// What `run --engine flink` was given.
pub(crate) struct RunOnFlink {
    pub file: std::path::PathBuf,
    pub gateway: String,
    pub from_savepoint: Option<String>,
    pub parallelism: Option<u16>,
    pub detach: bool,
    pub name: String,
    /// Where the job's materialized views are served (their changelogs come from Flink).
    pub listen: Option<std::net::SocketAddr>,
    pub tokens: Vec<String>,
}

/// Submits the job file's statements in one session; prints each Flink job id; then, unless
/// detached, follows the jobs until they end (exit 0 when all finished) or Ctrl-C. A job with
/// materialized views has their queries run on Flink into changelog topics, which this process
/// reads into the views and serves (with --listen) until Ctrl-C.
pub(crate) async fn run(args: RunOnFlink, job: &ferry_sql::plan::Job) -> ExitCode {
    let file = args.file.display().to_string();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {file}: {e}")),
    };
    let plan = match ferry_sql::on_flink::plan(&text, job, &args.name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{file}:{}:{}: {}", e.pos.line, e.pos.column, e.message);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The views' side first: a view that cannot be served is refused before Flink runs anything.
    let mut serving = None;
    if let Some(served) = &plan.views_job {
        let Some(addr) = args.listen else {
            eprintln!("ferry: {file}: the job has materialized views: give --listen HOST:PORT (Ferry serves them from the changelog topics Flink writes)");
            return ExitCode::from(EXIT_CONFIG);
        };
        let views_job = match ferry_sql::parse::parse_script(served).and_then(|s| ferry_sql::plan::plan(&s)) {
            Ok(j) => j,
            Err(e) => return fail(format!("{file}: the views' changelog job: {e}")),
        };
        for (topic, properties) in &plan.topics {
            if let Err(e) = ferry_sql::on_flink::ensure_topic(topic, properties).await {
                return fail(format!("{file}: {e}"));
            }
        }
        let views = match ferry_sql::run::views(&views_job) {
            Ok(v) => v,
            Err(e) => return fail(format!("{file}: {e}")),
        };
        let url = match crate::sql::serve_views(addr, views.clone(), args.tokens.clone()).await {
            Ok(url) => url,
            Err(code) => return code,
        };
        serving = Some((views_job, views, url));
    }
    let detach = args.detach;
    let name = args.name.clone();
    let from_savepoint = args.from_savepoint.clone();
    let statements = plan.statements;
    let submitted = tokio::task::spawn_blocking(move || submit(&args, &statements)).await;
    let (gateway, ids) = match submitted {
        Ok(Ok((gateway, properties, submitted))) => {
            record(job, (&name, &file, &gateway, from_savepoint.as_deref()), &properties, &submitted).await;
            (gateway, submitted.into_iter().map(|s| s.job_id).collect::<Vec<_>>())
        }
        Ok(Err(message)) => {
            eprintln!("ferry: {file}:{message}");
            return ExitCode::FAILURE;
        }
        Err(e) => return fail(e),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    crate::cancel_on_signal(cancel.clone());
    if let Some((views_job, views, url)) = serving {
        // The views follow their changelogs until Ctrl-C, whatever the Flink jobs do; this
        // process reports them to ferry serve as the embedded engine's runs do.
        let progress: ferry_sql::run::Progress = std::sync::Arc::new(std::sync::Mutex::new(ferry_sql::report::initial(&views_job)));
        let of = ferry_sql::report::ReportOf { name: &name, file: &file, engine: "flink", served: Some((views.clone(), url)), commands: false, restartable: false };
        let reporter = ferry_sql::report::Reporter::start(&views_job, of, progress.clone());
        let options = ferry_sql::run::Options { views, progress, ..ferry_sql::run::Options::default() };
        let stop = cancel.clone();
        let served = tokio::task::spawn_blocking(move || {
            let outcome = ferry_sql::run::run_with_options(&views_job, &options, &stop);
            if let Some(reporter) = reporter {
                let error = outcome.as_ref().err().map(ToString::to_string);
                reporter.finish(if error.is_some() { ferry_kafka::job_report::JobState::Failed } else { ferry_kafka::job_report::JobState::Finished }, error);
            }
            outcome
        });
        if !detach {
            let (url, watched, stop) = (gateway.clone(), ids.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || follow(&url, &watched, &stop));
        }
        return match served.await {
            Ok(Ok(_)) => ExitCode::SUCCESS,
            Ok(Err(e)) => fail(format!("{file}: serving the views: {e}")),
            Err(e) => fail(e),
        };
    }
    if detach || ids.is_empty() {
        return ExitCode::SUCCESS;
    }
    let stop = cancel.clone();
    match tokio::task::spawn_blocking(move || follow(&gateway, &ids, &stop)).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e)) => fail(e),
        Err(e) => fail(e),
    }
}

/// The statements into the gateway: (the gateway's URL, the session's configuration without
/// the savepoint, each job started), or `LINE: message` for the statement Flink refused.
fn submit(args: &RunOnFlink, statements: &[ferry_sql::statements::Text]) -> Result<(String, Vec<(String, String)>, Vec<Submitted>), String> {
    let gateway = Gateway::connect(&args.gateway).map_err(|e| format!(" {e}"))?;
    let mut properties = vec![("pipeline.name".to_string(), args.name.clone())];
    if let Some(p) = args.parallelism {
        properties.push(("parallelism.default".into(), p.to_string()));
    }
    let mut session = properties.clone();
    if let Some(path) = &args.from_savepoint {
        session.push(("execution.savepoint.path".into(), path.clone()));
    }
    tracing::info!(gateway = %gateway.url(), api = gateway.version(), savepoint = ?args.from_savepoint, "submitting to Flink");
    let texts: Vec<(u64, String)> = statements.iter().map(|s| (s.line, s.text.clone())).collect();
    let submitted = gateway.submit(&format!("ferry-{}", args.name), &session, &texts, STATEMENT_TIMEOUT).map_err(|e| {
        let what = if matches!(e.error, GatewayError::Statement(_)) { "Flink refused the statement: " } else { "" };
        format!("{}: {what}{}", e.line, e.error)
    })?;
    for s in &submitted {
        println!("flink job {} submitted (line {})", s.job_id, s.line);
    }
    Ok((gateway.url().to_string(), properties, submitted))
}

/// Records each job's statements on the cluster of the job file's first table, where ferry
/// serve finds them to restart the job from its savepoint; a failure is said, not fatal.
async fn record(job: &ferry_sql::plan::Job, args: (&str, &str, &str, Option<&str>), properties: &[(String, String)], submitted: &[Submitted]) {
    let (name, file, gateway, from_savepoint) = args;
    let Some(cluster) = job.pipelines.first().and_then(|p| ferry_sql::catalog::cluster_client(format!("job {name}"), &p.source.table.kafka.properties)) else { return };
    for s in submitted {
        let submission = FlinkSubmission {
            version: FLINK_SUBMISSION_VERSION,
            flink_job: s.job_id.clone(),
            job: name.to_string(),
            file: file.to_string(),
            gateway: gateway.to_string(),
            properties: properties.to_vec(),
            statements: s.statements.clone(),
            from_savepoint: from_savepoint.map(str::to_string),
            restarted_from: None,
            submitted_ms: ferry_sql::watermark::wall_clock_ms(),
        };
        if let Err(e) = submission.record(&cluster).await {
            tracing::warn!(job = %s.job_id, error = %e, "cannot record the job's statements: ferry serve cannot restart it");
        }
    }
}

/// Follows `ids` until each has ended or `cancel`: whether all finished.
fn follow(url: &str, ids: &[String], cancel: &tokio_util::sync::CancellationToken) -> Result<bool, GatewayError> {
    let gateway = Gateway::connect(url)?;
    let session = gateway.open_session("ferry-follow", &[])?;
    let mut last: Vec<Option<String>> = vec![None; ids.len()];
    let outcome = loop {
        if cancel.is_cancelled() {
            println!("stopped following; the jobs run on in Flink (ferry sql stop JOB_ID --gateway {url})");
            break Ok(true);
        }
        let jobs = match session.execute("SHOW JOBS", STATEMENT_TIMEOUT) {
            Ok(r) => ferry_flink::gateway::jobs_of(&r),
            Err(e) => break Err(e),
        };
        for (k, id) in ids.iter().enumerate() {
            let status = jobs.iter().find(|j| &j.id == id).map_or_else(|| "UNKNOWN".to_string(), |j| j.status.clone());
            if last[k].as_deref() != Some(status.as_str()) {
                println!("flink job {id}: {status}");
                last[k] = Some(status);
            }
        }
        if last.iter().all(|s| s.as_deref().is_some_and(ferry_flink::gateway::terminal)) {
            break Ok(last.iter().all(|s| s.as_deref() == Some("FINISHED")));
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    session.close();
    outcome
}

/// `ferry sql stop JOB --gateway URL`: stops the job with a savepoint and prints its path.
pub(crate) async fn stop(gateway: String, job_id: String, drain: bool) -> ExitCode {
    let outcome = tokio::task::spawn_blocking(move || Gateway::connect(&gateway)?.stop_with_savepoint(&job_id, drain)).await;
    match outcome {
        Ok(Ok(path)) => {
            println!("{path}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => fail(e),
        Err(e) => fail(e),
    }
}

/// `ferry sql jobs`: the jobs of each Flink gateway and of `ferry serve` (embedded runs).
pub(crate) async fn jobs(gateways: Vec<String>, serve: Option<String>) -> ExitCode {
    let listed = tokio::task::spawn_blocking(move || -> Result<Vec<[String; 4]>, String> {
        let mut rows = Vec::new();
        for url in &gateways {
            let jobs = Gateway::connect(url).and_then(|g| g.jobs()).map_err(|e| e.to_string())?;
            rows.extend(jobs.into_iter().map(|j| ["flink".to_string(), j.id, j.name, j.status]));
        }
        if let Some(serve) = &serve {
            rows.extend(embedded_jobs(serve)?);
        }
        Ok(rows)
    })
    .await;
    match listed {
        Ok(Ok(rows)) => {
            println!("{:<8} {:<34} {:<32} STATE", "ENGINE", "ID", "NAME");
            for [engine, id, name, state] in rows {
                println!("{engine:<8} {id:<34} {name:<32} {state}");
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => fail(e),
        Err(e) => fail(e),
    }
}

/// The embedded runs `ferry serve` at `url` lists (`GET /api/v1/sql/jobs`).
fn embedded_jobs(url: &str) -> Result<Vec<[String; 4]>, String> {
    let url = format!("{}/api/v1/sql/jobs", url.trim_end_matches('/'));
    let mut request = reqwest::blocking::Client::new().get(&url);
    if let Ok(token) = std::env::var("FERRY_API_TOKEN") {
        request = request.bearer_auth(token);
    }
    let response = request.send().map_err(|e| format!("cannot reach ferry serve at {url}: {}", e.without_url()))?;
    if !response.status().is_success() {
        return Err(format!("ferry serve at {url} answered {}", response.status()));
    }
    let runs: Vec<serde_json::Value> = response.text().map_err(|e| e.to_string()).and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())).map_err(|e| format!("ferry serve at {url}: {e}"))?;
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    Ok(runs.iter().map(|r| ["ferry".to_string(), text(&r["process"]), text(&r["job"]), text(&r["state"]).to_uppercase()]).collect())
}

/// A job name for Flink from the file's name.
pub(crate) fn default_name(file: &Path) -> String {
    file.file_stem().map_or_else(|| file.display().to_string(), |s| s.to_string_lossy().into_owned())
}
