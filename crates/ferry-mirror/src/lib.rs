//! Ferry's replication engine, the MirrorMaker 2 equivalent.
//!
//! Pure decisions live in IO-free modules with unit tests: [`config`] (the MM2 properties
//! file), [`replication_policy`] (remote topic names, cycles), [`topic_plan`] (which topics,
//! what to create or change), [`offset_map`] (exact offset translation), [`heartbeat`] (MM2's
//! record format), [`provenance`] (identity-policy loop prevention). The engine ([`Mirror`])
//! wires them to Kafka: one control task per flow, relay threads on the data path.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let text = "clusters = a, b\na.bootstrap.servers = 127.0.0.1:9092\n\
//!             b.bootstrap.servers = 127.0.0.1:9093\na->b.enabled = true\n";
//! let config = ferry_mirror::config::MirrorConfig::parse("mm2.properties", text)?;
//! let mirror = ferry_mirror::Mirror::new(config);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! mirror.run(cancel).await?;
//! # Ok(()) }
//! ```

pub mod acl_sync;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod failover;
mod flow;
mod membership;
pub mod heartbeat;
mod mm2_codec;
pub mod mm2_offsets;
pub mod offset_map;
pub mod offset_store;
pub mod positions;
mod progress;
pub mod provenance;
pub mod records;
pub mod report;
mod relay;
mod source_position;
mod txn;
pub mod replication_policy;
pub mod status;
pub mod telemetry;
pub mod topic_plan;

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

pub use crate::config::{FlowConfig, MirrorConfig};
pub use crate::offset_map::OffsetMap;
use crate::progress::ProgressTable;

/// Ferry's data-path client defaults (overridable with `<alias>.consumer.*`).
pub mod relay_defaults {
    /// Upper bound on how long a fetch waits for data. Kafka answers as soon as data arrives,
    /// so this only matters on idle partitions (where it costs a small request every 20 ms);
    /// brokers that hold fetches for the full wait (tansu 0.6.0) need it low for low latency.
    pub const FETCH_WAIT_MAX_MS: &str = "20";
    /// librdkafka's pause after the local fetch queue filled up (its default: 1000 ms).
    pub const FETCH_QUEUE_BACKOFF_MS: &str = "100";
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] ferry_kafka::Error),
    #[error("every flow stopped: {0}")]
    AllFlowsStopped(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The flow's transactional producer cannot go on (exactly-once mode).
    #[error("exactly-once on cluster {cluster} ({address}): {reason}")]
    Transactions { cluster: String, address: String, reason: String },
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka(e) => e.is_retriable(),
            _ => false,
        }
    }
}

/// What a flow is doing, for status displays.
#[derive(Debug, Clone, Default)]
pub struct FlowStatus {
    pub topics: Vec<String>,
    /// Records acknowledged by the target since start.
    pub records: u64,
    pub lag: i64,
    /// Replication latency of the last sampled record, in milliseconds.
    pub last_latency_ms: Option<i64>,
    pub last_heartbeat_ms: Option<i64>,
    /// Why the last refresh failed, while it keeps failing.
    pub failing: Option<String>,
    /// Consumer groups checkpointed, and checkpoints written since start.
    pub groups: usize,
    pub checkpoints: u64,
    /// Per checkpointed group: when its checkpoints were last brought up to date (Unix ms).
    pub checkpoints_checked_ms: std::collections::BTreeMap<String, i64>,
}

/// A handle on a running flow: status and the exact offset mapping (the checkpoint hook).
#[derive(Clone)]
pub struct FlowHandle {
    pub name: String,
    table: Arc<ProgressTable>,
    status: Arc<Mutex<FlowStatus>>,
}

impl FlowHandle {
    pub fn status(&self) -> FlowStatus {
        self.status.lock().unwrap().clone()
    }

    /// The exact source -> target offset map of a replicated partition (remote topic name).
    pub fn offset_map(&self, remote_topic: &str, partition: i32) -> Option<OffsetMap> {
        Some(self.table.get(remote_topic, partition)?.lock().unwrap().offset_map.clone())
    }
}

/// The replication engine for all enabled flows of a configuration.
pub struct Mirror {
    config: MirrorConfig,
    handles: Vec<FlowHandle>,
}

impl Mirror {
    pub fn new(config: MirrorConfig) -> Self {
        let handles = config
            .flows
            .iter()
            .map(|f| FlowHandle { name: f.name(), table: Arc::default(), status: Arc::default() })
            .collect();
        Mirror { config, handles }
    }

    pub fn flows(&self) -> &[FlowHandle] {
        &self.handles
    }

    /// Runs every flow until `cancel`; a flow that fails fatally stops alone, loudly. Returns
    /// an error only when every flow has stopped on an error.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        telemetry::describe();
        let mut tasks = tokio::task::JoinSet::new();
        let started_ms = relay::now_ms();
        let process = report::process_id(started_ms);
        for (flow, handle) in self.config.flows.iter().zip(&self.handles) {
            // Where the reverse flow keeps its offset runs (for failback translation): its own
            // setting if this file configures it, else the same as this flow's.
            let reverse_location = self
                .config
                .flows
                .iter()
                .find(|f| f.source == flow.target && f.target == flow.source)
                .map_or(flow.offset_syncs_location, |f| f.offset_syncs_location);
            let f = flow::Flow {
                reverse_location,
                config: flow.clone(),
                file: self.config.file.clone(),
                process: process.clone(),
                started_ms,
                source: self.config.cluster(&flow.source).clone(),
                target: self.config.cluster(&flow.target).clone(),
                table: handle.table.clone(),
                status: handle.status.clone(),
            };
            let name = flow.name();
            let cancel = cancel.clone();
            tasks.spawn(async move { (name, f.run(cancel).await) });
        }
        let mut failures = Vec::new();
        let total = tasks.len();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => failures.push(format!("{name}: {e}")),
                Err(e) => failures.push(format!("flow task panicked: {e}")),
            }
        }
        if !failures.is_empty() && failures.len() == total {
            return Err(Error::AllFlowsStopped(failures.join("; ")));
        }
        Ok(())
    }
}
