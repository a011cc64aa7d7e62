//! Aggregation of mirror metrics reports across processes and restarts. Pure: reports in,
//! views out, time passed explicitly.
//!
//! - Each process run (`process`) reports cumulative counters; totals sum the latest report of
//!   every run, rates come from the difference between successive reports of the same run.
//! - A partition's position and lag come from the freshest report that includes it (its
//!   current owner).
//! - A flow is `active` while some run reported within [`STALE_AFTER_MS`] and none says it is
//!   failing; `failing` (with the reason) if a live run says so or the last report was a
//!   fatal stop; `paused` when no run has reported for that long (nothing replicates it).

use std::collections::{BTreeMap, HashMap, VecDeque};

use ferry_mirror::report::{LatencySummary, MetricsReport};
use serde::Serialize;
use utoipa::ToSchema;

/// A run that has not reported for this long is gone (reports come every 2 s).
pub const STALE_AFTER_MS: i64 = 10_000;
/// Rates are averaged over this window.
pub const RATE_WINDOW_MS: i64 = 10_000;
/// Chart resolution and span.
pub const BUCKET_MS: i64 = 10_000;
pub const HISTORY_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    Active,
    Paused,
    Failing,
}

impl FlowState {
    pub const ALL: [FlowState; 3] = [FlowState::Active, FlowState::Paused, FlowState::Failing];

    /// The name the API, Prometheus and alert policies use (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Active => "active",
            FlowState::Paused => "paused",
            FlowState::Failing => "failing",
        }
    }
}

/// Latency of replicated records (target acknowledgement minus source timestamp).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Latency {
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

impl Latency {
    fn of(s: &LatencySummary) -> Latency {
        Latency { p50_ms: s.p50_ms, p99_ms: s.p99_ms, max_ms: s.max_ms }
    }

