//! The monitoring history `ferry serve` keeps itself ([`ferry_monitor::history`]): every numeric
//! metric the alerts observe (group lag, topic rates and flags, broker presence, flow lag) and
//! each group partition's lag, at 10 s for an hour and 1 min for a day. Saved to
//! `<data-dir>/history.json` every minute and at shutdown, read back at start. Served as
//! `…/groups/{group}/history` and `…/topics/{topic}/history`.

use std::path::PathBuf;
use std::sync::Mutex;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_monitor::alerts::{Observation, Value};
use ferry_monitor::history::{History, Point};
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::{IntoParams, ToSchema};

use crate::alerts::Polled;
use crate::api::{error_body, ErrorBody};
use crate::AppState;

/// The history and where it is saved.
pub struct Recorder {
    path: PathBuf,
    history: Mutex<History>,
}

fn key(entity: &str, cluster: &str, name: &str, metric: &str) -> String {
    format!("{entity}/{cluster}/{name}/{metric}")
}

fn partition_prefix(cluster: &str, group: &str) -> String {
    format!("group/{cluster}/{group}/partition/")
}

impl Recorder {
    /// Reads `<dir>/history.json` (a file that does not parse is an error naming it).
    pub fn open(dir: &std::path::Path) -> Result<Recorder, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
        let path = dir.join("history.json");
        let history = History::load(&path)?;
        Ok(Recorder { path, history: Mutex::new(history) })
    }

    /// Records one evaluation's observations and the group partitions of its polls.
    pub(crate) fn record(&self, polled: &Polled, now_ms: i64) {
        let mut h = self.history.lock().unwrap();
        let at = |cluster: &str| polled.snapshots.iter().find(|(c, _)| c == cluster).and_then(|(_, s)| s.polled_at_ms).unwrap_or(now_ms);
        for Observation { entity, cluster, name, metric, value } in &polled.observations {
            if let Value::Number(v) = value {
                h.record(&key(entity.as_str(), cluster, name, metric), at(cluster), *v);
            }
        }
        for (cluster, snap) in &polled.snapshots {
            let at = snap.polled_at_ms.unwrap_or(now_ms);
            for g in snap.groups.values() {
                let prefix = partition_prefix(cluster, &g.group);
                for p in &g.partitions {
                    if let Some(lag) = p.lag.lag {
                        h.record(&format!("{prefix}{}/{}", p.lag.topic, p.lag.partition), at, lag as f64);
                    }
                }
            }
        }
    }

    /// Saves the history (and forgets series silent for a day); a failure is logged.
    pub fn save(&self, now_ms: i64) {
        let mut h = self.history.lock().unwrap();
        h.expire(now_ms);
        if let Err(e) = h.save(&self.path) {
            warn!(path = %self.path.display(), error = %e, "cannot save the monitoring history; kept in memory, tried again in a minute");
        }
    }
}

/// `10s` (the last hour) or `1m` (the last day).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
pub(crate) enum Resolution {
    #[default]
    #[serde(rename = "10s")]
    TenSeconds,
    #[serde(rename = "1m")]
    OneMinute,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// `10s` (default: the last hour) or `1m` (the last day).
    resolution: Option<Resolution>,
}

/// One partition's lag over time.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PartitionSeries {
    topic: String,
    partition: i32,
    lag: Vec<Point>,
}

/// A group's lag over time: in total, the oldest unconsumed record's age, and per partition.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GroupHistory {
    resolution_ms: i64,
    lag: Vec<Point>,
    lag_seconds: Vec<Point>,
    partitions: Vec<PartitionSeries>,
}

/// A topic over time: messages in per second, under-replicated and offline partitions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TopicHistory {
    resolution_ms: i64,
    messages_in_per_sec: Vec<Point>,
    under_replicated_partitions: Vec<Point>,
    offline_partitions: Vec<Point>,
}

