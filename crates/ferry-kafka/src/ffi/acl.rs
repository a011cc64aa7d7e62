//! Topic ACLs: DescribeAcls and CreateAcls (KIP-140).

use std::ffi::CString;
use std::os::raw::c_char;
use std::ptr;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{c_string, copy_str, request};

/// An ACL's operation, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclPermission {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatternType {
    Literal,
    Prefixed,
}

/// One ACL on a topic: who may (or may not) do what, from where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicAcl {
    pub topic: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

const OPERATIONS: &[(AclOperation, rd::rd_kafka_AclOperation_t)] = {
    use rd::rd_kafka_AclOperation_t::*;
    &[
        (AclOperation::All, RD_KAFKA_ACL_OPERATION_ALL),
        (AclOperation::Read, RD_KAFKA_ACL_OPERATION_READ),
        (AclOperation::Write, RD_KAFKA_ACL_OPERATION_WRITE),
        (AclOperation::Create, RD_KAFKA_ACL_OPERATION_CREATE),
        (AclOperation::Delete, RD_KAFKA_ACL_OPERATION_DELETE),
        (AclOperation::Alter, RD_KAFKA_ACL_OPERATION_ALTER),
        (AclOperation::Describe, RD_KAFKA_ACL_OPERATION_DESCRIBE),
        (AclOperation::ClusterAction, RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION),
        (AclOperation::DescribeConfigs, RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS),
        (AclOperation::AlterConfigs, RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS),
        (AclOperation::IdempotentWrite, RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE),
    ]
};

fn operation_to_c(op: AclOperation) -> rd::rd_kafka_AclOperation_t {
    OPERATIONS.iter().find(|(o, _)| *o == op).map(|(_, c)| *c).unwrap_or(rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_UNKNOWN)
}

fn operation_from_c(c: rd::rd_kafka_AclOperation_t) -> Option<AclOperation> {
    OPERATIONS.iter().find(|(_, x)| *x == c).map(|(o, _)| *o)
}

fn permission_to_c(p: AclPermission) -> rd::rd_kafka_AclPermissionType_t {
    match p {
        AclPermission::Allow => rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
        AclPermission::Deny => rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY,
    }
}

fn pattern_to_c(p: PatternType) -> rd::rd_kafka_ResourcePatternType_t {
    match p {
        PatternType::Literal => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        PatternType::Prefixed => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
    }
}

/// Every ACL on topics (any pattern type) the cluster holds. `Ok(None)`: the cluster has no
/// authorizer (Kafka answers SECURITY_DISABLED), so there are no ACLs to read.
pub(crate) fn describe_topic_acls(rk: *mut rd::rd_kafka_t, timeout: Duration) -> Result<Option<Vec<TopicAcl>>, KafkaError> {
    let mut errstr = [0 as c_char; 512];
    // SAFETY: `rk` is the caller's live admin client; the filter is freed after the request
    // is enqueued (librdkafka copies it); result pointers are read before the event is dropped.
    unsafe {
        let filter = rd::rd_kafka_AclBindingFilter_new(
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            ptr::null(),
            rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
            ptr::null(),
            ptr::null(),
            rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        if filter.is_null() {
            return Err(KafkaError::AdminOpCreation(copy_str(errstr.as_ptr()).unwrap_or_default()));
        }
        let outcome = request(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS, timeout, |options, queue| {
            rd::rd_kafka_DescribeAcls(rk, filter, options, queue);
        });
        rd::rd_kafka_AclBinding_destroy(filter);
        let event = match outcome {
            Ok(event) => event,
            Err(KafkaError::AdminOp(RDKafkaErrorCode::SecurityDisabled)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let result = rd::rd_kafka_event_DescribeAcls_result(event.event);
        if result.is_null() {
            return Err(KafkaError::AdminOpCreation("DescribeAcls returned another event type".into()));
        }
        let mut count = 0usize;
        let acls = rd::rd_kafka_DescribeAcls_result_acls(result, &mut count);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let acl = *acls.add(i);
            let pattern = match rd::rd_kafka_AclBinding_resource_pattern_type(acl) {
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL => PatternType::Literal,
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => PatternType::Prefixed,
                _ => continue,
            };
            let permission = match rd::rd_kafka_AclBinding_permission_type(acl) {
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW => AclPermission::Allow,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY => AclPermission::Deny,
                _ => continue,
            };
            let Some(operation) = operation_from_c(rd::rd_kafka_AclBinding_operation(acl)) else { continue };
            let (Some(topic), Some(principal), Some(host)) =
                (copy_str(rd::rd_kafka_AclBinding_name(acl)), copy_str(rd::rd_kafka_AclBinding_principal(acl)), copy_str(rd::rd_kafka_AclBinding_host(acl)))
            else {
                continue;
            };
            out.push(TopicAcl { topic, pattern, principal, host, operation, permission });
        }
        Ok(Some(out))
    }
}

/// Creates `acls` (an ACL that exists already is left as is and counts as created). Returns
/// one outcome per ACL, in order; `Err` for the request as a whole.
pub(crate) fn create_topic_acls(rk: *mut rd::rd_kafka_t, acls: &[TopicAcl], timeout: Duration) -> Result<Vec<Result<(), String>>, KafkaError> {
    if acls.is_empty() {
        return Ok(Vec::new());
    }
    let strings: Vec<[CString; 3]> =
        acls.iter().map(|a| Ok([c_string(&a.topic)?, c_string(&a.principal)?, c_string(&a.host)?])).collect::<Result<_, KafkaError>>()?;
    let mut errstr = [0 as c_char; 512];
    // SAFETY: `rk` is the caller's live admin client; bindings are created from CStrings that
    // outlive them, passed to CreateAcls (which copies them) and destroyed on every path.
    unsafe {
        let mut bindings: Vec<*mut rd::rd_kafka_AclBinding_t> = Vec::with_capacity(acls.len());
        for (acl, [topic, principal, host]) in acls.iter().zip(&strings) {
            let binding = rd::rd_kafka_AclBinding_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                topic.as_ptr(),
                pattern_to_c(acl.pattern),
                principal.as_ptr(),
                host.as_ptr(),
                operation_to_c(acl.operation),
                permission_to_c(acl.permission),
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            if binding.is_null() {
                for b in bindings {
                    rd::rd_kafka_AclBinding_destroy(b);
                }
                return Err(KafkaError::AdminOpCreation(copy_str(errstr.as_ptr()).unwrap_or_default()));
            }
            bindings.push(binding);
        }
        let outcome = request(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS, timeout, |options, queue| {
            rd::rd_kafka_CreateAcls(rk, bindings.as_mut_ptr(), bindings.len(), options, queue);
        });
        for b in bindings {
            rd::rd_kafka_AclBinding_destroy(b);
        }
        let event = outcome?;
        let result = rd::rd_kafka_event_CreateAcls_result(event.event);
        if result.is_null() {
            return Err(KafkaError::AdminOpCreation("CreateAcls returned another event type".into()));
        }
        let mut count = 0usize;
        let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let error = rd::rd_kafka_acl_result_error(*results.add(i));
            out.push(if error.is_null() {
                Ok(())
            } else {
                Err(copy_str(rd::rd_kafka_error_string(error)).unwrap_or_else(|| "unknown error".into()))
            });
        }
        Ok(out)
    }
}
