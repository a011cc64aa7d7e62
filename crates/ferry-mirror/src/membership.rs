//! Sharing a flow's partitions among `ferry mirror` processes through Kafka's group protocol.
//!
//! Each flow of each process runs one member of the positions group
//! (`ferry-mirror.<source>.internal`, on the target cluster). The member subscribes to the
//! flow's remote topics with the cooperative-sticky assignor and never fetches (everything it
//! is assigned is paused): an assigned remote-topic partition means "this process replicates
//! the matching source partition". Positions are committed through this member, so they carry
//! its generation: a process that was expelled from the group can no longer commit.
//!
//! Handover: the revoke callback (cooperative: only the partitions that move) asks the flow to
//! stop those partitions, drain their in-flight records and store their offset runs, then
//! commits their positions before the callback returns. The next owner starts exactly there.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_kafka::{ClientRole, ClusterClient};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::positions::group_id;

/// A remote-topic partition: the unit the group assigns.
pub(crate) type RemotePartition = (String, i32);

/// How long a revoke waits for the flow to stop and drain the partitions it gives away.
/// Past it the partitions move anyway; the next owner re-sends from the last stored position
/// (duplicates, never a gap).
pub(crate) const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a process replicates is what the flow wants (source partition -> remote topic) and the
/// group gave it (remote partitions). Returns the source partitions to start (with their remote
/// topic, sorted) and those to stop (sorted): assigned ones no longer wanted or no longer owned.
pub(crate) fn plan_assignment<'a>(
    wanted: &HashMap<(String, i32), String>,
    owned: &HashSet<RemotePartition>,
    assigned: impl Iterator<Item = &'a (String, i32)>,
) -> (Vec<((String, i32), String)>, Vec<(String, i32)>) {
    let assigned: HashSet<&(String, i32)> = assigned.collect();
    let replicate = |key: &(String, i32), remote: &String| owned.contains(&(remote.clone(), key.1));
    let mut start: Vec<((String, i32), String)> =
        wanted.iter().filter(|(k, r)| !assigned.contains(k) && replicate(k, r)).map(|(k, r)| (k.clone(), r.clone())).collect();
    let mut stop: Vec<(String, i32)> =
        assigned.into_iter().filter(|k| !wanted.get(*k).is_some_and(|r| replicate(k, r))).cloned().collect();
    start.sort();
    stop.sort();
    (start, stop)
}

/// Ferry's defaults for the member; the user's `<target>.consumer.*` settings win.
pub(crate) const SESSION_TIMEOUT_MS: &str = "10000";
const HEARTBEAT_INTERVAL_MS: &str = "1000";
/// New partitions of a subscribed remote topic are noticed within this.
const METADATA_REFRESH_MS: &str = "5000";

/// What the member tells the flow.
pub(crate) enum MemberEvent {
    /// These partitions are now this process's to replicate.
    Assigned(Vec<RemotePartition>),
    /// These partitions move to another process (or were lost, when the session expired).
    /// The flow stops them and answers with the positions to commit (none when lost).
    Revoked { partitions: Vec<RemotePartition>, lost: bool, reply: Sender<Vec<(String, i32, i64)>> },
    /// The cluster refuses this process the group (authentication, authorization): the flow
    /// cannot replicate anything and stops, loudly, with this reason.
    Refused(ferry_kafka::Error),
}

/// Errors that no retry fixes: a member refused them can never be given partitions.
fn refuses_membership(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(GroupAuthorizationFailed | TopicAuthorizationFailed | ClusterAuthorizationFailed | SaslAuthenticationFailed | Authentication)
    )
}

