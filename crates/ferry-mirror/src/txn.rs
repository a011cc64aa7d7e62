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
//! its last committed position, from where the relays send again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::membership::Member;
use crate::offset_store::OffsetSyncWriter;
use crate::progress::ProgressTable;
use crate::relay::DeliveryContext;

/// How long a commit waits for the records in flight before it gives up and aborts.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// librdkafka's own timeout for each transactional call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Closed while a transaction commits or aborts: a relay holds it open (shared) for the whole
/// of one record, from reading the partition's state to handing the record to the producer, so
/// no record can slip into the next transaction from a position that was rolled back.
pub(crate) type Gate = RwLock<()>;

/// What a commit did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing was sent since the last commit: the (empty) transaction stays open.
    Idle,
    /// Records and the positions of this many partitions are committed.
    Committed { partitions: usize },
    /// The transaction was aborted and every partition rolled back to its committed position;
    /// `discarded` records had been sent in it (they are re-sent).
    Aborted { reason: String, discarded: u64 },
    /// The producer cannot go on (fenced, not authorized): the flow must stop.
    Fatal { reason: String },
}

/// How a failed transactional call is handled.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Failure {
    /// Call it again (librdkafka says it is retriable: a timeout, a coordinator moving).
    Retry,
    /// The transaction cannot commit; abort it and carry on.
    Abort,
    /// The producer is unusable.
    Fatal,
}

/// Classifies an error of a transactional call (pure; librdkafka flags the error itself).
pub(crate) fn failure(error: &KafkaError) -> Failure {
    use rdkafka::types::RDKafkaErrorCode::{UnsupportedFeature, UnsupportedVersion};
    // A broker without transactions (tansu 0.6.0 has no EndTxn): librdkafka calls that
    // retriable, but no retry can help.
    if matches!(error.rdkafka_error_code(), Some(UnsupportedFeature | UnsupportedVersion)) {
        return Failure::Fatal;
    }
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => Failure::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => Failure::Abort,
        KafkaError::Transaction(e) if e.is_retriable() => Failure::Retry,
        _ => match ferry_kafka::classify(error) {
            ferry_kafka::ErrorKind::Fatal => Failure::Fatal,
            ferry_kafka::ErrorKind::Retriable => Failure::Abort,
        },
    }
}

/// The flow's transactional producer and what it commits with.
pub(crate) struct Transactions {
    pub(crate) flow: String,
    pub(crate) producer: Arc<ThreadedProducer<DeliveryContext>>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) member: Arc<Member>,
    pub(crate) table: Arc<ProgressTable>,
    pub(crate) syncs: Arc<OffsetSyncWriter>,
    pub(crate) rewind_pending: Arc<AtomicBool>,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// Registers the transactional id (fencing any earlier producer with the same id and aborting
/// its open transaction) and opens the first transaction. Blocking.
pub(crate) fn init(producer: &ThreadedProducer<DeliveryContext>) -> Result<(), KafkaError> {
    producer.init_transactions(CALL_TIMEOUT)?;
    producer.begin_transaction()
}

