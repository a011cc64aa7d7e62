//! Durable offset translation data of a flow `source->target`, on the cluster
//! `offset-syncs.topic.location` names (the source by default, as MM2):
//!
//! - `ferry-offset-runs.<target>.internal`: Ferry's exact [`OffsetRun`]s, one record per run
//!   (see [`RunRecord`]), compacted, so history is never lost to compaction and grows with gaps
//!   and restarts only. A start marker (key offset -1) records where replication of a fresh
//!   partition began.
//! - `mm2-offset-syncs.<target>.internal`: MM2-format offset syncs at the first and last record
//!   of every stored run, so MM2's Java tooling keeps working.
//!
//! Both are written *before* the positions that cover them are stored: after any crash the
//! stored history reaches at least the stored position.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ferry_kafka::{ClientRole, ClusterClient, NewTopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::warn;

use crate::offset_map::{OffsetMap, OffsetRun, Unsaved};
use crate::records::{OffsetSync, RunRecord};

/// A compacted single-partition internal topic.
pub(crate) fn compacted_topic(name: String, replication_factor: i32) -> NewTopicSpec {
    NewTopicSpec {
        name,
        partitions: 1,
        replication_factor,
        configs: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
    }
}

/// Key offset of the start marker record.
const START_MARKER: i64 = crate::offset_map::START_KEY;

/// Writes offset runs and MM2 offset syncs.
pub(crate) struct OffsetSyncWriter {
    cluster: ClusterClient,
    producer: FutureProducer,
    runs_topic: String,
    syncs_topic: Option<String>,
}

impl OffsetSyncWriter {
    pub(crate) fn connect(cluster: &ClusterClient, runs_topic: String, syncs_topic: Option<String>) -> ferry_kafka::Result<Self> {
        let producer = cluster
            .client_config_with_defaults(ClientRole::Producer, &[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "5")])
            .create()
            .map_err(|e| ferry_kafka::Error::new(cluster, "create offset-sync producer", e))?;
        Ok(OffsetSyncWriter { cluster: cluster.clone(), producer, runs_topic, syncs_topic })
    }

    pub(crate) fn cluster(&self) -> &ClusterClient {
        &self.cluster
    }

    /// Stores the unsaved part of each partition's map; returns once every record is
    /// acknowledged (or the first failure).
    pub(crate) async fn write(&self, items: &[(String, i32, Unsaved)]) -> ferry_kafka::Result<()> {
        let mut records: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
        let mut tombstones: Vec<Vec<u8>> = Vec::new();
        // Kafka caps topic names at 249 bytes, so encoding fails only on corrupt input; it then
        // fails the write (and is retried and reported) rather than storing part of it.
        let unencodable = |topic: &str, e: String| {
            ferry_kafka::Error::new(&self.cluster, format!("encode offset runs of '{topic}' ({e})"), rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::InvalidArgument))
        };
        for (topic, partition, unsaved) in items {
            for &target in &unsaved.dropped {
                tombstones.push(RunRecord::key(topic, *partition, target).map_err(|e| unencodable(topic, e))?);
            }
            let mut push = |to: &str, key: Result<Vec<u8>, String>, value: Result<Vec<u8>, String>| -> ferry_kafka::Result<()> {
                records.push((to.to_string(), key.map_err(|e| unencodable(topic, e))?, value.map_err(|e| unencodable(topic, e))?));
                Ok(())
            };
            if let Some(start) = unsaved.start {
                let marker = RunRecord { topic: topic.clone(), partition: *partition, run: OffsetRun::exact(start, START_MARKER, 0) };
                push(&self.runs_topic, marker.encode_key(), marker.encode_value())?;
            }
            for run in &unsaved.runs {
                let r = RunRecord { topic: topic.clone(), partition: *partition, run: *run };
                push(&self.runs_topic, r.encode_key(), r.encode_value())?;
                if let Some(syncs) = &self.syncs_topic {
                    let mut points = vec![(run.source, run.target)];
                    if run.len > 1 {
                        points.push((run.source_end() - 1, run.target_end() - 1));
                    }
                    for (upstream_offset, downstream_offset) in points {
                        let s = OffsetSync { topic: topic.clone(), partition: *partition, upstream_offset, downstream_offset };
                        push(syncs, s.encode_key(), s.encode_value())?;
                    }
                }
            }
        }
        // Deletions first: a run dropped and then written again (same first target offset,
        // shortened) must end with its new value.
        let records: Vec<OutRecord<'_>> = tombstones
            .iter()
            .map(|k| (self.runs_topic.as_str(), k.as_slice(), None))
            .chain(records.iter().map(|(t, k, v)| (t.as_str(), k.as_slice(), Some(v.as_slice()))))
            .collect();
        send_all(&self.producer, &self.cluster, &format!("write offset runs to {}", self.runs_topic), &records).await
    }
}

