//! The data path: a dedicated thread per relay moves records from its assigned source
//! partitions to the same partitions of their remote topics, preserving key, value, headers
//! and timestamp. One librdkafka consumer per relay (assign-only, no group), one idempotent
//! producer per flow shared by its relays; the producer's delivery callback records what the
//! target acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_kafka::ClusterClient;
use metrics::{counter, Counter, Histogram};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Timestamp, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::progress::{pack, unpack, ProgressTable, SharedProgress};
use crate::provenance::{self, PROVENANCE_HEADER};
use crate::source_position::{self, SourceVerdict};
use crate::telemetry;

/// Sample one latency in this many deliveries per partition.
const LATENCY_SAMPLE: u64 = 16;

/// What the flow asks a relay to do.
pub(crate) enum RelayCommand {
    /// Start replicating these partitions from their `consumed_next` position.
    Assign(Vec<SharedProgress>),
    /// Stop replicating these partitions and confirm: after the confirmation the relay sends
    /// nothing more of them (handover to another process, or their last positions stored).
    Release(Vec<SharedProgress>, std::sync::mpsc::Sender<()>),
}

/// The flow's data producer.
pub(crate) type DataProducer = ThreadedProducer<DeliveryContext>;

/// Where relays hand records to.
#[derive(Clone)]
pub(crate) enum Sink {
    /// At least once: the flow's idempotent producer.
    Plain(Arc<DataProducer>),
    /// Exactly once: the transactional producer behind the gate (see [`crate::txn::Gate`]).
    Transactional(Arc<crate::txn::Gate>),
}

