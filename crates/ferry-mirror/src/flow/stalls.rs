//! Says, once per stall, which cluster stopped moving and what waits: records in flight that
//! the target does not acknowledge, or source records that are not fetched; and which partitions
//! have records waiting and replicate none. Its own task, so a control task blocked on a stalled
//! cluster cannot hide the stall. librdkafka keeps retrying either way: this is for the operator.
//!
//! [`StallWatch`] decides from snapshots of the progress table (pure); [`watch_stalls`] takes
//! the snapshots, logs and counts.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_kafka::ClusterClient;
use metrics::{counter, gauge};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::progress::{ProgressTable, Stall, Watchdog};
use crate::telemetry::{self, kind};

/// How long a partition may have records waiting and replicate none before it is reported.
const PARTITION_STALL_AFTER: Duration = Duration::from_secs(30);
/// How long a whole cluster may stall before it is reported: before the group session (10 s)
/// expires over a stalled target, so the cause is named before the partitions are lost.
const CLUSTER_STALL_AFTER: Duration = Duration::from_secs(5);
/// Partitions named one by one per snapshot (the gauge counts them all).
const NAMED_PER_SNAPSHOT: usize = 10;

/// The progress table at one moment.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// Acknowledged and consumed records so far (the table's counters).
    pub(super) acknowledged: u64,
    pub(super) consumed: u64,
    pub(super) partitions: Vec<PartitionSnapshot>,
}

#[derive(Debug)]
pub(super) struct PartitionSnapshot {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) position: i64,
    pub(super) lag: i64,
    pub(super) inflight: u64,
    /// Stopped by a record the target refuses: it waits on no cluster.
    pub(super) failed: Option<String>,
}

#[derive(Debug, PartialEq)]
pub(super) enum Event {
    Target { stall: Stall, inflight: u64 },
    Source { stall: Stall, lag: i64 },
    /// `named`: said one by one (not while a whole cluster is stalled, whose cause is said).
    Partition { topic: Arc<str>, partition: i32, stall: Stall, position: i64, lag: i64, failed: Option<String>, named: bool },
}

#[derive(Default)]
pub(super) struct StallWatch {
    target: Watchdog,
    source: Watchdog,
    partitions: HashMap<(Arc<str>, i32), Watchdog>,
}

impl StallWatch {
    pub(super) fn observe(&mut self, s: &Snapshot, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let inflight: u64 = s.partitions.iter().map(|p| p.inflight).sum();
        let lag: i64 = s.partitions.iter().filter(|p| p.failed.is_none()).map(|p| p.lag).sum();
        if let Some(stall) = self.target.observe(s.acknowledged, inflight > 0, now, CLUSTER_STALL_AFTER) {
            events.push(Event::Target { stall, inflight });
        }
        if let Some(stall) = self.source.observe(s.consumed, lag > 0 && inflight == 0, now, CLUSTER_STALL_AFTER) {
            events.push(Event::Source { stall, lag });
        }
        let cluster_stalled = self.target.stalled() || self.source.stalled();
        let mut seen = HashSet::new();
        let mut named = 0;
        for p in &s.partitions {
            let key = (p.topic.clone(), p.partition);
            let watch = self.partitions.entry(key.clone()).or_default();
            if let Some(stall) = watch.observe(p.position as u64, p.lag > 0, now, PARTITION_STALL_AFTER) {
                let say = matches!(stall, Stall::Started(_)) && !cluster_stalled && named < NAMED_PER_SNAPSHOT;
                named += usize::from(say);
                events.push(Event::Partition {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    stall,
                    position: p.position,
                    lag: p.lag,
                    failed: p.failed.clone(),
                    named: say || matches!(stall, Stall::Ended(_)),
                });
            }
            seen.insert(key);
        }
        self.partitions.retain(|k, _| seen.contains(k));
        events
    }

    pub(super) fn stalled_partitions(&self) -> usize {
        self.partitions.values().filter(|w| w.stalled()).count()
    }
}

fn snapshot(table: &ProgressTable) -> Snapshot {
    Snapshot {
        acknowledged: table.acknowledged.load(Ordering::Relaxed),
        consumed: table.consumed.load(Ordering::Relaxed),
        partitions: table
            .all()
            .iter()
            .map(|p| {
                let p = p.lock().unwrap();
                PartitionSnapshot {
                    topic: p.source_topic.clone(),
                    partition: p.partition,
                    position: p.safe_position(),
                    lag: p.lag(),
                    inflight: p.inflight,
                    failed: p.failed.clone(),
                }
            })
            .collect(),
    }
}

