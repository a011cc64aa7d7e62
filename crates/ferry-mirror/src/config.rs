//! The MirrorMaker 2 / SRM properties file, parsed once into typed, validated flows.
//!
//! Every problem is collected (not only the first) and names the file, line, key and reason;
//! nothing here touches a cluster. Client properties are checked against librdkafka itself.

pub use ferry_kafka::properties;
pub mod providers;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use ferry_kafka::{ClientRole, ClusterClient, PropertyProblemKind};
use regex::Regex;

use crate::replication_policy::{PolicyKind, ReplicationPolicy};

/// Aliases name topics (`<alias>.checkpoints.internal`, `mm2-offset-syncs.<alias>.internal`,
/// `<alias>.<topic>`), which Kafka caps at 249 bytes.
const MAX_ALIAS_LEN: usize = 200;

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// Where the configuration came from (for messages).
    pub file: String,
    /// Every cluster named in `clusters`, in that order.
    pub clusters: Vec<ClusterClient>,
    /// The enabled flows.
    pub flows: Vec<FlowConfig>,
    /// Unknown or ignored keys, each with file:line.
    pub warnings: Vec<String>,
}

/// One enabled replication flow `source->target` and its settings.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub source: String,
    pub target: String,
    pub topics: RegexList,
    pub topics_exclude: RegexList,
    pub policy: ReplicationPolicy,
    pub refresh_topics_enabled: bool,
    pub refresh_topics_interval: Duration,
    pub sync_topic_configs_enabled: bool,
    pub sync_topic_configs_interval: Duration,
    /// MM2's `sync.topic.acls.enabled` (default true): ALLOW READ/ALL ACLs on replicated topics
    /// are copied to their remote topics as READ.
    pub sync_topic_acls_enabled: bool,
    pub sync_topic_acls_interval: Duration,
    pub config_properties_exclude: RegexList,
    /// Replication factor of remote topics; -1 = the target broker's default.
    pub replication_factor: i32,
    /// Replication factor of the `heartbeats` topic; -1 = broker default.
    pub heartbeats_replication_factor: i32,
    pub emit_heartbeats_enabled: bool,
    pub emit_heartbeats_interval: Duration,
    pub tasks_max: usize,
    /// How often replicated positions are stored (`offset.flush.interval.ms`).
    pub offset_flush_interval: Duration,
    /// Consumer groups whose offsets are checkpointed (`groups`, `groups.exclude`).
    pub groups: RegexList,
    pub groups_exclude: RegexList,
    pub refresh_groups_enabled: bool,
    pub refresh_groups_interval: Duration,
    pub emit_checkpoints_enabled: bool,
    pub emit_checkpoints_interval: Duration,
    pub sync_group_offsets_enabled: bool,
    pub sync_group_offsets_interval: Duration,
    pub checkpoints_replication_factor: i32,
    pub offset_syncs_replication_factor: i32,
    /// Which cluster holds `mm2-offset-syncs.<target>.internal` and Ferry's offset runs.
    pub offset_syncs_location: OffsetSyncsLocation,
    /// Whether MM2-format offset syncs are written (Ferry's own offset runs always are).
    pub emit_offset_syncs_enabled: bool,
    /// `exactly.once.support = enabled`: records and positions are committed in one
    /// transaction on the target.
    pub exactly_once: bool,
    /// Where `topics`, `topics.exclude`, `groups` and `groups.exclude` were set (None: the
    /// default), for `ferry ctl ... --list`.
    pub list_sources: ListSources,
}

/// The key and line a list was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAt {
    /// As written: `a->b.topics` or `topics`.
    pub key: String,
    pub line: usize,
}

/// Where each allow/deny list of a flow came from (None: MM2's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSources {
    pub topics: Option<KeyAt>,
    pub topics_exclude: Option<KeyAt>,
    pub groups: Option<KeyAt>,
    pub groups_exclude: Option<KeyAt>,
}

/// `offset-syncs.topic.location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSyncsLocation {
    Source,
    Target,
}

impl OffsetSyncsLocation {
    /// The flow's source or target, whichever this names.
    pub fn pick<'a, T>(self, source: &'a T, target: &'a T) -> &'a T {
        match self {
            OffsetSyncsLocation::Source => source,
            OffsetSyncsLocation::Target => target,
        }
    }
}

impl FlowConfig {
    pub fn name(&self) -> String {
        format!("{}->{}", self.source, self.target)
    }
}

