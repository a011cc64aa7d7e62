//! Live allow/deny lists: what `ferry ctl topics|groups` changes in a running deployment
//! (srm-control's `topics`/`groups`).
//!
//! The properties file is the base. Changes are layered on top, one record per list entry in
//! the compacted topic [`CONTROL_TOPIC`] on the flow's **target** cluster (where the flow's
//! positions already live, so the topic is there whenever the flow can work):
//!
//! - key: [`EntryKey`] as JSON `{"flow":"a->b","list":"topics","kind":"allow","regex":"orders.*"}`;
//! - value: [`EntryChange`] as JSON `{"action":"add","at_ms":...,"by":"user@host"}`, or a
//!   tombstone when a `ctl`-added entry is removed again.
//!
//! One record per entry means two operators changing different entries never overwrite each
//! other, and compaction keeps exactly the current state. The effective list is
//! `(file entries + ctl additions) - ctl removals` ([`FlowLists::effective`]); every entry keeps
//! its origin for `--list`. Running flows follow the topic ([`ControlWatch`]) and apply a change
//! within a second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use ferry_kafka::{Admin, ClientRole, ClusterClient};
use rdkafka::producer::FutureProducer;

use crate::config::{compile_entry, FlowConfig, KeyAt, RegexList};
use crate::offset_store::{compacted_topic, send_all, OutRecord, TopicTail};

/// The compacted topic on each target cluster that holds `ferry ctl` list changes.
pub const CONTROL_TOPIC: &str = "ferry-control.internal";

/// Which list of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListName {
    Topics,
    Groups,
}

/// The allow list (`topics`, `groups`) or the deny list (`topics.exclude`, `groups.exclude`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Allow,
    Exclude,
}

impl ListName {
    pub fn as_str(self) -> &'static str {
        match self {
            ListName::Topics => "topics",
            ListName::Groups => "groups",
        }
    }
}

impl ListKind {
    /// The MM2 property of this list: `topics`, `topics.exclude`, ...
    pub fn property(self, list: ListName) -> String {
        match self {
            ListKind::Allow => list.as_str().to_string(),
            ListKind::Exclude => format!("{}.exclude", list.as_str()),
        }
    }
}

/// The key of a control record: one entry of one list of one flow. Field order is the byte
/// order of the key, which compaction relies on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryKey {
    pub flow: String,
    pub list: ListName,
    pub kind: ListKind,
    pub regex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Remove,
}

/// The value of a control record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryChange {
    pub action: Action,
    /// When the change was made (Unix milliseconds).
    pub at_ms: i64,
    /// Who made it: `user@host`.
    pub by: String,
}

impl EntryKey {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a control key always serializes")
    }
}

impl EntryChange {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a control value always serializes")
    }
}

/// The current state of the control topic: the latest change per entry.
#[derive(Debug, Default, Clone)]
pub struct ControlLog {
    entries: BTreeMap<EntryKey, EntryChange>,
    /// Records that are not Ferry control records, or hold an invalid regex (ignored, counted).
    pub malformed: u64,
    /// Why the latest of those was ignored, for the warning.
    pub last_malformed: Option<String>,
}

impl ControlLog {
    /// Applies one record; returns the flow it changed, if any.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Option<String> {
        let key = match serde_json::from_slice::<EntryKey>(key) {
            Ok(key) => key,
            Err(e) => return self.ignore(format!("key is not a control entry: {e}")),
        };
        match value {
            None => {
                self.entries.remove(&key);
            }
            Some(v) => match (serde_json::from_slice::<EntryChange>(v), compile_entry(&key.regex)) {
                (Ok(change), Ok(_)) => {
                    self.entries.insert(key.clone(), change);
                }
                (Err(e), _) => return self.ignore(format!("value for '{}' of flow {} is not a list change: {e}", key.regex, key.flow)),
                (_, Err(e)) => return self.ignore(format!("invalid regex '{}' for flow {}: {e}", key.regex, key.flow)),
            },
        }
        Some(key.flow)
    }

    fn ignore(&mut self, why: String) -> Option<String> {
        self.malformed += 1;
        self.last_malformed = Some(why);
        None
    }

    fn get(&self, flow: &str, list: ListName, kind: ListKind, regex: &str) -> Option<&EntryChange> {
        self.entries.get(&EntryKey { flow: flow.to_string(), list, kind, regex: regex.to_string() })
    }

    fn for_list<'s>(&'s self, flow: &'s str, list: ListName, kind: ListKind) -> impl Iterator<Item = (&'s EntryKey, &'s EntryChange)> + 's {
        self.entries.iter().filter(move |(k, _)| k.flow == flow && k.list == list && k.kind == kind)
    }
}

