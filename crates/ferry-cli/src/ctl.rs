//! `ferry ctl`: the srm-control equivalent.
//!
//! - `offsets export --source a --target b --group G [--format csv|json]`: the group's latest
//!   checkpoints of flow a->b, translated for b. CSV is `topic,partition,offset`, the file
//!   `kafka-consumer-groups --reset-offsets --from-file` reads.
//! - `failover --group G --from a --to b`: applies those offsets to G on b.
//! - `failback --group G --from b --to a`: the same along the reverse flow b->a, whose
//!   checkpoints translate positions on `a.<topic>` back to `<topic>` on a.
//!
//! - `topics|groups --source a --target b [--add R] [--remove R] [--add-exclude R]
//!   [--remove-exclude R] [--list] [--json]`: live allow/deny lists (see `lists.rs`).
//! - `status [--json]`: what every flow replicates, lag, heartbeat and checkpoint ages.
//!
//! Exit codes: 0 done, 1 a cluster error or a refusal (e.g. the group is active), 2 bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use ferry_mirror::failover::{self, Applied, FailoverError, TranslatedOffset};
use ferry_mirror::control::ListName;
use ferry_mirror::{FlowConfig, MirrorConfig};

use crate::mirror::EXIT_CONFIG;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Translated consumer-group offsets.
    #[command(subcommand)]
    Offsets(Offsets),
    /// Move a consumer group from cluster --from to cluster --to at the exact record.
    Failover(Move),
    /// Move a consumer group back to its origin cluster (along the reverse flow) at the exact record.
    Failback(Move),
    /// Change which topics a flow replicates, live (`--add`, `--remove`, `--add-exclude`,
    /// `--remove-exclude`), or `--list` them with the origin of each entry.
    Topics(crate::lists::ListArgs),
    /// Change which consumer groups a flow checkpoints, live, or `--list` them.
    Groups(crate::lists::ListArgs),
    /// Flows, their lists, per-partition lag, heartbeat and checkpoint ages.
    Status(crate::status::StatusArgs),
}

#[derive(clap::Subcommand)]
pub(crate) enum Offsets {
    /// Print a group's translated offsets for the target cluster.
    Export(Export),
}

/// The flow a command acts on: `--config F --source a --target b`.
#[derive(clap::Args)]
pub(crate) struct FlowArgs {
    /// MirrorMaker 2 / SRM properties file.
    #[arg(long, short)]
    config: PathBuf,
    /// Source cluster alias of the flow (`a` in `a->b`).
    #[arg(long)]
    source: String,
    /// Target cluster alias of the flow (`b` in `a->b`).
    #[arg(long)]
    target: String,
}

impl FlowArgs {
    /// The configuration and the enabled flow `source->target`; exit 2 with the reason otherwise.
    pub(crate) fn load(&self, why: &str) -> Result<(MirrorConfig, FlowConfig), ExitCode> {
        let config = crate::mirror::load(&self.config, &[])?;
        let flow = flow(&config, &self.source, &self.target, why)?.clone();
        Ok((config, flow))
    }
}

#[derive(clap::Args)]
pub(crate) struct Export {
    #[command(flatten)]
    flow: FlowArgs,
    #[arg(long)]
    group: String,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
}

#[derive(clap::Args)]
pub(crate) struct Move {
    /// MirrorMaker 2 / SRM properties file.
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long)]
    group: String,
    /// Cluster alias the group leaves.
    #[arg(long)]
    from: String,
    /// Cluster alias the group moves to.
    #[arg(long)]
    to: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Csv,
    Json,
}

#[derive(serde::Serialize)]
struct Row<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    source_topic: &'a str,
    source_offset: i64,
    checkpoint_age_ms: i64,
}

