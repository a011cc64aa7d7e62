//! Alert policies and their evaluation. Pure: policies and observations in, firing and resolved
//! events out; `ferry serve` stores the policies, observes every poll and sends the events
//! ([`crate::notify`]).
//!
//! A policy names an entity kind (group, topic, broker, replication flow), which of them (a
//! cluster, a regular expression over names), a metric and a condition (`above`, `below`, or
//! `status_in`), held for `for_seconds` before it fires. Each (policy, cluster, entity) fires
//! once and resolves once: no repeat while it stays true (de-duplicated), one resolved event
//! when it stops being true or the entity is gone. An entity of a cluster that could not be read
//! this time keeps its state: an outage of the monitor never resolves what it cannot see.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a policy watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Group,
    Topic,
    Broker,
    Flow,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Group => "group",
            Entity::Topic => "topic",
            Entity::Broker => "broker",
            Entity::Flow => "flow",
        }
    }

    /// The metrics each kind has, and whether each is a status (compared with `status_in`).
    pub fn metrics(self) -> &'static [(&'static str, bool)] {
        match self {
            Entity::Group => &[("lag_seconds", false), ("lag_records", false), ("status", true)],
            Entity::Topic => &[("under_replicated_partitions", false), ("offline_partitions", false), ("messages_in_per_sec", false)],
            Entity::Broker => &[("offline", false)],
            Entity::Flow => &[("lag_seconds", false), ("lag_records", false), ("state", true)],
        }
    }
}

/// An alert policy as the API takes and gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub entity: Entity,
    /// Only this cluster's entities (a flow's: its target); absent: every cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Regular expression the entity's name must match (anywhere; anchor it with `^…$`).
    /// Absent: every entity. Brokers are named by id, flows `source->target`.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// group: `lag_seconds`, `lag_records`, `status`; topic: `under_replicated_partitions`,
    /// `offline_partitions`, `messages_in_per_sec`; broker: `offline`; flow: `lag_seconds`,
    /// `lag_records`, `state`.
    pub metric: String,
    /// Fires while the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Fires while the value is below this (`messages_in_per_sec` below 0.001: no messages in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// For `status` and `state`: fires while it is one of these (`STOP`, `STALL`; `failing`, `paused`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_in: Vec<String>,
    /// How long the condition must hold before the alert fires (0: at once).
    #[serde(default)]
    pub for_seconds: u64,
    /// Notifiers told when it fires and when it resolves.
    #[serde(default)]
    pub notifiers: Vec<String>,
}

/// A policy checked and ready to evaluate.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub name: String,
    pub policy: Policy,
    matches: Option<Regex>,
}

impl Policy {
    /// Checks the policy against the known notifiers; the error names the field.
    pub fn compile(self, name: &str, notifiers: &BTreeSet<String>) -> Result<Compiled, String> {
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err("the policy name must be 1 to 200 printable characters".into());
        }
        let Some(&(_, is_status)) = self.entity.metrics().iter().find(|(m, _)| *m == self.metric) else {
            let known: Vec<&str> = self.entity.metrics().iter().map(|(m, _)| *m).collect();
            return Err(format!("metric: '{}' is not a metric of a {} (one of: {})", self.metric, self.entity.as_str(), known.join(", ")));
        };
        if is_status {
            if self.status_in.is_empty() || self.above.is_some() || self.below.is_some() {
                return Err(format!("status_in: metric '{}' is compared with status_in (a non-empty list), not above or below", self.metric));
            }
        } else if self.above.is_none() == self.below.is_none() || !self.status_in.is_empty() {
            return Err(format!("above/below: metric '{}' needs exactly one of above or below", self.metric));
        }
        if self.above.is_some_and(|v| !v.is_finite()) || self.below.is_some_and(|v| !v.is_finite()) {
            return Err("above/below: must be a finite number".into());
        }
        if self.for_seconds > 7 * 86_400 {
            return Err("for_seconds: at most 604800 (a week)".into());
        }
        if let Some(unknown) = self.notifiers.iter().find(|n| !notifiers.contains(*n)) {
            return Err(format!("notifiers: no notifier named '{unknown}' (create it first: PUT /api/v1/alerts/notifiers/{{name}})"));
        }
        let matches = match &self.matches {
            Some(re) => Some(Regex::new(re).map_err(|e| format!("match: not a regular expression: {e}"))?),
            None => None,
        };
        Ok(Compiled { name: name.to_string(), policy: self, matches })
    }
}

