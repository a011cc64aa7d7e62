//! Alerts in `ferry serve`: policies and notifiers managed over `/api/v1/alerts/…` and kept in
//! `<data-dir>/alerts.json` (written whole, then renamed: a crash leaves the old file or the new
//! one), evaluated after every poll of the clusters and every flow report
//! ([`ferry_monitor::alerts`]), sent by [`ferry_monitor::notify`]. The event history (with what
//! each notifier answered) is appended to `<data-dir>/alert-history.jsonl`; the last
//! [`HISTORY`] events are read back at start.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_monitor::alerts::{Compiled, Entity, Evaluator, Event, Firing, Observation, Observer, Policy, Value};
use ferry_monitor::notify::{Notifier, Sender};
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::ToSchema;

use crate::api::{error_body, ErrorBody};
use crate::AppState;

/// Events kept in memory and shown.
pub const HISTORY: usize = 500;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    notifiers: BTreeMap<String, Notifier>,
    policies: BTreeMap<String, Policy>,
}

/// What a notifier answered for one event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub notifier: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// One event of the history, with its deliveries once they are done.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    pub deliveries: Vec<Delivery>,
}

/// Every policy, by name.
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
pub struct PolicyMap(pub BTreeMap<String, Policy>);

/// Every notifier, by name.
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
pub struct NotifierMap(pub BTreeMap<String, Notifier>);

/// `GET /api/v1/alerts`: what fires now, and the latest events first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsView {
    pub firing: Vec<Firing>,
    pub history: Vec<HistoryEntry>,
}

/// What one evaluation saw: the clusters polled since the last one, and every observation.
pub(crate) struct Polled {
    pub(crate) snapshots: Vec<(String, Arc<ferry_monitor::collect::ClusterSnapshot>)>,
    pub(crate) observations: Vec<Observation>,
}

struct Inner {
    stored: Stored,
    compiled: Vec<Compiled>,
    evaluator: Evaluator,
    observer: Observer,
    /// Each cluster's poll time last evaluated (a poll is evaluated once).
    evaluated: HashMap<String, i64>,
    history: VecDeque<HistoryEntry>,
}

/// The alerting state of one `ferry serve`.
pub struct Alerts {
    dir: PathBuf,
    inner: Mutex<Inner>,
    sender: Sender,
}

fn compile_all(stored: &Stored) -> Result<Vec<Compiled>, String> {
    let names: BTreeSet<String> = stored.notifiers.keys().cloned().collect();
    stored.policies.iter().map(|(name, p)| p.clone().compile(name, &names).map_err(|e| format!("policy '{name}': {e}"))).collect()
}

