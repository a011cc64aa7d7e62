//! The records of MM2's internal topics that carry offsets, and Ferry's own offset-run record.
//!
//! - [`Checkpoint`]: `<source>.checkpoints.internal` on the target. Key `{group: STRING, topic:
//!   STRING, partition: INT32}`, value `{version: INT16 = 0, upstreamOffset: INT64, offset:
//!   INT64, metadata: STRING}`. `topic` is the topic on the target that `offset` applies to
//!   (the source topic's remote name, or its upstream name when it came from the target), as
//!   MM2's `MirrorCheckpointTask` writes it and `RemoteClusterUtils` reads it.
//! - [`OffsetSync`]: `mm2-offset-syncs.<target>.internal`. Key `{topic: STRING, partition:
//!   INT32}`, value `{upstreamOffset: INT64, offset: INT64}`, no version header.
//! - [`RunRecord`]: Ferry's `ferry-offset-runs.<target>.internal`, next to the offset syncs.
//!   One record per [`OffsetRun`](crate::offset_map::OffsetRun); keyed by the run's first target
//!   offset so a compacted topic keeps every run (only a growing run's older lengths compact
//!   away). Key `{topic: STRING, partition: INT32, offset: INT64}` (the MM2 offset-sync key plus
//!   the run's first target offset), value `{version: INT16 = 0, upstreamOffset: INT64, length:
//!   INT64}` for an exact run, and `{version: INT16 = 1, upstreamOffset: INT64, length: INT64,
//!   sourceGaps: INT64, targetGaps: INT64}` for a coalesced one (gaps > 0; see
//!   [`offset_map`](crate::offset_map)). Version 0 readers skip version 1 records as malformed.

use crate::mm2_codec::{Reader, Writer};
use crate::offset_map::OffsetRun;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub group: String,
    /// The topic on the target (see the module documentation).
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset on the source.
    pub upstream_offset: i64,
    /// The same position in the remote topic on the target.
    pub downstream_offset: i64,
    pub metadata: String,
}

impl Checkpoint {
    pub fn encode_key(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.string(&self.group);
        w.string(&self.topic);
        w.i32(self.partition);
        w.into_bytes()
    }