/// A metric's value now.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Status(String),
}

/// One entity's metric as observed now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub entity: Entity,
    pub cluster: String,
    pub name: String,
    pub metric: &'static str,
    pub value: Value,
}

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Firing,
    Resolved,
}

/// A notification: a policy started or stopped firing for one entity.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Event {
    pub policy: String,
    pub state: State,
    /// The entity kind (`group`, `topic`, `broker`, `flow`), named by `cluster` and `name`.
    pub entity: Entity,
    pub cluster: String,
    pub name: String,
    pub metric: String,
    /// The value that made it fire, or the last one seen (resolved); null when the entity is gone.
    pub value: Option<Value>,
    /// The condition in words: `lag_seconds above 60 for 10 s`.
    pub condition: String,
    /// When the condition first held.
    pub since_ms: i64,
    pub at_ms: i64,
    /// One line for people (Slack, e-mail subject).
    pub message: String,
}

/// An alert that is firing now.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Firing {
    pub policy: String,
    pub entity: Entity,
    pub cluster: String,
    pub name: String,
    pub metric: String,
    pub value: Value,
    pub since_ms: i64,
    pub fired_at_ms: i64,
}

#[derive(Debug, Clone)]
struct Pending {
    since_ms: i64,
    fired_at_ms: Option<i64>,
    value: Value,
    entity: Entity,
    metric: &'static str,
}

fn holds(p: &Policy, v: &Value) -> bool {
    match v {
        Value::Number(x) => p.above.is_some_and(|a| *x > a) || p.below.is_some_and(|b| *x < b),
        Value::Status(s) => p.status_in.iter().any(|w| w.eq_ignore_ascii_case(s)),
    }
}

fn condition(p: &Policy) -> String {
    let what = match (p.above, p.below) {
        (Some(a), _) => format!("above {a}"),
        (_, Some(b)) => format!("below {b}"),
        _ => format!("in {}", p.status_in.join("/")),
    };
    format!("{} {what} for {} s", p.metric, p.for_seconds)
}

fn describe(v: &Option<Value>) -> String {
    match v {
        Some(Value::Number(x)) => format!("{}", (x * 1000.0).round() / 1000.0),
        Some(Value::Status(s)) => s.clone(),
        None => "gone".into(),
    }
}

/// Every policy's alerts: which conditions hold since when, which fired.
#[derive(Debug, Default)]
pub struct Evaluator {
    /// (policy, cluster, entity name) → its state while the condition holds.
    pending: BTreeMap<(String, String, String), Pending>,
}

