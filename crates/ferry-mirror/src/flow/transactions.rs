//! Exactly-once mode, as the control task sees it: commits at each flush, handover and
//! shutdown, and what their outcomes mean for the flow (see [`crate::txn`] for the commit).

use std::sync::Arc;
use std::time::Instant;

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
}

/// The key under which a postponed commit is reported (once, until a commit succeeds).
const COMMIT_POSTPONED: &str = "transaction commit postponed";

impl Running {
    /// Exactly-once mode: commits the open transaction, or aborts it (`abort`: why) and rolls
    /// every partition back to its committed position. Nothing more once the producer failed.
    /// Returns whether everything sent is committed.
    pub(super) async fn commit_transaction(&mut self, abort: Option<String>) -> bool {
        let Some(txn) = self.eos.as_ref().filter(|e| e.fatal.is_none()).map(|e| e.txn.clone()) else { return false };
        let started = Instant::now();
        let outcome = spawn_blocking(move || txn.commit(abort.as_deref())).await.expect("transaction commit panicked");
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
