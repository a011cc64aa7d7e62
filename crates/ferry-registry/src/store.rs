//! The `_schemas` topic as the registry's store, as Confluent's `KafkaStore` keeps it: one
//! compacted partition, read from the start by a reader thread that applies every record to the
//! [`State`]; a write is answered only once that reader has applied it (so the answering
//! instance, and every other one reading the topic, knows it).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ferry_kafka::{Admin, ClientRole, NewTopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
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
    producer: FutureProducer,
    topic: String,
    /// The next offset the reader will apply (everything before it is in `state`).
    applied: watch::Receiver<i64>,
    /// One write decision at a time: a plan and its write are not interleaved with another's.
    pub writing: tokio::sync::Mutex<()>,
    timeout: Duration,
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
        let producer: FutureProducer = cluster
            .client_config_with_defaults(ClientRole::Producer, &[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "0")])
            .create()
            .map_err(|e| named("cannot create the producer", &e))?;
        let consumer: BaseConsumer = cluster
            .client_config_with_defaults(ClientRole::Consumer, &[("enable.auto.commit", "false"), ("enable.partition.eof", "false"), ("fetch.wait.max.ms", "10")])
            .set("group.id", format!("{}-reader", config.group_id))
            .create()
            .map_err(|e| named("cannot create the reader", &e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&config.topic, 0, Offset::Beginning).map_err(|e| named("cannot assign", &e))?;
        consumer.assign(&tpl).map_err(|e| named("cannot assign", &e))?;
        let (applied_tx, applied) = watch::channel(0);
        let state = Arc::new(RwLock::new(State::default()));
        let reader = Reader { consumer, state: state.clone(), applied: applied_tx, topic: config.topic.clone() };
        std::thread::Builder::new().name("schemas-reader".into()).spawn(move || reader.run(cancel)).map_err(|e| StoreError(format!("cannot start the reader thread: {e}")))?;
        let store = Arc::new(Store { state, producer, topic: config.topic.clone(), applied, writing: tokio::sync::Mutex::new(()), timeout: config.timeout.max(Duration::from_secs(5)) });
        let started = Instant::now();
        let wait = config.init_timeout;
        store.write_with(&[Record::Noop], wait).await.map_err(|e| StoreError(format!("cannot read the schemas topic '{}' to its end: {}", config.topic, e.message)))?;
        let s = store.state.read().unwrap();
        info!(topic = %config.topic, schemas = s.max_id(), took = ?started.elapsed(), "schemas topic read");
        drop(s);
        Ok(store)
    }

    /// Writes records in order and returns once the reader has applied all of them.
    pub async fn write(&self, records: &[Record]) -> Result<(), ApiError> {
        self.write_with(records, self.timeout).await
    }

    async fn write_with(&self, records: &[Record], timeout: Duration) -> Result<(), ApiError> {
        let mut last = -1;
        for record in records {
            let (key, value) = record.encode();
            let mut out = FutureRecord::<[u8], [u8]>::to(&self.topic).key(&key).partition(0);
            if let Some(v) = &value {
                out = out.payload(v);
            }
            match self.producer.send(out, timeout).await {
                Ok(delivery) => last = delivery.offset,
                Err((e, _)) => return Err(ApiError::store(&format!("cannot write to '{}': {e}", self.topic))),
            }
        }
        let mut applied = self.applied.clone();
        let outcome = tokio::time::timeout(timeout, applied.wait_for(|next| *next > last)).await.map(|r| r.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::store("the schemas topic reader stopped")),
            Err(_) => Err(ApiError::timeout(&format!("the write to '{}' was not read back within {timeout:?}", self.topic))),
        }
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
                None => {}
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
