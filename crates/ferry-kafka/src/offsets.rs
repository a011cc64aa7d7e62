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
    let mut scan = RecordScan::open(cluster, topic, partition, offset, offset + 1, within)?;
    Ok(scan.next().filter(|(o, _)| *o == offset).map(|(_, r)| r))
}

/// The records of one partition from an offset up to an end offset, in order, one at a time
/// (an iterator over a consumer of its own). It ends at `end`, at the log end, or when nothing
/// arrives for `idle`.
pub struct RecordScan {
    consumer: BaseConsumer<crate::QuietContext>,
    end: i64,
    idle: Duration,
    done: bool,
}

impl RecordScan {
    pub fn open(cluster: &crate::ClusterClient, topic: &str, partition: i32, from: i64, end: i64, idle: Duration) -> KafkaResult<RecordScan> {
        let consumer: BaseConsumer<crate::QuietContext> = cluster
            .client_config_with_defaults(crate::ClientRole::Consumer, &[("group.id", "ferry-record-scan"), ("enable.auto.commit", "false")])
            .set("isolation.level", "read_uncommitted")
            .set("enable.partition.eof", "true")
            .create_with_context(crate::QuietContext)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(from))?;
        consumer.assign(&tpl)?;
        Ok(RecordScan { consumer, end, idle, done: from >= end })
    }
}

impl Iterator for RecordScan {
    type Item = (i64, RecordFingerprint);

    fn next(&mut self) -> Option<Self::Item> {
        use rdkafka::Message;
        let deadline = Instant::now() + self.idle;
        while !self.done && Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.offset() >= self.end => self.done = true,
                Some(Ok(m)) => {
                    return Some((m.offset(), (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec), m.timestamp().to_millis())));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => self.done = true,
                Some(Err(e)) if crate::classify(&e) == crate::ErrorKind::Fatal => self.done = true,
                _ => {}
            }
        }
        None
    }
}
