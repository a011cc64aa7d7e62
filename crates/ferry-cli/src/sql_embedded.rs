//! `ferry sql run` on the embedded engine: the job's views served (`--listen`), its reports to
//! `ferry serve`, and `ferry serve`'s commands: stop (as Ctrl-C) and restart (the run ends and
//! starts again from its checkpoint with the job file as it is now; a file that no longer plans,
//! or whose views changed, is refused and the previous plan resumes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use ferry_kafka::job_report::{Command, JobState};
use ferry_sql::plan::Job;
use ferry_sql::view::Views;
use tokio_util::sync::CancellationToken;

use crate::mirror::EXIT_CONFIG;

/// What `run` was given.
pub(crate) struct RunEmbedded {
    pub file: PathBuf,
    pub name: String,
    pub listen: Option<std::net::SocketAddr>,
    pub tokens: Vec<String>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub parallelism: Option<u16>,
}

/// Whether two jobs' views are the same (names, columns, keys, endpoints): a restart keeps the
/// views being served, so it may not change them.
fn same_views(a: &Views, b: &Views) -> bool {
    a.len() == b.len()
        && a.iter().all(|(name, t)| {
            b.get(name).is_some_and(|u| {
                let (p, q) = (t.read().unwrap_or_else(std::sync::PoisonError::into_inner).plan.clone(), u.read().unwrap_or_else(std::sync::PoisonError::into_inner).plan.clone());
                p.schema == q.schema && p.key == q.key && p.endpoints.len() == q.endpoints.len() && p.endpoints.iter().all(|(n, e)| q.endpoints.get(n).is_some_and(|f| f.sql == e.sql))
            })
        })
}

/// The job file planned again for a restart, or why it cannot be.
fn replan(file: &PathBuf, views: &Views) -> Result<Job, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let job = ferry_sql::plan::plan_script(&text).map_err(|e| format!("{}:{}:{}: {}", file.display(), e.pos.line, e.pos.column, e.message))?;
    let planned = ferry_sql::run::views(&job).map_err(|e| format!("{}: {e}", file.display()))?;
    if !same_views(views, &planned) {
        return Err(format!("{}: its materialized views changed (names, columns or endpoints): they are served as they were; restart the process to change them", file.display()));
    }
    Ok(job)
}

pub(crate) async fn run(args: RunEmbedded, job: Job) -> ExitCode {
    let RunEmbedded { file, name, listen, tokens, metrics_addr, state_dir, parallelism } = args;
    let views = match ferry_sql::run::views(&job) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ferry: {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let views_url = match listen {
        Some(addr) => match crate::sql::serve_views(addr, views.clone(), tokens).await {
            Ok(url) => Some(url),
            Err(code) => return code,
        },
        None if !views.is_empty() => {
            tracing::warn!("the job has materialized views; serve them with --listen HOST:PORT");
            None
        }
        None => None,
    };
    if let Some(addr) = metrics_addr {
        if let Err(e) = crate::install_metrics(addr) {
            eprintln!("ferry: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let cancel = CancellationToken::new();
    crate::cancel_on_signal(cancel.clone());
    let serving = views_url.is_some() && !views.is_empty();
    let progress: ferry_sql::run::Progress = Arc::new(Mutex::new(ferry_sql::report::initial(&job)));
    // Without a state directory a restart would read the tables again from their startup mode.
    let restartable = state_dir.is_some();
    let of = ferry_sql::report::ReportOf { name: &name, file: &file.display().to_string(), engine: "ferry", served: views_url.map(|url| (views.clone(), url)), commands: true, restartable };
    let reporter = ferry_sql::report::Reporter::start(&job, of, progress.clone());
    // Commands end the current run; what to do next is read once it has ended.
    let asked: Arc<Mutex<Option<Command>>> = Arc::default();
    let current: Arc<Mutex<CancellationToken>> = Arc::new(Mutex::new(cancel.child_token()));
    if let Some(r) = &reporter {
        let (asked, current) = (asked.clone(), current.clone());
        ferry_sql::commands::watch(r.cluster().clone(), r.process().to_string(), r.started_ms(), cancel.clone(), move |c| {
            *asked.lock().unwrap() = Some(c);
            current.lock().unwrap().cancel();
        });
    }
    let options = ferry_sql::run::Options { views: views.clone(), state_dir, progress: progress.clone(), parallelism: parallelism.map_or(0, usize::from), ..ferry_sql::run::Options::default() };
    let mut job = Arc::new(job);
    let outcome = loop {
        let run = current.lock().unwrap().clone();
        let (j, o) = (job.clone(), options.clone());
        let outcome = tokio::task::spawn_blocking(move || ferry_sql::run::run_with_options(&j, &o, &run)).await;
        let command = asked.lock().unwrap().take();
        match (command, &outcome) {
            (Some(Command::Restart), Ok(Ok(_))) if !cancel.is_cancelled() => {
                *current.lock().unwrap() = cancel.child_token();
                let refused = if restartable { replan(&file, &views).map(|j| job = Arc::new(j)).err() } else { Some("a restart needs --state-dir (without it the tables would be read again from their startup mode)".to_string()) };
                match &refused {
                    None => tracing::info!("restarting from the checkpoint, with the job file as it is now"),
                    Some(why) => tracing::warn!(reason = %why, "restart refused; the job resumes as it was"),
                }
                *progress.lock().unwrap() = ferry_sql::report::initial(&job);
                if let Some(r) = &reporter {
                    r.restarted(refused);
                }
            }
            (Some(Command::Stop), _) => {
                cancel.cancel();
                break outcome;
            }
            _ => break outcome,
        }
    };
    if let Some(reporter) = reporter {
        let (state, error) = match &outcome {
            Ok(Ok(_)) => (JobState::Finished, None),
            Ok(Err(e)) => (JobState::Failed, Some(e.to_string())),
            Err(e) => (JobState::Failed, Some(e.to_string())),
        };
        tokio::task::spawn_blocking(move || reporter.finish(state, error)).await.ok();
    }
    if serving && matches!(outcome, Ok(Ok(_))) && !cancel.is_cancelled() {
        tracing::info!("the job's bounded input is read; its views are served until SIGTERM or Ctrl-C");
        cancel.cancelled().await;
    }
    match outcome {
        Ok(Ok(stats)) => {
            let (read, written, skipped) = stats.iter().fold((0, 0, 0), |a, s| (a.0 + s.records_in, a.1 + s.records_out, a.2 + s.skipped));
            tracing::info!(read, written, skipped, "job finished");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "job failed");
            eprintln!("ferry: {}: {e}", file.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ferry: the job stopped unexpectedly: {e}");
            ExitCode::FAILURE
        }
    }
}
