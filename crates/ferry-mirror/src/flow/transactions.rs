//! Exactly-once mode, as the control task sees it: commits at each flush, handover and
//! shutdown, and what their outcomes mean for the flow (see [`crate::txn`] for the commit).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use metrics::counter;
use tokio::task::spawn_blocking;
use tracing::{debug, error, info, warn};

use super::Running;
use crate::telemetry;
use crate::txn::{self, Transactions};

pub(super) struct ExactlyOnce {
    /// The transactional producer that commits records with positions.
    pub(super) txn: Arc<Transactions>,
    /// The producer cannot go on; the flow stops with this reason.
    pub(super) fatal: Option<String>,
    pub(super) committed_once: bool,
    /// The periodic commit in flight (beside the control task) and when it started.
    pub(super) committing: Option<(Instant, JoinHandle<txn::Outcome>)>,
    /// Told when the commit in flight ends (the control task then handles its outcome).
    pub(super) commit_done: UnboundedSender<()>,
    /// The next commit aborts, for this reason (partitions were lost while one was in flight).
    pub(super) abort_next: Option<String>,
}

/// The key under which a postponed commit is reported (once, until a commit succeeds).
const COMMIT_POSTPONED: &str = "transaction commit postponed";

impl Running {
    /// Exactly-once mode, at each flush: starts a commit beside the control task (a commit can
    /// take many seconds when the target stalls: librdkafka's calls time out after 10 s each, and
    /// heartbeats, metrics reports and refreshes must go on meanwhile). One at a time: a tick
    /// while one is in flight starts none.
    pub(super) async fn start_commit(&mut self) {
        if self.eos.as_ref().is_none_or(|e| e.fatal.is_some() || e.committing.as_ref().is_some_and(|(_, h)| !h.is_finished())) {
            return;
        }
        self.finish_commit().await;
        let Some(eos) = self.eos.as_mut().filter(|e| e.fatal.is_none()) else { return };
        let (txn, done, abort) = (eos.txn.clone(), eos.commit_done.clone(), eos.abort_next.take());
        eos.committing = Some((
            Instant::now(),
            spawn_blocking(move || {
                let outcome = txn.commit(abort.as_deref());
                let _ = done.send(());
                outcome
            }),
        ));
    }

    /// Aborts the open transaction at once, or as the next commit when one is in flight.
    pub(super) async fn abort_next(&mut self, reason: &str) {
        if let Some(eos) = self.eos.as_mut() {
            eos.abort_next = Some(reason.to_string());
        }
        self.start_commit().await;
    }

    /// Waits for the commit in flight, if any, and handles its outcome: whether it committed.
    pub(super) async fn finish_commit(&mut self) -> Option<bool> {
        let (started, handle) = self.eos.as_mut()?.committing.take()?;
        let outcome = handle.await.expect("transaction commit panicked");
        Some(self.commit_outcome(outcome, started))
    }

    /// Exactly-once mode: commits the open transaction now (after the one in flight), or aborts
    /// it (`abort`: why) and rolls every partition back to its committed position. Nothing more
    /// once the producer failed. Returns whether everything sent is committed.
    pub(super) async fn commit_transaction(&mut self, abort: Option<String>) -> bool {
        self.finish_commit().await;
        let Some(eos) = self.eos.as_mut().filter(|e| e.fatal.is_none()) else { return false };
        let (txn, abort) = (eos.txn.clone(), abort.or(eos.abort_next.take()));
        let started = Instant::now();
        let outcome = spawn_blocking(move || txn.commit(abort.as_deref())).await.expect("transaction commit panicked");
        self.commit_outcome(outcome, started)
    }

    /// Says and counts what a commit did; whether everything sent is committed.
    fn commit_outcome(&mut self, outcome: txn::Outcome, started: Instant) -> bool {
        match outcome {
            txn::Outcome::Idle => true,
            txn::Outcome::Committed { partitions } => {
                counter!(telemetry::TRANSACTIONS, "flow" => self.name.clone(), "outcome" => "committed").increment(1);
                if self.reported.remove(COMMIT_POSTPONED) {
                    info!(flow = %self.name, took = ?started.elapsed(), "transactions commit again");
                }
                if self.eos.as_mut().is_some_and(|e| !std::mem::replace(&mut e.committed_once, true)) {
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
                if let Some(eos) = self.eos.as_mut() {
                    eos.fatal = Some(reason);
                }
                false
            }
            txn::Outcome::Postponed { reason } => {
                let name = self.name.clone();
                self.report_once(COMMIT_POSTPONED.to_string(), || warn!(flow = %name, %reason, "transaction commit postponed; records stay uncommitted until the target accepts them"));
                false
            }
        }
    }
}
