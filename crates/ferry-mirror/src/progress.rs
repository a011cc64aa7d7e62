//! Per-partition replication state shared by the relay thread (which sends), the producer's
//! delivery callback (which learns what the target acknowledged) and the flow's control task
//! (which stores positions and publishes metrics).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::offset_map::OffsetMap;
use crate::report::LatencySamples;

/// Delivery opaque: the source offset and the partition's epoch in one `usize`
/// (epoch in the top 16 bits, offset below: offsets up to 2^48).
pub(crate) fn pack(epoch: u16, offset: i64) -> usize {
    ((epoch as usize) << 48) | (offset as usize & ((1 << 48) - 1))
}

pub(crate) fn unpack(opaque: usize) -> (u16, i64) {
    ((opaque >> 48) as u16, (opaque & ((1 << 48) - 1)) as i64)
}

#[derive(Debug)]
pub(crate) struct PartitionProgress {
    pub(crate) source_topic: Arc<str>,
    pub(crate) remote_topic: Arc<str>,
    pub(crate) partition: i32,
    /// Next source offset after the last record handed to the producer (or skipped).
    pub(crate) consumed_next: i64,
    /// Next source offset after the last record the target acknowledged, in this epoch.
    pub(crate) acked_next: i64,
    /// Records handed to the producer and not yet acknowledged or failed.
    pub(crate) inflight: u64,
    /// Bumped on every rewind; acknowledgements from older epochs do not move `acked_next`.
    pub(crate) epoch: u16,
    /// The source offset the current epoch started at.
    pub(crate) epoch_start: i64,
    /// Records of older epochs still in flight, and the position they hold the stored one to
    /// (delivery reports can come out of order: a record failing after a later one already
    /// started a rewind must neither be skipped nor be passed by the stored position).
    pub(crate) stale: u64,
    pub(crate) floor: i64,
    /// Set by a failed delivery: the relay must seek back here and re-send.
    pub(crate) rewind_to: Option<i64>,
    /// A non-retriable failure stopped this partition.
    pub(crate) failed: Option<String>,
    /// Last position stored durably (in exactly-once mode: the last committed one).
    pub(crate) stored: i64,
    /// Exactly-once mode: an acknowledgement of an older epoch is a record of an aborted
    /// transaction, so it is not a copy any reader sees and stays out of the offset map.
    pub(crate) transactional: bool,
    /// Exactly-once mode: records and bytes acknowledged in the open transaction, counted in
    /// `records`/`bytes` (and the metrics) once it commits, dropped if it aborts.
    pub(crate) uncommitted: (u64, u64),
    /// Exact source -> target mapping of every acknowledged record (checkpoint hook).
    pub(crate) offset_map: OffsetMap,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) filtered: u64,
    /// Source high watermark and log start, from librdkafka statistics.
    pub(crate) high_watermark: i64,
    pub(crate) log_start: i64,
    /// The source's last stable offset (a `read_committed` consumer's end: transaction markers
    /// and open transactions are not records it can fetch), from librdkafka statistics; -1:
    /// unknown.
    pub(crate) stable_end: i64,
    /// The next offset the source consumer will fetch, from librdkafka statistics (-1:
    /// unknown): past a transaction marker even though no record came from it.
    pub(crate) fetch_next: i64,
    /// Since when librdkafka reports this partition's fetcher as not fetching ("none",
    /// "stopped": after an out-of-range error it stops for good), with that state.
    pub(crate) fetch_stopped: Option<(Instant, String)>,
    pub(crate) deliveries: u64,
    /// Source timestamp of the newest acknowledged record (-1: none yet).
    pub(crate) last_timestamp_ms: i64,
    /// Sampled replication latencies since the last metrics report.
    pub(crate) latency_samples: LatencySamples,
    /// The partition's records and bytes counters (`ferry_mirror_records_total`,
    /// `ferry_mirror_bytes_total`), counted at acknowledgement, not at the next flush.
    pub(crate) counters: Option<(metrics::Counter, metrics::Counter)>,
}

