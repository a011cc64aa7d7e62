//! The exact source -> target offset mapping of one replicated partition, kept as runs where
//! the offset delta is constant. A run ends only where the source has a gap (compaction,
//! transaction markers, filtered records) or the target does (a restart's re-sends, other
//! writers), so memory grows with gaps, not with records.

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetMap {
    runs: VecDeque<OffsetRun>,
}

impl OffsetMap {
    /// Records that the record at source offset `source` was written at target `target`.
    /// Deliveries arrive in order per partition; an out-of-order or repeated source offset
    /// (a re-send after a restart or a rewind) starts a new run, and lookups prefer the
    /// newest mapping of a source offset.
    pub fn record(&mut self, source: i64, target: i64) {
        if let Some(last) = self.runs.back_mut() {
            if last.source_end() == source && last.target_end() == target {
                last.len += 1;
                return;
            }
            if source < last.source_end() {
                // A re-send: the newer copy supersedes older mappings from `source` on.
                while let Some(last) = self.runs.back_mut() {
                    if last.source >= source {
                        self.runs.pop_back();
                    } else {
                        last.len = last.len.min(source - last.source);
                        break;
                    }
                }
            }
        }
        self.runs.push_back(OffsetRun { source, target, len: 1 });
    }

    pub fn runs(&self) -> impl Iterator<Item = &OffsetRun> {
        self.runs.iter()
    }

    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Translates a consumer position (the next source offset to read) into the target
    /// position holding the same next record. `None` if `source` precedes what is mapped.
    /// Inside a run: exact. In a gap: the target offset of the next replicated record.
    /// Past the end: the target offset after the last replicated record.
    pub fn translate(&self, source: i64) -> Option<i64> {
        let first = self.runs.front()?;
        if source < first.source {
            return None;
        }
        let idx = self.runs.partition_point(|r| r.source <= source) - 1;
        let run = &self.runs[idx];
        if source < run.source_end() {
            return Some(run.target + (source - run.source));
        }
        Some(match self.runs.get(idx + 1) {
            Some(next) => next.target,
            None => run.target_end(),
        })
    }

    /// Drops runs entirely below `source` (e.g. the source log start).
    pub fn truncate_before(&mut self, source: i64) {
        while self.runs.front().is_some_and(|r| r.source_end() <= source) {
            self.runs.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_records_form_one_run() {
        let mut m = OffsetMap::default();
        for i in 0..1000 {
            m.record(100 + i, i);
        }
        assert_eq!(m.run_count(), 1);
        assert_eq!(m.translate(100), Some(0));
        assert_eq!(m.translate(600), Some(500));
        assert_eq!(m.translate(1100), Some(1000), "past the end: the next target offset");
        assert_eq!(m.translate(99), None);
    }

    #[test]
    fn source_gaps_translate_to_the_next_replicated_record() {
        let mut m = OffsetMap::default();
        // source 0..3, then a transaction marker at 3, then 4..6
        for (s, t) in [(0, 0), (1, 1), (2, 2), (4, 3), (5, 4)] {
            m.record(s, t);
        }
        assert_eq!(m.run_count(), 2);
        assert_eq!(m.translate(2), Some(2));
        assert_eq!(m.translate(3), Some(3), "a consumer at the marker next reads source 4 = target 3");
        assert_eq!(m.translate(4), Some(3));
        assert_eq!(m.translate(6), Some(5));
    }

    #[test]
    fn resends_after_restart_supersede_old_mappings() {
        let mut m = OffsetMap::default();
        for i in 0..10 {
            m.record(i, i);
        }
        // crash after source 9 was written but only position 7 stored: 7..10 are re-sent.
        for i in 7..12 {
            m.record(i, i + 3);
        }
        assert_eq!(m.translate(6), Some(6));
        assert_eq!(m.translate(7), Some(10), "the newest copy wins: no record is read twice after it");
        assert_eq!(m.translate(11), Some(14));
        assert_eq!(m.run_count(), 2);
    }

    #[test]
    fn truncation_drops_whole_runs_only() {
        let mut m = OffsetMap::default();
        for (s, t) in [(0, 0), (1, 1), (5, 2), (6, 3)] {
            m.record(s, t);
        }
        m.truncate_before(1);
        assert_eq!(m.run_count(), 2);
        m.truncate_before(2);
        assert_eq!(m.run_count(), 1);
        assert_eq!(m.translate(5), Some(2));
    }
}
