//! Local Apache Kafka brokers for tests, the demo and benchmarks (single-node KRaft clusters on
//! free loopback ports, from the jars `scripts/install-kafka` installs), Kafka's Java tools, and
//! helpers to create topics, produce and read back records, and wait for conditions. A missing
//! Kafka installation is an error that says how to install it, never a skipped test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, Timestamp, TopicPartitionList};

mod flink;
mod kafka;

pub use flink::{flink_explain, flink_home, flink_reserved_words, flink_run, FlinkCluster};
pub use kafka::{compile_java, java_program, kafka_home, kafka_java, kafka_java_with, kafka_tool, mm2_single_node_settings, Broker, BrokerOptions};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free loopback port")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique across tests and runs: `prefix-<pid>-<n>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{}-{nanos:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Creates a topic (replication factor 1).
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    create_topic_with(bootstrap, topic, partitions, &[])
}

/// Creates a topic (replication factor 1) with topic configs.
pub fn create_topic_with(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    for r in block_on(admin.create_topics(&[new], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))? {
        if let Err((t, code)) = r {
            bail!("create topic {t} on {bootstrap}: {code:?}");
        }
    }
    Ok(())
}

/// A topic's configs that are set on the topic itself (not broker or default values).
pub fn topic_configs(bootstrap: &str, topic: &str) -> Result<std::collections::BTreeMap<String, String>> {
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let results = block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()))?;
    let mut out = std::collections::BTreeMap::new();
    for r in results {
        let resource = r.map_err(|e| anyhow::anyhow!("describe configs of {topic} on {bootstrap}: {e:?}"))?;
        for e in resource.entries {
            if matches!(e.source, ConfigSource::DynamicTopic) {
                out.insert(e.name, e.value.unwrap_or_default());
            }
        }
    }
    Ok(out)
}

/// Sets a topic's dynamic configs to exactly `configs` (AlterConfigs replaces the whole set).
pub fn set_topic_configs(bootstrap: &str, topic: &str, configs: &[(&str, &str)]) -> Result<()> {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        alter = alter.set(k, v);
    }
    for r in block_on(admin.alter_configs(&[alter], &AdminOptions::new()))? {
        if let Err((_, code)) = r {
            bail!("alter configs of {topic} on {bootstrap}: {code:?}");
        }
    }
    Ok(())
}

/// Grows a topic to `total` partitions.
pub fn add_partitions(bootstrap: &str, topic: &str, total: usize) -> Result<()> {
    use rdkafka::admin::NewPartitions;
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    for r in block_on(admin.create_partitions(&[NewPartitions::new(topic, total)], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))? {
        if let Err((t, code)) = r {
            bail!("create partitions of {t} on {bootstrap}: {code:?}");
        }
    }
    Ok(())
}

/// Deletes the records of `topic`/`partition` before `offset` (DeleteRecords); returns the new
/// log start offset.
pub fn delete_records(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> Result<i64> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    let result = block_on(admin.delete_records(&tpl, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))?;
    let e = result.find_partition(topic, partition).context("DeleteRecords answered without the partition")?;
    e.error().map_err(|err| anyhow::anyhow!("delete records of {topic}[{partition}] on {bootstrap}: {err}"))?;
    match e.offset() {
        Offset::Offset(low) => Ok(low),
        other => bail!("DeleteRecords of {topic}[{partition}] answered {other:?}"),
    }
}

/// A partition's (log start, high watermark).
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    Ok(consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?)
}

/// Deletes a topic.
pub fn delete_topic(bootstrap: &str, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let results = block_on(admin.delete_topics(&[topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))?;
    for r in results {
        if let Err((t, code)) = r {
            bail!("delete topic {t} on {bootstrap}: {code:?}");
        }
    }
    Ok(())
}

/// Minimal executor for rdkafka's admin futures (rdkafka's own thread completes them).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context as TaskContext, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// A record as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

impl TestRecord {
    /// The parts replication must preserve (everything but the offset).
    pub fn content(&self) -> (i32, Option<&[u8]>, Option<&[u8]>, Vec<(String, Option<Vec<u8>>)>, Option<i64>) {
        let headers = self.headers.iter().filter(|(k, _)| k != "ferry.provenance").cloned().collect();
        (self.partition, self.key.as_deref(), self.value.as_deref(), headers, self.timestamp)
    }

    /// The record as a producer sends it to `topic` (its partition, key, value, timestamp, headers).
    pub fn to_base_record<'a>(&'a self, topic: &'a str) -> BaseRecord<'a, [u8], [u8]> {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(self.partition);
        if let Some(k) = &self.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &self.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(ts) = self.timestamp {
            rec = rec.timestamp(ts);
        }
        if !self.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (k, v) in &self.headers {
                h = h.insert(Header { key: k, value: v.as_deref() });
            }
            rec = rec.headers(h);
        }
        rec
    }

    /// A [`sample_records`] record's identity: its partition and `seq` header.
    pub fn seq(&self) -> (i32, String) {
        let v = self.headers.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.clone()).expect("a sample record has a seq header");
        (self.partition, String::from_utf8(v).expect("seq is UTF-8"))
    }
}

