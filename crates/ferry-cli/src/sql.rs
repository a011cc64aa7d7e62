//! `ferry sql check|explain|sample|run|stop|jobs`: streaming SQL jobs in Flink's dialect, on the
//! embedded engine or on Apache Flink (`sql_flink`).

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::mirror::EXIT_CONFIG;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Parse and plan a job file; touches no cluster. Exit 2 with FILE:LINE:COLUMN on an error.
    Check { file: PathBuf },
    /// Print a job's tables, and per INSERT its logical plan and Ferry's operators.
    Explain { file: PathBuf },
    /// Print a query's rows as they arrive (`+I {"column": value, …}`, with Flink's change
    /// kinds), over the tables and views of a job file, until --limit rows or Ctrl-C.
    Sample {
        /// The SELECT query.
        query: String,
        /// The job file whose tables and views the query reads (its INSERTs are not run).
        #[arg(long)]
        config: PathBuf,
        /// Stop after this many rows (0: until the input ends or Ctrl-C).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Run a job until its bounded sources are read (scan.bounded.mode) or SIGTERM / Ctrl-C.
    Run {
        file: PathBuf,
        /// Serve Prometheus metrics (records in, out, skipped, late) on this address.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Serve the job's materialized views over REST on this address
        /// (GET /api/v1/query/{view}/{endpoint}, GET /api/v1/views).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// A file whose first line is the API key that view requests must give (key=… or a
        /// bearer token).
        #[arg(long)]
        api_token_file: Option<PathBuf>,
        /// Keep checkpoints here (source offsets, watermarks, operator state and views, every
        /// execution.checkpointing.interval, 10 s by default); a restart resumes from the last.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The job's name in its reports to `ferry serve` (default: the file's name without
        /// .sql). Reports go to ferry-sql-jobs.internal on the first source table's cluster.
        #[arg(long)]
        name: Option<String>,
        /// Subtasks per pipeline (consumers reading the source partitions, and threads holding
        /// the keyed state) when the job does not SET 'parallelism.default' (default: the
        /// machine's cores).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        parallelism: Option<u16>,
        /// Where the job runs: `ferry` (this process) or `flink` (an Apache Flink cluster,
        /// through its SQL Gateway at --gateway).
        #[arg(long, value_enum, default_value_t = Engine::Ferry)]
        engine: Engine,
        /// The Flink SQL Gateway's REST address (http://HOST:8083), for --engine flink.
        #[arg(long)]
        gateway: Option<String>,
        /// --engine flink: start the job's state and source offsets from this savepoint (the
        /// path `ferry sql stop` printed).
        #[arg(long)]
        from_savepoint: Option<String>,
        /// --engine flink: return once Flink has the jobs, rather than follow them.
        #[arg(long)]
        detach: bool,
    },
    /// Stop a job running on Flink with a savepoint and print the savepoint's path (resume with
    /// `run --engine flink --from-savepoint PATH`).
    Stop {
        /// The Flink job id (`run` and `jobs` print it).
        job_id: String,
        #[arg(long)]
        gateway: String,
        /// Let event time reach its end first (windows fire), as Flink's WITH DRAIN.
        #[arg(long)]
        drain: bool,
    },
    /// List the jobs of Flink clusters (--gateway, repeatable) and the embedded runs ferry serve
    /// knows (--serve http://HOST:PORT; its token from FERRY_API_TOKEN).
    Jobs {
        #[arg(long)]
        gateway: Vec<String>,
        #[arg(long)]
        serve: Option<String>,
    },
}

/// The engine a job runs on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Engine {
    Ferry,
    Flink,
}

/// Serves `views` over REST on `addr` (SQL Stream Builder's URLs) from a task of its own; the
/// URL it is reached at (`http://HOST:PORT`; the host's name when `addr` is a wildcard).
pub(crate) async fn serve_views(addr: std::net::SocketAddr, views: ferry_sql::view::Views, tokens: Vec<String>) -> Result<String, ExitCode> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ferry: cannot listen on {addr}: {e}");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    let listener_addr = listener.local_addr().ok();
    let local = listener_addr.map_or_else(|| addr.to_string(), |a| a.to_string());
    tracing::info!(addr = %local, views = views.len(), auth = !tokens.is_empty(), "materialized views served at http://{local}/api/v1/query/{{view}}/{{endpoint}}");
    tokio::spawn(async move {
        if let Err(e) = ferry_sql::api::serve(listener, views, tokens).await {
            tracing::error!(error = %e, "the view API stopped");
        }
    });
    let bound = listener_addr.unwrap_or(addr);
    let host = if bound.ip().is_unspecified() { std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into()) } else { bound.ip().to_string() };
    let host = if bound.is_ipv6() && !bound.ip().is_unspecified() { format!("[{host}]") } else { host };
    Ok(format!("http://{host}:{}", bound.port()))
}

