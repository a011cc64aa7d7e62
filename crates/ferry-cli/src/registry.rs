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
    let cancel = CancellationToken::new();
    crate::cancel_on_signal(cancel.clone());
    info!(config = %file, "ferry registry starting");
    match ferry_registry::run(config, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "ferry registry stopped");
            eprintln!("ferry: registry failed: {e}");
            ExitCode::FAILURE
        }
    }
}
