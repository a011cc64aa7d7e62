//! What the flow says about itself: heartbeats (MM2's `heartbeats` topic, their own task) and this process's
//! metrics reports for `ferry serve` (`ferry-metrics.internal`).

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use metrics::counter;
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use tracing::debug;

use super::Running;
use crate::heartbeat::Heartbeat;
use crate::progress::PartitionProgress;
use crate::relay::{now_ms, DeliveryContext};
use crate::replication_policy::HEARTBEATS_TOPIC;
use crate::report::{GroupCheckpoint, LatencySummary, MetricsReport, PartitionMetrics, ReleasedCounts, METRICS_TOPIC};
use crate::telemetry;

pub(super) struct Reporter {
    /// Heartbeats and metrics reports (the data producer itself unless exactly-once).
    pub(super) producer: Arc<ThreadedProducer<DeliveryContext>>,
    pub(super) last_latency_ms: Arc<AtomicI64>,
    /// This process's run (`report::process_id`) and its start.
    pub(super) process: String,
    pub(super) started_ms: i64,
}

/// A partition's line in the metrics report; takes its latency samples (returned too, for
/// the flow's summary).
fn partition_metrics(p: &mut PartitionProgress) -> (PartitionMetrics, Vec<i64>) {
    let samples = p.latency_samples.take();
    let metrics = PartitionMetrics {
        latency: LatencySummary::of(samples.clone()),
        topic: p.source_topic.to_string(),
        remote_topic: p.remote_topic.to_string(),
        partition: p.partition,
        records: p.records,
        bytes: p.bytes,
        position: p.safe_position(),
        lag: p.lag(),
        last_timestamp_ms: p.last_timestamp_ms,
    };
    (metrics, samples)
}

/// The counts of partitions this run no longer replicates, in topic and partition order.
fn released_counts(released: &HashMap<(String, i32), (u64, u64)>) -> Vec<ReleasedCounts> {
    let mut out: Vec<ReleasedCounts> = released.iter().map(|((topic, partition), &(records, bytes))| ReleasedCounts { topic: topic.clone(), partition: *partition, records, bytes }).collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

impl Running {
    /// Publishes this process's metrics of the flow for `ferry serve`.
    pub(super) fn publish_metrics(&mut self) {
        if !self.topics.metrics_ready {
            return;
        }
        let mut all_samples = Vec::new();
        let mut partitions: Vec<PartitionMetrics> = self
            .parts
            .assigned
            .values()
            .map(|a| {
                let (metrics, samples) = partition_metrics(&mut a.progress.lock().unwrap());
                all_samples.extend_from_slice(&samples);
                metrics
            })
            .collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let status = self.status.lock().unwrap().clone();
        let report = MetricsReport {
            failing: status.failing,
            heartbeat_ms: status.last_heartbeat_ms,
            latency: LatencySummary::of(all_samples),
            partitions,
            checkpoints: status.checkpoints_checked_ms.into_iter().map(|(group, checked_ms)| GroupCheckpoint { group, checked_ms }).collect(),
            released: released_counts(&self.parts.released),
            ..MetricsReport::new(&self.config.source, &self.config.target, &self.reports.process, self.reports.started_ms, now_ms())
        };
        let (key, value) = (report.key(), report.encode());
        let record = BaseRecord::with_opaque_to(METRICS_TOPIC, 0usize).key(&key).payload(&value).timestamp(report.at_ms);
        if let Err((e, _)) = self.reports.producer.send(record) {
            debug!(flow = %self.name, error = %e, "metrics report not enqueued");
        }
    }
}

/// Writes a heartbeat every `emit.heartbeats.interval.seconds` once the heartbeats topic exists:
/// its own task, so a control task waiting on a stalled cluster (a refresh, a handover's commit)
/// never stops them.
pub(super) async fn heartbeats(
    flow: String,
    config: crate::config::FlowConfig,
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    status: Arc<std::sync::Mutex<crate::FlowStatus>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(config.emit_heartbeats_interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !ready.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        let hb = Heartbeat { source_cluster: config.source.clone(), target_cluster: config.target.clone(), timestamp_ms: now_ms() };
        // Aliases are validated by the config (they are part of topic names): this encodes.
        let (Ok(key), Ok(value)) = (hb.encode_key(), hb.encode_value()) else { continue };
        let record = BaseRecord::with_opaque_to(HEARTBEATS_TOPIC, 0usize).key(&key).payload(&value).timestamp(hb.timestamp_ms);
        match producer.send(record) {
            Ok(()) => counter!(telemetry::HEARTBEATS, "flow" => flow.clone()).increment(1),
            Err((e, _)) => debug!(flow = %flow, error = %e, "heartbeat not enqueued"),
        }
        status.lock().unwrap().last_heartbeat_ms = Some(hb.timestamp_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_partitions_are_reported_in_order() {
        let released = HashMap::from([(("b".to_string(), 0), (5, 50)), (("a".to_string(), 2), (1, 10)), (("a".to_string(), 1), (2, 20))]);
        let got: Vec<(String, i32, u64)> = released_counts(&released).into_iter().map(|r| (r.topic, r.partition, r.records)).collect();
        assert_eq!(got, vec![("a".into(), 1, 2), ("a".into(), 2, 1), ("b".into(), 0, 5)]);
    }

    #[test]
    fn a_partitions_report_takes_its_latency_samples_once() {
        let mut p = PartitionProgress::new("orders".into(), "a.orders".into(), 3, 100);
        p.latency_samples.record(12);
        p.latency_samples.record(30);
        p.records = 7;
        let (m, samples) = partition_metrics(&mut p);
        assert_eq!((m.topic.as_str(), m.remote_topic.as_str(), m.partition, m.records, m.position), ("orders", "a.orders", 3, 7, 100));
        assert_eq!(samples.len(), 2);
        assert_eq!(m.latency, LatencySummary::of(samples));
        let (again, samples) = partition_metrics(&mut p);
        assert!(samples.is_empty(), "taken: the next report covers only new deliveries");
        assert_eq!(again.latency, LatencySummary::of(Vec::new()));
    }
}
