//! Storing progress (at-least-once mode): the offset runs, then the positions they cover, in
//! the positions group on the target. One store at a time, beside the control task.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use metrics::counter;
use tokio::task::spawn_blocking;
use tracing::{info, warn};

use super::Running;
use crate::membership::Member;
use crate::offset_store::OffsetSyncWriter;
use crate::positions::PositionStore;
use crate::progress::{Position, ProgressTable, UnsavedRuns};
use crate::telemetry::{self, kind};

pub(super) struct Persistence {
    pub(super) positions: Arc<PositionStore>,
    /// This process's member of the positions group: commits positions, holds ownership.
    pub(super) member: Arc<Member>,
    /// Offset runs and MM2 offset syncs, on the `offset-syncs.topic.location` cluster.
    pub(super) syncs: Arc<OffsetSyncWriter>,
    pub(super) syncs_admin: Arc<ferry_kafka::Admin>,
    /// The store of offset runs and positions in flight.
    pub(super) persisting: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stores safe positions and publishes per-partition metrics.
    pub(super) async fn flush(&mut self) {
        if self.eos.is_some() {
            // Exactly-once: records, runs and positions are committed together, beside this task.
            self.start_commit().await;
        }
        // Storing runs and positions takes broker round trips; it runs beside the control task
        // so metrics, heartbeats and refreshes keep their cadence. One store at a time.
        let persist = match &self.persist.persisting {
            _ if self.eos.is_some() => false,
            Some(h) if !h.is_finished() => false,
            _ => {
                self.finish_persisting().await;
                true
            }
        };
        let mut to_store = Vec::new();
        let mut history = Vec::new();
        let (mut records, mut lag) = (0u64, 0i64);

        for a in self.parts.assigned.values_mut() {
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
        let latency = self.reports.last_latency_ms.load(Ordering::Relaxed);
        self.set_status(|s| {
            s.records = records;
            s.lag = lag;
            s.last_latency_ms = (latency >= 0).then_some(latency);
        });
        if history.is_empty() && to_store.is_empty() {
            return;
        }
        let (name, syncs, member, table) = (self.name.clone(), self.persist.syncs.clone(), self.persist.member.clone(), self.parts.table.clone());
        self.persist.persisting = Some(tokio::spawn(persist_progress(name, syncs, member, table, history, to_store)));
    }

    /// Waits for the store in flight, if any.
    pub(super) async fn finish_persisting(&mut self) {
        if let Some(h) = self.persist.persisting.take() {
            let _ = h.await;
        }
    }
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