/// Counts failed deliveries and keeps the first error, so a record the broker refused (a
/// timestamp too far in the future, a missing topic) fails the test that sent it.
#[derive(Default)]
struct DeliveryCheck {
    failed: std::sync::atomic::AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryCheck {}

impl rdkafka::producer::ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first.lock().unwrap().get_or_insert_with(|| format!("{}[{}]: {e}", m.topic(), m.partition()));
        }
    }
}

/// A long-lived producer for tests and the demo.
pub struct RecordProducer {
    producer: ThreadedProducer<DeliveryCheck>,
}

impl RecordProducer {
    pub fn new(bootstrap: &str) -> Result<Self> {
        let producer = client_config(bootstrap).set("linger.ms", "5").set("enable.idempotence", "true").create_with_context(DeliveryCheck::default())?;
        Ok(RecordProducer { producer })
    }

    /// Sends records (partition, key, value, headers, timestamp) and waits for all acknowledgements.
    pub fn send_all(&self, topic: &str, records: &[TestRecord]) -> Result<()> {
        for r in records {
            let mut rec = r.to_base_record(topic);
            loop {
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => bail!("produce to {topic}: {e}"),
                }
            }
        }
        self.producer.flush(Duration::from_secs(60))?;
        let check = self.producer.context();
        let failed = check.failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let first = check.first.lock().unwrap().take().unwrap_or_default();
            bail!("{failed} records to {topic} were not delivered; first: {first}");
        }
        Ok(())
    }
}

/// A transactional producer: each batch of records is committed or aborted as one transaction.
pub struct TxnProducer {
    producer: ThreadedProducer<DeliveryCheck>,
}

impl TxnProducer {
    pub fn new(bootstrap: &str) -> Result<Self> {
        let producer: ThreadedProducer<DeliveryCheck> =
            client_config(bootstrap).set("transactional.id", unique("test-txn")).set("linger.ms", "5").create_with_context(DeliveryCheck::default())?;
        producer.init_transactions(Duration::from_secs(30))?;
        Ok(TxnProducer { producer })
    }

    /// Sends `records` in one transaction and commits it (`commit`) or aborts it.
    pub fn transaction(&self, topic: &str, records: &[TestRecord], commit: bool) -> Result<()> {
        self.producer.begin_transaction()?;
        for r in records {
            let rec = r.to_base_record(topic);
            self.producer.send(rec).map_err(|(e, _)| anyhow::anyhow!("produce to {topic}: {e}"))?;
        }
        if commit {
            self.producer.commit_transaction(Duration::from_secs(30))?;
        } else {
            self.producer.flush(Duration::from_secs(30))?;
            self.producer.abort_transaction(Duration::from_secs(30))?;
        }
        Ok(())
    }
}

/// Produces records with a fresh producer and waits until all are acknowledged.
pub fn produce(bootstrap: &str, topic: &str, records: &[TestRecord]) -> Result<()> {
    RecordProducer::new(bootstrap)?.send_all(topic, records)
}

