//! Offset tooling for `ferry ctl` (srm-control's `offsets` and MM2's `RemoteClusterUtils`):
//! read a group's latest checkpoints of a flow `from->to` from the `to` cluster and apply them
//! to the same group there. Failback is the same operation along the reverse flow: its
//! checkpoints translate positions on remote topics back to the origin topics.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ferry_kafka::{ClientRole, ClusterClient};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::checkpoint::upstream_topic_of;
use crate::config::FlowConfig;
use crate::offset_store::TopicTail;
use crate::positions::offsets_by_partition;
use crate::records::Checkpoint;
use crate::relay::now_ms;

/// One translated offset of a group, for the `to` cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslatedOffset {
    /// Topic on the `to` cluster.
    pub topic: String,
    pub partition: i32,
    /// Offset on the `to` cluster.
    pub offset: i64,
    /// The checkpointed topic and offset on the `from` cluster.
    pub source_topic: String,
    pub source_offset: i64,
    /// Age of the checkpoint in milliseconds (-1 if unknown).
    pub age_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error(transparent)]
    Kafka(#[from] ferry_kafka::Error),
    #[error("group '{group}' has {members} active member(s) on cluster '{cluster}' ({address}); stop its consumers there first, then run this again")]
    GroupActive { group: String, members: usize, cluster: String, address: String },
    #[error("no checkpoints of group '{group}' in {topic} on cluster '{cluster}' ({address}): is flow {flow} running with this group selected (groups / groups.exclude), and has the group committed offsets on '{source_alias}'?")]
    NoCheckpoints { group: String, topic: String, cluster: String, address: String, flow: String, source_alias: String },
}

/// The latest checkpoint of `group` per source partition, translated for the target cluster.
pub fn translated_offsets(flow: &FlowConfig, target: &ClusterClient, group: &str) -> Result<Vec<TranslatedOffset>, FailoverError> {
    let topic = flow.policy.checkpoints_topic(&flow.source);
    let mut latest: BTreeMap<(String, i32), (Checkpoint, i64)> = BTreeMap::new();
    TopicTail::open(target, &topic)?.catch_up(Duration::from_secs(60), |k, v, ts| {
        if let Some(c) = v.and_then(|v| Checkpoint::decode(k, v).ok()) {
            if c.group == group {
                latest.insert((c.topic.clone(), c.partition), (c, ts));
            }
        }
    })?;
    if latest.is_empty() {
        return Err(FailoverError::NoCheckpoints {
            group: group.to_string(),
            topic,
            cluster: target.alias.clone(),
            address: target.bootstrap_servers.clone(),
            flow: flow.name(),
            source_alias: flow.source.clone(),
        });
    }
    let now = now_ms();
    Ok(latest
        .into_values()
        .map(|(c, ts)| TranslatedOffset {
            source_topic: upstream_topic_of(&flow.policy, &flow.source, &flow.target, &c.topic),
            topic: c.topic,
            partition: c.partition,
            offset: c.downstream_offset,
            source_offset: c.upstream_offset,
            age_ms: if ts >= 0 { (now - ts).max(0) } else { -1 },
        })
        .collect())
}

/// What applying a translated offset did to a partition of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Committed { previous: Option<i64> },
    /// The group was already at or past the translated offset: left alone (never rewound).
    Kept { current: i64 },
}

/// The rule: commit a translated offset only where it moves the group forward (or the group
/// has no offset there).
pub fn plan(offsets: &[(String, i32, i64)], current: &HashMap<(String, i32), i64>) -> Vec<Applied> {
    offsets
        .iter()
        .map(|(t, p, o)| match current.get(&(t.clone(), *p)) {
            Some(&c) if c >= *o => Applied::Kept { current: c },
            previous => Applied::Committed { previous: previous.copied() },
        })
        .collect()
}

/// A client acting for `group` on `cluster`: reads and commits its offsets, never joins.
/// A consumer that only reads or commits a group's offsets (never joins, never fetches): its
/// failures come back as call results, so librdkafka's error events are not logged one by one.
pub(crate) type GroupClient = BaseConsumer<ferry_kafka::QuietContext>;

pub(crate) fn group_client(cluster: &ClusterClient, group: &str, client_id: &str) -> ferry_kafka::Result<GroupClient> {
    cluster
        .client_config_with_defaults(ClientRole::Consumer, &[("enable.auto.commit", "false")])
        .set("group.id", group)
        .set("client.id", client_id)
        .create_with_context(ferry_kafka::QuietContext)
        .map_err(|e| ferry_kafka::Error::new(cluster, format!("create client for group '{group}'"), e))
}

/// Commits `offsets` (topic, partition, offset) to the group of `consumer` on `cluster`:
/// refused while the group has active members there; never moves a partition back (see
/// [`plan`]). Returns what happened to each offset, in order.
pub(crate) fn apply_offsets(consumer: &GroupClient, cluster: &ClusterClient, group: &str, offsets: &[(String, i32, i64)]) -> Result<Vec<Applied>, FailoverError> {
    let err = |op: &str, e| ferry_kafka::Error::new(cluster, format!("{op} of group '{group}'"), e);
    let list = consumer.fetch_group_list(Some(group), Duration::from_secs(10)).map_err(|e| err("describe", e))?;
    if let Some(g) = list.groups().iter().find(|g| g.name() == group && !g.members().is_empty()) {
        return Err(FailoverError::GroupActive {
            group: group.to_string(),
            members: g.members().len(),
            cluster: cluster.alias.clone(),
            address: cluster.bootstrap_servers.clone(),
        });
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p, _) in offsets {
        tpl.add_partition(t, *p);
    }
    let current = offsets_by_partition(&ferry_kafka::committed_offsets(consumer, &tpl, Duration::from_secs(10)).map_err(|e| err("read offsets", e))?);
    let applied = plan(offsets, &current);
    let mut commit = TopicPartitionList::new();
    for ((t, p, o), a) in offsets.iter().zip(&applied) {
        if matches!(a, Applied::Committed { .. }) {
            commit.add_partition_offset(t, *p, Offset::Offset(*o)).map_err(|e| err("commit", e))?;
        }
    }
    if commit.count() > 0 {
        // A member that joined since the check makes Kafka reject this commit.
        consumer.commit(&commit, CommitMode::Sync).map_err(|e| err("commit offsets", e))?;
    }
    Ok(applied)
}

/// `ferry ctl failover|failback`: applies a group's translated offsets on `cluster`.
pub fn apply(cluster: &ClusterClient, group: &str, offsets: &[TranslatedOffset]) -> Result<Vec<(TranslatedOffset, Applied)>, FailoverError> {
    let consumer = group_client(cluster, group, "ferry-ctl")?;
    let triples: Vec<(String, i32, i64)> = offsets.iter().map(|o| (o.topic.clone(), o.partition, o.offset)).collect();
    let applied = apply_offsets(&consumer, cluster, group, &triples)?;
    Ok(offsets.iter().cloned().zip(applied).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_only_move_a_group_forward() {
        let offsets = vec![("a.t".to_string(), 0, 10), ("a.t".to_string(), 1, 10), ("a.t".to_string(), 2, 10), ("a.t".to_string(), 3, 10)];
        let current = HashMap::from([(("a.t".to_string(), 0), 12), (("a.t".to_string(), 1), 5), (("a.t".to_string(), 3), 10)]);
        assert_eq!(plan(&offsets, &current), vec![
            Applied::Kept { current: 12 },
            Applied::Committed { previous: Some(5) },
            Applied::Committed { previous: None },
            Applied::Kept { current: 10 },
        ]);
    }
}
