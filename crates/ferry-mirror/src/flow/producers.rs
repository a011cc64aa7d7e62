//! The flow's producers: the data producer (idempotent, or transactional in exactly-once
//! mode, where it is made again when it must be replaced) and, in exactly-once mode, a plain one
//! for heartbeats, checkpoints and metrics reports (a transactional producer writes only inside
//! transactions).

use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;
use std::time::Duration;

use ferry_kafka::{ClientRole, ClusterClient};
use metrics::{counter, histogram};
use rdkafka::error::KafkaError;
use rdkafka::producer::ThreadedProducer;
use tokio::task::spawn_blocking;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::progress::ProgressTable;
use crate::relay::{DataProducer, DeliveryContext};
use crate::telemetry::{self, kind};
use crate::txn;
use crate::{Error, Result};

/// Makes the flow's producers with their delivery contexts.
pub(super) struct ProducerFactory {
    pub(super) flow: String,
    pub(super) target: ClusterClient,
    /// Exactly-once mode: the data producers' transactional id.
    pub(super) transactional_id: Option<String>,
    pub(super) rewind_pending: Arc<AtomicBool>,
    pub(super) last_latency_ms: Arc<AtomicI64>,
}

impl ProducerFactory {
    /// A data producer reporting deliveries into `table`, or (`data` false) the internal one.
    pub(super) fn make(&self, table: Arc<ProgressTable>, data: bool) -> std::result::Result<DataProducer, KafkaError> {
        let transactional_id = self.transactional_id.as_deref().filter(|_| data);
        let flow = &self.flow;
        let context = DeliveryContext {
            flow: flow.clone(),
            target: self.target.alias.clone(),
            table,
            rewind_pending: self.rewind_pending.clone(),
            latency: histogram!(telemetry::LATENCY, "flow" => flow.clone()),
            last_latency_ms: self.last_latency_ms.clone(),
            delivery_errors: counter!(telemetry::ERRORS, "flow" => flow.clone(), "kind" => kind::DELIVERY),
            unreachable: counter!(telemetry::ERRORS, "flow" => flow.clone(), "kind" => kind::TARGET_UNREACHABLE),
            errors_logged: telemetry::Throttle::new(Duration::from_secs(10)),
            transactional: transactional_id.is_some(),
        };
        let mut client = producer_config(&self.target, transactional_id);
        if !data {
            client.set("client.id", format!("ferry-{}-internal", self.target.alias));
        }
        client.create_with_context(context)
    }
}

pub(super) fn producer_config(target: &ClusterClient, transactional_id: Option<&str>) -> rdkafka::ClientConfig {
    // Idempotence keeps each partition in order and free of duplicates across retries.
    let mut defaults = vec![("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "5"), ("batch.num.messages", "10000")];
    if transactional_id.is_some() {
        // A transaction left open by a killed process holds back read_committed readers of its
        // partitions until the coordinator aborts it: 10 s, the group session, not 60 s.
        defaults.push(("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS));
    }
    let mut config = target.client_config_with_defaults(ClientRole::Producer, &defaults);
    if let Some(id) = transactional_id {
        config.set("transactional.id", id);
    }
    config
}

/// Exactly-once mode: the default `transaction.timeout.ms` (`<target>.producer.*` overrides it).
const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// One transactional id per flow and process run (as Kafka Streams' exactly-once v2): fencing
/// across processes is by the group generation (KIP-447), not by the id, so ids never collide
/// between processes that share a flow.
pub(super) fn transactional_id(flow: &str, process: &str) -> String {
    format!("ferry-mirror.{flow}.{process}")
}

/// Exactly-once mode: registers the transactional id and opens the first transaction,
/// retrying with backoff while the target does not answer. `Ok(false)`: cancelled first.
pub(super) async fn init_transactions(flow: &str, target: &ClusterClient, producer: &Arc<ThreadedProducer<DeliveryContext>>, cancel: &CancellationToken) -> Result<bool> {
    let mut backoff = ferry_kafka::Backoff::default();
    loop {
        let p = producer.clone();
        match spawn_blocking(move || txn::init(&p)).await.expect("transaction init panicked") {
            Ok(()) => {
                info!(flow, cluster = %target.alias, "exactly-once: records and positions are committed in transactions");
                return Ok(true);
            }
            Err(e) if txn::failure(&e) == txn::Failure::Fatal => {
                return Err(Error::Transactions { cluster: target.alias.clone(), address: target.bootstrap_servers.clone(), reason: format!("cannot start transactions: {e}") });
            }
            Err(e) => {
                let wait = backoff.next_wait();
                warn!(flow, cluster = %target.alias, address = %target.bootstrap_servers, error = %e, retry_in = ?wait, "cannot start transactions on the target; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_are_per_flow_and_process_run() {
        assert_eq!(transactional_id("a->b", "host-1-17"), "ferry-mirror.a->b.host-1-17");
        assert_ne!(transactional_id("a->b", "host-1-17"), transactional_id("a->b", "host-2-17"));
    }
}
