//! Taking over from MirrorMaker 2 without copying again what it copied.
//!
//! MM2 (dedicated mode) keeps each source partition's progress in Kafka Connect's offsets
//! topic on the target, `mm2-offsets.<source>.internal`: key
//! `["MirrorSourceConnector",{"cluster":"<source>","topic":"<topic>","partition":<n>}]`, value
//! `{"offset":<last copied source offset>}` (JSON; a tombstone forgets the partition). A
//! partition Ferry has no position for resumes after MM2's last copied record.
//!
//! Connect commits offsets periodically and when a task stops, so a killed MM2 may have copied
//! records past its last commit. The resume point is therefore checked against the target: the
//! remote topic's last record must be the source record MM2's offset names ([`verify`]); when
//! it is a later one, the resume point moves past it (no duplicate); when neither is found the
//! committed point is used and the possible duplicates are reported.

use std::collections::HashMap;
use std::time::Duration;

use ferry_kafka::{ClusterClient, RecordFingerprint};
use serde::Deserialize;

use crate::offset_store::TopicTail;

/// MM2's Connect offsets topic for flows from `source`.
pub fn offsets_topic(source: &str) -> String {
    format!("mm2-offsets.{source}.internal")
}

/// The source partition of a Connect offsets key.
#[derive(Debug, Deserialize)]
struct SourcePartition {
    cluster: String,
    topic: String,
    partition: i32,
}

#[derive(Debug, Deserialize)]
struct SourceOffset {
    offset: i64,
}

/// MM2's last copied offset per source partition of one source cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mm2Offsets {
    source: String,
    last_copied: HashMap<(String, i32), i64>,
    /// Records of the topic that are not MirrorSourceConnector offsets of this source.
    pub ignored: u64,
}

impl Mm2Offsets {
    pub fn new(source: &str) -> Self {
        Mm2Offsets { source: source.to_string(), ..Default::default() }
    }

    /// Applies one record of the offsets topic (value None: a tombstone).
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok((connector, partition)) = serde_json::from_slice::<(String, SourcePartition)>(key) else {
            self.ignored += 1;
            return;
        };
        if connector != "MirrorSourceConnector" || partition.cluster != self.source {
            self.ignored += 1;
            return;
        }
        let at = (partition.topic, partition.partition);
        match value.map(serde_json::from_slice::<SourceOffset>) {
            None => {
                self.last_copied.remove(&at);
            }
            Some(Ok(o)) if o.offset >= 0 => {
                self.last_copied.insert(at, o.offset);
            }
            Some(_) => self.ignored += 1,
        }
    }

    /// The next source offset after MM2's last copied record of `topic`/`partition`.
    pub fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        self.last_copied.get(&(topic.to_string(), partition)).map(|o| o + 1)
    }

    pub fn len(&self) -> usize {
        self.last_copied.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_copied.is_empty()
    }
}

/// Reads MM2's offsets for flows from `source` on `target` (blocking); `Ok(None)` when the
/// topic does not exist (MM2 never ran there).
pub fn read(target: &ClusterClient, source: &str, existing_topics: &[String]) -> ferry_kafka::Result<Option<Mm2Offsets>> {
    let topic = offsets_topic(source);
    if !existing_topics.contains(&topic) {
        return Ok(None);
    }
    let mut offsets = Mm2Offsets::new(source);
    TopicTail::open(target, &topic)?.catch_up(Duration::from_secs(30), |k, v, _| offsets.apply(k, v))?;
    Ok(Some(offsets))
}

/// Where a partition taken over from MM2 resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    pub position: i64,
    pub how: TakeoverCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverCheck {
    /// The remote topic's last record is the source record before `position`.
    Verified,
    /// MM2 had copied records past its last offset commit; `position` is after the last one.
    PastCommit { skipped: i64 },
    /// The target's last record could not be matched: `position` is MM2's commit, and records
    /// it copied after that may be copied again.
    Unverified,
}

/// How far past MM2's committed point the source is searched for the target's last record.
pub const SEARCH_LIMIT: i64 = 10_000;

/// Decides where to resume, given MM2's committed `next` offset, the source's records from
/// `next - 1` on (in order; `SEARCH_LIMIT` of them are looked at) and the remote topic's last
/// record. Pure.
pub fn verify(next: i64, target_last: Option<&RecordFingerprint>, source_records: impl IntoIterator<Item = (i64, RecordFingerprint)>) -> Takeover {
    let Some(last) = target_last else {
        return Takeover { position: next, how: TakeoverCheck::Unverified };
    };
    for (offset, record) in source_records.into_iter().take_while(|(o, _)| *o < next + SEARCH_LIMIT) {
        if offset < next - 1 || !ferry_kafka::same_record(&record, last) {
            continue;
        }
        return if offset == next - 1 {
            Takeover { position: next, how: TakeoverCheck::Verified }
        } else {
            Takeover { position: offset + 1, how: TakeoverCheck::PastCommit { skipped: offset + 1 - next } }
        };
    }
    Takeover { position: next, how: TakeoverCheck::Unverified }
}

