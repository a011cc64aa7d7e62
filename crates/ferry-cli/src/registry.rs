//! `ferry registry --config schema-registry.properties`

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::mirror::EXIT_CONFIG;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Confluent Schema Registry properties file (listeners, kafkastore.*, schema.compatibility.level).
    #[arg(long, short)]
    config: PathBuf,
}

pub(crate) async fn run(args: Args) -> ExitCode {
    let file = args.config.display().to_string();
    let text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ferry: cannot read {file}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match ferry_registry::config::RegistryConfig::parse(&file, &text) {
        Ok((config, unknown)) => {
            for u in unknown {
                warn!(file = %file, line = u.line, key = %u.key, "unknown key ignored");
            }
            config
        }
        Err(e) => {
            eprintln!("ferry: invalid registry configuration:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The users and tokens files are configuration too: a bad one stops start-up with exit 2.
    let base = args.config.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let auth = match config.auth.enabled().then(|| ferry_registry::auth::Auth::load(&config.auth, &base)).transpose() {
        Ok(auth) => auth,
        Err(e) => {
            eprintln!("ferry: invalid registry configuration:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cancel = CancellationToken::new();
    crate::cancel_on_signal(cancel.clone());
    info!(config = %file, "ferry registry starting");
    let handle = match metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(ferry_registry::telemetry::LATENCY.to_string()), &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        .and_then(|b| b.install_recorder())
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ferry: cannot record metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let render: ferry_registry::telemetry::Render = std::sync::Arc::new(move || handle.render());
    match ferry_registry::run(config, auth, render, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "ferry registry stopped");
            eprintln!("ferry: registry failed: {e}");
            ExitCode::FAILURE
        }
    }
}
