//! Consumer-group checkpoints of a flow `source->target` (MM2's MirrorCheckpointConnector).
//!
//! Every `emit.checkpoints.interval.seconds` the checkpointer reads the committed offsets of
//! the selected groups on the source and translates each exactly:
//! - a topic this flow replicates: forward, with the flow's live [`OffsetMap`]s, up to the
//!   partition's safe position;
//! - a remote topic of the target (`<target>.<topic>` on the source, written by the reverse
//!   flow `target->source`): backward, with the reverse flow's stored offset runs, so a group
//!   that failed over can fail back to the exact record.
//!
//! It writes MM2-format checkpoints to `<source>.checkpoints.internal` on the target (never
//! moving one backwards unless the group itself was rewound on the source) and, with
//! `sync.group.offsets.enabled`, commits the translated offsets to the same group on the
//! target while that group has no active members there and is not further ahead.
//!
//! Runs on its own thread: every call here is a blocking librdkafka call.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_kafka::{Admin, ClusterClient};
use metrics::{counter, gauge};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{FlowConfig, RegexList};
use crate::control::{FlowLists, ListKind, ListName};
use crate::failover::{apply_offsets, group_client, Applied, FailoverError, GroupClient};
use crate::offset_map::OffsetMap;
use crate::offset_store::{compacted_topic, RunLog, TopicTail};
use crate::progress::ProgressTable;
use crate::records::Checkpoint;
use crate::relay::{now_ms, DeliveryContext};
use crate::replication_policy::{PolicyKind, ReplicationPolicy};
use crate::telemetry::{self, kind};
use crate::FlowStatus;

/// The topic on the target a checkpoint's offset applies to, which is the topic a checkpoint
/// record names (MM2's `MirrorCheckpointTask.renameTopicPartition`): a topic that came from the
/// target goes back to its upstream name there, any other topic to its remote name.
pub fn downstream_topic(policy: &ReplicationPolicy, source: &str, target: &str, topic: &str) -> String {
    match (policy.topic_source(topic), policy.upstream_topic(topic)) {
        (Some(s), Some(upstream)) if s == target => upstream.to_string(),
        _ => policy.remote_topic(source, topic),
    }
}

/// The source topic of a checkpoint naming `downstream` (the inverse of [`downstream_topic`]):
/// a remote topic of the source goes back to its upstream name, any other topic came home from
/// the target and is the target's remote topic on the source.
pub fn upstream_topic_of(policy: &ReplicationPolicy, source: &str, target: &str, downstream: &str) -> String {
    match (policy.topic_source(downstream), policy.upstream_topic(downstream)) {
        (Some(s), Some(upstream)) if s == source => upstream.to_string(),
        _ => policy.remote_topic(target, downstream),
    }
}

/// Whether a group is checkpointed.
/// Commit metadata as a checkpoint can carry it: MM2's format holds at most 32,767 bytes, so
/// longer metadata (a broker may allow it) is cut at a character boundary. The offsets, which
/// failover uses, are never cut.
fn fitting_metadata(metadata: &str) -> String {
    let mut end = metadata.len().min(i16::MAX as usize);
    while !metadata.is_char_boundary(end) {
        end -= 1;
    }
    metadata[..end].to_string()
}

pub fn group_selected(groups: &RegexList, exclude: &RegexList, group: &str) -> bool {
    groups.is_match(group) && !exclude.is_match(group)
}

/// Whether a new checkpoint replaces the last one written for the same group and partition:
/// it must differ and must not move the downstream offset back, unless the group itself moved
/// back on the source (a deliberate reset).
pub fn should_emit(last: Option<&Checkpoint>, new: &Checkpoint) -> bool {
    match last {
        None => true,
        Some(l) if new.upstream_offset < l.upstream_offset => true,
        Some(l) => new.downstream_offset > l.downstream_offset || (new.downstream_offset == l.downstream_offset && new.upstream_offset != l.upstream_offset),
    }
}

type Key = (String, String, i32);

