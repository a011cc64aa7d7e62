//! `ferry`: streams management for Apache Kafka. Subcommands: `mirror` (replication engine,
//! the MirrorMaker 2 / SRM Driver equivalent), `ctl` (srm-control: offsets, failover,
//! failback), `serve` (REST API, metrics, console), `registry` (schema registry) and `demo`
//! (two local brokers and a live mirror).

mod ctl;
mod demo;
mod lists;
mod mirror;
mod registry;
mod serve;
mod sql;
mod sql_embedded;
mod sql_flink;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferry", version, about = "Cross-cluster replication for Apache Kafka, configured like MirrorMaker 2")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replicate topics between clusters, configured by an MM2/SRM properties file.
    Mirror(mirror::Args),
    /// Operate a deployment: live topic/group lists, status, translated offsets, failover and failback.
    #[command(subcommand)]
    Ctl(ctl::Command),
    /// Serve the replication REST API (/api/v1, /openapi.json), Prometheus /metrics and the web console.
    Serve(serve::Args),
    /// Start two local brokers `a` and `b`, write sample data to `a`, and mirror `a->b` live.
    Demo(demo::Args),
    /// Serve a schema registry with Confluent's REST API, its state kept in a Kafka topic.
    Registry(registry::Args),
    /// Streaming SQL over Kafka topics in Flink's dialect: check, explain or run a job file.
    #[command(subcommand)]
    Sql(sql::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Mirror(args) => mirror::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Ctl(command) => ctl::run(command).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Registry(args) => registry::run(args).await,
            Command::Sql(command) => sql::run(command).await,
        }
    })
}

/// Logs go to stderr, key/value; `RUST_LOG` filters (default `info`).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain `key=value` fields.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    // librdkafka repeats a failed connect's lines every reconnect: once per kind per 30 s here.
    let throttle = ferry_kafka::LibrdkafkaThrottle::new(std::time::Duration::from_secs(30));
    tracing_subscriber::registry().with(filter).with(throttle).with(fmt).init();
}

/// Cancels `token` on SIGINT or SIGTERM; a second signal exits at once.
/// How long a graceful shutdown may take before the process exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n > 0 {
                eprintln!("ferry: second signal, exiting now");
                std::process::exit(130);
            }
            tracing::info!("shutting down: draining in-flight records and storing positions");
            token.cancel();
            // A cluster that does not answer must not hold the process: librdkafka's calls wait
            // their own timeouts one after another. Nothing is lost by stopping here: what was
            // not stored is re-sent on the next start (duplicates, never a gap).
            tokio::spawn(async {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
                tracing::error!(grace = ?SHUTDOWN_GRACE,
                    "shutdown did not finish (a cluster does not answer): exiting now; records replicated since the last stored position are re-sent at the next start");
                std::process::exit(1);
            });
        }
    });
}

/// Serves Prometheus text on `addr` at any path (`/metrics` by convention).
pub(crate) fn install_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full(ferry_mirror::telemetry::LATENCY.to_string()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
        )?
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    Ok(())
}
