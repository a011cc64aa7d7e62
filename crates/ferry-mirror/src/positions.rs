//! Durable replication positions, kept in the **target** cluster (as MM2 keeps its Connect
//! offsets there): committed offsets of the consumer group `ferry-mirror.<source>.internal`,
//! one per remote-topic partition, whose value is the next *source* offset to replicate.
//! Kafka's own `__consumer_offsets` stores, compacts and replicates them; reading them back
//! costs one OffsetFetch however long Ferry ran. Committed only after the target acknowledged
//! every record before that position, so a crash re-sends at most the records acknowledged
//! since the last commit plus those in flight.
//!
//! The same group shares the partitions among `ferry mirror` processes (`membership`): positions
//! are committed by the group member, with its generation. This store only reads them.

use std::collections::HashMap;
use std::time::Duration;

use ferry_kafka::{ClientRole, ClusterClient};
use rdkafka::consumer::BaseConsumer;
use rdkafka::{Offset, TopicPartitionList};

pub fn group_id(source_alias: &str) -> String {
    format!("ferry-mirror.{source_alias}.internal")
}

/// The partitions of a committed-offsets answer that hold an offset.
pub(crate) fn offsets_by_partition(committed: &TopicPartitionList) -> HashMap<(String, i32), i64> {
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

pub(crate) struct PositionStore {
    target: ClusterClient,
    consumer: BaseConsumer<ferry_kafka::QuietContext>,
}

impl PositionStore {
    pub(crate) fn connect(target: &ClusterClient, source_alias: &str) -> ferry_kafka::Result<Self> {
        let mut config = target.client_config(ClientRole::Consumer);
        config.set("group.id", group_id(source_alias));
        config.set("client.id", format!("ferry-{}-positions", target.alias));
        config.set("enable.auto.commit", "false");
        // Exactly-once mode commits positions in transactions: a fetch must wait for one still
        // pending (librdkafka asks for stable offsets, KIP-447, only under read_committed).
        config.set("isolation.level", "read_committed");
        let consumer = config
            .create_with_context(ferry_kafka::QuietContext)
            .map_err(|e| ferry_kafka::Error::new(target, "create position store client", e))?;
        Ok(PositionStore { target: target.clone(), consumer })
    }

    /// Stored positions of these remote-topic partitions (blocking). Absent = never stored.
    pub(crate) fn fetch(&self, partitions: &[(String, i32)]) -> ferry_kafka::Result<HashMap<(String, i32), i64>> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let committed = ferry_kafka::committed_offsets(&self.consumer, &tpl, Duration::from_secs(10))
            .map_err(|e| ferry_kafka::Error::new(&self.target, "fetch stored positions", e))?;
        Ok(offsets_by_partition(&committed))
    }
}