/// A record to send: topic, key, value (None: a tombstone).
pub(crate) type OutRecord<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

/// Enqueues every `(topic, key, value)` record (value None: a tombstone), then waits for each
/// acknowledgement; the first failure is returned, naming the cluster and `operation`.
pub(crate) async fn send_all(producer: &FutureProducer, cluster: &ClusterClient, operation: &str, records: &[OutRecord<'_>]) -> ferry_kafka::Result<()> {
    let deliveries: Vec<_> = records
        .iter()
        .map(|(topic, key, value)| {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).key(*key);
            if let Some(value) = value {
                record = record.payload(*value);
            }
            producer.send_result(record)
        })
        .collect();
    let failed = |e| ferry_kafka::Error::new(cluster, operation, e);
    for delivery in deliveries {
        match delivery {
            Err((e, _)) => return Err(failed(e)),
            Ok(future) => match future.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(failed(e)),
                Err(_) => return Err(failed(rdkafka::error::KafkaError::Canceled)),
            },
        }
    }
    Ok(())
}

/// Stored runs of every partition, as read back from `ferry-offset-runs.<target>.internal`.
#[derive(Debug, Default)]
pub struct RunLog {
    partitions: HashMap<(String, i32), PartitionRuns>,
    /// Partitions whose runs changed since the last [`RunLog::take_changed`].
    changed: std::collections::HashSet<(String, i32)>,
    /// Undecodable records seen (reported, never fatal).
    pub malformed: u64,
}

#[derive(Debug, Default)]
struct PartitionRuns {
    start: Option<i64>,
    /// By first target offset; a later record for the same run carries its grown length.
    runs: BTreeMap<i64, OffsetRun>,
}

impl RunLog {
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some(value) = value else {
            // A run deleted (aborted or pruned).
            match RunRecord::decode_key(key) {
                Ok((topic, partition, target)) => {
                    let key = (topic, partition);
                    if let Some(entry) = self.partitions.get_mut(&key) {
                        self.changed.insert(key);
                        if target == START_MARKER {
                            entry.start = None;
                        } else {
                            entry.runs.remove(&target);
                        }
                    }
                }
                Err(_) => self.malformed += 1,
            }
            return;
        };
        match RunRecord::decode(key, value) {
            Ok(r) => {
                let key = (r.topic, r.partition);
                self.changed.insert(key.clone());
                let entry = self.partitions.entry(key).or_default();
                if r.run.target == START_MARKER {
                    entry.start = Some(r.run.source);
                } else {
                    entry.runs.insert(r.run.target, r.run);
                }
            }
            Err(_) => self.malformed += 1,
        }
    }

    /// The offset map of a source partition, if any run or start marker is stored.
    pub fn map(&self, topic: &str, partition: i32) -> Option<OffsetMap> {
        let p = self.partitions.get(&(topic.to_string(), partition))?;
        Some(OffsetMap::from_runs(p.start, p.runs.values().copied()))
    }

    /// The partitions whose runs changed since the last call: a reader that keeps maps rebuilds
    /// only these, not the whole history.
    pub fn take_changed(&mut self) -> std::collections::HashSet<(String, i32)> {
        std::mem::take(&mut self.changed)
    }

    pub fn partitions(&self) -> impl Iterator<Item = &(String, i32)> {
        self.partitions.keys()
    }

    pub fn run_count(&self) -> usize {
        self.partitions.values().map(|p| p.runs.len()).sum()
    }
}

