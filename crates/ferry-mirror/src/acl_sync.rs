//! Topic ACL sync (`sync.topic.acls.enabled`, on by default as in MM2): consumers of a remote
//! topic get the read access they had on its source.
//!
//! The rules are MM2's (`MirrorSourceConnector.syncTopicAcls`): literal topic ACLs of replicated
//! topics are copied to the remote topic's name, except ALLOW WRITE (only the mirror writes a
//! remote topic); ALLOW ALL becomes ALLOW READ; DENY entries are copied as they are. Prefixed
//! ACLs are not copied. Without an authorizer on the source there is nothing to copy: said
//! once. [`remote_acls`] is the decision (pure); [`run`] reads and writes the clusters.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_kafka::{AclOperation, AclPermission, Admin, PatternType, TopicAcl};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control::FlowLists;
use crate::topic_plan::TopicFilter;

/// The ACLs the target needs for `source` ACLs, by MM2's rules.
pub fn remote_acls(source: &[TopicAcl], filter: &TopicFilter, source_alias: &str) -> BTreeSet<TopicAcl> {
    source
        .iter()
        .filter(|a| a.pattern == PatternType::Literal)
        .filter(|a| !(a.permission == AclPermission::Allow && a.operation == AclOperation::Write))
        .filter(|a| filter.should_replicate(&a.topic))
        .map(|a| TopicAcl {
            topic: filter.policy.remote_topic(source_alias, &a.topic),
            operation: if a.permission == AclPermission::Allow && a.operation == AclOperation::All { AclOperation::Read } else { a.operation },
            ..a.clone()
        })
        .collect()
}

/// One flow's ACL sync task: [`AclSync::run`].
pub(crate) struct AclSync {
    pub(crate) flow: String,
    pub(crate) source_alias: String,
    pub(crate) filter: TopicFilter,
    pub(crate) source: Arc<Admin>,
    pub(crate) target: Arc<Admin>,
    pub(crate) lists: watch::Receiver<Option<Arc<FlowLists>>>,
    pub(crate) interval: Duration,
}

/// Copies topic ACLs every `interval` until cancelled. Only ACLs not yet created by this task
/// are sent; a refused one is reported once, naming the topic and the reason.
pub(crate) async fn run(sync: AclSync, cancel: CancellationToken) {
    let AclSync { flow, source_alias, mut filter, source, target, mut lists, interval } = sync;
    let mut created: BTreeSet<TopicAcl> = BTreeSet::new();
    let mut refused: BTreeSet<TopicAcl> = BTreeSet::new();
    let (mut said_no_authorizer, mut said_error) = (false, false);
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(l) = lists.borrow_and_update().as_deref() {
            filter.set_lists(l);
        }
        let admin = source.clone();
        let described = tokio::task::spawn_blocking(move || admin.describe_topic_acls()).await;
        let acls = match described {
            Ok(Ok(Some(acls))) => acls,
            Ok(Ok(None)) => {
                if !std::mem::replace(&mut said_no_authorizer, true) {
                    info!(%flow, cluster = %source_alias, "the source cluster has no authorizer: there are no topic ACLs to sync (sync.topic.acls.enabled = false turns the check off)");
                }
                continue;
            }
            Ok(Err(e)) => {
                if !std::mem::replace(&mut said_error, true) {
                    warn!(%flow, error = %e, hint = e.hint().unwrap_or_default(), "cannot read topic ACLs; retrying every {interval:?}");
                }
                continue;
            }
            Err(_) => continue, // the blocking task panicked: nothing to do but try again: nothing to do but try again
        };
        said_error = false;
        let wanted = remote_acls(&acls, &filter, &source_alias);
        let new: Vec<TopicAcl> = wanted.iter().filter(|a| !created.contains(*a) && !refused.contains(*a)).cloned().collect();
        if new.is_empty() {
            continue;
        }
        let admin = target.clone();
        let to_create = new.clone();
        let outcome = tokio::task::spawn_blocking(move || admin.create_topic_acls(&to_create)).await;
        match outcome {
            Ok(Ok(results)) => {
                for (acl, result) in new.into_iter().zip(results) {
                    match result {
                        Ok(()) => {
                            info!(%flow, topic = %acl.topic, principal = %acl.principal, operation = ?acl.operation, permission = ?acl.permission, "topic ACL synced");
                            created.insert(acl);
                        }
                        Err(reason) => {
                            warn!(%flow, topic = %acl.topic, principal = %acl.principal, %reason, "topic ACL not synced: the target refused it");
                            refused.insert(acl);
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                if !std::mem::replace(&mut said_error, true) {
                    warn!(%flow, error = %e, hint = e.hint().unwrap_or_default(), "cannot create topic ACLs on the target; retrying every {interval:?}");
                }
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegexList;
    use crate::replication_policy::ReplicationPolicy;

    fn acl(topic: &str, pattern: PatternType, operation: AclOperation, permission: AclPermission) -> TopicAcl {
        TopicAcl { topic: topic.into(), pattern, principal: "User:alice".into(), host: "*".into(), operation, permission }
    }

    #[test]
    fn mm2_rules_read_access_follows_writes_do_not() {
        let filter = TopicFilter {
            topics: RegexList::parse("orders.*").unwrap(),
            exclude: RegexList::parse("").unwrap(),
            policy: ReplicationPolicy::default(),
            target: "b".into(),
        };
        use AclOperation::*;
        use AclPermission::*;
        use PatternType::*;
        let source = [
            acl("orders", Literal, Read, Allow),
            acl("orders", Literal, Write, Allow),           // only the mirror writes remote topics
            acl("orders", Literal, All, Allow),             // becomes READ
            acl("orders", Literal, Write, Deny),            // denials are copied as they are
            acl("orders.eu", Literal, Describe, Allow),
            acl("orders", Prefixed, Read, Allow),           // MM2 copies literal ACLs only
            acl("payments", Literal, Read, Allow),          // not replicated
            acl("b.orders", Literal, Read, Allow),          // a cycle back to the target
        ];
        let got: Vec<(String, AclOperation, AclPermission)> =
            remote_acls(&source, &filter, "a").into_iter().map(|a| (a.topic, a.operation, a.permission)).collect();
        assert_eq!(got, vec![
            ("a.orders".into(), Read, Allow),
            ("a.orders".into(), Write, Deny),
            ("a.orders.eu".into(), Describe, Allow),
        ]);
    }
}