impl Alerts {
    /// Reads `dir` (made if missing): policies, notifiers and the recent history. A file that
    /// cannot be read or parsed is an error naming it (never replaced by an empty state).
    pub fn open(dir: PathBuf) -> Result<Alerts, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
        let file = dir.join("alerts.json");
        let stored: Stored = match std::fs::read_to_string(&file) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        let compiled = compile_all(&stored).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut history = VecDeque::new();
        if let Ok(text) = std::fs::read_to_string(dir.join("alert-history.jsonl")) {
            // A line cut by a crash is skipped; the others stand.
            for entry in text.lines().filter_map(|l| serde_json::from_str::<HistoryEntry>(l).ok()) {
                history.push_front(entry);
                history.truncate(HISTORY);
            }
        }
        let inner = Inner { stored, compiled, evaluator: Evaluator::default(), observer: Observer::default(), evaluated: HashMap::new(), history };
        Ok(Alerts { dir, inner: Mutex::new(inner), sender: Sender::new() })
    }

    fn save(&self, stored: &Stored) -> Result<(), String> {
        let file = self.dir.join("alerts.json");
        let tmp = self.dir.join("alerts.json.tmp");
        let text = serde_json::to_string_pretty(stored).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &file)).map_err(|e| format!("cannot write {}: {e}", file.display()))
    }

    /// Applies `change` to a copy of the stored state; keeps it only if every policy still
    /// compiles and the file is written (nothing half-applied).
    fn change(&self, change: impl FnOnce(&mut Stored) -> Result<(), (StatusCode, String)>) -> Result<(), (StatusCode, String)> {
        let mut inner = self.inner.lock().unwrap();
        let mut next = Stored { notifiers: inner.stored.notifiers.clone(), policies: inner.stored.policies.clone() };
        change(&mut next)?;
        let compiled = compile_all(&next).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
        self.save(&next).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
        // Alerts of a policy that changed start over.
        let changed: Vec<String> = inner.stored.policies.iter().filter(|(name, p)| next.policies.get(*name) != Some(*p)).map(|(name, _)| name.clone()).collect();
        for name in changed {
            inner.evaluator.forget(&name);
        }
        inner.stored = next;
        inner.compiled = compiled;
        Ok(())
    }

    /// One evaluation: the clusters polled since the last one and the flows' summaries.
    /// Returns the polls judged for the first time, and everything observed (the history
    /// records both).
    pub(crate) fn evaluate(self: &Arc<Self>, state: &AppState, now_ms: i64) -> Polled {
        let mut polled = Vec::new();
        let mut observations: Vec<Observation> = Vec::new();
        let mut observed = BTreeSet::new();
        let mut inner = self.inner.lock().unwrap();
        if let Some(monitor) = &state.monitor {
            for alias in state.shared.clusters.lock().unwrap().keys() {
                let Some(snap) = monitor.cluster(alias) else { continue };
                let (None, Some(at)) = (&snap.error, snap.polled_at_ms) else { continue };
                if inner.evaluated.get(alias) == Some(&at) {
                    continue;
                }
                inner.evaluated.insert(alias.clone(), at);
                observations.extend(inner.observer.cluster(alias, &snap, at));
                polled.push((alias.clone(), snap.clone()));
                for kind in [Entity::Group, Entity::Topic, Entity::Broker] {
                    observed.insert((kind, alias.clone()));
                }
            }
        }
        // Flows: observed under their target whenever its metrics are read.
        for f in state.shared.aggregator.lock().unwrap().summaries(now_ms) {
            let obs = |metric, value| Observation { entity: Entity::Flow, cluster: f.target.clone(), name: f.flow.clone(), metric, value };
            observations.push(obs("lag_seconds", Value::Number(f.lag_seconds)));
            observations.push(obs("lag_records", Value::Number(f.lag_records as f64)));
            observations.push(obs("state", Value::Status(f.state.as_str().to_string())));
        }
        observed.extend(observations.iter().filter(|o| o.entity == Entity::Flow).map(|o| (Entity::Flow, o.cluster.clone())));
        let compiled = inner.compiled.clone();
        let events = inner.evaluator.step(now_ms, &compiled, &observations, &observed);
        for event in events {
            let notifiers: Vec<(String, Notifier)> = inner
                .stored
                .policies
                .get(&event.policy)
                .map(|p| p.notifiers.iter().filter_map(|n| Some((n.clone(), inner.stored.notifiers.get(n)?.clone()))).collect())
                .unwrap_or_default();
            let alerts = self.clone();
            tokio::spawn(async move { alerts.deliver(event, notifiers).await });
        }
        Polled { snapshots: polled, observations }
    }

    async fn deliver(self: Arc<Self>, event: Event, notifiers: Vec<(String, Notifier)>) {
        let mut deliveries = Vec::new();
        for (name, n) in notifiers {
            let outcome = self.sender.send(&n, &event).await;
            if let Err(e) = &outcome {
                warn!(policy = %event.policy, notifier = %name, error = %e, "alert notification not delivered after three tries");
            }
            deliveries.push(Delivery { notifier: name, ok: outcome.is_ok(), error: outcome.err() });
        }
        let entry = HistoryEntry { event: serde_json::to_value(&event).unwrap_or_default(), deliveries };
        if let Ok(line) = serde_json::to_string(&entry) {
            let appended = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("alert-history.jsonl")).and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = appended {
                warn!(dir = %self.dir.display(), error = %e, "cannot append to the alert history");
            }
        }
        let mut inner = self.inner.lock().unwrap();
        inner.history.push_front(entry);
        inner.history.truncate(HISTORY);
    }
}

fn alerts_of(state: &AppState) -> Result<&Arc<Alerts>, Response> {
    state.alerts.as_ref().ok_or_else(|| error_body(StatusCode::NOT_FOUND, "not_found", "alerting is not running"))
}

fn refused((status, message): (StatusCode, String)) -> Response {
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        _ => "internal",
    };
    error_body(status, code, &message)
}

fn bad_json(e: JsonRejection) -> Response {
    error_body(StatusCode::BAD_REQUEST, "bad_request", &e.body_text())
}

/// Alerts firing now, and the latest events (newest first) with what each notifier answered.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", responses((status = 200, body = AlertsView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let alerts = match alerts_of(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let inner = alerts.inner.lock().unwrap();
    Json(AlertsView { firing: inner.evaluator.firing(), history: inner.history.iter().take(100).cloned().collect() }).into_response()
}

