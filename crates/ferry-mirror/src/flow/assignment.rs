//! Which partitions this process replicates: the wanted partitions the positions group gave it.
//! Partitions start on the relays from their stored position (or where MirrorMaker 2 stopped,
//! or the source log start) and stop when they are no longer wanted or move to another process.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, Gauge};
use tokio::task::spawn_blocking;
use tracing::{debug, error, info, warn};

use super::Running;
use crate::membership::{self, RemotePartition};
use crate::progress::{PartitionProgress, ProgressTable, SharedProgress};
use crate::relay::RelayCommand;
use crate::telemetry::{self, kind};
use crate::Result;

/// A partition this process replicates.
pub(super) struct Assigned {
    pub(super) progress: SharedProgress,
    pub(super) relay: usize,
    pub(super) lag: Gauge,
}

/// The flow's partitions: wanted (by the last refresh), owned (given by the group), assigned
/// (on a relay here).
pub(super) struct Partitions {
    pub(super) table: Arc<ProgressTable>,
    pub(super) relays: Vec<Sender<RelayCommand>>,
    /// Every source partition the flow replicates (with its remote topic), from the last refresh.
    pub(super) wanted: HashMap<(String, i32), String>,
    /// Source topic names at the last refresh (to tell a deleted topic from an unselected one).
    pub(super) source_names: HashSet<String>,
    /// Remote partitions the group gave this process.
    pub(super) owned: HashSet<RemotePartition>,
    pub(super) assigned: HashMap<(String, i32), Assigned>,
    /// Records and bytes this run replicated of partitions it no longer owns (source topic,
    /// partition): reported so a run's totals never go back, and resumed if a partition returns.
    pub(super) released: HashMap<(String, i32), (u64, u64)>,
}

/// Where a partition newly assigned here starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StartAt {
    /// Its stored position.
    Stored(i64),
    /// Its source log start: the source topic was replaced since the position was stored.
    Replaced(i64),
    /// Where MirrorMaker 2 stopped (Ferry never stored a position for it).
    Mm2(i64),
    /// The source log start: a partition new to replication.
    LogStart,
}

/// Decides where a partition starts from what is known of it (pure).
pub(super) fn start_at(stored: Option<i64>, replaced: Option<i64>, mm2: Option<i64>) -> StartAt {
    match (stored, replaced, mm2) {
        (Some(_), Some(log_start), _) => StartAt::Replaced(log_start),
        (Some(position), None, _) => StartAt::Stored(position),
        (None, _, Some(position)) => StartAt::Mm2(position),
        (None, _, None) => StartAt::LogStart,
    }
}

impl Running {
    /// Starts the partitions that are wanted and owned, stops those that are no longer wanted.
    pub(super) async fn reconcile(&mut self) -> Result<()> {
        let (new, gone) = membership::plan_assignment(&self.parts.wanted, &self.parts.owned, self.parts.assigned.keys());
        if !gone.is_empty() {
            self.unassign(&gone).await;
        }
        if !new.is_empty() {
            self.assign(new).await?;
        }
        self.publish_assignment();
        Ok(())
    }

    pub(super) fn publish_assignment(&self) {
        let topics: HashSet<&str> = self.parts.assigned.keys().map(|(t, _)| t.as_str()).collect();
        gauge!(telemetry::TOPICS, "flow" => self.name.clone()).set(topics.len() as f64);
        gauge!(telemetry::PARTITIONS, "flow" => self.name.clone()).set(self.parts.assigned.len() as f64);
        let mut topics: Vec<String> = topics.into_iter().map(String::from).collect();
        topics.sort();
        self.set_status(|s| { s.topics = topics; });
    }

