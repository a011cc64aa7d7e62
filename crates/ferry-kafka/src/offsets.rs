//! Offset reads that ride out what Kafka answers while a cluster settles: a group coordinator
//! that is moving or loading, and partitions a client has not loaded the metadata of yet.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use crate::coordinator_moving;

/// A group's committed offsets of `partitions` (OffsetFetch), asked again while the coordinator
/// is moving ([`coordinator_moving`]) until `within` has passed.
pub fn committed_offsets<C: ConsumerContext>(consumer: &BaseConsumer<C>, partitions: &TopicPartitionList, within: Duration) -> KafkaResult<TopicPartitionList> {
    let deadline = Instant::now() + within;
    loop {
        match consumer.committed_offsets(partitions.clone(), within) {
            Err(e) if coordinator_moving(&e) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => return other,
        }
    }
}

/// A partition's (log start, high watermark). A partition this client has no metadata for yet
/// (a topic grown or created since the client loaded it: librdkafka refreshes only topics it
/// consumes or produces, and refuses the others locally with UnknownPartition) is loaded and
/// asked again until `within` has passed.
pub fn watermarks<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32, within: Duration) -> KafkaResult<(i64, i64)> {
    let deadline = Instant::now() + within;
    loop {
        match consumer.fetch_watermarks(topic, partition, within) {
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition) && Instant::now() < deadline => {
                let _ = consumer.fetch_metadata(Some(topic), within);
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// One record's key, value and timestamp, for comparing two logs.
pub type RecordFingerprint = (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);

/// Reads the record at `offset` of `topic`/`partition` with a short-lived consumer (isolation
/// read_uncommitted: it reads what is in the log). `Ok(None)` when no record with that offset
/// arrived within `within` (it was compacted away, is a control record, or is beyond the end).
pub fn read_record(cluster: &crate::ClusterClient, topic: &str, partition: i32, offset: i64, within: Duration) -> KafkaResult<Option<RecordFingerprint>> {
    use rdkafka::Message;
    let consumer: BaseConsumer<crate::QuietContext> = cluster
        .client_config_with_defaults(crate::ClientRole::Consumer, &[("group.id", "ferry-record-check"), ("enable.auto.commit", "false")])
        .set("isolation.level", "read_uncommitted")
        .set("enable.partition.eof", "true")
        .create_with_context(crate::QuietContext)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.offset() == offset => {
                return Ok(Some((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec), m.timestamp().to_millis())));
            }
            Some(Ok(m)) if m.offset() > offset => return Ok(None),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(None),
            Some(Err(e)) if crate::classify(&e) == crate::ErrorKind::Fatal => return Err(e),
            _ => {}
        }
    }
    Ok(None)
}
