//! Exactly-once mode (`exactly.once.support = enabled`): the flow's records and the source
//! positions they advance are committed in one Kafka transaction on the target.
//!
//! The positions are offsets of the positions group on the target, so the transactional
//! producer commits them with `send_offsets_to_transaction` and the group member's metadata
//! (KIP-447): a process that is no longer a member of the current generation cannot commit,
//! its transaction aborts, and its records are never visible to `read_committed` readers.
//!
//! One transaction is open at a time per flow and process. Every `offset.flush.interval.ms`,
//! at a handover and at shutdown, [`Transactions::commit`] closes the [`Gate`] (no relay sends
//! while it is closed), waits for every record in flight, stores the offset runs, commits the
//! positions with the records, and opens the next transaction. Whatever goes wrong before the
//! commit is acknowledged aborts the transaction, and [`roll_back`] returns every partition to
//! its last committed position, from where the relays send again. A producer that can no
//! longer be used (fenced after its transaction timed out over a stalled target, or any other
//! fatal producer error) is replaced by a new one under the same transactional id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::membership::Member;
use crate::offset_store::OffsetSyncWriter;
use crate::progress::ProgressTable;
use crate::relay::DataProducer;

/// How long a commit waits for the records in flight before it gives up and aborts.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// librdkafka's own timeout for each transactional call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The transactional producer, behind a lock that is the gate between relays and commits: a
/// relay holds it (shared) for the whole of one record, from reading the partition's state to
/// handing the record to the producer, and a commit holds it (exclusive) from the flush to the
/// next `begin_transaction`. So no record slips into the next transaction from a position that
/// was rolled back, and a replaced producer is never used half-way.
pub(crate) type Gate = RwLock<Arc<DataProducer>>;

/// Makes a new transactional producer (same configuration and transactional id).
pub(crate) type ProducerFactory = Box<dyn Fn() -> Result<DataProducer, KafkaError> + Send + Sync>;

/// What a commit did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing was sent since the last commit: the (empty) transaction stays open.
    Idle,
    /// Records and the positions of this many partitions are committed.
    Committed { partitions: usize },
    /// The transaction was aborted (or its producer replaced) and every partition rolled back
    /// to its committed position; `discarded` records had been sent in it (they are re-sent).
    Aborted { reason: String, discarded: u64 },
    /// The target refuses transactions (not supported, not authorized): the flow must stop.
    Fatal { reason: String },
    /// The gate could not be closed in time: a relay is still handing a record to a producer
    /// whose queue is full (the target accepts nothing). The transaction stays open; the flow
    /// goes on (heartbeats, metrics, refreshes) and commits later.
    Postponed { reason: String },
}

/// How long a commit waits to close the gate before it postpones itself.
const GATE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a failed transactional call is handled.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Failure {
    /// Call it again (librdkafka says it is retriable: a timeout, a coordinator moving).
    Retry,
    /// The transaction cannot commit; abort it and carry on.
    Abort,
    /// The producer is unusable (fenced, fatal): replace it.
    Replace,
    /// No retry and no new producer can help.
    Fatal,
}

/// Classifies an error of a transactional call (pure; librdkafka flags the error itself).
pub(crate) fn failure(error: &KafkaError) -> Failure {
    use rdkafka::types::RDKafkaErrorCode::{UnsupportedFeature, UnsupportedVersion};
    // A broker without transactions (tansu 0.6.0 has no EndTxn): librdkafka calls that
    // retriable, but no retry can help. Authorization and configuration errors neither.
    if matches!(error.rdkafka_error_code(), Some(UnsupportedFeature | UnsupportedVersion))
        || (ferry_kafka::classify(error) == ferry_kafka::ErrorKind::Fatal && !producer_failed(error))
    {
        return Failure::Fatal;
    }
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => Failure::Replace,
        KafkaError::Transaction(e) if e.txn_requires_abort() => Failure::Abort,
        KafkaError::Transaction(e) if e.is_retriable() => Failure::Retry,
        _ if producer_failed(error) => Failure::Replace,
        _ => Failure::Abort,
    }
}

