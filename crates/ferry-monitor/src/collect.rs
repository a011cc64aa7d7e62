//! Polls every cluster (a thread per cluster, every [`Monitor::interval`]): its brokers and topics
//! ([`crate::cluster`]), then its consumer groups: describes them, reads each one's lag, keeps a
//! window of samples per partition and judges them ([`crate::status`]). What the API answers is
//! the latest [`ClusterSnapshot`], served from memory. A cluster that does not answer is retried at the next poll and reported
//! once per outage in the log and in its view, never in a tight loop.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ferry_kafka::ClusterClient;
use serde::Serialize;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::cluster::{BrokerView, TopicView};
use crate::groups::{GroupReader, PartitionLag};
use crate::status::{self, Sample, Status, Trend, Verdict};

/// Samples kept per partition (Burrow keeps 10 commits), more when they span less than
/// [`status::MIN_SPAN_MS`], up to [`MAX_WINDOW`].
pub const WINDOW: usize = 10;
pub const MAX_WINDOW: usize = 120;

/// A member of a group, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MemberView {
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<Assigned>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Assigned {
    pub topic: String,
    pub partition: i32,
}

/// One partition of a group: its lag and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = GroupPartition)]
pub struct PartitionView {
    #[serde(flatten)]
    pub lag: PartitionLag,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub trend: Option<Trend>,
}

/// A group as last polled.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GroupView {
    pub group: String,
    /// The coordinator's state: `Stable`, `Empty`, `PreparingRebalance`, …
    pub state: String,
    pub status: Status,
    pub reason: String,
    pub members: Vec<MemberView>,
    pub partitions: Vec<PartitionView>,
    /// Sum of the partitions' lag, and the oldest unconsumed record's age.
    pub lag: i64,
    pub lag_seconds_max: Option<f64>,
    pub polled_at_ms: i64,
}

/// A cluster as last polled (brokers, topics, groups), and whether the last poll failed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterSnapshot {
    /// The cluster id (DescribeCluster), when it could be read.
    pub cluster_id: Option<String>,
    pub brokers: Vec<BrokerView>,
    pub topics: Vec<TopicView>,
    pub groups: BTreeMap<String, GroupView>,
    pub error: Option<String>,
    pub polled_at_ms: Option<i64>,
}

/// Every cluster's groups, shared between the poll threads and the API.
pub struct Monitor {
    /// Replaced whole after each poll: readers hold the one they got, never a lock.
    clusters: RwLock<BTreeMap<String, Arc<ClusterSnapshot>>>,
    /// The canary of each cluster it runs on ([`crate::canary`]).
    canaries: RwLock<BTreeMap<String, Arc<RwLock<crate::canary::CanaryState>>>>,
    /// One admin client per cluster for what is read on demand (a topic's configs).
    admins: BTreeMap<String, ferry_kafka::Result<ferry_kafka::Admin>>,
    pub interval: Duration,
}

impl Monitor {
    /// Starts a poll thread per cluster; they end with `cancel`.
    pub fn start(clusters: &[ClusterClient], interval: Duration, cancel: tokio_util::sync::CancellationToken) -> Arc<Monitor> {
        let admins = clusters.iter().map(|c| (c.alias.clone(), ferry_kafka::Admin::connect(c))).collect();
        let monitor = Arc::new(Monitor { clusters: RwLock::new(clusters.iter().map(|c| (c.alias.clone(), Arc::new(ClusterSnapshot::default()))).collect()), canaries: RwLock::new(BTreeMap::new()), admins, interval });
        for cluster in clusters {
            let (monitor, polled, cancel) = (monitor.clone(), cluster.clone(), cancel.clone());
            let spawned = std::thread::Builder::new().name(format!("groups-{}", cluster.alias)).spawn(move || monitor.poll_loop(&polled, &cancel));
            if let Err(e) = spawned {
                warn!(cluster = %cluster_name(cluster), error = %e, "cannot start the group monitor thread");
            }
        }
        monitor
    }

    /// Starts the canary on `cluster`.
    pub fn start_canary(&self, cluster: &ClusterClient, cancel: tokio_util::sync::CancellationToken) {
        let state = Arc::new(RwLock::new(crate::canary::CanaryState::default()));
        self.canaries.write().unwrap().insert(cluster.alias.clone(), state.clone());
        crate::canary::start(cluster, state, cancel);
    }

    /// The canary's latest per-broker latencies on `cluster`; None when it does not run there.
    pub fn canary(&self, cluster: &str) -> Option<crate::canary::CanaryState> {
        Some(self.canaries.read().unwrap().get(cluster)?.read().unwrap().clone())
    }

    /// The configuration set on `topic` (its overrides of the broker defaults), read now; None
    /// for a cluster not in the file.
    pub async fn topic_configs(&self, cluster: &str, topic: &str) -> Option<Result<BTreeMap<String, String>, String>> {
        let admin = match self.admins.get(cluster)? {
            Ok(a) => a,
            Err(e) => return Some(Err(e.to_string())),
        };
        Some(admin.describe_topic_configs(&[topic.to_string()]).await.map(|mut m| m.remove(topic).unwrap_or_default()).map_err(|e| e.to_string()))
    }

    /// `cluster` as last polled (None: not a cluster of the file).
    pub fn cluster(&self, alias: &str) -> Option<Arc<ClusterSnapshot>> {
        self.clusters.read().unwrap().get(alias).cloned()
    }

