//! What the flow knows of its past: its stored offset runs (read once, then followed for
//! partitions taken over from another process), MirrorMaker 2's progress for partitions Ferry
//! never replicated, and whether a stored position still points into the same source log.

use std::collections::HashMap;
use std::time::Duration;

use metrics::counter;
use tokio::task::spawn_blocking;
use tracing::{error, info, warn};

use super::Running;
use crate::mm2_offsets::Mm2Offsets;
use crate::offset_store::{RunLog, TopicTail};
use crate::telemetry::{self, kind};
use crate::Result;

#[derive(Default)]
pub(super) struct History {
    /// This flow's stored offset runs, read once before the first partition is assigned.
    pub(super) log: Option<RunLog>,
    /// Follows the offset-runs topic: partitions taken over from another process need the runs
    /// it stored.
    pub(super) tail: Option<TopicTail>,
    /// The history was read to its end and no partition was assigned since.
    pub(super) current: bool,
    /// MirrorMaker 2's progress for this source on the target (`mm2-offsets.<source>.internal`),
    /// read when a partition first has no stored position: partitions MM2 replicated resume
    /// where it stopped. `Some(None)`: read, MM2 never ran here.
    pub(super) mm2: Option<Option<Mm2Offsets>>,
}

impl History {
    /// Reads the runs stored since the history was last read, unless it is current: partitions
    /// taken over from another process need the runs it stored up to its handover (it stores
    /// them before it commits the positions).
    pub(super) async fn catch_up(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.current, false) {
            return Ok(());
        }
        if let (Some(mut tail), Some(mut log)) = (self.tail.take(), self.log.take()) {
            let (tail, log, read) = spawn_blocking(move || {
                let read = tail.catch_up(Duration::from_secs(30), |k, v, _| log.apply(k, v));
                (tail, log, read)
            })
            .await
            .expect("history read panicked");
            self.tail = Some(tail);
            self.log = Some(log);
            read?;
        }
        Ok(())
    }
}

impl Running {
    /// MM2's Connect offsets for this flow's source on the target; `None` when there are none
    /// (or they cannot be read: said, and partitions start as new ones would).
    pub(super) async fn read_mm2_offsets(&mut self) -> Option<Mm2Offsets> {
        let (admin, target, source) = (self.clusters.target_admin.clone(), self.clusters.target_admin.cluster().clone(), self.config.source.clone());
        let read = spawn_blocking(move || {
            let topics: Vec<String> = admin.list_topics()?.into_iter().map(|t| t.name).collect();
            crate::mm2_offsets::read(&target, &source, &topics)
        });
        match read.await {
            Ok(Ok(Some(offsets))) => {
                info!(flow = %self.name, topic = %crate::mm2_offsets::offsets_topic(&self.config.source), partitions = offsets.len(),
                    "found MirrorMaker 2's progress on the target: partitions it replicated resume where it stopped");
                Some(offsets)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                warn!(flow = %self.name, error = %e, "cannot read MirrorMaker 2's offsets on the target; partitions without a stored position start at the source log start");
                None
            }
            Err(_) => None,
        }
    }

    /// Where partitions MM2 replicated resume: after the last record MM2 copied, checked
    /// against the remote topic's last record (16 partitions at a time).
    pub(super) async fn take_over_from_mm2(&self, partitions: Vec<(String, i32, String, i64)>) -> HashMap<(String, i32), i64> {
        use crate::mm2_offsets::{Takeover, TakeoverCheck};
        let mut out = HashMap::new();
        for chunk in partitions.chunks(16) {
            let mut tasks = tokio::task::JoinSet::new();
            for (topic, partition, remote, next) in chunk.iter().cloned() {
                // MM2's committed point stands if the check itself fails.
                out.insert((topic.clone(), partition), next);
                let (source, target) = (self.clusters.source_admin.cluster().clone(), self.clusters.target_admin.cluster().clone());
                tasks.spawn_blocking(move || {
                    let takeover = crate::mm2_offsets::takeover(&source, &target, &topic, partition, &remote, next);
                    (topic, partition, takeover)
                });
            }
            while let Some(done) = tasks.join_next().await {
                let Ok((topic, partition, Takeover { position, how })) = done else { continue };
                match how {
                    TakeoverCheck::Verified => info!(flow = %self.name, %topic, partition, position,
                        "taking over from MirrorMaker 2: resuming after the last record it copied (checked on the target)"),
                    TakeoverCheck::PastCommit { skipped } => info!(flow = %self.name, %topic, partition, position, skipped,
                        "taking over from MirrorMaker 2: it had copied records past its last offset commit; resuming after the last one on the target"),
                    TakeoverCheck::Unverified => warn!(flow = %self.name, %topic, partition, position,
                        "taking over from MirrorMaker 2 at its committed offset; the target's last record could not be matched, so records MirrorMaker 2 copied after its last commit may be copied again"),
                }
                out.insert((topic, partition), position);
            }
        }
        out
    }

    /// Partitions starting from a stored position whose source log is no longer the one
    /// replicated (the topic was deleted and created again, with at least as many records):
    /// the record before the position differs from its copy on the target. Such a partition
    /// restarts at its log start (returned), reported; without this check the new topic's first
    /// records were skipped without a word. Compared for every partition at once, one reader
    /// per cluster; a record that cannot be read (deleted, compacted) or that has no known copy
    /// is no evidence either way.
    pub(super) async fn replaced_sources(&self, new: &[((String, i32), String)], stored: &HashMap<(String, i32), i64>) -> HashMap<(String, i32), i64> {
        let mut source_at = Vec::new();
        let mut target_at = Vec::new();
        for ((topic, partition), remote) in new {
            let Some(&position) = stored.get(&(remote.clone(), *partition)) else { continue };
            let Some(map) = self.history.log.as_ref().and_then(|h| h.map(topic, *partition)) else { continue };
            let before = position - 1;
            let Some(copy) = map.copy_of(before) else { continue };
            source_at.push((topic.clone(), *partition, before));
            target_at.push((remote.clone(), *partition, copy));
        }
        if source_at.is_empty() {
            return HashMap::new();
        }
        let (source, target, wm) = (self.clusters.source_admin.cluster().clone(), self.clusters.target_admin.cluster().clone(), self.clusters.watermarks.clone());
        let (name, flow_source) = (self.name.clone(), self.config.source.clone());
        let within = Duration::from_secs(5);
        let compared = spawn_blocking(move || {
            let originals = ferry_kafka::read_records_at(&source, &source_at, within).unwrap_or_default();
            let copies = ferry_kafka::read_records_at(&target, &target_at, within).unwrap_or_default();
            let mut restart = HashMap::new();
            for ((topic, partition, before), (remote, _, copy_at)) in source_at.iter().zip(&target_at) {
                let (Some(original), Some(copy)) = (originals.get(&(topic.clone(), *partition)), copies.get(&(remote.clone(), *partition))) else { continue };
                if ferry_kafka::same_record(original, copy) {
                    continue;
                }
                let Ok((low, high)) = ferry_kafka::watermarks(&wm, topic, *partition, within) else { continue };
                counter!(telemetry::ERRORS, "flow" => name.clone(), "kind" => kind::SOURCE_TRUNCATED).increment(1);
                error!(flow = %name, cluster = %flow_source, %topic, partition, position = before + 1, high_watermark = high, copy_offset = copy_at,
                    "SOURCE REPLACED: the source record before the stored position is not the one replicated from it (topic recreated); replicating the new log from its start");
                restart.insert((topic.clone(), *partition), low);
            }
            restart
        });
        compared.await.unwrap_or_default()
    }
}