    /// The worst of several summaries (percentiles of different sets cannot be merged exactly).
    fn worst<'a>(all: impl Iterator<Item = &'a Latency>) -> Latency {
        let mut out = Latency::default();
        for l in all {
            out.p50_ms = out.p50_ms.max(l.p50_ms);
            out.p99_ms = out.p99_ms.max(l.p99_ms);
            out.max_ms = out.max_ms.max(l.max_ms);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FlowSummary {
    /// `source->target`
    pub flow: String,
    pub source: String,
    pub target: String,
    pub state: FlowState,
    /// Why the flow is failing or paused.
    pub reason: Option<String>,
    /// Live `ferry mirror` processes serving the flow.
    pub processes: usize,
    /// Records and bytes replicated, summed over every process run still in the metrics topic.
    pub records_total: u64,
    pub bytes_total: u64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    /// The worst summary reported in the last 10 s (percentiles of different processes and
    /// reports cannot be merged exactly).
    pub latency: Latency,
    pub lag_records: i64,
    /// How far behind in source time the most lagging partition is (0 without lag).
    pub lag_seconds: f64,
    /// Age of the newest heartbeat the flow wrote to its target.
    pub heartbeat_age_ms: Option<i64>,
    /// Age of the newest report.
    pub report_age_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PartitionView {
    pub partition: i32,
    pub records_total: u64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub latency: Latency,
    pub position: i64,
    pub lag_records: i64,
    pub lag_seconds: f64,
    /// The process that replicates it (freshest report).
    pub process: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TopicView {
    pub topic: String,
    pub remote_topic: String,
    pub records_total: u64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    /// The worst partition's.
    pub latency: Latency,
    pub lag_records: i64,
    pub lag_seconds: f64,
    pub partitions: Vec<PartitionView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CheckpointView {
    pub group: String,
    /// Time since the group's checkpoints were last brought up to date.
    pub age_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProcessView {
    pub process: String,
    pub report_age_ms: i64,
    pub partitions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FlowDetail {
    #[serde(flatten)]
    pub summary: FlowSummary,
    pub topics: Vec<TopicView>,
    pub checkpoints: Vec<CheckpointView>,
    /// Each live process serving the flow (`processes` counts them).
    pub process_list: Vec<ProcessView>,
}

/// One chart point: a 10 s bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Point {
    /// Start of the bucket (Unix ms).
    pub at_ms: i64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub latency_p99_ms: Option<i64>,
    pub lag_records: i64,
}

/// A run's cumulative (records, bytes) per partition: those it owns and those it handed over.
fn run_counts(report: &MetricsReport) -> HashMap<(&str, i32), (u64, u64)> {
    let mut counts: HashMap<(&str, i32), (u64, u64)> = HashMap::new();
    let owned = report.partitions.iter().map(|p| (p.topic.as_str(), p.partition, p.records, p.bytes));
    let released = report.released.iter().map(|p| (p.topic.as_str(), p.partition, p.records, p.bytes));
    for (topic, partition, records, bytes) in owned.chain(released) {
        let c = counts.entry((topic, partition)).or_default();
        c.0 += records;
        c.1 += bytes;
    }
    counts
}

#[derive(Debug, Default)]
struct Run {
    latest: Option<MetricsReport>,
}

#[derive(Debug)]
struct FlowAgg {
    source: String,
    target: String,
    runs: HashMap<String, Run>,
    /// What runs silent for longer than the chart history replicated, per partition: their
    /// totals stay, their state goes (memory is bounded by partitions, not by process runs).
    retired: HashMap<(String, i32), (u64, u64)>,
    /// (at_ms, topic, partition, records, bytes) increments, for rates.
    increments: VecDeque<(i64, String, i32, u64, u64)>,
    /// Latency summaries with samples, within the rate window: (at_ms, partition or None for
    /// the whole flow, summary).
    latencies: VecDeque<(i64, Option<(String, i32)>, Latency)>,
    series: BTreeMap<i64, Point>,
}

/// Everything known about every flow.
#[derive(Debug, Default)]
pub struct Aggregator {
    flows: BTreeMap<String, FlowAgg>,
    /// Reports ignored (malformed, older than what a run already reported).
    pub ignored: u64,
}

impl Aggregator {
    /// Registers a configured flow so it shows (as paused) before any report.
    pub fn expect_flow(&mut self, flow: &str, source: &str, target: &str) {
        self.flows.entry(flow.to_string()).or_insert_with(|| FlowAgg::new(source, target));
    }

    pub fn apply(&mut self, report: MetricsReport) {
        let flow = self.flows.entry(report.flow.clone()).or_insert_with(|| FlowAgg::new(&report.source, &report.target));
        let run = flow.runs.entry(report.process.clone()).or_default();
        if run.latest.as_ref().is_some_and(|l| l.at_ms >= report.at_ms) {
            self.ignored += 1;
            return;
        }
        let previous: HashMap<(&str, i32), (u64, u64)> = run.latest.as_ref().map(run_counts).unwrap_or_default();
        let mut increments = Vec::new();
        for ((topic, partition), (records, bytes)) in run_counts(&report) {
            // A partition new to this run counts from 0 (the run started it).
            let (r0, b0) = previous.get(&(topic, partition)).copied().unwrap_or((0, 0));
            let (dr, db) = (records.saturating_sub(r0), bytes.saturating_sub(b0));
            if dr > 0 || db > 0 {
                increments.push((report.at_ms, topic.to_string(), partition, dr, db));
            }
        }
        let bucket_start = report.at_ms - report.at_ms.rem_euclid(BUCKET_MS);
        let point = flow.series.entry(bucket_start).or_insert_with(|| Point { at_ms: bucket_start, ..Point::default() });
        for (_, _, _, dr, db) in &increments {
            point.records_per_sec += *dr as f64 / (BUCKET_MS as f64 / 1000.0);
            point.bytes_per_sec += *db as f64 / (BUCKET_MS as f64 / 1000.0);
        }
        point.latency_p99_ms = point.latency_p99_ms.max(report.latency.p99_ms);
        flow.increments.extend(increments);
        if report.latency.samples > 0 {
            flow.latencies.push_back((report.at_ms, None, Latency::of(&report.latency)));
        }
        for p in report.partitions.iter().filter(|p| p.latency.samples > 0) {
            flow.latencies.push_back((report.at_ms, Some((p.topic.clone(), p.partition)), Latency::of(&p.latency)));
        }
        run.latest = Some(report);
        // Lag of the bucket: the sum over partitions of their freshest owner's lag.
        let lag = flow.partition_owners().values().map(|(_, p)| p.lag).sum();
        if let Some(point) = flow.series.get_mut(&bucket_start) {
            point.lag_records = lag;
        }
    }

    /// Drops what is older than the chart history.
    pub fn prune(&mut self, now_ms: i64) {
        for flow in self.flows.values_mut() {
            let gone: Vec<String> = flow
                .runs
                .iter()
                .filter(|(_, r)| r.latest.as_ref().is_none_or(|l| l.at_ms < now_ms - HISTORY_MS))
                .map(|(process, _)| process.clone())
                .collect();
            for process in gone {
                if let Some(report) = flow.runs.remove(&process).and_then(|r| r.latest) {
                    for ((topic, partition), (records, bytes)) in run_counts(&report) {
                        let total = flow.retired.entry((topic.to_string(), partition)).or_default();
                        total.0 += records;
                        total.1 += bytes;
                    }
                }
            }
            flow.series.retain(|&at, _| at >= now_ms - HISTORY_MS);
            while flow.increments.front().is_some_and(|(at, ..)| *at < now_ms - RATE_WINDOW_MS) {
                flow.increments.pop_front();
            }
            flow.latencies.retain(|(at, ..)| *at >= now_ms - RATE_WINDOW_MS);
        }
    }

    pub fn flow_names(&self) -> impl Iterator<Item = &str> {
        self.flows.keys().map(String::as_str)
    }

    pub fn summaries(&self, now_ms: i64) -> Vec<FlowSummary> {
        self.flows.iter().map(|(name, f)| f.summary(name, now_ms)).collect()
    }

    pub fn detail(&self, flow: &str, now_ms: i64) -> Option<FlowDetail> {
        let f = self.flows.get(flow)?;
        let summary = f.summary(flow, now_ms);
        let owners = f.partition_owners();
        let rates = f.rates(now_ms);
        let totals = f.partition_totals();
        let mut topics: BTreeMap<&str, TopicView> = BTreeMap::new();
        for ((topic, partition), (process, p)) in &owners {
            let (rps, bps) = rates.get(&(topic.to_string(), *partition)).copied().unwrap_or((0.0, 0.0));
            let lag_seconds = lag_seconds(p.lag, p.last_timestamp_ms, f.runs[*process].latest.as_ref().map_or(now_ms, |r| r.at_ms));
            let view = PartitionView {
                partition: *partition,
                records_total: totals.get(&(topic.to_string(), *partition)).copied().unwrap_or(0),
                records_per_sec: rps,
                bytes_per_sec: bps,
                latency: f.latency(now_ms, Some(&(topic.to_string(), *partition))),
                position: p.position,
                lag_records: p.lag,
                lag_seconds,
                process: process.to_string(),
            };
            let t = topics.entry(topic).or_insert_with(|| TopicView {
                topic: topic.to_string(),
                remote_topic: p.remote_topic.clone(),
                records_total: 0,
                records_per_sec: 0.0,
                bytes_per_sec: 0.0,
                latency: Latency::default(),
                lag_records: 0,
                lag_seconds: 0.0,
                partitions: Vec::new(),
            });
            t.records_total += view.records_total;
            t.records_per_sec += view.records_per_sec;
            t.bytes_per_sec += view.bytes_per_sec;
            t.lag_records += view.lag_records;
            t.lag_seconds = t.lag_seconds.max(view.lag_seconds);
            t.latency = Latency::worst([&t.latency, &view.latency].into_iter());
            t.partitions.push(view);
        }
        let mut checkpoints: BTreeMap<&str, i64> = BTreeMap::new();
        for r in f.live_reports(now_ms) {
            for c in &r.checkpoints {
                let newest = checkpoints.entry(c.group.as_str()).or_insert(c.checked_ms);
                *newest = (*newest).max(c.checked_ms);
            }
        }
        let process_list = f
            .live_reports(now_ms)
            .map(|r| ProcessView { process: r.process.clone(), report_age_ms: (now_ms - r.at_ms).max(0), partitions: r.partitions.len() })
            .collect();
        Some(FlowDetail {
            summary,
            topics: topics.into_values().collect(),
            checkpoints: checkpoints.into_iter().map(|(g, t)| CheckpointView { group: g.to_string(), age_ms: (now_ms - t).max(0) }).collect(),
            process_list,
        })
    }

    pub fn series(&self, flow: &str) -> Option<Vec<Point>> {
        Some(self.flows.get(flow)?.series.values().cloned().collect())
    }
}

/// Source-time lag: how old the newest replicated record was when the partition still had
/// `lag` records to go.
pub fn lag_seconds(lag: i64, last_timestamp_ms: i64, at_ms: i64) -> f64 {
    if lag <= 0 || last_timestamp_ms < 0 {
        0.0
    } else {
        (at_ms - last_timestamp_ms).max(0) as f64 / 1000.0
    }
}

impl FlowAgg {
    fn new(source: &str, target: &str) -> Self {
        FlowAgg { source: source.to_string(), target: target.to_string(), runs: HashMap::new(), retired: HashMap::new(), increments: VecDeque::new(), latencies: VecDeque::new(), series: BTreeMap::new() }
    }

    /// The worst latency summary of the flow (None) or of a partition within the rate window.
    fn latency(&self, now_ms: i64, partition: Option<&(String, i32)>) -> Latency {
        Latency::worst(self.latencies.iter().filter(|(at, p, _)| *at > now_ms - RATE_WINDOW_MS && p.as_ref() == partition).map(|(_, _, l)| l))
    }

    fn live_reports(&self, now_ms: i64) -> impl Iterator<Item = &MetricsReport> {
        self.runs.values().filter_map(|r| r.latest.as_ref()).filter(move |r| now_ms - r.at_ms <= STALE_AFTER_MS)
    }

    /// Each partition's freshest report: (process, metrics).
    fn partition_owners(&self) -> BTreeMap<(&str, i32), (&str, &ferry_mirror::report::PartitionMetrics)> {
        ferry_mirror::report::freshest(self.runs.values().filter_map(|r| r.latest.as_ref()))
            .into_iter()
            .map(|(k, (r, p))| (k, (r.process.as_str(), p)))
            .collect()
    }

    /// Records replicated per partition over every run (owned or since handed over).
    fn partition_totals(&self) -> HashMap<(String, i32), u64> {
        let mut totals: HashMap<(String, i32), u64> = self.retired.iter().map(|(k, (records, _))| (k.clone(), *records)).collect();
        for r in self.runs.values().filter_map(|r| r.latest.as_ref()) {
            for ((topic, partition), (records, _)) in run_counts(r) {
                *totals.entry((topic.to_string(), partition)).or_insert(0) += records;
            }
        }
        totals
    }

    /// Records/s and bytes/s per partition over the rate window.
    fn rates(&self, now_ms: i64) -> HashMap<(String, i32), (f64, f64)> {
        let secs = RATE_WINDOW_MS as f64 / 1000.0;
        let mut rates: HashMap<(String, i32), (f64, f64)> = HashMap::new();
        for (at, topic, partition, dr, db) in &self.increments {
            if *at > now_ms - RATE_WINDOW_MS {
                let e = rates.entry((topic.clone(), *partition)).or_default();
                e.0 += *dr as f64 / secs;
                e.1 += *db as f64 / secs;
            }
        }
        rates
    }

    fn summary(&self, name: &str, now_ms: i64) -> FlowSummary {
        let newest = self.runs.values().filter_map(|r| r.latest.as_ref()).max_by_key(|r| r.at_ms);
        let live: Vec<&MetricsReport> = self.live_reports(now_ms).collect();
        let (state, reason) = match (live.iter().find_map(|r| r.failing.clone()), newest) {
            (Some(reason), _) => (FlowState::Failing, Some(reason)),
            (None, Some(n)) if live.is_empty() => match &n.failing {
                Some(reason) => (FlowState::Failing, Some(reason.clone())),
                None => (FlowState::Paused, Some(format!("no ferry mirror process has reported for {} s", (now_ms - n.at_ms) / 1000))),
            },
            (None, None) => (FlowState::Paused, Some("no ferry mirror process has reported this flow".to_string())),
            (None, Some(_)) => (FlowState::Active, None),
        };
        let owners = self.partition_owners();
        let rates = self.rates(now_ms);
        let lag_seconds = owners
            .values()
            .map(|(process, p)| lag_seconds(p.lag, p.last_timestamp_ms, self.runs[*process].latest.as_ref().map_or(now_ms, |r| r.at_ms)))
            .fold(0.0, f64::max);
        FlowSummary {
            flow: name.to_string(),
            source: self.source.clone(),
            target: self.target.clone(),
            state,
            reason,
            processes: live.len(),
            records_total: self.runs.values().filter_map(|r| r.latest.as_ref()).flat_map(|r| run_counts(r).into_values()).map(|(r, _)| r).sum::<u64>()
                + self.retired.values().map(|(r, _)| r).sum::<u64>(),
            bytes_total: self.runs.values().filter_map(|r| r.latest.as_ref()).flat_map(|r| run_counts(r).into_values()).map(|(_, b)| b).sum::<u64>()
                + self.retired.values().map(|(_, b)| b).sum::<u64>(),
            records_per_sec: rates.values().map(|r| r.0).sum(),
            bytes_per_sec: rates.values().map(|r| r.1).sum(),
            latency: self.latency(now_ms, None),
            lag_records: owners.values().map(|(_, p)| p.lag).sum(),
            lag_seconds,
            heartbeat_age_ms: self.runs.values().filter_map(|r| r.latest.as_ref()?.heartbeat_ms).max().map(|t| (now_ms - t).max(0)),
            report_age_ms: newest.map(|n| (now_ms - n.at_ms).max(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_mirror::report::{GroupCheckpoint, PartitionMetrics};

    #[test]
    fn state_names_are_the_serialized_ones() {
        for s in FlowState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    fn report(process: &str, at_ms: i64, parts: &[(&str, i32, u64, i64)]) -> MetricsReport {
        MetricsReport {
            heartbeat_ms: Some(at_ms - 500),
            latency: LatencySummary { samples: 3, p50_ms: Some(10), p99_ms: Some(40), max_ms: Some(50) },
            partitions: parts
                .iter()
                .map(|&(topic, partition, records, lag)| PartitionMetrics {
                    latency: LatencySummary::of(vec![5, 9]),
                    records,
                    bytes: records * 10,
                    position: records as i64,
                    lag,
                    last_timestamp_ms: at_ms - 3000,
                    ..PartitionMetrics::new(topic, &format!("a.{topic}"), partition)
                })
                .collect(),
            checkpoints: vec![GroupCheckpoint { group: "g".into(), checked_ms: at_ms - 100 }],
            ..MetricsReport::new("a", "b", process, 0, at_ms)
        }
    }

    #[test]
    fn runs_silent_past_the_history_are_dropped_and_their_totals_kept() {
        let mut agg = Aggregator::default();
        // A restart loop: 500 runs of one process, each replicating 10 records of partition 0.
        for i in 0..500 {
            agg.apply(report(&format!("p{i}"), 100_000 + i * 1_000, &[("t", 0, 10, 0)]));
        }
        let before = agg.summaries(700_000)[0].records_total;
        assert_eq!(before, 5_000);
        let later = 100_000 + 500 * 1_000 + HISTORY_MS + 1;
        agg.apply(report("live", later, &[("t", 1, 7, 0)]));
        agg.prune(later);
        let flow = &agg.flows["a->b"];
        assert_eq!(flow.runs.len(), 1, "only the live run is kept");
        assert_eq!(flow.retired.len(), 1, "one entry per partition");
        let s = &agg.summaries(later)[0];
        assert_eq!((s.records_total, s.bytes_total), (5_007, 50_070));
        // Partitions no run has reported for the chart history leave the detail view.
        let d = agg.detail("a->b", later).unwrap();
        assert_eq!(d.topics[0].partitions.iter().map(|p| p.partition).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn two_processes_and_a_restart_add_up() {
        let mut agg = Aggregator::default();
        agg.expect_flow("a->b", "a", "b");
        // Process 1 replicated partition 0 (100 records), then died; its run restarted as p3.
        agg.apply(report("p1", 100_000, &[("t", 0, 60, 40)]));
        agg.apply(report("p1", 102_000, &[("t", 0, 100, 0)]));
        // Process 2 owns partition 1 throughout.
        agg.apply(report("p2", 101_000, &[("t", 1, 30, 0)]));
        agg.apply(report("p2", 103_000, &[("t", 1, 50, 0)]));
        agg.apply(report("p3", 104_000, &[("t", 0, 20, 5)]));
        // A replayed older report changes nothing.
        agg.apply(report("p2", 101_000, &[("t", 1, 30, 0)]));
        assert_eq!(agg.ignored, 1);

        let now = 105_000;
        let s = &agg.summaries(now)[0];
        assert_eq!((s.state, s.processes), (FlowState::Active, 3));
        assert_eq!(s.records_total, 100 + 50 + 20, "every run's latest counters");
        assert_eq!(s.bytes_total, 1700);
        // Increments within the last 10 s: p1 60 + 40, p2 30 + 20, p3 20.
        assert!((s.records_per_sec - 17.0).abs() < 1e-9, "{}", s.records_per_sec);
        assert_eq!(s.lag_records, 5, "partition 0's owner is now p3");
        assert!((s.lag_seconds - 3.0).abs() < 1e-9);
        assert_eq!(s.latency, Latency { p50_ms: Some(10), p99_ms: Some(40), max_ms: Some(50) });
        assert_eq!(s.heartbeat_age_ms, Some(1500));

        let d = agg.detail("a->b", now).unwrap();
        let t = &d.topics[0];
        assert_eq!((t.topic.as_str(), t.remote_topic.as_str(), t.records_total, t.lag_records), ("t", "a.t", 170, 5));
        assert_eq!(t.partitions[0].process, "p3");
        assert_eq!(t.partitions[0].records_total, 120);
        assert_eq!(d.checkpoints, vec![CheckpointView { group: "g".into(), age_ms: 1100 }]);
        assert_eq!(d.process_list.len(), 3);
        let series = agg.series("a->b").unwrap();
        assert_eq!(series.len(), 1, "all in one 10 s bucket");
        assert!((series[0].records_per_sec - 17.0).abs() < 1e-9);
    }

    #[test]
    fn a_partition_handed_over_keeps_counting_in_the_run_that_replicated_it() {
        use ferry_mirror::report::ReleasedCounts;
        let mut agg = Aggregator::default();
        agg.apply(report("p1", 100_000, &[("t", 0, 100, 0), ("t", 1, 100, 0)]));
        // p1 handed partition 0 over to p2 after replicating 120 of it; it keeps partition 1.
        let mut later = report("p1", 102_000, &[("t", 1, 150, 0)]);
        later.released = vec![ReleasedCounts { topic: "t".into(), partition: 0, records: 120, bytes: 1200 }];
        agg.apply(later);
        agg.apply(report("p2", 103_000, &[("t", 0, 30, 0)]));
        let now = 104_000;
        let s = &agg.summaries(now)[0];
        assert_eq!(s.records_total, 120 + 150 + 30, "what p1 replicated of partition 0 is not lost with the handover");
        assert_eq!(s.bytes_total, 3000);
        // Increments: p1 100 + 100, then +20 (partition 0) and +50 (partition 1); p2 30.
        assert!((s.records_per_sec - 30.0).abs() < 1e-9, "{}", s.records_per_sec);
        let d = agg.detail("a->b", now).unwrap();
        let p0 = d.topics[0].partitions.iter().find(|p| p.partition == 0).unwrap();
        assert_eq!((p0.process.as_str(), p0.records_total), ("p2", 150));
    }

    #[test]
    fn states_follow_reports() {
        let mut agg = Aggregator::default();
        agg.expect_flow("a->b", "a", "b");
        let s = &agg.summaries(0)[0];
        assert_eq!((s.state, s.reason.as_deref()), (FlowState::Paused, Some("no ferry mirror process has reported this flow")));

        agg.apply(report("p1", 100_000, &[]));
        assert_eq!(agg.summaries(101_000)[0].state, FlowState::Active);
        let s = &agg.summaries(100_000 + STALE_AFTER_MS + 5_000)[0];
        assert_eq!((s.state, s.reason.as_deref()), (FlowState::Paused, Some("no ferry mirror process has reported for 15 s")));

        let mut failing = report("p1", 120_000, &[]);
        failing.failing = Some("cluster 'a' (h:1): fetch metadata failed".into());
        agg.apply(failing);
        let s = &agg.summaries(121_000)[0];
        assert_eq!(s.state, FlowState::Failing);
        assert!(s.reason.as_deref().unwrap().contains("cluster 'a'"));
        // A fatal stop stays failing after the process is gone.
        assert_eq!(agg.summaries(200_000)[0].state, FlowState::Failing);
    }

    #[test]
    fn history_is_pruned_to_an_hour() {
        let mut agg = Aggregator::default();
        agg.apply(report("p1", 0, &[("t", 0, 10, 0)]));
        agg.apply(report("p1", HISTORY_MS + 20_000, &[("t", 0, 20, 0)]));
        agg.prune(HISTORY_MS + 20_000);
        assert_eq!(agg.series("a->b").unwrap().len(), 1);
        assert_eq!(lag_seconds(0, 5, 10), 0.0);
        assert_eq!(lag_seconds(3, -1, 10), 0.0);
    }
}
