//! Metric history without Prometheus: every series at two resolutions, 10 s for the last hour
//! and 1 min for the last day, in memory and saved to a file so a restart of `ferry serve` keeps
//! it. Pure apart from [`History::save`] and [`History::load`].
//!
//! A series is named by a key (`group/<cluster>/<group>/lag`, …) and holds one value per bucket:
//! the last value recorded in the bucket (lag is a level, not a sum). A bucket with no value is
//! absent, never zero: a gap in the chart says the cluster was not read.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The fine resolution and how many of its buckets are kept (an hour).
pub const FINE_MS: i64 = 10_000;
pub const FINE_KEPT: usize = 360;
/// The coarse resolution and how many of its buckets are kept (a day).
pub const COARSE_MS: i64 = 60_000;
pub const COARSE_KEPT: usize = 1_440;
/// Series kept at most; the least recently written go first beyond it.
pub const MAX_SERIES: usize = 50_000;

/// One bucket: its start and the last value recorded in it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = HistoryPoint)]
pub struct Point {
    pub at_ms: i64,
    pub value: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Series {
    fine: VecDeque<Point>,
    coarse: VecDeque<Point>,
    last_ms: i64,
}

fn put(ring: &mut VecDeque<Point>, width: i64, kept: usize, at_ms: i64, value: f64) {
    let bucket = at_ms - at_ms.rem_euclid(width);
    match ring.back_mut() {
        Some(p) if p.at_ms == bucket => p.value = value,
        // A clock that went back: the point joins no bucket rather than reorder the series.
        Some(p) if p.at_ms > bucket => {}
        _ => ring.push_back(Point { at_ms: bucket, value }),
    }
    while ring.len() > kept || ring.front().is_some_and(|p| p.at_ms < bucket - width * kept as i64) {
        ring.pop_front();
    }
}

/// Every series.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    series: BTreeMap<String, Series>,
}

impl History {
    /// Records `value` for `key` at `at_ms` in both resolutions.
    pub fn record(&mut self, key: &str, at_ms: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        if !self.series.contains_key(key) && self.series.len() >= MAX_SERIES {
            if let Some(oldest) = self.series.iter().min_by_key(|(_, s)| s.last_ms).map(|(k, _)| k.clone()) {
                self.series.remove(&oldest);
            }
        }
        let s = self.series.entry(key.to_string()).or_default();
        s.last_ms = s.last_ms.max(at_ms);
        put(&mut s.fine, FINE_MS, FINE_KEPT, at_ms, value);
        put(&mut s.coarse, COARSE_MS, COARSE_KEPT, at_ms, value);
    }

    /// A series at the fine (last hour) or coarse (last day) resolution; None if never recorded.
    pub fn points(&self, key: &str, coarse: bool) -> Option<Vec<Point>> {
        let s = self.series.get(key)?;
        Some(if coarse { s.coarse.iter().copied().collect() } else { s.fine.iter().copied().collect() })
    }

    /// Keys starting with `prefix` (a group's partitions).
    pub fn keys_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.series.range(prefix.to_string()..).map(|(k, _)| k.as_str()).take_while(move |k| k.starts_with(prefix))
    }

    /// Drops series not written for a day (groups and topics that are gone).
    pub fn expire(&mut self, now_ms: i64) {
        self.series.retain(|_, s| s.last_ms >= now_ms - COARSE_MS * COARSE_KEPT as i64);
    }

    /// Writes the history to `path` (whole, then renamed: a crash leaves the old file).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a saved history; a missing file is an empty history, an unreadable one an error.
    pub fn load(path: &Path) -> Result<History, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(History::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_the_last_value_and_roll_over() {
        let mut h = History::default();
        h.record("g", 1_000, 5.0);
        h.record("g", 9_000, 7.0);
        h.record("g", 12_000, 9.0);
        assert_eq!(h.points("g", false).unwrap(), vec![Point { at_ms: 0, value: 7.0 }, Point { at_ms: 10_000, value: 9.0 }]);
        assert_eq!(h.points("g", true).unwrap(), vec![Point { at_ms: 0, value: 9.0 }]);
        // Two hours later the fine ring holds only the last hour; the coarse one the day.
        for i in 0..720 {
            h.record("g", 12_000 + i * 10_000, i as f64);
        }
        let fine = h.points("g", false).unwrap();
        assert_eq!(fine.len(), FINE_KEPT);
        assert!(fine.windows(2).all(|w| w[1].at_ms - w[0].at_ms == FINE_MS));
        assert_eq!(h.points("g", true).unwrap().len(), 121);
        assert_eq!(h.points("missing", false), None);
    }

    #[test]
    fn a_gap_stays_a_gap_and_a_clock_going_back_is_ignored() {
        let mut h = History::default();
        h.record("g", 0, 1.0);
        h.record("g", 60_000, 2.0);
        assert_eq!(h.points("g", false).unwrap().len(), 2, "no invented zeros between");
        h.record("g", 30_000, 9.0);
        assert_eq!(h.points("g", false).unwrap().last().unwrap().value, 2.0);
    }

    #[test]
    fn it_survives_a_save_and_load_and_expires_what_is_gone() {
        let mut h = History::default();
        h.record("group/a/g/lag", 0, 3.0);
        h.record("group/a/g/p/t/0", 0, 1.0);
        h.record("group/a/other/lag", 0, 1.0);
        assert_eq!(h.keys_under("group/a/g/").collect::<Vec<_>>(), ["group/a/g/lag", "group/a/g/p/t/0"]);
        let path = std::env::temp_dir().join(format!("ferry-history-{}.json", std::process::id()));
        h.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), h);
        std::fs::write(&path, "{").unwrap();
        assert!(History::load(&path).unwrap_err().contains("ferry-history"), "a broken file is an error naming it");
        let _ = std::fs::remove_file(&path);
        h.record("group/a/g/lag", 2 * 86_400_000, 1.0);
        h.expire(2 * 86_400_000);
        assert_eq!(h.keys_under("group/").count(), 1);
    }
}
