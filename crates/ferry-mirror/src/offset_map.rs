//! The source <-> target offset mapping of one replicated partition, kept as runs where the
//! offset delta is constant. A run ends where the mapping restarts (a re-send after a crash or
//! a failed delivery) and at gaps the run cannot absorb, so memory and storage grow with
//! restarts and large gaps, not with records.
//!
//! **Gaps.** Offsets without a replicated record on either side (transaction markers, records
//! of aborted transactions, compaction, Ferry's own commit markers on the target) would split
//! the mapping at every transaction: a source committing every 100 ms made 36,000 runs an hour.
//! So a run older than the [`RECENT_EXACT`] newest is *coalesced* into the run before it when
//! the mapping goes on forward on both sides, as long as the merged run holds at most
//! [`MAX_RUN_GAPS`] gap offsets. Inside a coalesced run the gaps' places are not kept: a position
//! there translates to a lower bound (the consumer re-reads at most [`MAX_RUN_GAPS`] records,
//! never skips one), exact at the run's ends. Exact runs translate exactly everywhere. Only
//! *settled* runs coalesce (exactly-once mode: committed ones), so an aborted transaction's
//! copies are always exact runs to discard.
//!
//! Two views of the same runs:
//! - **written** (target order, as the records landed): never rewritten except by coalescing.
//!   This is what is stored durably and what reverse translation (failback) reads.
//! - **effective** (source order): for each source offset, the *newest* copy on the target.
//!   Forward translation (checkpoints) reads it, so a consumer that fails over after a re-send
//!   does not read the re-sent records twice.

use std::collections::VecDeque;

/// `len` records of consecutive source offsets from `source` landed at consecutive target
/// offsets from `target`, apart from `source_gaps` source and `target_gaps` target offsets in
/// between that hold no replicated record (a coalesced run; both zero for an exact run). The
/// first and last offsets on each side always hold a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRun {
    pub source: i64,
    pub target: i64,
    pub len: i64,
    pub source_gaps: i64,
    pub target_gaps: i64,
}

/// Gap offsets (source and target together) one coalesced run may hold: the most records a
/// translated position inside it may make a consumer read again. MirrorMaker 2's offset syncs
/// are `offset.lag.max` = 100 records apart by default, and it translates to the sync before.
pub const MAX_RUN_GAPS: i64 = 100;

/// The newest runs stay exact (they are not coalesced): consumers near the end of the log,
/// where most groups are, translate exactly, and so does the check of the last replicated
/// record against its copy (a recreated or truncated source).
pub const RECENT_EXACT: usize = 64;

impl OffsetRun {
    /// A run without gaps.
    pub const fn exact(source: i64, target: i64, len: i64) -> OffsetRun {
        OffsetRun { source, target, len, source_gaps: 0, target_gaps: 0 }
    }
    pub fn source_end(&self) -> i64 {
        self.source + self.len + self.source_gaps
    }
    pub fn target_end(&self) -> i64 {
        self.target + self.len + self.target_gaps
    }
    pub fn is_exact(&self) -> bool {
        self.source_gaps == 0 && self.target_gaps == 0
    }

    /// The target offset of the first copy of a source record at or after `source` (inside
    /// the run): exact in an exact run, else a lower bound (at most `gaps` before it): at
    /// least `len - (source_end - source)` of the run's records lie before `source`.
    fn forward(&self, source: i64) -> i64 {
        self.target + (self.len - (self.source_end() - source)).clamp(0, self.len)
    }

    /// The source position after every record whose copy lies before target offset `target`:
    /// exact in an exact run, else a lower bound (so no unread record is skipped).
    fn backward(&self, target: i64) -> i64 {
        if target >= self.target_end() {
            return self.source_end();
        }
        self.source + (self.len - (self.target_end() - target)).clamp(0, self.len)
    }

    /// This run followed by `next` as one coalesced run, when the mapping goes on forward on
    /// both sides and the gaps stay within `max_gaps`.
    fn coalesce(&self, next: &OffsetRun, max_gaps: i64) -> Option<OffsetRun> {
        let (source_gap, target_gap) = (next.source - self.source_end(), next.target - self.target_end());
        if source_gap < 0 || target_gap < 0 {
            return None;
        }
        let merged = OffsetRun {
            source: self.source,
            target: self.target,
            len: self.len + next.len,
            source_gaps: self.source_gaps + source_gap + next.source_gaps,
            target_gaps: self.target_gaps + target_gap + next.target_gaps,
        };
        (merged.source_gaps.saturating_add(merged.target_gaps) <= max_gaps).then_some(merged)
    }
}

