//! The exact source <-> target offset mapping of one replicated partition, kept as runs where
//! the offset delta is constant. A run ends only where the source has a gap (compaction,
//! transaction markers, filtered records) or the mapping restarts (a re-send after a crash or
//! a failed delivery), so memory and storage grow with gaps and restarts, not with records.
//!
//! Two views of the same runs:
//! - **written** (target order, as the records landed): never rewritten, only the last run
//!   grows. This is what is stored durably and what reverse translation (failback) reads.
//! - **effective** (source order): for each source offset, the *newest* copy on the target.
//!   Forward translation (checkpoints) reads it, so a consumer that fails over after a re-send
//!   does not read the re-sent records twice.

use std::collections::VecDeque;

/// `len` consecutive source offsets starting at `source` landed at consecutive target offsets
/// starting at `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRun {
    pub source: i64,
    pub target: i64,
    pub len: i64,
}

impl OffsetRun {
    pub fn source_end(&self) -> i64 {
        self.source + self.len
    }
    pub fn target_end(&self) -> i64 {
        self.target + self.len
    }
}

/// What changed since the last successful store: the start marker (if unsaved), the runs
/// from `runs_from` on (the last stored run may have grown), and stored runs to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsaved {
    pub start: Option<i64>,
    pub runs: Vec<OffsetRun>,
    /// First target offsets of stored runs that no longer exist (aborted or pruned), and
    /// [`START_KEY`] for a start marker that no longer holds: their records are deleted.
    pub dropped: Vec<i64>,
    /// Pass back to [`OffsetMap::mark_saved`] once `runs` and `start` are stored.
    pub token: SaveToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveToken {
    written: usize,
    last_len: i64,
    dropped: usize,
    generation: u64,
}

/// The key (in place of a first target offset) of the start marker.
pub const START_KEY: i64 = -1;

/// Runs kept per partition. Exactly-once mode starts a run per transaction (each commit marker
/// shifts the target offsets), so without a bound a busy partition would add 86,400 runs a day
/// at the default 1 s commit interval. Beyond this the oldest tenth is dropped (and deleted
/// from storage); positions older than what is kept are no longer translated (no checkpoint
/// rather than a wrong one). 20,000 runs are at most 960 KB per partition and cover about
/// 5.5 hours of continuous transactions at the default interval; far more without them.
pub const MAX_RUNS: usize = 20_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetMap {
    /// The source offset replication of this partition began at, when known (a fresh
    /// partition): source offsets from here to the first run hold no record.
    start: Option<i64>,
    written: Vec<OffsetRun>,
    effective: VecDeque<OffsetRun>,
    /// `written[..saved]` are stored with their current lengths.
    saved: usize,
    start_saved: bool,
    /// Stored runs (by first target offset) to delete.
    dropped: Vec<i64>,
    /// Bumped when runs are removed: a save token from before no longer describes `written`.
    generation: u64,
}

impl OffsetMap {
    /// A map rebuilt from stored runs (any order) and the stored start marker.
    pub fn from_runs(start: Option<i64>, runs: impl IntoIterator<Item = OffsetRun>) -> OffsetMap {
        let mut runs: Vec<OffsetRun> = runs.into_iter().filter(|r| r.len > 0).collect();
        runs.sort_by_key(|r| r.target);
        let mut map = OffsetMap { start, start_saved: true, ..OffsetMap::default() };
        for run in runs {
            map.push_effective(run);
            map.written.push(run);
        }
        map.saved = map.written.len();
        map.prune();
        map
    }

    /// Marks where replication of a fresh partition began.
    pub fn set_start(&mut self, source: i64) {
        if self.start.is_none() && self.written.is_empty() {
            self.start = Some(source);
            self.start_saved = false;
        }
    }

    pub fn start(&self) -> Option<i64> {
        self.start
    }

