//! Running a planned job on Kafka: per pipeline a thread that reads the source topic in batches,
//! decodes them into Arrow rows, runs the operators and writes the results to the sink topic.
//!
//! At least once: a batch's results are acknowledged by the sink cluster before the source
//! offsets after it are committed to the table's group (`properties.group.id`); a restart
//! resumes there. A record that does not decode stops the job naming topic, partition and
//! offset, unless the format ignores parse errors (then it is skipped, counted and logged).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, BinaryArray, Int32Array, Int64Array, Int8Array, MapArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, TimeUnit};
use metrics::{counter, gauge};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::{BoundedMode, ColumnSource, KafkaTable, MetadataKey, SinkPartitioner, StartupMode};
use crate::checkpoint;
use crate::format::{self, Format};
use crate::ops::{Operators, RowKind, Rows, Step};
use crate::plan::{ColumnPlan, Job, Pipeline, ScanTable, Sink};
use crate::view::{ViewTable, Views};
use crate::watermark::Watermarks;

/// Records per batch at most, and how long a batch waits to fill.
const BATCH_RECORDS: usize = 4096;
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// Why a job stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("table {table}: {message}")]
    Table { table: String, message: String },
    #[error("table {table}: the record at topic {topic} partition {partition} offset {offset} does not decode ({reason}){skip}")]
    BadRecord { table: String, topic: String, partition: i32, offset: i64, reason: String, skip: String },
    #[error("pipeline at line {line}: {message}")]
    Operator { line: u64, message: String },
}

/// What a finished pipeline did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub records_in: u64,
    pub records_out: u64,
    pub skipped: u64,
    /// Records dropped because every window they belong to had fired (or, in an interval
    /// join, every partner they could have had had left the state).
    pub late: u64,
    /// Rows a join's state TTL dropped.
    pub expired: u64,
}

/// Runs every pipeline until all bounded sources are read or `cancel`; the first failure stops
/// the others.
pub fn run(job: &Job, views: &Views, cancel: &CancellationToken) -> Result<Vec<PipelineStats>, RunError> {
    run_with(job, &Options { views: views.clone(), ..Options::default() }, cancel)
}

/// How a job runs.
#[derive(Default, Clone)]
pub struct Options {
    /// The views the job fills (from [`views`]).
    pub views: Views,
    /// Where checkpoints go (`--state-dir`); none: no checkpoints.
    pub state_dir: Option<std::path::PathBuf>,
    /// `ferry sql sample`: stop after this many rows.
    pub sample_limit: Option<u64>,
    /// Each pipeline's counters as it runs, for the job's reports ([`crate::report`]); filled
    /// from [`crate::report::initial`] or left empty (not kept).
    pub progress: Progress,
}

/// Each pipeline's progress, shared with the reporter.
pub type Progress = std::sync::Arc<std::sync::Mutex<Vec<ferry_kafka::job_report::PipelineReport>>>;

/// Runs a job with `options`.
pub fn run_with_options(job: &Job, options: &Options, cancel: &CancellationToken) -> Result<Vec<PipelineStats>, RunError> {
    run_with(job, options, cancel)
}

/// Runs a job planned by [`crate::plan::plan_sample`]: its rows are printed, and the job ends
/// after `limit` of them.
pub fn sample(job: &Job, limit: Option<u64>, cancel: &CancellationToken) -> Result<Vec<PipelineStats>, RunError> {
    run_with(job, &Options { sample_limit: limit, ..Options::default() }, cancel)
}

fn run_with(job: &Job, options: &Options, cancel: &CancellationToken) -> Result<Vec<PipelineStats>, RunError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = job
            .pipelines
            .iter()
            .enumerate()
            .map(|(index, p)| {
                scope.spawn(move || {
                    let result = run_pipeline(index, p, options, cancel);
                    if result.is_err() {
                        cancel.cancel();
                    }
                    result
                })
            })
            .collect();
        let mut out = Vec::new();
        let mut first_error = None;
        for h in handles {
            match h.join().expect("a pipeline thread panicked") {
                Ok(s) => out.push(s),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

fn table_error(table: &str, message: impl Into<String>) -> RunError {
    RunError::Table { table: table.to_string(), message: message.into() }
}

fn client_config(kafka: &KafkaTable) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}

fn bootstrap(kafka: &KafkaTable) -> &str {
    kafka.properties.iter().find(|(k, _)| k == "bootstrap.servers").map_or("", |(_, v)| v.as_str())
}

/// Counts the sink's failed deliveries; the first error is kept to be reported.
#[derive(Default)]
struct DeliveryCounter {
    /// Records handed to the producer, and those the cluster answered for (either way).
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error.lock().unwrap().get_or_insert_with(|| e.to_string());
        }
        self.answered.fetch_add(1, Ordering::Release);
    }
}

