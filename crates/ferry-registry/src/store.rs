//! The `_schemas` topic as the registry's store, as Confluent's `KafkaStore` keeps it: one
//! compacted partition, read from the start by a reader thread that applies every record to the
//! [`State`]; a write is answered only once that reader has applied it (so the answering
//! instance, and every other one reading the topic, knows it). Only the elected leader writes,
//! each write one transaction of a producer whose transactional id all instances share: a new
//! leader fences an old one that still believes it leads, so no two instances hand out ids
//! at once. Readers are read_committed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ferry_kafka::{Admin, ClientRole, ClusterClient, NewTopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RegistryConfig;
use crate::error::ApiError;
use crate::records::Record;
use crate::state::State;

pub struct Store {
    pub state: Arc<RwLock<State>>,
    cluster: ClusterClient,
    topic: String,
    /// Shared by every instance of the group, so a new leader fences the previous one.
    transactional_id: String,
    /// The next offset the reader will apply (everything before it is in `state`).
    applied: watch::Receiver<i64>,
    /// One write decision at a time: a plan and its write are not interleaved with another's.
    pub writing: tokio::sync::Mutex<()>,
    timeout: Duration,
    /// The transactional producer while this instance leads.
    writer: Mutex<Option<FutureProducer>>,
    /// Reads the topic's end for catching up.
    ends: Mutex<BaseConsumer>,
    /// Who leads, as the election last saw it ([`crate::leader`]).
    pub leadership: watch::Sender<Leadership>,
}

/// Who leads the instances of one group: this instance, or another at `url` (unknown: `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub me: bool,
    pub url: Option<String>,
}