pub(crate) struct MemberContext {
    flow: String,
    target: ClusterClient,
    events: UnboundedSender<MemberEvent>,
    /// Client errors repeat while a cluster is down: logged once per 10 s.
    errors_logged: crate::telemetry::Throttle,
    /// Whether the member is subscribed (an unsubscribed member is never "steady").
    subscribed: std::sync::atomic::AtomicBool,
    unsettled: std::sync::Mutex<Unsettled>,
    /// A settled member with no partition at all (fine when other processes own them all).
    idle: std::sync::Mutex<Unsettled>,
    /// Set when the member has had no group coordinator for [`UNSETTLED_AFTER`]: its thread
    /// makes it anew.
    coordinator_lost: std::sync::atomic::AtomicBool,
}

/// How long a rebalance may take before it is reported (Kafka's take well under a session
/// timeout; one that never completes leaves partitions unreplicated).
pub(crate) const UNSETTLED_AFTER: Duration = Duration::from_secs(30);

/// Follows the member's join state (from librdkafka's statistics) to report a rebalance that
/// does not complete. Pure: the caller logs what it returns.
#[derive(Debug, Default)]
pub(crate) struct Unsettled {
    since: Option<Instant>,
    reported: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Not settled for this long (reported every `UNSETTLED_AFTER * 2` while it lasts).
    Stuck(Duration),
    /// Settled again after a reported stretch of this long.
    Settled(Duration),
}

impl Unsettled {
    pub(crate) fn observe(&mut self, steady: bool, now: Instant) -> Option<Settle> {
        if steady {
            let reported = self.reported.take().is_some();
            return self.since.take().filter(|_| reported).map(|since| Settle::Settled(now - since));
        }
        let since = *self.since.get_or_insert(now);
        let due = match self.reported {
            None => now - since >= UNSETTLED_AFTER,
            Some(at) => now - at >= UNSETTLED_AFTER * 2,
        };
        due.then(|| {
            self.reported = Some(now);
            Settle::Stuck(now - since)
        })
    }
}

