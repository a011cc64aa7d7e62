//! A consumer group's health, per partition and for the group, from a window of samples taken as
//! the group is polled: Burrow's evaluation rules with two changes.
//!
//! - Burrow calls a partition OK when *any* sample of its window has zero lag, so one such sample
//!   hid a consumer stopped for 20 minutes (Burrow #745). Here only the latest sample's lag counts.
//! - Burrow tells a stopped consumer from a stalled one by commit times, which Kafka's OffsetFetch
//!   does not return; here the group's membership does: an offset that does not move while a
//!   member owns the partition is STALL (the consumer runs but does not progress), with no member
//!   it is STOP.
//!
//! Rules, first match wins: no sample → ERR; latest lag zero → OK; the committed offset moved back
//! → REWIND; no member owns the partition and its offset did not move since the previous poll,
//! with lag → STOP (seen at the second poll); a member owns it and its offset did not move over
//! the whole window (of at least [`MIN_SPAN_MS`]) → STALL; the offset moved but the lag never
//! fell in any interval (at least three samples) → WARN; otherwise OK.

use serde::Serialize;
use utoipa::ToSchema;

/// A window must span this long before an unmoving offset is called stalled or stopped (a
/// consumer that commits every few seconds is not stalled between two polls).
pub const MIN_SPAN_MS: i64 = 30_000;

/// Health, least to most severe (a group takes its worst partition's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Rewind,
    Stall,
    Stop,
    Err,
}

impl Status {
    pub const ALL: [Status; 6] = [Status::Ok, Status::Warn, Status::Rewind, Status::Stall, Status::Stop, Status::Err];

    /// The name the API, Prometheus and alert policies use (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Rewind => "REWIND",
            Status::Stall => "STALL",
            Status::Stop => "STOP",
            Status::Err => "ERR",
        }
    }
}

/// One poll of a partition: when, the group's committed offset, the partition's end offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub committed: i64,
    pub end: i64,
}

impl Sample {
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

/// A status and why, in words an operator reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Verdict {
    pub status: Status,
    pub reason: String,
}

impl Verdict {
    fn new(status: Status, reason: String) -> Verdict {
        Verdict { status, reason }
    }
}

/// Judges one partition from its samples (oldest first); `owned` says whether a live member of
/// the group is assigned the partition now.
pub fn partition(window: &[Sample], owned: bool) -> Verdict {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return Verdict::new(Status::Err, "no committed offset read yet".into());
    };
    if last.lag() == 0 {
        return Verdict::new(Status::Ok, "caught up".into());
    }
    if let Some(w) = window.windows(2).find(|w| w[1].committed < w[0].committed) {
        return Verdict::new(Status::Rewind, format!("the committed offset moved back from {} to {}", w[0].committed, w[1].committed));
    }
    let span_s = (last.at_ms - first.at_ms) / 1000;
    // Nobody owns it and its offset did not move since the last poll: nothing consumes it, and
    // waiting longer would only say so later.
    if !owned && window.len() >= 2 && window[window.len() - 2].committed == last.committed {
        let unmoved = window.iter().rev().take_while(|s| s.committed == last.committed).last().map_or(0, |s| (last.at_ms - s.at_ms) / 1000);
        return Verdict::new(Status::Stop, format!("offset {} has not moved for {unmoved} s with {} records to read, and no member owns the partition", last.committed, last.lag()));
    }
    // A member owns it: it may commit only every few seconds (5 s by default, a Flink job at each
    // checkpoint), so only a whole window without progress is a stall.
    if owned && first.committed == last.committed && last.at_ms - first.at_ms >= MIN_SPAN_MS {
        return Verdict::new(Status::Stall, format!("offset {} has not moved for {span_s} s with {} records to read, while a member owns the partition", last.committed, last.lag()));
    }
    if window.len() >= 3 && first.committed != last.committed && window.windows(2).all(|w| w[1].lag() >= w[0].lag()) {
        return Verdict::new(Status::Warn, format!("falling behind: the lag grew from {} to {} records in {span_s} s while the group consumed", first.lag(), last.lag()));
    }
    Verdict::new(Status::Ok, "consuming".into())
}

/// The group's verdict: its worst partition's, naming the partition (`topic[partition]`).
pub fn group<'a>(partitions: impl IntoIterator<Item = (&'a str, i32, &'a Verdict)>) -> Verdict {
    partitions
        .into_iter()
        .max_by_key(|(_, _, v)| v.status)
        .map_or_else(|| Verdict::new(Status::Ok, "no committed offsets".into()), |(t, p, v)| Verdict::new(v.status, format!("{t}[{p}]: {}", v.reason)))
}

