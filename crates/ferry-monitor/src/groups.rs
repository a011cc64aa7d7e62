//! A consumer group's lag, read from a cluster: its committed offsets (ListConsumerGroupOffsets), each
//! partition's end offset, and for every partition with lag the timestamp of the record at the
//! committed offset (one consumer reads them all), so lag in seconds is exact ([`crate::lag`]).

use std::time::Duration;

use std::collections::BTreeMap;

use ferry_kafka::{Admin, ClientRole, ClusterClient, Error, Result};
use rdkafka::consumer::BaseConsumer;
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

/// The clients one cluster's group reads share (made once, used every poll).
pub struct GroupReader {
    cluster: ClusterClient,
    admin: Admin,
    ends: BaseConsumer,
}

impl GroupReader {
    pub fn connect(cluster: &ClusterClient) -> Result<GroupReader> {
        let admin = Admin::connect(cluster)?;
        let ends: BaseConsumer = cluster.client_config(ClientRole::Consumer).create().map_err(|e| Error::new(cluster, "create a client", e))?;
        Ok(GroupReader { cluster: cluster.clone(), admin, ends })
    }

    /// The lag of `group` at `now_ms` on every partition it has committed (one
    /// ListConsumerGroupOffsets request: an empty group's partitions are found too) and on
    /// `assigned` ones it has not committed yet (those with `committed: None`).
    /// `ends`: end offsets read already this poll (for every partition of the cluster, in one
    /// ListOffsets per broker); a partition missing there is asked on its own.
    pub fn group_lag(&self, group: &str, assigned: &[(String, i32)], ends: &BTreeMap<(String, i32), i64>, now_ms: i64, within: Duration) -> Result<Vec<PartitionLag>> {
        let cluster = &self.cluster;
        let committed: BTreeMap<(String, i32), i64> = self.admin.group_offsets(group)?.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
        let mut partitions: Vec<(String, i32)> = committed.keys().cloned().collect();
        partitions.extend(assigned.iter().filter(|k| !committed.contains_key(*k)).cloned());
        partitions.sort();
        partitions.dedup();
        let mut out = Vec::new();
        for (topic, partition) in partitions {
            let end = match ends.get(&(topic.clone(), partition)) {
                Some(&end) => end,
                None => ferry_kafka::watermarks(&self.ends, &topic, partition, within).map_err(|err| Error::new(cluster, format!("read the end offset of {topic}[{partition}]"), err))?.1,
            };
            let committed = committed.get(&(topic.clone(), partition)).copied();
            out.push(PartitionLag { topic, partition, committed, end, lag: committed.map(|c| (end - c).max(0)), lag_seconds: None });
        }
        let lagging: Vec<(String, i32, i64)> = out.iter().filter_map(|p| p.committed.filter(|&c| c < p.end).map(|c| (p.topic.clone(), p.partition, c))).collect();
        let stamps = ferry_kafka::record_timestamps(cluster, &lagging, within).map_err(|e| Error::new(cluster, "read the records at the committed offsets", e))?;
        for p in &mut out {
            if let Some(c) = p.committed {
                p.lag_seconds = lag::exact(now_ms, c, p.end, stamps.get(&(p.topic.clone(), p.partition)).copied());
            }
        }
        Ok(out)
    }
}

/// [`GroupReader::group_lag`] with clients made for the one call.
pub fn group_lag(cluster: &ClusterClient, group: &str, assigned: &[(String, i32)], now_ms: i64, within: Duration) -> Result<Vec<PartitionLag>> {
    GroupReader::connect(cluster)?.group_lag(group, assigned, &BTreeMap::new(), now_ms, within)
}
