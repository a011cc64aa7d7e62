//! `ferry mirror --config mm2.properties [--clusters b]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ferry_mirror::{Mirror, MirrorConfig};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// MirrorMaker 2 / SRM properties file.
    #[arg(long, short)]
    config: PathBuf,
    /// Run only the flows that target these cluster aliases (comma-separated), as MM2's --clusters.
    #[arg(long, value_delimiter = ',')]
    clusters: Vec<String>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Validate the configuration, print the flows and where each partition would resume
    /// (Ferry's stored position, after MirrorMaker 2's last copied record, or the log start),
    /// and exit. Reads the clusters, writes nothing; an unreachable cluster is said, and the
    /// check of the file still passes.
    #[arg(long)]
    check: bool,
}

/// Exit code for an invalid configuration (distinct from runtime failures).
pub(crate) const EXIT_CONFIG: u8 = 2;

/// Reads and validates a configuration file; prints every problem.
pub(crate) fn load(path: &PathBuf, clusters: &[String]) -> Result<MirrorConfig, ExitCode> {
    load_with(path, clusters, MirrorConfig::parse)
}

/// The file as `ferry serve` reads it: clusters without any enabled flow are fine (monitoring only).
pub(crate) fn load_for_monitoring(path: &PathBuf) -> Result<MirrorConfig, ExitCode> {
    load_with(path, &[], MirrorConfig::parse_for_monitoring)
}

fn load_with(path: &PathBuf, clusters: &[String], parse: fn(&str, &str) -> Result<MirrorConfig, ferry_mirror::config::ConfigError>) -> Result<MirrorConfig, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ferry: cannot read configuration {}: {e}", path.display());
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    let mut config = parse(&path.display().to_string(), &text).map_err(|e| {
        eprint!("ferry: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    if !clusters.is_empty() {
        config.select_targets(clusters).map_err(|e| {
            eprint!("ferry: {e}");
            ExitCode::from(EXIT_CONFIG)
        })?;
    }
    for w in &config.warnings {
        warn!("{w}");
    }
    Ok(config)
}

pub(crate) async fn run(args: Args) -> ExitCode {
    let config = match load(&args.config, &args.clusters) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.check {
        for f in &config.flows {
            println!("{}: topics {:?} exclude {:?}, policy {:?} (separator {:?}), tasks {}",
                f.name(), f.topics, f.topics_exclude, f.policy.kind, f.policy.separator, f.tasks_max);
        }
        for f in config.flows.clone() {
            let config = config.clone();
            let points = tokio::task::spawn_blocking(move || ferry_mirror::status::resume_points(&config, &f).map(|p| (f.name(), p))).await;
            match points {
                Ok(Ok((flow, points))) => {
                    println!("{flow}: where each partition resumes");
                    println!("  {:<40} {:>9} {:>12}  from", "topic", "partition", "position");
                    for p in points {
                        println!("  {:<40} {:>9} {:>12}  {}", p.topic, p.partition, p.position, p.from);
                    }
                }
                Ok(Err(e)) => println!("resume points unknown: {e}"),
                Err(e) => println!("resume points unknown: {e}"),
            }
        }
        return ExitCode::SUCCESS;
    }
    if let Some(addr) = args.metrics_addr {
        if let Err(e) = crate::install_metrics(addr) {
            eprintln!("ferry: {e}");
            return ExitCode::FAILURE;
        }
        info!(%addr, "serving Prometheus metrics");
    }
    let cancel = CancellationToken::new();
    crate::cancel_on_signal(cancel.clone());
    let flows: Vec<String> = config.flows.iter().map(|f| f.name()).collect();
    info!(config = %args.config.display(), flows = ?flows, "ferry mirror starting");
    match Mirror::new(config).run(cancel).await {
        Ok(()) => {
            info!("ferry mirror stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "ferry mirror failed");
            ExitCode::FAILURE
        }
    }
}