pub(crate) async fn run(command: Command) -> ExitCode {
    match tokio::task::spawn_blocking(move || run_blocking(command)).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry ctl: internal error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_blocking(command: Command) -> ExitCode {
    match command {
        Command::Offsets(Offsets::Export(args)) => export(args),
        Command::Failover(args) => move_group(args, "failover"),
        Command::Failback(args) => move_group(args, "failback"),
        Command::Topics(args) => crate::lists::run(args, ListName::Topics),
        Command::Groups(args) => crate::lists::run(args, ListName::Groups),
        Command::Status(args) => crate::status::run(args),
    }
}

/// Prints a cluster error (and what to do about a refused permission); exit 1.
pub(crate) fn kafka_failure(e: &ferry_kafka::Error) -> ExitCode {
    eprintln!("ferry ctl: {e}");
    if let Some(hint) = e.hint() {
        eprintln!("ferry ctl: hint: {hint}");
    }
    ExitCode::FAILURE
}


/// The enabled flow `from->to` of the configuration; exit 2 with the reason otherwise.
fn flow<'c>(config: &'c MirrorConfig, from: &str, to: &str, why: &str) -> Result<&'c FlowConfig, ExitCode> {
    for alias in [from, to] {
        if !config.clusters.iter().any(|c| c.alias == alias) {
            let known: Vec<&str> = config.clusters.iter().map(|c| c.alias.as_str()).collect();
            eprintln!("ferry ctl: unknown cluster alias '{alias}' in {} (clusters = {})", config.file, known.join(", "));
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    }
    config.flows.iter().find(|f| f.source == from && f.target == to).ok_or_else(|| {
        eprintln!("ferry ctl: {why} needs flow {from}->{to}, which {} does not enable (set `{from}->{to}.enabled = true` and run `ferry mirror` with it)", config.file);
        ExitCode::from(EXIT_CONFIG)
    })
}

fn translated(config: &MirrorConfig, flow: &FlowConfig, group: &str) -> Result<Vec<TranslatedOffset>, ExitCode> {
    failover::translated_offsets(flow, config.cluster(&flow.target), group).map_err(|e| {
        eprintln!("ferry ctl: {e}");
        ExitCode::FAILURE
    })
}

fn export(args: Export) -> ExitCode {
    let (config, flow) = match args.flow.load("translating offsets") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let offsets = match translated(&config, &flow, &args.group) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match args.format {
        Format::Csv => {
            for o in &offsets {
                println!("{},{},{}", o.topic, o.partition, o.offset);
            }
        }
        Format::Json => {
            let rows: Vec<Row<'_>> = offsets.iter().map(|o| Row {
                topic: &o.topic,
                partition: o.partition,
                offset: o.offset,
                source_topic: &o.source_topic,
                source_offset: o.source_offset,
                checkpoint_age_ms: o.age_ms,
            }).collect();
            match serde_json::to_string_pretty(&rows) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("ferry ctl: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

fn move_group(args: Move, what: &str) -> ExitCode {
    let config = match crate::mirror::load(&args.config, &[]) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let flow = match flow(&config, &args.from, &args.to, what) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let offsets = match translated(&config, flow, &args.group) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let target = config.cluster(&args.to);
    match failover::apply(target, &args.group, &offsets) {
        Ok(report) => {
            let oldest = offsets.iter().map(|o| o.age_ms).max().unwrap_or(-1);
            println!("{what} of group '{}' from '{}' to '{}' ({}); oldest checkpoint {} ms old",
                args.group, args.from, args.to, target.bootstrap_servers, oldest);
            println!("{:<40} {:>9} {:>12} {:>12}  result", "topic", "partition", "offset", "was");
            for (o, applied) in report {
                let (was, result) = match applied {
                    Applied::Committed { previous } => (previous.map_or("-".to_string(), |p| p.to_string()), "committed"),
                    Applied::Kept { current } => (current.to_string(), "kept (already at or past it; never rewound)"),
                };
                println!("{:<40} {:>9} {:>12} {:>12}  {result}", o.topic, o.partition, o.offset, was);
            }
            ExitCode::SUCCESS
        }
        Err(e @ FailoverError::GroupActive { .. }) => {
            eprintln!("ferry ctl: refused: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ferry ctl: {e}");
            ExitCode::FAILURE
        }
    }
}
