//! How remote topics are named, and what that naming says about where a topic came from:
//! MM2's `DefaultReplicationPolicy` and `IdentityReplicationPolicy`, rule for rule.

/// The replication policy of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationPolicy {
    pub kind: PolicyKind,
    /// `replication.policy.separator` (default ".").
    pub separator: String,
    /// `replication.policy.internal.topic.separator.enabled` (default true): whether the custom
    /// separator is also used in the names of MM2's internal topics.
    pub internal_separator_enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `source + separator + topic`.
    Default,
    /// The remote topic keeps the source name (heartbeats are still prefixed). Topic names
    /// then carry no provenance; Ferry tracks it per record instead (see `provenance`).
    Identity,
}

pub const HEARTBEATS_TOPIC: &str = "heartbeats";

impl Default for ReplicationPolicy {
    fn default() -> Self {
        ReplicationPolicy { kind: PolicyKind::Default, separator: ".".into(), internal_separator_enabled: true }
    }
}

impl ReplicationPolicy {
    pub fn identity() -> Self {
        ReplicationPolicy { kind: PolicyKind::Identity, ..Default::default() }
    }

    pub fn with_separator(separator: &str) -> Self {
        ReplicationPolicy { separator: separator.into(), ..Default::default() }
    }

    /// Parses `replication.policy.class` (MM2 class names; the simple name is accepted too).
    pub fn kind_from_class(class: &str) -> Option<PolicyKind> {
        match class.rsplit('.').next().unwrap_or(class) {
            "DefaultReplicationPolicy" => Some(PolicyKind::Default),
            "IdentityReplicationPolicy" => Some(PolicyKind::Identity),
            _ => None,
        }
    }

    /// Name of `topic` from cluster `source` once replicated.
    pub fn remote_topic(&self, source: &str, topic: &str) -> String {
        match self.kind {
            PolicyKind::Identity if !self.looks_like_heartbeats(topic) => topic.to_string(),
            _ => format!("{source}{}{topic}", self.separator),
        }
    }