/// One source record, copied out of librdkafka's buffer.
struct Raw {
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

/// The views of a job, empty, for [`run`] to fill and a REST API to read.
pub fn views(job: &Job) -> Result<Views, RunError> {
    let mut out = HashMap::new();
    for p in &job.pipelines {
        if let Sink::View(v) = &p.sink {
            let table = ViewTable::new(v.clone()).map_err(|message| RunError::Operator { line: p.pos.line, message })?;
            out.insert(v.name.clone(), Arc::new(std::sync::RwLock::new(table)));
        }
    }
    Ok(Arc::new(out))
}

/// An exactly-once sink's bookkeeping: each checkpoint's number is committed in the transaction
/// that holds the results up to it, as the offset of the sink topic's partition 0 for the group
/// `ferry-sql-<checkpoint directory>` (a transactional offset commit, atomic with the records).
/// After a crash, the committed number says which checkpoint the sink's committed records match.
struct Transactions {
    consumer: BaseConsumer,
    topic: String,
    committed: Option<u64>,
}

/// Where a pipeline's results go.
enum Output<'a> {
    Kafka { table: &'a crate::catalog::Table, producer: ThreadedProducer<DeliveryCounter>, partitions: i32, round_robin: i32, transactions: Option<Transactions> },
    View(Arc<std::sync::RwLock<ViewTable>>),
    /// `ferry sql sample`: each row on stdout (`+I {"col": …}`) until `limit` rows, then the
    /// job is cancelled.
    Print { limit: Option<u64>, printed: u64, cancel: CancellationToken },
}

impl<'a> Output<'a> {
    fn open(p: &'a Pipeline, views: &Views, limit: Option<u64>, checkpoints: Option<&std::path::Path>, cancel: &CancellationToken) -> Result<Output<'a>, RunError> {
        let scan = match &p.sink {
            Sink::Print(_) => return Ok(Output::Print { limit, printed: 0, cancel: cancel.clone() }),
            Sink::View(v) => {
                let table = views.get(&v.name).cloned().ok_or_else(|| RunError::Operator { line: p.pos.line, message: format!("view {} has no table", v.name) })?;
                return Ok(Output::View(table));
            }
            Sink::Table(t) => t,
        };
        let sink = &scan.table;
        let context = DeliveryCounter::default();
        let mut config = client_config(&sink.kafka);
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // Java's partitioner (murmur2 of the key): a key lands where Flink and Java clients put it.
            .set("partitioner", "murmur2_random");
        let exactly_once = match (&sink.kafka.delivery, checkpoints) {
            (crate::catalog::DeliveryGuarantee::ExactlyOnce { prefix }, Some(dir)) => {
                let name = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                config.set("transactional.id", format!("{prefix}-{name}"));
                Some(name)
            }
            (crate::catalog::DeliveryGuarantee::ExactlyOnce { .. }, None) => {
                return Err(table_error(&sink.name, "sink.delivery-guarantee 'exactly-once' needs --state-dir: its transactions are committed with the job's checkpoints"));
            }
            _ => None,
        };
        let producer: ThreadedProducer<DeliveryCounter> = config.create_with_context(context).map_err(|e| table_error(&sink.name, format!("cannot create a producer for {}: {e}", bootstrap(&sink.kafka))))?;
        let transactions = match exactly_once {
            None => None,
            Some(name) => {
                let kafka_error = |what: &str, e: rdkafka::error::KafkaError| table_error(&sink.name, format!("{what} on {}: {e}", bootstrap(&sink.kafka)));
                // Fences an earlier process of this pipeline and aborts its open transaction.
                producer.init_transactions(Duration::from_secs(60)).map_err(|e| kafka_error("cannot start transactions", e))?;
                let consumer: BaseConsumer = client_config(&sink.kafka)
                    .set("group.id", format!("ferry-sql-{name}"))
                    .set("enable.auto.commit", "false")
                    .set("isolation.level", "read_committed")
                    .create()
                    .map_err(|e| kafka_error("cannot create a consumer", e))?;
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition(&sink.kafka.topic, 0);
                let committed = consumer.committed_offsets(tpl, Duration::from_secs(30)).map_err(|e| kafka_error("cannot read the committed checkpoint", e))?;
                let committed = committed.elements().first().and_then(|e| match e.offset() {
                    Offset::Offset(n) if n >= 0 => Some(n as u64),
                    _ => None,
                });
                producer.begin_transaction().map_err(|e| kafka_error("cannot begin a transaction", e))?;
                Some(Transactions { consumer, topic: sink.kafka.topic.clone(), committed })
            }
        };
        let partitions = match sink.kafka.partitioner {
            SinkPartitioner::RoundRobin => {
                let md = producer.client().fetch_metadata(Some(&sink.kafka.topic), Duration::from_secs(30)).map_err(|e| table_error(&sink.name, format!("cannot read topic {}: {e}", sink.kafka.topic)))?;
                md.topics().first().map_or(0, |t| t.partitions().len() as i32)
            }
            _ => 0,
        };
        if sink.kafka.partitioner == SinkPartitioner::RoundRobin && partitions == 0 {
            return Err(table_error(&sink.name, format!("topic {} does not exist on {}", sink.kafka.topic, bootstrap(&sink.kafka))));
        }
        Ok(Output::Kafka { table: sink, producer, partitions, round_robin: 0, transactions })
    }

    /// Writes `rows`; with `progress` (the watermark and the source offsets they reflect) a view
    /// records how fresh it is.
    fn write(&mut self, p: &Pipeline, rows: &Rows, watermark: i64, readers: &[Reader<'_>]) -> Result<u64, RunError> {
        match self {
            Output::Kafka { producer, partitions, round_robin, .. } => write(p, producer, rows, round_robin, *partitions),
            Output::Print { limit, printed, cancel } => {
                use std::io::Write;
                let lines = crate::materialize::json_rows(&rows.batch).map_err(|message| RunError::Operator { line: p.pos.line, message })?;
                let mut out = std::io::stdout().lock();
                let mut n = 0;
                for (i, line) in lines.iter().enumerate() {
                    if limit.is_some_and(|l| *printed >= l) {
                        break;
                    }
                    let _ = writeln!(out, "{} {line}", rows.kind(i).short());
                    *printed += 1;
                    n += 1;
                }
                let _ = out.flush();
                if limit.is_some_and(|l| *printed >= l) {
                    cancel.cancel();
                }
                Ok(n)
            }
            Output::View(table) => {
                let mut t = table.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = now_ms();
                t.apply(rows, now).map_err(|message| RunError::Operator { line: p.pos.line, message })?;
                t.expire(now);
                t.watermark = (watermark > i64::MIN).then_some(watermark);
                for r in readers {
                    for (partition, offset) in &r.next {
                        t.offsets.insert((r.kafka().topic.clone(), *partition), *offset);
                    }
                }
                Ok(rows.num_rows() as u64)
            }
        }
    }

    /// For an exactly-once sink, the checkpoint whose results are committed (`Some(None)`: none
    /// yet); `None` for other outputs (the newest checkpoint is theirs).
    fn committed_checkpoint(&self) -> Option<Option<u64>> {
        match self {
            Output::Kafka { transactions: Some(t), .. } => Some(t.committed),
            _ => None,
        }
    }

    /// Checkpoint `number` is written: an exactly-once sink commits its transaction with it.
    fn checkpointed(&mut self, number: u64) -> Result<(), RunError> {
        let Output::Kafka { table, producer, transactions: Some(t), .. } = self else { return Ok(()) };
        let kafka_error = |what: &str, e: rdkafka::error::KafkaError| table_error(&table.name, format!("{what} on {}: {e}", bootstrap(&table.kafka)));
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&t.topic, 0, Offset::Offset(number as i64));
        let metadata = t.consumer.group_metadata().ok_or_else(|| table_error(&table.name, "no group metadata for the transaction"))?;
        producer.send_offsets_to_transaction(&tpl, &metadata, Duration::from_secs(60)).map_err(|e| kafka_error("cannot add the checkpoint to the transaction", e))?;
        producer.commit_transaction(Duration::from_secs(60)).map_err(|e| kafka_error("cannot commit the transaction", e))?;
        t.committed = Some(number);
        producer.begin_transaction().map_err(|e| kafka_error("cannot begin a transaction", e))?;
        Ok(())
    }

    /// Waits until everything written so far is safe (acknowledged by the sink cluster).
    fn acknowledge(&self) -> Result<(), RunError> {
        match self {
            Output::Kafka { table, producer, .. } => acknowledge(producer, table),
            Output::View(_) | Output::Print { .. } => Ok(()),
        }
    }
}

/// One source table of a pipeline being read: its consumer and, per partition, where it is.
struct Reader<'a> {
    scan: &'a ScanTable,
    group: String,
    consumer: BaseConsumer,
    partitions: Vec<i32>,
    /// For a bounded table, each partition's end (exclusive).
    ends: Option<HashMap<i32, i64>>,
    done: HashMap<i32, bool>,
    marks: Watermarks,
    /// The next offset to read, per partition read from.
    next: HashMap<i32, i64>,
    /// Partitions read to their end in the batch being read.
    finished: Vec<i32>,
}

impl<'a> Reader<'a> {
    fn name(&self) -> &str {
        &self.scan.table.name
    }

