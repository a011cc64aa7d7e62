//! Apache Flink, reached through its SQL Gateway's REST API (and its JobManager's, for the jobs'
//! metrics): the engine `ferry sql run --engine flink` submits to, and whose jobs `ferry serve`
//! lists, measures and stops. Ferry never runs a Flink
//! cluster of its own (`scripts/flink-cluster` starts one for tests and trials).

pub mod gateway;
pub mod jobmanager;

pub use gateway::{FlinkJob, Gateway, GatewayError, Session, StatementResult, SubmitError, Submitted};
pub use jobmanager::{JobManager, JobMetrics};
