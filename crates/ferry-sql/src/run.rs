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

use arrow::array::{Array, BinaryArray, MapArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use metrics::{counter, gauge};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::{ColumnSource, KafkaTable, MetadataKey, SinkPartitioner};
use crate::checkpoint;
use crate::format;
use crate::ops::{Rows, Step};
use crate::source::Reader;
use crate::subtasks::Subtasks;
use crate::plan::{Job, Pipeline, Sink};
use crate::view::{ViewTable, Views};

/// Records per batch at most, and how long a batch waits to fill.
pub(crate) const BATCH_RECORDS: usize = 4096;
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
    /// `sample`: where each row goes (`{"kind":"+I","row":{…}}`) instead of stdout; it answers
    /// false once nobody reads (the job is then cancelled).
    pub sample_to: Option<SampleSink>,
    /// Each pipeline's counters as it runs, for the job's reports ([`crate::report`]); filled
    /// from [`crate::report::initial`] or left empty (not kept).
    pub progress: Progress,
    /// Subtasks per pipeline when the job does not `SET 'parallelism.default'`; 0: the
    /// machine's cores.
    pub parallelism: usize,
}

/// Takes a sampled row; false when its reader has gone.
pub type SampleSink = Arc<dyn Fn(String) -> bool + Send + Sync>;

/// Each pipeline's progress, shared with the reporter.
pub type Progress = std::sync::Arc<std::sync::Mutex<Vec<ferry_kafka::job_report::PipelineReport>>>;

/// Runs a job with `options`.
pub fn run_with_options(job: &Job, options: &Options, cancel: &CancellationToken) -> Result<Vec<PipelineStats>, RunError> {
    run_with(job, options, cancel)
}

/// As [`sample`], each row to `to` rather than stdout (ended early when `to` answers false).
pub fn sample_into(job: &Job, limit: Option<u64>, to: SampleSink, cancel: &CancellationToken) -> Result<Vec<PipelineStats>, RunError> {
    run_with(job, &Options { sample_limit: limit, sample_to: Some(to), ..Options::default() }, cancel)
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

pub(crate) fn table_error(table: &str, message: impl Into<String>) -> RunError {
    RunError::Table { table: table.to_string(), message: message.into() }
}

pub(crate) fn client_config(kafka: &KafkaTable) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}

pub(crate) fn bootstrap(kafka: &KafkaTable) -> &str {
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
    /// `ferry sql sample`: each row on stdout (`+I {"col": …}`), or to `to`, until `limit` rows,
    /// then the job is cancelled.
    Print { limit: Option<u64>, printed: u64, cancel: CancellationToken, to: Option<SampleSink> },
}

