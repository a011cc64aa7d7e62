//! What a running `ferry sql` job tells `ferry serve`, as the mirrors' metrics reports do: one
//! JSON record per job and process every [`JOB_REPORT_INTERVAL`] to [`JOBS_TOPIC`] on the
//! cluster of the job's first source table, keyed by `{"job":…,"process":…}`, and a last one
//! when the job ends. Counters are cumulative per process run; a reader keeps each run's latest
//! report and calls a run whose reports stopped coming lost.
//!
//! The format lives here, with the clients, because two roles share it: `ferry-sql` writes it
//! and `ferry-serve` reads it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The topic, on each cluster jobs read from, that carries job reports.
pub const JOBS_TOPIC: &str = "ferry-sql-jobs.internal";

/// How often a running job reports.
pub const JOB_REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// How long reports are kept (`retention.ms` of [`JOBS_TOPIC`]).
pub const JOBS_RETENTION_MS: i64 = 2 * 3600 * 1000;

/// Format version of [`JobReport`].
pub const JOB_REPORT_VERSION: u32 = 1;

/// One process's view of one job at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub version: u32,
    /// The job's name (`ferry sql run --name`, by default the file's name without `.sql`).
    pub job: String,
    /// The job file as given.
    pub file: String,
    /// `host:pid:start-ms`: unique per process run.
    pub process: String,
    pub started_ms: i64,
    pub at_ms: i64,
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    pub pipelines: Vec<PipelineReport>,
    /// `ferry` (the queries run in this process) or `flink` (they run on a Flink cluster; this
    /// process serves their views from the changelogs Flink writes).
    #[serde(default = "ferry_engine")]
    pub engine: String,
    /// Where this process serves its views (`http://HOST:PORT`, from `--listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views_url: Option<String>,
    /// Its materialized views, as `GET /api/v1/views` of the process lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<ViewReport>,
    /// It takes [`JobCommand`]s: `ferry serve` may stop it, and restart it when it has a state
    /// directory to resume from.
    #[serde(default)]
    pub commands: bool,
    #[serde(default)]
    pub restartable: bool,
    /// Times it was restarted by a command.
    #[serde(default)]
    pub restarts: u32,
}

fn ferry_engine() -> String {
    "ferry".into()
}

/// A materialized view a job serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewReport {
    pub name: String,
    pub columns: Vec<ColumnReport>,
    pub primary_key: Vec<String>,
    pub rows: u64,
    pub watermark: Option<i64>,
    pub endpoints: Vec<EndpointReport>,
}

/// A column of a view: its name and Flink SQL type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnReport {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// A REST endpoint of a view: `GET /api/v1/query/{view}/{name}?{parameters}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub name: String,
    pub parameters: Vec<String>,
    /// The endpoint's query (none for the built-in `all` and `lookup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    /// Its bounded sources were read and every result written (or it was stopped).
    Finished,
    Failed,
}

/// One `INSERT` (or materialized view) of the job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    /// The statement's line in the job file.
    pub line: u64,
    pub source: String,
    pub sink: String,
    pub records_in: u64,
    pub records_out: u64,
    /// Records that did not decode, skipped by `'json.ignore-parse-errors'` and the like.
    pub skipped: u64,
    /// Rows dropped as late (every window they belonged to had fired).
    pub late: u64,
    /// Rows the state TTL dropped.
    pub expired: u64,
    /// Rows held in state (open windows, groups, join sides).
    pub state_rows: u64,
    /// The pipeline's watermark (ms), once it has one.
    pub watermark_ms: Option<i64>,
}

impl JobReport {
    /// The record key: the job and the process run.
    pub fn key(&self) -> String {
        serde_json::json!({ "job": self.job, "process": self.process }).to_string()
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// A report of this or a later version (unknown fields ignored); None for anything else.
    pub fn decode(bytes: &[u8]) -> Option<JobReport> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The topic, on the cluster of a job's first table, that keeps what `ferry sql run --engine
/// flink` submitted to Flink, keyed by the Flink job id and compacted: what `ferry serve` needs
/// to restart a job from its savepoint.
pub const FLINK_JOBS_TOPIC: &str = "ferry-sql-flink-jobs.internal";

/// Format version of [`FlinkSubmission`].
pub const FLINK_SUBMISSION_VERSION: u32 = 1;

/// A Flink job as Ferry submitted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlinkSubmission {
    pub version: u32,
    pub flink_job: String,
    /// The Ferry job's name (`--name`).
    pub job: String,
    pub file: String,
    /// The SQL Gateway it went through.
    pub gateway: String,
    /// The session's configuration (`pipeline.name`, `parallelism.default`), without the
    /// savepoint.
    pub properties: Vec<(String, String)>,
    /// The statements that make the job, in order: the job file's statements before it that
    /// start no job (CREATE, SET, …), then its INSERT or statement set.
    pub statements: Vec<String>,
    pub from_savepoint: Option<String>,
    /// The job this one restarted (from its savepoint).
    pub restarted_from: Option<String>,
    pub submitted_ms: i64,
}

impl FlinkSubmission {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a submission serializes")
    }

    /// A submission of this or a later version; None for anything else.
    pub fn decode(bytes: &[u8]) -> Option<FlinkSubmission> {
        serde_json::from_slice(bytes).ok()
    }