/// Why the store cannot start.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl Store {
    /// Creates the topic if it is missing (compacted, one partition), refuses one that is not
    /// compacted, starts the reader and waits until it has read everything written before a
    /// NOOP of its own (the registry then answers from a complete state).
    pub async fn open(config: &RegistryConfig, cancel: CancellationToken) -> Result<Arc<Store>, StoreError> {
        let cluster = &config.store;
        let named = |what: &str, e: &dyn std::fmt::Display| StoreError(format!("{what} on the store cluster ({}): {e}", cluster.bootstrap_servers));
        let admin = Admin::connect(cluster).map_err(|e| named("cannot connect", &e))?;
        let deadline = Instant::now() + config.init_timeout;
        // The store cluster may still be starting: retried until kafkastore.init.timeout.ms.
        let (topics, brokers) = loop {
            let metadata: Result<(Vec<String>, usize), String> = (|| {
                let c: BaseConsumer = cluster.client_config(ClientRole::Consumer).create().map_err(|e| e.to_string())?;
                let md = c.fetch_metadata(None, Duration::from_secs(5)).map_err(|e| e.to_string())?;
                Ok((md.topics().iter().map(|t| t.name().to_string()).collect(), md.brokers().len()))
            })();
            match metadata {
                Ok(found) => break found,
                Err(e) if Instant::now() >= deadline => return Err(named("cannot read metadata", &e)),
                Err(e) => {
                    warn!(address = %cluster.bootstrap_servers, error = %e, "store cluster not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        if !topics.contains(&config.topic) {
            let rf = config.replication_factor.min(brokers.max(1) as i32);
            if rf < config.replication_factor {
                warn!(topic = %config.topic, wanted = config.replication_factor, brokers, "fewer brokers than kafkastore.topic.replication.factor; creating the topic with one replica per broker");
            }
            let spec = NewTopicSpec { name: config.topic.clone(), partitions: 1, replication_factor: rf, configs: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]) };
            admin.create_topics(&[spec]).await.map_err(|e| named(&format!("cannot create topic '{}'", config.topic), &e))?;
            info!(topic = %config.topic, replication_factor = rf, "created the schemas topic (compacted)");
        } else {
            let configs = admin.describe_topic_configs(std::slice::from_ref(&config.topic)).await.map_err(|e| named(&format!("cannot read the configs of '{}'", config.topic), &e))?;
            let policy = configs.get(&config.topic).and_then(|c| c.get("cleanup.policy")).cloned().unwrap_or_else(|| "delete (the broker default)".into());
            if !policy.split(',').any(|p| p.trim() == "compact") {
                return Err(StoreError(format!(
                    "topic '{}' on {} has cleanup.policy {policy}: the schemas topic must be compacted, or old schemas are deleted with the log (Confluent refuses to start too)",
                    config.topic, cluster.bootstrap_servers
                )));
            }
        }
        let consumer: BaseConsumer = cluster
            .client_config_with_defaults(ClientRole::Consumer, &[("enable.auto.commit", "false"), ("enable.partition.eof", "false"), ("fetch.wait.max.ms", "10"), ("isolation.level", "read_committed")])
            .set("group.id", format!("{}-reader", config.group_id))
            .create()
            .map_err(|e| named("cannot create the reader", &e))?;
        let ends: BaseConsumer = cluster.client_config(ClientRole::Consumer).create().map_err(|e| named("cannot create a client", &e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&config.topic, 0, Offset::Beginning).map_err(|e| named("cannot assign", &e))?;
        consumer.assign(&tpl).map_err(|e| named("cannot assign", &e))?;
        let (applied_tx, applied) = watch::channel(0);
        let state = Arc::new(RwLock::new(State::default()));
        let reader = Reader { consumer, state: state.clone(), applied: applied_tx, topic: config.topic.clone() };
        std::thread::Builder::new().name("schemas-reader".into()).spawn(move || reader.run(cancel)).map_err(|e| StoreError(format!("cannot start the reader thread: {e}")))?;
        let store = Arc::new(Store {
            state,
            cluster: cluster.clone(),
            topic: config.topic.clone(),
            transactional_id: format!("{}.{}.writer", config.group_id, config.topic),
            applied,
            writing: tokio::sync::Mutex::new(()),
            timeout: config.timeout.max(Duration::from_secs(5)),
            writer: Mutex::new(None),
            ends: Mutex::new(ends),
            leadership: watch::channel(Leadership::default()).0,
        });
        let started = Instant::now();
        let wait = config.init_timeout;
        let reading = store.clone();
        tokio::task::spawn_blocking(move || reading.catch_up(wait))
            .await
            .map_err(|e| StoreError(format!("reading the schemas topic failed: {e}")))?
            .map_err(|e| StoreError(format!("cannot read the schemas topic '{}' to its end: {e}", config.topic)))?;
        let s = store.state.read().unwrap();
        info!(topic = %config.topic, schemas = s.max_id(), took = ?started.elapsed(), "schemas topic read");
        drop(s);
        Ok(store)
    }

    /// Blocks until the reader has applied everything written to the topic before this call
    /// (its end when asked), or `timeout` passes.
    pub fn catch_up(&self, timeout: Duration) -> Result<(), String> {
        let end = {
            let ends = self.ends.lock().unwrap();
            ferry_kafka::watermarks(&*ends, &self.topic, 0, timeout).map_err(|e| format!("cannot read the end of '{}' on {}: {e}", self.topic, self.cluster.bootstrap_servers))?.1
        };
        let deadline = Instant::now() + timeout;
        while *self.applied.borrow() < end {
            if Instant::now() >= deadline {
                return Err(format!("read {} of {end} offsets of '{}' within {timeout:?}", *self.applied.borrow(), self.topic));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// The next offset the reader will apply: every write before it is in the state.
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits until the reader has applied everything before `offset` (a write another instance
    /// made); false when `timeout` passed first.
    pub async fn wait_applied(&self, offset: i64, timeout: Duration) -> bool {
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|next| *next >= offset)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Takes the writer's role (blocking): a transactional producer whose id every leader shares,
    /// so initializing it fences a previous leader that still believes it leads (its next
    /// commit fails), then reads the topic to its end so decisions see every earlier write.
    pub fn lead(&self) -> Result<(), String> {
        let producer: FutureProducer = self
            .cluster
            .client_config_with_defaults(ClientRole::Producer, &[("acks", "all"), ("linger.ms", "0"), ("transaction.timeout.ms", "15000")])
            .set("transactional.id", &self.transactional_id)
            .create()
            .map_err(|e| format!("cannot create the writer: {e}"))?;
        producer.init_transactions(self.timeout.max(Duration::from_secs(10))).map_err(|e| format!("cannot take the writer's role ({}): {e}", self.transactional_id))?;
        self.catch_up(self.timeout.max(Duration::from_secs(10)))?;
        *self.writer.lock().unwrap() = Some(producer);
        Ok(())
    }

    /// Whether this instance holds the writer's role.
    pub fn leads(&self) -> bool {
        self.writer.lock().unwrap().is_some()
    }

    /// Gives the writer's role up (leadership moved, or the producer was fenced).
    pub fn resign(&self) {
        self.writer.lock().unwrap().take();
    }

    /// Writes records in one transaction, in order, and returns once the reader has applied
    /// all of them. Only the leader writes ([`Store::lead`]).
    pub async fn write(&self, records: &[Record]) -> Result<(), ApiError> {
        let timeout = self.timeout;
        let producer = self.writer.lock().unwrap().clone().ok_or_else(|| ApiError::unknown_leader("this instance does not lead (any more); ask again"))?;
        producer.begin_transaction().map_err(|e| self.failed("begin a transaction", &e))?;
        let mut last = -1;
        for record in records {
            let (key, value) = record.encode();
            let mut out = FutureRecord::<[u8], [u8]>::to(&self.topic).key(&key).partition(0);
            if let Some(v) = &value {
                out = out.payload(v);
            }
            match producer.send(out, timeout).await {
                Ok(delivery) => last = delivery.offset,
                Err((e, _)) => {
                    let p = producer.clone();
                    let _ = tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await;
                    return Err(self.failed(&format!("write to '{}'", self.topic), &e));
                }
            }
        }
        let p = producer.clone();
        match tokio::task::spawn_blocking(move || p.commit_transaction(timeout)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let p = producer.clone();
                let _ = tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await;
                return Err(self.failed("commit the write", &e));
            }
            Err(e) => return Err(ApiError::store(&format!("the commit task failed: {e}"))),
        }
        if self.wait_applied(last + 1, timeout).await {
            Ok(())
        } else {
            Err(ApiError::timeout(&format!("the write to '{}' was not read back within {timeout:?}", self.topic)))
        }
    }

    /// The error of a failed write; a fatal producer error (fenced by a newer leader) gives the
    /// writer's role up.
    fn failed(&self, what: &str, e: &rdkafka::error::KafkaError) -> ApiError {
        let fatal = matches!(e, rdkafka::error::KafkaError::Transaction(t) if t.is_fatal()) || e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::ProducerFenced);
        if fatal {
            warn!(topic = %self.topic, error = %e, "the writer was fenced (another instance leads now); giving the role up");
            self.resign();
        }
        ApiError::store(&format!("cannot {what}: {e}"))
    }
}

struct Reader {
    consumer: BaseConsumer,
    state: Arc<RwLock<State>>,
    applied: watch::Sender<i64>,
    topic: String,
}

impl Reader {
    fn run(self, cancel: CancellationToken) {
        let mut errors_logged = Instant::now() - Duration::from_secs(60);
        while !cancel.is_cancelled() {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {
                    // Past control records and aborted writes, which are never delivered.
                    if let Some(Offset::Offset(position)) = self.consumer.position().ok().and_then(|p| p.find_partition(&self.topic, 0).map(|e| e.offset())) {
                        if position > *self.applied.borrow() {
                            self.applied.send_replace(position);
                        }
                    }
                }
                Some(Ok(m)) => {
                    let offset = m.offset();
                    match Record::decode(m.key().unwrap_or_default(), m.payload()) {
                        Ok(Some(record)) => self.state.write().unwrap().apply(record),
                        Ok(None) => {}
                        Err(e) => {
                            self.state.write().unwrap().malformed += 1;
                            warn!(topic = %self.topic, offset, error = %e, "undecodable record in the schemas topic skipped");
                        }
                    }
                    self.applied.send_replace(offset + 1);
                }
                Some(Err(e)) if errors_logged.elapsed() > Duration::from_secs(10) => {
                    errors_logged = Instant::now();
                    warn!(topic = %self.topic, error = %e, "reading the schemas topic (librdkafka retries; repeats suppressed for 10 s)");
                }
                Some(Err(_)) => {}
            }
        }
    }
}