pub(crate) struct Checkpointer {
    pub(crate) flow: String,
    pub(crate) config: FlowConfig,
    pub(crate) source: ClusterClient,
    pub(crate) target: ClusterClient,
    pub(crate) table: Arc<ProgressTable>,
    /// The reverse flow's stored runs: (cluster, topic), if it can be located.
    pub(crate) reverse_runs: Option<(ClusterClient, String)>,
    pub(crate) producer: Arc<ThreadedProducer<DeliveryContext>>,
    pub(crate) status: Arc<Mutex<FlowStatus>>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) cancel: CancellationToken,
    /// The flow's live lists (file + `ferry ctl`); None until the flow has read them.
    pub(crate) lists: watch::Receiver<Option<Arc<FlowLists>>>,
}

struct State {
    source_lister: GroupClient,
    groups: BTreeSet<String>,
    source_clients: HashMap<String, GroupClient>,
    target_clients: HashMap<String, GroupClient>,
    emitted: HashMap<Key, (Checkpoint, Instant)>,
    reverse: Option<(TopicTail, RunLog)>,
    /// The reverse flow's offset maps by remote topic partition, kept between ticks.
    reverse_maps: Arc<HashMap<(String, i32), OffsetMap>>,
    topic: String,
    topic_ready: bool,
    reported: HashSet<String>,
    next_groups: Instant,
    next_sync: Instant,
    written: u64,
    /// `groups` and `groups.exclude` in effect.
    group_filter: Option<(RegexList, RegexList)>,
    lists: watch::Receiver<Option<Arc<FlowLists>>>,
    /// When each group's checkpoints were last brought up to date (Unix ms).
    checked: HashMap<String, i64>,
    /// Re-list groups once even with `refresh.groups.enabled = false` (the lists changed).
    refresh_forced: bool,
}

/// The cached client acting for `group` (created on first use).
fn cached<'m>(clients: &'m mut HashMap<String, GroupClient>, cluster: &ClusterClient, group: &str, purpose: &str) -> ferry_kafka::Result<&'m GroupClient> {
    if !clients.contains_key(group) {
        let client = group_client(cluster, group, &format!("ferry-{purpose}"))?;
        clients.insert(group.to_string(), client);
    }
    Ok(&clients[group])
}

impl Checkpointer {
    pub(crate) fn run(self) {
        let mut state = loop {
            match self.start() {
                Ok(state) => break state,
                Err(e) => {
                    warn!(flow = %self.flow, error = %e, "checkpointing cannot start; retrying in 5s");
                    if self.sleep(Duration::from_secs(5)) {
                        return;
                    }
                }
            }
        };
        info!(flow = %self.flow, topic = %state.topic, checkpoints = state.emitted.len(), reverse = state.reverse.is_some(), "checkpointing groups");
        loop {
            let started = Instant::now();
            self.tick(&mut state);
            let elapsed = started.elapsed();
            if self.sleep(self.config.emit_checkpoints_interval.saturating_sub(elapsed)) {
                return;
            }
        }
    }

