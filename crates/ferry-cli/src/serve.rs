//! `ferry serve --config F [--listen 127.0.0.1:8080] [--api-token-file PATH] [--registry URL [--registry-credentials-file PATH]] [--data-dir DIR]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::mirror::EXIT_CONFIG;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// MirrorMaker 2 / SRM properties file (the clusters and flows to show).
    #[arg(long, short)]
    config: PathBuf,
    /// Address to serve the API, /metrics and the console on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// File holding the bearer token that API and console require (first line). Without it,
    /// anyone who reaches --listen can read replication metrics.
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// Schema registry the console's Schemas page reads (`ferry registry` or any registry with
    /// Confluent's API), e.g. http://127.0.0.1:8081.
    #[arg(long)]
    registry: Option<String>,
    /// File holding the registry's credentials (first line): `user:password` or `Bearer <token>`.
    #[arg(long, requires = "registry")]
    registry_credentials_file: Option<PathBuf>,
    /// Directory for what serve keeps across restarts: alert policies, notifiers, the alert
    /// history and the monitoring history. Made if missing.
    #[arg(long, default_value = "ferry-serve-data")]
    data_dir: PathBuf,
    /// Runs the end-to-end latency canary on this cluster (an alias of the file; repeat for
    /// more): a `ferry-canary` topic with a partition led by each broker, a record to each every
    /// second, p50/p99 per broker.
    #[arg(long = "canary", value_name = "CLUSTER")]
    canary: Vec<String>,
    /// The SQL Gateway of an Apache Flink cluster (http://HOST:8083; repeat for more): its jobs
    /// are listed and stopped with a savepoint at /api/v1/sql/flink/jobs.
    #[arg(long = "flink-gateway", value_name = "URL")]
    flink_gateways: Vec<String>,
}

/// The token in `path`: its first line, trimmed; an empty or unreadable file is an error.
pub(crate) fn read_token(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the API token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("the API token file {} is empty", path.display()));
    }
    Ok(token)
}

pub(crate) async fn run(args: Args) -> ExitCode {
    let mut config = match crate::mirror::load_for_monitoring(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A cluster listed without an address can be neither replicated nor watched.
    config.clusters.retain(|c| {
        let known = !c.bootstrap_servers.is_empty();
        if !known {
            tracing::warn!(cluster = %c.alias, "no {}.bootstrap.servers: not monitored", c.alias);
        }
        known
    });
    let token = match &args.api_token_file {
        Some(path) => match read_token(path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("ferry: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => None,
    };
    let registry = match &args.registry {
        Some(url) => {
            let credentials = match &args.registry_credentials_file {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => Some(text.lines().next().unwrap_or("").trim().to_string()),
                    Err(e) => {
                        eprintln!("ferry: cannot read the registry credentials file {}: {e}", path.display());
                        return ExitCode::from(EXIT_CONFIG);
                    }
                },
                None => None,
            };
            match ferry_serve::Registry::new(url, credentials.as_deref()) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("ferry: --registry: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        None => None,
    };
    let alerts = match ferry_serve::alerts::Alerts::open(args.data_dir.clone()) {
        Ok(a) => std::sync::Arc::new(a),
        Err(e) => {
            eprintln!("ferry: --data-dir: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(unknown) = args.canary.iter().find(|c| !config.clusters.iter().any(|k| &k.alias == *c)) {
        let known: Vec<&str> = config.clusters.iter().map(|c| c.alias.as_str()).collect();
        eprintln!("ferry: --canary {unknown}: no such cluster with bootstrap servers in {} (clusters: {})", args.config.display(), known.join(", "));
        return ExitCode::from(EXIT_CONFIG);
    }
    let history = match ferry_serve::history::Recorder::open(&args.data_dir) {
        Ok(h) => std::sync::Arc::new(h),
        Err(e) => {
            eprintln!("ferry: --data-dir: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cancel = CancellationToken::new();
    crate::cancel_on_signal(cancel.clone());
    info!(config = %args.config.display(), flows = config.flows.len(), registry = ?registry, data_dir = %args.data_dir.display(), "ferry serve starting");
    match ferry_serve::serve(&config, args.listen, ferry_serve::Services { registry, alerts, history, canary: args.canary.clone(), flink_gateways: args.flink_gateways.clone() }, ferry_serve::Token::new(token), cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(listen = %args.listen, error = %e, "ferry serve failed");
            eprintln!("ferry: cannot serve on {}: {e}", args.listen);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_read_and_checked() {
        let dir = std::env::temp_dir();
        let good = dir.join(format!("ferry-token-{}", std::process::id()));
        std::fs::write(&good, "s3cret\n").unwrap();
        assert_eq!(read_token(&good).unwrap(), "s3cret");
        std::fs::write(&good, "\n").unwrap();
        assert!(read_token(&good).unwrap_err().contains("is empty"));
        let missing = dir.join("ferry-no-such-token-file");
        assert!(read_token(&missing).unwrap_err().contains("cannot read the API token file"));
    }
}
