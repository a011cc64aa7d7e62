//! Offset reads that ride out what Kafka answers while a cluster settles: a group coordinator
//! that is moving or loading, and partitions a client has not loaded the metadata of yet.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use crate::{coordinator_moving, leadership_moving};

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
/// asked again until `within` has passed; so is one whose leadership is moving
/// ([`leadership_moving`]: a broker fenced after a pause answers NotLeaderForPartition until it
/// registers again).
pub fn watermarks<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32, within: Duration) -> KafkaResult<(i64, i64)> {
    let deadline = Instant::now() + within;
    loop {
        match consumer.fetch_watermarks(topic, partition, within) {
            Err(e) if (e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition) || leadership_moving(&e)) && Instant::now() < deadline => {
                let _ = consumer.fetch_metadata(Some(topic), within);
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// One record's key, value and create time (None for a log-append time, which a copy does not
/// share with its original), for comparing two logs with [`same_record`].
pub type RecordFingerprint = (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);

/// Whether two records are the same one: key and value equal, and create times equal where
/// both logs keep them.
pub fn same_record(a: &RecordFingerprint, b: &RecordFingerprint) -> bool {
    a.0 == b.0 && a.1 == b.1 && (a.2.is_none() || b.2.is_none() || a.2 == b.2)
}

fn fingerprint<M: rdkafka::Message>(m: &M) -> RecordFingerprint {
    let created = match m.timestamp() {
        rdkafka::Timestamp::CreateTime(t) => Some(t),
        _ => None,
    };
    (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec), created)
}

/// A consumer that reads logs as they are (isolation read_uncommitted, no commits), for the
/// checks that compare records or read watermarks; `group` is never joined.
pub fn log_reader(cluster: &crate::ClusterClient, group: &str) -> KafkaResult<BaseConsumer<crate::QuietContext>> {
    log_reader_config(cluster, group).create_with_context(crate::QuietContext)
}

fn log_reader_config(cluster: &crate::ClusterClient, group: &str) -> rdkafka::ClientConfig {
    let mut config = cluster.client_config_with_defaults(crate::ClientRole::Consumer, &[("group.id", group), ("enable.auto.commit", "false")]);
    config.set("isolation.level", "read_uncommitted");
    config
}

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
        let consumer: BaseConsumer<crate::QuietContext> = log_reader_config(cluster, "ferry-record-scan")
            // The scan ends at the log end: it needs to be told where that is.
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
                    return Some((m.offset(), fingerprint(&m)));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => self.done = true,
                Some(Err(e)) if crate::classify(&e) == crate::ErrorKind::Fatal => self.done = true,
                _ => {}
            }
        }
        None
    }
}

/// The records at `(topic, partition, offset)` of many partitions at once, with one consumer
/// (blocking). A partition whose record did not arrive within `within` (compacted away, a
/// control record, beyond the end) is absent from the answer.
pub fn read_records_at(cluster: &crate::ClusterClient, at: &[(String, i32, i64)], within: Duration) -> KafkaResult<std::collections::HashMap<(String, i32), RecordFingerprint>> {
    read_at(cluster, at, within, |m| fingerprint(m))
}

/// The timestamps (create or log-append time, as the topic keeps them) of the records at
/// `(topic, partition, offset)`, as [`read_records_at`] reads them.
pub fn record_timestamps(cluster: &crate::ClusterClient, at: &[(String, i32, i64)], within: Duration) -> KafkaResult<std::collections::HashMap<(String, i32), i64>> {
    let found = read_at(cluster, at, within, |m| rdkafka::Message::timestamp(m).to_millis())?;
    Ok(found.into_iter().filter_map(|(k, t)| t.map(|t| (k, t))).collect())
}

fn read_at<T>(cluster: &crate::ClusterClient, at: &[(String, i32, i64)], within: Duration, take: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T) -> KafkaResult<std::collections::HashMap<(String, i32), T>> {
    use rdkafka::Message;
    let mut out = std::collections::HashMap::new();
    if at.is_empty() {
        return Ok(out);
    }
    let consumer = log_reader(cluster, "ferry-record-check")?;
    let mut tpl = TopicPartitionList::new();
    let mut wanted = std::collections::HashMap::new();
    for (topic, partition, offset) in at {
        tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))?;
        wanted.insert((topic.clone(), *partition), *offset);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + within;
    while !wanted.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                match wanted.get(&key) {
                    Some(&o) if m.offset() == o => {
                        out.insert(key.clone(), take(&m));
                        wanted.remove(&key);
                    }
                    Some(&o) if m.offset() > o => {
                        wanted.remove(&key);
                    }
                    _ => {}
                }
            }
            // End of a partition (rdkafka names no topic): its record, if any, came first.
            Some(Err(e)) if crate::classify(&e) == crate::ErrorKind::Fatal => return Err(e),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_the_same_record_whatever_its_log_append_time() {
        let r = |k: &str, v: &str, t: Option<i64>| (Some(k.as_bytes().to_vec()), Some(v.as_bytes().to_vec()), t);
        assert!(same_record(&r("k", "v", Some(1)), &r("k", "v", Some(1))));
        assert!(same_record(&r("k", "v", Some(1)), &r("k", "v", None)), "a log-append-time copy");
        assert!(!same_record(&r("k", "v", Some(1)), &r("k", "v", Some(2))));
        assert!(!same_record(&r("k", "v", Some(1)), &r("k", "w", Some(1))));
        assert!(!same_record(&r("k", "v", None), &r("j", "v", None)));
    }
}
