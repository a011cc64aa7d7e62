//! The flow's topics: listing both clusters, creating and updating remote topics with their
//! source configs, the internal topics the flow writes, and the replication lists (file plus
//! `ferry ctl` changes). A refresh ends with the partitions the flow wants replicated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_kafka::{Admin, NewTopicSpec, TopicMeta};
use metrics::counter;
use tokio::sync::watch;
use tokio::task::spawn_blocking;
use tracing::{error, info, warn};

use super::Running;
use crate::control::{self, ControlLog, ControlWatch, FlowLists, CONTROL_TOPIC};
use crate::offset_store::{compacted_topic, RunLog, TopicTail};
use crate::replication_policy::HEARTBEATS_TOPIC;
use crate::report::{METRICS_RETENTION_MS, METRICS_TOPIC};
use crate::telemetry::{self, kind};
use crate::topic_plan::{self, Configs, Route, TopicAction, TopicFilter};
use crate::{Error, Result};

/// What the flow knows of topics between refreshes.
pub(super) struct TopicState {
    pub(super) filter: TopicFilter,
    /// Sends the flow's remote topics to the member's subscription.
    pub(super) member_topics: Sender<Vec<String>>,
    pub(super) subscribed: Option<Vec<String>>,
    pub(super) last_config_sync: Option<Instant>,
    /// The heartbeats topic exists (the heartbeat task writes once it does).
    pub(super) heartbeats_ready: Arc<std::sync::atomic::AtomicBool>,
    pub(super) metrics_ready: bool,
    pub(super) syncs_topics_ready: bool,
    /// The properties file (origin of list entries in `ferry ctl --list`).
    pub(super) file: String,
    /// Publishes the live lists; moved into the control watcher once the lists are read.
    pub(super) lists_tx: Option<watch::Sender<Option<Arc<crate::control::FlowLists>>>>,
    pub(super) control_thread: Option<std::thread::JoinHandle<()>>,
}

/// Every source partition the routes replicate, with its remote topic, but those of remote
/// topics that could not be created.
pub(super) fn wanted_partitions(routes: &[Route], not_created: &HashSet<String>) -> HashMap<(String, i32), String> {
    let mut wanted = HashMap::new();
    for route in routes.iter().filter(|r| !not_created.contains(&r.remote_topic)) {
        for p in 0..route.partitions {
            wanted.insert((route.source_topic.clone(), p), route.remote_topic.clone());
        }
    }
    wanted
}

/// The remote topics of the wanted partitions, sorted: the positions group's subscription.
pub(super) fn subscription(wanted: &HashMap<(String, i32), String>) -> Vec<String> {
    let mut remotes: Vec<String> = wanted.values().cloned().collect::<HashSet<_>>().into_iter().collect();
    remotes.sort();
    remotes
}

impl Running {
    pub(super) async fn list(admin: &Arc<Admin>) -> ferry_kafka::Result<Vec<TopicMeta>> {
        let admin = admin.clone();
        spawn_blocking(move || admin.list_topics()).await.expect("metadata task panicked")
    }

    /// Lists the topics of both clusters, concurrently, off the control task.
    pub(super) fn start_listing(&self) -> tokio::task::JoinHandle<ferry_kafka::Result<(Vec<TopicMeta>, Vec<TopicMeta>)>> {
        let (source, target) = (self.clusters.source_admin.clone(), self.clusters.target_admin.clone());
        tokio::spawn(async move {
            let (s, t) = tokio::join!(Self::list(&source), Self::list(&target));
            Ok((s?, t?))
        })
    }