/// Where an entry of a list came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Origin {
    /// MM2's default for the property (the file does not set it).
    Default { property: String },
    /// The properties file.
    File { file: String, line: usize, key: String },
    /// `ferry ctl`.
    Ctl { at_ms: i64, by: String },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default { property } => write!(f, "default of {property}"),
            Origin::File { file, line, key } => write!(f, "{file}:{line} ({key})"),
            Origin::Ctl { at_ms, by } => write!(f, "ferry ctl, {} by {by}", format_utc(*at_ms)),
        }
    }
}

/// One entry of an effective list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    pub regex: String,
    pub origin: Origin,
    /// Set when `ferry ctl` removed this base entry: it is shown, but not in effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<Origin>,
}

impl ListEntry {
    pub fn active(&self) -> bool {
        self.removed.is_none()
    }
}

/// The four effective lists of a flow, with provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowLists {
    pub flow: String,
    pub topics: Vec<ListEntry>,
    pub topics_exclude: Vec<ListEntry>,
    pub groups: Vec<ListEntry>,
    pub groups_exclude: Vec<ListEntry>,
}

impl FlowLists {
    /// The file's lists with the control log's changes for `flow` layered on top.
    pub fn effective(flow: &FlowConfig, file: &str, log: &ControlLog) -> FlowLists {
        let name = flow.name();
        let sources = &flow.list_sources;
        let layer = |list: ListName, kind: ListKind, base: &RegexList, at: &Option<KeyAt>| -> Vec<ListEntry> {
            let origin = match at {
                Some(at) => Origin::File { file: file.to_string(), line: at.line, key: at.key.clone() },
                None => Origin::Default { property: kind.property(list) },
            };
            let mut out: Vec<ListEntry> = base
                .patterns()
                .iter()
                .map(|regex| {
                    let removed = log
                        .get(&name, list, kind, regex)
                        .filter(|c| c.action == Action::Remove)
                        .map(|c| Origin::Ctl { at_ms: c.at_ms, by: c.by.clone() });
                    ListEntry { regex: regex.clone(), origin: origin.clone(), removed }
                })
                .collect();
            for (key, change) in log.for_list(&name, list, kind) {
                if change.action == Action::Add && !base.patterns().contains(&key.regex) {
                    out.push(ListEntry {
                        regex: key.regex.clone(),
                        origin: Origin::Ctl { at_ms: change.at_ms, by: change.by.clone() },
                        removed: None,
                    });
                }
            }
            out
        };
        FlowLists {
            topics: layer(ListName::Topics, ListKind::Allow, &flow.topics, &sources.topics),
            topics_exclude: layer(ListName::Topics, ListKind::Exclude, &flow.topics_exclude, &sources.topics_exclude),
            groups: layer(ListName::Groups, ListKind::Allow, &flow.groups, &sources.groups),
            groups_exclude: layer(ListName::Groups, ListKind::Exclude, &flow.groups_exclude, &sources.groups_exclude),
            flow: name,
        }
    }

    pub fn entries(&self, list: ListName, kind: ListKind) -> &[ListEntry] {
        match (list, kind) {
            (ListName::Topics, ListKind::Allow) => &self.topics,
            (ListName::Topics, ListKind::Exclude) => &self.topics_exclude,
            (ListName::Groups, ListKind::Allow) => &self.groups,
            (ListName::Groups, ListKind::Exclude) => &self.groups_exclude,
        }
    }

    /// The regexes in effect.
    pub fn active(&self, list: ListName, kind: ListKind) -> Vec<String> {
        self.entries(list, kind).iter().filter(|e| e.active()).map(|e| e.regex.clone()).collect()
    }

    /// The list in effect, compiled. Every entry was validated when read (file or control
    /// record), so nothing is left out here; if something were, it would not be matched.
    pub fn regexes(&self, list: ListName, kind: ListKind) -> RegexList {
        RegexList::from_patterns_lossy(self.active(list, kind))
    }
}

/// One requested change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    pub kind: ListKind,
    pub regex: String,
}

