//! End-to-end latency without client interceptors: a probe topic with one partition led by each
//! broker, one record produced to each partition every second (acks=all) and read back by a
//! consumer of the same process, timed from the send to the read. Per broker: p50 and p99 over the
//! last minute. The topic (`ferry-canary`, retention one hour) is made at start; a broker added
//! later is probed once its partition exists (the topic is not grown automatically).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ferry_kafka::{ClientRole, ClusterClient, Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use tracing::warn;

use crate::collect::now_ms;
use utoipa::ToSchema;

pub const TOPIC: &str = "ferry-canary";
/// Samples older than this leave the percentiles.
const WINDOW: Duration = Duration::from_secs(60);

/// One broker's end-to-end latency over the last minute.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CanaryView {
    pub broker: i32,
    pub partition: i32,
    pub samples: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Records sent in the window that have not come back (yet).
    pub missing: usize,
}

/// The canary's state of one cluster, as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct CanaryState {
    pub brokers: Vec<CanaryView>,
    pub error: Option<String>,
}

/// The `q` quantile (0..=1) of sorted `v`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

struct Probe {
    cluster: ClusterClient,
    producer: BaseProducer,
    consumer: BaseConsumer,
    /// partition → (sent at, latency ms once read back).
    samples: HashMap<i32, VecDeque<(Instant, i64, Option<f64>)>>,
    assigned: usize,
}

impl Probe {
    fn open(cluster: &ClusterClient) -> Result<Probe> {
        let producer: BaseProducer = cluster
            .client_config_with_defaults(ClientRole::Producer, &[("acks", "all"), ("linger.ms", "0"), ("message.timeout.ms", "10000")])
            .create()
            .map_err(|e| Error::new(cluster, "create the canary producer", e))?;
        let consumer: BaseConsumer = cluster
            .client_config_with_defaults(ClientRole::Consumer, &[("group.id", "ferry-canary"), ("enable.auto.commit", "false"), ("fetch.wait.max.ms", "10")])
            .create()
            .map_err(|e| Error::new(cluster, "create the canary consumer", e))?;
        Ok(Probe { cluster: cluster.clone(), producer, consumer, samples: HashMap::new(), assigned: 0 })
    }

    /// The topic, made with one partition per broker, each led by its broker.
    fn ensure_topic(&self) -> Result<()> {
        let md = self.consumer.fetch_metadata(None, Duration::from_secs(10)).map_err(|e| Error::new(&self.cluster, "read metadata", e))?;
        if md.topics().iter().any(|t| t.name() == TOPIC && t.error().is_none() && !t.partitions().is_empty()) {
            return Ok(());
        }
        let mut brokers: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
        brokers.sort();
        let rf = brokers.len().min(3);
        let assignment: Vec<Vec<i32>> = (0..brokers.len()).map(|i| (0..rf).map(|k| brokers[(i + k) % brokers.len()]).collect()).collect();
        let admin = ferry_kafka::Admin::connect(&self.cluster)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::new(&self.cluster, "start a runtime", rdkafka::error::KafkaError::AdminOpCreation(e.to_string())))?;
        runtime.block_on(admin.create_topic_assigned(TOPIC, &assignment, &[("retention.ms", "3600000")]))
    }

    /// Leader of each partition of the topic.
    fn leaders(&self) -> Result<BTreeMap<i32, i32>> {
        let md = self.consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(10)).map_err(|e| Error::new(&self.cluster, "read the canary topic's metadata", e))?;
        Ok(md.topics().iter().filter(|t| t.name() == TOPIC).flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader()))).collect())
    }

    /// One round: a record to each partition, then reads for up to a second.
    fn round(&mut self, leaders: &BTreeMap<i32, i32>) -> Result<()> {
        if self.assigned != leaders.len() {
            let mut tpl = TopicPartitionList::new();
            for p in leaders.keys() {
                tpl.add_partition_offset(TOPIC, *p, Offset::End).map_err(|e| Error::new(&self.cluster, "assign the canary topic", e))?;
            }
            self.consumer.assign(&tpl).map_err(|e| Error::new(&self.cluster, "assign the canary topic", e))?;
            self.assigned = leaders.len();
        }
        let started = Instant::now();
        for p in leaders.keys() {
            let sent = now_ms();
            let value = sent.to_string();
            if self.producer.send(BaseRecord::<(), str>::to(TOPIC).partition(*p).payload(&value)).is_ok() {
                self.samples.entry(*p).or_default().push_back((started, sent, None));
            }
        }
        self.producer.poll(Duration::ZERO);
        while started.elapsed() < Duration::from_secs(1) {
            self.producer.poll(Duration::ZERO);
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(50)) {
                let now = now_ms();
                let sent: Option<i64> = m.payload().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok());
                if let (Some(sent), Some(window)) = (sent, self.samples.get_mut(&m.partition())) {
                    if let Some(s) = window.iter_mut().find(|s| s.1 == sent && s.2.is_none()) {
                        s.2 = Some((now - sent).max(0) as f64);
                    }
                }
            }
        }
        for window in self.samples.values_mut() {
            while window.front().is_some_and(|s| s.0.elapsed() > WINDOW) {
                window.pop_front();
            }
        }
        Ok(())
    }

    fn views(&self, leaders: &BTreeMap<i32, i32>) -> Vec<CanaryView> {
        leaders
            .iter()
            .map(|(p, leader)| {
                let window = self.samples.get(p);
                let mut read: Vec<f64> = window.map(|w| w.iter().filter_map(|s| s.2).collect()).unwrap_or_default();
                read.sort_by(f64::total_cmp);
                // A record younger than 5 s may still be on its way.
                let missing = window.map_or(0, |w| w.iter().filter(|s| s.2.is_none() && s.0.elapsed() > Duration::from_secs(5)).count());
                CanaryView { broker: *leader, partition: *p, samples: read.len(), p50_ms: quantile(&read, 0.5), p99_ms: quantile(&read, 0.99), missing }
            })
            .collect()
    }
}

/// Runs the canary of `cluster` on a thread of its own until `cancel`; its state lands in `state`.
pub fn start(cluster: &ClusterClient, state: Arc<RwLock<CanaryState>>, cancel: tokio_util::sync::CancellationToken) {
    let cluster = cluster.clone();
    let spawned = std::thread::Builder::new().name(format!("canary-{}", cluster.alias)).spawn(move || {
        let mut probe: Option<Probe> = None;
        let mut failing = false;
        while !cancel.is_cancelled() {
            let outcome = (|| -> Result<Vec<CanaryView>> {
                if probe.is_none() {
                    let p = Probe::open(&cluster)?;
                    p.ensure_topic()?;
                    probe = Some(p);
                }
                let p = probe.as_mut().expect("opened above");
                let leaders = p.leaders()?;
                p.round(&leaders)?;
                Ok(p.views(&leaders))
            })();
            match outcome {
                Ok(views) => {
                    failing = false;
                    *state.write().unwrap() = CanaryState { brokers: views, error: None };
                }
                Err(e) => {
                    if !failing {
                        warn!(cluster = %cluster.alias, error = %e, "canary: cannot probe the cluster; retried every 5 s, said again once it works");
                        failing = true;
                    }
                    state.write().unwrap().error = Some(e.to_string());
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the canary thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((quantile(&v, 0.5), quantile(&v, 0.99), quantile(&v, 1.0)), (Some(50.0), Some(99.0), Some(100.0)));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