    /// Records that the record at source offset `source` was written at target `target`.
    /// Target offsets arrive in increasing order (one idempotent producer per partition).
    pub fn record(&mut self, source: i64, target: i64) {
        match self.written.last_mut() {
            Some(last) if last.source_end() == source && last.target_end() == target => {
                last.len += 1;
                self.saved = self.saved.min(self.written.len() - 1);
            }
            _ => {
                self.written.push(OffsetRun { source, target, len: 1 });
                if self.written.len() > MAX_RUNS {
                    self.prune();
                }
            }
        }
        match self.effective.back_mut() {
            Some(last) if last.source_end() == source && last.target_end() == target => last.len += 1,
            _ => self.push_effective(OffsetRun { source, target, len: 1 }),
        }
    }

    /// Adds a run to the effective view: it supersedes every mapping of a source offset at or
    /// after its start (a re-send's newer copy wins).
    fn push_effective(&mut self, run: OffsetRun) {
        while let Some(last) = self.effective.back_mut() {
            if last.source >= run.source {
                self.effective.pop_back();
            } else {
                last.len = last.len.min(run.source - last.source);
                break;
            }
        }
        self.effective.push_back(run);
    }

    /// Drops the oldest tenth of the runs when there are more than [`MAX_RUNS`]. The start
    /// marker goes too: the history no longer reaches back to where replication began.
    fn prune(&mut self) {
        if self.written.len() <= MAX_RUNS {
            return;
        }
        let n = self.written.len() - MAX_RUNS + MAX_RUNS / 10;
        for (i, run) in self.written.drain(..n).enumerate() {
            if i < self.saved {
                self.dropped.push(run.target);
            }
        }
        self.saved = self.saved.saturating_sub(n);
        if self.start.take().is_some() && self.start_saved {
            self.dropped.push(START_KEY);
        }
        self.start_saved = true;
        self.rebuild_effective();
    }

    /// Forgets every copy of the source offsets from `source` on (exactly-once mode: records of
    /// an aborted transaction, which no `read_committed` reader ever sees). Stored runs among
    /// them are deleted, and a run that reached past `source` is stored again, shortened.
    /// Returns how many mappings were dropped.
    pub fn discard_from(&mut self, source: i64) -> i64 {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.written.len() {
            let run = self.written[i];
            if run.source >= source {
                dropped += run.len;
                if i < self.saved {
                    self.dropped.push(run.target);
                    self.saved -= 1;
                }
                self.written.remove(i);
                continue;
            }
            if run.source_end() > source {
                dropped += run.source_end() - source;
                self.written[i].len = source - run.source;
                self.saved = self.saved.min(i);
            }
            i += 1;
        }
        if dropped > 0 {
            self.rebuild_effective();
        }
        dropped
    }

    fn rebuild_effective(&mut self) {
        self.generation += 1;
        self.effective.clear();
        for i in 0..self.written.len() {
            self.push_effective(self.written[i]);
        }
    }

    /// Runs in the order their records were written to the target.
    pub fn runs(&self) -> impl DoubleEndedIterator<Item = &OffsetRun> {
        self.written.iter()
    }

    pub fn run_count(&self) -> usize {
        self.written.len()
    }

    /// Where the record at source offset `source` was copied on the target, if it was (it lies
    /// inside a run; a record in a gap has no copy). The newest copy after a re-send.
    pub fn copy_of(&self, source: i64) -> Option<i64> {
        if !self.written.iter().any(|r| r.source <= source && source < r.source_end()) {
            return None;
        }
        self.translate(source, source + 1)
    }