impl PartitionProgress {
    pub(crate) fn new(source_topic: Arc<str>, remote_topic: Arc<str>, partition: i32, start: i64) -> Self {
        PartitionProgress {
            source_topic,
            remote_topic,
            partition,
            consumed_next: start,
            acked_next: start,
            inflight: 0,
            epoch: 0,
            epoch_start: start,
            stale: 0,
            floor: start,
            rewind_to: None,
            failed: None,
            stored: start,
            stable_end: -1,
            fetch_next: -1,
            transactional: false,
            uncommitted: (0, 0),
            offset_map: OffsetMap::default(),
            records: 0,
            bytes: 0,
            filtered: 0,
            high_watermark: -1,
            log_start: -1,
            fetch_stopped: None,
            deliveries: 0,
            last_timestamp_ms: -1,
            latency_samples: LatencySamples::default(),
            counters: None,
        }
    }

    /// The position that may be stored: every record before it is on the target.
    pub(crate) fn safe_position(&self) -> i64 {
        let acked = match self.rewind_to {
            Some(r) => self.acked_next.min(r),
            None => self.acked_next,
        };
        let position = if self.inflight == 0 && self.rewind_to.is_none() { self.consumed_next } else { acked };
        if self.stale > 0 {
            position.min(self.floor)
        } else {
            position
        }
    }

    /// Whether the source holds records this partition's consumer can fetch and has not: its
    /// position (and the consumer's own fetch position, which passes transaction markers no
    /// record comes from) is behind the last stable offset (the high watermark when that is
    /// unknown), and nothing is being re-sent, stopped or truncated.
    pub(crate) fn fetchable_waiting(&self) -> bool {
        let end = if self.stable_end >= 0 { self.stable_end } else { self.high_watermark };
        let at = self.consumed_next.max(self.fetch_next);
        self.failed.is_none() && self.rewind_to.is_none() && self.inflight == 0 && end > at && self.log_start <= self.consumed_next
    }

    /// Records on the source not yet replicated (0 if the watermark is unknown).
    pub(crate) fn lag(&self) -> i64 {
        if self.high_watermark < 0 { 0 } else { (self.high_watermark - self.safe_position()).max(0) }
    }

    /// A delivery succeeded at `target_offset`.
    pub(crate) fn acknowledged(&mut self, epoch: u16, source_offset: i64, target_offset: i64, bytes: usize) {
        self.inflight = self.inflight.saturating_sub(1);
        if epoch != self.epoch {
            self.stale = self.stale.saturating_sub(1);
        }
        let current = epoch == self.epoch && self.rewind_to.is_none();
        if !self.transactional {
            self.offset_map.record(source_offset, target_offset);
            self.count(1, bytes as u64);
        } else if current {
            self.offset_map.record(source_offset, target_offset);
            self.uncommitted.0 += 1;
            self.uncommitted.1 += bytes as u64;
        }
        self.deliveries += 1;
        if current && source_offset >= self.acked_next {
            self.acked_next = source_offset + 1;
        }
    }

    /// What a store of this partition must write now: its offset runs not stored yet, and its
    /// position if it moved since the last store. Taken together under the partition's lock, so
    /// the runs cover every record before the position.
    pub(crate) fn pending_store(&mut self) -> (Option<UnsavedRuns>, Option<Position>) {
        let runs = self.offset_map.unsaved().map(|unsaved| (self.source_topic.to_string(), self.partition, unsaved));
        let position = self.safe_position();
        (runs, (position != self.stored).then(|| (self.remote_topic.to_string(), self.partition, position)))
    }

    fn count(&mut self, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
        if let Some((records_total, bytes_total)) = &self.counters {
            records_total.increment(records);
            bytes_total.increment(bytes);
        }
    }

    /// Exactly-once mode: the open transaction committed; what it replicated now counts.
    pub(crate) fn transaction_committed(&mut self) {
        // Runs before the committed position may coalesce now (never an uncommitted one: an
        // abort cuts those exactly).
        self.offset_map.settle(self.stored);
        let (records, bytes) = std::mem::take(&mut self.uncommitted);
        self.count(records, bytes);
    }