/// How fast the group consumes and the partition grows over the window (records/s), and when
/// the group catches up at those rates (`None`: never, at them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Trend {
    pub consume_per_s: f64,
    pub produce_per_s: f64,
    pub catch_up_s: Option<f64>,
}

pub fn trend(window: &[Sample]) -> Option<Trend> {
    let (first, last) = (window.first()?, window.last()?);
    let secs = (last.at_ms - first.at_ms) as f64 / 1000.0;
    if secs <= 0.0 {
        return None;
    }
    let consume_per_s = (last.committed - first.committed) as f64 / secs;
    let produce_per_s = (last.end - first.end) as f64 / secs;
    let gaining = consume_per_s - produce_per_s;
    let catch_up_s = if last.lag() == 0 { Some(0.0) } else if gaining > 0.0 { Some(last.lag() as f64 / gaining) } else { None };
    Some(Trend { consume_per_s, produce_per_s, catch_up_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every 10 s from (committed, end) pairs.
    fn every_10s(points: &[(i64, i64)]) -> Vec<Sample> {
        points.iter().enumerate().map(|(i, &(committed, end))| Sample { at_ms: i as i64 * 10_000, committed, end }).collect()
    }

    #[test]
    fn a_zero_lag_sample_earlier_in_the_window_does_not_hide_a_stop() {
        // Burrow #745: caught up once, then the consumer stopped while records kept coming.
        let w = every_10s(&[(100, 100), (100, 150), (100, 200), (100, 250), (100, 300)]);
        let v = partition(&w, false);
        assert_eq!(v.status, Status::Stop, "{v:?}");
        assert!(v.reason.contains("offset 100 has not moved for 40 s with 200 records"), "{v:?}");
        assert_eq!(partition(&w, true).status, Status::Stall, "a member owns it: it runs but does not progress");
    }

    #[test]
    fn names_are_the_serialized_ones() {
        for s in Status::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn each_rule_in_order() {
        assert_eq!(partition(&[], true).status, Status::Err);
        assert_eq!(partition(&every_10s(&[(10, 50), (50, 50)]), true).status, Status::Ok, "caught up now");
        assert_eq!(partition(&every_10s(&[(10, 50), (5, 50)]), true).status, Status::Rewind);
        assert_eq!(partition(&every_10s(&[(10, 50), (10, 60)]), true).status, Status::Ok, "too short a window to call a member stalled");
        let stopped = partition(&every_10s(&[(10, 50), (10, 60)]), false);
        assert_eq!(stopped.status, Status::Stop, "no member and no progress between two polls: stopped at once");
        assert!(stopped.reason.contains("has not moved for 10 s"), "{stopped:?}");
        assert_eq!(partition(&every_10s(&[(10, 50)]), false).status, Status::Ok, "one poll cannot tell");
        let behind = every_10s(&[(10, 50), (20, 70), (30, 95), (40, 130)]);
        let v = partition(&behind, true);
        assert_eq!(v.status, Status::Warn, "{v:?}");
        assert!(v.reason.contains("grew from 40 to 90"), "{v:?}");
        assert_eq!(partition(&every_10s(&[(10, 50), (30, 60), (50, 65), (60, 70)]), true).status, Status::Ok, "lag falling");
        assert_eq!(partition(&every_10s(&[(10, 10), (10, 10), (10, 10), (10, 10)]), false).status, Status::Ok, "idle topic, caught up group");
    }

    #[test]
    fn a_group_takes_its_worst_partition_and_trends_say_when_it_catches_up() {
        let ok = Verdict::new(Status::Ok, "consuming".into());
        let stop = Verdict::new(Status::Stop, "gone".into());
        let g = group([("a", 0, &ok), ("b", 3, &stop), ("a", 1, &ok)]);
        assert_eq!((g.status, g.reason.as_str()), (Status::Stop, "b[3]: gone"));
        assert_eq!(group(std::iter::empty()).status, Status::Ok);
        let t = trend(&every_10s(&[(0, 1000), (300, 1100)])).unwrap();
        assert_eq!((t.consume_per_s, t.produce_per_s), (30.0, 10.0));
        assert_eq!(t.catch_up_s, Some(800.0 / 20.0));
        assert_eq!(trend(&every_10s(&[(0, 1000), (100, 1200)])).unwrap().catch_up_s, None, "falling behind: never at these rates");
    }
}