    /// Sleeps up to `d`; true if cancelled.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.cancel.is_cancelled() {
                return true;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        self.cancel.is_cancelled()
    }

    fn start(&self) -> ferry_kafka::Result<State> {
        let topic = self.config.policy.checkpoints_topic(&self.config.source);
        let mut emitted = HashMap::new();
        let mut tail = TopicTail::open(&self.target, &topic)?;
        tail.catch_up(Duration::from_secs(60), |k, v, _| {
            if let Some(c) = v.and_then(|v| Checkpoint::decode(k, v).ok()) {
                emitted.insert((c.group.clone(), c.topic.clone(), c.partition), (c, Instant::now()));
            }
        })?;
        let reverse = match &self.reverse_runs {
            Some((cluster, runs_topic)) => {
                let mut log = RunLog::default();
                let mut tail = TopicTail::open(cluster, runs_topic)?;
                tail.catch_up(Duration::from_secs(60), |k, v, _| log.apply(k, v))?;
                Some((tail, log))
            }
            None => None,
        };
        Ok(State {
            source_lister: group_client(&self.source, "ferry-checkpoints-lister", &format!("ferry-{}-groups", self.source.alias))?,
            groups: BTreeSet::new(),
            source_clients: HashMap::new(),
            target_clients: HashMap::new(),
            reverse_maps: Arc::default(),
            emitted,
            reverse,
            topic,
            topic_ready: false,
            reported: HashSet::new(),
            next_groups: Instant::now(),
            next_sync: Instant::now(),
            written: 0,
            group_filter: None,
            lists: self.lists.clone(),
            refresh_forced: false,
            checked: HashMap::new(),
        })
    }

    fn report_once(&self, state: &mut State, key: String, f: impl FnOnce()) {
        if state.reported.insert(key) {
            f();
        }
    }

    fn tick(&self, state: &mut State) {
        if !state.topic_ready {
            let spec = compacted_topic(state.topic.clone(), self.config.checkpoints_replication_factor);
            let created = Admin::connect(&self.target).map(|admin| self.runtime.block_on(admin.create_topics(&[spec])));
            match created {
                Ok(Ok(())) => state.topic_ready = true,
                Ok(Err(e)) | Err(e) => {
                    warn!(flow = %self.flow, error = %e, "cannot create the checkpoints topic; retrying");
                    return;
                }
            }
        }
        if state.lists.has_changed().unwrap_or(false) || state.group_filter.is_none() {
            if let Some(l) = state.lists.borrow_and_update().clone() {
                state.group_filter = Some((l.regexes(ListName::Groups, ListKind::Allow), l.regexes(ListName::Groups, ListKind::Exclude)));
                // A list change applies now, not at the next refresh.
                state.next_groups = Instant::now();
                state.refresh_forced = true;
            }
        }
        let Some((allow, exclude)) = state.group_filter.clone() else {
            return; // the flow has not read its lists yet
        };
        if Instant::now() >= state.next_groups && (self.config.refresh_groups_enabled || state.groups.is_empty() || std::mem::take(&mut state.refresh_forced)) {
            match state.source_lister.fetch_group_list(None, Duration::from_secs(10)) {
                Ok(list) => {
                    state.next_groups = Instant::now() + self.config.refresh_groups_interval;
                    let groups: BTreeSet<String> = list
                        .groups()
                        .iter()
                        .map(|g| g.name().to_string())
                        .filter(|g| group_selected(&allow, &exclude, g))
                        .collect();
                    for g in groups.difference(&state.groups) {
                        info!(flow = %self.flow, group = %g, "checkpointing new consumer group");
                    }
                    state.source_clients.retain(|g, _| groups.contains(g));
                    state.target_clients.retain(|g, _| groups.contains(g));
                    state.groups = groups;
                    gauge!(telemetry::GROUPS, "flow" => self.flow.clone()).set(state.groups.len() as f64);
                }
                Err(e) => {
                    counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => kind::CHECKPOINT).increment(1);
                    self.report_once(state, format!("list {e}"), || warn!(flow = %self.flow, cluster = %self.source.alias, address = %self.source.bootstrap_servers, error = %e, "cannot list consumer groups; retrying"));
                    state.next_groups = Instant::now() + Duration::from_secs(5);
                }
            }
        }
        if let Some((tail, log)) = &mut state.reverse {
            tail.drain(|k, v, _| log.apply(k, v));
            // Only the partitions whose stored runs changed are rebuilt: a rebuild of every map
            // each tick was work in proportion to the whole history, every second.
            for (topic, partition) in log.take_changed() {
                let remote = self.config.policy.remote_topic(&self.config.target, &topic);
                let maps = Arc::make_mut(&mut state.reverse_maps);
                match log.map(&topic, partition) {
                    Some(map) => maps.insert((remote, partition), map),
                    None => maps.remove(&(remote, partition)),
                };
            }
        }

        // Which source partitions can be translated, and how.
        let forward: Vec<(String, i32)> = self.table.all().iter().map(|p| {
            let p = p.lock().unwrap();
            (p.source_topic.to_string(), p.partition)
        }).collect();
        let reverse_maps = state.reverse_maps.clone();
        if forward.is_empty() && reverse_maps.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in forward.iter().chain(reverse_maps.keys()) {
            tpl.add_partition(t, *p);
        }

        let groups: Vec<String> = state.groups.iter().cloned().collect();
        let mut to_sync: Vec<(String, Vec<(String, i32, i64)>)> = Vec::new();
        for group in groups {
            let consumer = match cached(&mut state.source_clients, &self.source, &group, &format!("{}-checkpoints", self.flow)) {
                Ok(c) => c,
                Err(e) => {
                    warn!(flow = %self.flow, %group, error = %e, "cannot read group offsets");
                    continue;
                }
            };
            let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => c,
                Err(e) => {
                    counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => kind::CHECKPOINT).increment(1);
                    self.report_once(state, format!("fetch {group} {e}"), || warn!(flow = %self.flow, %group, cluster = %self.source.alias, error = %e, "cannot read group offsets; retrying"));
                    continue;
                }
            };
            state.checked.insert(group.clone(), now_ms());
            let mut written = 0u64;
            for e in committed.elements() {
                let Offset::Offset(upstream) = e.offset() else { continue };
                let (topic, partition) = (e.topic().to_string(), e.partition());
                let downstream = match reverse_maps.get(&(topic.clone(), partition)) {
                    Some(map) => map.reverse(upstream),
                    None => self.table.by_source(&topic, partition).and_then(|p| {
                        let p = p.lock().unwrap();
                        // Exactly-once: only what is committed is there for a read_committed reader.
                        let replicated_to = if self.config.exactly_once { p.stored } else { p.safe_position() };
                        p.offset_map.translate(upstream, replicated_to)
                    }),
                };
                let Some(downstream_offset) = downstream else {
                    debug!(flow = %self.flow, %group, %topic, partition, upstream, "not translatable yet");
                    continue;
                };
                // Named by the target topic, as MM2 writes it (RemoteClusterUtils reads it so).
                let topic = downstream_topic(&self.config.policy, &self.config.source, &self.config.target, &topic);
                let checkpoint = Checkpoint { group: group.clone(), topic, partition, upstream_offset: upstream, downstream_offset, metadata: fitting_metadata(e.metadata()) };
                let key = (group.clone(), checkpoint.topic.clone(), partition);
                let last = state.emitted.get(&key).map(|(c, _)| c);
                if !should_emit(last, &checkpoint) {
                    continue;
                }
                if last.is_some_and(|l| checkpoint.upstream_offset < l.upstream_offset) {
                    warn!(flow = %self.flow, %group, topic = %checkpoint.topic, partition, upstream = checkpoint.upstream_offset,
                        "group was rewound on the source; its checkpoint follows it back");
                }
                let (k, v) = match (checkpoint.encode_key(), checkpoint.encode_value()) {
                    (Ok(k), Ok(v)) => (k, v),
                    (Err(e), _) | (_, Err(e)) => {
                        counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => kind::CHECKPOINT).increment(1);
                        self.report_once(state, format!("encode {group}"), || warn!(flow = %self.flow, %group, error = %e, "cannot write this group's checkpoints"));
                        continue;
                    }
                };
                let record = BaseRecord::with_opaque_to(&state.topic, 0usize).key(&k).payload(&v).timestamp(now_ms());
                match self.producer.send(record) {
                    Ok(()) => {
                        written += 1;
                        state.emitted.insert(key, (checkpoint, Instant::now()));
                    }
                    Err((e, _)) => debug!(flow = %self.flow, error = %e, "checkpoint not enqueued; retrying next tick"),
                }
            }
            if written > 0 {
                state.written += written;
                counter!(telemetry::CHECKPOINTS, "flow" => self.flow.clone(), "group" => group.clone()).increment(written);
            }
            if let Some(newest) = state.emitted.iter().filter(|((g, _, _), _)| *g == group).map(|(_, (_, at))| *at).max() {
                gauge!(telemetry::CHECKPOINT_AGE, "flow" => self.flow.clone(), "group" => group.clone()).set(newest.elapsed().as_secs_f64());
            }
            if self.config.sync_group_offsets_enabled {
                let translated: Vec<(String, i32, i64)> = state
                    .emitted
                    .iter()
                    .filter(|((g, _, _), _)| *g == group)
                    .map(|((_, t, p), (c, _))| (t.clone(), *p, c.downstream_offset))
                    .collect();
                to_sync.push((group, translated));
            }
        }
        {
            let mut status = self.status.lock().unwrap();
            status.groups = state.groups.len();
            status.checkpoints = state.written;
            status.checkpoints_checked_ms = state.checked.iter().filter(|(g, _)| state.groups.contains(*g)).map(|(g, t)| (g.clone(), *t)).collect();
        }
        if self.config.sync_group_offsets_enabled && Instant::now() >= state.next_sync {
            state.next_sync = Instant::now() + self.config.sync_group_offsets_interval;
            for (group, translated) in to_sync {
                self.sync_group(state, &group, &translated);
            }
        }
    }

    /// Commits translated offsets to `group` on the target while it has no active members
    /// there, never rewinding it.
    fn sync_group(&self, state: &mut State, group: &str, translated: &[(String, i32, i64)]) {
        if translated.is_empty() {
            return;
        }
        let consumer = match cached(&mut state.target_clients, &self.target, group, &format!("{}-group-sync", self.flow)) {
            Ok(c) => c,
            Err(e) => {
                warn!(flow = %self.flow, %group, error = %e, "cannot sync group offsets");
                return;
            }
        };
        match apply_offsets(consumer, &self.target, group, translated) {
            Ok(applied) => {
                state.reported.remove(&format!("active {group}"));
                let committed = applied.iter().filter(|a| matches!(a, Applied::Committed { .. })).count();
                if committed > 0 {
                    counter!(telemetry::GROUP_OFFSETS_SYNCED, "flow" => self.flow.clone(), "group" => group.to_string()).increment(committed as u64);
                    debug!(flow = %self.flow, %group, partitions = committed, "group offsets synced to the target");
                }
            }
            Err(FailoverError::GroupActive { members, .. }) => {
                self.report_once(state, format!("active {group}"), || info!(flow = %self.flow, %group, members,
                    "group is active on the target: its offsets there are left alone"));
            }
            Err(e) => {
                counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => kind::GROUP_SYNC).increment(1);
                self.report_once(state, format!("sync {group} {e}"), || warn!(flow = %self.flow, %group, error = %e, "cannot sync group offsets to the target"));
            }
        }
    }
}