/// A comma-separated list of regular expressions, each matching whole names (as Java's
/// `Pattern.matches`).
#[derive(Clone)]
pub struct RegexList {
    patterns: Vec<String>,
    compiled: Vec<Regex>,
}

/// Compiles one list entry exactly as it is matched: anchored at both ends, `^(?:entry)$`.
/// This is the only validation of an entry, so whatever passes here can be used
/// (`(?x)a#b` compiles alone but comments out the closing `)$` once anchored).
pub fn compile_entry(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())
}

impl RegexList {
    /// Parses `a, b.*, c`; an empty string is an empty list. The error names the bad pattern.
    pub fn parse(list: &str) -> Result<Self, String> {
        Self::from_patterns(list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect())
    }

    /// One regex per entry (an entry may contain a comma). The error names the bad pattern.
    pub fn from_patterns(patterns: Vec<String>) -> Result<Self, String> {
        let compiled = patterns.iter().map(|p| compile_entry(p).map_err(|e| format!("invalid regex '{p}': {e}"))).collect::<Result<_, _>>()?;
        Ok(RegexList { patterns, compiled })
    }

    /// Like [`RegexList::from_patterns`], but an entry that does not compile is left out, for
    /// callers that must keep going on stored data (and validated it when reading it).
    pub fn from_patterns_lossy(patterns: Vec<String>) -> Self {
        let (patterns, compiled) = patterns.into_iter().filter_map(|p| compile_entry(&p).ok().map(|r| (p, r))).unzip();
        RegexList { patterns, compiled }
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.compiled.iter().any(|r| r.is_match(name))
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl fmt::Debug for RegexList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every problem found in a configuration; start-up stops on any.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem{}):", self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" })?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// MM2 defaults, and Ferry's where it documents a better one.
pub mod defaults {
    pub const TOPICS: &str = ".*";
    pub const TOPICS_EXCLUDE: &str = r".*[\-\.]internal, .*\.replica, __.*";
    pub const CONFIG_PROPERTIES_EXCLUDE: &str = r"follower\.replication\.throttled\.replicas, leader\.replication\.throttled\.replicas, message\.timestamp\.difference\.max\.ms, message\.timestamp\.type, unclean\.leader\.election\.enable, min\.insync\.replicas";
    /// MM2: 600 s. Ferry: new topics within seconds.
    pub const REFRESH_TOPICS_INTERVAL_SECONDS: u64 = 5;
    /// MM2: 600 s. Ferry: config changes within seconds.
    pub const SYNC_TOPIC_CONFIGS_INTERVAL_SECONDS: u64 = 5;
    /// MM2: 600 s. Ferry: a minute (ACLs change rarely; a describe is one request per flow).
    pub const SYNC_TOPIC_ACLS_INTERVAL_SECONDS: u64 = 60;
    /// MM2: 2. Ferry: the target broker's default (works on any cluster size).
    pub const REPLICATION_FACTOR: i32 = -1;
    /// MM2: 3. Ferry: the broker's default.
    pub const HEARTBEATS_REPLICATION_FACTOR: i32 = -1;
    pub const EMIT_HEARTBEATS_INTERVAL_SECONDS: u64 = 1;
    pub const TASKS_MAX: usize = 1;
    /// Kafka Connect: 60000 ms. Ferry: 1000 ms (a smaller re-send window after a crash).
    pub const OFFSET_FLUSH_INTERVAL_MS: u64 = 1000;
    pub const GROUPS: &str = ".*";
    /// MM2's default, plus Ferry's own position groups.
    pub const GROUPS_EXCLUDE: &str = r"console-consumer-.*, connect-.*, __.*, ferry-mirror\..*\.internal";
    /// MM2: 600 s. Ferry: new groups within seconds.
    pub const REFRESH_GROUPS_INTERVAL_SECONDS: u64 = 5;
    /// MM2: 60 s. Ferry: a failover is at most a second behind.
    pub const EMIT_CHECKPOINTS_INTERVAL_SECONDS: u64 = 1;
    /// MM2: 60 s.
    pub const SYNC_GROUP_OFFSETS_INTERVAL_SECONDS: u64 = 1;
    /// MM2: 3. Ferry: the broker's default.
    pub const INTERNAL_TOPIC_REPLICATION_FACTOR: i32 = -1;
}

