//! A source table being read: its partitions spread over lanes (a consumer each, polled and
//! decoded on a thread of their own in each round), the offsets read, each partition's
//! watermark, and the end of a bounded table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, BinaryArray, Int32Array, Int64Array, Int8Array, MapArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, TimeUnit};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::warn;

use crate::catalog::{BoundedMode, ColumnSource, KafkaTable, MetadataKey, StartupMode};
use crate::checkpoint;
use crate::format::{self, Format};
use crate::ops::{RowKind, Rows};
use crate::plan::{ColumnPlan, ScanTable};
use crate::run::{bootstrap, client_config, commit_offsets, table_error, RunError, BATCH_RECORDS};
use crate::watermark::Watermarks;

/// One source table of a pipeline being read.
pub(crate) struct Reader<'a> {
    scan: &'a ScanTable,
    group: String,
    lanes: Vec<Lane>,
    pub(crate) partitions: Vec<i32>,
    bounded: bool,
    pub(crate) marks: Watermarks,
}

/// Some of a table's partitions, read by a consumer of their own.
struct Lane {
    consumer: BaseConsumer,
    partitions: Vec<i32>,
    /// For a bounded table, each partition's end (exclusive).
    ends: Option<HashMap<i32, i64>>,
    done: HashMap<i32, bool>,
    /// The next offset to read, per partition read from.
    next: HashMap<i32, i64>,
    /// Partitions read to their end in the batch being read.
    finished: Vec<i32>,
}

/// What a lane read in a round: the records' count, their rows and partitions, and each row's
/// watermark expression.
struct Chunk {
    records: usize,
    decoded: Decoded,
    times: Option<Vec<Option<i64>>>,
}

impl<'a> Reader<'a> {
    pub(crate) fn name(&self) -> &str {
        &self.scan.table.name
    }

    pub(crate) fn kafka(&self) -> &KafkaTable {
        &self.scan.table.kafka
    }

    /// The table's consumers (one per lane, at most `lanes`) and its topic's partitions.
    pub(crate) fn connect(scan: &'a ScanTable, idle: Option<Duration>, lanes: usize) -> Result<Reader<'a>, RunError> {
        let (name, kafka) = (scan.table.name.as_str(), &scan.table.kafka);
        let group = kafka.group_id.clone().unwrap_or_else(|| format!("ferry-sql-{}", std::process::id()));
        let consumer = || -> Result<BaseConsumer, RunError> {
            client_config(kafka)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "false")
                .set("auto.offset.reset", "error")
                .create()
                .map_err(|e| table_error(name, format!("cannot create a consumer for {}: {e}", bootstrap(kafka))))
        };
        let first = consumer()?;
        let metadata = first
            .fetch_metadata(Some(&kafka.topic), Duration::from_secs(30))
            .map_err(|e| table_error(name, format!("cannot read topic {} on {}: {e}", kafka.topic, bootstrap(kafka))))?;
        let mut partitions: Vec<i32> = metadata.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
        if partitions.is_empty() {
            return Err(table_error(name, format!("topic {} does not exist on {}", kafka.topic, bootstrap(kafka))));
        }
        partitions.sort_unstable();
        let count = lanes.clamp(1, partitions.len());
        let mut all = vec![first];
        while all.len() < count {
            all.push(consumer()?);
        }
        // Partition k to lane k mod n: each lane reads as many partitions as the others, +-1.
        let lanes = all
            .into_iter()
            .enumerate()
            .map(|(k, consumer)| Lane { consumer, partitions: partitions.iter().copied().skip(k).step_by(count).collect(), ends: None, done: HashMap::new(), next: HashMap::new(), finished: Vec::new() })
            .collect();
        let mut marks = Watermarks::new(&partitions, idle, Instant::now());
        if scan.processing_time {
            marks = marks.processing_time();
        }
        Ok(Reader { scan, group, lanes, partitions, bounded: false, marks })
    }

    fn consumer(&self) -> &BaseConsumer {
        &self.lanes[0].consumer
    }