    /// Gives partitions to another process: stops them at the relays, waits for their records in
    /// flight, stores their offset runs and returns their positions for the member to commit
    /// (under its generation, before the group moves them). Lost partitions are stopped only.
    pub(super) async fn hand_over(&mut self, partitions: &[RemotePartition], lost: bool) -> Vec<(String, i32, i64)> {
        for p in partitions {
            self.parts.owned.remove(p);
        }
        let moving: HashSet<&RemotePartition> = partitions.iter().collect();
        let keys: Vec<(String, i32)> = self
            .parts
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
        let mut per_relay: Vec<Vec<SharedProgress>> = vec![Vec::new(); self.parts.relays.len()];
        let mut released = Vec::new();
        for key in &keys {
            if let Some(a) = self.parts.assigned.remove(key) {
                // Its lag is the new owner's to report: a value left here would count twice in sums.
                a.lag.set(0.0);
                per_relay[a.relay].push(a.progress.clone());
                released.push(a.progress);
            }
        }
        self.release(per_relay).await;
        if self.eos.is_some() {
            // Exactly-once: their positions are committed with their records, in the open
            // transaction, while this process still holds them; the member commits nothing.
            // Lost partitions are no longer this process's: their records must never become
            // visible, so the transaction aborts. Without waiting: a commit in flight may be
            // retrying against the target that made the session expire; the abort is the next
            // commit (the one in flight cannot commit a lost partition's position: its
            // generation is gone).
            if lost {
                self.abort_next("partitions lost: the group session expired").await;
            } else if self.commit_transaction(None).await {
                info!(flow = %self.name, partitions = released.len(), "handover: their last records and positions are committed in this process's transaction");
            } else {
                warn!(flow = %self.name, partitions = released.len(), "handover: their last transaction did not commit; the next owner resumes from the last committed positions");
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
        let positions = self.final_positions(&released, "handover").await;
        debug!(flow = %self.name, partitions = positions.len(), took = ?started.elapsed(), "partitions stopped for handover");
        positions
    }

    /// The last positions of partitions that stopped here (at-least-once), once the offset runs
    /// that cover them are stored; none when the runs cannot be stored (whoever resumes them
    /// re-sends from the last stored position: duplicates, no loss).
    async fn final_positions(&mut self, stopped: &[SharedProgress], why: &str) -> Vec<(String, i32, i64)> {
        self.finish_persisting().await;
        let mut history = Vec::new();
        let mut positions = Vec::new();
        for progress in stopped {
            let mut p = progress.lock().unwrap();
            if let Some(unsaved) = p.offset_map.unsaved() {
                history.push((p.source_topic.to_string(), p.partition, unsaved));
            }
            positions.push((p.remote_topic.to_string(), p.partition, p.safe_position()));
        }
        if !history.is_empty() {
            if let Err(e) = self.persist.syncs.write(&history).await {
                counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::OFFSET_SYNC).increment(1);
                warn!(flow = %self.name, error = %e, why, "cannot store offset runs of stopped partitions: their last positions are not stored (they resume earlier: duplicates, no loss)");
                return Vec::new();
            }
        }
        positions
    }

    pub(super) async fn assign(&mut self, new: Vec<((String, i32), String)>) -> Result<()> {
        self.history.catch_up().await?;
        let keys: Vec<(String, i32)> = new.iter().map(|((_, p), remote)| (remote.clone(), *p)).collect();
        let store = self.persist.positions.clone();
        let stored = spawn_blocking(move || store.fetch(&keys)).await.expect("position fetch panicked")?;
        if self.history.mm2.is_none() && new.iter().any(|((_, p), remote)| !stored.contains_key(&(remote.clone(), *p))) {
            self.history.mm2 = Some(self.read_mm2_offsets().await);
        }
        // Partitions MM2 replicated and Ferry never did: checked against the target together.
        let from_mm2: Vec<(String, i32, String, i64)> = new
            .iter()
            .filter(|((_, p), remote)| !stored.contains_key(&(remote.clone(), *p)))
            .filter_map(|((t, p), remote)| {
                let next = self.history.mm2.as_ref()?.as_ref()?.next(t, *p)?;
                Some((t.clone(), *p, remote.clone(), next))
            })
            .collect();
        let mut taken_over = self.take_over_from_mm2(from_mm2).await;
        let replaced = self.replaced_sources(&new, &stored).await;
        let mut per_relay: Vec<Vec<SharedProgress>> = vec![Vec::new(); self.parts.relays.len()];
        for ((source_topic, partition), remote) in new {
            let key = (source_topic.clone(), partition);
            let start = match start_at(stored.get(&(remote.clone(), partition)).copied(), replaced.get(&key).copied(), taken_over.remove(&key)) {
                StartAt::Stored(position) | StartAt::Replaced(position) | StartAt::Mm2(position) => position,
                StartAt::LogStart => {
                    // New topic: replicate from the earliest offset still in the source log.
                    let wm = self.clusters.watermarks.clone();
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
            let stored_history = self.history.log.as_ref().and_then(|h| h.map(&source_topic, partition));
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
            if let Some((records, bytes)) = self.parts.released.remove(&(source_topic.clone(), partition)) {
                // Back in this run: its counters go on from where they stopped.
                progress.records = records;
                progress.bytes = bytes;
            }
            let labels = [("flow", self.name.clone()), ("topic", source_topic.clone()), ("partition", partition.to_string())];
            progress.counters = Some((counter!(telemetry::RECORDS, &labels), counter!(telemetry::BYTES, &labels)));
            let progress = Arc::new(Mutex::new(progress));
            self.parts.table.insert(progress.clone());
            let relay = relay_for(&source_topic, partition, self.parts.relays.len());
            per_relay[relay].push(progress.clone());
            self.parts.assigned.insert((source_topic, partition), Assigned {
                progress,
                relay,
                lag: gauge!(telemetry::LAG, &labels),
            });
        }
        let mut count = 0;
        for (relay, parts) in per_relay.into_iter().enumerate() {
            count += parts.len();
            if !parts.is_empty() {
                let _ = self.parts.relays[relay].send(RelayCommand::Assign(parts));
            }
        }
        info!(flow = %self.name, partitions = count, "replicating new partitions");
        Ok(())
    }

    pub(super) async fn unassign(&mut self, gone: &[(String, i32)]) {
        let mut per_relay: Vec<Vec<SharedProgress>> = vec![Vec::new(); self.parts.relays.len()];
        let mut leaving = Vec::new();
        let mut deleted = Vec::new();
        for key in gone {
            if let Some(a) = self.parts.assigned.remove(key) {
                a.lag.set(0.0);
                per_relay[a.relay].push(a.progress.clone());
                if self.parts.wanted.contains_key(key) {
                    info!(flow = %self.name, topic = %key.0, partition = key.1, "partition no longer assigned to this process: replication stopped here");
                } else if !self.parts.source_names.contains(&key.0) {
                    deleted.push(a.progress.clone());
                } else {
                    info!(flow = %self.name, topic = %key.0, partition = key.1, "partition no longer selected: replication stopped (remote topic kept)");
                }
                leaving.push(a.progress);
            }
        }
        // Their relays stop sending them, and confirm.
        self.release(per_relay).await;
        if self.eos.is_some() {
            // Exactly-once: their last records and positions are committed together before
            // they leave the table, so adding them back later resumes exactly.
            self.commit_transaction(None).await;
        } else {
            // Their last positions are stored, so a partition that comes back (selected again,
            // its topic created again) resumes where it stopped and a recreated source log is
            // told from the replicated one (`SOURCE REPLACED`) rather than taken for a new topic.
            if !wait_drained(&leaving, Duration::from_secs(10)).await {
                warn!(flow = %self.name, partitions = leaving.len(), "records still in flight as partitions stop: their positions stay before them (duplicates if they come back, no loss)");
            }
            let positions = self.final_positions(&leaving, "partitions stopped").await;
            let member = self.persist.member.clone();
            let stored = spawn_blocking(move || member.commit(&positions)).await.expect("position store panicked");
            if let Err(e) = stored {
                counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::POSITION_STORE).increment(1);
                warn!(flow = %self.name, error = %e, "cannot store the last positions of stopped partitions (they resume from earlier ones: duplicates, no loss)");
            }
        }
        for progress in &deleted {
            self.report_deleted(progress);
        }
        for progress in &leaving {
            self.forget(progress);
        }
    }

    /// A partition whose source topic was deleted: reported with the records it held that were
    /// never replicated (lost with the topic; counted as truncated).
    fn report_deleted(&self, progress: &SharedProgress) {
        let p = progress.lock().unwrap();
        let position = p.safe_position();
        let unreplicated = (p.high_watermark - position).max(0);
        if unreplicated > 0 {
            counter!(telemetry::TRUNCATED, "flow" => self.name.clone()).increment(unreplicated as u64);
            counter!(telemetry::ERRORS, "flow" => self.name.clone(), "kind" => kind::SOURCE_TRUNCATED).increment(1);
            error!(flow = %self.name, cluster = %self.config.source, topic = %p.source_topic, partition = p.partition, position, high_watermark = p.high_watermark, lost = unreplicated,
                "SOURCE TOPIC DELETED with records never replicated: they are lost; the remote topic keeps what was replicated");
        } else {
            warn!(flow = %self.name, topic = %p.source_topic, partition = p.partition, position, "source topic deleted: replication of it stopped (remote topic kept, every record replicated)");
        }
    }

    /// Asks each relay to stop sending these partitions and waits for the confirmations.
    pub(super) async fn release(&self, per_relay: Vec<Vec<SharedProgress>>) {
        let mut confirmations = Vec::new();
        for (relay, parts) in per_relay.into_iter().enumerate() {
            if !parts.is_empty() {
                let (done, confirmed) = channel();
                if self.parts.relays[relay].send(RelayCommand::Release(parts, done)).is_ok() {
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
    pub(super) fn forget(&mut self, progress: &SharedProgress) {
        self.parts.table.remove(progress);
        let p = progress.lock().unwrap();
        self.parts.released.insert((p.source_topic.to_string(), p.partition), (p.records, p.bytes));
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
fn relay_for(topic: &str, partition: i32, relays: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in topic.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    ((h.wrapping_add(partition as u64)) % relays as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_position_wins_unless_the_source_was_replaced_then_mm2_then_the_log_start() {
        assert_eq!(start_at(Some(40), None, Some(90)), StartAt::Stored(40), "Ferry's own position over MM2's");
        assert_eq!(start_at(Some(40), Some(0), None), StartAt::Replaced(0));
        assert_eq!(start_at(None, None, Some(90)), StartAt::Mm2(90));
        assert_eq!(start_at(None, Some(0), None), StartAt::LogStart, "no stored position: nothing was replaced");
    }

    #[test]
    fn relays_are_stable_per_partition_and_spread() {
        let mut per_relay = [0usize; 4];
        for p in 0..400 {
            let r = relay_for("orders", p, 4);
            assert_eq!(r, relay_for("orders", p, 4));
            per_relay[r] += 1;
        }
        assert!(per_relay.iter().all(|&n| n == 100), "{per_relay:?}");
        assert_eq!(relay_for("any", 7, 1), 0);
    }

    #[tokio::test]
    async fn draining_waits_for_records_in_flight_up_to_the_limit() {
        let p: SharedProgress = Arc::new(Mutex::new(PartitionProgress::new("t".into(), "a.t".into(), 0, 0)));
        p.lock().unwrap().inflight = 2;
        assert!(!wait_drained(std::slice::from_ref(&p), Duration::from_millis(20)).await);
        let acking = {
            let p = p.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                p.lock().unwrap().inflight = 0;
            })
        };
        assert!(wait_drained(&[p], Duration::from_secs(5)).await);
        acking.await.unwrap();
    }
}