/// Flow-level keys Ferry implements.
const FLOW_KEYS: &[&str] = &[
    "enabled",
    "topics",
    "topics.exclude",
    "topics.blacklist",
    "replication.policy.class",
    "replication.policy.separator",
    "replication.policy.internal.topic.separator.enabled",
    "refresh.topics.enabled",
    "refresh.topics.interval.seconds",
    "sync.topic.configs.enabled",
    "sync.topic.configs.interval.seconds",
    "sync.topic.acls.enabled",
    "sync.topic.acls.interval.seconds",
    "config.properties.exclude",
    "config.properties.blacklist",
    "replication.factor",
    "heartbeats.topic.replication.factor",
    "emit.heartbeats.enabled",
    "emit.heartbeats.interval.seconds",
    "tasks.max",
    "offset.flush.interval.ms",
    "groups",
    "groups.exclude",
    "groups.blacklist",
    "refresh.groups.enabled",
    "refresh.groups.interval.seconds",
    "emit.checkpoints.enabled",
    "emit.checkpoints.interval.seconds",
    "sync.group.offsets.enabled",
    "sync.group.offsets.interval.seconds",
    "checkpoints.topic.replication.factor",
    "offset-syncs.topic.replication.factor",
    "offset-syncs.topic.location",
    "emit.offset-syncs.enabled",
    "exactly.once.support",
];

/// MM2's pluggable classes and their defaults: the default is accepted (it is what Ferry
/// does), anything else refused.
const PLUGGABLE_CLASS_KEYS: &[(&str, &str)] = &[
    ("topic.filter.class", "org.apache.kafka.connect.mirror.DefaultTopicFilter"),
    ("group.filter.class", "org.apache.kafka.connect.mirror.DefaultGroupFilter"),
    ("config.property.filter.class", "org.apache.kafka.connect.mirror.DefaultConfigPropertyFilter"),
    ("forwarding.admin.class", "org.apache.kafka.clients.admin.ForwardingAdmin"),
];

/// Kafka Connect framework settings MM2 files carry that Ferry has no use for.
const CONNECT_FRAMEWORK_KEYS: &[&str] = &[
    "key.converter",
    "value.converter",
    "header.converter",
    "config.storage.replication.factor",
    "offset.storage.replication.factor",
    "status.storage.replication.factor",
    "dedicated.mode.enable.internal.rest",
    "replication.policy.internal.topic.separator",
    "admin.timeout.ms",
    // MM2 writes an offset sync every `offset.lag.max` records and translates to the last one;
    // Ferry records exact offset runs, so there is nothing to tune.
    "offset.lag.max",
];

#[derive(Debug, Clone)]
struct Value {
    value: String,
    line: usize,
}

struct Parser<'f> {
    file: &'f str,
    problems: Vec<ConfigProblem>,
    warnings: Vec<String>,
}

impl Parser<'_> {
    fn problem(&mut self, line: Option<usize>, key: Option<&str>, reason: impl Into<String>) {
        self.problems.push(ConfigProblem {
            file: self.file.to_string(),
            line,
            key: key.map(String::from),
            reason: reason.into(),
        });
    }

    fn warn(&mut self, line: usize, key: &str, reason: &str) {
        self.warnings.push(format!("{}:{line}: {key}: {reason}", self.file));
    }
}

impl MirrorConfig {
    /// Parses and validates the text of a properties file named `file`.
    pub fn parse(file: &str, text: &str) -> Result<MirrorConfig, ConfigError> {
        Self::parse_with(file, text, true)
    }

    /// As [`MirrorConfig::parse`], for `ferry serve`: a file with clusters and no enabled flow is
    /// valid (clusters to monitor, nothing to replicate).
    pub fn parse_for_monitoring(file: &str, text: &str) -> Result<MirrorConfig, ConfigError> {
        Self::parse_with(file, text, false)
    }