/// Errors that mean the producer itself is done for (librdkafka's fatal error state, fencing),
/// not that the cluster refuses: a new producer fixes them.
pub(crate) fn producer_failed(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{Fatal, Fenced, InvalidProducerEpoch, ProducerFenced};
    matches!(error.rdkafka_error_code(), Some(Fatal | Fenced | InvalidProducerEpoch | ProducerFenced))
}

/// Waits until every record handed to the producer is acknowledged and its delivery report
/// served (the positions come from those reports). Not rust-rdkafka's `flush`: its loop waits
/// on the event queue in 100 ms steps, which the producer's own polling thread drains first,
/// so every flush took at least 100 ms (measured: commits every 100 ms ran at 1 % throughput).
fn drained(producer: &DataProducer, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

/// Registers the transactional id (fencing any earlier producer with the same id and aborting
/// its open transaction) and opens the first transaction. Blocking.
pub(crate) fn init(producer: &DataProducer) -> Result<(), KafkaError> {
    producer.init_transactions(CALL_TIMEOUT)?;
    producer.begin_transaction()
}

/// The flow's transactional producer and what it commits with.
pub(crate) struct Transactions {
    pub(crate) flow: String,
    pub(crate) gate: Arc<Gate>,
    pub(crate) factory: ProducerFactory,
    pub(crate) member: Arc<Member>,
    pub(crate) table: Arc<ProgressTable>,
    pub(crate) syncs: Arc<OffsetSyncWriter>,
    pub(crate) rewind_pending: Arc<AtomicBool>,
    pub(crate) runtime: tokio::runtime::Handle,
    /// The producer in the gate failed and could not be replaced yet.
    pub(crate) broken: AtomicBool,
}

type Closed<'a> = std::sync::RwLockWriteGuard<'a, Arc<DataProducer>>;

/// Closes the gate (takes it exclusively) within `timeout`, or `None`. A relay holds the gate
/// for the whole of one record, and while the target accepts nothing it waits inside on a full
/// queue: an unbounded wait here froze the flow's task with it.
fn close_gate<T>(gate: &RwLock<T>, timeout: Duration) -> Option<std::sync::RwLockWriteGuard<'_, T>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match gate.try_write() {
            Ok(closed) => return Some(closed),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() >= deadline => return None,
            Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

impl Transactions {
    /// Commits the open transaction with the positions of every partition in the table, or
    /// aborts it and rolls back. `abort` forces the abort (partitions were lost: records of
    /// theirs in the transaction must never become visible). Blocking.
    pub(crate) fn commit(&self, abort: Option<&str>) -> Outcome {
        let Some(mut closed) = close_gate(&self.gate, GATE_TIMEOUT) else {
            return Outcome::Postponed { reason: format!("the gate stayed open for {GATE_TIMEOUT:?}: the target accepts no records (the producer's queue is full)") };
        };
        if self.broken.load(Ordering::Acquire) {
            return self.replace(&mut closed, "the previous producer failed".into());
        }
        // A producer fenced or failed while sending has nothing to commit (its records failed,
        // the relays went back to the committed positions), so nothing below would notice it.
        if let Some((code, reason)) = closed.client().fatal_error() {
            return self.replace(&mut closed, format!("the producer failed: {code:?}: {reason}"));
        }
        if let Some(reason) = abort {
            return self.abort(&mut closed, reason.to_string());
        }
        // The generation as the commit starts: at a handover the member is still inside its
        // revoke callback, so a commit that outlasts the callback's wait carries the old
        // generation and is refused, never applied to partitions that moved meanwhile.
        let group = self.member.group_metadata();
        if !drained(&closed, FLUSH_TIMEOUT) {
            return self.abort(&mut closed, format!("records still in flight after {FLUSH_TIMEOUT:?}"));
        }
        let mut positions = Vec::new();
        let mut history = Vec::new();
        let mut unsettled = None;
        for progress in self.table.all() {
            let mut p = progress.lock().unwrap();
            if p.inflight > 0 || p.rewind_to.is_some() {
                unsettled = Some(format!("a delivery to {}[{}] failed", p.remote_topic, p.partition));
            }
            let (runs, position) = p.pending_store();
            history.extend(runs);
            positions.extend(position);
        }
        if let Some(reason) = unsettled {
            return self.abort(&mut closed, reason);
        }
        if positions.is_empty() {
            return Outcome::Idle;
        }
        // The runs first (they live outside the transaction, often on the source cluster). If
        // they cannot be stored the records are committed anyway and the runs retried next
        // time: aborting would stop replication for a store that only serves checkpoints.
        if !history.is_empty() {
            match self.runtime.block_on(self.syncs.write(&history)) {
                Ok(()) => self.table.runs_saved(history),
                Err(e) => {
                    metrics::counter!(crate::telemetry::ERRORS, "flow" => self.flow.clone(), "kind" => crate::telemetry::kind::OFFSET_SYNC).increment(1);
                    warn!(flow = %self.flow, error = %e, "cannot store offset runs; committing the records, the runs are retried at the next commit");
                }
            }
        }
        let Some(group) = group else {
            return self.abort(&mut closed, "this process is not a member of the positions group".into());
        };
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, position) in &positions {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*position)) {
                return self.abort(&mut closed, format!("bad position {topic}[{partition}] {position}: {e}"));
            }
        }
        if let Err(outcome) = self.call(&mut closed, "send the positions", |p| p.send_offsets_to_transaction(&tpl, &group, CALL_TIMEOUT)) {
            return outcome;
        }
        if let Err(outcome) = self.call(&mut closed, "commit", |p| p.commit_transaction(CALL_TIMEOUT)) {
            return outcome;
        }
        for (topic, partition, position) in &positions {
            if let Some(progress) = self.table.get(topic, *partition) {
                progress.lock().unwrap().stored = *position;
            }
        }
        for progress in self.table.all() {
            progress.lock().unwrap().transaction_committed();
        }
        if let Err(e) = closed.begin_transaction() {
            return self.replace(&mut closed, format!("cannot begin the next transaction: {e}"));
        }
        Outcome::Committed { partitions: positions.len() }
    }

    /// Runs a transactional call, retrying what librdkafka calls retriable (3 attempts); a
    /// call that cannot succeed aborts the transaction.
    fn call(&self, closed: &mut Closed<'_>, what: &str, f: impl Fn(&DataProducer) -> Result<(), KafkaError>) -> Result<(), Outcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f(closed) {
                Ok(()) => return Ok(()),
                Err(e) => match failure(&e) {
                    Failure::Retry if attempt < 3 => {
                        info!(flow = %self.flow, error = %e, attempt, "transaction {what}: retrying");
                    }
                    Failure::Fatal => return Err(Outcome::Fatal { reason: format!("cannot {what}: {e}") }),
                    Failure::Replace => return Err(self.replace(closed, format!("cannot {what}: {e}"))),
                    Failure::Retry | Failure::Abort => return Err(self.abort(closed, format!("cannot {what}: {e}"))),
                },
            }
        }
    }

    fn abort(&self, closed: &mut Closed<'_>, reason: String) -> Outcome {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match closed.abort_transaction(CALL_TIMEOUT) {
                Ok(()) => break,
                Err(e) => match failure(&e) {
                    Failure::Retry if attempt < 5 => info!(flow = %self.flow, error = %e, attempt, "transaction abort: retrying"),
                    Failure::Fatal => return Outcome::Fatal { reason: format!("{reason}; then the abort failed: {e}") },
                    _ => return self.replace(closed, format!("{reason}; then the abort failed: {e}")),
                },
            }
        }
        let discarded = self.roll_back();
        if let Err(e) = closed.begin_transaction() {
            return self.replace(closed, format!("{reason}; then no transaction could begin: {e}"));
        }
        Outcome::Aborted { reason, discarded }
    }

    /// Rolls every partition back ([`roll_back`]) and has the relays seek there.
    fn roll_back(&self) -> u64 {
        let discarded = roll_back(&self.table);
        self.rewind_pending.store(true, Ordering::Release);
        discarded
    }

    /// Replaces a failed producer: the new one registers the same transactional id, which
    /// fences the old one and aborts its open transaction on the coordinator. Every partition
    /// rolls back. If the new one cannot start (target unreachable), the next commit tries again.
    fn replace(&self, closed: &mut Closed<'_>, reason: String) -> Outcome {
        let discarded = self.roll_back();
        let fresh = match (self.factory)() {
            Ok(p) => p,
            Err(e) => return Outcome::Fatal { reason: format!("{reason}; then no new producer could be created: {e}") },
        };
        match init(&fresh) {
            Ok(()) => {
                // Dropping the old producer purges what it still held and serves those delivery
                // reports (for at most 500 ms). Any it did not serve never come: nothing of the
                // old producer is in flight any more, and the relays send nothing until the gate
                // opens.
                **closed = Arc::new(fresh);
                for progress in self.table.all() {
                    progress.lock().unwrap().inflight = 0;
                }
                self.broken.store(false, Ordering::Release);
                Outcome::Aborted { reason: format!("{reason}; producer replaced"), discarded }
            }
            Err(e) if failure(&e) == Failure::Fatal => Outcome::Fatal { reason: format!("{reason}; then the new producer was refused: {e}") },
            Err(e) => {
                self.broken.store(true, Ordering::Release);
                Outcome::Aborted { reason: format!("{reason}; a new producer cannot start yet ({e}), retried at the next commit"), discarded }
            }
        }
    }
}

