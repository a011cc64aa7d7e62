//! A running job's reports to `ferry serve` ([`ferry_kafka::job_report`]): a thread writes the
//! job's progress every [`JOB_REPORT_INTERVAL`] to [`JOBS_TOPIC`] on the cluster of its first
//! source table (created there with a 2-hour retention if missing), and a last report when the
//! job ends. The job never waits on it: an unreachable cluster is said once and retried at the
//! next report.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferry_kafka::job_report::{JobReport, JobState, PipelineReport, JOBS_RETENTION_MS, JOBS_TOPIC, JOB_REPORT_INTERVAL, JOB_REPORT_VERSION};
use ferry_kafka::{Admin, ClusterClient, NewTopicSpec};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tracing::{info, warn};

use crate::plan::Job;
use crate::run::Progress;
use crate::view::Views;

/// The thread writing a job's reports.
pub struct Reporter {
    ending: Arc<(Mutex<Option<(JobState, Option<String>)>>, Condvar)>,
    /// What changes while it runs: restarts, and why the last restart was refused.
    live: Arc<Mutex<(u32, Option<String>)>>,
    process: String,
    started_ms: i64,
    cluster: ClusterClient,
    thread: JoinHandle<()>,
}

/// What a job's reports say about it besides its progress.
pub struct ReportOf<'a> {
    pub name: &'a str,
    /// The job file as given.
    pub file: &'a str,
    /// `ferry`, or `flink` (the process serves views of queries Flink runs).
    pub engine: &'a str,
    /// The views it serves and where (`http://HOST:PORT`).
    pub served: Option<(Views, String)>,
    /// It takes commands (stop; restart if `restartable`).
    pub commands: bool,
    pub restartable: bool,
}

impl Reporter {
    /// Starts reporting `job` from `progress`; None when the job reads no Kafka table (it always
    /// does).
    pub fn start(job: &Job, of: ReportOf<'_>, progress: Progress) -> Option<Reporter> {
        let ReportOf { name, file, engine, served, commands, restartable } = of;
        let kafka = &job.pipelines.first()?.source.table.kafka;
        let cluster = crate::catalog::cluster_client(format!("job {name}"), &kafka.properties)?;
        let started_ms = crate::watermark::wall_clock_ms();
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into());
        let base = JobReport {
            version: JOB_REPORT_VERSION,
            job: name.to_string(),
            file: file.to_string(),
            process: format!("{host}:{}:{started_ms}", std::process::id()),
            started_ms,
            at_ms: started_ms,
            state: JobState::Running,
            error: None,
            pipelines: Vec::new(),
            engine: engine.to_string(),
            views_url: served.as_ref().map(|(_, url)| url.clone()),
            views: Vec::new(),
            commands,
            restartable,
            restarts: 0,
        };
        let process = base.process.clone();
        let views = served.map(|(v, _)| v).unwrap_or_default();
        let ending: Arc<(Mutex<Option<(JobState, Option<String>)>>, Condvar)> = Arc::default();
        let live: Arc<Mutex<(u32, Option<String>)>> = Arc::default();
        let (signal, changes, writes_to) = (ending.clone(), live.clone(), cluster.clone());
        let thread = std::thread::Builder::new().name("job-reports".into()).spawn(move || report(writes_to, base, progress, views, changes, signal)).ok()?;
        Some(Reporter { ending, live, process, started_ms, cluster, thread })
    }

    /// `host:pid:start-ms`, the key of its reports and of commands for it.
    pub fn process(&self) -> &str {
        &self.process
    }

    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    /// The cluster its reports (and commands) go through.
    pub fn cluster(&self) -> &ClusterClient {
        &self.cluster
    }

    /// A restart happened (`refused`: None), or was refused and why.
    pub fn restarted(&self, refused: Option<String>) {
        let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if refused.is_none() {
            live.0 += 1;
        }
        live.1 = refused;
    }

    /// Writes the last report (`state`, and why it failed) and waits for it to be sent (up to
    /// 10 s).
    pub fn finish(self, state: JobState, error: Option<String>) {
        let (lock, wake) = &*self.ending;
        *lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((state, error));
        wake.notify_all();
        let _ = self.thread.join();
    }
}

fn report(cluster: ClusterClient, base: JobReport, progress: Progress, views: Views, live: Arc<Mutex<(u32, Option<String>)>>, ending: Arc<(Mutex<Option<(JobState, Option<String>)>>, Condvar)>) {
    let mut producer: Option<ThreadedProducer<DefaultProducerContext>> = None;
    let mut failing = false;
    loop {
        let last = {
            let (lock, wake) = &*ending;
            let guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (guard, _) = wake.wait_timeout_while(guard, JOB_REPORT_INTERVAL, |e| e.is_none()).unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.clone()
        };
        let mut report = base.clone();
        report.at_ms = crate::watermark::wall_clock_ms();
        report.pipelines = progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        report.views = crate::api::describe(&views);
        (report.restarts, report.error) = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some((state, error)) = &last {
            report.state = *state;
            report.error = error.clone();
        }
        let sent = send(&cluster, &mut producer, &report, last.is_some());
        match sent {
            Ok(()) if failing => {
                info!(cluster = %cluster.bootstrap_servers, topic = JOBS_TOPIC, "job reports are written again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(cluster = %cluster.bootstrap_servers, topic = JOBS_TOPIC, error = %e, "cannot write the job's report for ferry serve; retrying with each report");
                failing = true;
            }
            Err(_) => {}
        }
        if last.is_some() {
            return;
        }
    }
}

fn send(cluster: &ClusterClient, producer: &mut Option<ThreadedProducer<DefaultProducerContext>>, report: &JobReport, last: bool) -> Result<(), String> {
    if producer.is_none() {
        create_topic(cluster, JOBS_TOPIC, JOBS_RETENTION_MS)?;
        *producer = Some(cluster.client_config(ferry_kafka::ClientRole::Producer).set("linger.ms", "0").set("message.timeout.ms", "10000").create().map_err(|e| e.to_string())?);
    }
    let p = producer.as_ref().expect("created above");
    let (key, value) = (report.key(), report.encode());
    p.send(BaseRecord::<String, String>::to(JOBS_TOPIC).key(&key).payload(&value).timestamp(report.at_ms)).map_err(|(e, _)| e.to_string())?;
    if last {
        p.flush(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Creates `topic` on `cluster` (one partition, deleted after `retention_ms`) unless it exists,
/// on a runtime of the calling thread's own: for threads outside any async runtime.
pub(crate) fn create_topic(cluster: &ClusterClient, topic: &str, retention_ms: i64) -> Result<(), String> {
    let admin = Admin::connect(cluster).map_err(|e| e.to_string())?;
    let spec = NewTopicSpec {
        name: topic.into(),
        partitions: 1,
        replication_factor: -1,
        configs: [("retention.ms".to_string(), retention_ms.to_string()), ("cleanup.policy".to_string(), "delete".to_string())].into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(admin.create_topics(&[spec])).map_err(|e| e.to_string())
}

/// The pipelines' rows of a report before anything ran: each INSERT's line, source and sink.
pub fn initial(job: &Job) -> Vec<PipelineReport> {
    job.pipelines.iter().map(|p| PipelineReport { line: p.pos.line, source: p.source.table.name.clone(), sink: p.sink.name().to_string(), ..PipelineReport::default() }).collect()
}
