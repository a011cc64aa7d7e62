//! One replication flow (`source->target`) in this process: the control task that wires the
//! relays, the checkpointer, the control-topic watcher and the group member, then dispatches
//! their events and its timers to the parts below, each with one concern:
//!
//! - [`topics`]: listing both clusters, remote and internal topics, the replication lists;
//! - [`assignment`]: which partitions run here, where they start, handovers;
//! - [`history`]: the stored offset runs, MirrorMaker 2's progress, replaced sources;
//! - [`persist`]: storing runs and positions (at-least-once mode);
//! - [`transactions`]: commits and their outcomes (exactly-once mode);
//! - [`reports`]: heartbeats (their own task) and metrics reports;
//! - [`producers`]: the producers and their settings;
//! - [`stalls`]: naming stalled clusters and partitions (its own task).

mod assignment;
mod history;
mod persist;
mod producers;
mod reports;
mod stalls;
mod topics;
mod transactions;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_kafka::{Admin, ClusterClient, TopicMeta};
use metrics::gauge;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::Producer;
use tokio::sync::watch;
use tokio::task::spawn_blocking;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::checkpoint::{self, Checkpointer};
use crate::config::{FlowConfig, OffsetSyncsLocation};
use crate::control::FlowLists;
use crate::membership::{self, MemberEvent};
use crate::offset_store::OffsetSyncWriter;
use crate::positions::PositionStore;
use crate::progress::ProgressTable;
use crate::relay::{Relay, Sink};
use crate::replication_policy::PolicyKind;
use crate::report::METRICS_INTERVAL;
use crate::telemetry;
use crate::topic_plan::TopicFilter;
use crate::txn::{self, Transactions};
use crate::{Error, FlowStatus, Result};

use assignment::Partitions;
use history::History;
use persist::Persistence;
use producers::{init_transactions, transactional_id, ProducerFactory};
use reports::Reporter;
use stalls::watch_stalls;
use topics::TopicState;
use transactions::ExactlyOnce;

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

/// The admin and metadata clients of both clusters.
struct Clusters {
    source_admin: Arc<Admin>,
    target_admin: Arc<Admin>,
    watermarks: Arc<BaseConsumer<ferry_kafka::QuietContext>>,
}

/// The control task's state, by concern (each part's own file says what it holds).
struct Running {
    name: String,
    config: FlowConfig,
    cancel: CancellationToken,
    status: Arc<Mutex<FlowStatus>>,
    /// Conditions said once (see [`Running::report_once`]).
    reported: HashSet<String>,
    clusters: Clusters,
    topics: TopicState,
    parts: Partitions,
    history: History,
    persist: Persistence,
    /// Exactly-once mode only.
    eos: Option<ExactlyOnce>,
    reports: Reporter,
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