    /// Assigns the partitions: from a checkpoint's offsets where it has them (and its
    /// watermarks), as the table says elsewhere.
    pub(crate) fn start(&mut self, restored: Option<&checkpoint::SourceMeta>) -> Result<(), RunError> {
        let (name, kafka) = (self.scan.table.name.clone(), &self.scan.table.kafka);
        let fresh: Vec<i32> = self.partitions.iter().copied().filter(|q| !restored.is_some_and(|c| c.offsets.contains_key(q))).collect();
        let mut starts = if fresh.is_empty() { HashMap::new() } else { start_offsets(self.consumer(), kafka, &name, &self.group, &fresh)? };
        if let Some(c) = restored {
            for (partition, offset) in &c.offsets {
                if self.partitions.contains(partition) {
                    starts.insert(*partition, Offset::Offset(*offset));
                }
            }
            self.marks.restore(&c.watermarks.iter().map(|(q, w)| (*q, *w)).collect::<Vec<_>>(), c.watermark);
        }
        let ends = end_offsets(self.consumer(), kafka, &name, &self.partitions)?;
        self.bounded = ends.is_some();
        if ends.is_some() {
            // A bounded table starts at offsets, not "the beginning" or "the end": a partition
            // with nothing to read (empty, or its start at its end) is read to its end from
            // the start, since no record will ever say so.
            for (partition, offset) in starts.iter_mut() {
                if !matches!(offset, Offset::Offset(_)) {
                    let (low, high) = self.consumer().fetch_watermarks(&kafka.topic, *partition, Duration::from_secs(30)).map_err(|e| table_error(&name, format!("cannot read the offsets of topic {} partition {partition}: {e}", kafka.topic)))?;
                    *offset = Offset::Offset(if matches!(offset, Offset::End) { high } else { low });
                }
            }
        }
        for lane in &mut self.lanes {
            let mut tpl = TopicPartitionList::new();
            for partition in &lane.partitions {
                let offset = starts.get(partition).copied().unwrap_or(Offset::End);
                tpl.add_partition_offset(&kafka.topic, *partition, offset).map_err(|e| table_error(&name, e.to_string()))?;
                if let (Some(c), Offset::Offset(o)) = (restored, offset) {
                    if c.offsets.contains_key(partition) {
                        lane.next.insert(*partition, o);
                    }
                }
            }
            lane.consumer.assign(&tpl).map_err(|e| table_error(&name, format!("cannot assign topic {}: {e}", kafka.topic)))?;
            lane.ends = ends.as_ref().map(|e| lane.partitions.iter().filter_map(|p| e.get(p).map(|end| (*p, *end))).collect());
            lane.done = lane.partitions.iter().map(|p| (*p, lane.ends.as_ref().is_some_and(|e| starts.get(p).is_some_and(|s| matches!(s, Offset::Offset(o) if e.get(p).is_some_and(|end| *o >= *end)))))).collect();
            for (partition, d) in &lane.done {
                if *d {
                    self.marks.finish(*partition, Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Whether a bounded table has been read to its end.
    pub(crate) fn complete(&self) -> bool {
        self.bounded && self.lanes.iter().all(Lane::complete)
    }

    /// Whether the table is bounded (read up to an end).
    pub(crate) fn bounded(&self) -> bool {
        self.bounded
    }

    /// Reads a round: every lane polls and decodes on its own thread; the rows come back per
    /// lane that read records, each row with the watermark it arrived under, and the records
    /// skipped. Nothing read: an empty list.
    pub(crate) fn read(&mut self, wait: Duration) -> Result<(Vec<Rows>, u64, u64), RunError> {
        let scan = self.scan;
        let read = |lane: &mut Lane| -> Result<Option<Chunk>, RunError> {
            let batch = lane.poll(wait, scan);
            if batch.is_empty() {
                return Ok(None);
            }
            let decoded = decode_batch(scan, &batch)?;
            let times = match &scan.watermark {
                Some((_, expr)) => {
                    let name = &scan.table.name;
                    let rows = &decoded.rows;
                    let values = expr.evaluate(rows).and_then(|v| v.into_array(rows.num_rows())).map_err(|e| table_error(name, format!("the WATERMARK expression: {e}")))?;
                    let values = arrow::compute::cast(&values, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(|e| table_error(name, format!("the WATERMARK expression: {e}")))?;
                    Some(values.as_any().downcast_ref::<TimestampMillisecondArray>().map(|a| a.iter().collect::<Vec<_>>()).unwrap_or_default())
                }
                None => None,
            };
            Ok(Some(Chunk { records: batch.len(), decoded, times }))
        };
        let chunks = crate::subtasks::parallel(self.lanes.iter_mut().collect(), read);
        let (mut out, mut records, mut skipped) = (Vec::new(), 0, 0);
        for chunk in chunks {
            let Some(Chunk { records: n, decoded, times }) = chunk? else { continue };
            let Decoded { rows, partitions, skipped: s, kinds } = decoded;
            // Lane by lane, in order: a row's watermark is the table's, over every partition.
            let watermarks = times.map(|t| Int64Array::from(self.marks.observe(&partitions, &t, Instant::now())));
            records += n as u64;
            skipped += s;
            out.push(Rows { batch: rows, kinds, watermarks });
        }
        self.finish_partitions();
        Ok((out, records, skipped))
    }

    /// Partitions read to their end count as +inf for the watermark.
    pub(crate) fn finish_partitions(&mut self) {
        for lane in &mut self.lanes {
            for f in lane.finished.drain(..) {
                self.marks.finish(f, Instant::now());
            }
        }
    }

    pub(crate) fn no_rows(&self) -> Rows {
        Rows::new(RecordBatch::new_empty(format::nullable_like(&self.scan.schema)))
    }

    /// The next offset to read of each partition read from.
    pub(crate) fn next(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.lanes.iter().flat_map(|l| l.next.iter().map(|(q, o)| (*q, *o)))
    }

    pub(crate) fn meta(&self) -> checkpoint::SourceMeta {
        let (parts, watermark) = self.marks.snapshot();
        checkpoint::SourceMeta { topic: self.scan.table.kafka.topic.clone(), offsets: self.next().collect(), watermarks: parts.into_iter().collect(), watermark }
    }

    pub(crate) fn commit(&self, mode: CommitMode, failure: &str) {
        let next: HashMap<i32, i64> = self.next().collect();
        if self.kafka().group_id.is_some() && !next.is_empty() {
            commit_offsets(self.consumer(), &self.kafka().topic, &next, mode, self.name(), &self.group, failure);
        }
    }
}

impl Lane {
    fn complete(&self) -> bool {
        self.ends.is_some() && self.done.values().all(|d| *d)
    }

    /// Records until `BATCH_RECORDS`, until `wait` has passed, or, once there are some, until
    /// the consumer has no more at hand: under load a batch fills from what librdkafka has
    /// fetched ahead, and a lightly loaded job does not hold a record back for the rest of
    /// `wait` (end-to-end latency, `benches/sql_latency.rs`).
    fn poll(&mut self, wait: Duration, scan: &ScanTable) -> Vec<Raw> {
        let mut batch = Vec::new();
        let started = Instant::now();
        while batch.len() < BATCH_RECORDS && started.elapsed() < wait && !self.complete() {
            let timeout = if batch.is_empty() { Duration::from_millis(10) } else { Duration::ZERO };
            match self.consumer.poll(timeout) {
                None if !batch.is_empty() => break,
                None => self.reached_ends(),
                Some(Ok(m)) => {
                    if let Some(end) = self.ends.as_ref().and_then(|e| e.get(&m.partition())) {
                        if m.offset() >= *end {
                            if self.done.insert(m.partition(), true) == Some(false) {
                                self.finished.push(m.partition());
                            }
                            continue;
                        }
                        if m.offset() + 1 >= *end && self.done.insert(m.partition(), true) == Some(false) {
                            self.finished.push(m.partition());
                        }
                    }
                    batch.push(Raw::from(&m));
                }
                Some(Err(e)) => warn!(table = %scan.table.name, topic = %scan.table.kafka.topic, error = %e, "source consumer error (librdkafka retries)"),
            }
        }
        for r in &batch {
            self.next.insert(r.partition, r.offset + 1);
        }
        batch
    }

    /// Partitions whose consumer position has reached their end although no record said so:
    /// the last offsets were transaction markers or aborted records, which a consumer never sees.
    fn reached_ends(&mut self) {
        let Some(ends) = &self.ends else { return };
        if self.done.values().all(|d| *d) {
            return;
        }
        let Ok(positions) = self.consumer.position() else { return };
        for e in positions.elements() {
            if let (Offset::Offset(at), Some(end)) = (e.offset(), ends.get(&e.partition())) {
                if at >= *end && self.done.insert(e.partition(), true) == Some(false) {
                    self.finished.push(e.partition());
                    self.next.insert(e.partition(), at);
                }
            }
        }
    }
}

/// One source record, copied out of librdkafka's buffer.
pub(crate) struct Raw {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    timestamp_type: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Raw {
    fn from(m: &BorrowedMessage<'_>) -> Raw {
        let (timestamp, timestamp_type) = match m.timestamp() {
            rdkafka::Timestamp::CreateTime(t) => (Some(t), "CreateTime"),
            rdkafka::Timestamp::LogAppendTime(t) => (Some(t), "LogAppendTime"),
            rdkafka::Timestamp::NotAvailable => (None, "NoTimestampType"),
        };
        Raw {
            partition: m.partition(),
            offset: m.offset(),
            timestamp,
            timestamp_type,
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m.headers().map_or_else(Vec::new, |h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect()),
        }
    }
}



fn start_offsets(consumer: &BaseConsumer, kafka: &KafkaTable, name: &str, group: &str, partitions: &[i32]) -> Result<HashMap<i32, Offset>, RunError> {
    let mut out = HashMap::new();
    match &kafka.startup {
        StartupMode::EarliestOffset => out.extend(partitions.iter().map(|p| (*p, Offset::Beginning))),
        StartupMode::LatestOffset => out.extend(partitions.iter().map(|p| (*p, Offset::End))),
        StartupMode::Timestamp(ts) => {
            let mut tpl = TopicPartitionList::new();
            for p in partitions {
                let _ = tpl.add_partition_offset(&kafka.topic, *p, Offset::Offset(*ts));
            }
            let found = consumer.offsets_for_times(tpl, Duration::from_secs(30)).map_err(|e| table_error(name, format!("cannot look up offsets for timestamp {ts}: {e}")))?;
            for e in found.elements() {
                out.insert(e.partition(), match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::End,
                });
            }
        }
        StartupMode::GroupOffsets => {
            let mut tpl = TopicPartitionList::new();
            for p in partitions {
                let _ = tpl.add_partition(&kafka.topic, *p);
            }
            // A group coordinator that is moving or loading (a new cluster creates its offsets
            // topic on first use) answers with a retriable error: ask again for a while.
            let deadline = Instant::now() + Duration::from_secs(30);
            let committed = loop {
                match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                    Ok(c) => break c,
                    Err(e) if Instant::now() < deadline && e.rdkafka_error_code().is_some_and(|c| matches!(c, RDKafkaErrorCode::NotCoordinator | RDKafkaErrorCode::CoordinatorLoadInProgress | RDKafkaErrorCode::CoordinatorNotAvailable)) => {
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    Err(e) => return Err(table_error(name, format!("cannot read group {group}'s offsets: {e}"))),
                }
            };
            for e in committed.elements() {
                let offset = match (e.offset(), kafka.offset_reset.as_deref()) {
                    (Offset::Offset(o), _) => Offset::Offset(o),
                    (_, Some("earliest")) => Offset::Beginning,
                    (_, Some("latest")) => Offset::End,
                    _ => {
                        return Err(table_error(name, format!("group {group} has no offset for topic {} partition {} (scan.startup.mode 'group-offsets'); set 'properties.auto.offset.reset' to earliest or latest, or another scan.startup.mode", kafka.topic, e.partition())));
                    }
                };
                out.insert(e.partition(), offset);
            }
        }
    }
    Ok(out)
}

/// For a bounded source, each partition's end offset (exclusive).
fn end_offsets(consumer: &BaseConsumer, kafka: &KafkaTable, name: &str, partitions: &[i32]) -> Result<Option<HashMap<i32, i64>>, RunError> {
    match &kafka.bounded {
        BoundedMode::Unbounded => Ok(None),
        BoundedMode::LatestOffset => {
            let mut out = HashMap::new();
            for p in partitions {
                let (_, high) = consumer.fetch_watermarks(&kafka.topic, *p, Duration::from_secs(30)).map_err(|e| table_error(name, format!("cannot read the end of topic {} partition {p}: {e}", kafka.topic)))?;
                out.insert(*p, high);
            }
            Ok(Some(out))
        }
        BoundedMode::Timestamp(ts) => {
            let mut tpl = TopicPartitionList::new();
            for p in partitions {
                let _ = tpl.add_partition_offset(&kafka.topic, *p, Offset::Offset(*ts + 1));
            }
            let found = consumer.offsets_for_times(tpl, Duration::from_secs(30)).map_err(|e| table_error(name, format!("cannot look up offsets for timestamp {ts}: {e}")))?;
            let mut out = HashMap::new();
            for e in found.elements() {
                let end = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => consumer.fetch_watermarks(&kafka.topic, e.partition(), Duration::from_secs(30)).map_err(|x| table_error(name, x.to_string()))?.1,
                };
                out.insert(e.partition(), end);
            }
            Ok(Some(out))
        }
    }
}

/// The source rows of a batch, every column of the table (physical, metadata, computed); records
/// that do not decode are skipped and counted, or stop the job.
/// Also returns the partition of each row.
pub(crate) fn decode_batch(scan: &ScanTable, batch: &[Raw]) -> Result<Decoded, RunError> {
    let table = &scan.table;
    let kafka = &table.kafka;
    let mut keep: Vec<bool> = vec![true; batch.len()];
    // A null value is no row for the json format (a tombstone), and a null for raw. In an
    // upsert-kafka table it deletes its key: the row keeps its key columns, its value columns
    // are not decoded.
    let tombstones: Vec<bool> = batch.iter().map(|r| kafka.upsert && r.value.is_none()).collect();
    if matches!(kafka.value_format, Format::Json(_) | Format::Csv(_) | Format::AvroConfluent(_)) {
        for (i, r) in batch.iter().enumerate() {
            if r.value.is_none() {
                keep[i] = false;
            }
        }
    }
    let value_fields: Vec<Field> = table.columns.iter().zip(scan.base.fields().iter()).filter(|(c, _)| matches!(c.source, ColumnSource::Physical { in_value: true, .. })).map(|(_, f)| f.as_ref().clone()).collect();
    let base_of = |name: &str| scan.base.fields().iter().find(|f| f.name() == name).cloned();
    let mut decoded: HashMap<String, ArrayRef> = HashMap::new();
    let mut decode_part = |format: &Format, fields: Vec<Field>, names: Vec<String>, payloads: Vec<Option<&[u8]>>, option: Option<String>, keep: &mut Vec<bool>| -> Result<(), RunError> {
        if fields.is_empty() {
            return Ok(());
        }
        let schema = format::nullable(fields);
        let kept: Vec<usize> = (0..payloads.len()).filter(|i| keep[*i]).collect();
        let input: Vec<Option<&[u8]>> = kept.iter().map(|i| payloads[*i]).collect();
        let (rows, good, bad) = format::decode(format, &schema, &input);
        if let Some(b) = bad.first() {
            if !format.ignores_parse_errors() {
                let r = &batch[kept[b.index]];
                let skip = option.as_ref().map_or_else(String::new, |o| format!("; set '{o}' = 'true' to skip such records"));
                return Err(RunError::BadRecord { table: table.name.clone(), topic: kafka.topic.clone(), partition: r.partition, offset: r.offset, reason: b.reason.clone(), skip });
            }
            for b in &bad {
                let r = &batch[kept[b.index]];
                warn!(table = %table.name, topic = %kafka.topic, partition = r.partition, offset = r.offset, reason = %b.reason, "record skipped: it does not decode");
                keep[kept[b.index]] = false;
            }
        }
        // Spread the decoded rows back over the batch (null where a record has no row).
        let mut index: Vec<Option<u32>> = vec![None; payloads.len()];
        for (row, at) in good.iter().enumerate() {
            index[kept[*at]] = Some(row as u32);
        }
        let take = UInt32Array::from(index);
        for (name, column) in names.iter().zip(rows.columns()) {
            decoded.insert(name.clone(), arrow::compute::take(column.as_ref(), &take, None).expect("indices within the batch"));
        }
        Ok(())
    };
    let value_names: Vec<String> = value_fields.iter().map(|f| f.name().clone()).collect();
    let value_option = kafka.value_format.ignore_option().map(|o| format!("{}{o}", if kafka.key_format.is_some() { "value." } else { "" }));
    decode_part(&kafka.value_format, value_fields, value_names, batch.iter().map(|r| r.value.as_deref()).collect(), value_option, &mut keep)?;
    // Tombstones are rows (deletions), not skipped records; their keys are decoded.
    for (k, t) in keep.iter_mut().zip(&tombstones) {
        *k |= *t;
    }
    if let Some(key_format) = &kafka.key_format {
        let key_columns: Vec<&crate::catalog::Column> = table.columns.iter().filter(|c| matches!(c.source, ColumnSource::Physical { in_key: true, .. })).collect();
        let fields: Vec<Field> = key_columns.iter().map(|c| base_of(&c.name).expect("a base column").as_ref().clone().with_name(c.name.strip_prefix(kafka.key_fields_prefix.as_str()).unwrap_or(&c.name))).collect();
        let names: Vec<String> = key_columns.iter().map(|c| format!("\u{0}key:{}", c.name)).collect();
        decode_part(key_format, fields, names, batch.iter().map(|r| r.key.as_deref()).collect(), key_format.ignore_option().map(|o| format!("key.{o}")), &mut keep)?;
    }
    let n = batch.len();
    let mut base_columns: Vec<ArrayRef> = Vec::new();
    for (c, f) in table.columns.iter().filter(|c| !matches!(c.source, ColumnSource::Computed(_))).zip(scan.base.fields()) {
        let array: ArrayRef = match &c.source {
            // A tombstone has no value: a key column that the value also holds comes from its key.
            ColumnSource::Physical { in_value: true, in_key: true } if tombstones.iter().any(|t| *t) => {
                let value = decoded.remove(&c.name).unwrap_or_else(|| format::nulls(f.data_type(), n));
                let key = decoded.remove(&format!("\u{0}key:{}", c.name)).unwrap_or_else(|| format::nulls(f.data_type(), n));
                arrow::compute::kernels::zip::zip(&arrow::array::BooleanArray::from(tombstones.clone()), &key, &value).map_err(|e| table_error(&table.name, format!("column {}: {e}", c.name)))?
            }
            ColumnSource::Physical { in_value: true, .. } => decoded.remove(&c.name).unwrap_or_else(|| format::nulls(f.data_type(), n)),
            ColumnSource::Physical { .. } => decoded.remove(&format!("\u{0}key:{}", c.name)).unwrap_or_else(|| format::nulls(f.data_type(), n)),
            ColumnSource::Metadata { key, .. } => metadata(*key, batch, &kafka.topic, f.data_type()),
            ColumnSource::Computed(_) => unreachable!("filtered out"),
        };
        base_columns.push(array);
    }
    let base = RecordBatch::try_new(format::nullable_like(&scan.base), base_columns).map_err(|e| table_error(&table.name, format!("decoded rows do not fit the table: {e}")))?;
    let skipped = keep.iter().filter(|k| !**k).count() as u64;
    let base = if skipped > 0 { arrow::compute::filter_record_batch(&base, &arrow::array::BooleanArray::from(keep.clone())).expect("a mask of the batch's length") } else { base };
    // Computed columns, from the physical and metadata ones.
    let mut columns = Vec::with_capacity(scan.columns.len());
    for (plan, f) in scan.columns.iter().zip(scan.schema.fields()) {
        columns.push(match plan {
            ColumnPlan::Base(i) => base.column(*i).clone(),
            ColumnPlan::Computed(e) => {
                let v = e.evaluate(&base).and_then(|v| v.into_array(base.num_rows())).map_err(|e| table_error(&table.name, format!("computed column {}: {e}", f.name())))?;
                v
            }
        });
    }
    let schema = format::nullable_like(&scan.schema);
    let rows = RecordBatch::try_new(schema, columns).map_err(|e| table_error(&table.name, format!("computed columns do not fit the table: {e}")))?;
    let partitions = batch.iter().zip(&keep).filter(|(_, k)| **k).map(|(r, _)| r.partition).collect();
    let kinds = kafka.upsert.then(|| Int8Array::from(tombstones.iter().zip(&keep).filter(|(_, k)| **k).map(|(t, _)| if *t { RowKind::Delete as i8 } else { RowKind::Insert as i8 }).collect::<Vec<_>>()));
    Ok(Decoded { rows, partitions, skipped, kinds })
}

/// A batch of records decoded: the rows, each row's partition, how many records were skipped,
/// and for an upsert-kafka table each row's change (an upsert, or a tombstone's deletion).
pub(crate) struct Decoded {
    rows: RecordBatch,
    partitions: Vec<i32>,
    skipped: u64,
    kinds: Option<Int8Array>,
}

fn metadata(key: MetadataKey, batch: &[Raw], topic: &str, t: &DataType) -> ArrayRef {
    let array: ArrayRef = match key {
        MetadataKey::Topic => Arc::new(StringArray::from(vec![topic; batch.len()])),
        MetadataKey::Partition => Arc::new(Int32Array::from(batch.iter().map(|r| r.partition).collect::<Vec<_>>())),
        MetadataKey::LeaderEpoch => Arc::new(Int32Array::from(vec![None::<i32>; batch.len()])),
        MetadataKey::Offset => Arc::new(Int64Array::from(batch.iter().map(|r| r.offset).collect::<Vec<_>>())),
        MetadataKey::TimestampType => Arc::new(StringArray::from(batch.iter().map(|r| r.timestamp_type).collect::<Vec<_>>())),
        MetadataKey::Timestamp => {
            let a = TimestampMillisecondArray::from(batch.iter().map(|r| r.timestamp).collect::<Vec<_>>());
            match t {
                DataType::Timestamp(_, Some(tz)) => Arc::new(a.with_timezone(tz.clone())),
                _ => Arc::new(a),
            }
        }
        MetadataKey::Headers => {
            let keys: Vec<&str> = batch.iter().flat_map(|r| r.headers.iter().map(|(k, _)| k.as_str())).collect();
            let values: Vec<Option<&[u8]>> = batch.iter().flat_map(|r| r.headers.iter().map(|(_, v)| v.as_deref())).collect();
            let mut offsets = vec![0i32];
            for r in batch {
                offsets.push(offsets.last().copied().unwrap_or(0) + r.headers.len() as i32);
            }
            let keys: ArrayRef = Arc::new(StringArray::from(keys));
            let values: ArrayRef = Arc::new(BinaryArray::from(values));
            let DataType::Map(entries, _) = t else { unreachable!("headers are a MAP") };
            let DataType::Struct(kv) = entries.data_type() else { unreachable!("map entries are a struct") };
            let entries = arrow::array::StructArray::new(kv.clone(), vec![keys, values], None);
            Arc::new(MapArray::new(entries_field(entries.data_type()), arrow::buffer::OffsetBuffer::new(offsets.into()), entries, None, false))
        }
    };
    if array.data_type() == t {
        array
    } else {
        arrow::compute::cast(&array, t).unwrap_or(array)
    }
}

fn entries_field(t: &DataType) -> arrow::datatypes::FieldRef {
    Arc::new(Field::new("entries", t.clone(), false))
}