impl Evaluator {
    /// One evaluation at `now_ms`. `observed` says which kinds of entity were read this time on
    /// which cluster (entities of the others keep their state): a cluster's poll observes its
    /// groups, topics and brokers; the flows' reports observe flows under their target.
    pub fn step(&mut self, now_ms: i64, policies: &[Compiled], observations: &[Observation], observed: &BTreeSet<(Entity, String)>) -> Vec<Event> {
        let mut events = Vec::new();
        let mut seen = BTreeSet::new();
        for c in policies {
            let p = &c.policy;
            for o in observations.iter().filter(|o| o.entity == p.entity && o.metric == p.metric) {
                if p.cluster.as_ref().is_some_and(|want| *want != o.cluster) || c.matches.as_ref().is_some_and(|re| !re.is_match(&o.name)) {
                    continue;
                }
                let key = (c.name.clone(), o.cluster.clone(), o.name.clone());
                seen.insert(key.clone());
                if holds(p, &o.value) {
                    let entry = self.pending.entry(key).or_insert(Pending { since_ms: now_ms, fired_at_ms: None, value: o.value.clone(), entity: o.entity, metric: o.metric });
                    entry.value = o.value.clone();
                    if entry.fired_at_ms.is_none() && now_ms - entry.since_ms >= p.for_seconds as i64 * 1000 {
                        entry.fired_at_ms = Some(now_ms);
                        events.push(event(c, State::Firing, o.entity, &o.cluster, &o.name, o.metric, Some(o.value.clone()), entry.since_ms, now_ms));
                    }
                } else if let Some(was) = self.pending.remove(&key) {
                    if was.fired_at_ms.is_some() {
                        events.push(event(c, State::Resolved, o.entity, &o.cluster, &o.name, o.metric, Some(o.value.clone()), was.since_ms, now_ms));
                    }
                }
            }
        }
        // Entities gone from a cluster read this time (a group deleted, a topic removed), and
        // alerts of policies removed or changed: resolved if they fired, forgotten otherwise.
        let by_name: HashMap<&str, &Compiled> = policies.iter().map(|c| (c.name.as_str(), c)).collect();
        let gone: Vec<(String, String, String)> = self
            .pending
            .iter()
            .filter(|(k, p)| !seen.contains(*k) && (observed.contains(&(p.entity, k.1.clone())) || !by_name.contains_key(k.0.as_str())))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let was = self.pending.remove(&key).expect("listed above");
            if let (Some(_), Some(c)) = (was.fired_at_ms, by_name.get(key.0.as_str())) {
                events.push(event(c, State::Resolved, was.entity, &key.1, &key.2, was.metric, None, was.since_ms, now_ms));
            }
        }
        events
    }

    /// Alerts firing now.
    pub fn firing(&self) -> Vec<Firing> {
        self.pending
            .iter()
            .filter_map(|((policy, cluster, name), p)| {
                Some(Firing { policy: policy.clone(), entity: p.entity, cluster: cluster.clone(), name: name.clone(), metric: p.metric.to_string(), value: p.value.clone(), since_ms: p.since_ms, fired_at_ms: p.fired_at_ms? })
            })
            .collect()
    }

    /// Forgets a policy's alerts without a word (it was deleted or replaced by the user).
    pub fn forget(&mut self, policy: &str) {
        self.pending.retain(|k, _| k.0 != policy);
    }
}

#[allow(clippy::too_many_arguments)]
fn event(c: &Compiled, state: State, entity: Entity, cluster: &str, name: &str, metric: &str, value: Option<Value>, since_ms: i64, at_ms: i64) -> Event {
    let condition = condition(&c.policy);
    let verb = match state {
        State::Firing => "FIRING",
        State::Resolved => "RESOLVED",
    };
    let message = format!("[{verb}] {}: {} {name} on {cluster}: {metric} is {} ({condition})", c.name, entity.as_str(), describe(&value));
    Event { policy: c.name.clone(), state, entity, cluster: cluster.to_string(), name: name.to_string(), metric: metric.to_string(), value, condition, since_ms, at_ms, message }
}

/// Turns polls into observations, remembering what a rate or an absence needs: each topic's
/// last end offsets (messages in per second) and each cluster's brokers seen so far (offline).
#[derive(Debug, Default)]
pub struct Observer {
    ends: HashMap<(String, String), (i64, i64)>,
    brokers: HashMap<String, BTreeSet<i32>>,
}