/// The history of a cluster of the file, and the resolution asked for (coarse?, its width); or
/// the error answer (a resolution other than 10s or 1m, an unknown cluster).
fn asked<'a>(state: &'a AppState, cluster: &str, q: Result<Query<HistoryQuery>, QueryRejection>) -> Result<(&'a Recorder, bool, i64), Response> {
    let (coarse, width) = match q {
        Ok(Query(q)) => match q.resolution.unwrap_or_default() {
            Resolution::TenSeconds => (false, ferry_monitor::history::FINE_MS),
            Resolution::OneMinute => (true, ferry_monitor::history::COARSE_MS),
        },
        Err(e) => return Err(error_body(StatusCode::BAD_REQUEST, "bad_request", &format!("{} (resolution is 10s or 1m)", e.body_text()))),
    };
    if !state.shared.clusters.lock().unwrap().contains_key(cluster) {
        return Err(error_body(StatusCode::NOT_FOUND, "not_found", &format!("no cluster '{cluster}' in the configuration")));
    }
    let rec = state.history.as_deref().ok_or_else(|| error_body(StatusCode::NOT_FOUND, "not_found", "the history is not kept"))?;
    Ok((rec, coarse, width))
}

/// A group's lag history (total, oldest record's age, each partition), from `ferry serve`'s
/// own store: no Prometheus needed. 404 when the group was never seen.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/groups/{group}/history", tag = "monitoring", operation_id = "group_history",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration"), ("group" = String, Path, description = "the group id, URL-encoded"), HistoryQuery),
    responses((status = 200, body = GroupHistory), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn group(State(state): State<AppState>, Path((cluster, group)): Path<(String, String)>, q: Result<Query<HistoryQuery>, QueryRejection>) -> Response {
    let (rec, coarse, resolution_ms) = match asked(&state, &cluster, q) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let h = rec.history.lock().unwrap();
    let Some(lag) = h.points(&key("group", &cluster, &group, "lag_records"), coarse) else {
        return error_body(StatusCode::NOT_FOUND, "not_found", &format!("no history of group '{group}' on cluster '{cluster}'"));
    };
    let prefix = partition_prefix(&cluster, &group);
    let mut partitions: Vec<PartitionSeries> = h
        .keys_under(&prefix)
        .filter_map(|k| {
            let (topic, partition) = k[prefix.len()..].rsplit_once('/')?;
            Some(PartitionSeries { topic: topic.to_string(), partition: partition.parse().ok()?, lag: h.points(k, coarse)? })
        })
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let lag_seconds = h.points(&key("group", &cluster, &group, "lag_seconds"), coarse).unwrap_or_default();
    Json(GroupHistory { resolution_ms, lag, lag_seconds, partitions }).into_response()
}

/// A topic's history: messages in per second (end-offset deltas), under-replicated and
/// offline partitions. 404 when the topic was never seen.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/topics/{topic}/history", tag = "monitoring", operation_id = "topic_history",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration"), ("topic" = String, Path, description = "the topic, URL-encoded"), HistoryQuery),
    responses((status = 200, body = TopicHistory), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn topic(State(state): State<AppState>, Path((cluster, topic)): Path<(String, String)>, q: Result<Query<HistoryQuery>, QueryRejection>) -> Response {
    let (rec, coarse, resolution_ms) = match asked(&state, &cluster, q) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let h = rec.history.lock().unwrap();
    let Some(under_replicated_partitions) = h.points(&key("topic", &cluster, &topic, "under_replicated_partitions"), coarse) else {
        return error_body(StatusCode::NOT_FOUND, "not_found", &format!("no history of topic '{topic}' on cluster '{cluster}'"));
    };
    let series = |m: &str| h.points(&key("topic", &cluster, &topic, m), coarse).unwrap_or_default();
    Json(TopicHistory { resolution_ms, messages_in_per_sec: series("messages_in_per_sec"), under_replicated_partitions, offline_partitions: series("offline_partitions") }).into_response()
}