impl<'a> Output<'a> {
    fn open(p: &'a Pipeline, options: &Options, checkpoints: Option<&std::path::Path>, cancel: &CancellationToken) -> Result<Output<'a>, RunError> {
        let scan = match &p.sink {
            Sink::Print(_) => return Ok(Output::Print { limit: options.sample_limit, printed: 0, cancel: cancel.clone(), to: options.sample_to.clone() }),
            Sink::View(v) => {
                let table = options.views.get(&v.name).cloned().ok_or_else(|| RunError::Operator { line: p.pos.line, message: format!("view {} has no table", v.name) })?;
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
            Output::Print { limit, printed, cancel, to } => {
                use std::io::Write;
                let lines = crate::materialize::json_rows(&rows.batch).map_err(|message| RunError::Operator { line: p.pos.line, message })?;
                let mut out = std::io::stdout().lock();
                let mut n = 0;
                for (i, line) in lines.iter().enumerate() {
                    if limit.is_some_and(|l| *printed >= l) {
                        break;
                    }
                    match to {
                        Some(to) => {
                            if !to(format!("{{\"kind\":\"{}\",\"row\":{line}}}", rows.kind(i).short())) {
                                // Its reader has gone: nothing more to sample for.
                                cancel.cancel();
                                break;
                            }
                        }
                        None => {
                            let _ = writeln!(out, "{} {line}", rows.kind(i).short());
                        }
                    }
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
                    for (partition, offset) in r.next() {
                        t.offsets.insert((r.kafka().topic.clone(), partition), offset);
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

fn run_pipeline(index: usize, p: &Pipeline, options: &Options, cancel: &CancellationToken) -> Result<PipelineStats, RunError> {
    let name = p.source.table.name.as_str();
    // The pipeline's source, and the table a join reads.
    let line = p.pos.line;
    let operator_error = |message: String| RunError::Operator { line, message };
    // A checkpoint gives the offsets of the partitions it names; the others start as the table says.
    let checkpoints = options.state_dir.as_deref().map(|d| checkpoint::directory(d, p));
    let mut output = Output::open(p, options, checkpoints.as_deref(), cancel)?;
    let joined = match p.steps.first() {
        Some(Step::Join(j)) => Some(&j.right),
        _ => None,
    };
    let topics: Vec<&str> = std::iter::once(&p.source).chain(joined).map(|s| s.table.kafka.topic.as_str()).collect();
    let slots = |parallelism: usize| Subtasks::slots_for(&p.steps, parallelism);
    let restored = match (&checkpoints, output.committed_checkpoint()) {
        // An exactly-once sink: the checkpoint its committed results match (a later one was
        // written but its transaction never committed).
        (Some(dir), Some(committed)) => match committed {
            Some(n) => Some(checkpoint::read(dir, n, slots).map_err(|m| table_error(name, m))?.ok_or_else(|| table_error(name, format!("the sink committed checkpoint {n}, which {} does not hold", dir.display())))?),
            None => None,
        },
        (Some(dir), None) => checkpoint::read_latest(dir, slots).map_err(|m| table_error(name, m))?,
        (None, _) => None,
    }
    .filter(|c| c.meta.sources().iter().map(|s| s.topic.as_str()).eq(topics.iter().copied()));
    // A checkpoint's keyed state is partitioned for its parallelism: a restart keeps it.
    let parallelism = match (&restored, p.parallelism) {
        (Some(c), Some(set)) if c.meta.parallelism != set => {
            return Err(table_error(name, format!("checkpoint {} was taken with parallelism {}, and the job sets 'parallelism.default' = '{set}': keyed state cannot be re-partitioned; set {} or start with an empty --state-dir", c.number, c.meta.parallelism, c.meta.parallelism)));
        }
        (Some(c), _) => c.meta.parallelism,
        (None, set) => set.unwrap_or(if options.parallelism > 0 { options.parallelism } else { std::thread::available_parallelism().map_or(1, usize::from) }),
    };
    let mut ops = Subtasks::new(&p.steps, parallelism).map_err(operator_error)?;
    let mut readers = vec![Reader::connect(&p.source, idle_timeout(p), parallelism)?];
    if let Some(right) = joined {
        readers.push(Reader::connect(right, idle_timeout(p), parallelism)?);
    }
    for (k, reader) in readers.iter_mut().enumerate() {
        let meta = restored.as_ref().map(|c| c.meta.sources());
        reader.start(meta.as_ref().and_then(|m| m.get(k)))?;
    }

    let sink_name = p.sink.name().to_string();
    let sources: Vec<&str> = readers.iter().map(|r| r.kafka().topic.as_str()).collect();
    info!(source = %name, topics = ?sources, sink = %sink_name, partitions = readers.iter().map(|r| r.partitions.len()).sum::<usize>(), bounded = readers.iter().all(Reader::bounded), parallelism, "pipeline running");

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
            let (mut chunks, records, skipped_now) = readers[k].read(wait)?;
            if records == 0 {
                let marks = watermarks(&mut readers);
                // Nothing read: only a watermark that moved (an idle or finished partition) has
                // work for a window aggregate or an interval join.
                if !stateful || marks[0].min(marks[1]) <= fired_under {
                    continue;
                }
            }
            if chunks.is_empty() {
                chunks.push(readers[k].no_rows());
            }
            stats.records_in += records;
            records_in.increment(records);
            stats.skipped += skipped_now;
            skipped.increment(skipped_now);
            let marks = watermarks(&mut readers);
            let watermark = marks[0].min(marks[1]);
            let (late_before, expired_before) = (ops.late(), ops.expired());
            let out = ops.process_side(k, chunks, marks).map_err(operator_error)?;
            fired_under = watermark;
            stats.late += ops.late() - late_before;
            late.increment(ops.late() - late_before);
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
            let out = ops.process_side(k, vec![readers[k].no_rows()], [i64::MAX, i64::MAX]).map_err(operator_error)?;
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
fn take_checkpoint(dir: &std::path::Path, number: u64, ops: &mut Subtasks<'_>, output: &Output<'_>, readers: &[Reader<'_>]) -> Result<(), String> {
    let steps = ops.snapshot()?;
    let view = match output {
        Output::View(t) => Some(t.read().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot()?),
        _ => None,
    };
    let meta = checkpoint::Meta::new(readers[0].meta(), readers.get(1).map(Reader::meta), now_ms(), ops.parallelism());
    checkpoint::write(dir, number, &meta, &steps, view.as_ref())?;
    tracing::debug!(dir = %dir.display(), number, state_rows = ops.state_rows(), "checkpoint written");
    Ok(())
}

/// Commits the next offsets to the table's group; a failure is `failure`, logged (the next
/// commit carries the offsets again).
pub(crate) fn commit_offsets(consumer: &BaseConsumer, topic: &str, next: &HashMap<i32, i64>, mode: CommitMode, name: &str, group: &str, failure: &str) {
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
