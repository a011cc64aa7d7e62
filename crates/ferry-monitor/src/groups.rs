//! A consumer group's lag, read from a cluster: its committed offsets (OffsetFetch), each
//! partition's end offset, and for every partition with lag the timestamp of the record at the
//! committed offset (one consumer reads them all), so lag in seconds is exact ([`crate::lag`]).

use std::time::Duration;

use ferry_kafka::{ClientRole, ClusterClient, Error, Result};
use rdkafka::consumer::BaseConsumer;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::lag::{self, LagSeconds};

/// One partition of a group, as read now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// `None`: the group has committed nothing for the partition.
    pub committed: Option<i64>,
    pub end: i64,
    /// Records not yet consumed (`None` without a committed offset).
    pub lag: Option<i64>,
    /// `None` when the group committed nothing, or the record at its offset could not be read.
    pub lag_seconds: Option<LagSeconds>,
}

/// The lag of `group` on `partitions` at `now_ms`.
pub fn group_lag(cluster: &ClusterClient, group: &str, partitions: &[(String, i32)], now_ms: i64, within: Duration) -> Result<Vec<PartitionLag>> {
    // A client in the group's name that never joins it: OffsetFetch only.
    let client: BaseConsumer = cluster
        .client_config_with_defaults(ClientRole::Consumer, &[("enable.auto.commit", "false")])
        .set("group.id", group)
        .create()
        .map_err(|e| Error::new(cluster, "create a client", e))?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    let committed = ferry_kafka::committed_offsets(&client, &tpl, within).map_err(|e| Error::new(cluster, format!("read the committed offsets of group '{group}'"), e))?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let (topic, partition) = (e.topic().to_string(), e.partition());
        let end = ferry_kafka::watermarks(&client, &topic, partition, within).map_err(|err| Error::new(cluster, format!("read the end offset of {topic}[{partition}]"), err))?.1;
        let committed = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
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
