//! DescribeCluster: the cluster id, each broker's rack, and the broker named controller.

use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::KafkaError;

use super::{copy_str, request};

/// A broker as DescribeCluster gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// What DescribeCluster says of a cluster. On KRaft clusters the `controller` a broker names is
/// one of the brokers, not the active KRaft controller (KIP-919): clients cannot see that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    pub controller: Option<i32>,
    pub nodes: Vec<ClusterNode>,
}

unsafe fn node(n: *const rd::rd_kafka_Node_t) -> ClusterNode {
    // SAFETY: `n` is a node of a live result (the caller's contract).
    unsafe {
        ClusterNode {
            id: rd::rd_kafka_Node_id(n),
            host: copy_str(rd::rd_kafka_Node_host(n)).unwrap_or_default(),
            port: rd::rd_kafka_Node_port(n),
            rack: copy_str(rd::rd_kafka_Node_rack(n)).filter(|r| !r.is_empty()),
        }
    }
}

pub(crate) fn describe_cluster(rk: *mut rd::rd_kafka_t, timeout: Duration) -> Result<ClusterDescription, KafkaError> {
    // SAFETY: `rk` is the caller's live admin client; the result's nodes and strings are copied
    // before the event is dropped.
    unsafe {
        let event = request(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECLUSTER, timeout, |options, queue| {
            rd::rd_kafka_DescribeCluster(rk, options, queue);
        })?;
        let result = rd::rd_kafka_event_DescribeCluster_result(event.event);
        if result.is_null() {
            return Err(KafkaError::AdminOpCreation("DescribeCluster returned another event type".into()));
        }
        let mut count = 0usize;
        let nodes = rd::rd_kafka_DescribeCluster_result_nodes(result, &mut count);
        let nodes = (0..count).map(|i| node(*nodes.add(i))).collect();
        let controller = rd::rd_kafka_DescribeCluster_result_controller(result);
        let controller = (!controller.is_null()).then(|| rd::rd_kafka_Node_id(controller));
        let cluster_id = copy_str(rd::rd_kafka_DescribeCluster_result_cluster_id(result));
        Ok(ClusterDescription { cluster_id, controller, nodes })
    }
}