    /// A delivery failed: re-send from `source_offset` (retriable) or stop (fatal).
    pub(crate) fn delivery_failed(&mut self, epoch: u16, source_offset: i64, fatal: Option<String>) {
        self.inflight = self.inflight.saturating_sub(1);
        if epoch != self.epoch {
            self.stale = self.stale.saturating_sub(1);
            // A record of an older epoch at or after this epoch's start is being sent again; one
            // before it would be skipped: rewind to it.
            if source_offset >= self.epoch_start {
                return;
            }
        }
        if let Some(reason) = fatal {
            self.failed.get_or_insert(reason);
        }
        self.rewind_to = Some(self.rewind_to.map_or(source_offset, |r| r.min(source_offset)));
    }

    /// The relay seeks back: a new epoch starts at the rewind point.
    pub(crate) fn take_rewind(&mut self) -> Option<i64> {
        let to = self.rewind_to.take()?;
        // Every record in flight now belongs to an older epoch: until each is reported, the
        // stored position stays at or before the first record not known to be delivered.
        let floor = self.acked_next.min(to);
        self.floor = if self.stale > 0 { self.floor.min(floor) } else { floor };
        self.stale = self.inflight;
        self.epoch = self.epoch.wrapping_add(1);
        self.epoch_start = to;
        self.consumed_next = to;
        self.acked_next = to;
        Some(to)
    }
}

pub(crate) type SharedProgress = Arc<Mutex<PartitionProgress>>;

/// A source partition's offset runs not stored yet: (source topic, partition, runs).
pub(crate) type UnsavedRuns = (String, i32, crate::offset_map::Unsaved);
/// A position to store: (remote topic, partition, next source offset).
pub(crate) type Position = (String, i32, i64);

/// All partitions of a flow, by remote topic (what delivery reports name) and partition.
#[derive(Default)]
pub(crate) struct ProgressTable {
    by_remote: RwLock<HashMap<Arc<str>, Vec<Option<SharedProgress>>>>,
    by_source: RwLock<HashMap<Arc<str>, Vec<Option<SharedProgress>>>>,
    /// Records the target acknowledged and source records taken, over the flow's life (they
    /// never go back when partitions leave the table): what the stall watchdog follows.
    pub(crate) acknowledged: std::sync::atomic::AtomicU64,
    pub(crate) consumed: std::sync::atomic::AtomicU64,
}

fn put(map: &RwLock<HashMap<Arc<str>, Vec<Option<SharedProgress>>>>, topic: Arc<str>, partition: usize, value: Option<SharedProgress>) {
    let mut map = map.write().unwrap();
    let slots = map.entry(topic).or_default();
    if slots.len() <= partition {
        slots.resize(partition + 1, None);
    }
    slots[partition] = value;
}

impl ProgressTable {
    pub(crate) fn insert(&self, progress: SharedProgress) {
        let (source, remote, partition) = {
            let p = progress.lock().unwrap();
            (p.source_topic.clone(), p.remote_topic.clone(), p.partition as usize)
        };
        put(&self.by_remote, remote, partition, Some(progress.clone()));
        put(&self.by_source, source, partition, Some(progress));
    }

    pub(crate) fn remove(&self, progress: &SharedProgress) {
        let (source, remote, partition) = {
            let p = progress.lock().unwrap();
            (p.source_topic.clone(), p.remote_topic.clone(), p.partition as usize)
        };
        put(&self.by_remote, remote, partition, None);
        put(&self.by_source, source, partition, None);
    }

    pub(crate) fn by_source(&self, source_topic: &str, partition: i32) -> Option<SharedProgress> {
        self.by_source.read().unwrap().get(source_topic)?.get(partition as usize)?.clone()
    }

    /// Every assigned partition.
    pub(crate) fn all(&self) -> Vec<SharedProgress> {
        self.by_source.read().unwrap().values().flatten().flatten().cloned().collect()
    }

