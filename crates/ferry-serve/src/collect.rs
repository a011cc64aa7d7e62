//! Background readers: one thread per target cluster follows `ferry-metrics.internal` into the
//! [`Aggregator`]; one thread probes every cluster's reachability.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_kafka::{Admin, ClusterClient};
use ferry_mirror::offset_store::TopicTail;
use ferry_mirror::report::{MetricsReport, METRICS_TOPIC};
use ferry_mirror::MirrorConfig;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::aggregate::Aggregator;

/// A cluster of the configuration and whether Ferry can reach it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ClusterView {
    pub alias: String,
    pub address: String,
    /// None until the first probe finished.
    pub reachable: Option<bool>,
    /// Why it is unreachable.
    pub error: Option<String>,
    /// Flows into this cluster and the age of their last heartbeat.
    pub upstream: Vec<UpstreamHeartbeat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UpstreamHeartbeat {
    pub source: String,
    pub heartbeat_age_ms: Option<i64>,
}

/// What the readers share with the HTTP handlers.
pub struct Shared {
    pub aggregator: Mutex<Aggregator>,
    pub clusters: Mutex<BTreeMap<String, ClusterView>>,
    /// Target clusters whose metrics topic has been read to its end at least once.
    pub caught_up: Mutex<BTreeSet<String>>,
    pub targets: BTreeSet<String>,
    /// `ferry sql` jobs, as their reports on every cluster tell.
    pub sql_jobs: Arc<Mutex<crate::sql_jobs::SqlJobs>>,
    /// What `ferry sql run --engine flink` submitted, as recorded on every cluster.
    pub flink_submissions: Arc<Mutex<crate::flink_jobs::Submissions>>,
}

impl Shared {
    pub fn new(config: &MirrorConfig) -> Shared {
        let mut aggregator = Aggregator::default();
        for f in &config.flows {
            aggregator.expect_flow(&f.name(), &f.source, &f.target);
        }
        let clusters = config
            .clusters
            .iter()
            .map(|c| (c.alias.clone(), ClusterView { alias: c.alias.clone(), address: c.bootstrap_servers.clone(), reachable: None, error: None, upstream: Vec::new() }))
            .collect();
        Shared {
            aggregator: Mutex::new(aggregator),
            clusters: Mutex::new(clusters),
            caught_up: Mutex::default(),
            targets: config.flows.iter().map(|f| f.target.clone()).collect(),
            sql_jobs: Arc::default(),
            flink_submissions: Arc::default(),
        }
    }

    /// Every target's metrics have been read up to date.
    pub fn ready(&self) -> bool {
        *self.caught_up.lock().unwrap() == self.targets
    }
}

/// Starts the reader threads; they stop when `cancel` fires.
pub fn start(config: &MirrorConfig, shared: Arc<Shared>, cancel: CancellationToken) {
    for alias in &shared.targets {
        let cluster = config.cluster(alias).clone();
        let (shared, cancel) = (shared.clone(), cancel.clone());
        std::thread::Builder::new()
            .name(format!("metrics-{alias}"))
            .spawn(move || follow_metrics(cluster, shared, cancel))
            .expect("cannot start a metrics reader thread");
    }
    for cluster in &config.clusters {
        let (c, jobs, stop) = (cluster.clone(), shared.sql_jobs.clone(), cancel.clone());
        std::thread::Builder::new()
            .name(format!("sql-jobs-{}", cluster.alias))
            .spawn(move || crate::sql_jobs::follow(c, jobs, stop))
            .expect("cannot start a sql job reader thread");
        let (cluster, submissions, cancel) = (cluster.clone(), shared.flink_submissions.clone(), cancel.clone());
        std::thread::Builder::new()
            .name(format!("flink-jobs-{}", cluster.alias))
            .spawn(move || crate::flink_jobs::follow(cluster, submissions, cancel))
            .expect("cannot start a flink job reader thread");
    }
    let clusters = config.clusters.clone();
    std::thread::Builder::new()
        .name("cluster-probe".into())
        .spawn(move || probe(clusters, shared, cancel))
        .expect("cannot start the cluster probe thread");
}

fn sleep(cancel: &CancellationToken, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if cancel.is_cancelled() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    cancel.is_cancelled()
}

fn apply(shared: &Shared, value: Option<&[u8]>) {
    let mut agg = shared.aggregator.lock().unwrap();
    match value.and_then(MetricsReport::decode) {
        Some(report) => agg.apply(report),
        None => agg.ignored += 1,
    }
}

fn follow_metrics(cluster: ClusterClient, shared: Arc<Shared>, cancel: CancellationToken) {
    follow_topic(
        &cluster,
        METRICS_TOPIC,
        "mirror metrics",
        &cancel,
        |v| apply(&shared, v),
        || {
            shared.caught_up.lock().unwrap().insert(cluster.alias.clone());
        },
        || shared.aggregator.lock().unwrap().prune(ferry_mirror::report::now_ms()),
    );
}

/// Reads `topic` of `cluster` from its beginning into `each` (`caught_up` once it has been read
/// to its end), then follows it every 250 ms (`after_drain` after each turn) until `cancel`. A
/// cluster it cannot read is retried with backoff and said once.
pub(crate) fn follow_topic(
    cluster: &ClusterClient,
    topic: &str,
    what: &str,
    cancel: &CancellationToken,
    mut each: impl FnMut(Option<&[u8]>),
    caught_up: impl FnOnce(),
    mut after_drain: impl FnMut(),
) {
    let mut backoff = Duration::from_secs(1);
    let mut said = false;
    let mut tail = loop {
        let opened = TopicTail::open(cluster, topic).and_then(|mut tail| {
            tail.catch_up(Duration::from_secs(120), |_, v, _| each(v))?;
            Ok(tail)
        });
        match opened {
            Ok(tail) => break tail,
            Err(e) => {
                if !said {
                    warn!(cluster = %cluster.alias, address = %cluster.bootstrap_servers, error = %e, "cannot read {what}; retrying with backoff up to 30 s");
                    said = true;
                }
                if sleep(cancel, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    caught_up();
    info!(cluster = %cluster.alias, "{what} read; following");
    while !sleep(cancel, Duration::from_millis(250)) {
        tail.drain(|_, v, _| each(v));
        after_drain();
    }
}

fn probe(clusters: Vec<ClusterClient>, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        for c in &clusters {
            let result = Admin::connect(c).and_then(|a| a.list_topics());
            let mut views = shared.clusters.lock().unwrap();
            if let Some(v) = views.get_mut(&c.alias) {
                let was = v.reachable;
                v.reachable = Some(result.is_ok());
                v.error = result.as_ref().err().map(ToString::to_string);
                if was != v.reachable {
                    match &v.error {
                        Some(e) => warn!(cluster = %c.alias, address = %c.bootstrap_servers, error = %e, "cluster unreachable"),
                        None => info!(cluster = %c.alias, address = %c.bootstrap_servers, "cluster reachable"),
                    }
                }
            }
        }
        if sleep(&cancel, Duration::from_secs(5)) {
            return;
        }
    }
}