    fn kafka(&self) -> &KafkaTable {
        &self.scan.table.kafka
    }

    /// The table's consumer and its topic's partitions.
    fn connect(scan: &'a ScanTable, idle: Option<Duration>) -> Result<Reader<'a>, RunError> {
        let (name, kafka) = (scan.table.name.as_str(), &scan.table.kafka);
        let group = kafka.group_id.clone().unwrap_or_else(|| format!("ferry-sql-{}", std::process::id()));
        let consumer: BaseConsumer = client_config(kafka)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "error")
            .create()
            .map_err(|e| table_error(name, format!("cannot create a consumer for {}: {e}", bootstrap(kafka))))?;
        let metadata = consumer
            .fetch_metadata(Some(&kafka.topic), Duration::from_secs(30))
            .map_err(|e| table_error(name, format!("cannot read topic {} on {}: {e}", kafka.topic, bootstrap(kafka))))?;
        let partitions: Vec<i32> = metadata.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
        if partitions.is_empty() {
            return Err(table_error(name, format!("topic {} does not exist on {}", kafka.topic, bootstrap(kafka))));
        }
        let mut marks = Watermarks::new(&partitions, idle, Instant::now());
        if scan.processing_time {
            marks = marks.processing_time();
        }
        Ok(Reader { scan, group, consumer, partitions, ends: None, done: HashMap::new(), marks, next: HashMap::new(), finished: Vec::new() })
    }