    fn poll_loop(&self, cluster: &ClusterClient, cancel: &tokio_util::sync::CancellationToken) {
        let mut windows: HashMap<(String, String, i32), VecDeque<Sample>> = HashMap::new();
        let mut reader: Option<(GroupReader, rdkafka::consumer::BaseConsumer)> = None;
        let mut failing = false;
        while !cancel.is_cancelled() {
            let started = Instant::now();
            let outcome = (|| -> ferry_kafka::Result<(Option<String>, Vec<BrokerView>, Vec<TopicView>, BTreeMap<String, GroupView>)> {
                if reader.is_none() {
                    reader = Some((GroupReader::connect(cluster)?, crate::cluster::client(cluster)?));
                }
                let (groups_reader, metadata) = reader.as_ref().expect("connected above");
                let within = self.interval.clamp(Duration::from_secs(5), Duration::from_secs(30));
                let (mut brokers, topics) = crate::cluster::read(cluster, metadata, within)?;
                // Racks and the controller: shown when the cluster answers DescribeCluster.
                let described = groups_reader.admin().describe_cluster().ok();
                if let Some(d) = &described {
                    crate::cluster::with_description(&mut brokers, d);
                }
                let ends: BTreeMap<(String, i32), i64> = topics.iter().flat_map(|t| t.partitions.iter().filter_map(|p| p.end.map(|e| ((t.topic.clone(), p.partition), e)))).collect();
                Ok((described.and_then(|d| d.cluster_id), brokers, topics, poll(cluster, groups_reader, &ends, &mut windows, within)?))
            })();
            let now = now_ms();
            let snapshot = match outcome {
                Ok((cluster_id, brokers, topics, groups)) => {
                    if failing {
                        info!(cluster = %cluster_name(cluster), "cluster readable again");
                        failing = false;
                    }
                    ClusterSnapshot { cluster_id, brokers, topics, groups, error: None, polled_at_ms: Some(now) }
                }
                Err(e) => {
                    if !failing {
                        warn!(cluster = %cluster_name(cluster), error = %e, "cannot read the cluster's brokers, topics or groups; retried every poll, said again once it recovers");
                        failing = true;
                    }
                    ClusterSnapshot { error: Some(e.to_string()), polled_at_ms: Some(now), ..Default::default() }
                }
            };
            self.clusters.write().unwrap().insert(cluster.alias.clone(), Arc::new(snapshot));
            let rest = self.interval.saturating_sub(started.elapsed());
            let deadline = Instant::now() + rest;
            while Instant::now() < deadline && !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(100).min(deadline - Instant::now()));
            }
        }
    }
}

fn cluster_name(c: &ClusterClient) -> String {
    format!("{} ({})", c.alias, c.bootstrap_servers)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One poll of a cluster's consumer groups (those of the consumer protocol).
fn poll(cluster: &ClusterClient, reader: &GroupReader, ends: &BTreeMap<(String, i32), i64>, windows: &mut HashMap<(String, String, i32), VecDeque<Sample>>, within: Duration) -> ferry_kafka::Result<BTreeMap<String, GroupView>> {
    let described: Vec<_> = ferry_kafka::describe_groups(cluster, None, within)?.into_iter().filter(|g| g.protocol_type == "consumer" || g.protocol_type.is_empty()).collect();
    let asked: Vec<(String, Vec<(String, i32)>)> = described.iter().map(|g| (g.name.clone(), g.members.iter().flat_map(|m| m.assignment.iter().cloned()).collect())).collect();
    let now = now_ms();
    let mut all_lags = reader.lags(&asked, ends, now, within)?;
    let mut out = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (g, (_, assigned)) in described.into_iter().zip(asked) {
        // A group whose offsets could not be read this time (its coordinator moving) is left
        // out of this poll rather than shown without lag.
        let lags = match all_lags.remove(&g.name) {
            Some(Ok(lags)) => lags,
            _ => {
                seen.extend(windows.keys().filter(|k| k.0 == g.name).cloned());
                continue;
            }
        };
        let mut partitions = Vec::new();
        for l in lags {
            let key = (g.name.clone(), l.topic.clone(), l.partition);
            seen.insert(key.clone());
            let window = windows.entry(key).or_default();
            if let Some(c) = l.committed {
                window.push_back(Sample { at_ms: now, committed: c, end: l.end });
                // At least WINDOW samples, and as many as span MIN_SPAN_MS when polls are
                // frequent (a stall needs that long a view); never more than MAX_WINDOW.
                while window.len() > MAX_WINDOW || (window.len() > WINDOW && window.get(1).is_some_and(|second| now - second.at_ms >= status::MIN_SPAN_MS)) {
                    window.pop_front();
                }
            }
            let samples: Vec<Sample> = window.iter().copied().collect();
            let owned = assigned.iter().any(|(t, p)| *t == l.topic && *p == l.partition);
            let verdict = if l.committed.is_none() { Verdict { status: Status::Ok, reason: "nothing committed yet".into() } } else { status::partition(&samples, owned) };
            partitions.push(PartitionView { lag: l, verdict, trend: status::trend(&samples) });
        }
        let verdict = status::group(partitions.iter().map(|p| (p.lag.topic.as_str(), p.lag.partition, &p.verdict)));
        let lag = partitions.iter().filter_map(|p| p.lag.lag).sum();
        let lag_seconds_max = partitions.iter().filter_map(|p| p.lag.lag_seconds.map(|s| s.seconds)).fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
        let members = g
            .members
            .into_iter()
            .map(|m| MemberView { client_id: m.client_id, host: m.host, assignment: m.assignment.into_iter().map(|(topic, partition)| Assigned { topic, partition }).collect() })
            .collect();
        out.insert(g.name.clone(), GroupView { group: g.name, state: g.state, status: verdict.status, reason: verdict.reason, members, partitions, lag, lag_seconds_max, polled_at_ms: now });
    }
    // Partitions of groups gone or no longer committed are forgotten.
    windows.retain(|k, _| seen.contains(k));
    Ok(out)
}