    fn parse_with(file: &str, text: &str, require_flow: bool) -> Result<MirrorConfig, ConfigError> {
        let mut p = Parser { file, problems: Vec::new(), warnings: Vec::new() };
        let entries = match properties::parse(text) {
            Ok(entries) => entries,
            Err((line, reason)) => {
                p.problem(Some(line), None, reason);
                return Err(ConfigError { problems: p.problems });
            }
        };

        // Last occurrence wins, as in Java; repeated keys are pointed out.
        let mut all: HashMap<String, Value> = HashMap::new();
        for e in &entries {
            if let Some(old) = all.insert(e.key.clone(), Value { value: e.value.clone(), line: e.line }) {
                let reason = format!("set again (line {} is overridden)", old.line);
                p.warn(e.line, &e.key, &reason);
            }
        }

        // Config providers (`${file:...}`, `${env:...}`, `${dir:...}`) resolve before anything
        // reads a value, as MM2 transforms its configuration.
        let (providers, provider_problems) = providers::Providers::declare(|k| all.get(k).map(|v| v.value.clone()));
        for (key, reason) in provider_problems {
            let line = all.get(&key).or_else(|| all.get("config.providers")).map(|v| v.line);
            p.problem(line, Some(&key), reason);
        }
        for (key, v) in all.iter_mut() {
            if providers::is_provider_key(key) || !v.value.contains("${") {
                continue;
            }
            match providers.resolve(&v.value) {
                Ok(resolved) => v.value = resolved,
                Err(reason) => p.problem(Some(v.line), Some(key), reason),
            }
        }

        let Some(clusters_value) = all.get("clusters").cloned() else {
            p.problem(None, Some("clusters"), "missing: list the cluster aliases, e.g. `clusters = a, b`");
            return Err(ConfigError { problems: p.problems });
        };
        let mut aliases: Vec<String> = Vec::new();
        for alias in clusters_value.value.split(',').map(str::trim) {
            if alias.is_empty() || alias.contains('.') || alias.contains("->") || alias.contains(char::is_whitespace) {
                p.problem(Some(clusters_value.line), Some("clusters"),
                    format!("invalid cluster alias '{alias}' (non-empty, without '.', '->' or spaces)"));
            } else if alias.len() > MAX_ALIAS_LEN {
                p.problem(Some(clusters_value.line), Some("clusters"),
                    format!("cluster alias '{alias}' is {} bytes; at most {MAX_ALIAS_LEN} (aliases are part of topic names, which Kafka caps at 249)", alias.len()));
            } else if aliases.iter().any(|a| a == alias) {
                p.problem(Some(clusters_value.line), Some("clusters"), format!("cluster alias '{alias}' listed twice"));
            } else {
                aliases.push(alias.to_string());
            }
        }

        let mut globals: HashMap<String, Value> = HashMap::new();
        let mut flow_keys: HashMap<(String, String), HashMap<String, Value>> = HashMap::new();
        let mut clusters: BTreeMap<String, ClusterClient> =
            aliases.iter().map(|a| (a.clone(), ClusterClient::new(a.clone(), String::new()))).collect();
        let mut bootstrap_lines: HashMap<String, usize> = HashMap::new();
        // Top-level `security.protocol`, `ssl.*` and `sasl.*`: MM2 applies them to every
        // cluster that does not set the same key itself.
        let mut inherited: Vec<(String, Value)> = Vec::new();

        let mut sorted: Vec<(&String, &Value)> = all.iter().collect();
        sorted.sort_by_key(|(_, v)| v.line);
        for (key, v) in sorted {
            if key == "clusters" || providers::is_provider_key(key) {
                continue;
            }
            if is_inherited_client_key(key) {
                inherited.push((key.clone(), v.clone()));
                continue;
            }
            if let Some((pair, rest)) = split_flow_key(key) {
                let (src, tgt) = pair;
                let mut ok = true;
                for alias in [src, tgt] {
                    if !aliases.iter().any(|a| a == alias) {
                        p.problem(Some(v.line), Some(key), format!("unknown cluster alias '{alias}' (clusters = {})", aliases.join(", ")));
                        ok = false;
                    }
                }
                if ok && src == tgt {
                    p.problem(Some(v.line), Some(key), format!("a flow needs two different clusters, got '{src}->{tgt}'"));
                    ok = false;
                }
                if !ok {
                    continue;
                }
                classify_connector_key(&mut p, key, rest, v, flow_keys.entry((src.into(), tgt.into())).or_default());
                continue;
            }
            let connector_key = FLOW_KEYS.contains(&key.as_str()) || CONNECT_FRAMEWORK_KEYS.contains(&key.as_str()) || PLUGGABLE_CLASS_KEYS.iter().any(|(k, _)| k == key);
            if connector_key {
                classify_connector_key(&mut p, key, key, v, &mut globals);
                continue;
            }
            let (first, rest) = key.split_once('.').unwrap_or((key.as_str(), ""));
            if let Some(cluster) = clusters.get_mut(first) {
                cluster_property(&mut p, cluster, key, rest, v, &mut bootstrap_lines);
                continue;
            }
            if key.ends_with(".bootstrap.servers") {
                p.problem(Some(v.line), Some(key), format!("unknown cluster alias '{first}' (clusters = {})", aliases.join(", ")));
                continue;
            }
            p.warn(v.line, key, "unknown key, ignored");
        }

        for (key, v) in &inherited {
            let Some(props) = client_property(&mut p, key, key, v) else { continue };
            for cluster in clusters.values_mut() {
                if !cluster.sets_common(key) {
                    cluster.common.extend(props.iter().cloned());
                }
            }
        }

        let mut flows = Vec::new();
        for src in &aliases {
            for tgt in &aliases {
                if src == tgt {
                    continue;
                }
                let scoped = flow_keys.remove(&(src.clone(), tgt.clone())).unwrap_or_default();
                let look = Lookup { flow_name: format!("{src}->{tgt}"), flow: &scoped, globals: &globals };
                let enabled = look.parse(&mut p, "enabled", false, parse_bool);
                if !enabled {
                    continue;
                }
                flows.push(flow_config(&mut p, src, tgt, &look));
            }
        }

        if require_flow && flows.is_empty() && p.problems.is_empty() {
            p.problem(None, None, format!(
                "no replication flow is enabled: add e.g. `{}->{}.enabled = true`",
                aliases.first().map_or("a", String::as_str),
                aliases.get(1).map_or("b", String::as_str)));
        }
        for flow in &flows {
            for alias in [&flow.source, &flow.target] {
                if clusters[alias].bootstrap_servers.is_empty() && !bootstrap_lines.contains_key(alias) {
                    let reason = format!("flow {} needs `{alias}.bootstrap.servers`", flow.name());
                    if !p.problems.iter().any(|x| x.reason == reason) {
                        p.problem(Some(clusters_value.line), Some(&format!("{alias}.bootstrap.servers")), reason);
                    }
                }
            }
        }

        if !p.problems.is_empty() {
            return Err(ConfigError { problems: p.problems });
        }
        Ok(MirrorConfig {
            file: file.to_string(),
            clusters: aliases.iter().map(|a| clusters.remove(a).unwrap()).collect(),
            flows,
            warnings: p.warnings,
        })
    }