    /// Assigns the partitions: from a checkpoint's offsets where it has them (and its
    /// watermarks), as the table says elsewhere.
    fn start(&mut self, restored: Option<&checkpoint::SourceMeta>) -> Result<(), RunError> {
        let (name, kafka) = (self.scan.table.name.clone(), &self.scan.table.kafka);
        let fresh: Vec<i32> = self.partitions.iter().copied().filter(|q| !restored.is_some_and(|c| c.offsets.contains_key(q))).collect();
        let mut starts = if fresh.is_empty() { HashMap::new() } else { start_offsets(&self.consumer, kafka, &name, &self.group, &fresh)? };
        if let Some(c) = restored {
            for (partition, offset) in &c.offsets {
                if self.partitions.contains(partition) {
                    starts.insert(*partition, Offset::Offset(*offset));
                    self.next.insert(*partition, *offset);
                }
            }
            self.marks.restore(&c.watermarks.iter().map(|(q, w)| (*q, *w)).collect::<Vec<_>>(), c.watermark);
        }
        self.ends = end_offsets(&self.consumer, kafka, &name, &self.partitions)?;
        if self.ends.is_some() {
            // A bounded table starts at offsets, not "the beginning" or "the end": a partition
            // with nothing to read (empty, or its start at its end) is read to its end from
            // the start, since no record will ever say so.
            for (partition, offset) in starts.iter_mut() {
                if !matches!(offset, Offset::Offset(_)) {
                    let (low, high) = self.consumer.fetch_watermarks(&kafka.topic, *partition, Duration::from_secs(30)).map_err(|e| table_error(&name, format!("cannot read the offsets of topic {} partition {partition}: {e}", kafka.topic)))?;
                    *offset = Offset::Offset(if matches!(offset, Offset::End) { high } else { low });
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in &starts {
            tpl.add_partition_offset(&kafka.topic, *partition, *offset).map_err(|e| table_error(&name, e.to_string()))?;
        }
        self.consumer.assign(&tpl).map_err(|e| table_error(&name, format!("cannot assign topic {}: {e}", kafka.topic)))?;
        let ends = &self.ends;
        self.done = self.partitions.iter().map(|p| (*p, ends.as_ref().is_some_and(|e| starts.get(p).is_some_and(|s| matches!(s, Offset::Offset(o) if *o >= e[p]))))).collect();
        for (partition, d) in &self.done {
            if *d {
                self.marks.finish(*partition, Instant::now());
            }
        }
        Ok(())
    }

    /// Whether a bounded table has been read to its end.
    fn complete(&self) -> bool {
        self.ends.is_some() && self.done.values().all(|d| *d)
    }

    /// Records until `BATCH_RECORDS`, until `wait` has passed, or, once there are some, until
    /// the consumer has no more at hand: under load a batch fills from what librdkafka has
    /// fetched ahead, and a lightly loaded job does not hold a record back for the rest of
    /// `wait` (end-to-end latency, `benches/sql_latency.rs`).
    fn poll(&mut self, wait: Duration) -> Vec<Raw> {
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
                Some(Err(e)) => warn!(table = %self.scan.table.name, topic = %self.scan.table.kafka.topic, error = %e, "source consumer error (librdkafka retries)"),
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

    /// Partitions read to their end count as +∞ for the watermark.
    fn finish_partitions(&mut self) {
        for f in self.finished.drain(..) {
            self.marks.finish(f, Instant::now());
        }
    }

    /// The rows of a batch, each with the watermark it arrived under.
    fn rows(&mut self, batch: &[Raw]) -> Result<(Rows, u64), RunError> {
        let Decoded { rows, partitions, skipped, kinds } = decode_batch(self.scan, batch)?;
        let watermarks = match &self.scan.watermark {
            Some((_, expr)) => {
                let name = &self.scan.table.name;
                let values = expr.evaluate(&rows).and_then(|v| v.into_array(rows.num_rows())).map_err(|e| table_error(name, format!("the WATERMARK expression: {e}")))?;
                let values = arrow::compute::cast(&values, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(|e| table_error(name, format!("the WATERMARK expression: {e}")))?;
                let values = values.as_any().downcast_ref::<TimestampMillisecondArray>().map(|a| a.iter().collect::<Vec<_>>()).unwrap_or_default();
                Some(Int64Array::from(self.marks.observe(&partitions, &values, Instant::now())))
            }
            None => None,
        };
        self.finish_partitions();
        Ok((Rows { batch: rows, kinds, watermarks }, skipped))
    }

    fn no_rows(&self) -> Rows {
        Rows::new(RecordBatch::new_empty(format::nullable_like(&self.scan.schema)))
    }

    fn meta(&self) -> checkpoint::SourceMeta {
        let (parts, watermark) = self.marks.snapshot();
        checkpoint::SourceMeta { topic: self.scan.table.kafka.topic.clone(), offsets: self.next.iter().map(|(q, o)| (*q, *o)).collect(), watermarks: parts.into_iter().collect(), watermark }
    }

    fn commit(&self, mode: CommitMode, failure: &str) {
        if self.kafka().group_id.is_some() && !self.next.is_empty() {
            commit_offsets(&self.consumer, &self.kafka().topic, &self.next, mode, self.name(), &self.group, failure);
        }
    }
}

fn run_pipeline(index: usize, p: &Pipeline, options: &Options, cancel: &CancellationToken) -> Result<PipelineStats, RunError> {
    let name = p.source.table.name.as_str();
    // The pipeline's source, and the table a join reads.
    let mut readers = vec![Reader::connect(&p.source, idle_timeout(p))?];
    if let Some(Step::Join(j)) = p.steps.first() {
        readers.push(Reader::connect(&j.right, idle_timeout(p))?);
    }
    let line = p.pos.line;
    let operator_error = |message: String| RunError::Operator { line, message };
    let mut ops = Operators::new(&p.steps).map_err(operator_error)?;
    // A checkpoint gives the offsets of the partitions it names; the others start as the table says.
    let checkpoints = options.state_dir.as_deref().map(|d| checkpoint::directory(d, p));
    let mut output = Output::open(p, &options.views, options.sample_limit, checkpoints.as_deref(), cancel)?;
    let restored = match (&checkpoints, output.committed_checkpoint()) {
        // An exactly-once sink: the checkpoint its committed results match (a later one was
        // written but its transaction never committed).
        (Some(dir), Some(committed)) => match committed {
            Some(n) => Some(checkpoint::read(dir, n, ops.slots()).map_err(|m| table_error(name, m))?.ok_or_else(|| table_error(name, format!("the sink committed checkpoint {n}, which {} does not hold", dir.display())))?),
            None => None,
        },
        (Some(dir), None) => checkpoint::read_latest(dir, ops.slots()).map_err(|m| table_error(name, m))?,
        (None, _) => None,
    }
    .filter(|c| c.meta.sources().iter().map(|s| s.topic.as_str()).eq(readers.iter().map(|r| r.kafka().topic.as_str())));
    for (k, reader) in readers.iter_mut().enumerate() {
        let meta = restored.as_ref().map(|c| c.meta.sources());
        reader.start(meta.as_ref().and_then(|m| m.get(k)))?;
    }

    let sink_name = p.sink.name().to_string();
    let sources: Vec<&str> = readers.iter().map(|r| r.kafka().topic.as_str()).collect();
    info!(source = %name, topics = ?sources, sink = %sink_name, partitions = readers.iter().map(|r| r.partitions.len()).sum::<usize>(), bounded = readers.iter().all(|r| r.ends.is_some()), "pipeline running");

    let labels = [("source", name.to_string()), ("sink", sink_name.clone())];
    let records_in = counter!("ferry_sql_records_in_total", &labels);
    let records_out = counter!("ferry_sql_records_out_total", &labels);
    let skipped = counter!("ferry_sql_records_skipped_total", &labels);
    let late = counter!("ferry_sql_late_records_total", &labels);
    let expired = counter!("ferry_sql_state_expired_rows_total", &labels);
    let state_rows = gauge!("ferry_sql_state_rows", &labels);
    let watermark_lag = gauge!("ferry_sql_watermark_lag_seconds", &labels);
    // Until checkpoints keep state with the offsets, a pipeline with state commits its source
    // offsets only once a bounded input has been read and every result written: a restart
    // replays what the lost state held (at least once), never skips it.
    let stateful = p.steps.iter().any(|s| matches!(s, Step::Aggregate(_) | Step::Changelog(_) | Step::Join(_)));
    let mut stats = PipelineStats::default();
    let mut checkpoint_number = 0;
    if let Some(c) = restored {
        ops.restore(c.steps).map_err(|m| operator_error(format!("checkpoint {}: {m}", c.number)))?;
        if let (Output::View(table), Some(rows)) = (&output, &c.view) {
            table.write().unwrap_or_else(std::sync::PoisonError::into_inner).restore(rows).map_err(|m| operator_error(format!("checkpoint {}: {m}", c.number)))?;
        }
        checkpoint_number = c.number;
        info!(source = %name, sink = %sink_name, checkpoint = c.number, offsets = ?c.meta.offsets, state_rows = ops.state_rows(), "resumed from a checkpoint");
    }
    let interval = p.checkpoint_interval.unwrap_or(Duration::from_secs(10));
    let mut last_checkpoint = Instant::now();
    // Whether anything was read or written since the last checkpoint.
    let mut changed = false;
    macro_rules! checkpoint_if_due {
        () => {
            if let Some(dir) = checkpoints.as_deref().filter(|_| changed && last_checkpoint.elapsed() >= interval) {
                checkpoint_number += 1;
                take_checkpoint(dir, checkpoint_number, &mut ops, &output, &readers).map_err(|m| table_error(name, m))?;
                output.checkpointed(checkpoint_number)?;
                last_checkpoint = Instant::now();
                changed = false;
                for r in &readers {
                    r.commit(CommitMode::Async, "cannot commit the source offsets (retried at the next checkpoint)");
                }
            }
        };
    }
    // Each source's watermark: the join and what follows it take the least.
    let watermarks = |readers: &mut Vec<Reader<'_>>| -> [i64; 2] {
        let now = Instant::now();
        let first = readers[0].marks.tick(now);
        [first, readers.get_mut(1).map_or(first, |r| r.marks.tick(now))]
    };
    let mut fired_under = i64::MIN;
    let wait = BATCH_WAIT / readers.len() as u32;
    loop {
        if readers.iter().all(Reader::complete) || cancel.is_cancelled() {
            break;
        }
        for k in 0..readers.len() {
            let batch = readers[k].poll(wait);
            let rows = if batch.is_empty() {
                readers[k].finish_partitions();
                let marks = watermarks(&mut readers);
                // Nothing read: only a watermark that moved (an idle or finished partition) has
                // work for a window aggregate or an interval join.
                if !stateful || marks[0].min(marks[1]) <= fired_under {
                    continue;
                }
                readers[k].no_rows()
            } else {
                stats.records_in += batch.len() as u64;
                records_in.increment(batch.len() as u64);
                let (rows, skipped_now) = readers[k].rows(&batch)?;
                stats.skipped += skipped_now;
                skipped.increment(skipped_now);
                rows
            };
            let marks = watermarks(&mut readers);
            let watermark = marks[0].min(marks[1]);
            let (late_before, expired_before) = (ops.late, ops.expired());
            let out = ops.process_side(k, rows, marks).map_err(operator_error)?;
            fired_under = watermark;
            stats.late += ops.late - late_before;
            late.increment(ops.late - late_before);
            stats.expired += ops.expired() - expired_before;
            expired.increment(ops.expired() - expired_before);
            state_rows.set(ops.state_rows() as f64);
            if watermark > i64::MIN && watermark < i64::MAX {
                watermark_lag.set((now_ms() - watermark) as f64 / 1000.0);
            }
            let written = output.write(p, &out, watermark, &readers)?;
            stats.records_out += written;
            records_out.increment(written);
            output.acknowledge()?;
            changed = true;
            publish(options, index, &stats, ops.state_rows(), watermark);
            if !stateful {
                readers[k].commit(CommitMode::Async, "cannot commit the source offsets (retried with the next batch)");
            }
        }
        // Idle or not: what the last batches changed is checkpointed on time.
        checkpoint_if_due!();
    }
    let completed = readers.iter().all(Reader::complete) && !cancel.is_cancelled();
    if completed && stateful {
        // The end of a bounded input: every window fires, every interval join row leaves.
        for k in 0..readers.len() {
            let out = ops.process_side(k, readers[k].no_rows(), [i64::MAX, i64::MAX]).map_err(operator_error)?;
            let written = output.write(p, &out, i64::MAX, &readers)?;
            stats.records_out += written;
            records_out.increment(written);
        }
        output.acknowledge()?;
    }
    if let Some(dir) = checkpoints.as_deref() {
        checkpoint_number += 1;
        take_checkpoint(dir, checkpoint_number, &mut ops, &output, &readers).map_err(|m| table_error(name, m))?;
        output.checkpointed(checkpoint_number)?;
    }
    if !stateful || completed || checkpoints.is_some() {
        for r in &readers {
            r.commit(CommitMode::Sync, "cannot commit the source offsets at the end");
        }
    }
    publish(options, index, &stats, ops.state_rows(), readers.iter().map(|r| r.marks.current()).min().unwrap_or(i64::MIN));
    info!(source = %name, sink = %sink_name, records_in = stats.records_in, records_out = stats.records_out, skipped = stats.skipped, late = stats.late, expired = stats.expired, "pipeline finished");
    Ok(stats)
}

/// The pipeline's counters into the job's progress (when its reports are kept).
fn publish(options: &Options, index: usize, stats: &PipelineStats, state_rows: usize, watermark: i64) {
    let mut progress = options.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = progress.get_mut(index) {
        (p.records_in, p.records_out, p.skipped, p.late, p.expired) = (stats.records_in, stats.records_out, stats.skipped, stats.late, stats.expired);
        p.state_rows = state_rows as u64;
        p.watermark_ms = (watermark > i64::MIN && watermark < i64::MAX).then_some(watermark);
    }
}

/// Writes checkpoint `number`: the offsets after everything written (and acknowledged), the
/// watermarks, the operators' state and the view's rows.
fn take_checkpoint(dir: &std::path::Path, number: u64, ops: &mut Operators<'_>, output: &Output<'_>, readers: &[Reader<'_>]) -> Result<(), String> {
    let steps = ops.snapshot()?;
    let view = match output {
        Output::View(t) => Some(t.read().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot()?),
        _ => None,
    };
    let meta = checkpoint::Meta::new(readers[0].meta(), readers.get(1).map(Reader::meta), now_ms());
    checkpoint::write(dir, number, &meta, &steps, view.as_ref())?;
    tracing::debug!(dir = %dir.display(), number, state_rows = ops.state_rows(), "checkpoint written");
    Ok(())
}

/// Commits the next offsets to the table's group; a failure is `failure`, logged (the next
/// commit carries the offsets again).
fn commit_offsets(consumer: &BaseConsumer, topic: &str, next: &HashMap<i32, i64>, mode: CommitMode, name: &str, group: &str, failure: &str) {
    let mut commit = TopicPartitionList::new();
    for (partition, offset) in next {
        let _ = commit.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    if let Err(e) = consumer.commit(&commit, mode) {
        warn!(table = %name, group = %group, error = %e, "{failure}");
    }
}

/// Waits until everything produced so far is acknowledged by the sink cluster.
///
/// It waits for the delivery reports rather than calling librdkafka's flush, which wakes up only
/// every 100 ms while it waits (measured: every batch took 100 ms, a third of the naive relay's
/// throughput).
fn acknowledge(producer: &ThreadedProducer<DeliveryCounter>, sink: &crate::catalog::Table) -> Result<(), RunError> {
    let context = producer.context();
    let sent = context.sent.load(Ordering::Acquire);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Sends what lingers now, rather than after linger.ms.
    let _ = producer.flush(Duration::ZERO);
    while context.answered.load(Ordering::Acquire) < sent {
        if Instant::now() > deadline {
            return Err(table_error(&sink.name, format!("writes to topic {} on {} were not acknowledged within 60 s", sink.kafka.topic, bootstrap(&sink.kafka))));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        let e = producer.context().first_error.lock().unwrap().clone().unwrap_or_default();
        return Err(table_error(&sink.name, format!("{failed} records could not be written to topic {} on {}: {e}", sink.kafka.topic, bootstrap(&sink.kafka))));
    }
    Ok(())
}

fn now_ms() -> i64 {
    crate::watermark::wall_clock_ms()
}

/// `SET 'table.exec.source.idle-timeout'` (checked when the job was planned).
fn idle_timeout(p: &Pipeline) -> Option<Duration> {
    p.idle_timeout.filter(|d| !d.is_zero())
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
fn decode_batch(scan: &ScanTable, batch: &[Raw]) -> Result<Decoded, RunError> {
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
struct Decoded {
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

/// Produces the rows of `out` (the sink's persisted columns) to the sink topic.
///
/// A changelog goes to an upsert-kafka table folded by key within the batch: the last change of
/// each key is written, a row for +I and +U, a tombstone for -U and -D (a row taken back and not
/// replaced, as after a HAVING that no longer holds).
fn write(p: &Pipeline, producer: &ThreadedProducer<DeliveryCounter>, rows: &Rows, round_robin: &mut i32, partitions: i32) -> Result<u64, RunError> {
    let out = &rows.batch;
    if out.num_rows() == 0 {
        return Ok(0);
    }
    let Sink::Table(scan) = &p.sink else { unreachable!("a view is written by Output::View") };
    let sink = &scan.table;
    let kafka = &sink.kafka;
    let pick = |keep: &dyn Fn(&ColumnSource) -> bool, strip: bool| -> Option<RecordBatch> {
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for ((_, c), (f, a)) in sink.persisted().zip(out.schema().fields().iter().zip(out.columns())) {
            if keep(&c.source) {
                let name = if strip { c.name.strip_prefix(kafka.key_fields_prefix.as_str()).unwrap_or(&c.name) } else { &c.name };
                fields.push(f.as_ref().clone().with_name(name));
                columns.push(a.clone());
            }
        }
        (!fields.is_empty()).then(|| RecordBatch::try_new(format::nullable(fields), columns).expect("columns of the output"))
    };
    let values = pick(&|s| matches!(s, ColumnSource::Physical { in_value: true, .. }), false);
    let keys = pick(&|s| matches!(s, ColumnSource::Physical { in_key: true, .. }), true);
    let values = match values {
        Some(v) => format::encode(&kafka.value_format, &v).map_err(|e| table_error(&sink.name, e))?,
        None => vec![None; out.num_rows()],
    };
    let keys = match (&kafka.key_format, keys) {
        (Some(f), Some(k)) => format::encode(f, &k).map_err(|e| table_error(&sink.name, e))?,
        _ => vec![None; out.num_rows()],
    };
    let column_of = |key: MetadataKey| sink.persisted().position(|(_, c)| matches!(c.source, ColumnSource::Metadata { key: k, .. } if k == key)).map(|i| out.column(i).clone());
    let timestamps = column_of(MetadataKey::Timestamp).and_then(|a| arrow::compute::cast(&a, &DataType::Timestamp(TimeUnit::Millisecond, None)).ok());
    let timestamps = timestamps.as_ref().and_then(|a| a.as_any().downcast_ref::<TimestampMillisecondArray>().cloned());
    let headers = column_of(MetadataKey::Headers);
    let headers = headers.as_ref().and_then(|a| a.as_any().downcast_ref::<MapArray>().cloned());
    let selected: Vec<(usize, bool)> = match &rows.kinds {
        Some(_) if kafka.upsert => {
            let mut last: HashMap<Option<&[u8]>, usize> = HashMap::new();
            for (row, k) in keys.iter().enumerate() {
                last.insert(k.as_deref(), row);
            }
            (0..out.num_rows()).filter(|row| last.get(&keys[*row].as_deref()) == Some(row)).map(|row| (row, !rows.kind(row).adds())).collect()
        }
        Some(_) => (0..out.num_rows()).filter(|row| rows.kind(*row).adds()).map(|row| (row, false)).collect(),
        None => (0..out.num_rows()).map(|row| (row, false)).collect(),
    };
    let written = selected.len() as u64;
    for (row, tombstone) in selected {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&kafka.topic);
        if let Some(k) = &keys[row] {
            record = record.key(k.as_slice());
        }
        if let Some(v) = values[row].as_ref().filter(|_| !tombstone) {
            record = record.payload(v.as_slice());
        }
        if let Some(ts) = timestamps.as_ref().filter(|t| t.is_valid(row)) {
            record = record.timestamp(ts.value(row));
        }
        if let Some(h) = headers.as_ref().filter(|h| h.is_valid(row)) {
            let entries = h.value(row);
            let names = entries.column(0).as_any().downcast_ref::<StringArray>().cloned();
            let bytes = entries.column(1).as_any().downcast_ref::<BinaryArray>().cloned();
            if let (Some(names), Some(bytes)) = (names, bytes) {
                let mut owned = OwnedHeaders::new();
                for i in 0..names.len() {
                    owned = owned.insert(Header { key: names.value(i), value: bytes.is_valid(i).then(|| bytes.value(i)) });
                }
                record = record.headers(owned);
            }
        }
        match kafka.partitioner {
            SinkPartitioner::Default => {}
            SinkPartitioner::Fixed => record = record.partition(0),
            SinkPartitioner::RoundRobin => {
                record = record.partition(*round_robin % partitions.max(1));
                *round_robin = round_robin.wrapping_add(1) & i32::MAX;
            }
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => {
                    producer.context().sent.fetch_add(1, Ordering::Release);
                    break;
                }
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    pending = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(table_error(&sink.name, format!("cannot write to topic {}: {e}", kafka.topic))),
            }
        }
    }
    Ok(written)
}