/// `count` records per partition with keys, values, two headers and distinct timestamps.
pub fn sample_records(partitions: i32, per_partition: usize, base_ts: i64) -> Vec<TestRecord> {
    let mut out = Vec::with_capacity(partitions as usize * per_partition);
    for i in 0..per_partition {
        for p in 0..partitions {
            out.push(TestRecord {
                partition: p,
                offset: -1,
                key: if i % 10 == 9 { None } else { Some(format!("key-{p}-{i}").into_bytes()) },
                value: if i % 50 == 49 { None } else { Some(format!("value-{p}-{i}-{}", "x".repeat(i % 30)).into_bytes()) },
                headers: vec![("seq".into(), Some(i.to_string().into_bytes())), ("empty".into(), None)],
                timestamp: Some(base_ts + i as i64),
            });
        }
    }
    out
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived in
/// total or `timeout` passed; returns what arrived, per partition in offset order.
pub fn consume_all(bootstrap: &str, topic: &str, partitions: i32, expected: usize, timeout: Duration) -> Result<Vec<TestRecord>> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < expected && start.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(to_record(&m)),
            // A broker just resumed (SIGCONT, restart): librdkafka reports its connections down
            // and reconnects by itself; the reader goes on until its timeout.
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure))) => {}
            Some(Err(e)) => bail!("consume {topic} from {bootstrap}: {e}"),
            None => {}
        }
    }
    // Linger briefly to catch records beyond the expected count (duplicates).
    let linger = Instant::now();
    while linger.elapsed() < Duration::from_millis(500) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(to_record(&m));
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

fn to_record(m: &rdkafka::message::BorrowedMessage<'_>) -> TestRecord {
    TestRecord {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers: m.headers().map_or_else(Vec::new, |h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect()),
        timestamp: match m.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
            Timestamp::NotAvailable => None,
        },
    }
}

/// Topic names on a cluster.
pub fn list_topics(bootstrap: &str) -> Result<Vec<(String, i32)>> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let md = admin.inner().fetch_metadata(None, Duration::from_secs(5))?;
    Ok(md.topics().iter().map(|t| (t.name().to_string(), t.partitions().len() as i32)).collect())
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a signal (`-STOP`, `-CONT`, `-TERM`, ...) to a process; panics if `kill` fails.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// A child process (e.g. `ferry mirror`) with its output in a log file; killed on drop.
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(program: &std::path::Path, args: &[&str], log_name: &str) -> Result<Process> {
        let log = std::env::temp_dir().join(format!("{log_name}.log"));
        let mut cmd = Command::new(program);
        cmd.args(args).env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        Self::spawn_command(cmd, &log)
    }

    /// Starts `cmd` with its output in `log` (e.g. a Kafka JVM from [`kafka_java`]).
    pub fn spawn_command(mut cmd: Command, log: &std::path::Path) -> Result<Process> {
        let out = std::fs::File::create(log)?;
        let child = cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).spawn().with_context(|| format!("start {:?}", cmd.get_program()))?;
        Ok(Process { child: Some(child), log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process has not exited (a crash or panic ends it).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no chance to flush or store anything.
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself: its status, or None if it runs on.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let child = self.child.as_mut().context("process already stopped")?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// SIGTERM, then waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("process already stopped")?;
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                bail!("process did not exit within {timeout:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A consumer in a group, subscribed to topics (none: it only reads the group's offsets), starting at the group's committed offsets
/// (earliest where it has none); positions are committed only by [`GroupConsumer::commit`].
pub struct GroupConsumer {
    consumer: BaseConsumer,
}

impl GroupConsumer {
    pub fn new(bootstrap: &str, group: &str, topics: &[&str]) -> Result<Self> {
        let consumer: BaseConsumer = client_config(bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", "6000")
            .create()?;
        if !topics.is_empty() {
            consumer.subscribe(topics)?;
        }
        Ok(GroupConsumer { consumer })
    }

    /// Reads until `done(records so far)` holds or `timeout` passes; each record with its topic.
    pub fn read_until(&self, timeout: Duration, mut done: impl FnMut(&[(String, TestRecord)]) -> bool) -> Result<Vec<(String, TestRecord)>> {
        let start = Instant::now();
        let mut out = Vec::new();
        while !done(&out) && start.elapsed() < timeout {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push((m.topic().to_string(), to_record(&m))),
                Some(Err(e)) => bail!("consume: {e}"),
                None => {}
            }
        }
        Ok(out)
    }

    /// Commits the position after every record returned so far.
    pub fn commit(&self) -> Result<()> {
        self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)?;
        Ok(())
    }

    /// The group's committed offsets of these partitions.
    pub fn committed(&self, partitions: &[(&str, i32)]) -> Result<Vec<(String, i32, Option<i64>)>> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let c = ferry_kafka::committed_offsets(&self.consumer, &tpl, Duration::from_secs(10))?;
        Ok(c.elements().iter().map(|e| (e.topic().to_string(), e.partition(), match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })).collect())
    }

    /// Leaves the group.
    pub fn close(self) {
        self.consumer.unsubscribe();
        drop(self.consumer);
    }
}