/// What changed since the last successful store: the start marker (if unsaved), the runs
/// from `runs_from` on (the last stored run may have grown or absorbed the next ones), and
/// stored runs to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsaved {
    pub start: Option<i64>,
    pub runs: Vec<OffsetRun>,
    /// First target offsets of runs that no longer exist (aborted, coalesced into the run
    /// before, or pruned) and may have been stored, and [`START_KEY`] for a start marker that
    /// no longer holds: their records are deleted.
    pub dropped: Vec<i64>,
    /// Pass back to [`OffsetMap::mark_saved`] once `runs` and `start` are stored.
    pub token: SaveToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveToken {
    /// Index in `written` of the first run stored, and the runs as they were stored.
    from: usize,
    runs: Vec<OffsetRun>,
    dropped: usize,
    generation: u64,
}

/// The key (in place of a first target offset) of the start marker.
pub const START_KEY: i64 = -1;

/// Runs kept per partition. Gaps are coalesced ([`MAX_RUN_GAPS`] per run), so a run is added
/// per restart, per large gap and per hundred small ones. Beyond this the older half is
/// coalesced pairwise without the gap bound (older positions translate less precisely, as in
/// MirrorMaker 2's offset-sync store, never past an unread record); only what cannot be
/// coalesced (re-sends) is dropped, oldest first. 20,000 runs are at most 1.3 MB per partition.
pub const MAX_RUNS: usize = 20_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetMap {
    /// The source offset replication of this partition began at, when known (a fresh
    /// partition): source offsets from here to the first run hold no record.
    start: Option<i64>,
    written: Vec<OffsetRun>,
    /// `reach[i]`: the largest source end of `written[..=i]` (reverse translation in log time).
    reach: Vec<i64>,
    effective: VecDeque<OffsetRun>,
    /// `written[..saved]` are stored as they are now.
    saved: usize,
    /// `written[..exposed]` may have been handed to a store (a run removed among them is
    /// deleted from storage).
    exposed: usize,
    start_saved: bool,
    /// Stored runs (by first target offset) to delete.
    dropped: Vec<i64>,
    /// Bumped when runs are removed other than by coalescing the last ones: a save token from
    /// before no longer describes `written`.
    generation: u64,
    /// Runs ending at or before this source offset are settled and may coalesce (exactly-once
    /// mode: the committed position). `None`: every run is (at-least-once mode).
    settled: Option<i64>,
}

