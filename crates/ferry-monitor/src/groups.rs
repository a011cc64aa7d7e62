//! A consumer group's lag, read from a cluster: its committed offsets (ListConsumerGroupOffsets), each
//! partition's end offset, and for every partition with lag the timestamp of the record at the
//! committed offset (one consumer reads them all), so lag in seconds is exact ([`crate::lag`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_kafka::{Admin, ClientRole, ClusterClient, Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::lag::{self, LagSeconds};

/// One partition of a group, as read now.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// `None`: the group has committed nothing for the partition.
    pub committed: Option<i64>,
    pub end: i64,
    /// Records not yet consumed (`None` without a committed offset).
    pub lag: Option<i64>,
    /// `None` when the group committed nothing, or the record at its offset could not be read.
    #[serde(flatten)]
    pub lag_seconds: Option<LagSeconds>,
}

/// Record timestamps kept between polls: a record's timestamp never changes, so a group that
/// does not move costs no read. Cleared whole past this many.
const CACHED_STAMPS: usize = 200_000;

/// The clients one cluster's group reads share (made once, used every poll).
pub struct GroupReader {
    cluster: ClusterClient,
    admin: Admin,
    ends: BaseConsumer,
    /// Reads the records at committed offsets (assigned, never subscribed).
    records: BaseConsumer<ferry_kafka::QuietContext>,
    /// (topic, partition, offset) → the record's timestamp (None: no record there).
    stamps: Mutex<HashMap<(String, i32, i64), Option<i64>>>,
}

impl GroupReader {
    pub fn connect(cluster: &ClusterClient) -> Result<GroupReader> {
        let admin = Admin::connect(cluster)?;
        let ends: BaseConsumer = cluster.client_config(ClientRole::Consumer).create().map_err(|e| Error::new(cluster, "create a client", e))?;
        let records = ferry_kafka::log_reader(cluster, "ferry-monitor-records").map_err(|e| Error::new(cluster, "create a client", e))?;
        Ok(GroupReader { cluster: cluster.clone(), admin, ends, records, stamps: Mutex::new(HashMap::new()) })
    }

    /// The cluster's admin client.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The lag of `group` at `now_ms` (see [`GroupReader::lags`]).
    pub fn group_lag(&self, group: &str, assigned: &[(String, i32)], ends: &BTreeMap<(String, i32), i64>, now_ms: i64, within: Duration) -> Result<Vec<PartitionLag>> {
        let mut all = self.lags(&[(group.to_string(), assigned.to_vec())], ends, now_ms, within)?;
        match all.remove(group) {
            Some(Ok(lags)) => Ok(lags),
            Some(Err(reason)) => Err(Error::new(&self.cluster, format!("list the offsets of group '{group}'"), rdkafka::error::KafkaError::AdminOpCreation(reason))),
            None => Err(Error::new(&self.cluster, format!("list the offsets of group '{group}'"), rdkafka::error::KafkaError::AdminOp(rdkafka::types::RDKafkaErrorCode::OperationTimedOut))),
        }
    }

