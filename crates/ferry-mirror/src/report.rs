//! Raw per-partition metrics that every `ferry mirror` process publishes for each of its flows
//! to [`METRICS_TOPIC`] on the flow's target cluster, so `ferry serve` can aggregate them across
//! processes and restarts (the SRM driver -> SRM service split, without a Kafka Streams app).
//!
//! One JSON record per flow and process every [`METRICS_INTERVAL`], keyed by
//! `{"flow":"a->b","process":"host:pid:start"}`. Counters are cumulative per process run (a
//! restarted process is a new `process`), so a reader sums the latest report of each run and
//! derives rates from successive reports of the same run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The topic, on each target cluster, that carries mirror metrics reports.
pub const METRICS_TOPIC: &str = "ferry-metrics.internal";

/// How often each flow of each process publishes a report.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(2);

/// How long reports are kept (`retention.ms` of [`METRICS_TOPIC`]): the console's charts
/// cover the last hour.
pub const METRICS_RETENTION_MS: i64 = 2 * 3600 * 1000;

/// Format version of [`MetricsReport`].
pub const REPORT_VERSION: u32 = 1;

/// One process's view of one flow at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub version: u32,
    pub flow: String,
    pub source: String,
    pub target: String,
    /// `host:pid:start-ms`: unique per process run.
    pub process: String,
    pub started_ms: i64,
    pub at_ms: i64,
    /// Set while the flow's topic refresh keeps failing, or after it stopped: the reason.
    pub failing: Option<String>,
    /// When this process last wrote a heartbeat for the flow.
    pub heartbeat_ms: Option<i64>,
    /// Replication latency of records sampled since the previous report.
    pub latency: LatencySummary,
    pub partitions: Vec<PartitionMetrics>,
    /// Per checkpointed group: when its checkpoints were last brought up to date.
    pub checkpoints: Vec<GroupCheckpoint>,
    /// Records and bytes this run replicated of partitions it no longer owns (handed over to
    /// another process, or deselected), so that a run's totals never go back. Absent in
    /// reports of older versions of Ferry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<ReleasedCounts>,
}

/// What a run replicated of a partition before it stopped owning it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedCounts {
    pub topic: String,
    pub partition: i32,
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionMetrics {
    pub topic: String,
    pub remote_topic: String,
    pub partition: i32,
    /// Replication latency of this partition's records sampled since the previous report.
    pub latency: LatencySummary,
    /// Records and key+value bytes acknowledged by the target since this process started.
    pub records: u64,
    pub bytes: u64,
    /// Next source offset to replicate (every record before it is on the target).
    pub position: i64,
    /// Source end offset minus position (0 when unknown).
    pub lag: i64,
    /// Source timestamp of the newest replicated record (-1: none yet).
    pub last_timestamp_ms: i64,
}

/// Each partition's freshest report among `reports`: the report (its process is the
/// partition's owner) and the partition's metrics in it. Keyed by (source topic, partition).
pub fn freshest<'a>(reports: impl IntoIterator<Item = &'a MetricsReport>) -> std::collections::BTreeMap<(&'a str, i32), (&'a MetricsReport, &'a PartitionMetrics)> {
    let mut newest: std::collections::BTreeMap<(&str, i32), (&MetricsReport, &PartitionMetrics)> = std::collections::BTreeMap::new();
    for r in reports {
        for p in &r.partitions {
            let e = newest.entry((p.topic.as_str(), p.partition)).or_insert((r, p));
            if r.at_ms > e.0.at_ms {
                *e = (r, p);
            }
        }
    }
    newest
}

