use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::{ClientRole, ClusterClient, Error, Result};

/// Admin operations on one cluster. Metadata calls block; the rest are async.
pub struct Admin {
    cluster: ClusterClient,
    client: AdminClient<DefaultClientContext>,
    timeout: Duration,
}

/// A topic as the cluster's metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: i32,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopicSpec {
    pub name: String,
    pub partitions: i32,
    /// -1 asks the broker for its default (KIP-464).
    pub replication_factor: i32,
    pub configs: BTreeMap<String, String>,
}

impl Admin {
    pub fn connect(cluster: &ClusterClient) -> Result<Self> {
        let client = cluster
            .client_config(ClientRole::Admin)
            .create()
            .map_err(|e| Error::new(cluster, "create admin client", e))?;
        Ok(Admin { cluster: cluster.clone(), client, timeout: Duration::from_secs(10) })
    }

    pub fn cluster(&self) -> &ClusterClient {
        &self.cluster
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new().request_timeout(Some(self.timeout)).operation_timeout(Some(self.timeout))
    }

    fn err(&self, operation: impl Into<String>, e: KafkaError) -> Error {
        Error::new(&self.cluster, operation, e)
    }

    /// Every ACL on topics (blocking). `Ok(None)`: the cluster has no authorizer.
    /// Every (topic, partition, committed offset) of `group`, in one request.
    /// The committed offsets of many groups at once (all requests in flight together); per group
    /// its offsets or why they could not be read. Groups that did not answer in time are missing.
    pub fn many_group_offsets(&self, groups: &[String]) -> Result<Vec<(String, std::result::Result<Vec<(String, i32, i64)>, String>)>> {
        crate::ffi::group_offsets::list_many(self.client.inner().native_ptr(), groups, self.timeout).map_err(|e| self.err(format!("list the offsets of {} groups", groups.len()), e))
    }

    /// The cluster id, each broker's rack and the broker named controller (DescribeCluster).
    pub fn describe_cluster(&self) -> Result<crate::ClusterDescription> {
        crate::ffi::cluster::describe_cluster(self.client.inner().native_ptr(), self.timeout).map_err(|e| self.err("describe the cluster", e))
    }

    pub fn group_offsets(&self, group: &str) -> Result<Vec<(String, i32, i64)>> {
        crate::ffi::group_offsets::list_group_offsets(self.client.inner().native_ptr(), group, self.timeout).map_err(|e| self.err(format!("list the offsets of group '{group}'"), e))
    }

    pub fn describe_topic_acls(&self) -> Result<Option<Vec<crate::TopicAcl>>> {
        crate::ffi::acl::describe_topic_acls(self.client.inner().native_ptr(), self.timeout).map_err(|e| self.err("describe topic ACLs", e))
    }

    /// Creates topic ACLs (blocking); one outcome per ACL, in order. An ACL that exists
    /// already succeeds.
    pub fn create_topic_acls(&self, acls: &[crate::TopicAcl]) -> Result<Vec<std::result::Result<(), String>>> {
        crate::ffi::acl::create_topic_acls(self.client.inner().native_ptr(), acls, self.timeout).map_err(|e| self.err("create topic ACLs", e))
    }

    /// All topics with their partition counts (blocking).
    pub fn list_topics(&self) -> Result<Vec<TopicMeta>> {
        let metadata = self
            .client
            .inner()
            .fetch_metadata(None, self.timeout)
            .map_err(|e| self.err("fetch metadata", e))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| TopicMeta { name: t.name().to_string(), partitions: t.partitions().len() as i32 })
            .collect())
    }

    /// Creates one topic with its replicas placed: `assignment[p]` lists partition p's replicas,
    /// the first one its preferred leader. A topic that already exists counts as success.
    pub async fn create_topic_assigned(&self, name: &str, assignment: &[Vec<i32>], configs: &[(&str, &str)]) -> Result<()> {
        let replicas: Vec<&[i32]> = assignment.iter().map(Vec::as_slice).collect();
        let mut topic = NewTopic::new(name, assignment.len() as i32, TopicReplication::Variable(&replicas));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let results = self.client.create_topics(&[topic], &self.options()).await.map_err(|e| self.err("create topics", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(self.err(format!("create topic '{topic}'"), KafkaError::AdminOp(code))),
            }
        }
        Ok(())
    }

    /// Creates topics; a topic that already exists counts as success.
    pub async fn create_topics(&self, specs: &[NewTopicSpec]) -> Result<()> {
        if specs.is_empty() {
            return Ok(());
        }
        let configs: Vec<Vec<(&str, &str)>> = specs
            .iter()
            .map(|s| s.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
            .collect();
        let new_topics: Vec<NewTopic<'_>> = specs
            .iter()
            .zip(&configs)
            .map(|(s, cfg)| {
                let mut t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(s.replication_factor));
                for (k, v) in cfg {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let results = self
            .client
            .create_topics(&new_topics, &self.options())
            .await
            .map_err(|e| self.err("create topics", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(self.err(format!("create topic '{topic}'"), KafkaError::AdminOp(code)))
                }
            }
        }
        Ok(())
    }

    /// The dynamic (non-default) configuration of each named topic: what was set on the topic
    /// itself, as MM2 syncs it.
    pub async fn describe_topic_configs(
        &self,
        topics: &[String],
    ) -> Result<HashMap<String, BTreeMap<String, String>>> {
        if topics.is_empty() {
            return Ok(HashMap::new());
        }
        let specifiers: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let results = self
            .client
            .describe_configs(&specifiers, &self.options())
            .await
            .map_err(|e| self.err("describe topic configs", e))?;
        let mut out = HashMap::new();
        for (topic, result) in topics.iter().zip(results) {
            let resource = result.map_err(|code| {
                self.err(format!("describe configs of topic '{topic}'"), KafkaError::AdminOp(code))
            })?;
            let dynamic = resource
                .entries
                .into_iter()
                .filter(|e| e.source == ConfigSource::DynamicTopic && !e.is_default)
                .filter_map(|e| Some((e.name, e.value?)))
                .collect();
            out.insert(topic.clone(), dynamic);
        }
        Ok(out)
    }

    /// Replaces the dynamic configuration of a topic with `configs` (the non-incremental
    /// AlterConfigs API: every key to keep must be in `configs`).
    pub async fn alter_topic_configs(&self, topic: &str, configs: &BTreeMap<String, String>) -> Result<()> {
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in configs {
            alter = alter.set(k, v);
        }
        let results = self
            .client
            .alter_configs([&alter], &self.options())
            .await
            .map_err(|e| self.err(format!("alter configs of topic '{topic}'"), e))?;
        for result in results {
            result.map_err(|(_, code)| {
                self.err(format!("alter configs of topic '{topic}'"), KafkaError::AdminOp(code))
            })?;
        }
        Ok(())
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<()> {
        let request = NewPartitions::new(topic, count as usize);
        let results = self
            .client
            .create_partitions([&request], &self.options())
            .await
            .map_err(|e| self.err(format!("add partitions to topic '{topic}'"), e))?;
        for result in results {
            result.map_err(|(_, code)| {
                self.err(format!("add partitions to topic '{topic}'"), KafkaError::AdminOp(code))
            })?;
        }
        Ok(())
    }
}
