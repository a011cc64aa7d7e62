//! Event time at a source: a partition's watermark is the largest value of the table's
//! `WATERMARK` expression over its rows so far, as Flink's Kafka source keeps one per partition;
//! the pipeline's is the least over its partitions and never goes back. A bounded partition that
//! has been read to its end counts as +∞. With `table.exec.source.idle-timeout`, a partition
//! without rows for that long is left out until its next row (Flink's idleness); without it, an
//! empty partition holds the watermark back, as in Flink.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Part {
    watermark: i64,
    last_row: Instant,
    finished: bool,
}

#[derive(Debug)]
pub struct Watermarks {
    parts: BTreeMap<i32, Part>,
    idle_timeout: Option<Duration>,
    current: i64,
    /// Processing time: the watermark is the wall clock (windows fire on time without rows).
    processing: bool,
}

/// Milliseconds since the epoch by the wall clock.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Watermarks {
    pub fn new(partitions: &[i32], idle_timeout: Option<Duration>, now: Instant) -> Watermarks {
        let parts = partitions.iter().map(|p| (*p, Part { watermark: i64::MIN, last_row: now, finished: false })).collect();
        Watermarks { parts, idle_timeout, current: i64::MIN, processing: false }
    }

    /// Watermarks of processing time: the wall clock's, whatever the rows hold.
    pub fn processing_time(mut self) -> Watermarks {
        self.processing = true;
        self
    }

    /// Each partition's watermark, and the pipeline's, for a checkpoint.
    pub fn snapshot(&self) -> (Vec<(i32, i64)>, i64) {
        (self.parts.iter().map(|(p, part)| (*p, part.watermark)).collect(), self.current)
    }

    /// Puts back a checkpoint's watermarks (partitions it does not name keep theirs).
    pub fn restore(&mut self, parts: &[(i32, i64)], current: i64) {
        for (p, w) in parts {
            if let Some(part) = self.parts.get_mut(p) {
                part.watermark = *w;
            }
        }
        self.current = self.current.max(current);
    }

    /// The pipeline's watermark (ms; `i64::MIN` before there is one).
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Rows in arrival order, by partition, with their watermark expression's value (`None`
    /// for NULL, which moves nothing): returns the watermark each row arrived under.
    pub fn observe(&mut self, partitions: &[i32], values: &[Option<i64>], now: Instant) -> Vec<i64> {
        let mut before = Vec::with_capacity(values.len());
        for (p, v) in partitions.iter().zip(values) {
            before.push(self.current);
            let Some(part) = self.parts.get_mut(p) else { continue };
            part.last_row = now;
            if let Some(v) = v {
                if *v > part.watermark {
                    part.watermark = *v;
                    self.recompute(now);
                }
            }
        }
        before
    }

    /// A bounded partition read to its end.
    pub fn finish(&mut self, partition: i32, now: Instant) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.finished = true;
            self.recompute(now);
        }
    }

    /// The watermark now (idle partitions re-evaluated).
    pub fn tick(&mut self, now: Instant) -> i64 {
        self.recompute(now);
        self.current
    }

    fn recompute(&mut self, now: Instant) {
        let mut least: Option<i64> = None;
        let mut all_finished = true;
        for part in self.parts.values() {
            if part.finished {
                continue;
            }
            all_finished = false;
            if self.idle_timeout.is_some_and(|t| now.duration_since(part.last_row) >= t) {
                continue;
            }
            least = Some(least.map_or(part.watermark, |l| l.min(part.watermark)));
        }
        let next = match least {
            None if all_finished => i64::MAX,
            // Processing time passes with or without rows (a row's time is when it was read,
            // so none is late).
            _ if self.processing => wall_clock_ms(),
            Some(l) => l,
            // Every partition idle: the watermark stays.
            None => self.current,
        };
        self.current = self.current.max(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_partition_holds_the_watermark_and_rows_see_the_one_before_them() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(&[0, 1], None, t0);
        assert_eq!(w.observe(&[0, 0], &[Some(10), Some(20)], t0), [i64::MIN, i64::MIN]);
        assert_eq!(w.current(), i64::MIN, "partition 1 has no rows yet");
        assert_eq!(w.observe(&[1, 1, 0], &[Some(15), Some(5), None], t0), [i64::MIN, 15, 15]);
        assert_eq!(w.current(), 15);
        w.finish(1, t0);
        assert_eq!(w.current(), 20);
        w.finish(0, t0);
        assert_eq!(w.current(), i64::MAX);
    }

    #[test]
    fn an_idle_partition_is_left_out_only_with_a_timeout() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut held = Watermarks::new(&[0, 1], None, t0);
        held.observe(&[0], &[Some(100)], later);
        assert_eq!(held.tick(later), i64::MIN);
        let mut idle = Watermarks::new(&[0, 1], Some(Duration::from_secs(5)), t0);
        idle.observe(&[0], &[Some(100)], later);
        assert_eq!(idle.tick(later), 100);
        // Partition 1 comes back behind: the watermark does not go back.
        assert_eq!(idle.observe(&[1], &[Some(50)], later), [100]);
        assert_eq!(idle.current(), 100);
    }

    #[test]
    fn processing_time_follows_the_clock_with_or_without_rows() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(&[0, 1], None, t0).processing_time();
        let before = wall_clock_ms();
        let now = w.tick(t0);
        assert!(now >= before && now <= wall_clock_ms(), "{before} {now}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(w.tick(t0) >= now + 20, "time passes without rows");
        w.finish(0, t0);
        w.finish(1, t0);
        assert_eq!(w.current(), i64::MAX, "a bounded input read to its end fires everything");
    }
}