fn load(file: &PathBuf) -> Result<ferry_sql::plan::Job, ExitCode> {
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ferry: cannot read {name}: {e}");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    ferry_sql::plan::plan_script(&text).map_err(|e| {
        eprintln!("{name}:{}:{}: {}", e.pos.line, e.pos.column, e.message);
        ExitCode::from(EXIT_CONFIG)
    })
}

pub(crate) async fn run(command: Command) -> ExitCode {
    match command {
        Command::Sample { query, config, limit } => {
            let name = config.display().to_string();
            let text = match std::fs::read_to_string(&config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("ferry: cannot read {name}: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let job = match ferry_sql::plan::plan_sample_over(&text, &query) {
                Ok(job) => job,
                Err((in_query, e)) => {
                    eprintln!("{}:{}:{}: {}", if in_query { "query" } else { name.as_str() }, e.pos.line, e.pos.column, e.message);
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let cancel = CancellationToken::new();
            crate::cancel_on_signal(cancel.clone());
            let limit = (limit > 0).then_some(limit);
            match tokio::task::spawn_blocking(move || ferry_sql::run::sample(&job, limit, &cancel)).await {
                Ok(Ok(_)) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("ferry: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("ferry: the query stopped unexpectedly: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { file } => match load(&file) {
            Ok(job) => {
                println!("{}: ok: {} tables, {} pipelines", file.display(), job.tables.len(), job.pipelines.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Explain { file } => match load(&file) {
            Ok(job) => {
                print!("{}", ferry_sql::plan::explain(&job));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Stop { job_id, gateway, drain } => crate::sql_flink::stop(gateway, job_id, drain).await,
        Command::Jobs { gateway, serve } => {
            if gateway.is_empty() && serve.is_none() {
                eprintln!("ferry: sql jobs: give --gateway URL (a Flink SQL Gateway) or --serve URL (ferry serve), or both");
                return ExitCode::from(EXIT_CONFIG);
            }
            crate::sql_flink::jobs(gateway, serve).await
        }
        Command::Run { file, metrics_addr, listen, api_token_file, state_dir, name, parallelism, engine, gateway, from_savepoint, detach } => {
            let job = match load(&file) {
                Ok(job) => job,
                Err(code) => return code,
            };
            let tokens = match &api_token_file {
                Some(path) => match crate::serve::read_token(path) {
                    Ok(t) => vec![t],
                    Err(e) => {
                        eprintln!("ferry: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                },
                None => Vec::new(),
            };
            if engine == Engine::Flink {
                let unused = [("--state-dir", state_dir.is_some()), ("--metrics-addr", metrics_addr.is_some())];
                if let Some((flag, _)) = unused.iter().find(|(_, given)| *given) {
                    eprintln!("ferry: {flag} is for the embedded engine; on Flink the job's state is in Flink (ferry sql stop writes a savepoint, --from-savepoint resumes it)");
                    return ExitCode::from(EXIT_CONFIG);
                }
                let Some(gateway) = gateway else {
                    eprintln!("ferry: --engine flink needs --gateway http://HOST:PORT (a Flink SQL Gateway)");
                    return ExitCode::from(EXIT_CONFIG);
                };
                let name = name.unwrap_or_else(|| crate::sql_flink::default_name(&file));
                return crate::sql_flink::run(crate::sql_flink::RunOnFlink { file, gateway, from_savepoint, parallelism, detach, name, listen, tokens }, &job).await;
            }
            if let Some(flag) = [("--gateway", gateway.is_some()), ("--from-savepoint", from_savepoint.is_some()), ("--detach", detach)].iter().find(|(_, given)| *given).map(|(f, _)| f) {
                eprintln!("ferry: {flag} is for --engine flink");
                return ExitCode::from(EXIT_CONFIG);
            }
            let name = name.unwrap_or_else(|| crate::sql_flink::default_name(&file));
            crate::sql_embedded::run(crate::sql_embedded::RunEmbedded { file, name, listen, tokens, metrics_addr, state_dir, parallelism }, job).await
        }
    }
}