/// Whether the policy lets names tell which topics came from the target (not identity).
pub(crate) fn names_carry_origin(policy: &ReplicationPolicy) -> bool {
    policy.kind != PolicyKind::Identity
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReplicationPolicy {
        ReplicationPolicy { kind: PolicyKind::Default, separator: ".".into(), internal_separator_enabled: true }
    }

    #[test]
    fn metadata_is_cut_to_what_mm2_can_hold_at_a_character_boundary() {
        assert_eq!(fitting_metadata("m"), "m");
        let cut = fitting_metadata(&"é".repeat(20_000)); // 2 bytes each
        assert_eq!(cut.len(), 32_766);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn downstream_topics_follow_mm2s_renaming() {
        let p = policy();
        assert_eq!(downstream_topic(&p, "a", "b", "orders"), "a.orders");
        assert_eq!(downstream_topic(&p, "a", "b", "b.orders"), "orders", "a topic that came from the target goes home");
        assert_eq!(downstream_topic(&p, "a", "b", "b.c.orders"), "c.orders", "one hop back, not to the original");
        assert_eq!(downstream_topic(&p, "a", "b", "c.orders"), "a.c.orders");
        for t in ["orders", "b.orders", "b.c.orders", "c.orders", "a.orders"] {
            let down = downstream_topic(&p, "a", "b", t);
            assert_eq!(upstream_topic_of(&p, "a", "b", &down), t, "round trip of {t} through {down}");
        }
    }

    #[test]
    fn checkpoints_never_move_back_unless_the_group_did() {
        let c = |up, down| Checkpoint { group: "g".into(), topic: "t".into(), partition: 0, upstream_offset: up, downstream_offset: down, metadata: String::new() };
        assert!(should_emit(None, &c(10, 10)));
        assert!(!should_emit(Some(&c(10, 10)), &c(10, 10)), "unchanged");
        assert!(should_emit(Some(&c(10, 10)), &c(12, 11)));
        assert!(should_emit(Some(&c(10, 10)), &c(12, 10)), "a gap: the upstream moved, the downstream did not");
        assert!(!should_emit(Some(&c(10, 10)), &c(12, 9)), "never backwards while the group moves forward");
        assert!(should_emit(Some(&c(10, 10)), &c(5, 5)), "the group was reset on the source");
    }

    #[test]
    fn ferry_internal_groups_are_not_checkpointed_by_default() {
        let groups = RegexList::parse(crate::config::defaults::GROUPS).unwrap();
        let exclude = RegexList::parse(crate::config::defaults::GROUPS_EXCLUDE).unwrap();
        assert!(group_selected(&groups, &exclude, "orders-app"));
        assert!(!group_selected(&groups, &exclude, "ferry-mirror.a.internal"));
        assert!(!group_selected(&groups, &exclude, "console-consumer-123"));
        assert!(!group_selected(&groups, &exclude, "__internal"));
    }
}