impl ClientContext for MemberContext {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        let Some(cgrp) = statistics.cgrp else { return };
        let steady = !self.subscribed.load(std::sync::atomic::Ordering::Relaxed) || (cgrp.state == "up" && cgrp.join_state == "steady");
        match self.unsettled.lock().unwrap().observe(steady, Instant::now()) {
            Some(Settle::Stuck(d)) => {
                warn!(flow = %self.flow, cluster = %self.target.alias, address = %self.target.bootstrap_servers,
                    state = %cgrp.state, join_state = %cgrp.join_state, unsettled = ?d, rebalance_reason = %cgrp.rebalance_reason,
                    "GROUP REBALANCE NOT COMPLETING: the target cluster's group coordinator has not settled the positions group; partitions of this process wait unreplicated");
                // No coordinator for this long ("query-coord", "wait-coord", …): seen on Kafka after
                // the target stalled past the session, librdkafka's coordinator handle keeping its
                // request queued while every other client of the cluster worked again. A member
                // that is up and waiting on a rebalance (handovers take up to 30 s) is left alone.
                if cgrp.state != "up" {
                    self.coordinator_lost.store(true, std::sync::atomic::Ordering::Release);
                }
            }
            Some(Settle::Settled(d)) => info!(flow = %self.flow, cluster = %self.target.alias, unsettled = ?d, "group rebalance completed"),
            None => {}
        }
        // Reported once per stretch: with more processes than partitions an idle member is normal.
        let subscribed = self.subscribed.load(std::sync::atomic::Ordering::Relaxed);
        let has_work = !subscribed || !steady || cgrp.assignment_size > 0;
        let mut idle = self.idle.lock().unwrap();
        let first_report = idle.reported.is_none();
        match idle.observe(has_work, Instant::now()) {
            Some(Settle::Stuck(d)) if first_report => warn!(flow = %self.flow, cluster = %self.target.alias, address = %self.target.bootstrap_servers, idle = ?d,
                "the group gave this process no partition: fine if other ferry mirror processes own them all (ferry ctl status shows owners); otherwise the target cluster's group coordinator is not assigning them"),
            Some(Settle::Settled(d)) => info!(flow = %self.flow, idle = ?d, "the group gave this process partitions"),
            _ => {}
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if refuses_membership(&error) {
            let _ = self.events.send(MemberEvent::Refused(ferry_kafka::Error::new(&self.target, format!("join the positions group ({reason})"), error)));
            return;
        }
        if let Some(suppressed) = self.errors_logged.allow(Instant::now()) {
            warn!(flow = %self.flow, cluster = %self.target.alias, address = %self.target.bootstrap_servers, %error, reason, suppressed,
                "group member client error (librdkafka retries; repeats suppressed for 10 s)");
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<RemotePartition> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let partitions = partitions_of(tpl);
        if partitions.is_empty() {
            return;
        }
        let lost = consumer.assignment_lost();
        let (reply, answer) = std::sync::mpsc::channel();
        let started = Instant::now();
        let count = partitions.len();
        if self.events.send(MemberEvent::Revoked { partitions, lost, reply }).is_err() {
            return; // the flow has stopped and stored its positions already
        }
        let positions = match answer.recv_timeout(HANDOVER_TIMEOUT) {
            Ok(p) => p,
            Err(_) => {
                warn!(flow = %self.flow, partitions = count, waited = ?started.elapsed(),
                    "handover not confirmed by the flow: the next owner resumes from the last stored positions");
                return;
            }
        };
        if lost {
            warn!(flow = %self.flow, cluster = %self.target.alias, address = %self.target.bootstrap_servers, partitions = count,
                "partitions lost: the group session on the target cluster expired; they resume from their last stored positions here or in another process");
            return;
        }
        let committed = match commit(consumer, &positions) {
            Ok(()) => true,
            Err(e) => {
                warn!(flow = %self.flow, cluster = %self.target.alias, error = %e,
                    "cannot commit the handed-over positions: the next owner resumes from the last stored ones");
                false
            }
        };
        info!(flow = %self.flow, partitions = count, positions = positions.len(), committed, took = ?started.elapsed(),
            "partitions handed over to another process");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partitions_of(tpl);
                if partitions.is_empty() {
                    return;
                }
                // The member only holds ownership; the relays fetch from the source.
                if let Err(e) = consumer.pause(tpl) {
                    debug!(flow = %self.flow, error = %e, "cannot pause the member's partitions");
                }
                let _ = self.events.send(MemberEvent::Assigned(partitions));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(flow = %self.flow, cluster = %self.target.alias, error = %e, "group rebalance failed (retried)"),
        }
    }
}

pub(crate) type MemberConsumer = BaseConsumer<MemberContext>;

fn commit(consumer: &MemberConsumer, positions: &[(String, i32, i64)]) -> Result<(), KafkaError> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in positions {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)
}

/// The flow's handle on its member: commits positions with the member's generation.
pub(crate) struct Member {
    target: ClusterClient,
    consumer: SharedMember,
}

/// The member's consumer, replaced when it is made anew.
type SharedMember = Arc<std::sync::RwLock<Arc<MemberConsumer>>>;

impl Member {
    fn current(&self) -> Arc<MemberConsumer> {
        self.consumer.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Stores positions (blocking, synchronous commit). Refused by the broker when this process
    /// is no longer a member of the current generation.
    pub(crate) fn commit(&self, positions: &[(String, i32, i64)]) -> ferry_kafka::Result<()> {
        commit(&self.current(), positions).map_err(|e| ferry_kafka::Error::new(&self.target, "store positions", e))
    }

    /// The member's group id, generation and member id, which a transactional commit of the
    /// positions carries (KIP-447 fencing).
    pub(crate) fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.current().group_metadata()
    }
}

/// The member's thread: serves the group protocol (its callbacks run inside `poll`) and
/// applies subscription changes.
pub(crate) struct Membership {
    flow: String,
    source_alias: String,
    target: ClusterClient,
    events: UnboundedSender<MemberEvent>,
    shared: SharedMember,
    consumer: Arc<MemberConsumer>,
    topics: Receiver<Vec<String>>,
    cancel: CancellationToken,
}