    /// Keeps only the flows whose target is one of `targets` (MM2's `--clusters`).
    pub fn select_targets(&mut self, targets: &[String]) -> Result<(), ConfigError> {
        let problems: Vec<ConfigProblem> = targets
            .iter()
            .filter(|t| !self.clusters.iter().any(|c| &c.alias == *t))
            .map(|t| ConfigProblem {
                file: self.file.clone(),
                line: None,
                key: Some("--clusters".into()),
                reason: format!("unknown cluster alias '{t}' (clusters = {})",
                    self.clusters.iter().map(|c| c.alias.as_str()).collect::<Vec<_>>().join(", ")),
            })
            .collect();
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        self.flows.retain(|f| targets.contains(&f.target));
        if self.flows.is_empty() {
            return Err(ConfigError { problems: vec![ConfigProblem {
                file: self.file.clone(), line: None, key: Some("--clusters".into()),
                reason: format!("no enabled flow targets {}", targets.join(", ")),
            }] });
        }
        Ok(())
    }

    pub fn cluster(&self, alias: &str) -> &ClusterClient {
        self.clusters.iter().find(|c| c.alias == alias).expect("flows only name validated aliases")
    }
}

/// `a->b.topics` -> ((a, b), "topics").
fn split_flow_key(key: &str) -> Option<((&str, &str), &str)> {
    let (src, rest) = key.split_once("->")?;
    let (tgt, rest) = rest.split_once('.')?;
    Some(((src, tgt), rest))
}

fn classify_connector_key(p: &mut Parser<'_>, key: &str, name: &str, v: &Value, into: &mut HashMap<String, Value>) {
    if let Some((_, default)) = PLUGGABLE_CLASS_KEYS.iter().find(|(k, _)| *k == name) {
        if v.value.trim() != *default {
            p.problem(Some(v.line), Some(key), format!(
                "custom class '{}' is Java code Ferry cannot run, and ignoring it would change what is replicated; express it with topics/groups lists and their .exclude, or remove this line (default: {default})",
                v.value.trim()));
        }
    } else if FLOW_KEYS.contains(&name) {
        into.insert(name.to_string(), v.clone());
    } else if name == "offset.lag.max" {
        p.warn(v.line, key, "not needed: Ferry translates offsets exactly, not to the last sync point; ignored");
    } else if CONNECT_FRAMEWORK_KEYS.contains(&name) {
        p.warn(v.line, key, "Kafka Connect framework setting, not needed by Ferry; ignored");
    } else {
        p.warn(v.line, key, "unknown key, ignored");
    }
}