    /// Translates a consumer position on the source (the next source offset it would read)
    /// into the target position that yields the same next record, or `None` while that is not
    /// yet known. `replicated_to` is the source position up to which every record is on the
    /// target (the partition's safe position), so a position in a gap after the last
    /// replicated record is exact too.
    ///
    /// Inside a run: exact. In a gap (compaction, markers, filtered records): the target offset
    /// of the next replicated record. Before the first run: only when replication is known to
    /// have started at or before `source` (else records before it may be unknown).
    pub fn translate(&self, source: i64, replicated_to: i64) -> Option<i64> {
        if source > replicated_to {
            return None;
        }
        let first = self.effective.front()?;
        if source < first.source {
            return self.start.filter(|&s| s <= source).map(|_| first.target);
        }
        let idx = self.effective.partition_point(|r| r.source <= source) - 1;
        let run = &self.effective[idx];
        if source < run.source_end() {
            return Some(run.target + (source - run.source));
        }
        Some(match self.effective.get(idx + 1) {
            Some(next) => next.target,
            None => self.written.last().map_or(run.target_end(), OffsetRun::target_end),
        })
    }

    /// Translates a consumer position on the **target** back to the source (failback): the
    /// source position after every source record the target consumer has read, so it resumes
    /// at the same next record and re-reads none (re-sent copies it read count as read).
    /// `None` for a position before or after what this map knows.
    pub fn reverse(&self, target: i64) -> Option<i64> {
        let first = self.written.first()?;
        let last = self.written.last()?;
        if target < first.target || target > last.target_end() {
            return None;
        }
        if target == first.target {
            return Some(first.source);
        }
        self.written
            .iter()
            .take_while(|r| r.target < target)
            .map(|r| r.source + r.len.min(target - r.target))
            .max()
    }

    /// What must be stored so that a restart rebuilds this map.
    pub fn unsaved(&self) -> Option<Unsaved> {
        let start = (!self.start_saved).then_some(self.start).flatten();
        if start.is_none() && self.saved == self.written.len() && self.dropped.is_empty() {
            return None;
        }
        Some(Unsaved {
            start,
            runs: self.written[self.saved..].to_vec(),
            dropped: self.dropped.clone(),
            token: SaveToken {
                written: self.written.len(),
                last_len: self.written.last().map_or(0, |r| r.len),
                dropped: self.dropped.len(),
                generation: self.generation,
            },
        })
    }