    pub fn encode_value(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.i16(0);
        w.i64(self.upstream_offset);
        w.i64(self.downstream_offset);
        w.string(&self.metadata);
        w.into_bytes()
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<Checkpoint, String> {
        let mut k = Reader::new(key);
        let (group, topic, partition) = (k.string()?, k.string()?, k.i32()?);
        k.finish()?;
        let mut v = Reader::new(value);
        v.version_0("checkpoint")?;
        let (upstream_offset, downstream_offset, metadata) = (v.i64()?, v.i64()?, v.string()?);
        v.finish()?;
        Ok(Checkpoint { group, topic, partition, upstream_offset, downstream_offset, metadata })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetSync {
    pub topic: String,
    pub partition: i32,
    /// The source record at `upstream_offset` is the target record at `downstream_offset`.
    pub upstream_offset: i64,
    pub downstream_offset: i64,
}

impl OffsetSync {
    pub fn encode_key(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.string(&self.topic);
        w.i32(self.partition);
        w.into_bytes()
    }

    pub fn encode_value(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.i64(self.upstream_offset);
        w.i64(self.downstream_offset);
        w.into_bytes()
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<OffsetSync, String> {
        let mut k = Reader::new(key);
        let (topic, partition) = (k.string()?, k.i32()?);
        k.finish()?;
        let mut v = Reader::new(value);
        let (upstream_offset, downstream_offset) = (v.i64()?, v.i64()?);
        v.finish()?;
        Ok(OffsetSync { topic, partition, upstream_offset, downstream_offset })
    }
}

/// One exact offset run of a replicated partition, as Ferry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The source topic.
    pub topic: String,
    pub partition: i32,
    pub run: OffsetRun,
}

impl RunRecord {
    pub fn encode_key(&self) -> Result<Vec<u8>, String> {
        Self::key(&self.topic, self.partition, self.run.target)
    }

    /// The key of the run of `topic`/`partition` starting at target offset `target` (what a
    /// deletion names).
    pub fn key(topic: &str, partition: i32, target: i64) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.string(topic);
        w.i32(partition);
        w.i64(target);
        w.into_bytes()
    }

    pub fn encode_value(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        let coalesced = !self.run.is_exact();
        w.i16(i16::from(coalesced));
        w.i64(self.run.source);
        w.i64(self.run.len);
        if coalesced {
            w.i64(self.run.source_gaps);
            w.i64(self.run.target_gaps);
        }
        w.into_bytes()
    }

    /// The key's source topic, partition and first target offset (a tombstone has no value).
    pub fn decode_key(key: &[u8]) -> Result<(String, i32, i64), String> {
        let mut k = Reader::new(key);
        let (topic, partition, target) = (k.string()?, k.i32()?, k.i64()?);
        k.finish()?;
        Ok((topic, partition, target))
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<RunRecord, String> {
        let (topic, partition, target) = Self::decode_key(key)?;
        let mut v = Reader::new(value);
        let version = v.i16()?;
        if !(0..=1).contains(&version) {
            return Err(format!("unsupported offset run version {version}"));
        }
        let (source, len) = (v.i64()?, v.i64()?);
        let (source_gaps, target_gaps) = if version == 1 { (v.i64()?, v.i64()?) } else { (0, 0) };
        v.finish()?;
        let run = OffsetRun { source, target, len, source_gaps, target_gaps };
        // target -1 with length 0: the start marker of a partition (see `offset_store`). A
        // coalesced run (version 1) has gaps and at least a record at each end.
        let ends_fit = source.checked_add(len).and_then(|e| e.checked_add(source_gaps)).is_some()
            && target.checked_add(len).and_then(|e| e.checked_add(target_gaps)).is_some();
        let coalesced_ok = version == 0 || (source_gaps >= 0 && target_gaps >= 0 && source_gaps.checked_add(target_gaps).is_some_and(|g| g > 0) && len >= 2);
        if len < 0 || source < 0 || target < -1 || (target == -1 && len != 0) || !coalesced_ok || !ends_fit {
            return Err(format!("invalid offset run: source {source}, target {target}, length {len}, gaps {source_gaps}/{target_gaps}"));
        }
        Ok(RunRecord { topic, partition, run })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors written by hand from MM2's schemas (Checkpoint.java, OffsetSync.java): Kafka's
    // Struct encoding, STRING = INT16 length + UTF-8, integers big-endian.
    #[test]
    fn checkpoint_matches_mm2_bytes() {
        let c = Checkpoint {
            group: "g1".into(),
            topic: "orders".into(),
            partition: 2,
            upstream_offset: 0x0102,
            downstream_offset: 0x0a0b0c0d0e0f1011,
            metadata: "m".into(),
        };
        let key = [0, 2, b'g', b'1', 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 2];
        let value = [0, 0, /* upstream */ 0, 0, 0, 0, 0, 0, 1, 2, /* downstream */ 10, 11, 12, 13, 14, 15, 16, 17, /* metadata */ 0, 1, b'm'];
        assert_eq!(c.encode_key().unwrap(), key);
        assert_eq!(c.encode_value().unwrap(), value);
        assert_eq!(Checkpoint::decode(&key, &value).unwrap(), c);
    }

    #[test]
    fn offset_sync_matches_mm2_bytes_without_a_version_header() {
        let s = OffsetSync { topic: "t".into(), partition: 258, upstream_offset: 5, downstream_offset: -1 };
        let key = [0, 1, b't', 0, 0, 1, 2];
        let value = [0, 0, 0, 0, 0, 0, 0, 5, 255, 255, 255, 255, 255, 255, 255, 255];
        assert_eq!(s.encode_key().unwrap(), key);
        assert_eq!(s.encode_value().unwrap(), value);
        assert_eq!(OffsetSync::decode(&key, &value).unwrap(), s);
    }

    #[test]
    fn run_record_round_trips_and_rejects_garbage() {
        let r = RunRecord { topic: "orders".into(), partition: 1, run: OffsetRun::exact(7, 10, 3) };
        let key = r.encode_key().unwrap();
        assert_eq!(&key[..2], &[0, 6], "starts like the MM2 offset-sync key");
        assert_eq!(&key[key.len() - 8..], &10i64.to_be_bytes());
        assert_eq!(RunRecord::decode(&key, &r.encode_value().unwrap()).unwrap(), r);
        assert!(RunRecord::decode(&key, &[0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3]).is_err(), "unknown version");
        // A coalesced run: version 1 with its gaps; version 0 stays the exact runs' format.
        let coalesced = RunRecord { run: OffsetRun { source_gaps: 4, target_gaps: 1, ..OffsetRun::exact(7, 10, 30) }, ..r.clone() };
        let value = coalesced.encode_value().unwrap();
        assert_eq!((&value[..2], value.len()), (&[0u8, 1][..], 34));
        assert_eq!(RunRecord::decode(&key, &value).unwrap(), coalesced);
        let no_gaps = [&[0u8, 1][..], &value[2..18], &[0; 16]].concat();
        assert!(RunRecord::decode(&key, &no_gaps).is_err(), "version 1 without gaps is not how an exact run is written");
        assert!(RunRecord::decode(&key, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 255, 255, 255, 255, 255, 255, 255, 255]).is_err(), "negative length");
        assert!(Checkpoint::decode(&[0, 1, b'g'], &[]).is_err());
        // A string MM2's format cannot hold fails the record, without a panic.
        let long = Checkpoint { group: "g".repeat(32_768), topic: "t".into(), partition: 0, upstream_offset: 0, downstream_offset: 0, metadata: String::new() };
        assert!(long.encode_key().unwrap_err().contains("32768 bytes"));
        let fits = Checkpoint { group: "g".repeat(32_767), ..long };
        assert_eq!(Checkpoint::decode(&fits.encode_key().unwrap(), &fits.encode_value().unwrap()).unwrap(), fits);
        assert!(OffsetSync::decode(&[0, 1, b't', 0, 0, 0, 1], &[0; 15]).is_err());
    }
}