impl Sink {
    /// The producer in use now (a transactional one may have been replaced since).
    pub(crate) fn current(&self) -> Arc<DataProducer> {
        match self {
            Sink::Plain(p) => p.clone(),
            Sink::Transactional(gate) => gate.read().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// The target producer's callbacks: acknowledgements update partition progress.
pub(crate) struct DeliveryContext {
    pub(crate) flow: String,
    pub(crate) target: String,
    pub(crate) table: Arc<ProgressTable>,
    pub(crate) rewind_pending: Arc<AtomicBool>,
    pub(crate) latency: Histogram,
    pub(crate) last_latency_ms: Arc<AtomicI64>,
    pub(crate) delivery_errors: Counter,
    pub(crate) unreachable: Counter,
    pub(crate) errors_logged: telemetry::Throttle,
    /// Exactly-once mode: a failure of the producer itself (fenced, fatal) is not the
    /// partition's; the transaction is aborted and the producer replaced.
    pub(crate) transactional: bool,
}

/// Whether a failed delivery stops its partition for good.
pub(crate) fn stops_partition(error: &KafkaError, transactional: bool) -> bool {
    ferry_kafka::classify(error) == ferry_kafka::ErrorKind::Fatal && !(transactional && crate::txn::producer_failed(error))
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.unreachable.increment(1);
        if let Some(suppressed) = self.errors_logged.allow(Instant::now()) {
            warn!(flow = %self.flow, cluster = %self.target, %error, reason, suppressed,
                "target cluster client error (librdkafka retries; repeats suppressed for 10 s)");
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (epoch, source_offset) = unpack(opaque);
        let message = match result {
            Ok(m) => {
                // Any acknowledgement shows the target answers (stall watchdog), including
                // those of partitions that left this process meanwhile.
                self.table.acknowledged.fetch_add(1, Ordering::Relaxed);
                m
            }
            Err((_, m)) => m,
        };
        let Some(progress) = self.table.get(message.topic(), message.partition()) else {
            return; // heartbeats and partitions unassigned meanwhile
        };
        let mut p = progress.lock().unwrap();
        match result {
            Ok(m) => {
                let bytes = m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
                p.acknowledged(epoch, source_offset, m.offset(), bytes);
                let ts = m.timestamp().to_millis();
                if let Some(ts) = ts {
                    p.last_timestamp_ms = p.last_timestamp_ms.max(ts);
                }
                if p.deliveries % LATENCY_SAMPLE == 1 {
                    if let Some(ts) = ts {
                        let ms = (now_ms() - ts).max(0);
                        self.latency.record(ms as f64 / 1000.0);
                        self.last_latency_ms.store(ms, Ordering::Relaxed);
                        p.latency_samples.record(ms);
                    }
                }
            }
            Err((e, _)) => {
                self.delivery_errors.increment(1);
                let fatal = stops_partition(e, self.transactional).then(|| e.to_string());
                if let Some(reason) = &fatal {
                    // Once per partition: the records after it in the same batch fail with it.
                    if p.failed.is_none() {
                        error!(flow = %self.flow, topic = %p.remote_topic, partition = p.partition, source_offset, %reason,
                            "delivery failed permanently: partition stopped, nothing after it is replicated");
                    }
                } else if p.rewind_to.is_none() {
                    warn!(flow = %self.flow, topic = %p.remote_topic, partition = p.partition, source_offset, error = %e,
                        "delivery failed: re-sending from this offset");
                }
                p.delivery_failed(epoch, source_offset, fatal);
                self.rewind_pending.store(true, Ordering::Release);
            }
        }
    }
}

/// How long librdkafka may report a partition's fetcher as stopped before the relay checks it
/// and restarts it (statistics arrive every second).
const FETCH_STOPPED_AFTER: Duration = Duration::from_secs(5);
/// Exactly-once: how long a relay waits on a full producer queue (holding the gate) before it
/// gives the record up to be re-sent.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(5);
/// A partition that delivered no record for this long (since its assignment or its last record)
/// while the source has records it can fetch and nothing waits on the target.
const NOT_DELIVERING_AFTER: Duration = Duration::from_secs(10);

/// Why [`Relay::check_positions`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    OutOfRange,
    Stopped,
}

/// The source consumer's callbacks: statistics give watermarks; errors are reported.
pub(crate) struct SourceContext {
    pub(crate) flow: String,
    pub(crate) source: String,
    pub(crate) bootstrap: String,
    pub(crate) table: Arc<ProgressTable>,
    pub(crate) unreachable: Counter,
    pub(crate) errors_logged: telemetry::Throttle,
    /// Set when librdkafka reports an out-of-range fetch as a client error (it may not come
    /// back from `poll` as well): the relay checks positions either way.
    pub(crate) out_of_range: Arc<AtomicBool>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (partition, stats) in &topic.partitions {
                if *partition < 0 {
                    continue;
                }
                if let Some(progress) = self.table.by_source(name, *partition) {
                    let mut p = progress.lock().unwrap();
                    if stats.hi_offset >= 0 {
                        p.high_watermark = stats.hi_offset;
                    }
                    if stats.lo_offset >= 0 {
                        p.log_start = stats.lo_offset;
                    }
                    if stats.ls_offset >= 0 {
                        p.stable_end = stats.ls_offset;
                    }
                    p.fetch_next = stats.next_offset;
                    if matches!(stats.fetch_state.as_str(), "none" | "stopped") {
                        if p.fetch_stopped.is_none() {
                            p.fetch_stopped = Some((Instant::now(), stats.fetch_state.clone()));
                        }
                    } else {
                        p.fetch_stopped = None;
                    }
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)) {
            self.out_of_range.store(true, Ordering::Release);
        }
        self.unreachable.increment(1);
        if let Some(suppressed) = self.errors_logged.allow(Instant::now()) {
            warn!(flow = %self.flow, cluster = %self.source, bootstrap = %self.bootstrap, %error, reason, suppressed,
                "source cluster client error (librdkafka retries; repeats suppressed for 10 s)");
        }
    }
}

impl ConsumerContext for SourceContext {}

/// Everything a relay thread needs.
pub(crate) struct Relay {
    pub(crate) flow: String,
    pub(crate) source: ClusterClient,
    /// The flow's target (its alias for provenance; read when a source log must be compared
    /// with what was replicated).
    pub(crate) target: ClusterClient,
    pub(crate) identity_policy: bool,
    pub(crate) table: Arc<ProgressTable>,
    pub(crate) sink: Sink,
    pub(crate) rewind_pending: Arc<AtomicBool>,
    pub(crate) commands: Receiver<RelayCommand>,
    pub(crate) cancel: CancellationToken,
}

struct Route {
    remote: Arc<str>,
    progress: SharedProgress,
    /// When this relay (re)assigned the partition or last forwarded one of its records.
    idle_since: std::cell::Cell<Instant>,
}

impl Relay {
    pub(crate) fn consumer_config(source: &ClusterClient) -> ClientConfig {
        // Ferry's defaults for the data path; the user's `<alias>.consumer.*` settings win.
        source.client_config_with_defaults(
            ferry_kafka::ClientRole::Consumer,
            &[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "error"),
                ("enable.partition.eof", "false"),
                ("statistics.interval.ms", "1000"),
                ("fetch.wait.max.ms", crate::relay_defaults::FETCH_WAIT_MAX_MS),
                // When the local fetch queue is over its threshold, librdkafka (2.4+) postpones
                // the partition's next fetch by this much (default 1000 ms): a full second of
                // nothing after every burst. The relay drains the queue in milliseconds.
                ("fetch.queue.backoff.ms", crate::relay_defaults::FETCH_QUEUE_BACKOFF_MS),
                ("group.id", "ferry-mirror-unused"),
            ],
        )
    }

