//! A Flink job's progress from its JobManager's REST API (the SQL Gateway's `SHOW JOBS` has only
//! id, name and state): records read by its sources and written by its sinks, rows its window
//! operators dropped as late, and the watermark at its sinks, as `ferry sql`'s job reports give
//! them for the embedded engine. Flink's metric fetcher refreshes these every 10 s by default
//! (`metrics.fetcher.update-interval`).
//!
//! Per vertex of the job graph: the names of its operators' metrics (`GET
//! /jobs/{id}/vertices/{v}/subtasks/metrics`), then the wanted ones summed (or the least, for
//! watermarks) over its subtasks (`?get=…&agg=…`). Which names count is [`wanted`], pure.

use std::time::Duration;

use serde_json::Value;

use crate::GatewayError;

/// What a job has done so far (None: Flink has not reported it yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobMetrics {
    /// Records its sources emitted.
    pub records_in: Option<u64>,
    /// Records its sinks' writers took.
    pub records_out: Option<u64>,
    /// Rows window operators dropped as late.
    pub late: Option<u64>,
    /// The least watermark at its sinks (ms), once every sink has one.
    pub watermark_ms: Option<i64>,
}

/// Which of a vertex's metric names count for what.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Wanted {
    pub records_in: Vec<String>,
    pub records_out: Vec<String>,
    pub late: Vec<String>,
    pub watermark: Vec<String>,
}

/// Sorts metric names (as `subtasks/metrics` lists them, without subtask index): a source
/// operator's `numRecordsOut` (sources are named `Source__…`), a sink writer's `numRecordsIn`
/// and `currentInputWatermark` (`…__Writer.`), and every `numLateRecordsDropped`.
pub(crate) fn wanted(names: &[String]) -> Wanted {
    let mut w = Wanted::default();
    for n in names {
        let Some((operator, metric)) = n.rsplit_once('.') else { continue };
        let bucket = match metric {
            "numRecordsOut" if operator.starts_with("Source__") => &mut w.records_in,
            "numRecordsIn" if operator.ends_with("__Writer") => &mut w.records_out,
            "currentInputWatermark" if operator.ends_with("__Writer") => &mut w.watermark,
            "numLateRecordsDropped" => &mut w.late,
            _ => continue,
        };
        bucket.push(n.clone());
    }
    w
}

/// A JobManager's REST API.
pub struct JobManager {
    url: String,
    client: reqwest::blocking::Client,
}