/// Every policy, by name.
#[utoipa::path(get, path = "/api/v1/alerts/policies", tag = "alerts", responses((status = 200, body = PolicyMap), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn policies(State(state): State<AppState>) -> Response {
    match alerts_of(&state) {
        Ok(a) => Json(PolicyMap(a.inner.lock().unwrap().stored.policies.clone())).into_response(),
        Err(r) => r,
    }
}

/// Every notifier, by name (secrets shown as `<redacted>`).
#[utoipa::path(get, path = "/api/v1/alerts/notifiers", tag = "alerts", responses((status = 200, body = NotifierMap), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn notifiers(State(state): State<AppState>) -> Response {
    match alerts_of(&state) {
        Ok(a) => Json(NotifierMap(a.inner.lock().unwrap().stored.notifiers.iter().map(|(k, n)| (k.clone(), n.redacted())).collect())).into_response(),
        Err(r) => r,
    }
}

/// Creates or replaces a policy. Its notifiers must exist; its alerts start over.
#[utoipa::path(put, path = "/api/v1/alerts/policies/{name}", tag = "alerts", request_body = Policy,
    params(("name" = String, Path, description = "the policy's name")),
    responses((status = 200, body = Policy), (status = 400, description = "not JSON of a policy", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, description = "the policy names the field it gets wrong", body = ErrorBody)))]
pub(crate) async fn put_policy(State(state): State<AppState>, Path(name): Path<String>, body: Result<Json<Policy>, JsonRejection>) -> Response {
    let alerts = match alerts_of(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let policy = match body {
        Ok(Json(p)) => p,
        Err(e) => return bad_json(e),
    };
    if let Err(e) = policy.clone().compile(&name, &alerts.inner.lock().unwrap().stored.notifiers.keys().cloned().collect()) {
        return error_body(StatusCode::UNPROCESSABLE_ENTITY, "invalid", &format!("policy '{name}': {e}"));
    }
    match alerts.change(|s| {
        s.policies.insert(name.clone(), policy.clone());
        Ok(())
    }) {
        Ok(()) => Json(policy).into_response(),
        Err(e) => refused(e),
    }
}

/// Creates or replaces a notifier. A secret sent back as `<redacted>` keeps the stored one.
#[utoipa::path(put, path = "/api/v1/alerts/notifiers/{name}", tag = "alerts", request_body = Notifier,
    params(("name" = String, Path, description = "the notifier's name")),
    responses((status = 200, body = Notifier), (status = 400, description = "not JSON of a notifier", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn put_notifier(State(state): State<AppState>, Path(name): Path<String>, body: Result<Json<Notifier>, JsonRejection>) -> Response {
    let alerts = match alerts_of(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut notifier = match body {
        Ok(Json(n)) => n,
        Err(e) => return bad_json(e),
    };
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return error_body(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "the notifier name must be 1 to 200 printable characters");
    }
    if let Some(old) = alerts.inner.lock().unwrap().stored.notifiers.get(&name) {
        notifier.keep_secrets_of(old);
    }
    if let Err(e) = notifier.validate() {
        return error_body(StatusCode::UNPROCESSABLE_ENTITY, "invalid", &format!("notifier '{name}': {e}"));
    }
    match alerts.change(|s| {
        s.notifiers.insert(name.clone(), notifier.clone());
        Ok(())
    }) {
        Ok(()) => Json(notifier.redacted()).into_response(),
        Err(e) => refused(e),
    }
}

/// Deletes a policy (its alerts end without a notification).
#[utoipa::path(delete, path = "/api/v1/alerts/policies/{name}", tag = "alerts",
    params(("name" = String, Path, description = "the policy's name")),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_policy(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let alerts = match alerts_of(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match alerts.change(|s| s.policies.remove(&name).map(|_| ()).ok_or((StatusCode::NOT_FOUND, format!("no policy '{name}'")))) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(e),
    }
}

/// Deletes a notifier no policy uses (409 names the policies that do).
#[utoipa::path(delete, path = "/api/v1/alerts/notifiers/{name}", tag = "alerts",
    params(("name" = String, Path, description = "the notifier's name")),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "policies use it", body = ErrorBody)))]
pub(crate) async fn delete_notifier(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let alerts = match alerts_of(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match alerts.change(|s| {
        let users: Vec<&String> = s.policies.iter().filter(|(_, p)| p.notifiers.contains(&name)).map(|(n, _)| n).collect();
        if !users.is_empty() {
            return Err((StatusCode::CONFLICT, format!("notifier '{name}' is used by policies {users:?}")));
        }
        s.notifiers.remove(&name).map(|_| ()).ok_or((StatusCode::NOT_FOUND, format!("no notifier '{name}'")))
    }) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(e),
    }
}