/// A consumer that reads a single-partition-or-more internal topic from its beginning, then
/// keeps following it.
pub struct TopicTail {
    cluster: ClusterClient,
    topic: String,
    consumer: BaseConsumer<ferry_kafka::QuietContext>,
    /// Where reading starts in each partition.
    start: Offset,
}

impl TopicTail {
    /// Assigns every partition of `topic` from the beginning (blocking). A missing topic is
    /// an empty one.
    pub fn open(cluster: &ClusterClient, topic: &str) -> ferry_kafka::Result<TopicTail> {
        Self::open_at(cluster, topic, Offset::Beginning)
    }

    /// Like [`TopicTail::open`], reading only the last `records` of each partition.
    pub fn open_last(cluster: &ClusterClient, topic: &str, records: i64) -> ferry_kafka::Result<TopicTail> {
        Self::open_at(cluster, topic, Offset::OffsetTail(records))
    }

    fn open_at(cluster: &ClusterClient, topic: &str, start: Offset) -> ferry_kafka::Result<TopicTail> {
        let consumer: BaseConsumer<ferry_kafka::QuietContext> = cluster
            .client_config_with_defaults(ClientRole::Consumer, &[("enable.auto.commit", "false"), ("fetch.wait.max.ms", crate::relay_defaults::FETCH_WAIT_MAX_MS)])
            .set("group.id", format!("ferry-reader-{}", std::process::id()))
            .set("enable.partition.eof", "false")
            .create_with_context(ferry_kafka::QuietContext)
            .map_err(|e| ferry_kafka::Error::new(cluster, format!("create reader of {topic}"), e))?;
        let tail = TopicTail { cluster: cluster.clone(), topic: topic.to_string(), consumer, start };
        tail.assign()?;
        Ok(tail)
    }