    /// The cluster a remote topic came from, if its name says so.
    pub fn topic_source<'t>(&self, topic: &'t str) -> Option<&'t str> {
        if self.kind == PolicyKind::Identity && !self.looks_like_heartbeats(topic) {
            return None;
        }
        topic.find(self.separator.as_str()).map(|i| &topic[..i])
    }

    /// The name the topic had one hop upstream, if it is a remote topic.
    pub fn upstream_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let source = self.topic_source(topic)?;
        Some(&topic[source.len() + self.separator.len()..])
    }

    /// The name the topic had on the cluster it was first written to.
    pub fn original_topic<'t>(&self, topic: &'t str) -> &'t str {
        let mut current = topic;
        while let Some(up) = self.upstream_topic(current) {
            if up == current {
                break;
            }
            current = up;
        }
        current
    }

    fn default_original<'t>(&self, topic: &'t str) -> &'t str {
        let mut current = topic;
        while let Some(i) = current.find(self.separator.as_str()) {
            current = &current[i + self.separator.len()..];
        }
        current
    }

    fn looks_like_heartbeats(&self, topic: &str) -> bool {
        self.default_original(topic) == HEARTBEATS_TOPIC
    }

    /// `heartbeats`, `a.heartbeats`, `b.a.heartbeats`, ...
    pub fn is_heartbeats_topic(&self, topic: &str) -> bool {
        self.original_topic(topic) == HEARTBEATS_TOPIC
    }

    fn internal_separator(&self) -> &str {
        if self.internal_separator_enabled { &self.separator } else { "." }
    }

    fn internal_suffix(&self) -> String {
        format!("{}internal", self.internal_separator())
    }

    /// `<source>.checkpoints.internal` on the target.
    pub fn checkpoints_topic(&self, source: &str) -> String {
        format!("{source}{}checkpoints{}", self.internal_separator(), self.internal_suffix())
    }

    /// `mm2-offset-syncs.<target>.internal`.
    pub fn offset_syncs_topic(&self, target: &str) -> String {
        format!("mm2-offset-syncs{}{target}{}", self.internal_separator(), self.internal_suffix())
    }

    /// Ferry's exact offset runs of flows into `target`: `ferry-offset-runs.<target>.internal`,
    /// next to `mm2-offset-syncs.<target>.internal`.
    pub fn offset_runs_topic(&self, target: &str) -> String {
        format!("ferry-offset-runs{}{target}{}", self.internal_separator(), self.internal_suffix())
    }

    /// Topics never replicated: Kafka's (`__*`, `.*`), Connect's and MM2's (`*.internal`,
    /// `*-internal`, `mm2-*` internals) and Ferry's own (`ferry-*` internals).
    pub fn is_internal_topic(&self, topic: &str) -> bool {
        let kafka_internal = topic.starts_with("__") || topic.starts_with('.');
        let connect_internal = topic.ends_with(".internal") || topic.ends_with("-internal");
        let mm2_internal = (topic.starts_with("mm2") || topic.starts_with("ferry-")) && topic.ends_with(&self.internal_suffix());
        kafka_internal || connect_internal || mm2_internal
    }

    /// MM2's cycle check for a flow into `target`: does the topic's naming chain pass through
    /// `target`? Always false under the identity policy, whose names carry no chain; Ferry
    /// then relies on per-record provenance.
    pub fn is_cycle(&self, topic: &str, target: &str) -> bool {
        let mut current = topic;
        loop {
            let Some(source) = self.topic_source(current) else { return false };
            if source == target {
                return true;
            }
            match self.upstream_topic(current) {
                Some(up) if up != current => current = up,
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_prefixes_and_parses_back() {
        let p = ReplicationPolicy::default();
        assert_eq!(p.remote_topic("a", "orders"), "a.orders");
        assert_eq!(p.remote_topic("b", "a.orders"), "b.a.orders");
        assert_eq!(p.topic_source("b.a.orders"), Some("b"));
        assert_eq!(p.upstream_topic("b.a.orders"), Some("a.orders"));
        assert_eq!(p.original_topic("b.a.orders"), "orders");
        assert_eq!(p.topic_source("orders"), None);
    }

    #[test]
    fn custom_separator() {
        let p = ReplicationPolicy::with_separator("_");
        assert_eq!(p.remote_topic("a", "orders"), "a_orders");
        assert_eq!(p.topic_source("b_a_orders"), Some("b"));
        assert_eq!(p.original_topic("b_a_orders"), "orders");
        assert_eq!(p.checkpoints_topic("a"), "a_checkpoints_internal");
        assert_eq!(p.offset_syncs_topic("b"), "mm2-offset-syncs_b_internal");
        assert!(p.is_internal_topic("mm2-offset-syncs_b_internal"));
        assert_eq!(p.offset_runs_topic("b"), "ferry-offset-runs_b_internal");
        assert!(p.is_internal_topic("ferry-offset-runs_b_internal"));
        let legacy = ReplicationPolicy { internal_separator_enabled: false, ..p };
        assert_eq!(legacy.checkpoints_topic("a"), "a.checkpoints.internal");
    }

    #[test]
    fn identity_keeps_names_but_prefixes_heartbeats() {
        let p = ReplicationPolicy::identity();
        assert_eq!(p.remote_topic("a", "orders"), "orders");
        assert_eq!(p.remote_topic("a", "heartbeats"), "a.heartbeats");
        assert_eq!(p.remote_topic("b", "a.heartbeats"), "b.a.heartbeats");
        assert_eq!(p.topic_source("a.orders"), None);
        assert_eq!(p.topic_source("a.heartbeats"), Some("a"));
        assert!(p.is_heartbeats_topic("b.a.heartbeats"));
        assert!(!p.is_cycle("orders", "a"));
        assert!(p.is_cycle("a.heartbeats", "a"));
    }

    #[test]
    fn internal_topics() {
        let p = ReplicationPolicy::default();
        for t in ["__consumer_offsets", "__transaction_state", ".hidden", "mm2-offsets.a.internal",
            "connect-configs-internal", "a.checkpoints.internal", "ferry-positions.a.internal"] {
            assert!(p.is_internal_topic(t), "{t}");
        }
        for t in ["orders", "heartbeats", "a.heartbeats", "internal.orders"] {
            assert!(!p.is_internal_topic(t), "{t}");
        }
    }

    #[test]
    fn cycles_in_bidirectional_and_circular_setups() {
        let p = ReplicationPolicy::default();
        // a<->b: b's copy of a's topic must not go back to a.
        assert!(p.is_cycle("a.orders", "a"));
        assert!(!p.is_cycle("orders", "a"));
        // a->b->c->a: on c the topic is b.a.orders; the flow c->a must stop it.
        assert!(p.is_cycle("b.a.orders", "a"));
        assert!(!p.is_cycle("b.a.orders", "d"));
        // fan-in: a->c, b->c: c.x-like names of other sources pass.
        assert!(!p.is_cycle("a.orders", "c"));
        assert!(p.is_heartbeats_topic("b.a.heartbeats"));
        assert!(!p.is_heartbeats_topic("heartbeats.extra"));
    }

    #[test]
    fn policy_class_names() {
        assert_eq!(
            ReplicationPolicy::kind_from_class("org.apache.kafka.connect.mirror.IdentityReplicationPolicy"),
            Some(PolicyKind::Identity)
        );
        assert_eq!(ReplicationPolicy::kind_from_class("DefaultReplicationPolicy"), Some(PolicyKind::Default));
        assert_eq!(ReplicationPolicy::kind_from_class("com.example.Mine"), None);
    }
}
