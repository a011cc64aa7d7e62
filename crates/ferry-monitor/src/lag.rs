//! Lag in seconds: how old the first record a group has not consumed is.
//!
//! Exact where it can be: the record at the committed offset is read (one small fetch) and its
//! timestamp taken, so a group one old record behind is as late as that record, whatever the
//! traffic since (kafka-lag-exporter's interpolation reported 270,000 s in a burst and values
//! 200,000x too high on a replay). A caught-up group is 0 s behind, idle topic or not.
//!
//! Interpolated only where the record cannot be read (compacted away, no read permission): the
//! end offsets polled over time say between which two polls the committed offset was written, so
//! the answer is the middle of that interval with half of it as the error bound. An offset older
//! than the oldest poll is at least that old, and said so (no bound above).

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The group has read everything: 0 s.
    CaughtUp,
    /// Now minus the timestamp of the record at the committed offset.
    RecordTimestamp,
    /// Between two polls of the end offset: the middle, give or take the bound.
    Interpolated,
    /// Older than every poll kept: at least this old.
    AtLeast,
}

/// Serialized flat into a partition's view: `lag_seconds`, `lag_seconds_method`,
/// `lag_seconds_error_bound` (all absent when the lag in seconds is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct LagSeconds {
    #[serde(rename = "lag_seconds")]
    pub seconds: f64,
    #[serde(rename = "lag_seconds_method")]
    pub method: Method,
    /// How far the true value may be from `seconds` either way: 0 for `record_timestamp` and
    /// `caught_up`, `null` for `at_least` (unbounded above).
    #[serde(rename = "lag_seconds_error_bound")]
    pub error_bound_seconds: Option<f64>,
}

/// Exact lag: `record_timestamp_ms` is the timestamp of the record at `committed`, if it was
/// read. A record stamped in the future (clock skew) counts as 0 s.
pub fn exact(now_ms: i64, committed: i64, end: i64, record_timestamp_ms: Option<i64>) -> Option<LagSeconds> {
    if committed >= end {
        return Some(LagSeconds { seconds: 0.0, method: Method::CaughtUp, error_bound_seconds: Some(0.0) });
    }
    let t = record_timestamp_ms?;
    Some(LagSeconds { seconds: ((now_ms - t).max(0)) as f64 / 1000.0, method: Method::RecordTimestamp, error_bound_seconds: Some(0.0) })
}

/// Interpolated lag from polls of the partition's end offset, `(at_ms, end)` oldest first.
pub fn interpolated(now_ms: i64, committed: i64, polls: &[(i64, i64)]) -> Option<LagSeconds> {
    let (&(_, latest_end), &(oldest_at, oldest_end)) = (polls.last()?, polls.first()?);
    if committed >= latest_end {
        return Some(LagSeconds { seconds: 0.0, method: Method::CaughtUp, error_bound_seconds: Some(0.0) });
    }
    if committed < oldest_end {
        // Written before the oldest poll.
        return Some(LagSeconds { seconds: ((now_ms - oldest_at).max(0)) as f64 / 1000.0, method: Method::AtLeast, error_bound_seconds: None });
    }
    // The first poll whose end is past `committed`: the record was written after the poll
    // before it and by this one.
    let i = polls.iter().position(|&(_, end)| end > committed)?;
    let (after, before) = (polls[i].0, polls[i - 1].0);
    let newest_age = (now_ms - after).max(0) as f64 / 1000.0;
    let oldest_age = (now_ms - before).max(0) as f64 / 1000.0;
    Some(LagSeconds { seconds: (newest_age + oldest_age) / 2.0, method: Method::Interpolated, error_bound_seconds: Some((oldest_age - newest_age) / 2.0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_lag_is_the_age_of_the_first_unread_record() {
        let caught_up = exact(100_000, 50, 50, None).unwrap();
        assert_eq!((caught_up.seconds, caught_up.method), (0.0, Method::CaughtUp), "an idle topic and a caught-up group: 0 s");
        let behind = exact(100_000, 40, 50, Some(70_000)).unwrap();
        assert_eq!((behind.seconds, behind.method, behind.error_bound_seconds), (30.0, Method::RecordTimestamp, Some(0.0)));
        assert_eq!(exact(100_000, 40, 50, Some(120_000)).unwrap().seconds, 0.0, "skewed clocks never give a negative lag");
        assert_eq!(exact(100_000, 40, 50, None), None, "the record could not be read: the caller interpolates");
    }

    #[test]
    fn interpolation_brackets_the_write_and_says_how_far_off_it_can_be() {
        // End offsets polled every 30 s; a burst of 1,000,000 records in the last interval.
        let polls = [(0, 100), (30_000, 200), (60_000, 1_000_200)];
        let l = interpolated(90_000, 150, &polls).unwrap();
        assert_eq!((l.seconds, l.method, l.error_bound_seconds), (75.0, Method::Interpolated, Some(15.0)));
        let burst = interpolated(90_000, 500, &polls).unwrap();
        assert_eq!((burst.seconds, burst.error_bound_seconds), (45.0, Some(15.0)), "a burst does not inflate the age: bounded by the polls");
        let replay = interpolated(90_000, 10, &polls).unwrap();
        assert_eq!((replay.seconds, replay.method, replay.error_bound_seconds), (90.0, Method::AtLeast, None), "a replay from the start: at least as old as the history");
        assert_eq!(interpolated(90_000, 1_000_200, &polls).unwrap().method, Method::CaughtUp);
        assert_eq!(interpolated(90_000, 5, &[]), None);
    }
}