pub(super) async fn watch_stalls(flow: String, table: Arc<ProgressTable>, source: ClusterClient, target: ClusterClient, cancel: CancellationToken) {
    let mut watch = StallWatch::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for event in watch.observe(&snapshot(&table), Instant::now()) {
            match event {
                Event::Target { stall: Stall::Started(d), inflight } => warn!(%flow, cluster = %target.alias, address = %target.bootstrap_servers, inflight, stalled = ?d,
                    "target cluster acknowledges nothing: records in flight wait (librdkafka retries; nothing is lost)"),
                Event::Target { stall: Stall::Ended(d), .. } => info!(%flow, cluster = %target.alias, stalled = ?d, "target cluster acknowledges again"),
                Event::Source { stall: Stall::Started(d), lag } => warn!(%flow, cluster = %source.alias, address = %source.bootstrap_servers, lag, stalled = ?d,
                    "source cluster delivers nothing while records wait (librdkafka retries)"),
                Event::Source { stall: Stall::Ended(d), .. } => info!(%flow, cluster = %source.alias, stalled = ?d, "source cluster delivers again"),
                Event::Partition { topic, partition, stall: Stall::Started(d), position, lag, failed, named } => {
                    counter!(telemetry::ERRORS, "flow" => flow.clone(), "kind" => kind::PARTITION_STALLED).increment(1);
                    if named {
                        warn!(%flow, %topic, partition, position, lag, stalled = ?d, failed = failed.as_deref().unwrap_or("-"),
                            "PARTITION STALLED: records wait on the source and none was replicated for this long");
                    }
                }
                Event::Partition { topic, partition, stall: Stall::Ended(d), .. } => info!(%flow, %topic, partition, stalled = ?d, "partition replicating again"),
            }
        }
        gauge!(telemetry::STALLED_PARTITIONS, "flow" => flow.clone()).set(watch.stalled_partitions() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(topic: &str, partition: i32, position: i64, lag: i64) -> PartitionSnapshot {
        PartitionSnapshot { topic: topic.into(), partition, position, lag, inflight: 0, failed: None }
    }

    fn partition_events(events: &[Event]) -> Vec<(i32, bool, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Partition { partition, stall, named, .. } => Some((*partition, matches!(stall, Stall::Started(_)), *named)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_partition_with_records_waiting_and_no_progress_is_named_once_and_counted() {
        let mut w = StallWatch::default();
        let t0 = Instant::now();
        // The source keeps delivering (the cluster is fine); partition 1 stopped at 40.
        let at = |consumed: u64, p0: i64| Snapshot { consumed, acknowledged: consumed, partitions: vec![part("t", 0, p0, 5), part("t", 1, 40, 9)] };
        assert!(w.observe(&at(1, 10), t0).is_empty());
        // No progress from here on (the first snapshot was the first move).
        assert!(partition_events(&w.observe(&at(2, 15), t0 + Duration::from_secs(1))).is_empty());
        assert!(partition_events(&w.observe(&at(3, 20), t0 + Duration::from_secs(20))).is_empty());
        let events = w.observe(&at(3, 30), t0 + Duration::from_secs(31));
        assert_eq!(partition_events(&events), vec![(1, true, true)]);
        assert_eq!(w.stalled_partitions(), 1);
        assert!(partition_events(&w.observe(&at(4, 40), t0 + Duration::from_secs(40))).is_empty(), "said once per stall");
        let moved = Snapshot { partitions: vec![part("t", 0, 50, 5), part("t", 1, 41, 8)], ..at(5, 50) };
        assert_eq!(partition_events(&w.observe(&moved, t0 + Duration::from_secs(41))), vec![(1, false, true)]);
        // The source is fine all along: no cluster was named.
        assert!(!w.source.stalled() && !w.target.stalled());
        assert_eq!(w.stalled_partitions(), 0);
    }

    #[test]
    fn while_a_whole_cluster_is_stalled_partitions_are_counted_not_named() {
        let mut w = StallWatch::default();
        let t0 = Instant::now();
        // Nothing consumed for a minute with records waiting: the source is named, not each partition.
        let s = Snapshot { partitions: (0..3).map(|p| part("t", p, 0, 5)).collect(), ..Snapshot::default() };
        w.observe(&s, t0);
        let events = w.observe(&s, t0 + Duration::from_secs(6));
        assert!(matches!(events[0], Event::Source { stall: Stall::Started(_), lag: 15 }), "{events:?}");
        let events = w.observe(&s, t0 + Duration::from_secs(31));
        assert_eq!(partition_events(&events), vec![(0, true, false), (1, true, false), (2, true, false)]);
        assert_eq!(w.stalled_partitions(), 3);
        // A partition that is gone (handed over) is forgotten.
        w.observe(&Snapshot { partitions: vec![part("t", 0, 0, 5)], ..Snapshot::default() }, t0 + Duration::from_secs(32));
        assert_eq!(w.stalled_partitions(), 1);
    }

    #[test]
    fn a_partition_without_lag_never_stalls() {
        let mut w = StallWatch::default();
        let t0 = Instant::now();
        let s = Snapshot { partitions: vec![part("t", 0, 7, 0)], ..Snapshot::default() };
        w.observe(&s, t0);
        assert!(w.observe(&s, t0 + Duration::from_secs(120)).is_empty());
    }
}
