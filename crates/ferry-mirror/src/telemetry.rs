//! Metric names (`ferry_<subsystem>_<name>_<unit>`) and their descriptions.

pub const RECORDS: &str = "ferry_mirror_records_total";
pub const BYTES: &str = "ferry_mirror_bytes_total";
pub const LATENCY: &str = "ferry_mirror_replication_latency_seconds";
pub const LAG: &str = "ferry_mirror_lag_records";
pub const ERRORS: &str = "ferry_mirror_errors_total";
pub const TRUNCATED: &str = "ferry_mirror_source_truncated_records_total";
pub const FILTERED: &str = "ferry_mirror_records_filtered_total";
pub const HEARTBEATS: &str = "ferry_mirror_heartbeats_total";
pub const TOPICS: &str = "ferry_mirror_topics";
pub const PARTITIONS: &str = "ferry_mirror_partitions";
pub const FLOW_UP: &str = "ferry_mirror_flow_up";
pub const CHECKPOINTS: &str = "ferry_mirror_checkpoints_total";
pub const CHECKPOINT_AGE: &str = "ferry_mirror_checkpoint_age_seconds";
pub const GROUP_OFFSETS_SYNCED: &str = "ferry_mirror_group_offsets_synced_total";
pub const GROUPS: &str = "ferry_mirror_groups";
/// Partitions with records waiting and no progress for 30 s (each also a warning).
pub const STALLED_PARTITIONS: &str = "ferry_mirror_stalled_partitions";
/// Exactly-once mode: transactions ended, by `outcome` (`committed`, `aborted`).
pub const TRANSACTIONS: &str = "ferry_mirror_transactions_total";

/// Error kinds used as the `kind` label of [`ERRORS`].
pub mod kind {
    pub const SOURCE_UNREACHABLE: &str = "source_unreachable";
    pub const TARGET_UNREACHABLE: &str = "target_unreachable";
    pub const DELIVERY: &str = "delivery";
    pub const SOURCE_TRUNCATED: &str = "source_truncated";
    /// The source consumer stopped fetching a partition (restarted by the relay).
    pub const PARTITION_STOPPED: &str = "partition_stopped";
    /// A partition with records to replicate and no progress for a while (see the warning).
    pub const PARTITION_STALLED: &str = "partition_stalled";
    pub const TOPIC_ADMIN: &str = "topic_admin";
    pub const POSITION_STORE: &str = "position_store";
    pub const MISSING_PARTITIONS: &str = "missing_target_partitions";
    pub const REMOTE_TOPIC_DELETED: &str = "remote_topic_deleted";
    pub const CONSUME: &str = "consume";
    pub const OFFSET_SYNC: &str = "offset_sync";
    pub const CHECKPOINT: &str = "checkpoint";
    pub const GROUP_SYNC: &str = "group_sync";
}

/// Registers descriptions so `/metrics` documents every series.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RECORDS, Unit::Count, "Records replicated (acknowledged by the target), per flow, topic and partition");
    describe_counter!(BYTES, Unit::Bytes, "Key + value bytes replicated, per flow, topic and partition");
    describe_histogram!(LATENCY, Unit::Seconds, "Target acknowledgement time minus the source record timestamp (sampled 1 in 16 records)");
    describe_gauge!(LAG, Unit::Count, "Source end offset minus replicated position, per partition");
    describe_counter!(ERRORS, Unit::Count, "Errors by flow and kind");
    describe_counter!(TRUNCATED, Unit::Count, "Source records lost to retention/truncation before they were replicated");
    describe_counter!(FILTERED, Unit::Count, "Records not copied because they already passed through the target (identity policy loop prevention)");
    describe_counter!(HEARTBEATS, Unit::Count, "Heartbeats written to the target");
    describe_gauge!(TOPICS, Unit::Count, "Topics replicated by the flow");
    describe_gauge!(PARTITIONS, Unit::Count, "Partitions replicated by the flow");
    describe_counter!(CHECKPOINTS, Unit::Count, "Consumer-group checkpoints written to the target, per flow and group");
    describe_gauge!(CHECKPOINT_AGE, Unit::Seconds, "Time since the group's last checkpoint was written, per flow and group");
    describe_counter!(GROUP_OFFSETS_SYNCED, Unit::Count, "Translated offsets committed to groups on the target (sync.group.offsets.enabled), per flow and group");
    describe_gauge!(GROUPS, Unit::Count, "Consumer groups checkpointed by the flow");
    describe_gauge!(STALLED_PARTITIONS, Unit::Count, "Partitions with records waiting on the source and none replicated for 30 s, per flow");
    describe_gauge!(FLOW_UP, Unit::Count, "1 while the flow runs, 0 once it stopped on a fatal error");
}

/// The log-line throttle the engine's client contexts use (one place for it, in ferry-kafka).
pub(crate) use ferry_kafka::Throttle;
