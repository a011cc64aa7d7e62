//! Which source topics a flow replicates, and what must change on the target for them:
//! topics to create, partitions to add, configs to sync. Pure: no IO.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferry_kafka::{NewTopicSpec, TopicMeta};

use crate::config::{FlowConfig, RegexList};
use crate::control::{FlowLists, ListKind, ListName};
use crate::replication_policy::ReplicationPolicy;

/// Decides whether a flow replicates a topic, exactly as MM2's `MirrorSourceConnector`:
/// (allowed by `topics`/`topics.exclude`, or a heartbeats topic) and not internal and not a
/// cycle back into the flow's target.
#[derive(Debug, Clone)]
pub struct TopicFilter {
    pub topics: RegexList,
    pub exclude: RegexList,
    pub policy: ReplicationPolicy,
    pub target: String,
}

impl TopicFilter {
    pub fn for_flow(flow: &FlowConfig) -> Self {
        TopicFilter {
            topics: flow.topics.clone(),
            exclude: flow.topics_exclude.clone(),
            policy: flow.policy.clone(),
            target: flow.target.clone(),
        }
    }

    /// Uses the lists in effect (file + `ferry ctl`) instead of the file's.
    pub fn set_lists(&mut self, lists: &FlowLists) {
        self.topics = lists.regexes(ListName::Topics, ListKind::Allow);
        self.exclude = lists.regexes(ListName::Topics, ListKind::Exclude);
    }

    pub fn should_replicate(&self, topic: &str) -> bool {
        let allowed = self.topics.is_match(topic) && !self.exclude.is_match(topic);
        (allowed || self.policy.is_heartbeats_topic(topic))
            && !self.policy.is_internal_topic(topic)
            && !self.policy.is_cycle(topic, &self.target)
    }
}

/// A source topic the flow replicates and the remote topic it lands in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub source_topic: String,
    pub remote_topic: String,
    /// Partitions replicated: those that exist on both sides.
    pub partitions: i32,
}

/// A change to make on the target cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicAction {
    Create(NewTopicSpec),
    AddPartitions { topic: String, count: i32 },
    /// Full replacement set for the non-incremental AlterConfigs API.
    AlterConfigs { topic: String, configs: BTreeMap<String, String> },
}

/// Result of planning one refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPlan {
    pub routes: Vec<Route>,
    pub actions: Vec<TopicAction>,
    /// Source partitions that have no counterpart on the target yet (the target topic has
    /// fewer partitions and adding them is pending or failed): never silently skipped.
    pub missing_partitions: Vec<(String, i32, i32)>,
    /// Remote topics not created this round because their source configs are unknown (the
    /// source did not answer DescribeConfigs): created once they are, never without them.
    pub awaiting_configs: Vec<String>,
}

/// Topic configs known this round.
pub struct Configs<'a> {
    /// Source topics' dynamic configs. Every topic to create needs its entry: a compacted
    /// topic created as a delete-policy one would lose records.
    pub source: &'a HashMap<String, BTreeMap<String, String>>,
    /// Remote topics' configs; `Some` when configs are synced this round.
    pub target: Option<&'a HashMap<String, BTreeMap<String, String>>>,
    pub exclude: &'a RegexList,
}

