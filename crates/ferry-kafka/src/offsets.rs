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