impl OffsetMap {
    /// A map rebuilt from stored runs (any order) and the stored start marker.
    pub fn from_runs(start: Option<i64>, runs: impl IntoIterator<Item = OffsetRun>) -> OffsetMap {
        let mut runs: Vec<OffsetRun> = runs.into_iter().filter(|r| r.len > 0).collect();
        runs.sort_by_key(|r| r.target);
        let mut map = OffsetMap { start, start_saved: true, written: runs, ..OffsetMap::default() };
        map.saved = map.written.len();
        map.exposed = map.written.len();
        map.rebuild_effective();
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

    /// Exactly-once mode: every copy before source position `position` is committed; runs
    /// ending there may coalesce. Until the first call every run may.
    pub fn settle(&mut self, position: i64) {
        self.settled = Some(position);
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
                // A run falls out of the recent ones: it coalesces into its predecessor if it can.
                self.coalesce_old();
                self.written.push(OffsetRun::exact(source, target, 1));
                if self.written.len() > MAX_RUNS {
                    self.prune();
                }
            }
        }
        self.refresh_reach(self.written.len() - 1);
        match self.effective.back_mut() {
            Some(last) if last.source_end() == source && last.target_end() == target => last.len += 1,
            _ => self.push_effective(OffsetRun::exact(source, target, 1)),
        }
    }

    /// Coalesces the newest run older than the [`RECENT_EXACT`] last ones into the run before
    /// it, when both are settled and the gaps fit.
    fn coalesce_old(&mut self) {
        let n = self.written.len();
        if n < RECENT_EXACT + 2 {
            return;
        }
        let i = n - RECENT_EXACT - 2;
        let (a, b) = (self.written[i], self.written[i + 1]);
        if self.settled.is_some_and(|s| b.source_end() > s) {
            return;
        }
        let Some(merged) = a.coalesce(&b, MAX_RUN_GAPS) else { return };
        // The effective view follows where it holds these two side by side (no re-send
        // between); elsewhere it keeps them, finer, until it is rebuilt.
        let e = self.effective.len();
        if let Some(j) = (e.saturating_sub(RECENT_EXACT + 4)..e.saturating_sub(1)).find(|&j| self.effective[j] == a && self.effective[j + 1] == b) {
            self.effective[j] = merged;
            self.effective.remove(j + 1);
        }
        self.written[i] = merged;
        self.written.remove(i + 1);
        if i + 1 < self.exposed {
            self.dropped.push(b.target);
            self.exposed -= 1;
        }
        self.saved = self.saved.min(i);
        self.refresh_reach(i);
    }

    /// Adds a run to the effective view: it supersedes every mapping of a source offset at or
    /// after its start (a re-send's newer copy wins).
    fn push_effective(&mut self, run: OffsetRun) {
        while let Some(last) = self.effective.back_mut() {
            if last.source >= run.source {
                self.effective.pop_back();
            } else {
                // A coalesced run cannot be cut exactly; kept whole, it still translates the
                // positions before `run` (the lookup picks the newest run starting at or before
                // a position) to a lower bound.
                if last.is_exact() {
                    last.len = last.len.min(run.source - last.source);
                }
                break;
            }
        }
        self.effective.push_back(run);
    }

    fn refresh_reach(&mut self, from: usize) {
        self.reach.truncate(from);
        for i in from..self.written.len() {
            let before = if i == 0 { i64::MIN } else { self.reach[i - 1] };
            self.reach.push(before.max(self.written[i].source_end()));
        }
    }

    /// Past [`MAX_RUNS`]: coalesces the older half pairwise (no gap bound), then drops the
    /// oldest runs that still exceed the bound. The start marker goes with a dropped run: the
    /// history no longer reaches back to where replication began.
    fn prune(&mut self) {
        if self.written.len() <= MAX_RUNS {
            return;
        }
        self.generation += 1;
        let old = std::mem::take(&mut self.written);
        let half = old.len() / 2;
        let mut first_changed = usize::MAX;
        let settled_to = self.settled;
        let settled = |r: &OffsetRun| settled_to.is_none_or(|s| r.source_end() <= s);
        let mut i = 0;
        while i < old.len() {
            let run = old[i];
            match old.get(i + 1).filter(|next| i + 1 < half && settled(next)).and_then(|next| run.coalesce(next, i64::MAX)) {
                Some(merged) => {
                    first_changed = first_changed.min(self.written.len());
                    if i + 1 < self.exposed {
                        self.dropped.push(old[i + 1].target);
                    }
                    self.written.push(merged);
                    i += 2;
                }
                None => {
                    self.written.push(run);
                    i += 1;
                }
            }
        }
        let mut n = 0;
        if self.written.len() > MAX_RUNS {
            n = self.written.len() - MAX_RUNS + MAX_RUNS / 10;
            for run in self.written.drain(..n) {
                // Deleting what was never stored is harmless.
                self.dropped.push(run.target);
            }
            if self.start.take().is_some() && self.start_saved {
                self.dropped.push(START_KEY);
            }
            self.start_saved = true;
        }
        // The runs before the first coalesced one are unchanged. Every run counts as possibly
        // stored: at worst a later removal deletes a key that was never written.
        self.saved = self.saved.min(first_changed).saturating_sub(n);
        self.exposed = self.written.len();
        self.rebuild_effective();
    }

    /// Forgets every copy of the source offsets from `source` on (exactly-once mode: records of
    /// an aborted transaction, which no `read_committed` reader ever sees). Stored runs among
    /// them are deleted, and a run that reached past `source` is stored again, shortened.
    /// Returns how many mappings were dropped. Runs past `source` are never coalesced (only
    /// settled ones are), so each is cut exactly.
    pub fn discard_from(&mut self, source: i64) -> i64 {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.written.len() {
            let run = self.written[i];
            if run.source >= source {
                dropped += run.len;
                if i < self.exposed {
                    self.dropped.push(run.target);
                    self.exposed -= 1;
                }
                if i < self.saved {
                    self.saved -= 1;
                }
                self.written.remove(i);
                continue;
            }
            if run.source_end() > source && run.is_exact() {
                dropped += run.source_end() - source;
                self.written[i].len = source - run.source;
                self.saved = self.saved.min(i);
            }
            i += 1;
        }
        if dropped > 0 {
            self.generation += 1;
            self.rebuild_effective();
        }
        dropped
    }

    fn rebuild_effective(&mut self) {
        self.effective.clear();
        for i in 0..self.written.len() {
            self.push_effective(self.written[i]);
        }
        self.refresh_reach(0);
    }

    /// Runs in the order their records were written to the target.
    pub fn runs(&self) -> impl DoubleEndedIterator<Item = &OffsetRun> {
        self.written.iter()
    }

    pub fn run_count(&self) -> usize {
        self.written.len()
    }

    /// Where the record at source offset `source` was copied on the target, if it was and the
    /// place is known (it lies inside an exact run, or at a coalesced run's end; a record in a
    /// gap has no copy). The newest copy after a re-send.
    pub fn copy_of(&self, source: i64) -> Option<i64> {
        let run = self.written.iter().rev().find(|r| r.source <= source && source < r.source_end())?;
        if run.is_exact() || source == run.source {
            Some(run.target + (source - run.source))
        } else if source == run.source_end() - 1 {
            Some(run.target_end() - 1)
        } else {
            None
        }
    }

    /// Translates a consumer position on the source (the next source offset it would read)
    /// into the target position that yields the same next record, or `None` while that is not
    /// yet known. `replicated_to` is the source position up to which every record is on the
    /// target (the partition's safe position), so a position in a gap after the last
    /// replicated record is exact too.
    ///
    /// Inside an exact run: exact; inside a coalesced run: at most its gaps before the exact
    /// position (records read again, none skipped). In a gap between runs: the target offset of
    /// the next replicated record. Before the first run: only when replication is known to
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
            return Some(run.forward(source));
        }
        Some(match self.effective.get(idx + 1) {
            Some(next) => next.target,
            None => self.written.last().map_or(run.target_end(), OffsetRun::target_end),
        })
    }

    /// Translates a consumer position on the **target** back to the source (failback): the
    /// source position after every source record the target consumer has read, so it resumes
    /// at the same next record and re-reads none (re-sent copies it read count as read); inside
    /// a coalesced run a lower bound. `None` for a position before or after what this map
    /// knows. A binary search: the checkpointer asks every group's positions every tick.
    pub fn reverse(&self, target: i64) -> Option<i64> {
        let first = self.written.first()?;
        let last = self.written.last()?;
        if target < first.target || target > last.target_end() {
            return None;
        }
        if target == first.target {
            return Some(first.source);
        }
        // written[..k] start before `target`; all but the last end at or before it.
        let k = self.written.partition_point(|r| r.target < target);
        let before = if k >= 2 { self.reach[k - 2] } else { i64::MIN };
        Some(before.max(self.written[k - 1].backward(target)))
    }

    /// What must be stored so that a restart rebuilds this map.
    pub fn unsaved(&mut self) -> Option<Unsaved> {
        let start = (!self.start_saved).then_some(self.start).flatten();
        if start.is_none() && self.saved == self.written.len() && self.dropped.is_empty() {
            return None;
        }
        self.exposed = self.written.len();
        let runs = self.written[self.saved..].to_vec();
        Some(Unsaved {
            start,
            runs: runs.clone(),
            dropped: self.dropped.clone(),
            token: SaveToken { from: self.saved, runs, dropped: self.dropped.len(), generation: self.generation },
        })
    }

    /// The runs of `token` are stored; runs written, grown or coalesced since stay unsaved.
    pub fn mark_saved(&mut self, token: SaveToken) {
        if token.generation != self.generation {
            // Runs were removed meanwhile: what was stored no longer lines up with `written`.
            // The deletions stay pending (deleting twice is harmless); the runs from the last
            // known-stored one on are stored again.
            return;
        }
        self.dropped.drain(..token.dropped.min(self.dropped.len()));
        self.start_saved = true;
        if self.saved < token.from {
            // A run before the stored ones changed since (it absorbed the next): stored again.
            return;
        }
        let still = self.written.get(token.from..).unwrap_or_default();
        let same = token.runs.iter().zip(still).take_while(|(stored, now)| stored == now).count();
        self.saved = token.from + same;
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
        assert_eq!(u.runs, vec![OffsetRun::exact(0, 0, 1)]);
        m.mark_saved(u.token);
        assert_eq!(m.unsaved(), None);
        m.record(1, 1);
        let u = m.unsaved().unwrap();
        assert_eq!(u.start, None);
        assert_eq!(u.runs, vec![OffsetRun::exact(0, 0, 2)], "the grown run is re-stored");
        // grows while being stored: stays unsaved
        m.record(2, 2);
        m.mark_saved(u.token);
        assert_eq!(m.unsaved().unwrap().runs, vec![OffsetRun::exact(0, 0, 3)]);
        m.record(9, 3);
        let u = m.unsaved().unwrap();
        assert_eq!(u.runs.len(), 2);
        m.mark_saved(u.token);
        assert_eq!(m.unsaved(), None);
        let mut loaded = OffsetMap::from_runs(Some(0), m.runs().copied());
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
        assert_eq!(u.runs, vec![OffsetRun::exact(0, 0, 6)]);
        assert!(u.dropped.is_empty(), "same key, stored again shortened");
        assert_eq!(m.reverse(6), Some(6));
        assert_eq!(m.reverse(8), None, "beyond what is kept");
    }

    /// A history as a transactional source makes it: `txns` transactions of `per_txn` records,
    /// each followed by its commit marker on the source (and, with `eos`, one on the target).
    /// Returns the map and every record's (source, target).
    fn transactional_history(txns: i64, per_txn: i64, eos: bool) -> (OffsetMap, Vec<(i64, i64)>) {
        let mut m = OffsetMap::default();
        m.set_start(0);
        let (mut s, mut t) = (0, 0);
        let mut records = Vec::new();
        for _ in 0..txns {
            for _ in 0..per_txn {
                m.record(s, t);
                records.push((s, t));
                s += 1;
                t += 1;
            }
            s += 1; // the source's commit marker
            if eos {
                t += 1; // Ferry's own commit marker on the target
                m.settle(s);
            }
        }
        (m, records)
    }

    /// The exact translation of a source position: the copy of the first record at or after it.
    fn exact_forward(records: &[(i64, i64)], source: i64) -> Option<i64> {
        records.get(records.partition_point(|(s, _)| *s < source)).map(|&(_, t)| t)
    }

    #[test]
    fn transaction_markers_coalesce_and_translation_stays_within_the_gap_bound() {
        for eos in [false, true] {
            // 36,000 transactions: an hour of commits every 100 ms, one run each before.
            let (m, records) = transactional_history(36_000, 3, eos);
            let gaps_per_txn = if eos { 2 } else { 1 };
            let bound = 36_000 / (MAX_RUN_GAPS / gaps_per_txn) as usize + 2 + RECENT_EXACT;
            assert!(m.run_count() <= bound, "eos {eos}: {} runs, at most {bound}", m.run_count());
            let end = records.last().unwrap().0 + 2;
            for x in (0..end).step_by(7).chain([0, 1, 3, 4, end - 1]) {
                let exact = exact_forward(&records, x).unwrap_or(records.last().unwrap().1 + 1 + i64::from(eos));
                let got = m.translate(x, end).unwrap();
                assert!(got <= exact && got >= exact - MAX_RUN_GAPS, "eos {eos}: forward {x}: {got}, exact {exact}");
            }
            // At every run's ends the translation is exact, and so is the copy of its records.
            for run in m.runs() {
                assert_eq!(m.translate(run.source, end), Some(run.target));
                assert_eq!(m.copy_of(run.source_end() - 1), Some(run.target_end() - 1));
                assert_eq!(m.reverse(run.target_end()), Some(run.source_end()));
            }
            // Reverse: never past a record the target consumer has not read.
            for y in (0..records.last().unwrap().1).step_by(5) {
                let unread = records[records.partition_point(|(_, t)| *t < y)].0;
                let got = m.reverse(y).unwrap();
                assert!(got <= unread && got >= unread - MAX_RUN_GAPS, "eos {eos}: reverse {y}: {got}, first unread {unread}");
            }
        }
    }

    #[test]
    fn uncommitted_runs_never_coalesce_so_an_abort_cuts_exactly() {
        // 200 committed transactions of 5 records (EOS: a marker on each side after each).
        let (mut m, records) = transactional_history(200, 5, true);
        let committed = records.last().unwrap().0 + 2;
        let (mut s, mut t) = (committed, records.last().unwrap().1 + 2);
        // The open transaction: source gaps inside it (aborted source transactions) make
        // RECENT_EXACT + 10 runs of it, which must stay apart from the committed ones.
        for _ in 0..RECENT_EXACT + 10 {
            m.record(s, t);
            s += 2;
            t += 1;
        }
        assert_eq!(m.discard_from(committed), RECENT_EXACT as i64 + 10, "exactly the open transaction's copies");
        assert!(m.runs().all(|r| r.source_end() <= committed));
        assert_eq!(m.reverse(records.last().unwrap().1 + 1), Some(committed - 1), "up to the last committed record");
        assert!(m.run_count() < 20 + RECENT_EXACT, "{}", m.run_count());
    }

    /// Applies an `Unsaved` to a store of runs by first target offset, as the offset-runs topic
    /// keeps them (tombstones first, then the records).
    fn store(stored: &mut std::collections::BTreeMap<i64, OffsetRun>, u: &Unsaved) {
        for key in &u.dropped {
            stored.remove(key);
        }
        for run in &u.runs {
            stored.insert(run.target, *run);
        }
    }

    #[test]
    fn storage_follows_coalescing_even_while_a_store_is_in_flight() {
        let mut m = OffsetMap::default();
        let mut stored = std::collections::BTreeMap::new();
        let (mut s, mut t) = (0, 0);
        for round in 0..400 {
            // A store taken here is acknowledged only after more transactions arrived.
            let pending = m.unsaved();
            if let Some(u) = &pending {
                store(&mut stored, u);
            }
            for _ in 0..(round % 4) {
                m.record(s, t);
                m.record(s + 1, t + 1);
                s += 3; // two records and a marker
                t += 2;
            }
            if let Some(u) = pending {
                m.mark_saved(u.token);
            }
        }
        if let Some(u) = m.unsaved() {
            store(&mut stored, &u);
            m.mark_saved(u.token);
        }
        assert_eq!(m.unsaved(), None);
        assert!(m.run_count() < 20 + RECENT_EXACT, "{} runs", m.run_count());
        let rebuilt = OffsetMap::from_runs(None, stored.values().copied());
        assert_eq!(rebuilt.runs().collect::<Vec<_>>(), m.runs().collect::<Vec<_>>(), "the store holds exactly the map's runs");
    }

    #[test]
    fn reverse_by_binary_search_matches_the_definition_with_resends() {
        let mut m = OffsetMap::default();
        let mut t = 0;
        // Re-sends (the source goes back) between stretches with gaps.
        for (from, to) in [(0, 50), (40, 90), (95, 130), (100, 101), (101, 160), (150, 170)] {
            for s in from..to {
                if s % 13 != 0 {
                    m.record(s, t);
                    t += 1;
                }
            }
        }
        let linear = |target: i64| -> i64 {
            m.runs().take_while(|r| r.target < target).map(|r| r.backward(target)).max().unwrap()
        };
        for y in 1..=t {
            assert_eq!(m.reverse(y), Some(linear(y)), "reverse {y}");
        }
    }

    #[test]
    fn history_is_bounded_old_runs_coalesce_and_positions_before_it_are_not_translated() {
        let mut m = OffsetMap::default();
        m.set_start(0);
        // Every record re-sent once right after it landed: one run per record, which nothing
        // coalesces (the source goes back at every run).
        let mut t = 0;
        let runs = MAX_RUNS as i64 + 1;
        for s in 0..runs {
            m.record(s, t);
            m.record(s, t + 1);
            t += 2;
            if s == 10 {
                let u = m.unsaved().unwrap();
                m.mark_saved(u.token);
            }
        }
        assert!(m.run_count() <= MAX_RUNS, "{}", m.run_count());
        let first = *m.runs().next().unwrap();
        assert_eq!(m.start(), None, "the history no longer reaches back to the start");
        assert_eq!(m.translate(first.source - 1, runs), None, "older than the kept history: no translation");
        let u = m.unsaved().unwrap();
        assert!(u.dropped.contains(&START_KEY));

        // Gaps past the per-run bound (a compacted source): old runs coalesce pairwise instead
        // of being dropped, so old positions still translate (a lower bound).
        let mut m = OffsetMap::default();
        m.set_start(0);
        for i in 0..(MAX_RUNS as i64 + 1) {
            m.record(i * 200, i * 2); // 199 compacted records between each pair kept
            m.record(i * 200 + 1, i * 2 + 1);
        }
        assert!(m.run_count() <= MAX_RUNS && m.run_count() > MAX_RUNS / 2, "{}", m.run_count());
        assert_eq!(m.start(), Some(0), "nothing dropped");
        assert_eq!(m.translate(0, i64::MAX), Some(0));
        assert_eq!(m.translate(201, i64::MAX), Some(3), "the end of a coalesced run is exact");
        assert_eq!(m.translate(200, i64::MAX), Some(2));
    }
}
