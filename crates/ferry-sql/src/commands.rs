//! Commands from `ferry serve` to a running job ([`ferry_kafka::job_report::JobCommand`]): a
//! thread follows [`COMMANDS_TOPIC`] on the cluster the job reports to and hands each command for
//! this process run, newer than its start, to the job. An unreachable cluster is said once and
//! retried with backoff; the job never waits on it.

use std::thread::JoinHandle;
use std::time::Duration;

use ferry_kafka::job_report::{Command, JobCommand, COMMANDS_RETENTION_MS, COMMANDS_TOPIC};
use ferry_kafka::{ClusterClient, QuietContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Whether `command` is for `process` and newer than `since_ms`.
pub fn for_us(command: &JobCommand, process: &str, since_ms: i64) -> bool {
    command.process == process && command.at_ms >= since_ms
}

fn open(cluster: &ClusterClient) -> Result<BaseConsumer<QuietContext>, String> {
    crate::report::create_topic(cluster, COMMANDS_TOPIC, COMMANDS_RETENTION_MS)?;
    let consumer: BaseConsumer<QuietContext> = cluster
        .client_config(ferry_kafka::ClientRole::Consumer)
        .set("group.id", format!("ferry-sql-commands-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create_with_context(QuietContext)
        .map_err(|e| e.to_string())?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(COMMANDS_TOPIC, 0, Offset::Beginning).map_err(|e| e.to_string())?;
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    Ok(consumer)
}

/// Follows the commands for `process` (newer than `since_ms`) on `cluster` until `cancel`,
/// calling `on` for each.
pub fn watch(cluster: ClusterClient, process: String, since_ms: i64, cancel: CancellationToken, on: impl Fn(Command) + Send + 'static) -> Option<JoinHandle<()>> {
    let run = move || {
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        while !cancel.is_cancelled() {
            let consumer = match open(&cluster) {
                Ok(c) => c,
                Err(e) => {
                    if !failing {
                        warn!(cluster = %cluster.bootstrap_servers, topic = COMMANDS_TOPIC, error = %e, "cannot read the job's commands from ferry serve; retrying with backoff up to 30 s");
                        failing = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            if failing {
                info!(cluster = %cluster.bootstrap_servers, topic = COMMANDS_TOPIC, "the job's commands are read again");
                failing = false;
            }
            while !cancel.is_cancelled() {
                // The consumer retries by itself on errors; they are librdkafka's to log.
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(250)) {
                    if let Some(c) = m.payload().and_then(JobCommand::decode).filter(|c| for_us(c, &process, since_ms)) {
                        info!(command = ?c.command, "command from ferry serve");
                        on(c.command);
                    }
                }
            }
        }
    };
    std::thread::Builder::new().name("job-commands".into()).spawn(run).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_runs_newer_commands_count() {
        let c = |process: &str, at_ms| JobCommand { version: 1, process: process.into(), command: Command::Stop, at_ms };
        assert!(for_us(&c("h:1:5", 10), "h:1:5", 5));
        assert!(!for_us(&c("h:1:5", 4), "h:1:5", 5), "a command older than the run");
        assert!(!for_us(&c("h:2:5", 10), "h:1:5", 5), "another process's");
    }
}