/// Creates the member of `source`'s positions group on `target`. Nothing is subscribed until
/// the flow sends its remote topics on the returned sender.
pub(crate) fn join(
    flow: &str,
    source_alias: &str,
    target: &ClusterClient,
    events: UnboundedSender<MemberEvent>,
    cancel: CancellationToken,
) -> ferry_kafka::Result<(Member, Membership, Sender<Vec<String>>)> {
    let consumer = Arc::new(make_member(flow, source_alias, target, events.clone())?);
    let shared: SharedMember = Arc::new(std::sync::RwLock::new(consumer.clone()));
    let (tx, topics) = std::sync::mpsc::channel();
    Ok((
        Member { target: target.clone(), consumer: shared.clone() },
        Membership { flow: flow.to_string(), source_alias: source_alias.to_string(), target: target.clone(), events, shared, consumer, topics, cancel },
        tx,
    ))
}

fn make_member(flow: &str, source_alias: &str, target: &ClusterClient, events: UnboundedSender<MemberEvent>) -> ferry_kafka::Result<MemberConsumer> {
    let context = MemberContext {
        flow: flow.to_string(),
        target: target.clone(),
        events,
        errors_logged: crate::telemetry::Throttle::new(Duration::from_secs(10)),
        subscribed: Default::default(),
        unsettled: Default::default(),
        idle: Default::default(),
        coordinator_lost: Default::default(),
    };
    target
        .client_config_with_defaults(
            ClientRole::Consumer,
            &[
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", SESSION_TIMEOUT_MS),
                ("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS),
                ("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS),
                ("auto.offset.reset", "latest"),
                // The join state, to report a rebalance that does not complete.
                ("statistics.interval.ms", "5000"),
            ],
        )
        .set("group.id", group_id(source_alias))
        .set("client.id", format!("ferry-{flow}-member"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create_with_context(context)
        .map_err(|e| ferry_kafka::Error::new(target, "create the group member", e))
}

impl Membership {
    /// Subscribes `consumer` to `topics` (none: unsubscribes).
    fn subscribe(&self, consumer: &MemberConsumer, topics: &[String]) -> Result<(), KafkaError> {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if names.is_empty() {
            consumer.unsubscribe();
        } else {
            consumer.subscribe(&names)?;
        }
        consumer.context().subscribed.store(!names.is_empty(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Replaces a member that has had no coordinator for long by a new one subscribed to the
    /// same topics. The old one has no assignment (it lost it with its session) and is closed on
    /// a thread of its own, since closing may wait on the coordinator it lacks.
    fn make_anew(&mut self, subscribed: &[String]) {
        // Only when the cluster answers: with the cluster down a new member finds no coordinator
        // either (and the outage is reported already).
        if self.consumer.client().fetch_metadata(None, Duration::from_secs(5)).is_err() {
            return;
        }
        let fresh = match make_member(&self.flow, &self.source_alias, &self.target, self.events.clone()) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                warn!(flow = %self.flow, error = %e, "cannot make the group member anew; retrying when it is reported stuck again");
                return;
            }
        };
        if let Err(e) = self.subscribe(&fresh, subscribed) {
            warn!(flow = %self.flow, error = %e, "cannot subscribe the new group member; retrying when it is reported stuck again");
            return;
        }
        warn!(flow = %self.flow, cluster = %self.target.alias, address = %self.target.bootstrap_servers,
            "GROUP MEMBER MADE ANEW: the positions group's member had no coordinator for 30 s although the cluster answers; a new member joins in its place");
        *self.shared.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
        let old = std::mem::replace(&mut self.consumer, fresh);
        let _ = std::thread::Builder::new().name("member-close".into()).spawn(move || {
            old.unsubscribe();
            drop(old);
        });
    }

    /// Runs until cancelled; then leaves the group so the others take over at once.
    pub(crate) fn run(mut self) {
        let mut subscribed: Vec<String> = Vec::new();
        while !self.cancel.is_cancelled() {
            if self.consumer.context().coordinator_lost.swap(false, std::sync::atomic::Ordering::AcqRel) {
                self.make_anew(&subscribed);
            }
            while let Ok(topics) = self.topics.try_recv() {
                if topics != subscribed {
                    match self.subscribe(&self.consumer, &topics) {
                        Ok(()) => {
                            debug!(flow = %self.flow, topics = topics.len(), "group subscription changed");
                            subscribed = topics;
                        }
                        Err(e) => warn!(flow = %self.flow, error = %e, "cannot subscribe the group member"),
                    }
                }
            }
            // Messages never arrive (every partition is paused); polling serves the callbacks.
            let _ = self.consumer.poll(Duration::from_millis(100));
        }
        // Leave the group: the revoke callback finds the flow gone (its positions are stored)
        // and the group reassigns at once instead of after the session timeout.
        self.consumer.unsubscribe();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.consumer.assignment().map(|a| a.count() > 0).unwrap_or(false) {
            let _ = self.consumer.poll(Duration::from_millis(50));
        }
        info!(flow = %self.flow, "left the group");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_replicates_what_is_wanted_and_owned() {
        let key = |t: &str, p: i32| (t.to_string(), p);
        let wanted: HashMap<(String, i32), String> =
            [(key("orders", 0), "a.orders"), (key("orders", 1), "a.orders"), (key("audit", 0), "a.audit")].into_iter().map(|(k, r)| (k, r.to_string())).collect();
        let owned: HashSet<RemotePartition> = [key("a.orders", 0), key("a.audit", 0), key("a.gone", 0)].into_iter().collect();
        // orders-1 is wanted but owned by another process; payments-0 is no longer wanted;
        // audit-0 already runs; a.gone is owned but not wanted (its topic was deselected).
        let assigned = [key("audit", 0), key("payments", 0), key("orders", 1)];
        let (start, stop) = plan_assignment(&wanted, &owned, assigned.iter());
        assert_eq!(start, vec![(key("orders", 0), "a.orders".to_string())]);
        assert_eq!(stop, vec![key("orders", 1), key("payments", 0)]);
        // Nothing owned yet (before the first assignment): nothing starts.
        let (start, stop) = plan_assignment(&wanted, &HashSet::new(), std::iter::empty());
        assert!(start.is_empty() && stop.is_empty());
    }

    #[test]
    fn only_authentication_and_authorization_refuse_membership() {
        use rdkafka::types::RDKafkaErrorCode as C;
        assert!(refuses_membership(&KafkaError::Global(C::GroupAuthorizationFailed)));
        assert!(refuses_membership(&KafkaError::Global(C::SaslAuthenticationFailed)));
        assert!(!refuses_membership(&KafkaError::Global(C::AllBrokersDown)));
        assert!(!refuses_membership(&KafkaError::Global(C::BrokerTransportFailure)));
        assert!(!refuses_membership(&KafkaError::Global(C::RebalanceInProgress)));
    }

    #[test]
    fn a_rebalance_that_does_not_settle_is_reported_then_repeated_then_ended() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut u = Unsettled::default();
        assert_eq!(u.observe(true, at(0)), None);
        assert_eq!(u.observe(false, at(5)), None, "a rebalance in progress");
        assert_eq!(u.observe(true, at(8)), None, "settled quickly: nothing to say");
        assert_eq!(u.observe(false, at(10)), None);
        assert_eq!(u.observe(false, at(39)), None);
        assert_eq!(u.observe(false, at(40)), Some(Settle::Stuck(Duration::from_secs(30))));
        assert_eq!(u.observe(false, at(60)), None, "not again at once");
        assert_eq!(u.observe(false, at(100)), Some(Settle::Stuck(Duration::from_secs(90))));
        assert_eq!(u.observe(true, at(101)), Some(Settle::Settled(Duration::from_secs(91))));
        assert_eq!(u.observe(false, at(102)), None);
        assert_eq!(u.observe(false, at(131)), None, "a new stretch counts from its own start");
    }
}
