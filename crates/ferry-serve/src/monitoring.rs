//! Every cluster of the file as `ferry_monitor::collect` last polled it (issue 16), answered
//! from memory: `GET /api/v1/clusters/{cluster}/brokers`, `…/topics` (paged, searchable) and
//! `…/topics/{topic}` (partitions with leader, replicas, ISR and flags; the groups consuming it),
//! `…/groups` (paged, searchable) and `…/groups/{group}` (members, and per partition the lag in
//! records and seconds with the method that gave it, and a status with its reason).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_monitor::cluster::{BrokerView, TopicView};
use ferry_monitor::collect::{ClusterSnapshot, GroupView};
use ferry_monitor::status::Status;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{error_body, ErrorBody};
use crate::AppState;

/// One line of the group list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GroupSummary {
    group: String,
    state: String,
    status: Status,
    reason: String,
    members: usize,
    /// Records not consumed, over every partition.
    lag: i64,
    /// The oldest unconsumed record's age, in seconds.
    lag_seconds_max: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GroupPage {
    /// Groups matching `search`, before paging.
    total: usize,
    groups: Vec<GroupSummary>,
    /// When the cluster was last polled (ms since the epoch).
    polled_at_ms: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Paging {
    /// At most this many (default 100, at most 1,000).
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// Skip this many first (default 0).
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// Only those whose name contains this (case-insensitive).
    search: Option<String>,
    /// Order before paging: `name` (default); for groups also `lag`, `lag_seconds` and `status`
    /// (largest or worst first); for topics `partitions`, `records` and `under_replicated`
    /// (largest first). Another value is a 400.
    sort: Option<String>,
}

/// A list call's cluster as last polled and its paging, or the error answer (a query string
/// that is not `limit`, `offset`, `search` and `sort` of the right types is a 400).
fn list_request(state: &AppState, cluster: &str, paging: Result<Query<Paging>, QueryRejection>) -> Result<(std::sync::Arc<ClusterSnapshot>, Paging), Response> {
    let Query(paging) = paging.map_err(|e| error_body(StatusCode::BAD_REQUEST, "bad_request", &e.body_text()))?;
    Ok((polled(state, cluster)?, paging))
}

/// The items whose name contains `search` (case-insensitive), ordered by `sort` (a key of
/// `keys`, largest first; by name when absent or `name`): how many, and the page asked for; or
/// the 400 for an unknown `sort`.
fn paged<'a, T>(items: impl Iterator<Item = &'a T>, name: impl Fn(&T) -> &str, keys: &[(&str, fn(&T) -> f64)], paging: &Paging) -> Result<(usize, Vec<&'a T>), Response> {
    let search = paging.search.as_deref().unwrap_or_default().to_lowercase();
    let mut matching: Vec<&T> = items.filter(|i| name(i).to_lowercase().contains(&search)).collect();
    match paging.sort.as_deref() {
        None | Some("name") => {}
        Some(sort) => {
            let Some((_, key)) = keys.iter().find(|(k, _)| *k == sort) else {
                let known: Vec<&str> = std::iter::once("name").chain(keys.iter().map(|(k, _)| *k)).collect();
                return Err(error_body(StatusCode::BAD_REQUEST, "bad_request", &format!("sort: '{sort}' is not one of {}", known.join(", "))));
            };
            // Stable: equal keys keep the name order.
            matching.sort_by(|a, b| key(b).total_cmp(&key(a)));
        }
    }
    let (offset, limit) = (paging.offset.unwrap_or(0), paging.limit.unwrap_or(100).clamp(1, 1000));
    Ok((matching.len(), matching.into_iter().skip(offset).take(limit).collect()))
}

/// The cluster's groups as last polled, or the error answer.
fn polled(state: &AppState, cluster: &str) -> Result<std::sync::Arc<ClusterSnapshot>, Response> {
    let Some(monitor) = &state.monitor else {
        return Err(error_body(StatusCode::NOT_FOUND, "not_found", "cluster monitoring is not running"));
    };
    let Some(groups) = monitor.cluster(cluster) else {
        return Err(error_body(StatusCode::NOT_FOUND, "not_found", &format!("no cluster '{cluster}' in the configuration")));
    };
    match (&groups.error, groups.polled_at_ms) {
        (Some(e), _) => Err(error_body(StatusCode::SERVICE_UNAVAILABLE, "cluster_unreachable", &format!("cluster '{cluster}': {e}"))),
        (None, None) => Err(error_body(StatusCode::SERVICE_UNAVAILABLE, "not_ready", &format!("cluster '{cluster}' has not been polled yet"))),
        (None, Some(_)) => Ok(groups),
    }
}