    /// One topic refresh from fresh listings of both clusters.
    pub(super) async fn refresh(&mut self, source_topics: Vec<TopicMeta>, target_topics: Vec<TopicMeta>) -> Result<()> {
        self.prepare(&source_topics, &target_topics).await?;

        let sync_due = self.config.sync_topic_configs_enabled
            && self.topics.last_config_sync.is_none_or(|t| t.elapsed() >= self.config.sync_topic_configs_interval);
        if sync_due {
            self.topics.last_config_sync = Some(Instant::now());
        }
        // Topics to create need their source configs in every round, synced or not.
        let creating: Vec<String> = topic_plan::to_create(&self.topics.filter, &self.config.source, &source_topics, &target_topics).into_iter().map(String::from).collect();
        let (source_cfg, target_cfg) = self.describe_configs(&source_topics, &target_topics, sync_due, &creating).await;
        let configs = Configs { source: &source_cfg, target: target_cfg.as_ref(), exclude: &self.config.config_properties_exclude };
        let plan = topic_plan::plan(&self.topics.filter, &self.config.source, self.config.replication_factor, &source_topics, &target_topics, &configs);
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
            let mut replicating: Vec<i32> = self.parts.assigned.values().filter_map(|a| {
                let p = a.progress.lock().unwrap();
                (*p.remote_topic == *spec.name).then_some(p.partition)
            }).collect();
            if replicating.is_empty() {
                // Kafka's coordinator may have taken the partitions away already (their topic
                // vanished from the subscription) before this refresh saw it missing: stored
                // positions say that the topic was replicated into all the same.
                let keys: Vec<(String, i32)> = (0..spec.partitions).map(|p| (spec.name.clone(), p)).collect();
                let store = self.persist.positions.clone();
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
            match self.clusters.target_admin.create_topics(&creates).await {
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
                    self.clusters.target_admin.create_partitions(topic, *count).await,
                ),
                TopicAction::AlterConfigs { topic, configs } => (
                    format!("sync configs of {topic}"),
                    self.clusters.target_admin.alter_topic_configs(topic, configs).await,
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
        let wanted = wanted_partitions(&plan.routes, &not_created);
        let remotes = subscription(&wanted);
        if self.topics.subscribed.as_ref() != Some(&remotes) {
            let _ = self.topics.member_topics.send(remotes.clone());
            self.topics.subscribed = Some(remotes);
        }
        self.parts.wanted = wanted;
        self.parts.source_names = source_topics.iter().map(|t| t.name.clone()).collect();
        self.reconcile().await
    }

    /// First refreshes: creates the internal topics the flow writes, reads its lists and its
    /// offset history. Independent steps run concurrently (they are start-up latency).
    pub(super) async fn prepare(&mut self, source_topics: &[TopicMeta], target_topics: &[TopicMeta]) -> Result<()> {
        let heartbeats_exist = target_topics.iter().any(|t| t.name == HEARTBEATS_TOPIC);
        if self.config.emit_heartbeats_enabled && heartbeats_exist {
            self.topics.heartbeats_ready.store(true, std::sync::atomic::Ordering::Release);
        }
        let want_heartbeats = self.config.emit_heartbeats_enabled && !self.topics.heartbeats_ready.load(std::sync::atomic::Ordering::Acquire);
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
        let metrics_ready = self.topics.metrics_ready || target_topics.iter().any(|t| t.name == METRICS_TOPIC);
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
            create(self.clusters.target_admin.clone(), want_heartbeats, vec![heartbeats]),
            create(self.clusters.target_admin.clone(), !metrics_ready, vec![metrics]),
            create(self.persist.syncs_admin.clone(), !self.topics.syncs_topics_ready, syncs),
            create(self.clusters.target_admin.clone(), self.topics.lists_tx.is_some() && control_missing, vec![control]),
        );
        match hb {
            Ok(created) => {
                if created {
                    self.topics.heartbeats_ready.store(true, std::sync::atomic::Ordering::Release);
                }
            }
            Err(e) => warn!(flow = %self.name, error = %e, "cannot create the heartbeats topic"),
        }
        match me {
            Ok(created) => self.topics.metrics_ready |= created || metrics_ready,
            Err(e) => warn!(flow = %self.name, error = %e, "cannot create the metrics topic; retrying"),
        }
        self.topics.syncs_topics_ready |= sy?;
        co?;

        // The lists and the offset history, read concurrently.
        let control_read = self.topics.lists_tx.is_some().then(|| {
            let target = self.clusters.target_admin.cluster().clone();
            spawn_blocking(move || -> ferry_kafka::Result<(TopicTail, ControlLog)> {
                let mut tail = TopicTail::open(&target, CONTROL_TOPIC)?;
                let log = control::read_log(&mut tail)?;
                Ok((tail, log))
            })
        });
        let history_read = self.history.log.is_none().then(|| {
            let cluster = self.persist.syncs.cluster().clone();
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
            self.history.tail = Some(tail);
            self.history.current = true;
            if log.malformed > 0 {
                warn!(flow = %self.name, malformed = log.malformed, "undecodable offset-run records ignored");
            }
            info!(flow = %self.name, partitions = log.partitions().count(), runs = log.run_count(), "offset history loaded");
            self.history.log = Some(log);
        }
        Ok(())
    }

    /// Applies the lists read from the control topic and starts following it.
    pub(super) fn start_lists(&mut self, tail: TopicTail, log: ControlLog) -> Result<()> {
        let lists = Arc::new(FlowLists::effective(&self.config, &self.topics.file, &log));
        let file_only = FlowLists::effective(&self.config, &self.topics.file, &ControlLog::default());
        let changes = control::describe_change(&file_only, &lists);
        if !changes.is_empty() {
            info!(flow = %self.name, changes = %changes, "replication lists include ferry ctl changes");
        }
        self.topics.filter.set_lists(&lists);
        let tx = self.topics.lists_tx.take().expect("lists are loaded once");
        tx.send_replace(Some(lists));
        let watch = ControlWatch { flow: self.config.clone(), file: self.topics.file.clone(), tail, log, lists: tx, cancel: self.cancel.clone() };
        let thread = std::thread::Builder::new()
            .name(format!("control-{}", self.name))
            .spawn(move || watch.run())
            .map_err(|e| Error::Internal(format!("cannot start the control thread: {e}")))?;
        self.topics.control_thread = Some(thread);
        Ok(())
    }

    /// Source configs of the topics to create, and when `sync_due` of every replicated topic
    /// with the remote topics' configs. A failed read leaves the source map empty (nothing is
    /// created without configs) and the target `None` (nothing is synced this round).
    pub(super) async fn describe_configs(
        &mut self,
        source_topics: &[TopicMeta],
        target_topics: &[TopicMeta],
        sync_due: bool,
        creating: &[String],
    ) -> (HashMap<String, BTreeMap<String, String>>, Option<HashMap<String, BTreeMap<String, String>>>) {
        let replicated: Vec<String> = if sync_due {
            source_topics.iter().filter(|t| self.topics.filter.should_replicate(&t.name)).map(|t| t.name.clone()).collect()
        } else {
            creating.to_vec()
        };
        let source = if replicated.is_empty() { Ok(HashMap::new()) } else { self.clusters.source_admin.describe_topic_configs(&replicated).await };
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
            .map(|t| self.topics.filter.policy.remote_topic(&self.config.source, t))
            .filter(|r| target_names.contains(r.as_str()))
            .collect();
        match self.clusters.target_admin.describe_topic_configs(&remotes).await {
            Ok(t) => (source, Some(t)),
            Err(e) => {
                let name = self.name.clone();
                self.report_once(format!("describe target {e}"), || warn!(flow = %name, error = %e, "cannot read remote topic configs; configs are synced once they can be read"));
                (source, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(source: &str, remote: &str, partitions: i32) -> Route {
        Route { source_topic: source.into(), remote_topic: remote.into(), partitions }
    }

    #[test]
    fn wanted_partitions_are_every_partition_of_every_created_route() {
        let routes = [route("orders", "a.orders", 3), route("users", "a.users", 2)];
        let wanted = wanted_partitions(&routes, &HashSet::from(["a.users".to_string()]));
        assert_eq!(wanted.len(), 3, "the remote topic that could not be created waits");
        assert_eq!(wanted[&("orders".to_string(), 2)], "a.orders");
        assert!(!wanted.contains_key(&("users".to_string(), 0)));
    }

    #[test]
    fn the_subscription_is_each_remote_topic_once_sorted() {
        let wanted = wanted_partitions(&[route("b", "x.b", 2), route("a", "x.a", 1)], &HashSet::new());
        assert_eq!(subscription(&wanted), vec!["x.a".to_string(), "x.b".to_string()]);
        assert!(subscription(&HashMap::new()).is_empty());
    }
}