impl Transactions {
    /// Commits the open transaction with the positions of every partition in the table, or
    /// aborts it and rolls back. `abort` forces the abort (partitions were lost: records of
    /// theirs in the transaction must never become visible). Blocking.
    pub(crate) fn commit(&self, abort: Option<&str>) -> Outcome {
        let _closed = self.gate.write().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = abort {
            return self.abort(reason.to_string());
        }
        if let Err(e) = self.producer.flush(FLUSH_TIMEOUT) {
            return self.abort(format!("records still in flight after {FLUSH_TIMEOUT:?}: {e}"));
        }
        // Taken under each partition's lock: the runs cover every record before the position.
        let mut positions = Vec::new();
        let mut history = Vec::new();
        let mut unsettled = None;
        for progress in self.table.all() {
            let p = progress.lock().unwrap();
            if p.inflight > 0 || p.rewind_to.is_some() {
                unsettled = Some(format!("a delivery to {}[{}] failed", p.remote_topic, p.partition));
            }
            let position = p.safe_position();
            if position != p.stored {
                positions.push((p.remote_topic.to_string(), p.partition, position));
            }
            if let Some(unsaved) = p.offset_map.unsaved() {
                history.push((p.source_topic.to_string(), p.partition, unsaved));
            }
        }
        if let Some(reason) = unsettled {
            return self.abort(reason);
        }
        if positions.is_empty() {
            return Outcome::Idle;
        }
        // The runs first (they live outside the transaction, often on the source cluster). If
        // they cannot be stored the records are committed anyway and the runs retried next
        // time: aborting would stop replication for a store that only serves checkpoints.
        if !history.is_empty() {
            match self.runtime.block_on(self.syncs.write(&history)) {
                Ok(()) => {
                    for (topic, partition, unsaved) in history {
                        if let Some(progress) = self.table.by_source(&topic, partition) {
                            progress.lock().unwrap().offset_map.mark_saved(unsaved.token);
                        }
                    }
                }
                Err(e) => warn!(flow = %self.flow, error = %e, "cannot store offset runs; committing the records, the runs are retried at the next commit"),
            }
        }
        let Some(group) = self.member.group_metadata() else {
            return self.abort("this process is not a member of the positions group".into());
        };
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, position) in &positions {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*position)) {
                return self.abort(format!("bad position {topic}[{partition}] {position}: {e}"));
            }
        }
        if let Err(outcome) = self.call("send the positions", || self.producer.send_offsets_to_transaction(&tpl, &group, CALL_TIMEOUT)) {
            return outcome;
        }
        if let Err(outcome) = self.call("commit", || self.producer.commit_transaction(CALL_TIMEOUT)) {
            return outcome;
        }
        for (topic, partition, position) in &positions {
            if let Some(progress) = self.table.get(topic, *partition) {
                progress.lock().unwrap().stored = *position;
            }
        }
        if let Err(e) = self.producer.begin_transaction() {
            return Outcome::Fatal { reason: format!("cannot begin the next transaction: {e}") };
        }
        Outcome::Committed { partitions: positions.len() }
    }

    /// Runs a transactional call, retrying what librdkafka calls retriable (3 attempts); a
    /// call that cannot succeed aborts the transaction.
    fn call(&self, what: &str, f: impl Fn() -> Result<(), KafkaError>) -> Result<(), Outcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f() {
                Ok(()) => return Ok(()),
                Err(e) => match failure(&e) {
                    Failure::Retry if attempt < 3 => {
                        info!(flow = %self.flow, error = %e, attempt, "transaction {what}: retrying");
                    }
                    Failure::Fatal => return Err(Outcome::Fatal { reason: format!("cannot {what}: {e}") }),
                    Failure::Retry | Failure::Abort => return Err(self.abort(format!("cannot {what}: {e}"))),
                },
            }
        }
    }

    fn abort(&self, reason: String) -> Outcome {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.producer.abort_transaction(CALL_TIMEOUT) {
                Ok(()) => break,
                Err(e) if failure(&e) == Failure::Retry && attempt < 5 => {
                    info!(flow = %self.flow, error = %e, attempt, "transaction abort: retrying");
                }
                Err(e) => return Outcome::Fatal { reason: format!("{reason}; then the abort failed: {e}") },
            }
        }
        let discarded = roll_back(&self.table);
        self.rewind_pending.store(true, Ordering::Release);
        if let Err(e) = self.producer.begin_transaction() {
            return Outcome::Fatal { reason: format!("{reason}; then no transaction could begin: {e}") };
        }
        Outcome::Aborted { reason, discarded }
    }
}

/// After an abort: every partition goes back to its last committed position. The relay seeks
/// there in a new epoch, so acknowledgements and failures of the aborted records, which arrive
/// late, change nothing any more. Returns how many records were sent after those positions.
pub(crate) fn roll_back(table: &ProgressTable) -> u64 {
    let mut discarded = 0;
    for progress in table.all() {
        let mut p = progress.lock().unwrap();
        discarded += (p.consumed_next - p.stored).max(0) as u64;
        p.rewind_to = Some(p.stored);
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
    fn a_broker_without_transactions_is_fatal_other_failures_abort() {
        let unsupported = KafkaError::MessageProduction(RDKafkaErrorCode::UnsupportedFeature);
        assert_eq!(failure(&unsupported), Failure::Fatal);
        let denied = KafkaError::MessageProduction(RDKafkaErrorCode::TransactionalIdAuthorizationFailed);
        assert_eq!(failure(&denied), Failure::Fatal);
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
        assert_eq!(idle.lock().unwrap().take_rewind(), Some(7), "an idle partition restarts where it is");
    }
}