/// The cluster's consumer groups: state, status, members, total lag and the oldest unconsumed
/// record's age. Paged and searched on the server, from memory.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/groups", tag = "monitoring",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration"), Paging),
    responses((status = 200, body = GroupPage), (status = 400, description = "`limit` or `offset` not a whole number, or an unknown `sort`", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn groups(State(state): State<AppState>, Path(cluster): Path<String>, paging: Result<Query<Paging>, QueryRejection>) -> Response {
    let (polled, paging) = match list_request(&state, &cluster, paging) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let keys: [(&str, fn(&GroupView) -> f64); 3] = [("lag", |g| g.lag as f64), ("lag_seconds", |g| g.lag_seconds_max.unwrap_or(-1.0)), ("status", |g| g.status as u8 as f64)];
    let (total, page) = match paged(polled.groups.values(), |g: &GroupView| &g.group, &keys, &paging) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let groups = page.into_iter().map(GroupSummary::of).collect();
    Json(GroupPage { total, groups, polled_at_ms: polled.polled_at_ms }).into_response()
}

impl GroupSummary {
    fn of(g: &GroupView) -> GroupSummary {
        GroupSummary { group: g.group.clone(), state: g.state.clone(), status: g.status, reason: g.reason.clone(), members: g.members.len(), lag: g.lag, lag_seconds_max: g.lag_seconds_max }
    }
}

/// At most this many groups needing attention in the overview.
const ATTENTION: usize = 100;

/// The whole cluster in counts, over every topic and group (not a page of them).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClusterOverview {
    brokers: usize,
    topics: usize,
    partitions: usize,
    under_replicated: usize,
    offline: usize,
    groups: usize,
    /// Groups per status (every status present, 0 when none).
    groups_by_status: std::collections::BTreeMap<&'static str, usize>,
    /// The groups whose status is not OK, worst first (then most lag), at most 100.
    attention: Vec<GroupSummary>,
    /// When the cluster was last polled (ms since the epoch).
    polled_at_ms: Option<i64>,
}

/// The cluster at a glance: brokers, topics, partitions under-replicated and offline, groups by
/// status and the groups needing attention, counted over the whole cluster as last polled.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/overview", tag = "monitoring",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration")),
    responses((status = 200, body = ClusterOverview), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn overview(State(state): State<AppState>, Path(cluster): Path<String>) -> Response {
    let polled = match polled(&state, &cluster) {
        Ok(p) => p,
        Err(r) => return r,
    };
    Json(cluster_overview(&polled)).into_response()
}

fn cluster_overview(polled: &ClusterSnapshot) -> ClusterOverview {
    let mut groups_by_status: std::collections::BTreeMap<&'static str, usize> = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for g in polled.groups.values() {
        *groups_by_status.entry(g.status.as_str()).or_default() += 1;
    }
    let mut attention: Vec<&GroupView> = polled.groups.values().filter(|g| g.status != Status::Ok).collect();
    attention.sort_by(|a, b| b.status.cmp(&a.status).then(b.lag.cmp(&a.lag)).then(a.group.cmp(&b.group)));
    ClusterOverview {
        brokers: polled.brokers.len(),
        topics: polled.topics.len(),
        partitions: polled.topics.iter().map(|t| t.partitions.len()).sum(),
        under_replicated: polled.topics.iter().map(|t| t.under_replicated).sum(),
        offline: polled.topics.iter().map(|t| t.offline).sum(),
        groups: polled.groups.len(),
        groups_by_status,
        attention: attention.into_iter().take(ATTENTION).map(GroupSummary::of).collect(),
        polled_at_ms: polled.polled_at_ms,
    }
}

/// One group: its members and assignments, and per partition the committed and end offsets, the
/// lag in records and in seconds (`lag_seconds.method`: `record_timestamp` is exact, `caught_up`
/// is 0), the status (OK, WARN, REWIND, STALL, STOP, ERR) with its reason, and the trend.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/groups/{group}", tag = "monitoring",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration"), ("group" = String, Path, description = "the group id, URL-encoded")),
    responses((status = 200, body = GroupView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn group(State(state): State<AppState>, Path((cluster, group)): Path<(String, String)>) -> Response {
    let polled = match polled(&state, &cluster) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match polled.groups.get(&group) {
        Some(g) => Json(g).into_response(),
        None => error_body(StatusCode::NOT_FOUND, "not_found", &format!("no consumer group '{group}' on cluster '{cluster}' (as last polled)")),
    }
}

/// The cluster's brokers: partitions each leads and under-replicated partitions it holds.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/brokers", tag = "monitoring",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration")),
    responses((status = 200, body = [BrokerView]), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn brokers(State(state): State<AppState>, Path(cluster): Path<String>) -> Response {
    match polled(&state, &cluster) {
        Ok(p) => Json(&p.brokers).into_response(),
        Err(r) => r,
    }
}

/// One line of the topic list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TopicSummary {
    topic: String,
    internal: bool,
    partitions: usize,
    under_replicated: usize,
    offline: usize,
    /// Sum of the partitions' end offsets.
    end_total: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TopicPage {
    /// Topics matching `search`, before paging.
    total: usize,
    topics: Vec<TopicSummary>,
}

/// The cluster's topics with their partition count, flags and size in records. Paged and
/// searched on the server, from memory.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/topics", tag = "monitoring",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration"), Paging),
    responses((status = 200, body = TopicPage), (status = 400, description = "`limit` or `offset` not a whole number, or an unknown `sort`", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn topics(State(state): State<AppState>, Path(cluster): Path<String>, paging: Result<Query<Paging>, QueryRejection>) -> Response {
    let (polled, paging) = match list_request(&state, &cluster, paging) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let keys: [(&str, fn(&TopicView) -> f64); 3] = [("partitions", |t| t.partitions.len() as f64), ("records", |t| t.end_total as f64), ("under_replicated", |t| t.under_replicated as f64)];
    let (total, page) = match paged(polled.topics.iter(), |t: &TopicView| &t.topic, &keys, &paging) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let topics = page
        .into_iter()
        .map(|t| TopicSummary { topic: t.topic.clone(), internal: t.internal, partitions: t.partitions.len(), under_replicated: t.under_replicated, offline: t.offline, end_total: t.end_total })
        .collect();
    Json(TopicPage { total, topics }).into_response()
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TopicDetail {
    #[serde(flatten)]
    topic: TopicView,
    /// Consumer groups with a committed offset or an assignment on the topic.
    groups: Vec<String>,
    /// The configuration set on the topic (its overrides of the broker defaults), read now.
    configs: std::collections::BTreeMap<String, String>,
    /// Why the configs could not be read, if they could not.
    configs_error: Option<String>,
}

/// One topic: each partition's leader, replicas, in-sync replicas, flags and end offset, the
/// consumer groups reading it, and the configuration set on it.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/topics/{topic}", tag = "monitoring",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration"), ("topic" = String, Path, description = "the topic, URL-encoded")),
    responses((status = 200, body = TopicDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn topic(State(state): State<AppState>, Path((cluster, topic)): Path<(String, String)>) -> Response {
    let polled = match polled(&state, &cluster) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(view) = polled.topics.iter().find(|t| t.topic == topic).cloned() else {
        return error_body(StatusCode::NOT_FOUND, "not_found", &format!("no topic '{topic}' on cluster '{cluster}' (as last polled)"));
    };
    let groups = polled.groups.values().filter(|g| g.partitions.iter().any(|p| p.lag.topic == topic)).map(|g| g.group.clone()).collect();
    let read = match &state.monitor {
        Some(m) => m.topic_configs(&cluster, &topic).await,
        None => None,
    };
    let (configs, configs_error) = match read {
        Some(Ok(c)) => (c, None),
        Some(Err(e)) => (Default::default(), Some(e)),
        None => (Default::default(), Some("cluster monitoring is not running".into())),
    };
    Json(TopicDetail { topic: view, groups, configs, configs_error }).into_response()
}

/// The latency canary's per-broker end-to-end latency over the last minute (p50, p99, samples,
/// records not back). 404 when `ferry serve` runs without `--canary` for the cluster.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/canary", tag = "monitoring",
    params(("cluster" = String, Path, description = "a cluster alias of the configuration")),
    responses((status = 200, body = ferry_monitor::canary::CanaryState), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn canary(State(state): State<AppState>, Path(cluster): Path<String>) -> Response {
    match state.monitor.as_ref().and_then(|m| m.canary(&cluster)) {
        Some(c) => Json(c).into_response(),
        None => error_body(StatusCode::NOT_FOUND, "not_found", &format!("the canary does not run on cluster '{cluster}' (ferry serve --canary {cluster})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, status: Status, lag: i64) -> GroupView {
        GroupView { group: name.into(), state: "Empty".into(), status, reason: String::new(), members: vec![], partitions: vec![], lag, lag_seconds_max: None, polled_at_ms: 0 }
    }

    #[test]
    fn the_overview_counts_every_group_and_lists_the_worst_first() {
        let mut snap = ClusterSnapshot { polled_at_ms: Some(1), ..Default::default() };
        // More groups than a page: every one is counted.
        for i in 0..2_500 {
            let status = match i % 5 { 0 => Status::Warn, 1 => Status::Stop, _ => Status::Ok };
            snap.groups.insert(format!("g{i:04}"), group(&format!("g{i:04}"), status, i));
        }
        let o = cluster_overview(&snap);
        assert_eq!(o.groups, 2_500);
        assert_eq!((o.groups_by_status["OK"], o.groups_by_status["WARN"], o.groups_by_status["STOP"], o.groups_by_status["ERR"]), (1_500, 500, 500, 0));
        assert_eq!(o.attention.len(), ATTENTION);
        // STOP before WARN, most lag first.
        assert!(o.attention.iter().all(|g| g.status == Status::Stop));
        assert_eq!((o.attention[0].group.as_str(), o.attention[1].group.as_str()), ("g2496", "g2491"));
    }
}
