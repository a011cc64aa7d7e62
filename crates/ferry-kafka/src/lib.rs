//! The only crate of Ferry that builds librdkafka clients for the control plane.
//!
//! It turns a cluster's settings (alias, bootstrap servers, pass-through client properties)
//! into rdkafka clients, validates those properties against librdkafka *before* any cluster
//! is contacted, wraps the admin calls Ferry needs (topic metadata, creation, configs,
//! partitions) and classifies every failure as retriable or fatal, naming the cluster.
//!
//! ```no_run
//! # async fn demo() -> ferry_kafka::Result<()> {
//! use ferry_kafka::{Admin, ClusterClient};
//! let cluster = ClusterClient::new("a", "127.0.0.1:9092");
//! let admin = Admin::connect(&cluster)?;
//! for topic in admin.list_topics()? {
//!     println!("{} has {} partitions", topic.name, topic.partitions);
//! }
//! # Ok(()) }
//! ```
//!
//! The replication data path in `ferry-mirror` uses rdkafka's consumer and producer directly
//! (copying each record into a Ferry type only to cross a crate boundary would cost an
//! allocation per record); it obtains its `ClientConfig`s from here.

mod ffi;
mod admin;
mod backoff;
mod client;
mod error;
pub mod groups;
pub mod job_report;
pub mod log_throttle;
pub mod properties;
mod offsets;
mod quiet;

pub use ffi::acl::{AclOperation, AclPermission, PatternType, TopicAcl};
pub use ffi::cluster::{ClusterDescription, ClusterNode};
pub use admin::{Admin, NewTopicSpec, TopicMeta};
pub use backoff::Backoff;
pub use client::{is_sensitive_key, secrets_equal, ClientRole, ClusterClient, PropertyProblem, PropertyProblemKind};
pub use error::{classify, coordinator_moving, leadership_moving, Error, ErrorKind, Result};
pub use groups::{assigned_partitions, describe_groups, GroupDescription, GroupMember};
pub use offsets::{committed_offsets, log_reader, read_record, read_records_at, record_timestamps, same_record, watermarks, RecordFingerprint, RecordScan};
pub use log_throttle::{LibrdkafkaThrottle, Throttle};
pub use quiet::QuietContext;