    /// Writes it to [`FLINK_JOBS_TOPIC`] on `cluster` (the topic created compacted if missing).
    pub async fn record(&self, cluster: &crate::ClusterClient) -> Result<(), String> {
        write_one(cluster, FLINK_JOBS_TOPIC, &[("cleanup.policy", "compact")], &self.flink_job, &self.encode()).await
    }
}

/// Writes one record to `topic` on `cluster`, the topic created with `configs` if missing.
async fn write_one(cluster: &crate::ClusterClient, topic: &str, configs: &[(&str, &str)], key: &str, value: &str) -> Result<(), String> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let admin = crate::Admin::connect(cluster).map_err(|e| e.to_string())?;
    let spec = crate::NewTopicSpec { name: topic.into(), partitions: 1, replication_factor: -1, configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    admin.create_topics(&[spec]).await.map_err(|e| e.to_string())?;
    let producer: FutureProducer = cluster.client_config(crate::ClientRole::Producer).set("message.timeout.ms", "10000").create().map_err(|e| format!("cluster {}: {e}", cluster.alias))?;
    producer.send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(10)).await.map_err(|(e, _)| format!("cluster {} topic {topic}: {e}", cluster.alias))?;
    Ok(())
}

/// The topic, beside [`JOBS_TOPIC`], that carries `ferry serve`'s commands to running jobs,
/// keyed by the process they are for.
pub const COMMANDS_TOPIC: &str = "ferry-sql-commands.internal";

/// How long commands are kept (a process reads those newer than its start).
pub const COMMANDS_RETENTION_MS: i64 = 3600 * 1000;

/// What a running job is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// End as Ctrl-C does: a last checkpoint, offsets committed, the process exits.
    Stop,
    /// End the run and start it again from its checkpoint, with the job file as it is now.
    Restart,
}

/// A command for one process run (`JobReport::process`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCommand {
    pub version: u32,
    pub process: String,
    pub command: Command,
    pub at_ms: i64,
}

impl JobCommand {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a command serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<JobCommand> {
        serde_json::from_slice(bytes).ok()
    }

    /// Writes it to [`COMMANDS_TOPIC`] on `cluster`.
    pub async fn send(&self, cluster: &crate::ClusterClient) -> Result<(), String> {
        let retention = COMMANDS_RETENTION_MS.to_string();
        write_one(cluster, COMMANDS_TOPIC, &[("cleanup.policy", "delete"), ("retention.ms", &retention)], &self.process, &self.encode()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_and_garbage_is_refused() {
        let report = JobReport {
            version: JOB_REPORT_VERSION,
            job: "orders".into(),
            file: "jobs/orders.sql".into(),
            process: "h:1:2".into(),
            started_ms: 1,
            at_ms: 2,
            state: JobState::Running,
            error: None,
            pipelines: vec![PipelineReport { line: 3, source: "orders".into(), sink: "big".into(), records_in: 10, records_out: 4, watermark_ms: Some(5), ..PipelineReport::default() }],
            engine: "ferry".into(),
            views_url: Some("http://h:8090".into()),
            views: vec![ViewReport { name: "per_user".into(), rows: 3, endpoints: vec![EndpointReport { name: "busy".into(), parameters: vec!["min".into()], query: Some("SELECT …".into()) }], ..ViewReport::default() }],
            commands: true,
            restartable: true,
            restarts: 1,
        };
        assert_eq!(JobReport::decode(report.encode().as_bytes()), Some(report.clone()));
        assert!(report.encode().contains("\"state\":\"running\""));
        assert_eq!(report.key(), r#"{"job":"orders","process":"h:1:2"}"#);
        assert_eq!(JobReport::decode(b"{\"version\": 1}"), None);
        // A report from before engines and views: the embedded engine, no views.
        let older = r#"{"version":1,"job":"j","file":"j.sql","process":"p","started_ms":1,"at_ms":2,"state":"finished","error":null,"pipelines":[]}"#;
        let read = JobReport::decode(older.as_bytes()).unwrap();
        assert_eq!((read.engine.as_str(), read.views_url, read.views.len()), ("ferry", None, 0));
        let submission = FlinkSubmission {
            version: FLINK_SUBMISSION_VERSION,
            flink_job: "f00".into(),
            job: "orders".into(),
            file: "orders.sql".into(),
            gateway: "http://h:8083".into(),
            properties: vec![("pipeline.name".into(), "orders".into())],
            statements: vec!["CREATE TABLE t (a INT) WITH ()".into(), "INSERT INTO t SELECT 1".into()],
            from_savepoint: None,
            restarted_from: None,
            submitted_ms: 5,
        };
        assert_eq!(FlinkSubmission::decode(submission.encode().as_bytes()), Some(submission));
        assert_eq!(FlinkSubmission::decode(report.encode().as_bytes()), None);
        let command = JobCommand { version: 1, process: "h:1:2".into(), command: Command::Restart, at_ms: 9 };
        assert!(command.encode().contains("\"command\":\"restart\""));
        assert_eq!(JobCommand::decode(command.encode().as_bytes()), Some(command));
        assert_eq!(JobReport::decode(b"\xff"), None);
    }
}