    /// The lag of every group (with the partitions its members are assigned) at `now_ms`: on
    /// every partition each has committed (ListConsumerGroupOffsets, every group's request in
    /// flight together; an empty group's partitions are found too) and on assigned ones it has not
    /// committed yet (`committed: None`). `ends`: end offsets read already this poll (one
    /// ListOffsets per broker); a partition missing there is asked on its own. The records at
    /// every lagging committed offset of every group are read together, once each (timestamps
    /// are kept between polls). A group whose offsets could not be read has its reason.
    #[allow(clippy::type_complexity)]
    pub fn lags(&self, groups: &[(String, Vec<(String, i32)>)], ends: &BTreeMap<(String, i32), i64>, now_ms: i64, within: Duration) -> Result<BTreeMap<String, std::result::Result<Vec<PartitionLag>, String>>> {
        let cluster = &self.cluster;
        let names: Vec<String> = groups.iter().map(|(g, _)| g.clone()).collect();
        let mut committed: HashMap<String, std::result::Result<BTreeMap<(String, i32), i64>, String>> = self
            .admin
            .many_group_offsets(&names)?
            .into_iter()
            .map(|(g, r)| (g, r.map(|offsets| offsets.into_iter().map(|(t, p, o)| ((t, p), o)).collect())))
            .collect();
        let mut out = BTreeMap::new();
        let end_of = |topic: &str, partition: i32| -> Result<i64> {
            match ends.get(&(topic.to_string(), partition)) {
                Some(&end) => Ok(end),
                None => Ok(ferry_kafka::watermarks(&self.ends, topic, partition, within).map_err(|err| Error::new(cluster, format!("read the end offset of {topic}[{partition}]"), err))?.1),
            }
        };
        for (group, assigned) in groups {
            let offsets = match committed.remove(group) {
                Some(Ok(o)) => o,
                Some(Err(reason)) => {
                    out.insert(group.clone(), Err(reason));
                    continue;
                }
                None => {
                    out.insert(group.clone(), Err(format!("no answer within {within:?}")));
                    continue;
                }
            };
            let mut partitions: Vec<(String, i32)> = offsets.keys().cloned().collect();
            partitions.extend(assigned.iter().filter(|k| !offsets.contains_key(*k)).cloned());
            partitions.sort();
            partitions.dedup();
            let mut lags = Vec::new();
            for (topic, partition) in partitions {
                let end = end_of(&topic, partition)?;
                let committed = offsets.get(&(topic.clone(), partition)).copied();
                lags.push(PartitionLag { topic, partition, committed, end, lag: committed.map(|c| (end - c).max(0)), lag_seconds: None });
            }
            out.insert(group.clone(), Ok(lags));
        }
        let lagging: Vec<(String, i32, i64)> = out
            .values()
            .flat_map(|r| r.iter().flatten())
            .filter_map(|p| p.committed.filter(|&c| c < p.end).map(|c| (p.topic.clone(), p.partition, c)))
            .collect();
        let stamps = self.timestamps(lagging, within);
        for p in out.values_mut().flat_map(|r| r.iter_mut().flatten()) {
            if let Some(c) = p.committed {
                p.lag_seconds = lag::exact(now_ms, c, p.end, stamps.get(&(p.topic.clone(), p.partition, c)).copied().flatten());
            }
        }
        Ok(out)
    }

    /// The timestamps of the records at `wanted` (deduplicated): from the cache, the rest read in
    /// rounds, each round one offset per partition, all partitions of a round at once.
    fn timestamps(&self, mut wanted: Vec<(String, i32, i64)>, within: Duration) -> HashMap<(String, i32, i64), Option<i64>> {
        wanted.sort();
        wanted.dedup();
        let mut cache = self.stamps.lock().unwrap();
        if cache.len() > CACHED_STAMPS {
            cache.clear();
        }
        let mut missing: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
        for (t, p, o) in &wanted {
            if !cache.contains_key(&(t.clone(), *p, *o)) {
                missing.entry((t.clone(), *p)).or_default().push(*o);
            }
        }
        let deadline = Instant::now() + within;
        for round in 0.. {
            let at: Vec<(String, i32, i64)> = missing.iter().filter_map(|((t, p), offsets)| offsets.get(round).map(|o| (t.clone(), *p, *o))).collect();
            if at.is_empty() || Instant::now() >= deadline {
                break;
            }
            for (key, stamp) in self.read_round(&at, deadline) {
                cache.insert(key, stamp);
            }
        }
        wanted.into_iter().filter_map(|k| cache.get(&k).map(|v| (k, *v))).collect()
    }

    /// One round: every partition of `at` assigned at its offset; what arrived by `deadline`.
    /// A record past the offset means none is there (compacted away, a control record).
    fn read_round(&self, at: &[(String, i32, i64)], deadline: Instant) -> Vec<((String, i32, i64), Option<i64>)> {
        let mut tpl = TopicPartitionList::new();
        let mut wanted: HashMap<(String, i32), i64> = HashMap::new();
        for (t, p, o) in at {
            if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_ok() {
                wanted.insert((t.clone(), *p), *o);
            }
        }
        let mut out = Vec::new();
        if self.records.assign(&tpl).is_err() {
            return out;
        }
        while !wanted.is_empty() && Instant::now() < deadline {
            if let Some(Ok(m)) = self.records.poll(Duration::from_millis(50)) {
                let key = (m.topic().to_string(), m.partition());
                if let Some(&o) = wanted.get(&key) {
                    if m.offset() >= o {
                        wanted.remove(&key);
                        let stamp = (m.offset() == o).then(|| m.timestamp().to_millis()).flatten();
                        out.push(((key.0, key.1, o), stamp));
                    }
                }
            }
        }
        let _ = self.records.unassign();
        out
    }
}

/// [`GroupReader::group_lag`] with clients made for the one call.
pub fn group_lag(cluster: &ClusterClient, group: &str, assigned: &[(String, i32)], now_ms: i64, within: Duration) -> Result<Vec<PartitionLag>> {
    GroupReader::connect(cluster)?.group_lag(group, assigned, &BTreeMap::new(), now_ms, within)
}