    fn partitions(&self) -> ferry_kafka::Result<i32> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .map_err(|e| ferry_kafka::Error::new(&self.cluster, format!("fetch metadata of {}", self.topic), e))?;
        Ok(metadata.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len() as i32))
    }

    fn assign(&self) -> ferry_kafka::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions()? {
            tpl.add_partition_offset(&self.topic, p, self.start)
                .map_err(|e| ferry_kafka::Error::new(&self.cluster, format!("read {}", self.topic), e))?;
        }
        self.consumer.assign(&tpl).map_err(|e| ferry_kafka::Error::new(&self.cluster, format!("read {}", self.topic), e))
    }

    /// Reads everything written before this call (blocking, up to `timeout`).
    pub fn catch_up(&mut self, timeout: Duration, mut each: impl FnMut(&[u8], Option<&[u8]>, i64)) -> ferry_kafka::Result<()> {
        let deadline = Instant::now() + timeout;
        if self.consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
            self.assign()?;
        }
        let mut ends: HashMap<i32, i64> = HashMap::new();
        for p in 0..self.partitions()? {
            let (low, high) = ferry_kafka::watermarks(&self.consumer, &self.topic, p, Duration::from_secs(10))
                .map_err(|e| ferry_kafka::Error::new(&self.cluster, format!("read the end of {}", self.topic), e))?;
            if high > low {
                ends.insert(p, high);
            }
        }
        // A tail read before (a second catch-up) may already be past the end: nothing will
        // arrive there, so only partitions whose position is before their end are waited for.
        if let Ok(positions) = self.consumer.position() {
            for e in positions.elements() {
                if let Offset::Offset(position) = e.offset() {
                    if ends.get(&e.partition()).is_some_and(|&end| position >= end) {
                        ends.remove(&e.partition());
                    }
                }
            }
        }
        if ends.is_empty() {
            // Every partition is empty or already read to its end (or the topic does not exist
            // yet): nothing to wait for.
            return Ok(());
        }
        // tansu 0.6.0 reports the high watermark as the last batch's first offset + 1, so reach
        // it, then keep reading until nothing more arrives for a moment.
        let mut idle_since: Option<Instant> = None;
        loop {
            if Instant::now() > deadline {
                return Err(ferry_kafka::Error::new(&self.cluster, format!("read {} to its end", self.topic),
                    rdkafka::error::KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::OperationTimedOut)));
            }
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    idle_since = None;
                    if ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
                        ends.remove(&m.partition());
                    }
                    each(m.key().unwrap_or_default(), m.payload(), m.timestamp().to_millis().unwrap_or(-1));
                }
                Some(Err(e)) => warn!(cluster = %self.cluster.alias, topic = %self.topic, error = %e, "reading internal topic"),
                None => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if ends.is_empty() && since.elapsed() >= Duration::from_millis(200) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Applies whatever has arrived since the last call, without waiting.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8], Option<&[u8]>, i64)) {
        if self.consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
            // The topic did not exist when opened; it may now.
            let _ = self.assign();
        }
        // A cluster that is down yields one error per broker connection and poll: one line.
        let mut failed: Option<(rdkafka::error::KafkaError, u64)> = None;
        while let Some(message) = self.consumer.poll(Duration::ZERO) {
            match message {
                Ok(m) => each(m.key().unwrap_or_default(), m.payload(), m.timestamp().to_millis().unwrap_or(-1)),
                Err(e) => failed = Some((e, failed.map_or(1, |(_, n)| n + 1))),
            }
        }
        if let Some((error, errors)) = failed {
            warn!(cluster = %self.cluster.alias, topic = %self.topic, %error, errors, "reading internal topic (librdkafka retries)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_says_which_partitions_changed_since_it_was_last_asked() {
        let rec = |p: i32, target: i64, len: i64| RunRecord { topic: "t".into(), partition: p, run: OffsetRun::exact(target, target, len) };
        let mut log = RunLog::default();
        for r in [rec(0, 0, 5), rec(1, 0, 3)] {
            log.apply(&r.encode_key().unwrap(), Some(&r.encode_value().unwrap()));
        }
        let mut changed: Vec<_> = log.take_changed().into_iter().collect();
        changed.sort();
        assert_eq!(changed, vec![("t".to_string(), 0), ("t".to_string(), 1)]);
        assert!(log.take_changed().is_empty(), "nothing new");
        let grown = rec(1, 0, 4);
        log.apply(&grown.encode_key().unwrap(), Some(&grown.encode_value().unwrap()));
        assert_eq!(log.take_changed().into_iter().collect::<Vec<_>>(), vec![("t".to_string(), 1)]);
        log.apply(&rec(0, 0, 5).encode_key().unwrap(), None);
        assert_eq!(log.take_changed().into_iter().collect::<Vec<_>>(), vec![("t".to_string(), 0)]);
    }

    #[test]
    fn the_run_log_keeps_the_latest_length_of_each_run_and_the_start() {
        let mut log = RunLog::default();
        let rec = |source, target, len| RunRecord { topic: "t".into(), partition: 0, run: OffsetRun::exact(source, target, len) };
        for r in [rec(5, START_MARKER, 0), rec(5, 0, 3), rec(5, 0, 10), rec(20, 10, 4)] {
            log.apply(&r.encode_key().unwrap(), Some(&r.encode_value().unwrap()));
        }
        log.apply(b"junk", Some(b"junk"));
        log.apply(&rec(0, 99, 1).encode_key().unwrap(), None); // deleting a run never stored: nothing
        assert_eq!(log.malformed, 1);
        assert_eq!(log.run_count(), 2);
        let m = log.map("t", 0).unwrap();
        assert_eq!(m.start(), Some(5));
        assert_eq!(m.translate(5, 24), Some(0));
        assert_eq!(m.translate(12, 24), Some(7));
        assert_eq!(m.translate(16, 24), Some(10), "in the gap 15..20");
        assert_eq!(m.reverse(12), Some(22));
        assert!(log.map("t", 1).is_none());
        // Deleted (an aborted transaction's run, or pruned): gone, as is a deleted start.
        log.apply(&rec(0, 10, 0).encode_key().unwrap(), None);
        log.apply(&rec(0, START_MARKER, 0).encode_key().unwrap(), None);
        let m = log.map("t", 0).unwrap();
        assert_eq!((m.run_count(), m.start()), (1, None));
        assert_eq!(m.translate(16, 24), Some(10), "after the last run: its end");
    }
}