fn cluster_property(
    p: &mut Parser<'_>,
    cluster: &mut ClusterClient,
    key: &str,
    rest: &str,
    v: &Value,
    bootstrap_lines: &mut HashMap<String, usize>,
) {
    if rest == "bootstrap.servers" {
        let servers: Vec<&str> = v.value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        let bad: Vec<&&str> = servers.iter().filter(|s| !is_host_port(s)).collect();
        if servers.is_empty() {
            p.problem(Some(v.line), Some(key), "empty; expected host:port[,host:port...]");
        } else if let Some(b) = bad.first() {
            p.problem(Some(v.line), Some(key), format!("'{b}' is not host:port"));
        } else {
            cluster.bootstrap_servers = servers.join(",");
            bootstrap_lines.insert(cluster.alias.clone(), v.line);
        }
        return;
    }
    let (role, bucket, prop) = match rest.split_once('.') {
        Some(("consumer", prop)) => (Some(ClientRole::Consumer), &mut cluster.consumer, prop),
        Some(("producer", prop)) => (Some(ClientRole::Producer), &mut cluster.producer, prop),
        Some(("admin", prop)) => (Some(ClientRole::Admin), &mut cluster.admin, prop),
        _ => (None, &mut cluster.common, rest),
    };
    if let Some(reason) = defeats_guarantee(role, prop, &v.value) {
        p.problem(Some(v.line), Some(key), reason);
        return;
    }
    if prop == "transactional.id" {
        // One id shared by every producer of every process would fence them against each other,
        // and would make the at-least-once producers transactional (they write outside
        // transactions): Ferry derives its own per flow and process run.
        p.warn(v.line, key, "ignored: Ferry sets its own transactional.id per flow and process run (exactly.once.support = enabled)");
        return;
    }
    if let Some(props) = client_property(p, key, prop, v) {
        if role.is_none() {
            cluster.set_common.push(prop.to_string());
        }
        bucket.extend(props);
    }
}

/// Client settings Ferry manages itself because its guarantees depend on them; `role` None
/// is a cluster-wide (`<alias>.<property>`) setting, which reaches every role.
fn defeats_guarantee(role: Option<ClientRole>, prop: &str, value: &str) -> Option<String> {
    let value = value.trim().to_ascii_lowercase();
    let consumer = matches!(role, None | Some(ClientRole::Consumer));
    let producer = matches!(role, None | Some(ClientRole::Producer));
    match prop {
        "auto.offset.reset" if consumer => Some(
            "Ferry sets its own: a partition without a stored position starts at the log start, and a position outside the log is detected and reported (a reset would skip or re-copy records silently); remove this line".into()),
        "isolation.level" if consumer && value == "read_uncommitted" => Some(
            "read_uncommitted would replicate records of aborted transactions; Ferry reads read_committed; remove this line".into()),
        "acks" if producer && value != "all" && value != "-1" => Some(format!(
            "acks={value} acknowledges records the target can still lose; Ferry writes with acks=all; remove this line")),
        "enable.idempotence" if producer && value == "false" => Some(
            "without idempotence a retried batch is written twice or out of order; Ferry keeps it enabled; remove this line".into()),
        _ => None,
    }
}

/// Validates one client property (`key` as written, `prop` as librdkafka names it) and
/// returns what to set: the property, or the credentials a JAAS config translates to.
fn client_property(p: &mut Parser<'_>, key: &str, prop: &str, v: &Value) -> Option<Vec<(String, String)>> {
    if prop == "sasl.jaas.config" {
        let props = ClusterClient::translate_jaas(&v.value);
        if props.is_none() {
            p.problem(Some(v.line), Some(key),
                "only PlainLoginModule and ScramLoginModule JAAS configs can be translated; set sasl.username/sasl.password (or librdkafka's sasl.* settings) instead");
        }
        return props;
    }
    match ClusterClient::check_property(prop, &v.value) {
        None => Some(vec![(prop.to_string(), v.value.clone())]),
        Some(problem) if problem.kind == PropertyProblemKind::Unknown => {
            p.warn(v.line, key, "not a librdkafka client property (Java-client-only?); ignored");
            None
        }
        Some(problem) => {
            let shown = if ferry_kafka::is_sensitive_key(prop) { "<redacted>".to_string() } else { v.value.clone() };
            p.problem(Some(v.line), Some(key), format!("invalid value '{shown}': {}", problem.reason));
            None
        }
    }
}