/// After an abort: every partition goes back to its last committed position, in a new epoch,
/// so acknowledgements and failures of the aborted records, which arrive late, change nothing
/// any more; the copies of them already in the offset map are dropped (no `read_committed`
/// reader sees them, so translation must not count them). Returns how many records were sent
/// after the committed positions.
pub(crate) fn roll_back(table: &ProgressTable) -> u64 {
    let mut discarded = 0;
    for progress in table.all() {
        let mut p = progress.lock().unwrap();
        discarded += (p.consumed_next - p.stored).max(0) as u64;
        p.uncommitted = (0, 0);
        p.epoch = p.epoch.wrapping_add(1);
        let stored = p.stored;
        p.offset_map.discard_from(stored);
        // Nothing sent since the committed position (a partition just assigned): its consumer
        // is already there. Repositioning it anyway added an unassign and assign of it to the
        // handover's, in the same second.
        if p.consumed_next != stored || p.inflight > 0 {
            p.rewind_to = Some(stored);
        }
    }
    discarded
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rdkafka::types::RDKafkaErrorCode;

    use super::*;
    use crate::progress::PartitionProgress;

    #[test]
    fn a_gate_held_by_a_stuck_relay_postpones_the_commit_instead_of_waiting_forever() {
        let gate = Arc::new(RwLock::new(0u8));
        let held = gate.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let relay = std::thread::spawn(move || {
            let _pass = held.read().unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(600));
        });
        rx.recv().unwrap();
        let started = std::time::Instant::now();
        assert!(close_gate(&gate, Duration::from_millis(200)).is_none());
        assert!(started.elapsed() < Duration::from_millis(500));
        relay.join().unwrap();
        assert!(close_gate(&gate, Duration::from_millis(200)).is_some(), "closes once the relay lets go");
    }

    #[test]
    fn a_broker_without_transactions_is_fatal_a_failed_producer_is_replaced_others_abort() {
        let unsupported = KafkaError::MessageProduction(RDKafkaErrorCode::UnsupportedFeature);
        assert_eq!(failure(&unsupported), Failure::Fatal);
        let denied = KafkaError::MessageProduction(RDKafkaErrorCode::TransactionalIdAuthorizationFailed);
        assert_eq!(failure(&denied), Failure::Fatal);
        // The producer itself is done for (fenced after a transaction timeout): a new one helps.
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced);
        assert_eq!(failure(&fenced), Failure::Replace);
        let fatal_state = KafkaError::MessageProduction(RDKafkaErrorCode::Fatal);
        assert_eq!(failure(&fatal_state), Failure::Replace);
        // ... and such a failure never stops a partition for good in exactly-once mode.
        assert!(!crate::relay::stops_partition(&fatal_state, true));
        assert!(crate::relay::stops_partition(&fatal_state, false));
        assert!(crate::relay::stops_partition(&denied, true));
        // A flush that timed out: the transaction cannot commit, but the producer is fine.
        let timed_out = KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut);
        assert_eq!(failure(&timed_out), Failure::Abort);
    }

    #[test]
    fn roll_back_returns_every_partition_to_its_committed_position() {
        let table = ProgressTable::default();
        let mut p = PartitionProgress::new("orders".into(), "a.orders".into(), 0, 100);
        // 100 committed; 30 more sent in the open transaction, 20 of them acknowledged.
        for offset in 100..130 {
            p.inflight += 1;
            p.consumed_next = offset + 1;
        }
        for offset in 100..120 {
            p.acknowledged(0, offset, offset + 5, 10);
        }
        let p = Arc::new(Mutex::new(p));
        table.insert(p.clone());
        let idle = Arc::new(Mutex::new(PartitionProgress::new("orders".into(), "a.orders".into(), 1, 7)));
        table.insert(idle.clone());

        assert_eq!(roll_back(&table), 30, "records sent since the committed positions");
        let mut p = p.lock().unwrap();
        assert_eq!(p.safe_position(), 100, "nothing past the committed position counts as replicated");
        // The relay seeks back in a new epoch; late acknowledgements of aborted records do not
        // move the position.
        assert_eq!(p.take_rewind(), Some(100));
        let old_epoch = p.epoch.wrapping_sub(1);
        p.acknowledged(old_epoch, 125, 130, 10);
        assert_eq!((p.consumed_next, p.acked_next), (100, 100));
        assert_eq!(idle.lock().unwrap().take_rewind(), None, "a partition that sent nothing since its committed position is not repositioned");
    }

    #[test]
    fn records_count_once_their_transaction_commits() {
        let table = ProgressTable::default();
        let mut p = PartitionProgress::new("orders".into(), "a.orders".into(), 0, 0);
        p.transactional = true;
        let p = Arc::new(Mutex::new(p));
        table.insert(p.clone());
        let send = |from: i64, to: i64| {
            let mut p = p.lock().unwrap();
            for offset in from..to {
                p.consumed_next = offset + 1;
                let epoch = p.epoch;
                p.acknowledged(epoch, offset, offset, 10);
            }
        };
        send(0, 5);
        assert_eq!(p.lock().unwrap().records, 0, "not before the commit");
        p.lock().unwrap().stored = 5;
        p.lock().unwrap().transaction_committed();
        let counted = {
            let p = p.lock().unwrap();
            (p.records, p.bytes)
        };
        assert_eq!(counted, (5, 50));
        send(5, 8);
        assert_eq!(roll_back(&table), 3);
        p.lock().unwrap().transaction_committed();
        assert_eq!(p.lock().unwrap().records, 5, "an aborted transaction's records never count");
        // A late acknowledgement of an aborted record neither counts nor enters the offset map.
        let mut q = p.lock().unwrap();
        let stale = q.epoch.wrapping_sub(1);
        q.acknowledged(stale, 7, 7, 10);
        assert_eq!(q.uncommitted, (0, 0));
        assert_eq!(q.offset_map.runs().map(|r| r.source_end()).max(), Some(5), "only the committed copies are mapped");
    }
}
