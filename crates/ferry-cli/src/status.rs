//! `ferry ctl status`: every flow of a configuration as Kafka records it — the lists in effect,
//! replicated topics with per-partition lag, heartbeat age, checkpoint age per group. A table on
//! a terminal, `--json` for scripts. Exit 1 if any part could not be read (the rest is shown).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use ferry_mirror::control::ControlLog;
use ferry_mirror::status::{flow_report, read_control, FlowReport};

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// MirrorMaker 2 / SRM properties file.
    #[arg(long, short)]
    config: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: StatusArgs) -> ExitCode {
    let config = match crate::mirror::load(&args.config, &[]) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // One control log per target cluster.
    let mut controls: HashMap<String, Result<ControlLog, String>> = HashMap::new();
    let mut reports = Vec::new();
    for flow in &config.flows {
        let control = controls
            .entry(flow.target.clone())
            .or_insert_with(|| read_control(config.cluster(&flow.target)).map_err(|e| e.to_string()));
        let mut report = match control {
            Ok(log) => flow_report(&config, flow, log),
            Err(e) => {
                // The lists cannot be known: report the file's lists, and say so.
                let mut r = flow_report(&config, flow, &ControlLog::default());
                r.errors.insert(0, format!("{e} (lists shown are the file's; ferry ctl changes are unknown)"));
                r
            }
        };
        report.errors.dedup();
        reports.push(report);
    }
    let failed = reports.iter().any(|r| !r.errors.is_empty());
    if args.json {
        let doc = serde_json::json!({ "config": config.file, "flows": reports });
        println!("{}", serde_json::to_string_pretty(&doc).expect("a JSON value always prints"));
    } else {
        if reports.is_empty() {
            println!("{} enables no flow (set `a->b.enabled = true`)", config.file);
        }
        for r in &reports {
            print_flow(r);
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// `850 ms`, `12.3 s`, `5 min 2 s`, `3 h 10 min`.
pub(crate) fn age(ms: i64) -> String {
    match ms {
        ..1_000 => format!("{ms} ms"),
        ..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

fn or_dash(v: Option<i64>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

fn print_flow(r: &FlowReport) {
    println!("flow {}: {} ({}) -> {} ({})", r.flow, r.source.alias, r.source.address, r.target.alias, r.target.address);
    println!("  topics {}  exclude {}", r.topics.join(", "), r.topics_exclude.join(", "));
    println!("  groups {}  exclude {}", r.groups.join(", "), r.groups_exclude.join(", "));
    let heartbeat = r.heartbeat_age_ms.map_or("none yet".to_string(), |a| format!("{} ago", age(a)));
    println!("  last heartbeat {heartbeat}; lag {} record(s) over {} topic(s)", r.lag, r.replicated.len());
    if !r.replicated.is_empty() {
        let w = r.replicated.iter().map(|t| t.topic.len().max(t.remote_topic.len())).max().unwrap_or(5).max(5);
        println!("  {:<w$}  {:<w$}  {:>9}  {:>12}  {:>12}  {:>10}  owner", "topic", "remote topic", "partition", "position", "end", "lag");
        for t in &r.replicated {
            for p in &t.partitions {
                let lag = if p.position.is_none() { "not started".to_string() } else { or_dash(p.lag) };
                let owner = p.owner.as_deref().unwrap_or("-");
                println!("  {:<w$}  {:<w$}  {:>9}  {:>12}  {:>12}  {:>10}  {owner}", t.topic, t.remote_topic, p.partition, or_dash(p.position), or_dash(p.end), lag);
            }
        }
    }
    if !r.checkpoints.is_empty() {
        let w = r.checkpoints.iter().map(|g| g.group.len()).max().unwrap_or(5).max(5);
        println!("  {:<w$}  {:>10}  {:>16}  selected", "group", "partitions", "last checkpoint");
        for g in &r.checkpoints {
            let when = g.checkpoint_age_ms.map_or("-".to_string(), |a| format!("{} ago", age(a)));
            println!("  {:<w$}  {:>10}  {:>16}  {}", g.group, g.partitions, when, if g.selected { "yes" } else { "no (old checkpoints kept)" });
        }
    }
    for e in &r.errors {
        println!("  ERROR {e}");
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(850), "850 ms");
        assert_eq!(age(12_345), "12.3 s");
        assert_eq!(age(302_000), "5 min 2 s");
        assert_eq!(age(11_400_000), "3 h 10 min");
    }
}