/// A change that cannot be made; nothing is written when any change of a command fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("invalid regex '{regex}' for {property}: {reason}")]
    InvalidRegex { regex: String, property: String, reason: String },
    #[error("'{regex}' is not an entry of {property} of flow {flow}{hint}")]
    NotAnEntry { regex: String, property: String, flow: String, hint: String },
    #[error("'{regex}' is both added to and removed from {property} in one command")]
    Contradiction { regex: String, property: String },
}

/// What a validated command writes: records (value None = tombstone), and notes on changes
/// that are already in effect.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangePlan {
    pub records: Vec<(EntryKey, Option<EntryChange>)>,
    pub notes: Vec<String>,
}

/// Validates `changes` to `list` of a flow against its current lists and plans the records.
/// Either every change is valid and planned, or the first problem is returned.
pub fn plan_changes(
    current: &FlowLists,
    base: &FlowConfig,
    list: ListName,
    changes: &[Change],
    at_ms: i64,
    by: &str,
) -> Result<ChangePlan, ChangeError> {
    let mut plan = ChangePlan::default();
    for c in changes {
        let property = c.kind.property(list);
        if let Err(reason) = compile_entry(&c.regex) {
            return Err(ChangeError::InvalidRegex { regex: c.regex.clone(), property, reason });
        }
        if changes.iter().any(|o| o.kind == c.kind && o.regex == c.regex && o.action != c.action) {
            return Err(ChangeError::Contradiction { regex: c.regex.clone(), property });
        }
    }
    let base_list = |kind: ListKind| match (list, kind) {
        (ListName::Topics, ListKind::Allow) => &base.topics,
        (ListName::Topics, ListKind::Exclude) => &base.topics_exclude,
        (ListName::Groups, ListKind::Allow) => &base.groups,
        (ListName::Groups, ListKind::Exclude) => &base.groups_exclude,
    };
    let mut seen = std::collections::BTreeSet::new();
    for c in changes {
        if !seen.insert((c.kind, c.regex.clone())) {
            continue;
        }
        let property = c.kind.property(list);
        let entries = current.entries(list, c.kind);
        let entry = entries.iter().find(|e| e.regex == c.regex);
        let in_base = base_list(c.kind).patterns().contains(&c.regex);
        let key = EntryKey { flow: current.flow.clone(), list, kind: c.kind, regex: c.regex.clone() };
        let change = |action| Some(EntryChange { action, at_ms, by: by.to_string() });
        match (c.action, entry) {
            (Action::Add, Some(e)) if e.active() => {
                plan.notes.push(format!("'{}' is already in {property} ({})", c.regex, e.origin));
            }
            (Action::Add, _) => plan.records.push((key, change(Action::Add))),
            (Action::Remove, Some(e)) if e.active() => {
                // A base entry needs a removal record to mask it; a ctl addition just goes.
                let value = if in_base { change(Action::Remove) } else { None };
                plan.records.push((key, value));
            }
            (Action::Remove, Some(e)) => {
                let removed = e.removed.as_ref().map_or(String::new(), |o| o.to_string());
                plan.notes.push(format!("'{}' is already removed from {property} ({removed})", c.regex));
            }
            (Action::Remove, None) => {
                let hint = removal_hint(current, list, c.kind, &c.regex);
                return Err(ChangeError::NotAnEntry { regex: c.regex.clone(), property, flow: current.flow.clone(), hint });
            }
        }
    }
    Ok(plan)
}

/// For a removal of something that is not an entry: if it names something an entry matches,
/// say which entry, and what does what the user wants.
fn removal_hint(current: &FlowLists, list: ListName, kind: ListKind, name: &str) -> String {
    let matching = current
        .entries(list, kind)
        .iter()
        .filter(|e| e.active())
        .find(|e| RegexList::from_patterns(vec![e.regex.clone()]).is_ok_and(|r| r.is_match(name)));
    match (matching, kind) {
        (Some(e), ListKind::Allow) => format!(
            "; it is matched by the entry '{}' ({}). To stop replicating it, exclude it: --add-exclude '{}'",
            e.regex, e.origin, regex::escape(name)
        ),
        (Some(e), ListKind::Exclude) => format!("; it is matched by the entry '{}' ({})", e.regex, e.origin),
        (None, _) => {
            let list: Vec<&str> = current.entries(list, kind).iter().filter(|e| e.active()).map(|e| e.regex.as_str()).collect();
            format!(" (entries: {})", if list.is_empty() { "none".to_string() } else { list.join(", ") })
        }
    }
}