    /// `history` is stored: its runs count as saved in the partitions still in the table.
    pub(crate) fn runs_saved(&self, history: Vec<UnsavedRuns>) {
        for (topic, partition, unsaved) in history {
            if let Some(progress) = self.by_source(&topic, partition) {
                progress.lock().unwrap().offset_map.mark_saved(unsaved.token);
            }
        }
    }

    pub(crate) fn get(&self, remote_topic: &str, partition: i32) -> Option<SharedProgress> {
        self.by_remote.read().unwrap().get(remote_topic)?.get(partition as usize)?.clone()
    }
}

/// Notices a side of the data path that stopped moving while work is pending: records in
/// flight that the target does not acknowledge, or source records waiting that are not fetched.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    last: u64,
    stalled_since: Option<Instant>,
    warned: bool,
}

/// What a [`Watchdog`] observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// Nothing moved for this long although work is pending (reported once per stall).
    Started(Duration),
    /// Moving again after a reported stall of this long.
    Ended(Duration),
}

impl Watchdog {
    /// Whether a stall was reported and has not ended.
    pub(crate) fn stalled(&self) -> bool {
        self.warned
    }

    /// Reports a stall after `after` without progress of `counter` while `pending`.
    pub(crate) fn observe(&mut self, counter: u64, pending: bool, now: Instant, after: Duration) -> Option<Stall> {
        let progressed = counter != self.last;
        self.last = counter;
        if progressed {
            let ended = self.stalled_since.take().filter(|_| self.warned).map(|since| Stall::Ended(now - since));
            self.warned = false;
            return ended;
        }
        if !pending {
            // Nothing waits: no stall begins. A reported stall ends only with progress (the work
            // may have left, e.g. partitions lost, without the cluster answering).
            if !self.warned {
                self.stalled_since = None;
            }
            return None;
        }
        let since = *self.stalled_since.get_or_insert(now);
        if !self.warned && now - since >= after {
            self.warned = true;
            return Some(Stall::Started(now - since));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records 200 and 201 in flight; 201's failure is reported first and starts a rewind to
    /// 201; then 200 fails (an older epoch): it must be sent again, and no stored position may
    /// pass it meanwhile.
    #[test]
    fn a_failure_reported_after_a_later_one_rewinds_again_and_holds_the_position() {
        let mut p = PartitionProgress::new("t".into(), "a.t".into(), 0, 0);
        p.consumed_next = 202;
        p.acknowledged(0, 199, 199, 1); // 0..=199 delivered, in order (acked_next 200)
        p.inflight = 2; // 200 and 201
        p.delivery_failed(0, 201, None);
        assert_eq!(p.take_rewind(), Some(201));
        assert_eq!(p.safe_position(), 200, "200 is still in flight");
        p.inflight += 1; // 201 sent again in the new epoch
        p.acknowledged(1, 201, 250, 1);
        assert_eq!(p.safe_position(), 200, "acked 201 in the new epoch does not pass 200");
        p.delivery_failed(0, 200, None);
        assert_eq!(p.take_rewind(), Some(200), "the record before the epoch's start is sent again");
        assert_eq!(p.safe_position(), 200);
        // An old-epoch failure at or after the epoch's start is being re-sent already.
        let mut q = PartitionProgress::new("t".into(), "a.t".into(), 0, 0);
        q.consumed_next = 10;
        q.inflight = 2;
        q.delivery_failed(0, 5, None);
        assert_eq!(q.take_rewind(), Some(5));
        q.delivery_failed(0, 7, None);
        assert_eq!(q.take_rewind(), None);
        assert_eq!((q.stale, q.safe_position()), (0, 5));
    }

    #[test]
    fn the_watchdog_reports_a_stall_once_and_its_end() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let after = Duration::from_secs(10);
        let mut w = Watchdog::default();
        assert_eq!(w.observe(5, true, s(0), after), None, "moved (from 0)");
        assert_eq!(w.observe(5, true, s(1), after), None, "first tick without progress");
        assert_eq!(w.observe(5, true, s(10), after), None);
        assert_eq!(w.observe(5, true, s(11), after), Some(Stall::Started(Duration::from_secs(10))));
        assert_eq!(w.observe(5, true, s(20), after), None, "once per stall");
        assert_eq!(w.observe(6, true, s(21), after), Some(Stall::Ended(Duration::from_secs(20))));
        // No pending work is no stall; a short pause is not reported at all.
        assert_eq!(w.observe(6, false, s(40), after), None);
        assert_eq!(w.observe(6, true, s(41), after), None);
        assert_eq!(w.observe(7, true, s(45), after), None);
        // Work that leaves during a reported stall does not end it: only progress does.
        assert_eq!(w.observe(7, true, s(46), after), None);
        assert_eq!(w.observe(7, true, s(56), after), Some(Stall::Started(Duration::from_secs(10))));
        assert_eq!(w.observe(7, false, s(57), after), None, "nothing pending, nothing moved");
        assert_eq!(w.observe(8, false, s(60), after), Some(Stall::Ended(Duration::from_secs(14))));
    }

    fn part() -> PartitionProgress {
        PartitionProgress::new("t".into(), "a.t".into(), 0, 10)
    }

    #[test]
    fn opaque_round_trip() {
        assert_eq!(unpack(pack(7, 123_456_789_012)), (7, 123_456_789_012));
        assert_eq!(unpack(pack(u16::MAX, 0)), (u16::MAX, 0));
    }

    #[test]
    fn position_never_passes_an_unacknowledged_record() {
        let mut p = part();
        p.consumed_next = 13;
        p.inflight = 3; // 10, 11, 12 sent
        assert_eq!(p.safe_position(), 10);
        p.acknowledged(0, 10, 100, 1);
        assert_eq!(p.safe_position(), 11);
        p.acknowledged(0, 11, 101, 1);
        p.acknowledged(0, 12, 102, 1);
        assert_eq!(p.safe_position(), 13);
        // a record skipped by the provenance filter moves consumed_next with nothing in flight
        p.consumed_next = 14;
        assert_eq!(p.safe_position(), 14);
    }

    #[test]
    fn a_failed_delivery_holds_the_position_until_resent() {
        let mut p = part();
        p.consumed_next = 13;
        p.inflight = 3;
        p.acknowledged(0, 10, 100, 1);
        p.delivery_failed(0, 11, None);
        p.acknowledged(0, 12, 102, 1); // a later record made it: position must still stop at 11
        assert_eq!(p.safe_position(), 11);
        assert_eq!(p.take_rewind(), Some(11));
        assert_eq!(p.epoch, 1);
        assert_eq!(p.safe_position(), 11);
        // a late ack from the old epoch does not move the position
        p.inflight = 1;
        p.acknowledged(0, 12, 102, 1);
        assert_eq!(p.safe_position(), 11);
    }

    #[test]
    fn records_wait_to_be_fetched_only_before_the_stable_end_with_nothing_in_flight() {
        let mut p = part();
        assert!(!p.fetchable_waiting(), "unknown end");
        p.high_watermark = 12;
        assert!(p.fetchable_waiting(), "the high watermark when the stable end is unknown");
        // A transaction marker at the end: the high watermark is past it, the stable end is not.
        p.stable_end = 10;
        assert!(!p.fetchable_waiting());
        p.stable_end = 12;
        p.fetch_next = 12;
        assert!(!p.fetchable_waiting(), "the consumer fetched past a marker at 11");
        p.fetch_next = 10;
        p.inflight = 1;
        assert!(!p.fetchable_waiting(), "records wait on the target, not on the source");
        p.inflight = 0;
        p.rewind_to = Some(10);
        assert!(!p.fetchable_waiting(), "a re-send is pending");
        p.rewind_to = None;
        p.log_start = 11;
        assert!(!p.fetchable_waiting(), "truncated: the position check's case");
    }

    #[test]
    fn lag_uses_the_safe_position() {
        let mut p = part();
        assert_eq!(p.lag(), 0, "unknown watermark");
        p.high_watermark = 50;
        assert_eq!(p.lag(), 40);
        p.high_watermark = 5;
        assert_eq!(p.lag(), 0, "never negative (tansu reports a low high watermark)");
    }
}