    /// Runs until cancelled or the command channel closes. Blocking: call on its own thread.
    pub(crate) fn run(self) {
        let out_of_range_reported = Arc::new(AtomicBool::new(false));
        let context = || SourceContext {
            flow: self.flow.clone(),
            source: self.source.alias.clone(),
            bootstrap: self.source.bootstrap_servers.clone(),
            table: self.table.clone(),
            unreachable: counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => telemetry::kind::SOURCE_UNREACHABLE),
            errors_logged: telemetry::Throttle::new(Duration::from_secs(10)),
            out_of_range: out_of_range_reported.clone(),
        };
        let make = || Self::consumer_config(&self.source).create_with_context(context());
        let mut consumer: BaseConsumer<SourceContext> = match make() {
            Ok(c) => c,
            Err(e) => {
                error!(flow = %self.flow, cluster = %self.source.alias, error = %e, "cannot create the source consumer");
                return;
            }
        };
        let mut last_recreated: Option<Instant> = None;
        let filtered = counter!(telemetry::FILTERED, "flow" => self.flow.clone());
        let truncated = counter!(telemetry::TRUNCATED, "flow" => self.flow.clone());
        let consume_errors = counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => telemetry::kind::CONSUME);
        let mut routes: HashMap<Arc<str>, Vec<Option<Route>>> = HashMap::new();
        let mut last_truncation_check = Instant::now() - Duration::from_secs(60);
        let mut out_of_range = false;
        let mut last_stopped_scan = Instant::now();
        // Consume errors repeat every poll while a cluster is down: log once per 10 s.
        let consume_warnings = telemetry::Throttle::new(Duration::from_secs(10));

        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            loop {
                match self.commands.try_recv() {
                    Ok(RelayCommand::Assign(parts)) => self.assign(&consumer, &mut routes, parts),
                    Ok(RelayCommand::Release(parts, done)) => {
                        self.unassign(&consumer, &mut routes, &parts);
                        let _ = done.send(());
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if self.rewind_pending.swap(false, Ordering::AcqRel) {
                self.rewind(&consumer, &mut routes);
            }
            // At most once a second, but never dropped: librdkafka reports an out-of-range
            // fetch once and then stops fetching the partition.
            out_of_range |= out_of_range_reported.swap(false, Ordering::AcqRel);
            if out_of_range && last_truncation_check.elapsed() > Duration::from_secs(1) {
                last_truncation_check = Instant::now();
                out_of_range = self.check_positions(&consumer, &routes, &truncated, Check::OutOfRange);
            }
            // Stopped fetchers: a scan that locks every partition, so once a second, not per record.
            if last_stopped_scan.elapsed() > Duration::from_secs(1) {
                last_stopped_scan = Instant::now();
                // Partitions that delivered no record for a while (since their assignment or
                // their last record) although the source has records they can fetch and nothing
                // waits on the target: seen on Kafka after a transaction abort, a lost session
                // and a reassignment within seconds, with librdkafka reporting no stopped
                // fetcher, both before a partition's first record and after some. The consumer
                // is made anew (at most once a minute) and every partition assigned to it again
                // at its position.
                let never_fetched = routes.values().flatten().flatten().filter(|r| r.idle_since.get().elapsed() > NOT_DELIVERING_AFTER && r.progress.lock().unwrap().fetchable_waiting()).count();
                if never_fetched > 0 && last_recreated.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_recreated = Some(Instant::now());
                    match make() {
                        Ok(fresh) => {
                            counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => telemetry::kind::PARTITION_STOPPED).increment(never_fetched as u64);
                            warn!(flow = %self.flow, cluster = %self.source.alias, partitions = never_fetched, after = ?NOT_DELIVERING_AFTER,
                                "PARTITION STOPPED: partitions of this relay delivered no record for this long although the source has records for them; the source consumer is made anew");
                            consumer = fresh;
                            let all: Vec<SharedProgress> = routes.values().flatten().flatten().map(|r| r.progress.clone()).collect();
                            routes.clear();
                            self.assign(&consumer, &mut routes, all);
                        }
                        Err(e) => warn!(flow = %self.flow, cluster = %self.source.alias, error = %e, "cannot make the source consumer anew"),
                    }
                }
                if routes.values().flatten().flatten().any(|r| r.progress.lock().unwrap().fetch_stopped.as_ref().is_some_and(|(at, _)| at.elapsed() > FETCH_STOPPED_AFTER)) {
                    last_truncation_check = Instant::now();
                    self.check_positions(&consumer, &routes, &truncated, Check::Stopped);
                }
            }
            let message = match consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset))) => {
                    out_of_range = true;
                    continue;
                }
                Some(Err(e)) => {
                    consume_errors.increment(1);
                    if let Some(suppressed) = consume_warnings.allow(Instant::now()) {
                        warn!(flow = %self.flow, cluster = %self.source.alias, bootstrap = %self.source.bootstrap_servers,
                            error = %e, suppressed, "consume error (librdkafka reconnects; repeats suppressed for 10 s)");
                    }
                    continue;
                }
            };
            self.table.consumed.fetch_add(1, Ordering::Relaxed);
            self.forward(&message, &routes, &filtered);
        }
    }

    fn forward(&self, message: &BorrowedMessage<'_>, routes: &HashMap<Arc<str>, Vec<Option<Route>>>, filtered: &Counter) {
        let Some(Some(route)) = routes.get(message.topic()).and_then(|r| r.get(message.partition() as usize)) else {
            return; // a message fetched just before its partition was unassigned
        };
        route.idle_since.set(Instant::now());
        // From the partition's state to the producer's queue in one pass of the gate: a roll-back
        // (under the closed gate) cannot slip between them.
        let pass;
        let producer: &DataProducer = match &self.sink {
            Sink::Plain(p) => p,
            Sink::Transactional(gate) => {
                pass = gate.read().unwrap_or_else(|e| e.into_inner());
                &pass
            }
        };
        let offset = message.offset();
        let headers = if self.identity_policy {
            match self.provenance_headers(message) {
                Some(h) => Some(h),
                None => {
                    let mut p = route.progress.lock().unwrap();
                    p.consumed_next = offset + 1;
                    p.filtered += 1;
                    filtered.increment(1);
                    return;
                }
            }
        } else {
            message.headers().map(|h| h.detach())
        };
        let epoch = {
            let mut p = route.progress.lock().unwrap();
            if p.failed.is_some() || p.rewind_to.is_some() {
                return; // stopped, or about to seek back: do not send past the failure
            }
            p.inflight += 1;
            p.consumed_next = offset + 1;
            p.epoch
        };
        let mut record = BaseRecord::with_opaque_to(&route.remote, pack(epoch, offset)).partition(message.partition());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        if let Timestamp::CreateTime(ts) | Timestamp::LogAppendTime(ts) = message.timestamp() {
            record = record.timestamp(ts);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let transactional = matches!(self.sink, Sink::Transactional(_));
        let mut full_since: Option<Instant> = None;
        loop {
            match producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: the producer's queue is full; wait for acknowledgements.
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                    // Exactly-once: this wait holds the gate and keeps the relay from its
                    // commands. A transactional producer that cannot deliver (its transaction
                    // failed; the coordinator busy with the epoch bump) filled its queue for
                    // minutes while the relay waited here with a released partition's record:
                    // the handover's assignment never reached the relay and nothing was fetched
                    // again. After QUEUE_FULL_WAIT the record is given up (re-sent from its offset;
                    // the transaction aborts), the gate opens and the commands are served.
                    let waited_too_long = transactional && full_since.get_or_insert_with(Instant::now).elapsed() > QUEUE_FULL_WAIT;
                    if self.cancel.is_cancelled() || waited_too_long {
                        route.progress.lock().unwrap().delivery_failed(epoch, offset, None);
                        if waited_too_long {
                            self.rewind_pending.store(true, Ordering::Release);
                        }
                        return;
                    }
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition), _)) => {
                    // A partition added to the remote topic after this producer loaded its
                    // metadata: librdkafka's producer keeps refusing it locally and never
                    // reloads the topic by itself (measured on Kafka: a grown topic's new
                    // partitions were refused for over a minute). Reload it, then re-send.
                    warn!(flow = %self.flow, topic = %route.remote, partition = message.partition(), "remote partition not yet known to the producer; reloading the topic's metadata");
                    if let Err(e) = rdkafka::producer::Producer::client(producer).fetch_metadata(Some(&route.remote), Duration::from_secs(5)) {
                        warn!(flow = %self.flow, topic = %route.remote, error = %e, "cannot load the remote topic's metadata");
                    }
                    route.progress.lock().unwrap().delivery_failed(epoch, offset, None);
                    self.rewind_pending.store(true, Ordering::Release);
                    return;
                }
                Err((e, _)) => {
                    error!(flow = %self.flow, topic = %route.remote, partition = message.partition(), offset, error = %e, "cannot enqueue record");
                    let fatal = stops_partition(&e, transactional).then(|| e.to_string());
                    route.progress.lock().unwrap().delivery_failed(epoch, offset, fatal);
                    self.rewind_pending.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }

    /// Copies the record's headers, extending Ferry's provenance header; `None` if the record
    /// already passed through the flow's target (identity policy loop prevention).
    fn provenance_headers(&self, message: &BorrowedMessage<'_>) -> Option<OwnedHeaders> {
        let mut out = OwnedHeaders::new();
        let mut previous: Option<&[u8]> = None;
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                if h.key == PROVENANCE_HEADER {
                    previous = h.value;
                } else {
                    out = out.insert(Header { key: h.key, value: h.value });
                }
            }
        }
        if previous.is_some_and(|v| provenance::has_visited(v, &self.target.alias)) {
            return None;
        }
        let chain = provenance::extended(previous, &self.source.alias);
        Some(out.insert(Header { key: PROVENANCE_HEADER, value: Some(&chain) }))
    }

    fn assign(&self, consumer: &BaseConsumer<SourceContext>, routes: &mut HashMap<Arc<str>, Vec<Option<Route>>>, parts: Vec<SharedProgress>) {
        let mut tpl = TopicPartitionList::new();
        for progress in parts {
            let (source, remote, partition, start) = {
                let p = progress.lock().unwrap();
                (p.source_topic.clone(), p.remote_topic.clone(), p.partition, p.consumed_next)
            };
            if let Err(e) = tpl.add_partition_offset(&source, partition, Offset::Offset(start)) {
                error!(flow = %self.flow, topic = %source, partition, error = %e, "cannot assign partition");
                continue;
            }
            let slots = routes.entry(source).or_default();
            if slots.len() <= partition as usize {
                slots.resize_with(partition as usize + 1, || None);
            }
            slots[partition as usize] = Some(Route { remote, progress, idle_since: std::cell::Cell::new(Instant::now()) });
        }
        if let Err(e) = consumer.incremental_assign(&tpl) {
            error!(flow = %self.flow, error = %e, "incremental assign failed");
        }
    }

    fn unassign(&self, consumer: &BaseConsumer<SourceContext>, routes: &mut HashMap<Arc<str>, Vec<Option<Route>>>, parts: &[SharedProgress]) {
        let mut tpl = TopicPartitionList::new();
        for progress in parts {
            let (source, partition) = {
                let p = progress.lock().unwrap();
                (p.source_topic.clone(), p.partition)
            };
            if let Some(slot) = routes.get_mut(&source).and_then(|s| s.get_mut(partition as usize)) {
                if slot.take().is_some() {
                    tpl.add_partition(&source, partition);
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.incremental_unassign(&tpl) {
                error!(flow = %self.flow, error = %e, "incremental unassign failed");
            }
        }
    }

    /// Re-positions the partitions whose deliveries failed (retriable) or stops them (fatal).
    fn rewind(&self, consumer: &BaseConsumer<SourceContext>, routes: &mut HashMap<Arc<str>, Vec<Option<Route>>>) {
        let mut stop = Vec::new();
        let mut restart = Vec::new();
        for route in routes.values().flatten().flatten() {
            let mut p = route.progress.lock().unwrap();
            if p.failed.is_some() {
                stop.push(route.progress.clone());
            } else if let Some(to) = p.take_rewind() {
                info!(flow = %self.flow, topic = %p.source_topic, partition = p.partition, offset = to, "re-sending from offset");
                restart.push(route.progress.clone());
            }
        }
        self.unassign(consumer, routes, &stop);
        if !restart.is_empty() {
            // Back off briefly: the failure was transient (timeout, leader change).
            std::thread::sleep(Duration::from_millis(500));
            self.reposition(consumer, routes, &restart);
        }
    }

    /// Checks partitions against the source log and resumes them where nothing is lost or
    /// copied twice ([`source_position::verdict`]). After an out-of-range fetch every partition
    /// is checked and those out of range are acted on; for a stopped fetcher, the partitions
    /// librdkafka stopped, in range or not. Returns whether a check must be repeated (the log
    /// bounds could not be read).
    fn check_positions(&self, consumer: &BaseConsumer<SourceContext>, routes: &HashMap<Arc<str>, Vec<Option<Route>>>, truncated: &Counter, check: Check) -> bool {
        let mut resume = Vec::new();
        let mut retry = false;
        for route in routes.values().flatten().flatten() {
            let (topic, partition, position, stopped) = {
                let p = route.progress.lock().unwrap();
                if p.failed.is_some() || p.rewind_to.is_some() {
                    continue;
                }
                let stopped = p.fetch_stopped.as_ref().filter(|(at, _)| at.elapsed() > FETCH_STOPPED_AFTER).map(|(_, state)| state.clone());
                (p.source_topic.clone(), p.partition, p.consumed_next, stopped)
            };
            if check == Check::Stopped && stopped.is_none() {
                continue;
            }
            let (low, high) = match ferry_kafka::watermarks(consumer, &topic, partition, Duration::from_secs(5)) {
                Ok(w) => w,
                Err(e) => {
                    warn!(flow = %self.flow, %topic, partition, error = %e, "cannot read the source partition's bounds; checking again");
                    retry = true;
                    if check == Check::Stopped {
                        // Restart it where it was: if the position is the problem, the next
                        // out-of-range error brings it back here.
                        resume.push(route.progress.clone());
                    }
                    continue;
                }
            };
            let same_log = if position > high && high > low { self.same_log(&route.progress, &topic, partition, high - 1) } else { None };
            let resume_at = match source_position::verdict(position, low, high, same_log) {
                SourceVerdict::Truncated { lost, resume } => {
                    truncated.increment(lost as u64);
                    counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => telemetry::kind::SOURCE_TRUNCATED).increment(1);
                    error!(flow = %self.flow, cluster = %self.source.alias, %topic, partition, position, log_start = low, lost,
                        "SOURCE TRUNCATED: records were deleted from the source before they were replicated; resuming at the log start");
                    resume
                }
                SourceVerdict::Rewound { dropped, resume } => {
                    counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => telemetry::kind::SOURCE_TRUNCATED).increment(1);
                    error!(flow = %self.flow, cluster = %self.source.alias, %topic, partition, position, high_watermark = high, dropped,
                        "SOURCE REWOUND: the source partition lost its last records (an unclean leader election); the target keeps the copies it has. New records reuse those offsets: resuming at the new end, not at the log start");
                    resume
                }
                SourceVerdict::Replaced { resume } => {
                    counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => telemetry::kind::SOURCE_TRUNCATED).increment(1);
                    error!(flow = %self.flow, cluster = %self.source.alias, %topic, partition, position, high_watermark = high,
                        "SOURCE REPLACED: the source partition ends before the replicated position and its last record is not the one replicated at that offset (topic recreated); replicating its records from the log start");
                    resume
                }
                SourceVerdict::InRange { resume } => {
                    let Some(state) = stopped else { continue };
                    counter!(telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => telemetry::kind::PARTITION_STOPPED).increment(1);
                    warn!(flow = %self.flow, %topic, partition, position, high_watermark = high, fetch_state = %state,
                        "PARTITION STOPPED: the source consumer stopped fetching this partition; restarting it at its position");
                    resume
                }
            };
            {
                let mut p = route.progress.lock().unwrap();
                if resume_at != position {
                    p.consumed_next = resume_at;
                    p.acked_next = resume_at;
                    p.epoch = p.epoch.wrapping_add(1);
                }
            }
            resume.push(route.progress.clone());
        }
        for progress in &resume {
            progress.lock().unwrap().fetch_stopped = None;
        }
        self.reposition(consumer, routes, &resume);
        retry
    }

    /// Whether the source record at `offset` is the one replicated from that offset (same key,
    /// value and timestamp on the target); `None` when that cannot be told.
    fn same_log(&self, progress: &SharedProgress, topic: &str, partition: i32, offset: i64) -> Option<bool> {
        let (remote, target_offset) = {
            let p = progress.lock().unwrap();
            (p.remote_topic.clone(), p.offset_map.copy_of(offset)?)
        };
        let within = Duration::from_secs(5);
        let source = ferry_kafka::read_record(&self.source, topic, partition, offset, within).ok()??;
        let copy = ferry_kafka::read_record(&self.target, &remote, partition, target_offset, within).ok()??;
        Some(ferry_kafka::same_record(&source, &copy))
    }

    /// Restarts fetching of already-routed partitions at their `consumed_next`. Each is watched
    /// as a new assignment is: one that fetches nothing while the source has records for it is
    /// caught by the not-delivering check.
    fn reposition(&self, consumer: &BaseConsumer<SourceContext>, routes: &HashMap<Arc<str>, Vec<Option<Route>>>, parts: &[SharedProgress]) {
        if parts.is_empty() {
            return;
        }
        let mut stop = TopicPartitionList::new();
        let mut start = TopicPartitionList::new();
        for progress in parts {
            let p = progress.lock().unwrap();
            if let Some(Some(route)) = routes.get(&p.source_topic).and_then(|r| r.get(p.partition as usize)) {
                route.idle_since.set(Instant::now());
            }
            stop.add_partition(&p.source_topic, p.partition);
            if let Err(e) = start.add_partition_offset(&p.source_topic, p.partition, Offset::Offset(p.consumed_next)) {
                error!(flow = %self.flow, topic = %p.source_topic, partition = p.partition, error = %e, "cannot reposition partition");
            }
        }
        if let Err(e) = consumer.incremental_unassign(&stop).and_then(|()| consumer.incremental_assign(&start)) {
            error!(flow = %self.flow, error = %e, "cannot reposition partitions");
        }
    }
}