/// What changed between two versions of a flow's lists, for the log: `topics +orders -tmp.*`.
pub fn describe_change(old: &FlowLists, new: &FlowLists) -> String {
    let mut parts = Vec::new();
    for list in [ListName::Topics, ListName::Groups] {
        for kind in [ListKind::Allow, ListKind::Exclude] {
            let (a, b) = (old.active(list, kind), new.active(list, kind));
            let mut d: Vec<String> = b.iter().filter(|r| !a.contains(r)).map(|r| format!("+{r}")).collect();
            d.extend(a.iter().filter(|r| !b.contains(r)).map(|r| format!("-{r}")));
            if !d.is_empty() {
                parts.push(format!("{} {}", kind.property(list), d.join(" ")));
            }
        }
    }
    parts.join("; ")
}

/// `2026-11-22T10:04:05Z` for Unix milliseconds (UTC, proleptic Gregorian).
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Stores a validated plan in the control topic of the flow's target cluster (creating the
/// topic if missing) and returns once every record is acknowledged. The records go out as
/// one batch to the topic's single partition.
pub async fn store(target: &ClusterClient, plan: &ChangePlan, replication_factor: i32) -> ferry_kafka::Result<()> {
    if plan.records.is_empty() {
        return Ok(());
    }
    Admin::connect(target)?.create_topics(&[compacted_topic(CONTROL_TOPIC.to_string(), replication_factor)]).await?;
    let producer: FutureProducer = target
        .client_config_with_defaults(ClientRole::Producer, &[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "20")])
        .create()
        .map_err(|e| ferry_kafka::Error::new(target, "create control producer", e))?;
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = plan.records.iter().map(|(k, v)| (k.encode(), v.as_ref().map(EntryChange::encode))).collect();
    let records: Vec<OutRecord<'_>> = encoded.iter().map(|(k, v)| (CONTROL_TOPIC, k.as_slice(), v.as_deref())).collect();
    send_all(&producer, target, &format!("write {CONTROL_TOPIC}"), &records).await
}

/// Reads the whole control topic (blocking).
pub fn read_log(tail: &mut TopicTail) -> ferry_kafka::Result<ControlLog> {
    let mut log = ControlLog::default();
    tail.catch_up(Duration::from_secs(30), |k, v, _| {
        log.apply(k, v);
    })?;
    Ok(log)
}

/// Follows the control topic for one flow of a running mirror and publishes its lists.
pub(crate) struct ControlWatch {
    pub(crate) flow: FlowConfig,
    pub(crate) file: String,
    pub(crate) tail: TopicTail,
    pub(crate) log: ControlLog,
    pub(crate) lists: watch::Sender<Option<Arc<FlowLists>>>,
    pub(crate) cancel: CancellationToken,
}

/// How often a running flow looks for list changes.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(250);