    /// The runs of `token` are stored; runs written or grown since stay unsaved.
    pub fn mark_saved(&mut self, token: SaveToken) {
        if token.generation != self.generation {
            // Runs were removed meanwhile: what was stored no longer lines up with `written`.
            // The deletions stay pending (deleting twice is harmless); the runs from the last
            // known-stored one on are stored again.
            return;
        }
        self.dropped.drain(..token.dropped.min(self.dropped.len()));
        self.start_saved = true;
        let unchanged = token.written > 0
            && self.written.len() == token.written
            && self.written[token.written - 1].len == token.last_len;
        // If it changed, only the run that was last may have grown: store it again.
        self.saved = if unchanged { token.written } else { token.written.saturating_sub(1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_of_names_the_newest_copy_of_a_replicated_record_and_nothing_for_a_gap() {
        let mut m = OffsetMap::default();
        for (s, t) in [(0, 0), (1, 1), (3, 2), (4, 3)] {
            m.record(s, t); // offset 2 is a gap (a transaction marker)
        }
        m.record(3, 4); // re-sent: the newest copy of 3 is at 4
        assert_eq!(m.copy_of(1), Some(1));
        assert_eq!(m.copy_of(2), None, "a gap has no copy");
        assert_eq!(m.copy_of(3), Some(4));
        assert_eq!(m.copy_of(9), None);
    }

    #[test]
    fn contiguous_records_form_one_run() {
        let mut m = OffsetMap::default();
        for i in 0..1000 {
            m.record(100 + i, i);
        }
        assert_eq!(m.run_count(), 1);
        assert_eq!(m.translate(100, 1100), Some(0));
        assert_eq!(m.translate(600, 1100), Some(500));
        assert_eq!(m.translate(1100, 1100), Some(1000), "past the end: the next target offset");
        assert_eq!(m.translate(99, 1100), None, "before the map, start unknown");
        assert_eq!(m.translate(1101, 1100), None, "not replicated yet");
    }

    #[test]
    fn a_known_start_covers_a_leading_gap() {
        let mut m = OffsetMap::default();
        m.set_start(10);
        m.record(15, 0);
        m.record(16, 1);
        assert_eq!(m.translate(10, 17), Some(0));
        assert_eq!(m.translate(14, 17), Some(0));
        assert_eq!(m.translate(9, 17), None, "before replication began");
    }

    #[test]
    fn source_gaps_translate_to_the_next_replicated_record() {
        let mut m = OffsetMap::default();
        // source 0..3, then a transaction marker at 3, then 4..6
        for (s, t) in [(0, 0), (1, 1), (2, 2), (4, 3), (5, 4)] {
            m.record(s, t);
        }
        assert_eq!(m.run_count(), 2);
        assert_eq!(m.translate(2, 6), Some(2));
        assert_eq!(m.translate(3, 6), Some(3), "a consumer at the marker next reads source 4 = target 3");
        assert_eq!(m.translate(4, 6), Some(3));
        assert_eq!(m.translate(6, 6), Some(5));
        // a gap after the last record (aborted records), covered by the safe position
        assert_eq!(m.translate(9, 9), Some(5));
        assert_eq!(m.reverse(3), Some(3), "consumed target 0..3 = source 0..3: resume at the marker");
        assert_eq!(m.reverse(4), Some(5));
        assert_eq!(m.reverse(5), Some(6));
        assert_eq!(m.reverse(6), None, "beyond what is known");
    }

    #[test]
    fn resends_after_restart_supersede_old_mappings_forward_and_count_as_read_backward() {
        let mut m = OffsetMap::default();
        for i in 0..10 {
            m.record(i, i);
        }
        // crash after source 9 was written but only position 7 stored: 7..10 are re-sent.
        for i in 7..12 {
            m.record(i, i + 3);
        }
        assert_eq!(m.translate(6, 12), Some(6));
        assert_eq!(m.translate(7, 12), Some(10), "the newest copy wins: no record is read twice after it");
        assert_eq!(m.translate(11, 12), Some(14));
        assert_eq!(m.run_count(), 2);
        assert_eq!(m.reverse(8), Some(8), "inside the older copy");
        assert_eq!(m.reverse(10), Some(10), "read source 0..10 already; the re-sent 7..10 are not read again");
        assert_eq!(m.reverse(12), Some(10));
        assert_eq!(m.reverse(14), Some(11));
        assert_eq!(m.reverse(15), Some(12));
    }

    #[test]
    fn rebuilt_from_stored_runs_it_translates_the_same() {
        let mut m = OffsetMap::default();
        m.set_start(0);
        for (s, t) in [(0, 0), (1, 1), (5, 2), (6, 3), (2, 4), (3, 5)] {
            m.record(s, t);
        }
        let stored: Vec<OffsetRun> = m.runs().rev().copied().collect();
        let r = OffsetMap::from_runs(m.start(), stored);
        for x in 0..8 {
            assert_eq!(r.translate(x, 7), m.translate(x, 7), "forward {x}");
        }
        for t in 0..7 {
            assert_eq!(r.reverse(t), m.reverse(t), "reverse {t}");
        }
    }

    #[test]
    fn unsaved_runs_are_the_new_and_the_grown_ones() {
        let mut m = OffsetMap::default();
        m.set_start(0);
        m.record(0, 0);
        let u = m.unsaved().unwrap();
        assert_eq!(u.start, Some(0));
        assert_eq!(u.runs, vec![OffsetRun { source: 0, target: 0, len: 1 }]);
        m.mark_saved(u.token);
        assert_eq!(m.unsaved(), None);
        m.record(1, 1);
        let u = m.unsaved().unwrap();
        assert_eq!(u.start, None);
        assert_eq!(u.runs, vec![OffsetRun { source: 0, target: 0, len: 2 }], "the grown run is re-stored");
        // grows while being stored: stays unsaved
        m.record(2, 2);
        m.mark_saved(u.token);
        assert_eq!(m.unsaved().unwrap().runs, vec![OffsetRun { source: 0, target: 0, len: 3 }]);
        m.record(9, 3);
        let u = m.unsaved().unwrap();
        assert_eq!(u.runs.len(), 2);
        m.mark_saved(u.token);
        assert_eq!(m.unsaved(), None);
        let loaded = OffsetMap::from_runs(Some(0), m.runs().copied());
        assert_eq!(loaded.unsaved(), None, "a loaded map has nothing to store");
    }

    #[test]
    fn copies_of_an_aborted_transaction_are_dropped_and_deleted_from_storage() {
        let mut m = OffsetMap::default();
        m.set_start(0);
        // Transaction 1 commits source 0..5 at target 0..5 (marker at 5); transaction 2 writes
        // 5..8 at 6..9 and aborts (marker at 9); 5..8 are re-sent at 10..13.
        for s in 0..5 {
            m.record(s, s);
        }
        for s in 5..8 {
            m.record(s, s + 1);
        }
        let u = m.unsaved().unwrap();
        assert_eq!(u.runs.len(), 2);
        m.mark_saved(u.token);
        assert_eq!(m.discard_from(5), 3);
        let u = m.unsaved().unwrap();
        assert_eq!(u.dropped, vec![6], "the stored run of the aborted transaction is deleted");
        assert!(u.runs.is_empty());
        m.mark_saved(u.token);
        assert_eq!(m.unsaved(), None);
        for s in 5..8 {
            m.record(s, s + 5);
        }
        // A read_committed consumer at target 10 read source 0..5 only (6..9 were aborted):
        // failback resumes it at 5, not at 8 as the aborted copies would make it.
        assert_eq!(m.reverse(10), Some(5));
        assert_eq!(m.reverse(11), Some(6));
        assert_eq!(m.translate(5, 8), Some(10));
        assert_eq!(m.translate(6, 8), Some(11));
    }

    #[test]
    fn a_run_reaching_past_the_discard_point_is_shortened_and_stored_again() {
        let mut m = OffsetMap::default();
        for s in 0..10 {
            m.record(s, s); // no marker between the committed and the aborted part (mock cluster)
        }
        let u = m.unsaved().unwrap();
        m.mark_saved(u.token);
        assert_eq!(m.discard_from(6), 4);
        let u = m.unsaved().unwrap();
        assert_eq!(u.runs, vec![OffsetRun { source: 0, target: 0, len: 6 }]);
        assert!(u.dropped.is_empty(), "same key, stored again shortened");
        assert_eq!(m.reverse(6), Some(6));
        assert_eq!(m.reverse(8), None, "beyond what is kept");
    }

    #[test]
    fn history_is_bounded_and_positions_before_it_are_not_translated() {
        let mut m = OffsetMap::default();
        m.set_start(0);
        // One run per transaction: every record is followed by a commit marker.
        let runs = MAX_RUNS as i64 + 1;
        for s in 0..runs {
            m.record(s, 2 * s);
            if s == 10 {
                let u = m.unsaved().unwrap();
                m.mark_saved(u.token);
            }
        }
        assert_eq!(m.run_count(), MAX_RUNS - MAX_RUNS / 10);
        let first = *m.runs().next().unwrap();
        assert_eq!(first.source, runs - m.run_count() as i64);
        assert_eq!(m.start(), None, "the history no longer reaches back to the start");
        assert_eq!(m.translate(first.source - 1, runs), None, "older than the kept history: no translation");
        assert_eq!(m.translate(first.source, runs), Some(first.target));
        let u = m.unsaved().unwrap();
        assert_eq!(u.dropped.len(), 12, "the 11 stored runs among the dropped ones and the start marker are deleted");
        assert!(u.dropped.contains(&START_KEY));
    }
}