/// The source's dynamic topic configs minus `config.properties.exclude`.
pub fn synced_configs(source: &BTreeMap<String, String>, exclude: &RegexList) -> BTreeMap<String, String> {
    source.iter().filter(|(k, _)| !exclude.is_match(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The source topics a refresh must create on the target (their configs are needed).
pub fn to_create<'t>(filter: &TopicFilter, source_alias: &str, source_topics: &'t [TopicMeta], target_topics: &[TopicMeta]) -> Vec<&'t str> {
    let target: HashSet<&str> = target_topics.iter().map(|t| t.name.as_str()).collect();
    source_topics
        .iter()
        .filter(|t| filter.should_replicate(&t.name) && !target.contains(filter.policy.remote_topic(source_alias, &t.name).as_str()))
        .map(|t| t.name.as_str())
        .collect()
}

/// Plans one refresh of a flow.
pub fn plan(
    filter: &TopicFilter,
    source_alias: &str,
    replication_factor: i32,
    source_topics: &[TopicMeta],
    target_topics: &[TopicMeta],
    configs: &Configs<'_>,
) -> TopicPlan {
    let target: HashMap<&str, i32> = target_topics.iter().map(|t| (t.name.as_str(), t.partitions)).collect();
    let mut out = TopicPlan::default();
    let mut sources: Vec<&TopicMeta> = source_topics.iter().filter(|t| filter.should_replicate(&t.name)).collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    for topic in sources {
        let remote = filter.policy.remote_topic(source_alias, &topic.name);
        let wanted = configs.source.get(&topic.name).map(|s| synced_configs(s, configs.exclude));
        match target.get(remote.as_str()) {
            None => {
                let Some(wanted) = wanted else {
                    out.awaiting_configs.push(remote);
                    continue;
                };
                out.actions.push(TopicAction::Create(NewTopicSpec {
                    name: remote.clone(),
                    partitions: topic.partitions,
                    replication_factor,
                    configs: wanted,
                }));
                // Routed once the topic exists (next refresh, or after creation succeeds).
                out.routes.push(Route { source_topic: topic.name.clone(), remote_topic: remote, partitions: topic.partitions });
            }
            Some(&have) => {
                if have < topic.partitions {
                    out.actions.push(TopicAction::AddPartitions { topic: remote.clone(), count: topic.partitions });
                    out.missing_partitions.push((topic.name.clone(), have, topic.partitions));
                }
                if let (Some(wanted), Some(targets)) = (wanted, configs.target) {
                    let current = targets.get(&remote).cloned().unwrap_or_default();
                    if wanted.iter().any(|(k, v)| current.get(k) != Some(v)) {
                        let mut merged = current;
                        merged.extend(wanted);
                        out.actions.push(TopicAction::AlterConfigs { topic: remote.clone(), configs: merged });
                    }
                }
                out.routes.push(Route {
                    source_topic: topic.name.clone(),
                    remote_topic: remote,
                    partitions: have.min(topic.partitions),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, partitions: i32) -> TopicMeta {
        TopicMeta { name: name.into(), partitions }
    }

    fn filter(target: &str, topics: &str, exclude: &str) -> TopicFilter {
        TopicFilter {
            topics: RegexList::parse(topics).unwrap(),
            exclude: RegexList::parse(exclude).unwrap(),
            policy: ReplicationPolicy::default(),
            target: target.into(),
        }
    }

    #[test]
    fn filter_follows_mm2_rules() {
        let f = filter("b", ".*", crate::config::defaults::TOPICS_EXCLUDE);
        assert!(f.should_replicate("orders"));
        assert!(f.should_replicate("c.orders"));
        assert!(!f.should_replicate("b.orders"), "cycle back into b");
        assert!(!f.should_replicate("c.b.orders"), "longer cycle back into b");
        assert!(!f.should_replicate("__consumer_offsets"));
        assert!(!f.should_replicate("mm2-offset-syncs.b.internal"));
        assert!(!f.should_replicate("x.replica"));
        let only = filter("b", "orders", "");
        assert!(!only.should_replicate("payments"));
        assert!(only.should_replicate("heartbeats"), "heartbeats always flow");
        assert!(only.should_replicate("c.heartbeats"));
        assert!(!only.should_replicate("b.heartbeats"), "but never back");
    }

    #[test]
    fn creates_missing_topics_with_partitions_rf_and_filtered_configs() {
        let f = filter("b", ".*", "");
        let src_cfg = HashMap::from([("orders".to_string(), BTreeMap::from([
            ("retention.ms".to_string(), "1000".to_string()),
            ("min.insync.replicas".to_string(), "2".to_string()),
        ]))]);
        let tgt_cfg = HashMap::new();
        let exclude = RegexList::parse(crate::config::defaults::CONFIG_PROPERTIES_EXCLUDE).unwrap();
        let p = plan(&f, "a", 3, &[meta("orders", 4)], &[], &Configs { source: &src_cfg, target: Some(&tgt_cfg), exclude: &exclude });
        assert_eq!(p.actions, vec![TopicAction::Create(NewTopicSpec {
            name: "a.orders".into(),
            partitions: 4,
            replication_factor: 3,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        })]);
        assert_eq!(p.routes, vec![Route { source_topic: "orders".into(), remote_topic: "a.orders".into(), partitions: 4 }]);
        // Configs not synced this round (or disabled): creation still carries them.
        let p = plan(&f, "a", 3, &[meta("orders", 4)], &[], &Configs { source: &src_cfg, target: None, exclude: &exclude });
        assert!(matches!(&p.actions[0], TopicAction::Create(spec) if spec.configs.contains_key("retention.ms")), "{p:?}");
    }

    #[test]
    fn a_topic_whose_configs_are_unknown_is_not_created_yet() {
        let f = filter("b", ".*", "");
        let exclude = RegexList::parse("").unwrap();
        let compacted = HashMap::from([("accounts".to_string(), BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]))]);
        let none = HashMap::new();
        let p = plan(&f, "a", -1, &[meta("accounts", 1), meta("orders", 1)], &[meta("a.orders", 1)], &Configs { source: &none, target: None, exclude: &exclude });
        assert!(p.actions.is_empty(), "created without its configs: {p:?}");
        assert_eq!(p.awaiting_configs, vec!["a.accounts".to_string()]);
        assert_eq!(p.routes.len(), 1, "the existing topic is still replicated");
        assert_eq!(to_create(&f, "a", &[meta("accounts", 1), meta("orders", 1)], &[meta("a.orders", 1)]), vec!["accounts"]);
        let p = plan(&f, "a", -1, &[meta("accounts", 1)], &[], &Configs { source: &compacted, target: None, exclude: &exclude });
        assert!(matches!(&p.actions[0], TopicAction::Create(spec) if spec.configs["cleanup.policy"] == "compact"));
    }

    #[test]
    fn grows_partitions_and_reports_the_unmatched_ones() {
        let f = filter("b", ".*", "");
        let (none, exclude) = (HashMap::new(), RegexList::parse("").unwrap());
        let configs = Configs { source: &none, target: None, exclude: &exclude };
        let p = plan(&f, "a", -1, &[meta("orders", 6)], &[meta("a.orders", 4)], &configs);
        assert_eq!(p.actions, vec![TopicAction::AddPartitions { topic: "a.orders".into(), count: 6 }]);
        assert_eq!(p.routes[0].partitions, 4, "only partitions present on both sides are routed");
        assert_eq!(p.missing_partitions, vec![("orders".to_string(), 4, 6)]);
        let grown = plan(&f, "a", -1, &[meta("orders", 6)], &[meta("a.orders", 8)], &configs);
        assert!(grown.actions.is_empty());
        assert_eq!(grown.routes[0].partitions, 6);
    }

    #[test]
    fn config_changes_propagate_keeping_target_only_settings() {
        let f = filter("b", ".*", "");
        let exclude = RegexList::parse("").unwrap();
        let src = HashMap::from([("orders".to_string(), BTreeMap::from([("retention.ms".to_string(), "5".to_string())]))]);
        let same = HashMap::from([("a.orders".to_string(), BTreeMap::from([("retention.ms".to_string(), "5".to_string())]))]);
        let p = plan(&f, "a", -1, &[meta("orders", 1)], &[meta("a.orders", 1)], &Configs { source: &src, target: Some(&same), exclude: &exclude });
        assert!(p.actions.is_empty(), "in sync: nothing to do");
        let differs = HashMap::from([("a.orders".to_string(), BTreeMap::from([
            ("retention.ms".to_string(), "9".to_string()),
            ("segment.ms".to_string(), "7".to_string()),
        ]))]);
        let p = plan(&f, "a", -1, &[meta("orders", 1)], &[meta("a.orders", 1)], &Configs { source: &src, target: Some(&differs), exclude: &exclude });
        assert_eq!(p.actions, vec![TopicAction::AlterConfigs {
            topic: "a.orders".into(),
            configs: BTreeMap::from([("retention.ms".to_string(), "5".to_string()), ("segment.ms".to_string(), "7".to_string())]),
        }]);
    }

    #[test]
    fn identity_policy_keeps_names() {
        let f = TopicFilter { policy: ReplicationPolicy::identity(), ..filter("b", ".*", "") };
        let src = HashMap::from([("heartbeats".to_string(), BTreeMap::new())]);
        let exclude = RegexList::parse("").unwrap();
        let p = plan(&f, "a", -1, &[meta("orders", 1), meta("heartbeats", 1)], &[meta("orders", 1)], &Configs { source: &src, target: None, exclude: &exclude });
        let names: Vec<_> = p.routes.iter().map(|r| r.remote_topic.as_str()).collect();
        assert_eq!(names, vec!["a.heartbeats", "orders"]);
    }
}