impl ControlWatch {
    pub(crate) fn run(mut self) {
        let name = self.flow.name();
        // Records ignored while the log was first read are reported on the first pass.
        let mut malformed = 0;
        while !self.cancel.is_cancelled() {
            std::thread::sleep(WATCH_INTERVAL);
            let mut touched = false;
            let log = &mut self.log;
            self.tail.drain(|k, v, _| touched |= log.apply(k, v).as_deref() == Some(name.as_str()));
            if self.log.malformed > malformed {
                let latest = self.log.last_malformed.as_deref().unwrap_or_default();
                warn!(flow = %name, topic = CONTROL_TOPIC, malformed = self.log.malformed - malformed, latest, "ignored records in the control topic that are not valid list changes");
                malformed = self.log.malformed;
            }
            if !touched {
                continue;
            }
            let new = FlowLists::effective(&self.flow, &self.file, &self.log);
            let old = self.lists.borrow().clone();
            if old.as_deref() == Some(&new) {
                continue;
            }
            if let Some(old) = &old {
                let change = describe_change(old, &new);
                if !change.is_empty() {
                    info!(flow = %name, change = %change, "replication lists changed by ferry ctl");
                }
            }
            self.lists.send_replace(Some(Arc::new(new)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorConfig;

    fn flow(extra: &str) -> FlowConfig {
        let text = format!("clusters = a, b\na.bootstrap.servers = h:1\nb.bootstrap.servers = h:2\na->b.enabled = true\n{extra}");
        MirrorConfig::parse("mm2.properties", &text).unwrap().flows.remove(0)
    }

    fn record(log: &mut ControlLog, list: ListName, kind: ListKind, regex: &str, change: Option<EntryChange>) {
        let key = EntryKey { flow: "a->b".into(), list, kind, regex: regex.into() };
        log.apply(&key.encode(), change.map(|c| c.encode()).as_deref());
    }

    fn by(action: Action) -> Option<EntryChange> {
        Some(EntryChange { action, at_ms: 1_700_000_000_000, by: "ops@host".into() })
    }

    fn apply(log: &mut ControlLog, plan: &ChangePlan) {
        for (k, v) in &plan.records {
            log.apply(&k.encode(), v.as_ref().map(|v| v.encode()).as_deref());
        }
    }

    #[test]
    fn the_key_is_stable_json_so_compaction_keeps_one_record_per_entry() {
        let key = EntryKey { flow: "a->b".into(), list: ListName::Topics, kind: ListKind::Exclude, regex: "tmp\\..*".into() };
        assert_eq!(String::from_utf8(key.encode()).unwrap(), r#"{"flow":"a->b","list":"topics","kind":"exclude","regex":"tmp\\..*"}"#);
        let value = EntryChange { action: Action::Remove, at_ms: 5, by: "u@h".into() };
        assert_eq!(String::from_utf8(value.encode()).unwrap(), r#"{"action":"remove","at_ms":5,"by":"u@h"}"#);
    }

    #[test]
    fn ctl_changes_layer_on_the_file_and_keep_their_origin() {
        let base = flow("topics = orders, payments\n");
        let mut log = ControlLog::default();
        record(&mut log, ListName::Topics, ListKind::Allow, "audit.*", by(Action::Add));
        record(&mut log, ListName::Topics, ListKind::Allow, "payments", by(Action::Remove));
        record(&mut log, ListName::Groups, ListKind::Exclude, "batch-.*", by(Action::Add));
        // Another flow's entries and junk do not leak in.
        log.apply(&EntryKey { flow: "b->a".into(), list: ListName::Topics, kind: ListKind::Allow, regex: "x".into() }.encode(), by(Action::Add).map(|c| c.encode()).as_deref());
        log.apply(b"not json", Some(b"{}"));
        record(&mut log, ListName::Topics, ListKind::Allow, "bad(", by(Action::Add));
        // Compiles alone, not anchored: '#' comments out the closing ")$" in (?x) mode.
        record(&mut log, ListName::Topics, ListKind::Allow, "(?x)orders#x", by(Action::Add));
        assert_eq!(log.malformed, 3);
        assert!(log.last_malformed.as_deref().unwrap().starts_with("invalid regex '(?x)orders#x' for flow a->b"), "{:?}", log.last_malformed);

        let lists = FlowLists::effective(&base, "mm2.properties", &log);
        assert_eq!(lists.active(ListName::Topics, ListKind::Allow), vec!["orders", "audit.*"]);
        assert_eq!(lists.topics[0].origin, Origin::File { file: "mm2.properties".into(), line: 5, key: "topics".into() });
        assert!(!lists.topics[1].active(), "payments is shown as removed");
        assert_eq!(lists.topics[1].removed, Some(Origin::Ctl { at_ms: 1_700_000_000_000, by: "ops@host".into() }));
        assert_eq!(lists.topics[2].origin.to_string(), "ferry ctl, 2023-11-14T22:13:20Z by ops@host");
        assert_eq!(lists.topics_exclude[0].origin, Origin::Default { property: "topics.exclude".into() });
        assert!(lists.groups_exclude.iter().any(|e| e.regex == "batch-.*"));
        let r = lists.regexes(ListName::Topics, ListKind::Allow);
        assert!(r.is_match("audit.log") && r.is_match("orders") && !r.is_match("payments"));

        // Removing the ctl addition deletes its record; the file's base is untouched.
        record(&mut log, ListName::Topics, ListKind::Allow, "audit.*", None);
        let lists = FlowLists::effective(&base, "mm2.properties", &log);
        assert_eq!(lists.active(ListName::Topics, ListKind::Allow), vec!["orders"]);
    }

    #[test]
    fn changes_are_validated_before_anything_is_planned() {
        let base = flow("topics = orders\n");
        let mut log = ControlLog::default();
        let lists = FlowLists::effective(&base, "f", &log);
        let add = |regex: &str| Change { action: Action::Add, kind: ListKind::Allow, regex: regex.into() };
        let remove = |regex: &str| Change { action: Action::Remove, kind: ListKind::Allow, regex: regex.into() };

        let err = plan_changes(&lists, &base, ListName::Topics, &[add("good"), add("bad(")], 1, "u@h").unwrap_err();
        assert!(matches!(&err, ChangeError::InvalidRegex { regex, .. } if regex == "bad("), "{err}");
        assert!(err.to_string().contains("for topics"), "{err}");
        for anchored_only in ["(?x)orders#x", r"orders\"] {
            let err = plan_changes(&lists, &base, ListName::Topics, &[add(anchored_only)], 1, "u@h").unwrap_err();
            assert!(matches!(&err, ChangeError::InvalidRegex { regex, .. } if regex == anchored_only), "{err}");
        }

        let err = plan_changes(&lists, &base, ListName::Topics, &[add("x"), remove("x")], 1, "u@h").unwrap_err();
        assert!(matches!(err, ChangeError::Contradiction { .. }));

        let err = plan_changes(&lists, &base, ListName::Topics, &[remove("payments")], 1, "u@h").unwrap_err();
        assert!(err.to_string().contains("entries: orders"), "{err}");

        // Adding, re-adding (a note), removing the addition (a tombstone), removing a file entry
        // (a removal record), and restoring it (an add record).
        let plan = plan_changes(&lists, &base, ListName::Topics, &[add("audit.*"), add("orders")], 1, "u@h").unwrap();
        assert_eq!(plan.records.len(), 1);
        assert_eq!(plan.records[0].1.as_ref().unwrap().action, Action::Add);
        assert_eq!(plan.notes, vec!["'orders' is already in topics (f:5 (topics))"]);
        apply(&mut log, &plan);
        let lists = FlowLists::effective(&base, "f", &log);
        let plan = plan_changes(&lists, &base, ListName::Topics, &[remove("audit.*"), remove("orders")], 2, "u@h").unwrap();
        assert_eq!(plan.records[0].1, None);
        assert_eq!(plan.records[1].1.as_ref().unwrap().action, Action::Remove);
        apply(&mut log, &plan);
        let lists = FlowLists::effective(&base, "f", &log);
        assert!(lists.active(ListName::Topics, ListKind::Allow).is_empty());
        let plan = plan_changes(&lists, &base, ListName::Topics, &[remove("orders")], 3, "u@h").unwrap();
        assert!(plan.records.is_empty() && plan.notes[0].contains("already removed"));
        let plan = plan_changes(&lists, &base, ListName::Topics, &[add("orders")], 3, "u@h").unwrap();
        apply(&mut log, &plan);
        let lists = FlowLists::effective(&base, "f", &log);
        assert_eq!(lists.active(ListName::Topics, ListKind::Allow), vec!["orders"]);
    }

    #[test]
    fn removing_a_name_an_entry_matches_suggests_an_exclusion() {
        let base = flow("");
        let lists = FlowLists::effective(&base, "f", &ControlLog::default());
        let remove = Change { action: Action::Remove, kind: ListKind::Allow, regex: "orders.v2".into() };
        let err = plan_changes(&lists, &base, ListName::Topics, &[remove], 1, "u@h").unwrap_err().to_string();
        assert!(err.contains("matched by the entry '.*' (default of topics)"), "{err}");
        assert!(err.contains(r"--add-exclude 'orders\.v2'"), "{err}");
    }

    #[test]
    fn changes_are_described_for_the_log() {
        let base = flow("topics = orders\n");
        let mut log = ControlLog::default();
        let old = FlowLists::effective(&base, "f", &log);
        record(&mut log, ListName::Topics, ListKind::Allow, "audit", by(Action::Add));
        record(&mut log, ListName::Topics, ListKind::Allow, "orders", by(Action::Remove));
        record(&mut log, ListName::Groups, ListKind::Exclude, "tmp-.*", by(Action::Add));
        let new = FlowLists::effective(&base, "f", &log);
        assert_eq!(describe_change(&old, &new), "topics +audit -orders; groups.exclude +tmp-.*");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_341_845_000), "2026-11-22T10:04:05Z");
    }
}