/// Top-level keys MM2 passes to every cluster's clients (its `CLIENT_CONFIG_DEF`: the
/// security protocol and the client SSL and SASL settings).
fn is_inherited_client_key(key: &str) -> bool {
    key == "security.protocol" || key.starts_with("ssl.") || key.starts_with("sasl.")
}

fn is_host_port(s: &str) -> bool {
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

struct Lookup<'a> {
    /// `a->b`
    flow_name: String,
    flow: &'a HashMap<String, Value>,
    globals: &'a HashMap<String, Value>,
}

impl Lookup<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.flow.get(key).or_else(|| self.globals.get(key))
    }

    /// The flow's value, else the global one, else `default`; a bad value is a problem.
    fn parse<T>(&self, p: &mut Parser<'_>, key: &str, default: T, parse: impl Fn(&str) -> Result<T, String>) -> T {
        match self.get(key) {
            None => default,
            Some(v) => match parse(v.value.trim()) {
                Ok(value) => value,
                Err(reason) => {
                    p.problem(Some(v.line), Some(&self.key_name(key)), reason);
                    default
                }
            },
        }
    }

    /// The key as written in the file: `a->b.topics` or `topics`.
    fn key_name(&self, key: &str) -> String {
        if self.flow.contains_key(key) { format!("{}.{key}", self.flow_name) } else { key.to_string() }
    }

    fn string(&self, keys: &[&str], default: &str) -> (String, Option<usize>) {
        keys.iter()
            .find_map(|k| self.get(k))
            .map_or((default.to_string(), None), |v| (v.value.clone(), Some(v.line)))
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, got '{s}'")),
    }
}

fn positive_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive whole number, got '{s}'")),
    }
}

fn replication_factor(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if n == -1 || n >= 1 => Ok(n),
        _ => Err(format!("expected a replication factor >= 1, or -1 for the broker default, got '{s}'")),
    }
}

/// `exactly.once.support` (MM2 3.5+, KIP-618): `enabled` makes the flow transactional;
/// `preparing` (a Connect worker's step towards `enabled`) has no meaning for Ferry and is
/// warned about; anything else is an error.
fn exactly_once(p: &mut Parser<'_>, look: &Lookup<'_>) -> bool {
    let enabled = look.parse(p, "exactly.once.support", false, |s| match s.to_ascii_lowercase().as_str() {
        "enabled" => Ok(true),
        "disabled" | "preparing" => Ok(false),
        other => Err(format!("expected enabled, preparing or disabled, got '{other}'")),
    });
    if let (value, Some(line)) = look.string(&["exactly.once.support"], "disabled") {
        if value.trim().eq_ignore_ascii_case("preparing") {
            let key = look.key_name("exactly.once.support");
            p.warn(line, &key, "`preparing` is a Kafka Connect worker's rolling-upgrade step and has no effect in Ferry: the flow replicates at least once; set `enabled` for exactly-once");
        }
    }
    enabled
}

