//! One replication flow `source->target`: its control task discovers topics, manages remote
//! topics, hands partitions to relay threads, stores positions, emits heartbeats and publishes
//! metrics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_kafka::{Admin, ClientRole, ClusterClient, NewTopicSpec, TopicMeta};
use metrics::{counter, gauge, histogram, Gauge};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tokio::sync::watch;
use tokio::task::spawn_blocking;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::checkpoint::{self, Checkpointer};
use crate::config::{FlowConfig, OffsetSyncsLocation};
use crate::control::{self, ControlLog, ControlWatch, FlowLists, CONTROL_TOPIC};
use crate::heartbeat::Heartbeat;
use crate::membership::{self, Member, MemberEvent, RemotePartition};
use crate::offset_store::{compacted_topic, OffsetSyncWriter, RunLog, TopicTail};
use crate::positions::PositionStore;
use crate::progress::{PartitionProgress, Position, ProgressTable, SharedProgress, Stall, UnsavedRuns, Watchdog};
use crate::relay::{now_ms, DataProducer, DeliveryContext, Relay, RelayCommand, Sink};
use crate::report::{GroupCheckpoint, LatencySummary, MetricsReport, PartitionMetrics, ReleasedCounts, METRICS_INTERVAL, METRICS_RETENTION_MS, METRICS_TOPIC};
use crate::replication_policy::{PolicyKind, HEARTBEATS_TOPIC};
use crate::telemetry::{self, kind};
use crate::txn::{self, Transactions};
use crate::topic_plan::{self, Configs, TopicAction, TopicFilter};
use crate::{Error, FlowStatus, Result};

struct Assigned {
    progress: SharedProgress,
    relay: usize,
    lag: Gauge,
}

pub(crate) struct Flow {
    pub(crate) config: FlowConfig,
    /// The properties file (origin of list entries in `ferry ctl --list`).
    pub(crate) file: String,
    /// This process's run (`report::process_id`) and its start, for metrics reports.
    pub(crate) process: String,
    pub(crate) started_ms: i64,
    pub(crate) reverse_location: OffsetSyncsLocation,
    pub(crate) source: ClusterClient,
    pub(crate) target: ClusterClient,
    pub(crate) table: Arc<ProgressTable>,
    pub(crate) status: Arc<Mutex<FlowStatus>>,
}

struct Running {
    name: String,
    config: FlowConfig,
    source_admin: Arc<Admin>,
    target_admin: Arc<Admin>,
    watermarks: Arc<BaseConsumer<ferry_kafka::QuietContext>>,
    store: Arc<PositionStore>,
    /// This process's member of the positions group: commits positions, holds ownership.
    member: Arc<Member>,
    /// Exactly-once mode: the transactional producer that commits records with positions.
    txn: Option<Arc<Transactions>>,
    /// Exactly-once mode: the producer cannot go on; the flow stops with this reason.
    fatal: Option<String>,
    committed_once: bool,
    /// Sends the flow's remote topics to the member's subscription.
    member_topics: Sender<Vec<String>>,
    subscribed: Option<Vec<String>>,
    /// Every source partition the flow replicates (with its remote topic), from the last refresh.
    wanted: HashMap<(String, i32), String>,
    /// Remote partitions the group gave this process.
    owned: HashSet<RemotePartition>,
    /// Source topic names at the last refresh (to tell a deleted topic from an unselected one).
    source_names: HashSet<String>,
    /// Follows the offset-runs topic: partitions taken over from another process need the runs
    /// it stored.
    history_tail: Option<TopicTail>,
    /// The history was read to its end and no partition was assigned since.
    history_current: bool,
    /// Records and bytes this run replicated of partitions it no longer owns (source topic,
    /// partition): reported so a run's totals never go back, and resumed if a partition returns.
    released: HashMap<(String, i32), (u64, u64)>,
    /// Offset runs and MM2 offset syncs, on the `offset-syncs.topic.location` cluster.
    syncs: Arc<OffsetSyncWriter>,
    syncs_admin: Arc<Admin>,
    syncs_topics_ready: bool,
    /// This flow's stored offset runs, read once before the first partition is assigned.
    history: Option<RunLog>,
    /// MirrorMaker 2's progress for this source on the target (`mm2-offsets.<source>.internal`),
    /// read when a partition first has no stored position: partitions MM2 replicated resume
    /// where it stopped. `Some(None)`: read, MM2 never ran here.
    mm2: Option<Option<crate::mm2_offsets::Mm2Offsets>>,
    /// Heartbeats and metrics reports (the data producer itself unless exactly-once).
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    table: Arc<ProgressTable>,
    relays: Vec<Sender<RelayCommand>>,
    assigned: HashMap<(String, i32), Assigned>,
    filter: TopicFilter,
    heartbeats_ready: bool,
    last_config_sync: Option<Instant>,
    reported: HashSet<String>,
    status: Arc<Mutex<FlowStatus>>,
    last_latency_ms: Arc<AtomicI64>,
    file: String,
    /// Publishes the live lists; moved into the control watcher once the lists are read.
    lists_tx: Option<watch::Sender<Option<Arc<FlowLists>>>>,
    control_thread: Option<std::thread::JoinHandle<()>>,
    cancel: CancellationToken,
    metrics_ready: bool,
    /// The store of offset runs and positions in flight.
    persisting: Option<tokio::task::JoinHandle<()>>,

    process: String,
    started_ms: i64,
}