/// Commits offsets for `group` without joining it (as an admin tool does).
pub fn commit_offsets(bootstrap: &str, group: &str, offsets: &[(&str, i32, i64)]) -> Result<()> {
    let consumer: BaseConsumer = client_config(bootstrap).set("group.id", group).set("enable.auto.commit", "false").create()?;
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
    }
    consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
    Ok(())
}

/// Produces `n` records of `size` bytes round-robin over `partitions`, as fast as acks allow
/// (benchmarks).
pub fn fill(bootstrap: &str, topic: &str, partitions: i32, n: usize, size: usize) {
    let p: ThreadedProducer<DeliveryCheck> = client_config(bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create_with_context(DeliveryCheck::default())
        .unwrap();
    let payload = vec![b'x'; size];
    for i in 0..n {
        let key = format!("{i:012}");
        send_waiting(&p, BaseRecord::to(topic).partition((i % partitions as usize) as i32).key(key.as_bytes()).payload(&payload[..]));
    }
    p.flush(Duration::from_secs(300)).unwrap();
    let failed = p.context().failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} records to {topic} not delivered; first: {:?}", p.context().first.lock().unwrap());
}

/// The sum of `ferry_mirror_records_total` on a `ferry mirror --metrics-addr` endpoint (0 if it
/// does not answer).
pub fn scrape_records(addr: &str) -> f64 {
    scrape(addr, "ferry_mirror_records_total")
}

/// The sum of a metric's series on a Prometheus endpoint (0 if it does not answer or has none).
pub fn scrape(addr: &str, metric: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return 0.0 };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.strip_prefix(metric).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// librdkafka's mock cluster, in the calling process (a `ferry mirror` reaches it over loopback).
pub type Mock = rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

/// Creates on mock clusters `a` and `b` every topic flow `a->b` reads or writes for `topic`
/// (the mock has no CreateTopics; Ferry creates only missing topics).
pub fn mock_flow_topics(a: &Mock, b: &Mock, topic: &str, partitions: i32) {
    a.create_topic(topic, partitions, 1).unwrap();
    for internal in ["mm2-offset-syncs.b.internal", "ferry-offset-runs.b.internal"] {
        a.create_topic(internal, 1, 1).unwrap();
        b.create_topic(internal, 1, 1).unwrap();
    }
    b.create_topic(&format!("a.{topic}"), partitions, 1).unwrap();
    for internal in ["heartbeats", "ferry-metrics.internal", "ferry-control.internal"] {
        b.create_topic(internal, 1, 1).unwrap();
    }
}

/// Sends `record`, waiting while the producer's queue is full (benchmarks and fills).
pub fn send_waiting<C, K, P>(producer: &ThreadedProducer<C>, mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>)
where
    C: rdkafka::producer::ProducerContext + 'static,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// A time as Flink's SQL text: `2023-11-14 22:13:20.25` (the fraction's trailing zeros dropped,
/// none for a whole second), from milliseconds since the epoch, UTC.
pub fn sql_timestamp(ms: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(ms).expect("a time chrono represents").naive_utc();
    let fraction = match ms.rem_euclid(1000) {
        0 => String::new(),
        f => format!(".{f:03}").trim_end_matches('0').to_string(),
    };
    format!("{}{fraction}", at.format("%Y-%m-%d %H:%M:%S"))
}


/// One HTTP/1.0 request (the server closes the connection, so the body is whatever follows the
/// head): (status, body). A connection that fails is an error, for tests that kill servers (and benches).
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    s.write_all(format!("{head}\r\n{body}").as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string()))
}

#[cfg(test)]
mod sql_timestamp_tests {
    #[test]
    fn flink_sql_timestamp_text() {
        assert_eq!(super::sql_timestamp(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(super::sql_timestamp(1_700_000_000_250), "2023-11-14 22:13:20.25");
        assert_eq!(super::sql_timestamp(1_700_000_000_001), "2023-11-14 22:13:20.001");
        assert_eq!(super::sql_timestamp(-1), "1969-12-31 23:59:59.999");
    }
}
