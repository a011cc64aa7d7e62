//! Brokers and topics of a cluster from its metadata: each broker's partitions led, each
//! partition's leader, replicas and in-sync replicas, and the two flags an operator looks for
//! first: under-replicated (fewer in sync than replicas) and offline (no leader). The summary is
//! pure ([`summarize`]); [`read`] fetches the metadata and the end offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_kafka::{ClientRole, ClusterClient, Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BrokerView {
    pub id: i32,
    pub host: String,
    pub port: i32,
    /// Partitions this broker leads.
    pub partitions_led: usize,
    /// Partitions with a replica here that are under-replicated.
    pub under_replicated: usize,
    /// `broker.rack`, if set (DescribeCluster).
    pub rack: Option<String>,
    /// The broker the cluster names controller. On KRaft clusters brokers name one of
    /// themselves (KIP-919); the active KRaft controller is not visible to clients.
    pub controller: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ClusterTopicPartition)]
pub struct TopicPartitionView {
    pub partition: i32,
    /// -1: no leader (offline).
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub under_replicated: bool,
    pub offline: bool,
    /// The end offset (None when it could not be read).
    pub end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ClusterTopic)]
pub struct TopicView {
    pub topic: String,
    /// Kafka's own topics (`__consumer_offsets`, `__transaction_state`, …).
    pub internal: bool,
    pub partitions: Vec<TopicPartitionView>,
    pub under_replicated: usize,
    pub offline: usize,
    /// Sum of the partitions' end offsets (records written, retention aside).
    pub end_total: i64,
}

/// A partition as the metadata gives it: (id, leader, replicas, isr).
pub type RawPartition = (i32, i32, Vec<i32>, Vec<i32>);

/// Brokers and topics from metadata (`brokers`: id, host, port; `topics`: name and partitions)
/// and end offsets by (topic, partition).
pub fn summarize(brokers: &[(i32, String, i32)], topics: &[(String, Vec<RawPartition>)], ends: &BTreeMap<(String, i32), i64>) -> (Vec<BrokerView>, Vec<TopicView>) {
    let mut by_id: BTreeMap<i32, BrokerView> = brokers.iter().map(|(id, host, port)| (*id, BrokerView { id: *id, host: host.clone(), port: *port, partitions_led: 0, under_replicated: 0, rack: None, controller: false })).collect();
    let mut out = Vec::new();
    for (name, partitions) in topics {
        let mut views = Vec::new();
        for (id, leader, replicas, isr) in partitions {
            let offline = *leader < 0;
            let under_replicated = isr.len() < replicas.len();
            if let Some(b) = by_id.get_mut(leader) {
                b.partitions_led += 1;
            }
            if under_replicated {
                for r in replicas {
                    if let Some(b) = by_id.get_mut(r) {
                        b.under_replicated += 1;
                    }
                }
            }
            views.push(TopicPartitionView { partition: *id, leader: *leader, replicas: replicas.clone(), isr: isr.clone(), under_replicated, offline, end: ends.get(&(name.clone(), *id)).copied() });
        }
        views.sort_by_key(|p| p.partition);
        out.push(TopicView {
            topic: name.clone(),
            internal: name.starts_with("__"),
            under_replicated: views.iter().filter(|p| p.under_replicated).count(),
            offline: views.iter().filter(|p| p.offline).count(),
            end_total: views.iter().filter_map(|p| p.end).sum(),
            partitions: views,
        });
    }
    out.sort_by(|a, b| a.topic.cmp(&b.topic));
    (by_id.into_values().collect(), out)
}

/// Adds what DescribeCluster says (racks, the controller) to the brokers.
pub fn with_description(brokers: &mut [BrokerView], d: &ferry_kafka::ClusterDescription) {
    for b in brokers {
        b.rack = d.nodes.iter().find(|n| n.id == b.id).and_then(|n| n.rack.clone());
        b.controller = d.controller == Some(b.id);
    }
}

/// Reads the cluster's metadata and every partition's end offset (one ListOffsets per broker,
/// through `offsets_for_times` with "latest").
pub fn read(cluster: &ClusterClient, client: &BaseConsumer, within: Duration) -> Result<(Vec<BrokerView>, Vec<TopicView>)> {
    let md = client.fetch_metadata(None, within).map_err(|e| Error::new(cluster, "read metadata", e))?;
    let brokers: Vec<(i32, String, i32)> = md.brokers().iter().map(|b| (b.id(), b.host().to_string(), b.port())).collect();
    let topics: Vec<(String, Vec<RawPartition>)> = md
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().iter().map(|p| (p.id(), p.leader(), p.replicas().to_vec(), p.isr().to_vec())).collect()))
        .collect();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, ps) in &topics {
        for (id, leader, _, _) in ps {
            if *leader >= 0 {
                let _ = tpl.add_partition_offset(t, *id, rdkafka::Offset::End);
            }
        }
    }
    let mut ends = BTreeMap::new();
    if tpl.count() > 0 {
        let found = client.offsets_for_times(tpl, within).map_err(|e| Error::new(cluster, "read end offsets", e))?;
        for e in found.elements() {
            if let rdkafka::Offset::Offset(o) = e.offset() {
                ends.insert((e.topic().to_string(), e.partition()), o);
            }
        }
    }
    Ok(summarize(&brokers, &topics, &ends))
}

/// A client for [`read`] (made once per cluster).
pub fn client(cluster: &ClusterClient) -> Result<BaseConsumer> {
    cluster.client_config(ClientRole::Consumer).create().map_err(|e| Error::new(cluster, "create a client", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaders_and_flags_are_counted_per_broker_and_topic() {
        let brokers = vec![(1, "a".to_string(), 9092), (2, "b".to_string(), 9092), (3, "c".to_string(), 9092)];
        let topics = vec![
            ("orders".to_string(), vec![(1, 2, vec![2, 3], vec![2]), (0, 1, vec![1, 2], vec![1, 2]), (2, -1, vec![3], vec![])]),
            ("__consumer_offsets".to_string(), vec![(0, 1, vec![1], vec![1])]),
        ];
        let ends = BTreeMap::from([(("orders".to_string(), 0), 10), (("orders".to_string(), 1), 5)]);
        let (b, t) = summarize(&brokers, &topics, &ends);
        assert_eq!(b.iter().map(|b| (b.id, b.partitions_led, b.under_replicated)).collect::<Vec<_>>(), vec![(1, 2, 0), (2, 1, 1), (3, 0, 2)]);
        let mut b = b;
        let node = |id, rack: Option<&str>| ferry_kafka::ClusterNode { id, host: "h".into(), port: 1, rack: rack.map(String::from) };
        with_description(&mut b, &ferry_kafka::ClusterDescription { cluster_id: None, controller: Some(2), nodes: vec![node(1, Some("eu-1a")), node(2, None)] });
        assert_eq!(b.iter().map(|b| (b.rack.as_deref(), b.controller)).collect::<Vec<_>>(), vec![(Some("eu-1a"), false), (None, true), (None, false)]);
        assert_eq!(t[0].topic, "__consumer_offsets");
        assert!(t[0].internal);
        let orders = &t[1];
        assert_eq!((orders.under_replicated, orders.offline, orders.end_total), (2, 1, 15), "{orders:?}");
        assert_eq!(orders.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(), vec![0, 1, 2], "sorted by partition");
        assert_eq!((orders.partitions[2].offline, orders.partitions[2].end), (true, None));
    }
}