impl Observer {
    /// Observations of one cluster's poll taken at `polled_at_ms`.
    pub fn cluster(&mut self, cluster: &str, snapshot: &crate::collect::ClusterSnapshot, polled_at_ms: i64) -> Vec<Observation> {
        let mut out = Vec::new();
        let obs = |entity, name: &str, metric, value| Observation { entity, cluster: cluster.to_string(), name: name.to_string(), metric, value };
        for g in snapshot.groups.values() {
            out.push(obs(Entity::Group, &g.group, "lag_records", Value::Number(g.lag as f64)));
            if let Some(s) = g.lag_seconds_max {
                out.push(obs(Entity::Group, &g.group, "lag_seconds", Value::Number(s)));
            }
            out.push(obs(Entity::Group, &g.group, "status", Value::Status(g.status.as_str().to_string())));
        }
        for t in &snapshot.topics {
            out.push(obs(Entity::Topic, &t.topic, "under_replicated_partitions", Value::Number(t.under_replicated as f64)));
            out.push(obs(Entity::Topic, &t.topic, "offline_partitions", Value::Number(t.offline as f64)));
            let key = (cluster.to_string(), t.topic.clone());
            if let Some((end, at)) = self.ends.insert(key, (t.end_total, polled_at_ms)) {
                if polled_at_ms > at {
                    let rate = (t.end_total - end).max(0) as f64 * 1000.0 / (polled_at_ms - at) as f64;
                    out.push(obs(Entity::Topic, &t.topic, "messages_in_per_sec", Value::Number(rate)));
                }
            }
        }
        let known = self.brokers.entry(cluster.to_string()).or_default();
        known.extend(snapshot.brokers.iter().map(|b| b.id));
        for id in known.iter() {
            let offline = !snapshot.brokers.iter().any(|b| b.id == *id);
            out.push(obs(Entity::Broker, &id.to_string(), "offline", Value::Number(if offline { 1.0 } else { 0.0 })));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Compiled {
        let p: Policy = serde_json::from_str(json).unwrap();
        p.compile("lagging", &BTreeSet::from(["hook".to_string()])).unwrap()
    }

    fn lag(cluster: &str, group: &str, v: f64) -> Observation {
        Observation { entity: Entity::Group, cluster: cluster.into(), name: group.into(), metric: "lag_seconds", value: Value::Number(v) }
    }

    fn states(events: &[Event]) -> Vec<(State, String)> {
        events.iter().map(|e| (e.state, e.name.clone())).collect()
    }

    #[test]
    fn fires_once_after_the_duration_and_resolves_once() {
        let p = [policy(r#"{"entity":"group","cluster":"a","match":"^bill","metric":"lag_seconds","above":60,"for_seconds":10,"notifiers":["hook"]}"#)];
        let a = BTreeSet::from([(Entity::Group, "a".to_string())]);
        let mut e = Evaluator::default();
        assert!(e.step(0, &p, &[lag("a", "billing", 90.0), lag("a", "shipping", 500.0), lag("b", "billing", 500.0)], &a).is_empty(), "not for 10 s yet; others do not match");
        assert!(e.step(5_000, &p, &[lag("a", "billing", 95.0)], &a).is_empty());
        let fired = e.step(10_000, &p, &[lag("a", "billing", 99.0)], &a);
        assert_eq!(states(&fired), [(State::Firing, "billing".to_string())]);
        assert_eq!((fired[0].value.clone(), fired[0].since_ms), (Some(Value::Number(99.0)), 0));
        assert!(fired[0].message.contains("lag_seconds is 99"), "{}", fired[0].message);
        assert!(e.step(15_000, &p, &[lag("a", "billing", 120.0)], &a).is_empty(), "no repeat while it fires");
        assert_eq!(e.firing().len(), 1);
        let resolved = e.step(20_000, &p, &[lag("a", "billing", 3.0)], &a);
        assert_eq!(states(&resolved), [(State::Resolved, "billing".to_string())]);
        assert!(e.step(25_000, &p, &[lag("a", "billing", 2.0)], &a).is_empty() && e.firing().is_empty());
    }

    #[test]
    fn a_condition_that_stops_before_the_duration_never_fires_and_starts_over() {
        let p = [policy(r#"{"entity":"group","metric":"lag_seconds","above":60,"for_seconds":10}"#)];
        let a = BTreeSet::from([(Entity::Group, "a".to_string())]);
        let mut e = Evaluator::default();
        e.step(0, &p, &[lag("a", "g", 90.0)], &a);
        assert!(e.step(5_000, &p, &[lag("a", "g", 10.0)], &a).is_empty(), "no resolved for what never fired");
        assert!(e.step(12_000, &p, &[lag("a", "g", 90.0)], &a).is_empty(), "the 10 s start again");
        assert_eq!(states(&e.step(22_000, &p, &[lag("a", "g", 90.0)], &a)), [(State::Firing, "g".to_string())]);
    }

    #[test]
    fn an_unread_cluster_keeps_its_alerts_and_a_gone_entity_resolves() {
        let p = [policy(r#"{"entity":"group","metric":"lag_seconds","above":60}"#)];
        let mut e = Evaluator::default();
        let a = BTreeSet::from([(Entity::Group, "a".to_string())]);
        assert_eq!(e.step(0, &p, &[lag("a", "g", 90.0)], &a).len(), 1);
        assert!(e.step(5_000, &p, &[], &BTreeSet::new()).is_empty(), "cluster a not read: nothing resolves");
        let gone = e.step(10_000, &p, &[], &a);
        assert_eq!((gone[0].state, gone[0].value.clone()), (State::Resolved, None), "the group is gone");
    }

    #[test]
    fn flows_read_without_a_poll_of_their_cluster_leave_its_group_alerts_alone() {
        let p = [policy(r#"{"entity":"group","metric":"lag_seconds","above":60}"#)];
        let mut e = Evaluator::default();
        assert_eq!(e.step(0, &p, &[lag("a", "g", 90.0)], &BTreeSet::from([(Entity::Group, "a".to_string())])).len(), 1);
        assert!(e.step(1_000, &p, &[], &BTreeSet::from([(Entity::Flow, "a".to_string())])).is_empty(), "only flows of a were read");
        assert_eq!(e.firing().len(), 1);
    }

    #[test]
    fn statuses_and_removed_policies() {
        let p = [policy(r#"{"entity":"group","metric":"status","status_in":["STOP","STALL"]}"#)];
        let a = BTreeSet::from([(Entity::Group, "a".to_string())]);
        let st = |s: &str| Observation { entity: Entity::Group, cluster: "a".into(), name: "g".into(), metric: "status", value: Value::Status(s.into()) };
        let mut e = Evaluator::default();
        assert!(e.step(0, &p, &[st("OK")], &a).is_empty());
        assert_eq!(e.step(5_000, &p, &[st("STOP")], &a).len(), 1);
        assert!(e.step(10_000, &p, &[st("STALL")], &a).is_empty(), "still firing: one of the statuses");
        assert!(e.step(15_000, &[], &[st("STALL")], &a).is_empty(), "a deleted policy resolves nothing");
        assert!(e.firing().is_empty());
    }

    #[test]
    fn bad_policies_name_the_field() {
        let known = BTreeSet::from(["hook".to_string()]);
        let err = |json: &str| serde_json::from_str::<Policy>(json).unwrap().compile("p", &known).unwrap_err();
        assert!(err(r#"{"entity":"group","metric":"lag_minutes","above":1}"#).starts_with("metric:"));
        assert!(err(r#"{"entity":"group","metric":"lag_seconds"}"#).starts_with("above/below:"));
        assert!(err(r#"{"entity":"group","metric":"status","above":1}"#).starts_with("status_in:"));
        assert!(err(r#"{"entity":"group","metric":"lag_seconds","above":1,"match":"("}"#).starts_with("match:"));
        assert!(err(r#"{"entity":"group","metric":"lag_seconds","above":1,"notifiers":["pager"]}"#).starts_with("notifiers:"));
        assert!(serde_json::from_str::<Policy>(r#"{"entity":"group","metric":"lag_seconds","above":1,"treshold":2}"#).is_err(), "a misspelt field is refused");
    }

    #[test]
    fn topics_get_a_rate_and_missing_brokers_are_offline() {
        use crate::cluster::{BrokerView, TopicView};
        let topic = |end| TopicView { topic: "t".into(), internal: false, partitions: vec![], under_replicated: 0, offline: 0, end_total: end };
        let broker = |id| BrokerView { id, host: "h".into(), port: 1, partitions_led: 0, under_replicated: 0, rack: None, controller: false };
        let mut o = Observer::default();
        let mut snap = crate::collect::ClusterSnapshot { brokers: vec![broker(1), broker(2)], topics: vec![topic(100)], ..Default::default() };
        assert!(!o.cluster("a", &snap, 0).iter().any(|x| x.metric == "messages_in_per_sec"), "no rate from one poll");
        snap.topics = vec![topic(150)];
        snap.brokers = vec![broker(1)];
        let obs = o.cluster("a", &snap, 10_000);
        let value = |m: &str, n: &str| obs.iter().find(|x| x.metric == m && x.name == n).map(|x| x.value.clone());
        assert_eq!(value("messages_in_per_sec", "t"), Some(Value::Number(5.0)));
        assert_eq!((value("offline", "1"), value("offline", "2")), (Some(Value::Number(0.0)), Some(Value::Number(1.0))));
    }
}
