//! `ferry ctl topics|groups`: change a flow's allow/deny lists in a running deployment
//! (srm-control's `topics`/`groups`), or show them with the origin of every entry.

use std::process::ExitCode;

use ferry_mirror::control::{self, Action, Change, FlowLists, ListEntry, ListKind, ListName, CONTROL_TOPIC};
use ferry_mirror::status::read_control;
use ferry_mirror::MirrorConfig;

use crate::ctl::{kafka_failure, FlowArgs};
use crate::mirror::EXIT_CONFIG;

#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// The flow; its properties file holds the base lists.
    #[command(flatten)]
    flow: FlowArgs,
    /// Add a regex to the allow list (repeatable).
    #[arg(long, value_name = "REGEX")]
    add: Vec<String>,
    /// Remove a regex from the allow list (repeatable). A file entry is masked, not deleted.
    #[arg(long, value_name = "REGEX")]
    remove: Vec<String>,
    /// Add a regex to the deny list (`*.exclude`) (repeatable).
    #[arg(long, value_name = "REGEX")]
    add_exclude: Vec<String>,
    /// Remove a regex from the deny list (repeatable).
    #[arg(long, value_name = "REGEX")]
    remove_exclude: Vec<String>,
    /// Show the lists in effect and where each entry came from (the default without changes).
    #[arg(long)]
    list: bool,
    /// Print the lists as JSON.
    #[arg(long)]
    json: bool,
}

impl ListArgs {
    fn changes(&self) -> Vec<Change> {
        let mut out = Vec::new();
        for (regexes, action, kind) in [
            (&self.add, Action::Add, ListKind::Allow),
            (&self.remove, Action::Remove, ListKind::Allow),
            (&self.add_exclude, Action::Add, ListKind::Exclude),
            (&self.remove_exclude, Action::Remove, ListKind::Exclude),
        ] {
            out.extend(regexes.iter().map(|r| Change { action, kind, regex: r.clone() }));
        }
        out
    }
}

/// `user@host` for the record of who changed a list.
fn who() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", ferry_mirror::report::hostname())
}

pub(crate) fn run(args: ListArgs, list: ListName) -> ExitCode {
    let (config, flow) = match args.flow.load(&format!("changing {}", list.as_str())) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let target = config.cluster(&flow.target).clone();
    let mut log = match read_control(&target) {
        Ok(log) => log,
        Err(e) => return kafka_failure(&e),
    };
    let current = FlowLists::effective(&flow, &config.file, &log);
    let changes = args.changes();
    if !changes.is_empty() {
        let plan = match control::plan_changes(&current, &flow, list, &changes, ferry_mirror::report::now_ms(), &who()) {
            Ok(plan) => plan,
            Err(e) => {
                eprintln!("ferry ctl: {e}; nothing was changed");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        for note in &plan.notes {
            eprintln!("ferry ctl: {note}; nothing to change");
        }
        if !plan.records.is_empty() {
            let runtime = tokio::runtime::Handle::current();
            if let Err(e) = runtime.block_on(control::store(&target, &plan, flow.checkpoints_replication_factor)) {
                eprintln!("ferry ctl: nothing was changed (or, if the cluster failed mid-write, some of these entries were stored; run --list)");
                return kafka_failure(&e);
            }
            for (key, value) in &plan.records {
                log.apply(&key.encode(), value.as_ref().map(|v| v.encode()).as_deref());
            }
            eprintln!(
                "ferry ctl: stored {} change(s) in {CONTROL_TOPIC} on cluster '{}' ({}); running mirrors of {} apply them within seconds",
                plan.records.len(), target.alias, target.bootstrap_servers, flow.name()
            );
        }
    }
    let lists = FlowLists::effective(&flow, &config.file, &log);
    print_lists(&config, &lists, list, args.json)
}

fn print_lists(config: &MirrorConfig, lists: &FlowLists, list: ListName, json: bool) -> ExitCode {
    let entries = |kind| lists.entries(list, kind);
    if json {
        let view = |e: &ListEntry| serde_json::json!({ "regex": e.regex, "active": e.active(), "origin": e.origin, "removed": e.removed });
        let doc = serde_json::json!({
            "flow": lists.flow,
            "list": list.as_str(),
            "allow": entries(ListKind::Allow).iter().map(view).collect::<Vec<_>>(),
            "exclude": entries(ListKind::Exclude).iter().map(view).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("a JSON value always prints"));
        return ExitCode::SUCCESS;
    }
    println!("{} of flow {} (base: {})", list.as_str(), lists.flow, config.file);
    let width = [ListKind::Allow, ListKind::Exclude].iter().flat_map(|k| entries(*k)).map(|e| e.regex.len()).max().unwrap_or(5).max(5);
    println!("  {:<8} {:<width$}  origin", "list", "regex");
    for kind in [ListKind::Allow, ListKind::Exclude] {
        let name = match kind {
            ListKind::Allow => "allow",
            ListKind::Exclude => "exclude",
        };
        if entries(kind).is_empty() {
            println!("  {name:<8} {:<width$}  (empty: {})", "-", if kind == ListKind::Allow { "nothing is selected" } else { "nothing is excluded" });
        }
        for e in entries(kind) {
            match &e.removed {
                None => println!("  {name:<8} {:<width$}  {}", e.regex, e.origin),
                Some(by) => println!("  {name:<8} {:<width$}  REMOVED ({by}); was {}", e.regex, e.origin),
            }
        }
    }
    ExitCode::SUCCESS
}