impl JobManager {
    /// The REST API at `url` (`http://HOST:PORT`; [`crate::Gateway::jobmanager_url`] finds it).
    pub fn new(url: &str) -> Result<JobManager, GatewayError> {
        let url = url.trim_end_matches('/').to_string();
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| GatewayError::JobManager { url: url.clone(), message: e.to_string() })?;
        Ok(JobManager { url, client })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, path: &str) -> Result<Value, GatewayError> {
        let response = self.client.get(format!("{}{path}", self.url)).send().map_err(|e| GatewayError::JobManager { url: self.url.clone(), message: e.without_url().to_string() })?;
        let status = response.status();
        let text = response.text().unwrap_or_default();
        if !status.is_success() {
            return Err(GatewayError::JobManager { url: self.url.clone(), message: format!("GET {path} answered HTTP {status}: {}", text.chars().take(300).collect::<String>()) });
        }
        serde_json::from_str(&text).map_err(|e| GatewayError::JobManager { url: self.url.clone(), message: format!("GET {path} answered without JSON: {e}") })
    }

    /// Each metric of `names` over the vertex's subtasks, aggregated by `agg` (`sum`, `min`).
    fn aggregated(&self, job: &str, vertex: &str, names: &[String], agg: &str) -> Result<Vec<f64>, GatewayError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let get = names.iter().map(|n| encode(n)).collect::<Vec<_>>().join(",");
        let answer = self.get(&format!("/jobs/{job}/vertices/{vertex}/subtasks/metrics?get={get}&agg={agg}"))?;
        Ok(answer.as_array().into_iter().flatten().filter_map(|m| m[agg].as_f64()).collect())
    }

    /// Where job `id` can resume from: its latest savepoint, else its latest retained
    /// checkpoint; None when Flink kept neither.
    pub fn latest_savepoint(&self, id: &str) -> Result<Option<String>, GatewayError> {
        let history = self.get(&format!("/jobs/{id}/checkpoints"))?;
        let path = |kind: &str| history["latest"][kind]["external_path"].as_str().filter(|p| !p.is_empty() && *p != "<checkpoint-not-externally-addressable>").map(str::to_string);
        Ok(path("savepoint").or_else(|| path("completed")))
    }

    /// Job `id`'s progress.
    pub fn metrics(&self, id: &str) -> Result<JobMetrics, GatewayError> {
        let job = self.get(&format!("/jobs/{id}"))?;
        let mut out = JobMetrics::default();
        let add = |total: &mut Option<u64>, values: &[f64]| {
            if !values.is_empty() {
                *total = Some(total.unwrap_or(0) + values.iter().map(|v| *v as u64).sum::<u64>());
            }
        };
        let mut watermarks: Vec<i64> = Vec::new();
        let mut sinks = 0;
        for vertex in job["vertices"].as_array().into_iter().flatten() {
            let Some(v) = vertex["id"].as_str() else { continue };
            let listed = self.get(&format!("/jobs/{id}/vertices/{v}/subtasks/metrics"))?;
            let names: Vec<String> = listed.as_array().into_iter().flatten().filter_map(|m| m["id"].as_str().map(str::to_string)).collect();
            let w = wanted(&names);
            add(&mut out.records_in, &self.aggregated(id, v, &w.records_in, "sum")?);
            add(&mut out.records_out, &self.aggregated(id, v, &w.records_out, "sum")?);
            add(&mut out.late, &self.aggregated(id, v, &w.late, "sum")?);
            sinks += w.watermark.len();
            // Flink's "no watermark yet" is Long.MIN_VALUE.
            watermarks.extend(self.aggregated(id, v, &w.watermark, "min")?.into_iter().map(|m| m as i64).filter(|m| *m > i64::MIN / 2));
        }
        if sinks > 0 && watermarks.len() == sinks {
            out.watermark_ms = watermarks.into_iter().min();
        }
        Ok(out)
    }
}

/// A metric name in a query string (operator names hold `[`, `]` and spaces).
fn encode(name: &str) -> String {
    name.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_sinks_and_late_drops_are_told_apart_by_name() {
        // Names as Flink 2.2 lists them for a windowed INSERT into a sink (two vertices).
        let names: Vec<String> = [
            "Source__orders[1].numRecordsOut",
            "Source__orders[1].numRecordsIn",
            "Calc[3].numRecordsOut",
            "LocalWindowAggregate[4].numRecordsOut",
            "numRecordsOut",
            "GlobalWindowAggregate[6].numLateRecordsDropped",
            "GlobalWindowAggregate[6].lateRecordsDroppedRate",
            "snk[8]__Writer.numRecordsIn",
            "snk[8]__Writer.numRecordsSend",
            "snk[8]__Writer.currentInputWatermark",
            "Calc[7].currentInputWatermark",
        ]
        .map(str::to_string)
        .to_vec();
        let w = wanted(&names);
        assert_eq!(w.records_in, ["Source__orders[1].numRecordsOut"]);
        assert_eq!(w.records_out, ["snk[8]__Writer.numRecordsIn"]);
        assert_eq!(w.late, ["GlobalWindowAggregate[6].numLateRecordsDropped"]);
        assert_eq!(w.watermark, ["snk[8]__Writer.currentInputWatermark"]);
        assert_eq!(encode("snk[8]__Writer.numRecordsIn"), "snk%5B8%5D__Writer.numRecordsIn");
    }
}