    pub(super) async fn run_inner(self, name: &str, cancel: CancellationToken) -> Result<()> {
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
        let factory = Arc::new(ProducerFactory {
            flow: name.to_string(),
            target: target.clone(),
            transactional_id: config.exactly_once.then(|| transactional_id(name, &process)),
            rewind_pending: rewind_pending.clone(),
            last_latency_ms: last_latency_ms.clone(),
        });
        let created = |e| Error::Kafka(ferry_kafka::Error::new(&target, "create producer", e));
        let producer = Arc::new(factory.make(table.clone(), true).map_err(created)?);
        let internal = if config.exactly_once { Arc::new(factory.make(Arc::new(ProgressTable::default()), false).map_err(created)?) } else { producer.clone() };
        let sink = if config.exactly_once {
            if !init_transactions(name, &target, &producer, &cancel).await? {
                return Ok(());
            }
            Sink::Transactional(Arc::new(txn::Gate::new(producer)))
        } else {
            Sink::Plain(producer)
        };
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
        let (commit_done_tx, mut commit_done) = tokio::sync::mpsc::unbounded_channel();
        let heartbeats_ready = Arc::new(AtomicBool::new(false));
        let eos = match &sink {
            Sink::Plain(_) => None,
            Sink::Transactional(gate) => Some(ExactlyOnce {
                txn: Arc::new(Transactions {
                    flow: name.to_string(),
                    gate: gate.clone(),
                    factory: {
                        let (factory, table) = (factory.clone(), table.clone());
                        Box::new(move || factory.make(table.clone(), true))
                    },
                    broken: AtomicBool::new(false),
                    member: member.clone(),
                    table: table.clone(),
                    syncs: syncs.clone(),
                    rewind_pending: rewind_pending.clone(),
                    runtime: tokio::runtime::Handle::current(),
                }),
                fatal: None,
                committed_once: false,
                committing: None,
                commit_done: commit_done_tx.clone(),
                abort_next: None,
            }),
        };
        let mut run = Running {
            name: name.to_string(),
            config: config.clone(),
            cancel: relay_cancel.clone(),
            status,
            reported: HashSet::new(),
            clusters: Clusters { source_admin, target_admin, watermarks: Arc::new(watermarks) },
            topics: TopicState {
                filter: TopicFilter::for_flow(&config),
                member_topics,
                subscribed: None,
                last_config_sync: None,
                heartbeats_ready: heartbeats_ready.clone(),
                metrics_ready: false,
                syncs_topics_ready: false,
                file,
                lists_tx: Some(lists_tx),
                control_thread: None,
            },
            parts: Partitions {
                table,
                relays,
                wanted: HashMap::new(),
                source_names: HashSet::new(),
                owned: HashSet::new(),
                assigned: HashMap::new(),
                released: HashMap::new(),
            },
            history: History::default(),
            persist: Persistence { positions: Arc::new(PositionStore::connect(&target, &source.alias)?), member, syncs, syncs_admin, persisting: None },
            eos,
            reports: Reporter { producer: internal.clone(), last_latency_ms, process, started_ms },
        };
        if config.emit_heartbeats_enabled {
            tokio::spawn(reports::heartbeats(name.to_string(), config.clone(), internal.clone(), heartbeats_ready, run.status.clone(), relay_cancel.clone()));
        }
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
        let mut report = tokio::time::interval(METRICS_INTERVAL);
        let mut backoff = ferry_kafka::Backoff::default();
        let mut next_refresh = Instant::now();
        let mut forced_refresh = false;
        let mut listing: Option<tokio::task::JoinHandle<ferry_kafka::Result<(Vec<TopicMeta>, Vec<TopicMeta>)>>> = None;
        let outcome = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                Ok(()) = lists_rx.changed() => {
                    let lists = lists_rx.borrow_and_update().clone();
                    if let Some(lists) = lists {
                        run.topics.filter.set_lists(&lists);
                        // Applied now, not at the next refresh.
                        forced_refresh = true;
                        refresh.reset_immediately();
                    }
                }
                _ = refresh.tick(), if listing.is_none() => {
                    if Instant::now() < next_refresh || (!config.refresh_topics_enabled && !run.parts.assigned.is_empty() && !forced_refresh) {
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
                            let wait = backoff.next_wait();
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
                        run.parts.owned.extend(partitions);
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
                    // A handover's commit (on this task) may have found the producer unusable.
                    if let Some(reason) = run.eos.as_ref().and_then(|e| e.fatal.clone()) {
                        break Err(Error::Transactions { cluster: target.alias.clone(), address: target.bootstrap_servers.clone(), reason });
                    }
                }
                Some(()) = commit_done.recv() => {
                    run.finish_commit().await;
                    if let Some(reason) = run.eos.as_ref().and_then(|e| e.fatal.clone()) {
                        break Err(Error::Transactions { cluster: target.alias.clone(), address: target.bootstrap_servers.clone(), reason });
                    }
                }
                _ = report.tick() => run.publish_metrics(),
            }
        };

        // Shutdown: stop relays, drain in-flight records, store final positions. Group events
        // are no longer served: a revoke from now on returns at once instead of waiting for an
        // answer (the final store below covers every partition).
        member_rx.close();
        relay_cancel.cancel();
        for t in threads.into_iter().chain(checkpointer).chain(run.topics.control_thread.take()) {
            let _ = spawn_blocking(move || t.join()).await;
        }
        let p = sink.current();
        let _ = spawn_blocking(move || p.flush(Duration::from_secs(10))).await;
        drop(sink);
        run.finish_persisting().await;
        run.flush().await;
        run.finish_commit().await;
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

impl Running {
    pub(super) fn set_status(&self, f: impl FnOnce(&mut FlowStatus)) {
        f(&mut self.status.lock().unwrap());
    }

    /// Reports a condition once per distinct message (not every refresh).
    pub(super) fn report_once(&mut self, key: String, f: impl FnOnce()) {
        if self.reported.insert(key) {
            f();
        }
    }
}