fn producer_config(target: &ClusterClient, transactional_id: Option<&str>) -> rdkafka::ClientConfig {
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
fn transactional_id(flow: &str, process: &str) -> String {
    format!("ferry-mirror.{flow}.{process}")
}

/// Exactly-once mode: registers the transactional id and opens the first transaction,
/// retrying with backoff while the target does not answer. `Ok(false)`: cancelled first.
async fn init_transactions(flow: &str, target: &ClusterClient, producer: &Arc<ThreadedProducer<DeliveryContext>>, cancel: &CancellationToken) -> Result<bool> {
    let mut backoff = Backoff::default();
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
                let wait = backoff.next();
                warn!(flow, cluster = %target.alias, address = %target.bootstrap_servers, error = %e, retry_in = ?wait, "cannot start transactions on the target; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

impl Flow {
    pub(crate) async fn run(self, cancel: CancellationToken) -> Result<()> {
        let name = self.config.name();
        let result = self.run_inner(&name, cancel).await;
        if let Err(e) = &result {
            gauge!(telemetry::FLOW_UP, "flow" => name.clone()).set(0.0);
            error!(flow = %name, error = %e, "FLOW STOPPED");
        }
        result
    }

    async fn run_inner(self, name: &str, cancel: CancellationToken) -> Result<()> {
        let Flow { config, file, process, started_ms, reverse_location, source, target, table, status } = self;
        // The flow's allow/deny lists: read from the control topic before the first topic
        // refresh, then followed live (`ferry ctl topics|groups`).
        let (lists_tx, mut lists_rx) = watch::channel(None::<Arc<FlowLists>>);
        let rewind_pending = Arc::new(AtomicBool::new(false));
        let last_latency_ms = Arc::new(AtomicI64::new(-1));
        // The data producer: idempotent, or transactional in exactly-once mode, where it is made
        // again when it must be replaced. Exactly-once mode also needs a plain producer for
        // heartbeats, checkpoints and metrics reports (the transactional one writes only inside
        // transactions); it reports no partition progress (its own empty table).
        let make_producer = {
            let (name, target, rewind_pending, last_latency_ms) = (name.to_string(), target.clone(), rewind_pending.clone(), last_latency_ms.clone());
            let transactional_id = config.exactly_once.then(|| transactional_id(&name, &process));
            move |table: Arc<ProgressTable>, data: bool| -> std::result::Result<DataProducer, rdkafka::error::KafkaError> {
                let transactional_id = transactional_id.as_deref().filter(|_| data);
                let context = DeliveryContext {
                    flow: name.clone(),
                    target: target.alias.clone(),
                    table,
                    rewind_pending: rewind_pending.clone(),
                    latency: histogram!(telemetry::LATENCY, "flow" => name.clone()),
                    last_latency_ms: last_latency_ms.clone(),
                    delivery_errors: counter!(telemetry::ERRORS, "flow" => name.clone(), "kind" => kind::DELIVERY),
                    unreachable: counter!(telemetry::ERRORS, "flow" => name.clone(), "kind" => kind::TARGET_UNREACHABLE),
                    errors_logged: telemetry::Throttle::new(Duration::from_secs(10)),
                    transactional: transactional_id.is_some(),
                };
                let mut client = producer_config(&target, transactional_id);
                if !data {
                    client.set("client.id", format!("ferry-{}-internal", target.alias));
                }
                client.create_with_context(context)
            }
        };
        let created = |e| Error::Kafka(ferry_kafka::Error::new(&target, "create producer", e));
        let producer = Arc::new(make_producer(table.clone(), true).map_err(created)?);
        let internal = if config.exactly_once { Arc::new(make_producer(Arc::new(ProgressTable::default()), false).map_err(created)?) } else { producer.clone() };
        let sink = if config.exactly_once {
            if !init_transactions(name, &target, &producer, &cancel).await? {
                return Ok(());
            }
            Sink::Transactional(Arc::new(txn::Gate::new(producer)))
        } else {
            Sink::Plain(producer)
        };
        let make_producer = Arc::new(make_producer);
        let watermarks: BaseConsumer<ferry_kafka::QuietContext> = Relay::consumer_config(&source)
            .set("statistics.interval.ms", "0")
            .set("client.id", format!("ferry-{}-metadata", source.alias))
            .create_with_context(ferry_kafka::QuietContext)
            .map_err(|e| Error::Kafka(ferry_kafka::Error::new(&source, "create metadata client", e)))?;

        let relay_cancel = cancel.child_token();
        let mut relays = Vec::new();
        let mut threads = Vec::new();
        for i in 0..config.tasks_max {
            let (tx, rx) = channel();
            let relay = Relay {
                flow: name.to_string(),
                source: source.clone(),
                target: target.clone(),
                identity_policy: config.policy.kind == PolicyKind::Identity,
                table: table.clone(),
                sink: sink.clone(),
                rewind_pending: rewind_pending.clone(),
                commands: rx,
                cancel: relay_cancel.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("relay-{name}-{i}"))
                .spawn(move || relay.run())
                .map_err(|e| Error::Internal(format!("cannot start relay thread: {e}")))?;
            relays.push(tx);
            threads.push(thread);
        }

        let source_admin = Arc::new(Admin::connect(&source)?);
        let target_admin = Arc::new(Admin::connect(&target)?);
        let syncs_admin = config.offset_syncs_location.pick(&source_admin, &target_admin).clone();
        let syncs_topic = config.emit_offset_syncs_enabled.then(|| config.policy.offset_syncs_topic(&config.target));
        let syncs = Arc::new(OffsetSyncWriter::connect(syncs_admin.cluster(), config.policy.offset_runs_topic(&config.target), syncs_topic)?);
        let checkpointer = if config.emit_checkpoints_enabled {
            // The reverse flow target->source keeps its runs next to its offset syncs.
            let reverse_runs = checkpoint::names_carry_origin(&config.policy).then(|| {
                // The reverse flow's source is this flow's target.
                (reverse_location.pick(&target, &source).clone(), config.policy.offset_runs_topic(&config.source))
            });
            let checkpointer = Checkpointer {
                flow: name.to_string(),
                config: config.clone(),
                source: source.clone(),
                target: target.clone(),
                table: table.clone(),
                reverse_runs,
                producer: internal.clone(),
                status: status.clone(),
                runtime: tokio::runtime::Handle::current(),
                cancel: relay_cancel.clone(),
                lists: lists_rx.clone(),
            };
            Some(std::thread::Builder::new()
                .name(format!("checkpoints-{name}"))
                .spawn(move || checkpointer.run())
                .map_err(|e| Error::Internal(format!("cannot start checkpoint thread: {e}")))?)
        } else {
            None
        };

        // Membership in the positions group: which partitions this process replicates.
        let (member_events, mut member_rx) = tokio::sync::mpsc::unbounded_channel();
        let member_cancel = CancellationToken::new();
        let (member, membership, member_topics) = membership::join(name, &source.alias, &target, member_events, member_cancel.clone())?;
        let membership_thread = std::thread::Builder::new()
            .name(format!("member-{name}"))
            .spawn(move || membership.run())
            .map_err(|e| Error::Internal(format!("cannot start the group member thread: {e}")))?;
        // If this task ends any other way than the shutdown below (a panic unwinding it), the
        // threads stop and the member leaves the group, so other processes take its partitions
        // over from the stored positions instead of the group holding them for nobody.
        let _stop_threads = (relay_cancel.clone().drop_guard(), member_cancel.clone().drop_guard());

        let table_for_watch = table.clone();
        let acl_admins = (source_admin.clone(), target_admin.clone());
        let acl_lists = lists_rx.clone();
        let member = Arc::new(member);
        let txn = match &sink {
            Sink::Plain(_) => None,
            Sink::Transactional(gate) => Some(Arc::new(Transactions {
                flow: name.to_string(),
                gate: gate.clone(),
                factory: {
                    let (make, table) = (make_producer.clone(), table.clone());
                    Box::new(move || make(table.clone(), true))
                },
                broken: AtomicBool::new(false),
                member: member.clone(),
                table: table.clone(),
                syncs: syncs.clone(),
                rewind_pending: rewind_pending.clone(),
                runtime: tokio::runtime::Handle::current(),
            })),
        };
        let mut run = Running {
            txn,
            fatal: None,
            committed_once: false,
            member,
            member_topics,
            subscribed: None,
            wanted: HashMap::new(),
            owned: HashSet::new(),
            source_names: HashSet::new(),
            history_tail: None,
            history_current: false,
            mm2: None,
            released: HashMap::new(),
            name: name.to_string(),
            filter: TopicFilter::for_flow(&config),
            source_admin,
            target_admin,
            syncs,
            syncs_admin,
            syncs_topics_ready: false,
            history: None,
            store: Arc::new(PositionStore::connect(&target, &source.alias)?),
            watermarks: Arc::new(watermarks),
            config: config.clone(),
            producer: internal.clone(),
            table,
            relays,
            assigned: HashMap::new(),
            heartbeats_ready: false,
            last_config_sync: None,
            reported: HashSet::new(),
            status,
            last_latency_ms,
            file,
            lists_tx: Some(lists_tx),
            control_thread: None,
            cancel: relay_cancel.clone(),
            metrics_ready: false,
            persisting: None,
            process,
            started_ms,
        };
        tokio::spawn(watch_stalls(name.to_string(), table_for_watch, source.clone(), target.clone(), relay_cancel.clone()));
        if config.sync_topic_acls_enabled {
            let filter = crate::topic_plan::TopicFilter::for_flow(&config);
            let sync = crate::acl_sync::AclSync {
                flow: name.to_string(),
                source_alias: config.source.clone(),
                filter,
                source: acl_admins.0,
                target: acl_admins.1,
                lists: acl_lists,
                interval: config.sync_topic_acls_interval,
            };
            tokio::spawn(crate::acl_sync::run(sync, relay_cancel.clone()));
        }
        gauge!(telemetry::FLOW_UP, "flow" => name.to_string()).set(1.0);
        info!(flow = %name, source = %source.bootstrap_servers, target = %target.bootstrap_servers,
            policy = ?config.policy.kind, tasks = config.tasks_max, "flow starting");

        let mut refresh = tokio::time::interval(config.refresh_topics_interval);
        let mut flush = tokio::time::interval(config.offset_flush_interval);
        let mut heartbeat = tokio::time::interval(config.emit_heartbeats_interval);
        let mut report = tokio::time::interval(METRICS_INTERVAL);
        let mut backoff = Backoff::default();
        let mut next_refresh = Instant::now();
        let mut forced_refresh = false;
        let mut listing: Option<tokio::task::JoinHandle<ferry_kafka::Result<(Vec<TopicMeta>, Vec<TopicMeta>)>>> = None;
        let outcome = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                Ok(()) = lists_rx.changed() => {
                    let lists = lists_rx.borrow_and_update().clone();
                    if let Some(lists) = lists {
                        run.filter.set_lists(&lists);
                        // Applied now, not at the next refresh.
                        forced_refresh = true;
                        refresh.reset_immediately();
                    }
                }
                _ = refresh.tick(), if listing.is_none() => {
                    if Instant::now() < next_refresh || (!config.refresh_topics_enabled && !run.assigned.is_empty() && !forced_refresh) {
                        continue;
                    }
                    forced_refresh = false;
                    // Listing both clusters is what waits on a cluster that does not answer:
                    // it runs beside the control task, so flushes, heartbeats and metrics go on.
                    listing = Some(run.start_listing());
                }
                listed = async { listing.as_mut().expect("guarded by the branch condition").await }, if listing.is_some() => {
                    listing = None;
                    let outcome = match listed.expect("topic listing panicked") {
                        Ok((source_topics, target_topics)) => run.refresh(source_topics, target_topics).await,
                        Err(e) => Err(e.into()),
                    };
                    match outcome {
                        Ok(()) => {
                            if backoff.attempt > 0 {
                                info!(flow = %name, failed_attempts = backoff.attempt, "topic refresh works again: both clusters answer");
                            }
                            backoff.reset();
                            run.set_status(|s| { s.failing = None; });
                        }
                        Err(e) if e.is_retriable() => {
                            let wait = backoff.next();
                            next_refresh = Instant::now() + wait;
                            warn!(flow = %name, error = %e, retry_in = ?wait, "topic refresh failed; retrying");
                            run.set_status(|s| { s.failing = Some(e.to_string()); });
                        }
                        Err(e) => break Err(e),
                    }
                }
                Some(event) = member_rx.recv() => match event {
                    MemberEvent::Assigned(partitions) => {
                        info!(flow = %name, partitions = partitions.len(), "group assigned partitions to this process");
                        run.owned.extend(partitions);
                        if let Err(e) = run.reconcile().await {
                            if !e.is_retriable() {
                                break Err(e);
                            }
                            warn!(flow = %name, error = %e, "cannot start assigned partitions; retrying at the next refresh");
                        }
                    }
                    MemberEvent::Revoked { partitions, lost, reply } => {
                        let positions = run.hand_over(&partitions, lost).await;
                        let _ = reply.send(positions);
                    }
                    MemberEvent::Refused(e) => break Err(e.into()),
                },
                _ = flush.tick() => {
                    run.flush().await;
                    if let Some(reason) = run.fatal.clone() {
                        break Err(Error::Transactions { cluster: target.alias.clone(), address: target.bootstrap_servers.clone(), reason });
                    }
                }
                _ = heartbeat.tick(), if config.emit_heartbeats_enabled => run.heartbeat(),
                _ = report.tick() => run.publish_metrics(),
            }
        };

        // Shutdown: stop relays, drain in-flight records, store final positions. Group events
        // are no longer served: a revoke from now on returns at once instead of waiting for an
        // answer (the final store below covers every partition).
        member_rx.close();
        relay_cancel.cancel();
        for t in threads.into_iter().chain(checkpointer).chain(run.control_thread.take()) {
            let _ = spawn_blocking(move || t.join()).await;
        }
        let p = sink.current();
        let _ = spawn_blocking(move || p.flush(Duration::from_secs(10))).await;
        drop(sink);
        run.finish_persisting().await;
        run.flush().await;
        run.finish_persisting().await;
        if let Err(e) = &outcome {
            run.set_status(|s| { s.failing = Some(format!("stopped: {e}")); });
        }
        run.publish_metrics();
        let p = internal.clone();
        let _ = spawn_blocking(move || p.flush(Duration::from_secs(5))).await;
        // Positions are stored: leave the group, so other processes take over at once.
        drop(run);
        drop(member_rx);
        member_cancel.cancel();
        let _ = spawn_blocking(move || membership_thread.join()).await;
        info!(flow = %name, "flow stopped; positions stored");
        outcome
    }
}

#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let secs = (1u64 << self.attempt.min(6)).min(60);
        self.attempt += 1;
        Duration::from_secs(secs)
    }
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Running {
    fn set_status(&self, f: impl FnOnce(&mut FlowStatus)) {
        f(&mut self.status.lock().unwrap());
    }

    /// Reports a condition once per distinct message (not every refresh).
    fn report_once(&mut self, key: String, f: impl FnOnce()) {
        if self.reported.insert(key) {
            f();
        }
    }

    async fn list(admin: &Arc<Admin>) -> ferry_kafka::Result<Vec<TopicMeta>> {
        let admin = admin.clone();
        spawn_blocking(move || admin.list_topics()).await.expect("metadata task panicked")
    }

    /// Lists the topics of both clusters, concurrently, off the control task.
    fn start_listing(&self) -> tokio::task::JoinHandle<ferry_kafka::Result<(Vec<TopicMeta>, Vec<TopicMeta>)>> {
        let (source, target) = (self.source_admin.clone(), self.target_admin.clone());
        tokio::spawn(async move {
            let (s, t) = tokio::join!(Self::list(&source), Self::list(&target));
            Ok((s?, t?))
        })
    }

    /// One topic refresh from fresh listings of both clusters.
    async fn refresh(&mut self, source_topics: Vec<TopicMeta>, target_topics: Vec<TopicMeta>) -> Result<()> {
        self.prepare(&source_topics, &target_topics).await?;

        let sync_due = self.config.sync_topic_configs_enabled
            && self.last_config_sync.is_none_or(|t| t.elapsed() >= self.config.sync_topic_configs_interval);
        if sync_due {
            self.last_config_sync = Some(Instant::now());
        }
        // Topics to create need their source configs in every round, synced or not.
        let creating: Vec<String> = topic_plan::to_create(&self.filter, &self.config.source, &source_topics, &target_topics).into_iter().map(String::from).collect();
        let (source_cfg, target_cfg) = self.describe_configs(&source_topics, &target_topics, sync_due, &creating).await;
        let configs = Configs { source: &source_cfg, target: target_cfg.as_ref(), exclude: &self.config.config_properties_exclude };
        let plan = topic_plan::plan(&self.filter, &self.config.source, self.config.replication_factor, &source_topics, &target_topics, &configs);
        if !plan.awaiting_configs.is_empty() {
            counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::TOPIC_ADMIN).increment(1);
            let (name, waiting) = (self.name.clone(), plan.awaiting_configs.join(", "));
            self.report_once(format!("awaiting configs {waiting}"), || error!(flow = %name, topics = %waiting,
                "remote topics not created yet: their configs cannot be read on the source, and a topic created without them (a compacted one as delete-policy) would lose records; retrying every refresh"));
        }

        let mut not_created = HashSet::new();
        let creates: Vec<NewTopicSpec> = plan.actions.iter().filter_map(|a| match a {
            TopicAction::Create(spec) => Some(spec.clone()),
            _ => None,
        }).collect();
        // A remote topic this process replicates into that the target no longer lists was
        // deleted under us: the records it held are gone from the target although the stored
        // positions count them. Said loudly; replication goes on into the recreated topic from
        // the stored positions (re-copying would mix old and new target offsets in the runs).
        for spec in &creates {
            let mut replicating: Vec<i32> = self.assigned.values().filter_map(|a| {
                let p = a.progress.lock().unwrap();
                (*p.remote_topic == *spec.name).then_some(p.partition)
            }).collect();
            if replicating.is_empty() {
                // Kafka's coordinator may have taken the partitions away already (their topic
                // vanished from the subscription) before this refresh saw it missing: stored
                // positions say that the topic was replicated into all the same.
                let keys: Vec<(String, i32)> = (0..spec.partitions).map(|p| (spec.name.clone(), p)).collect();
                let store = self.store.clone();
                if let Ok(Ok(stored)) = spawn_blocking(move || store.fetch(&keys)).await {
                    replicating = stored.into_keys().map(|(_, p)| p).collect();
                }
            }
            if !replicating.is_empty() {
                counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::REMOTE_TOPIC_DELETED).increment(1);
                error!(flow = %self.name, cluster = %self.config.target, topic = %spec.name, partitions = replicating.len(),
                    "REMOTE TOPIC DELETED: the target no longer has this topic although it was being replicated; the records it held are gone from the target. It is created again and replication goes on from the stored positions");
            }
        }
        if !creates.is_empty() {
            match self.target_admin.create_topics(&creates).await {
                Ok(()) => {
                    for spec in &creates {
                        info!(flow = %self.name, topic = %spec.name, partitions = spec.partitions, configs = spec.configs.len(), "created remote topic");
                    }
                }
                Err(e) => {
                    counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::TOPIC_ADMIN).increment(1);
                    error!(flow = %self.name, error = %e, "cannot create remote topics; retrying next refresh");
                    not_created.extend(creates.iter().map(|s| s.name.clone()));
                    if !e.is_retriable() {
                        return Err(e.into());
                    }
                }
            }
        }
        for action in &plan.actions {
            let (what, result) = match action {
                TopicAction::Create(_) => continue,
                TopicAction::AddPartitions { topic, count } => (
                    format!("add partitions to {topic} (to {count})"),
                    self.target_admin.create_partitions(topic, *count).await,
                ),
                TopicAction::AlterConfigs { topic, configs } => (
                    format!("sync configs of {topic}"),
                    self.target_admin.alter_topic_configs(topic, configs).await,
                ),
            };
            match result {
                Ok(()) => info!(flow = %self.name, action = %what, "remote topic updated"),
                Err(e) => {
                    counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::TOPIC_ADMIN).increment(1);
                    let name = self.name.clone();
                    self.report_once(format!("{what}: {e}"), || error!(flow = %name, action = %what, error = %e, "cannot update remote topic (the target may not support this API)"));
                }
            }
        }
        for (topic, have, want) in &plan.missing_partitions {
            counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::MISSING_PARTITIONS).increment(1);
            let name = self.name.clone();
            self.report_once(format!("missing {topic} {have} {want}"), || error!(flow = %name, %topic, replicated = have, source_partitions = want,
                "NOT REPLICATED: the remote topic has fewer partitions than the source; the extra source partitions wait until partitions can be added"));
        }

        // Partitions to replicate, shared with other processes through the group.
        let mut wanted: HashMap<(String, i32), String> = HashMap::new();
        for route in plan.routes.iter().filter(|r| !not_created.contains(&r.remote_topic)) {
            for p in 0..route.partitions {
                wanted.insert((route.source_topic.clone(), p), route.remote_topic.clone());
            }
        }
        let mut remotes: Vec<String> = wanted.values().cloned().collect::<HashSet<_>>().into_iter().collect();
        remotes.sort();
        if self.subscribed.as_ref() != Some(&remotes) {
            let _ = self.member_topics.send(remotes.clone());
            self.subscribed = Some(remotes);
        }
        self.wanted = wanted;
        self.source_names = source_topics.iter().map(|t| t.name.clone()).collect();
        self.reconcile().await
    }

    /// Starts the partitions that are wanted and owned, stops those that are no longer wanted.
    async fn reconcile(&mut self) -> Result<()> {
        let (new, gone) = membership::plan_assignment(&self.wanted, &self.owned, self.assigned.keys());
        if !gone.is_empty() {
            self.unassign(&gone).await;
        }
        if !new.is_empty() {
            self.assign(new).await?;
        }
        self.publish_assignment();
        Ok(())
    }

    fn publish_assignment(&self) {
        let topics: HashSet<&str> = self.assigned.keys().map(|(t, _)| t.as_str()).collect();
        gauge!(telemetry::TOPICS, "flow" => self.name.clone()).set(topics.len() as f64);
        gauge!(telemetry::PARTITIONS, "flow" => self.name.clone()).set(self.assigned.len() as f64);
        let mut topics: Vec<String> = topics.into_iter().map(String::from).collect();
        topics.sort();
        self.set_status(|s| { s.topics = topics; });
    }

    /// Gives partitions to another process: stops them at the relays, waits for their records in
    /// flight, stores their offset runs and returns their positions for the member to commit
    /// (under its generation, before the group moves them). Lost partitions are stopped only.
    async fn hand_over(&mut self, partitions: &[RemotePartition], lost: bool) -> Vec<(String, i32, i64)> {
        for p in partitions {
            self.owned.remove(p);
        }
        let moving: HashSet<&RemotePartition> = partitions.iter().collect();
        let keys: Vec<(String, i32)> = self
            .assigned
            .iter()
            .filter(|(_, a)| {
                let p = a.progress.lock().unwrap();
                moving.contains(&(p.remote_topic.to_string(), p.partition))
            })
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        // 1. The relays stop sending them, and confirm.
        let mut per_relay: Vec<Vec<SharedProgress>> = vec![Vec::new(); self.relays.len()];
        let mut released = Vec::new();
        for key in &keys {
            if let Some(a) = self.assigned.remove(key) {
                // Its lag is the new owner's to report: a value left here would count twice in sums.
                a.lag.set(0.0);
                per_relay[a.relay].push(a.progress.clone());
                released.push(a.progress);
            }
        }
        self.release(per_relay).await;
        if self.txn.is_some() {
            // Exactly-once: their positions are committed with their records, in the open
            // transaction, while this process still holds them; the member commits nothing.
            // Lost partitions are no longer this process's: their records must never become
            // visible, so the whole transaction aborts.
            let committed = self.commit_transaction(lost.then(|| "partitions lost: the group session expired".to_string())).await;
            match (lost, committed) {
                (true, _) => {}
                (false, true) => info!(flow = %self.name, partitions = released.len(), "handover: their last records and positions are committed in this process's transaction"),
                (false, false) => warn!(flow = %self.name, partitions = released.len(), "handover: their last transaction did not commit; the next owner resumes from the last committed positions"),
            }
            for progress in &released {
                self.forget(progress);
            }
            self.publish_assignment();
            return Vec::new();
        }
        // 2. Their records in flight are acknowledged (or failed: the position stays before them).
        let drained = wait_drained(&released, if lost { Duration::ZERO } else { Duration::from_secs(10) }).await;
        if !drained && !lost {
            warn!(flow = %self.name, partitions = released.len(), "records still in flight at handover: the next owner re-sends them (duplicates, no loss)");
        }
        for progress in &released {
            self.forget(progress);
        }
        self.publish_assignment();
        if lost {
            return Vec::new();
        }
        // 3. Their offset runs, then their positions (the runs cover the positions).
        self.finish_persisting().await;
        let mut history = Vec::new();
        let mut positions = Vec::new();
        for progress in &released {
            let mut p = progress.lock().unwrap();
            if let Some(unsaved) = p.offset_map.unsaved() {
                history.push((p.source_topic.to_string(), p.partition, unsaved));
            }
            positions.push((p.remote_topic.to_string(), p.partition, p.safe_position()));
        }
        if !history.is_empty() {
            if let Err(e) = self.syncs.write(&history).await {
                counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::OFFSET_SYNC).increment(1);
                warn!(flow = %self.name, error = %e, "cannot store offset runs at handover: positions are not handed over (the next owner re-sends)");
                return Vec::new();
            }
        }
        debug!(flow = %self.name, partitions = positions.len(), took = ?started.elapsed(), "partitions stopped for handover");
        positions
    }

    /// Reads the flow's lists from the control topic (created if missing), applies them and
    /// starts following the topic.
    /// First refreshes: creates the internal topics the flow writes, reads its lists and its
    /// offset history. Independent steps run concurrently (they are start-up latency).
    async fn prepare(&mut self, source_topics: &[TopicMeta], target_topics: &[TopicMeta]) -> Result<()> {
        let heartbeats_exist = target_topics.iter().any(|t| t.name == HEARTBEATS_TOPIC);
        if self.config.emit_heartbeats_enabled && heartbeats_exist {
            self.heartbeats_ready = true;
        }
        let want_heartbeats = self.config.emit_heartbeats_enabled && !self.heartbeats_ready;
        let heartbeats = NewTopicSpec { name: HEARTBEATS_TOPIC.into(), partitions: 1, replication_factor: self.config.heartbeats_replication_factor, configs: BTreeMap::new() };
        let metrics = NewTopicSpec {
            name: METRICS_TOPIC.into(),
            partitions: 1,
            replication_factor: self.config.checkpoints_replication_factor,
            configs: BTreeMap::from([("cleanup.policy".to_string(), "delete".to_string()), ("retention.ms".to_string(), METRICS_RETENTION_MS.to_string())]),
        };
        let mut syncs = vec![compacted_topic(self.config.policy.offset_runs_topic(&self.config.target), self.config.offset_syncs_replication_factor)];
        if self.config.emit_offset_syncs_enabled {
            syncs.push(compacted_topic(self.config.policy.offset_syncs_topic(&self.config.target), self.config.offset_syncs_replication_factor));
        }
        let control = compacted_topic(CONTROL_TOPIC.to_string(), self.config.checkpoints_replication_factor);
        // Topics that exist are not created again: no CreateTopics request (and no CREATE
        // permission) is needed when an operator created them beforehand.
        let syncs_listing = self.config.offset_syncs_location.pick(&source_topics, &target_topics);
        let missing = |listing: &[TopicMeta], specs: Vec<NewTopicSpec>| -> Vec<NewTopicSpec> {
            specs.into_iter().filter(|s| !listing.iter().any(|t| t.name == s.name)).collect()
        };
        let syncs = missing(syncs_listing, syncs);
        let metrics_ready = self.metrics_ready || target_topics.iter().any(|t| t.name == METRICS_TOPIC);
        let control_missing = !target_topics.iter().any(|t| t.name == CONTROL_TOPIC);
        let create = |admin: Arc<Admin>, wanted: bool, specs: Vec<NewTopicSpec>| async move {
            if !wanted {
                Ok(false)
            } else if specs.is_empty() {
                Ok(true) // all exist
            } else {
                admin.create_topics(&specs).await.map(|()| true)
            }
        };
        let (hb, me, sy, co) = tokio::join!(
            create(self.target_admin.clone(), want_heartbeats, vec![heartbeats]),
            create(self.target_admin.clone(), !metrics_ready, vec![metrics]),
            create(self.syncs_admin.clone(), !self.syncs_topics_ready, syncs),
            create(self.target_admin.clone(), self.lists_tx.is_some() && control_missing, vec![control]),
        );
        match hb {
            Ok(created) => self.heartbeats_ready |= created,
            Err(e) => warn!(flow = %self.name, error = %e, "cannot create the heartbeats topic"),
        }
        match me {
            Ok(created) => self.metrics_ready |= created || metrics_ready,
            Err(e) => warn!(flow = %self.name, error = %e, "cannot create the metrics topic; retrying"),
        }
        self.syncs_topics_ready |= sy?;
        co?;

        // The lists and the offset history, read concurrently.
        let control_read = self.lists_tx.is_some().then(|| {
            let target = self.target_admin.cluster().clone();
            spawn_blocking(move || -> ferry_kafka::Result<(TopicTail, ControlLog)> {
                let mut tail = TopicTail::open(&target, CONTROL_TOPIC)?;
                let log = control::read_log(&mut tail)?;
                Ok((tail, log))
            })
        });
        let history_read = self.history.is_none().then(|| {
            let cluster = self.syncs.cluster().clone();
            let topic = self.config.policy.offset_runs_topic(&self.config.target);
            spawn_blocking(move || -> ferry_kafka::Result<(TopicTail, RunLog)> {
                let mut log = RunLog::default();
                let mut tail = TopicTail::open(&cluster, &topic)?;
                tail.catch_up(Duration::from_secs(60), |k, v, _| log.apply(k, v))?;
                Ok((tail, log))
            })
        });
        let (control_read, history_read) = tokio::join!(
            async { match control_read { Some(h) => Some(h.await.expect("control topic read panicked")), None => None } },
            async { match history_read { Some(h) => Some(h.await.expect("history load panicked")), None => None } },
        );
        if let Some(read) = control_read {
            let (tail, log) = read?;
            self.start_lists(tail, log)?;
        }
        if let Some(read) = history_read {
            let (tail, log) = read?;
            self.history_tail = Some(tail);
            self.history_current = true;
            if log.malformed > 0 {
                warn!(flow = %self.name, malformed = log.malformed, "undecodable offset-run records ignored");
            }
            info!(flow = %self.name, partitions = log.partitions().count(), runs = log.run_count(), "offset history loaded");
            self.history = Some(log);
        }
        Ok(())
    }

    /// Applies the lists read from the control topic and starts following it.
    fn start_lists(&mut self, tail: TopicTail, log: ControlLog) -> Result<()> {
        let lists = Arc::new(FlowLists::effective(&self.config, &self.file, &log));
        let file_only = FlowLists::effective(&self.config, &self.file, &ControlLog::default());
        let changes = control::describe_change(&file_only, &lists);
        if !changes.is_empty() {
            info!(flow = %self.name, changes = %changes, "replication lists include ferry ctl changes");
        }
        self.filter.set_lists(&lists);
        let tx = self.lists_tx.take().expect("lists are loaded once");
        tx.send_replace(Some(lists));
        let watch = ControlWatch { flow: self.config.clone(), file: self.file.clone(), tail, log, lists: tx, cancel: self.cancel.clone() };
        let thread = std::thread::Builder::new()
            .name(format!("control-{}", self.name))
            .spawn(move || watch.run())
            .map_err(|e| Error::Internal(format!("cannot start the control thread: {e}")))?;
        self.control_thread = Some(thread);
        Ok(())
    }

    /// Source configs of the topics to create, and when `sync_due` of every replicated topic
    /// with the remote topics' configs. A failed read leaves the source map empty (nothing is
    /// created without configs) and the target `None` (nothing is synced this round).
    async fn describe_configs(
        &mut self,
        source_topics: &[TopicMeta],
        target_topics: &[TopicMeta],
        sync_due: bool,
        creating: &[String],
    ) -> (HashMap<String, BTreeMap<String, String>>, Option<HashMap<String, BTreeMap<String, String>>>) {
        let replicated: Vec<String> = if sync_due {
            source_topics.iter().filter(|t| self.filter.should_replicate(&t.name)).map(|t| t.name.clone()).collect()
        } else {
            creating.to_vec()
        };
        let source = if replicated.is_empty() { Ok(HashMap::new()) } else { self.source_admin.describe_topic_configs(&replicated).await };
        let source = match source {
            Ok(s) => s,
            Err(e) => {
                let name = self.name.clone();
                self.report_once(format!("describe source {e}"), || warn!(flow = %name, error = %e, "cannot read topic configs on the source; retrying"));
                return (HashMap::new(), None);
            }
        };
        if !sync_due {
            return (source, None);
        }
        let target_names: HashSet<&str> = target_topics.iter().map(|t| t.name.as_str()).collect();
        let remotes: Vec<String> = replicated
            .iter()
            .map(|t| self.filter.policy.remote_topic(&self.config.source, t))
            .filter(|r| target_names.contains(r.as_str()))
            .collect();
        match self.target_admin.describe_topic_configs(&remotes).await {
            Ok(t) => (source, Some(t)),
            Err(e) => {
                let name = self.name.clone();
                self.report_once(format!("describe target {e}"), || warn!(flow = %name, error = %e, "cannot read remote topic configs; configs are synced once they can be read"));
                (source, None)
            }
        }
    }

    /// MM2's Connect offsets for this flow's source on the target; `None` when there are none
    /// (or they cannot be read: said, and partitions start as new ones would).
    async fn read_mm2_offsets(&mut self) -> Option<crate::mm2_offsets::Mm2Offsets> {
        let (admin, target, source) = (self.target_admin.clone(), self.target_admin.cluster().clone(), self.config.source.clone());
        let read = spawn_blocking(move || {
            let topics: Vec<String> = admin.list_topics()?.into_iter().map(|t| t.name).collect();
            crate::mm2_offsets::read(&target, &source, &topics)
        });
        match read.await {
            Ok(Ok(Some(offsets))) => {
                info!(flow = %self.name, topic = %crate::mm2_offsets::offsets_topic(&self.config.source), partitions = offsets.len(),
                    "found MirrorMaker 2's progress on the target: partitions it replicated resume where it stopped");
                Some(offsets)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                warn!(flow = %self.name, error = %e, "cannot read MirrorMaker 2's offsets on the target; partitions without a stored position start at the source log start");
                None
            }
            Err(_) => None,
        }
    }

    /// Where partitions MM2 replicated resume: after the last record MM2 copied, checked
    /// against the remote topic's last record (16 partitions at a time).
    async fn take_over_from_mm2(&self, partitions: Vec<(String, i32, String, i64)>) -> HashMap<(String, i32), i64> {
        use crate::mm2_offsets::{Takeover, TakeoverCheck};
        let mut out = HashMap::new();
        for chunk in partitions.chunks(16) {
            let mut tasks = tokio::task::JoinSet::new();
            for (topic, partition, remote, next) in chunk.iter().cloned() {
                // MM2's committed point stands if the check itself fails.
                out.insert((topic.clone(), partition), next);
                let (source, target) = (self.source_admin.cluster().clone(), self.target_admin.cluster().clone());
                tasks.spawn_blocking(move || {
                    let takeover = crate::mm2_offsets::takeover(&source, &target, &topic, partition, &remote, next);
                    (topic, partition, takeover)
                });
            }
            while let Some(done) = tasks.join_next().await {
                let Ok((topic, partition, Takeover { position, how })) = done else { continue };
                match how {
                    TakeoverCheck::Verified => info!(flow = %self.name, %topic, partition, position,
                        "taking over from MirrorMaker 2: resuming after the last record it copied (checked on the target)"),
                    TakeoverCheck::PastCommit { skipped } => info!(flow = %self.name, %topic, partition, position, skipped,
                        "taking over from MirrorMaker 2: it had copied records past its last offset commit; resuming after the last one on the target"),
                    TakeoverCheck::Unverified => warn!(flow = %self.name, %topic, partition, position,
                        "taking over from MirrorMaker 2 at its committed offset; the target's last record could not be matched, so records MirrorMaker 2 copied after its last commit may be copied again"),
                }
                out.insert((topic, partition), position);
            }
        }
        out
    }

    /// Partitions starting from a stored position whose source log is no longer the one
    /// replicated (the topic was deleted and created again, with at least as many records):
    /// the record before the position differs from its copy on the target. Such a partition
    /// restarts at its log start (returned), reported; without this check the new topic's first
    /// records were skipped without a word. Compared for every partition at once, one reader
    /// per cluster; a record that cannot be read (deleted, compacted) or that has no known copy
    /// is no evidence either way.
    async fn replaced_sources(&self, new: &[((String, i32), String)], stored: &HashMap<(String, i32), i64>) -> HashMap<(String, i32), i64> {
        let mut source_at = Vec::new();
        let mut target_at = Vec::new();
        for ((topic, partition), remote) in new {
            let Some(&position) = stored.get(&(remote.clone(), *partition)) else { continue };
            let Some(map) = self.history.as_ref().and_then(|h| h.map(topic, *partition)) else { continue };
            let before = position - 1;
            let Some(copy) = map.copy_of(before) else { continue };
            source_at.push((topic.clone(), *partition, before));
            target_at.push((remote.clone(), *partition, copy));
        }
        if source_at.is_empty() {
            return HashMap::new();
        }
        let (source, target, wm) = (self.source_admin.cluster().clone(), self.target_admin.cluster().clone(), self.watermarks.clone());
        let (name, flow_source) = (self.name.clone(), self.config.source.clone());
        let within = Duration::from_secs(5);
        let compared = spawn_blocking(move || {
            let originals = ferry_kafka::read_records_at(&source, &source_at, within).unwrap_or_default();
            let copies = ferry_kafka::read_records_at(&target, &target_at, within).unwrap_or_default();
            let mut restart = HashMap::new();
            for ((topic, partition, before), (remote, _, copy_at)) in source_at.iter().zip(&target_at) {
                let (Some(original), Some(copy)) = (originals.get(&(topic.clone(), *partition)), copies.get(&(remote.clone(), *partition))) else { continue };
                if ferry_kafka::same_record(original, copy) {
                    continue;
                }
                let Ok((low, high)) = ferry_kafka::watermarks(&wm, topic, *partition, within) else { continue };
                counter!(telemetry::ERRORS, "flow" => name.clone(), "kind" => kind::SOURCE_TRUNCATED).increment(1);
                error!(flow = %name, cluster = %flow_source, %topic, partition, position = before + 1, high_watermark = high, copy_offset = copy_at,
                    "SOURCE REPLACED: the source record before the stored position is not the one replicated from it (topic recreated); replicating the new log from its start");
                restart.insert((topic.clone(), *partition), low);
            }
            restart
        });
        compared.await.unwrap_or_default()
    }

    async fn assign(&mut self, new: Vec<((String, i32), String)>) -> Result<()> {
        if !std::mem::replace(&mut self.history_current, false) {
            // Partitions taken over from another process: read the runs it stored up to its
            // handover (it stores them before it commits the positions).
            if let (Some(mut tail), Some(mut log)) = (self.history_tail.take(), self.history.take()) {
                let (tail, log, read) = spawn_blocking(move || {
                    let read = tail.catch_up(Duration::from_secs(30), |k, v, _| log.apply(k, v));
                    (tail, log, read)
                })
                .await
                .expect("history read panicked");
                self.history_tail = Some(tail);
                self.history = Some(log);
                read?;
            }
        }
        let keys: Vec<(String, i32)> = new.iter().map(|((_, p), remote)| (remote.clone(), *p)).collect();
        let store = self.store.clone();
        let stored = spawn_blocking(move || store.fetch(&keys)).await.expect("position fetch panicked")?;
        if self.mm2.is_none() && new.iter().any(|((_, p), remote)| !stored.contains_key(&(remote.clone(), *p))) {
            self.mm2 = Some(self.read_mm2_offsets().await);
        }
        // Partitions MM2 replicated and Ferry never did: checked against the target together.
        let from_mm2: Vec<(String, i32, String, i64)> = new
            .iter()
            .filter(|((_, p), remote)| !stored.contains_key(&(remote.clone(), *p)))
            .filter_map(|((t, p), remote)| {
                let next = self.mm2.as_ref()?.as_ref()?.next(t, *p)?;
                Some((t.clone(), *p, remote.clone(), next))
            })
            .collect();
        let mut taken_over = self.take_over_from_mm2(from_mm2).await;
        let replaced = self.replaced_sources(&new, &stored).await;
        let mut per_relay: Vec<Vec<SharedProgress>> = vec![Vec::new(); self.relays.len()];
        for ((source_topic, partition), remote) in new {
            let start = match (stored.get(&(remote.clone(), partition)), taken_over.remove(&(source_topic.clone(), partition))) {
                (Some(_), _) if replaced.contains_key(&(source_topic.clone(), partition)) => replaced[&(source_topic.clone(), partition)],
                (Some(&position), _) => position,
                (None, Some(position)) => position,
                (None, None) => {
                    // New topic: replicate from the earliest offset still in the source log.
                    let wm = self.watermarks.clone();
                    let (t, p) = (source_topic.clone(), partition);
                    // A partition added since this client loaded the topic: it is loaded and
                    // asked again (found on Kafka: a grown topic's new partitions were refused
                    // for good before).
                    let read = move || ferry_kafka::watermarks(&wm, &t, p, Duration::from_secs(10));
                    match spawn_blocking(read).await.expect("watermark task panicked") {
                        Ok((low, _)) => low,
                        Err(e) => {
                            warn!(flow = %self.name, topic = %source_topic, partition, error = %e, "cannot read the source log start; retrying next refresh");
                            continue;
                        }
                    }
                }
            };
            debug!(flow = %self.name, topic = %source_topic, partition, start, from_store = stored.contains_key(&(remote.clone(), partition)), "assigning partition");
            let mut progress = PartitionProgress::new(source_topic.clone().into(), remote.clone().into(), partition, start);
            let stored_history = self.history.as_ref().and_then(|h| h.map(&source_topic, partition));
            match stored_history {
                Some(map) => progress.offset_map = map,
                None if !stored.contains_key(&(remote.clone(), partition)) => progress.offset_map.set_start(start),
                None => warn!(flow = %self.name, topic = %source_topic, partition, position = start,
                    "no offset history before the stored position: groups behind it get checkpoints only once they pass it"),
            }
            progress.transactional = self.config.exactly_once;
            if self.config.exactly_once {
                // Every copy of an offset from the committed position on belongs to a
                // transaction that never committed (a process that died or was fenced stored
                // its runs before its commit): no read_committed reader sees them.
                let dropped = progress.offset_map.discard_from(start);
                // Only committed runs coalesce: an abort must be able to cut what follows.
                progress.offset_map.settle(start);
                if dropped > 0 {
                    info!(flow = %self.name, topic = %source_topic, partition, position = start, dropped,
                        "offset history of records never committed dropped (an earlier owner's aborted transaction)");
                }
            }
            if let Some((records, bytes)) = self.released.remove(&(source_topic.clone(), partition)) {
                // Back in this run: its counters go on from where they stopped.
                progress.records = records;
                progress.bytes = bytes;
            }
            let labels = [("flow", self.name.clone()), ("topic", source_topic.clone()), ("partition", partition.to_string())];
            progress.counters = Some((counter!(telemetry::RECORDS, &labels), counter!(telemetry::BYTES, &labels)));
            let progress = Arc::new(Mutex::new(progress));
            self.table.insert(progress.clone());
            let relay = relay_for(&source_topic, partition, self.relays.len());
            per_relay[relay].push(progress.clone());
            self.assigned.insert((source_topic, partition), Assigned {
                progress,
                relay,
                lag: gauge!(telemetry::LAG, &labels),
            });
        }
        let mut count = 0;
        for (relay, parts) in per_relay.into_iter().enumerate() {
            count += parts.len();
            if !parts.is_empty() {
                let _ = self.relays[relay].send(RelayCommand::Assign(parts));
            }
        }
        info!(flow = %self.name, partitions = count, "replicating new partitions");
        Ok(())
    }

    async fn unassign(&mut self, gone: &[(String, i32)]) {
        let mut per_relay: Vec<Vec<SharedProgress>> = vec![Vec::new(); self.relays.len()];
        let mut leaving = Vec::new();
        for key in gone {
            if let Some(a) = self.assigned.remove(key) {
                a.lag.set(0.0);
                per_relay[a.relay].push(a.progress.clone());
                leaving.push(a.progress);
                let deleted = !self.source_names.contains(&key.0);
                if self.wanted.contains_key(key) {
                    info!(flow = %self.name, topic = %key.0, partition = key.1, "partition no longer assigned to this process: replication stopped here");
                } else if deleted {
                    warn!(flow = %self.name, topic = %key.0, partition = key.1, "source topic deleted: replication of it stopped (remote topic kept)");
                } else {
                    info!(flow = %self.name, topic = %key.0, partition = key.1, "partition no longer selected: replication stopped (remote topic kept)");
                }
            }
        }
        if self.txn.is_some() {
            // Exactly-once: their last records and positions are committed together before
            // they leave the table, so adding them back later resumes exactly.
            self.release(per_relay).await;
            self.commit_transaction(None).await;
        } else {
            for (relay, parts) in per_relay.into_iter().enumerate() {
                if !parts.is_empty() {
                    let _ = self.relays[relay].send(RelayCommand::Unassign(parts));
                }
            }
        }
        for progress in &leaving {
            self.forget(progress);
        }
    }

    /// Asks each relay to stop sending these partitions and waits for the confirmations.
    async fn release(&self, per_relay: Vec<Vec<SharedProgress>>) {
        let mut confirmations = Vec::new();
        for (relay, parts) in per_relay.into_iter().enumerate() {
            if !parts.is_empty() {
                let (done, confirmed) = channel();
                if self.relays[relay].send(RelayCommand::Release(parts, done)).is_ok() {
                    confirmations.push(confirmed);
                }
            }
        }
        let _ = spawn_blocking(move || {
            for c in confirmations {
                let _ = c.recv_timeout(Duration::from_secs(5));
            }
        })
        .await;
    }

    /// A partition leaves this process: out of the table (its late acknowledgements change
    /// nothing), its counters kept for the run's reports.
    fn forget(&mut self, progress: &SharedProgress) {
        self.table.remove(progress);
        let p = progress.lock().unwrap();
        self.released.insert((p.source_topic.to_string(), p.partition), (p.records, p.bytes));
    }

    /// Stores safe positions and publishes per-partition metrics.
    async fn flush(&mut self) {
        if self.txn.is_some() {
            // Exactly-once: records, runs and positions are committed together.
            self.commit_transaction(None).await;
        }
        // Storing runs and positions takes broker round trips; it runs beside the control task
        // so metrics, heartbeats and refreshes keep their cadence. One store at a time.
        let persist = match &self.persisting {
            _ if self.txn.is_some() => false,
            Some(h) if !h.is_finished() => false,
            _ => {
                self.finish_persisting().await;
                true
            }
        };
        let mut to_store = Vec::new();
        let mut history = Vec::new();
        let (mut records, mut lag) = (0u64, 0i64);

        for a in self.assigned.values_mut() {
            let mut p = a.progress.lock().unwrap();
            if persist {
                let (runs, position) = p.pending_store();
                history.extend(runs);
                to_store.extend(position);
            }
            a.lag.set(p.lag() as f64);
            records += p.records;
            lag += p.lag();
        }
        let latency = self.last_latency_ms.load(Ordering::Relaxed);
        self.set_status(|s| {
            s.records = records;
            s.lag = lag;
            s.last_latency_ms = (latency >= 0).then_some(latency);
        });
        if history.is_empty() && to_store.is_empty() {
            return;
        }
        let (name, syncs, member, table) = (self.name.clone(), self.syncs.clone(), self.member.clone(), self.table.clone());
        self.persisting = Some(tokio::spawn(persist_progress(name, syncs, member, table, history, to_store)));
    }

    /// Exactly-once mode: commits the open transaction, or aborts it (`abort`: why) and rolls
    /// every partition back to its committed position. Nothing more once the producer failed.
    /// Returns whether everything sent is committed.
    async fn commit_transaction(&mut self, abort: Option<String>) -> bool {
        let Some(txn) = self.txn.clone() else { return false };
        if self.fatal.is_some() {
            return false;
        }
        let started = Instant::now();
        let outcome = spawn_blocking(move || txn.commit(abort.as_deref())).await.expect("transaction commit panicked");
        match outcome {
            txn::Outcome::Idle => true,
            txn::Outcome::Committed { partitions } => {
                counter!(telemetry::TRANSACTIONS, "flow" => self.name.clone(), "outcome" => "committed").increment(1);
                if self.reported.remove(COMMIT_POSTPONED) {
                    info!(flow = %self.name, took = ?started.elapsed(), "transactions commit again");
                }
                if !std::mem::replace(&mut self.committed_once, true) {
                    info!(flow = %self.name, partitions, took = ?started.elapsed(), "first transaction committed: records and positions");
                }
                debug!(flow = %self.name, partitions, took = ?started.elapsed(), "transaction committed");
                true
            }
            txn::Outcome::Aborted { reason, discarded } => {
                counter!(telemetry::TRANSACTIONS, "flow" => self.name.clone(), "outcome" => "aborted").increment(1);
                warn!(flow = %self.name, %reason, discarded, took = ?started.elapsed(),
                    "TRANSACTION ABORTED: its records are discarded (read_committed consumers never see them) and re-sent from the last committed positions");
                false
            }
            txn::Outcome::Fatal { reason } => {
                error!(flow = %self.name, %reason, "the transactional producer cannot go on; the flow stops");
                self.fatal = Some(reason);
                false
            }
            txn::Outcome::Postponed { reason } => {
                let name = self.name.clone();
                self.report_once(COMMIT_POSTPONED.to_string(), || warn!(flow = %name, %reason, "transaction commit postponed; records stay uncommitted until the target accepts them"));
                false
            }
        }
    }

    /// Waits for the store in flight, if any.
    async fn finish_persisting(&mut self) {
        if let Some(h) = self.persisting.take() {
            let _ = h.await;
        }
    }

    /// Publishes this process's metrics of the flow for `ferry serve`.
    fn publish_metrics(&mut self) {
        if !self.metrics_ready {
            return;
        }
        let mut all_samples = Vec::new();
        let mut partitions: Vec<PartitionMetrics> = self
            .assigned
            .values()
            .map(|a| {
                let mut p = a.progress.lock().unwrap();
                let samples = p.latency_samples.take();
                all_samples.extend_from_slice(&samples);
                PartitionMetrics {
                    latency: LatencySummary::of(samples),
                    topic: p.source_topic.to_string(),
                    remote_topic: p.remote_topic.to_string(),
                    partition: p.partition,
                    records: p.records,
                    bytes: p.bytes,
                    position: p.safe_position(),
                    lag: p.lag(),
                    last_timestamp_ms: p.last_timestamp_ms,
                }
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
            released: {
                let mut released: Vec<ReleasedCounts> = self
                    .released
                    .iter()
                    .map(|((topic, partition), &(records, bytes))| ReleasedCounts { topic: topic.clone(), partition: *partition, records, bytes })
                    .collect();
                released.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                released
            },
            ..MetricsReport::new(&self.config.source, &self.config.target, &self.process, self.started_ms, now_ms())
        };
        let (key, value) = (report.key(), report.encode());
        let record = BaseRecord::with_opaque_to(METRICS_TOPIC, 0usize).key(&key).payload(&value).timestamp(report.at_ms);
        if let Err((e, _)) = self.producer.send(record) {
            debug!(flow = %self.name, error = %e, "metrics report not enqueued");
        }
    }

    fn heartbeat(&mut self) {
        if !self.heartbeats_ready {
            return;
        }
        let hb = Heartbeat { source_cluster: self.config.source.clone(), target_cluster: self.config.target.clone(), timestamp_ms: now_ms() };
        // Aliases are validated by the config (they are part of topic names): this encodes.
        let (Ok(key), Ok(value)) = (hb.encode_key(), hb.encode_value()) else { return };
        let record = BaseRecord::with_opaque_to(HEARTBEATS_TOPIC, 0usize).key(&key).payload(&value).timestamp(hb.timestamp_ms);
        match self.producer.send(record) {
            Ok(()) => counter!(telemetry::HEARTBEATS, "flow" => self.name.clone()).increment(1),
            Err((e, _)) => debug!(flow = %self.name, error = %e, "heartbeat not enqueued"),
        }
        self.set_status(|s| { s.last_heartbeat_ms = Some(hb.timestamp_ms); });
    }
}

