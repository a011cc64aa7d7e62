//! The state of a deployment as Kafka records it, read without the running mirrors: for
//! every flow, its lists in effect, the topics it replicates with per-partition lag (source end
//! offset minus the stored position), the age of its last heartbeat, and each group's newest
//! checkpoint. `ferry ctl status` prints it; it needs only read access to both clusters.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ferry_kafka::{Admin, ClientRole, ClusterClient};
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use crate::checkpoint::group_selected;
use crate::config::{FlowConfig, MirrorConfig};
use crate::control::{self, ControlLog, FlowLists, ListKind, ListName, CONTROL_TOPIC};
use crate::heartbeat::Heartbeat;
use crate::offset_store::TopicTail;
use crate::positions::PositionStore;
use crate::records::Checkpoint;
use crate::relay::now_ms;
use crate::report::{MetricsReport, METRICS_TOPIC};
use crate::replication_policy::HEARTBEATS_TOPIC;
use crate::topic_plan::TopicFilter;

/// A cluster as named in the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRef {
    pub alias: String,
    pub address: String,
}

impl From<&ClusterClient> for ClusterRef {
    fn from(c: &ClusterClient) -> Self {
        ClusterRef { alias: c.alias.clone(), address: c.bootstrap_servers.clone() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    pub flow: String,
    pub source: ClusterRef,
    pub target: ClusterRef,
    /// The regexes in effect (file + `ferry ctl`).
    pub topics: Vec<String>,
    pub topics_exclude: Vec<String>,
    pub groups: Vec<String>,
    pub groups_exclude: Vec<String>,
    pub replicated: Vec<TopicReport>,
    /// Total lag over the partitions with a stored position.
    pub lag: i64,
    /// Age of the newest heartbeat this flow wrote to the target; None if there is none.
    pub heartbeat_age_ms: Option<i64>,
    pub checkpoints: Vec<GroupReport>,
    /// What could not be read (cluster alias, address, reason). The rest is still reported.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicReport {
    pub topic: String,
    pub remote_topic: String,
    pub partitions: Vec<PartitionReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    /// Next source offset to replicate, as stored on the target; None: not replicated yet.
    pub position: Option<i64>,
    /// Source end offset (high watermark); None if it could not be read.
    pub end: Option<i64>,
    /// `end - position`, never negative; None when either is unknown.
    pub lag: Option<i64>,
    /// The `ferry mirror` process (`host:pid:start-ms`) replicating it, from the metrics
    /// reports of the last [`OWNER_WINDOW_MS`]; None: no process reported it.
    pub owner: Option<String>,
}

/// Reports older than this do not name an owner (processes report every 2 s).
pub const OWNER_WINDOW_MS: i64 = 10_000;

/// Who replicates which partition of `flow`: the newest report naming the partition, among
/// reports of the last [`OWNER_WINDOW_MS`] before `now_ms`. Keyed by (source topic, partition).
pub fn owners(reports: &[MetricsReport], flow: &str, now_ms: i64) -> HashMap<(String, i32), String> {
    let recent = reports.iter().filter(|r| r.flow == flow && r.at_ms >= now_ms - OWNER_WINDOW_MS && r.failing.is_none());
    crate::report::freshest(recent).into_iter().map(|((topic, partition), (r, _))| ((topic.to_string(), partition), r.process.clone())).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub group: String,
    /// Whether the lists in effect select the group (a deselected group's old checkpoints stay).
    pub selected: bool,
    pub partitions: usize,
    pub checkpoint_age_ms: Option<i64>,
}

/// Lag of one partition: records from the stored position to the end (never negative: a
/// broker that reports a low end offset must not show as negative lag).
pub fn lag(position: Option<i64>, end: Option<i64>) -> Option<i64> {
    Some((end? - position?).max(0))
}

/// Reads the whole control topic of `target` (blocking); a missing topic is an empty log.
pub fn read_control(target: &ClusterClient) -> ferry_kafka::Result<ControlLog> {
    control::read_log(&mut TopicTail::open(target, CONTROL_TOPIC)?)
}

/// Reads the state of `flow` (blocking). `control` is the target's control log, if it could be
/// read; failures to read parts are listed in `errors`.
pub fn flow_report(config: &MirrorConfig, flow: &FlowConfig, control: &ControlLog) -> FlowReport {
    let source = config.cluster(&flow.source);
    let target = config.cluster(&flow.target);
    let lists = FlowLists::effective(flow, &config.file, control);
    let mut report = FlowReport {
        flow: flow.name(),
        source: source.into(),
        target: target.into(),
        topics: lists.active(ListName::Topics, ListKind::Allow),
        topics_exclude: lists.active(ListName::Topics, ListKind::Exclude),
        groups: lists.active(ListName::Groups, ListKind::Allow),
        groups_exclude: lists.active(ListName::Groups, ListKind::Exclude),
        replicated: Vec::new(),
        lag: 0,
        heartbeat_age_ms: None,
        checkpoints: Vec::new(),
        errors: Vec::new(),
    };
    // An unreachable target is reported once, not once per read (each would wait its timeout).
    let target_up = match Admin::connect(target).and_then(|a| a.list_topics()) {
        Ok(_) => true,
        Err(e) => {
            report.errors.push(e.to_string());
            false
        }
    };
    match replicated(flow, &lists, source, target_up.then_some(target)) {
        Ok(topics) => report.replicated = topics,
        Err(e) => report.errors.push(e.to_string()),
    }
    report.lag = report.replicated.iter().flat_map(|t| &t.partitions).filter_map(|p| p.lag).sum();
    if !target_up {
        return report;
    }
    match newest_heartbeat(flow, target) {
        Ok(ts) => report.heartbeat_age_ms = ts.map(|ts| (now_ms() - ts).max(0)),
        Err(e) => report.errors.push(e.to_string()),
    }
    match checkpoints(flow, &lists, target) {
        Ok(groups) => report.checkpoints = groups,
        Err(e) => report.errors.push(e.to_string()),
    }
    report
}

/// The replicated topics with their source end offsets, and the stored positions if the
/// target can be read.
fn replicated(flow: &FlowConfig, lists: &FlowLists, source: &ClusterClient, target: Option<&ClusterClient>) -> ferry_kafka::Result<Vec<TopicReport>> {
    let mut filter = TopicFilter::for_flow(flow);
    filter.set_lists(lists);
    let mut topics: Vec<_> = Admin::connect(source)?.list_topics()?.into_iter().filter(|t| filter.should_replicate(&t.name)).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let keys: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| {
            let remote = flow.policy.remote_topic(&flow.source, &t.name);
            (0..t.partitions).map(move |p| (remote.clone(), p))
        })
        .collect();
    let positions = match target {
        Some(target) => PositionStore::connect(target, &flow.source)?.fetch(&keys)?,
        None => HashMap::new(),
    };
    let owners = match target {
        Some(target) => owners(&recent_reports(target)?, &flow.name(), now_ms()),
        None => HashMap::new(),
    };
    let watermarks: BaseConsumer = source
        .client_config(ClientRole::Consumer)
        .set("client.id", format!("ferry-{}-status", source.alias))
        .create()
        .map_err(|e| ferry_kafka::Error::new(source, "create status client", e))?;
    let mut replicated = Vec::new();
    for t in topics {
        let remote_topic = flow.policy.remote_topic(&flow.source, &t.name);
        let mut partitions = Vec::new();
        for partition in 0..t.partitions {
            let position = positions.get(&(remote_topic.clone(), partition)).copied();
            let end = ferry_kafka::watermarks(&watermarks, &t.name, partition, Duration::from_secs(10))
                .map_err(|e| ferry_kafka::Error::new(source, format!("read the end offset of {}[{partition}]", t.name), e))?
                .1;
            let owner = owners.get(&(t.name.clone(), partition)).cloned();
            partitions.push(PartitionReport { partition, position, end: Some(end), lag: lag(position, Some(end)), owner });
        }
        replicated.push(TopicReport { topic: t.name, remote_topic, partitions });
    }
    Ok(replicated)
}

/// The metrics reports of the last moments on `target` (every flow into it).
fn recent_reports(target: &ClusterClient) -> ferry_kafka::Result<Vec<MetricsReport>> {
    let mut reports = Vec::new();
    // Each process reports each flow every 2 s: 2000 records cover 10 s of 400 of them.
    TopicTail::open_last(target, METRICS_TOPIC, 2000)?.catch_up(Duration::from_secs(30), |_, v, _| {
        reports.extend(v.and_then(MetricsReport::decode));
    })?;
    Ok(reports)
}

/// Timestamp of the newest heartbeat `flow` wrote to its target.
fn newest_heartbeat(flow: &FlowConfig, target: &ClusterClient) -> ferry_kafka::Result<Option<i64>> {
    let mut newest = None;
    // Heartbeats of every flow into this target share the topic: the last 1000 cover
    // minutes of any realistic fan-in.
    TopicTail::open_last(target, HEARTBEATS_TOPIC, 1000)?.catch_up(Duration::from_secs(30), |k, v, _| {
        if let Some(hb) = v.and_then(|v| Heartbeat::decode(k, v).ok()) {
            if hb.source_cluster == flow.source && hb.target_cluster == flow.target {
                newest = newest.max(Some(hb.timestamp_ms));
            }
        }
    })?;
    Ok(newest)
}

/// Each group's checkpoints in `<source>.checkpoints.internal` on the target.
fn checkpoints(flow: &FlowConfig, lists: &FlowLists, target: &ClusterClient) -> ferry_kafka::Result<Vec<GroupReport>> {
    let mut by_group: BTreeMap<String, HashMap<(String, i32), i64>> = BTreeMap::new();
    TopicTail::open(target, &flow.policy.checkpoints_topic(&flow.source))?.catch_up(Duration::from_secs(60), |k, v, ts| {
        if let Some(c) = v.and_then(|v| Checkpoint::decode(k, v).ok()) {
            by_group.entry(c.group).or_default().insert((c.topic, c.partition), ts);
        }
    })?;
    let (allow, exclude) = (lists.regexes(ListName::Groups, ListKind::Allow), lists.regexes(ListName::Groups, ListKind::Exclude));
    let now = now_ms();
    Ok(by_group
        .into_iter()
        .map(|(group, partitions)| GroupReport {
            selected: group_selected(&allow, &exclude, &group),
            partitions: partitions.len(),
            checkpoint_age_ms: partitions.values().copied().filter(|&ts| ts >= 0).max().map(|ts| (now - ts).max(0)),
            group,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_never_negative_and_unknown_without_a_position() {
        assert_eq!(lag(Some(10), Some(25)), Some(15));
        assert_eq!(lag(Some(30), Some(25)), Some(0));
        assert_eq!(lag(None, Some(25)), None);
        assert_eq!(lag(Some(3), None), None);
    }

    #[test]
    fn the_owner_is_the_newest_recent_reporter_of_the_partition() {
        let report = |process: &str, at_ms: i64, partitions: &[i32], failing: bool| MetricsReport {
            failing: failing.then(|| "down".to_string()),
            partitions: partitions.iter().map(|&partition| crate::report::PartitionMetrics::new("t", "a.t", partition)).collect(),
            ..MetricsReport::new("a", "b", process, 0, at_ms)
        };
        let now = 100_000;
        let reports = vec![
            report("p1", now - 20_000, &[0, 1, 2, 3], false), // too old to count
            report("p1", now - 3_000, &[0, 1], false),
            report("p2", now - 4_000, &[1, 2], false), // p1 reported partition 1 later
            report("p3", now - 1_000, &[3], true),     // a failing flow owns nothing
            MetricsReport { flow: "b->a".into(), ..report("p4", now, &[0], false) },
        ];
        let owners = owners(&reports, "a->b", now);
        assert_eq!(owners.get(&("t".into(), 0)).map(String::as_str), Some("p1"));
        assert_eq!(owners.get(&("t".into(), 1)).map(String::as_str), Some("p1"));
        assert_eq!(owners.get(&("t".into(), 2)).map(String::as_str), Some("p2"));
        assert_eq!(owners.get(&("t".into(), 3)), None);
        assert_eq!(owners.len(), 3);
    }
}

/// Where a partition resumes when the flow starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResumePoint {
    pub topic: String,
    pub partition: i32,
    pub position: i64,
    /// `ferry` (its stored position), `mirrormaker2` (after MM2's last copied record, checked on
    /// the target), `mirrormaker2-unverified`, or `log-start` (never replicated).
    pub from: &'static str,
}

/// Where every partition of `flow` would resume (blocking; reads both clusters, writes
/// nothing). What `ferry mirror --check` prints.
pub fn resume_points(config: &MirrorConfig, flow: &FlowConfig) -> ferry_kafka::Result<Vec<ResumePoint>> {
    let source = config.cluster(&flow.source);
    let target = config.cluster(&flow.target);
    let target_topics: Vec<String> = Admin::connect(target)?.list_topics()?.into_iter().map(|t| t.name).collect();
    let control = if target_topics.iter().any(|t| t == CONTROL_TOPIC) { read_control(target)? } else { ControlLog::default() };
    let lists = FlowLists::effective(flow, &config.file, &control);
    let replicated = replicated(flow, &lists, source, Some(target))?;
    let mm2 = crate::mm2_offsets::read(target, &flow.source, &target_topics)?;
    let starts: BaseConsumer = source
        .client_config(ClientRole::Consumer)
        .create()
        .map_err(|e| ferry_kafka::Error::new(source, "create status client", e))?;
    let mut out = Vec::new();
    for t in &replicated {
        for p in &t.partitions {
            let point = match (p.position, mm2.as_ref().and_then(|m| m.next(&t.topic, p.partition))) {
                (Some(position), _) => ResumePoint { topic: t.topic.clone(), partition: p.partition, position, from: "ferry" },
                (None, Some(next)) => {
                    let takeover = crate::mm2_offsets::takeover(source, target, &t.topic, p.partition, &t.remote_topic, next);
                    let from = if takeover.how == crate::mm2_offsets::TakeoverCheck::Unverified { "mirrormaker2-unverified" } else { "mirrormaker2" };
                    ResumePoint { topic: t.topic.clone(), partition: p.partition, position: takeover.position, from }
                }
                (None, None) => {
                    let (low, _) = ferry_kafka::watermarks(&starts, &t.topic, p.partition, Duration::from_secs(10))
                        .map_err(|e| ferry_kafka::Error::new(source, format!("read the log start of {}[{}]", t.topic, p.partition), e))?;
                    ResumePoint { topic: t.topic.clone(), partition: p.partition, position: low, from: "log-start" }
                }
            };
            out.push(point);
        }
    }
    Ok(out)
}