fn flow_config(p: &mut Parser<'_>, src: &str, tgt: &str, look: &Lookup<'_>) -> FlowConfig {
    let mut regexes = |keys: &[&str], default: &str| -> (RegexList, Option<KeyAt>) {
        let (value, line) = look.string(keys, default);
        let key = keys.iter().find(|k| look.get(k).is_some()).map_or(keys[0].to_string(), |k| look.key_name(k));
        let list = RegexList::parse(&value).unwrap_or_else(|reason| {
            p.problem(line, Some(&key), reason);
            RegexList::parse("").unwrap()
        });
        (list, line.map(|line| KeyAt { key, line }))
    };
    let (topics, topics_at) = regexes(&["topics"], defaults::TOPICS);
    let (topics_exclude, topics_exclude_at) = regexes(&["topics.exclude", "topics.blacklist"], defaults::TOPICS_EXCLUDE);
    let (groups, groups_at) = regexes(&["groups"], defaults::GROUPS);
    let (groups_exclude, groups_exclude_at) = regexes(&["groups.exclude", "groups.blacklist"], defaults::GROUPS_EXCLUDE);
    let (config_properties_exclude, _) =
        regexes(&["config.properties.exclude", "config.properties.blacklist"], defaults::CONFIG_PROPERTIES_EXCLUDE);

    let kind = look.parse(p, "replication.policy.class", PolicyKind::Default, |s| {
        ReplicationPolicy::kind_from_class(s).ok_or_else(|| format!(
            "unsupported replication policy '{s}' (supported: org.apache.kafka.connect.mirror.DefaultReplicationPolicy, org.apache.kafka.connect.mirror.IdentityReplicationPolicy)"))
    });
    let separator = look.parse(p, "replication.policy.separator", ".".to_string(), |s| {
        if s.is_empty() { Err("the separator must not be empty".into()) } else { Ok(s.to_string()) }
    });
    let internal_separator_enabled =
        look.parse(p, "replication.policy.internal.topic.separator.enabled", true, parse_bool);
    let secs = |p: &mut Parser<'_>, key: &str, default: u64| Duration::from_secs(look.parse(p, key, default, positive_u64));

    FlowConfig {
        source: src.to_string(),
        target: tgt.to_string(),
        topics,
        topics_exclude,
        policy: ReplicationPolicy { kind, separator, internal_separator_enabled },
        refresh_topics_enabled: look.parse(p, "refresh.topics.enabled", true, parse_bool),
        refresh_topics_interval: secs(p, "refresh.topics.interval.seconds", defaults::REFRESH_TOPICS_INTERVAL_SECONDS),
        sync_topic_configs_enabled: look.parse(p, "sync.topic.configs.enabled", true, parse_bool),
        sync_topic_configs_interval: secs(p, "sync.topic.configs.interval.seconds", defaults::SYNC_TOPIC_CONFIGS_INTERVAL_SECONDS),
        sync_topic_acls_enabled: look.parse(p, "sync.topic.acls.enabled", true, parse_bool),
        sync_topic_acls_interval: secs(p, "sync.topic.acls.interval.seconds", defaults::SYNC_TOPIC_ACLS_INTERVAL_SECONDS),
        config_properties_exclude,
        replication_factor: look.parse(p, "replication.factor", defaults::REPLICATION_FACTOR, replication_factor),
        heartbeats_replication_factor: look.parse(p, "heartbeats.topic.replication.factor", defaults::HEARTBEATS_REPLICATION_FACTOR, replication_factor),
        emit_heartbeats_enabled: look.parse(p, "emit.heartbeats.enabled", true, parse_bool),
        emit_heartbeats_interval: secs(p, "emit.heartbeats.interval.seconds", defaults::EMIT_HEARTBEATS_INTERVAL_SECONDS),
        tasks_max: look.parse(p, "tasks.max", defaults::TASKS_MAX as u64, positive_u64) as usize,
        offset_flush_interval: Duration::from_millis(look.parse(p, "offset.flush.interval.ms", defaults::OFFSET_FLUSH_INTERVAL_MS, positive_u64)),
        groups,
        groups_exclude,
        refresh_groups_enabled: look.parse(p, "refresh.groups.enabled", true, parse_bool),
        refresh_groups_interval: secs(p, "refresh.groups.interval.seconds", defaults::REFRESH_GROUPS_INTERVAL_SECONDS),
        emit_checkpoints_enabled: look.parse(p, "emit.checkpoints.enabled", true, parse_bool),
        emit_checkpoints_interval: secs(p, "emit.checkpoints.interval.seconds", defaults::EMIT_CHECKPOINTS_INTERVAL_SECONDS),
        sync_group_offsets_enabled: look.parse(p, "sync.group.offsets.enabled", false, parse_bool),
        sync_group_offsets_interval: secs(p, "sync.group.offsets.interval.seconds", defaults::SYNC_GROUP_OFFSETS_INTERVAL_SECONDS),
        checkpoints_replication_factor: look.parse(p, "checkpoints.topic.replication.factor", defaults::INTERNAL_TOPIC_REPLICATION_FACTOR, replication_factor),
        offset_syncs_replication_factor: look.parse(p, "offset-syncs.topic.replication.factor", defaults::INTERNAL_TOPIC_REPLICATION_FACTOR, replication_factor),
        offset_syncs_location: look.parse(p, "offset-syncs.topic.location", OffsetSyncsLocation::Source, |s| match s.to_ascii_lowercase().as_str() {
            "source" => Ok(OffsetSyncsLocation::Source),
            "target" => Ok(OffsetSyncsLocation::Target),
            _ => Err(format!("expected source or target, got '{s}'")),
        }),
        emit_offset_syncs_enabled: look.parse(p, "emit.offset-syncs.enabled", true, parse_bool),
        exactly_once: exactly_once(p, look),
        list_sources: ListSources { topics: topics_at, topics_exclude: topics_exclude_at, groups: groups_at, groups_exclude: groups_exclude_at },
    }
}

#[cfg(test)]
mod tests;