/// Waits until none of these partitions has records in flight, up to `limit`.
async fn wait_drained(parts: &[SharedProgress], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if parts.iter().all(|p| p.lock().unwrap().inflight == 0) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Which relay (task) replicates a partition: stable across refreshes.
pub(crate) fn relay_for(topic: &str, partition: i32, relays: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in topic.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    ((h.wrapping_add(partition as u64)) % relays as u64) as usize
}


/// Stores offset runs, then the positions they cover (never the other way round: after any
/// crash the stored history covers the stored position).
async fn persist_progress(
    name: String,
    syncs: Arc<OffsetSyncWriter>,
    member: Arc<Member>,
    table: Arc<ProgressTable>,
    history: Vec<UnsavedRuns>,
    to_store: Vec<Position>,
) {
    if !history.is_empty() {
        if let Err(e) = syncs.write(&history).await {
            counter!(telemetry::ERRORS, "flow" => name.clone(), "kind" => kind::OFFSET_SYNC).increment(1);
            warn!(flow = %name, error = %e, "cannot store offset runs; positions are held back until they are stored");
            return;
        }
        table.runs_saved(history);
    }
    if to_store.is_empty() {
        return;
    }
    let batch = to_store.clone();
    match spawn_blocking(move || member.commit(&batch)).await.expect("position store panicked") {
        Ok(()) => {
            for (topic, partition, position) in to_store {
                if let Some(progress) = table.get(&topic, partition) {
                    progress.lock().unwrap().stored = position;
                }
            }
        }
        Err(e) => {
            counter!(telemetry::ERRORS, "flow" => name.clone(), "kind" => kind::POSITION_STORE).increment(1);
            use rdkafka::types::RDKafkaErrorCode::*;
            if matches!(e.source.rdkafka_error_code(), Some(RebalanceInProgress | IllegalGeneration | UnknownMemberId)) {
                // Expected while the group rebalances (the generation moves on under a commit).
                info!(flow = %name, error = %e, "positions not stored during a group rebalance; retrying at the next flush");
            } else {
                warn!(flow = %name, error = %e, "cannot store positions; retrying at the next flush");
            }
        }
    }
}

/// Says, once per stall, which cluster stopped moving and what waits: records in flight that
/// the target does not acknowledge, or source records that are not fetched; and when it moves
/// again. Its own task, so a control task blocked on a stalled cluster cannot hide the stall.
/// librdkafka keeps retrying either way: this is for the operator.
async fn watch_stalls(flow: String, table: Arc<ProgressTable>, source: ClusterClient, target: ClusterClient, cancel: CancellationToken) {
    let (mut target_watch, mut source_watch) = (Watchdog::default(), Watchdog::default());
    let mut partitions: HashMap<(Arc<str>, i32), Watchdog> = HashMap::new();
    // Before the group session (10 s) expires over a stalled target, so the cause is named
    // before the partitions are lost.
    let after = Duration::from_secs(5);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !cancel.is_cancelled() {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (mut inflight, mut lag) = (0u64, 0i64);
        for p in table.all() {
            let p = p.lock().unwrap();
            inflight += p.inflight;
            // A partition stopped by a refused record waits on no cluster (named below).
            if p.failed.is_none() {
                lag += p.lag();
            }
        }
        let (acknowledged, consumed) = (table.acknowledged.load(Ordering::Relaxed), table.consumed.load(Ordering::Relaxed));
        let now = Instant::now();
        match target_watch.observe(acknowledged, inflight > 0, now, after) {
            Some(Stall::Started(d)) => warn!(%flow, cluster = %target.alias, address = %target.bootstrap_servers, inflight, stalled = ?d,
                "target cluster acknowledges nothing: records in flight wait (librdkafka retries; nothing is lost)"),
            Some(Stall::Ended(d)) => info!(%flow, cluster = %target.alias, stalled = ?d, "target cluster acknowledges again"),
            None => {}
        }
        match source_watch.observe(consumed, lag > 0 && inflight == 0, now, after) {
            Some(Stall::Started(d)) => warn!(%flow, cluster = %source.alias, address = %source.bootstrap_servers, lag, stalled = ?d,
                "source cluster delivers nothing while records wait (librdkafka retries)"),
            Some(Stall::Ended(d)) => info!(%flow, cluster = %source.alias, stalled = ?d, "source cluster delivers again"),
            None => {}
        }
        // Per partition: records to replicate and no progress for PARTITION_STALL_AFTER is
        // named, and counted in a gauge. While a whole cluster is stalled (named above, sooner)
        // the partitions are not named one by one: the cause is already said.
        let cluster_stalled = target_watch.stalled() || source_watch.stalled();
        let mut seen = HashSet::new();
        let mut named = 0;
        for p in table.all() {
            let p = p.lock().unwrap();
            let key = (p.source_topic.clone(), p.partition);
            let watch = partitions.entry(key.clone()).or_default();
            match watch.observe(p.safe_position() as u64, p.lag() > 0, now, PARTITION_STALL_AFTER) {
                Some(Stall::Started(d)) => {
                    counter!(telemetry::ERRORS, "flow" => flow.clone(), "kind" => telemetry::kind::PARTITION_STALLED).increment(1);
                    if !cluster_stalled && named < 10 {
                        named += 1;
                        warn!(%flow, topic = %p.source_topic, partition = p.partition, position = p.safe_position(), lag = p.lag(), stalled = ?d,
                            failed = p.failed.as_deref().unwrap_or("-"), "PARTITION STALLED: records wait on the source and none was replicated for this long");
                    }
                }
                Some(Stall::Ended(d)) => info!(%flow, topic = %p.source_topic, partition = p.partition, stalled = ?d, "partition replicating again"),
                None => {}
            }
            seen.insert(key);
        }
        partitions.retain(|k, _| seen.contains(k));
        gauge!(telemetry::STALLED_PARTITIONS, "flow" => flow.clone()).set(partitions.values().filter(|w| w.stalled()).count() as f64);
    }
}

/// The key under which a postponed commit is reported (once, until a commit succeeds).
const COMMIT_POSTPONED: &str = "transaction commit postponed";

/// How long a partition may have records waiting and replicate none before it is reported.
const PARTITION_STALL_AFTER: Duration = Duration::from_secs(30);