/// The last data record of `topic`/`partition` before `end` (MM2 in exactly-once mode ends
/// its log with a transaction marker, which is not a record: the last 10 offsets are read).
pub fn last_record(cluster: &ClusterClient, topic: &str, partition: i32, end: i64) -> Option<RecordFingerprint> {
    let scan = ferry_kafka::RecordScan::open(cluster, topic, partition, end.saturating_sub(10).max(0), end, Duration::from_secs(5)).ok()?;
    scan.last().map(|(_, r)| r)
}

/// Where `topic`/`partition` resumes when MM2's commit says `next` (blocking): checked against
/// the last record of `remote` on the target.
pub fn takeover(source: &ClusterClient, target: &ClusterClient, topic: &str, partition: i32, remote: &str, next: i64) -> Takeover {
    let target_end = ferry_kafka::log_reader(target, "ferry-record-scan")
        .ok()
        .and_then(|c| ferry_kafka::watermarks(&c, remote, partition, Duration::from_secs(10)).ok())
        .map_or(0, |(_, high)| high);
    let last = if target_end > 0 { last_record(target, remote, partition, target_end) } else { None };
    let from = (next - 1).max(0);
    match ferry_kafka::RecordScan::open(source, topic, partition, from, next + SEARCH_LIMIT, Duration::from_secs(5)) {
        Ok(scan) => verify(next, last.as_ref(), scan),
        Err(_) => Takeover { position: next, how: TakeoverCheck::Unverified },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(connector: &str, cluster: &str, topic: &str, partition: i32) -> Vec<u8> {
        format!(r#"["{connector}",{{"cluster":"{cluster}","partition":{partition},"topic":"{topic}"}}]"#).into_bytes()
    }

    #[test]
    fn connect_offsets_of_mm2s_source_connector_are_read_and_the_rest_ignored() {
        let mut o = Mm2Offsets::new("a");
        o.apply(&key("MirrorSourceConnector", "a", "orders", 0), Some(br#"{"offset":41}"#));
        o.apply(&key("MirrorSourceConnector", "a", "orders", 1), Some(br#"{"offset":7}"#));
        o.apply(&key("MirrorSourceConnector", "a", "orders", 0), Some(br#"{"offset":99}"#)); // newer wins
        o.apply(&key("MirrorSourceConnector", "c", "orders", 2), Some(br#"{"offset":5}"#)); // another source
        o.apply(&key("MirrorCheckpointConnector", "a", "orders", 3), Some(br#"{"offset":5}"#));
        o.apply(b"garbage", Some(b"{}"));
        o.apply(&key("MirrorSourceConnector", "a", "gone", 0), Some(br#"{"offset":3}"#));
        o.apply(&key("MirrorSourceConnector", "a", "gone", 0), None);
        assert_eq!(o.next("orders", 0), Some(100));
        assert_eq!(o.next("orders", 1), Some(8));
        assert_eq!(o.next("gone", 0), None);
        assert_eq!(o.next("orders", 2), None);
        assert_eq!((o.len(), o.ignored), (2, 3));
    }

    #[test]
    fn the_resume_point_is_checked_against_the_targets_last_record() {
        let rec = |o: i64| (Some(o.to_be_bytes().to_vec()), Some(b"v".to_vec()), Some(1_700_000_000_000 + o));
        let source = || (99..200).map(|o| (o, rec(o)));
        // MM2 stopped cleanly: its commit names the target's last record.
        assert_eq!(verify(100, Some(&rec(99)), source()), Takeover { position: 100, how: TakeoverCheck::Verified });
        // Killed after copying 20 more than it committed: they are not copied again.
        assert_eq!(verify(100, Some(&rec(119)), source()), Takeover { position: 120, how: TakeoverCheck::PastCommit { skipped: 20 } });
        // The target's last record is nowhere near (or unreadable): the commit, said to be unverified.
        assert_eq!(verify(100, Some(&rec(5_000)), source()), Takeover { position: 100, how: TakeoverCheck::Unverified });
        assert_eq!(verify(100, None, source()), Takeover { position: 100, how: TakeoverCheck::Unverified });
        // A compacted gap at next - 1: the record found later is still matched.
        assert_eq!(verify(100, Some(&rec(150)), (101..200).map(|o| (o, rec(o)))), Takeover { position: 151, how: TakeoverCheck::PastCommit { skipped: 51 } });
    }
}