impl PartitionMetrics {
    /// A partition with nothing replicated yet.
    pub fn new(topic: &str, remote_topic: &str, partition: i32) -> PartitionMetrics {
        PartitionMetrics {
            topic: topic.to_string(),
            remote_topic: remote_topic.to_string(),
            partition,
            latency: LatencySummary::default(),
            records: 0,
            bytes: 0,
            position: 0,
            lag: 0,
            last_timestamp_ms: -1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCheckpoint {
    pub group: String,
    pub checked_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

impl MetricsReport {
    /// A report of `process` (started at `started_ms`) on flow `source->target` at `at_ms`, with
    /// nothing measured in it yet.
    pub fn new(source: &str, target: &str, process: &str, started_ms: i64, at_ms: i64) -> MetricsReport {
        MetricsReport {
            version: REPORT_VERSION,
            flow: format!("{source}->{target}"),
            source: source.to_string(),
            target: target.to_string(),
            process: process.to_string(),
            started_ms,
            at_ms,
            failing: None,
            heartbeat_ms: None,
            latency: LatencySummary::default(),
            partitions: Vec::new(),
            checkpoints: Vec::new(),
            released: Vec::new(),
        }
    }

    pub fn key(&self) -> Vec<u8> {
        record_key(&self.flow, &self.process)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report always serializes")
    }

    /// A report, or None for records of another version or format.
    pub fn decode(value: &[u8]) -> Option<MetricsReport> {
        serde_json::from_slice::<MetricsReport>(value).ok().filter(|r| r.version == REPORT_VERSION)
    }
}

pub fn record_key(flow: &str, process: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "flow": flow, "process": process })).expect("a key always serializes")
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl LatencySummary {
    pub fn of(mut samples: Vec<i64>) -> LatencySummary {
        samples.sort_unstable();
        LatencySummary {
            samples: samples.len() as u64,
            p50_ms: percentile(&samples, 0.50),
            p99_ms: percentile(&samples, 0.99),
            max_ms: samples.last().copied(),
        }
    }
}

/// Latency samples of one partition between two reports (bounded), kept under the
/// partition's lock by the delivery callback.
#[derive(Debug, Default, Clone)]
pub struct LatencySamples(Vec<i64>);

impl LatencySamples {
    const MAX: usize = 5_000;

    pub fn record(&mut self, ms: i64) {
        if self.0.len() < Self::MAX {
            self.0.push(ms);
        }
    }

    pub fn take(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.0)
    }
}

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    crate::relay::now_ms()
}

/// This machine's host name (`unknown` if it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// `host:pid:start-ms` for this process.
pub fn process_id(started_ms: i64) -> String {
    format!("{}:{}:{started_ms}", hostname(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = LatencySummary::of((1..=100).rev().collect());
        assert_eq!((s.samples, s.p50_ms, s.p99_ms, s.max_ms), (100, Some(50), Some(99), Some(100)));
        let one = LatencySummary::of(vec![7]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (Some(7), Some(7), Some(7)));
        assert_eq!(LatencySummary::of(vec![]), LatencySummary::default());
    }

    #[test]
    fn reports_round_trip_and_other_versions_are_ignored() {
        let r = MetricsReport {
            version: REPORT_VERSION,
            flow: "a->b".into(),
            source: "a".into(),
            target: "b".into(),
            process: "h:1:2".into(),
            started_ms: 2,
            at_ms: 3,
            failing: None,
            heartbeat_ms: Some(3),
            latency: LatencySummary::of(vec![5, 6]),
            partitions: vec![PartitionMetrics { topic: "t".into(), remote_topic: "a.t".into(), partition: 0, latency: LatencySummary::of(vec![5]), records: 9, bytes: 90, position: 9, lag: 0, last_timestamp_ms: 1 }],
            checkpoints: vec![GroupCheckpoint { group: "g".into(), checked_ms: 3 }],
            released: vec![],
        };
        assert_eq!(MetricsReport::decode(&r.encode()), Some(r.clone()));
        assert_eq!(String::from_utf8(r.key()).unwrap(), r#"{"flow":"a->b","process":"h:1:2"}"#);
        let mut other = r;
        other.version = 2;
        assert_eq!(MetricsReport::decode(&other.encode()), None);
        assert_eq!(MetricsReport::decode(b"junk"), None);
    }

    #[test]
    fn samples_are_bounded_and_taken_once() {
        let mut s = LatencySamples::default();
        for i in 0..(LatencySamples::MAX as i64 + 10) {
            s.record(i);
        }
        assert_eq!(s.take().len(), LatencySamples::MAX);
        assert!(s.take().is_empty());
    }
}
