//! Local Kafka-protocol brokers for tests, the demo and benchmarks: `tansu` 0.6.0 processes on
//! free loopback ports with in-memory storage, plus helpers to create topics, produce and read
//! back records, and wait for conditions. A missing broker binary is an error that says how to
//! install it, never a skipped test.

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
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, Timestamp, TopicPartitionList};

pub const TANSU_VERSION: &str = "0.6.0";

/// Where the tansu binary is: `$FERRY_TANSU_BIN`, else `tansu` in `~/.cargo/bin`, else on PATH.
pub fn tansu_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("FERRY_TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo"))) {
        let candidate = home.join("bin").join("tansu");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("tansu");
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    bail!("the tansu broker is not installed: run `scripts/install-tansu` (cargo install tansu --version {TANSU_VERSION} --locked --features dynostore,libsql)")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free loopback port")
}

/// A tansu broker process on a loopback port, with in-memory storage or (`start_durable`) a
/// SQLite file that survives a restart; killed on drop.
pub struct Broker {
    pub name: String,
    pub port: u16,
    /// `--storage-engine`.
    storage: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker with memory storage and waits until it answers metadata requests.
    pub fn start(name: &str) -> Result<Broker> {
        Self::start_with(name, "memory://tansu/".to_string())
    }

    /// Starts a broker whose data lives in a SQLite file under the temp dir (tansu's `libsql`
    /// feature), so [`Broker::restart`] keeps every record.
    pub fn start_durable(name: &str) -> Result<Broker> {
        Self::start_with(name, format!("sqlite://{}.db", unique(name)))
    }

    fn start_with(name: &str, storage: String) -> Result<Broker> {
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("ferry-tansu-{name}-{port}.log"));
            let mut broker = Broker { name: name.to_string(), port, storage: storage.clone(), child: None, log };
            match broker.spawn().and_then(|()| broker.wait_ready(Duration::from_secs(20))) {
                Ok(()) => return Ok(broker),
                Err(e) => last_error = Some(e),
            }
            broker.kill();
        }
        Err(last_error.unwrap())
    }

    fn spawn(&mut self) -> Result<()> {
        let binary = tansu_binary()?;
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).with_context(|| format!("create {}", self.log.display()))?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage])
            // A `sqlite://name.db` storage is a file relative to the working directory.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the broker (SIGKILL), keeps it down for `down`, and starts it again on the same
    /// port and storage.
    pub fn restart(&mut self, down: Duration) -> Result<()> {
        self.kill();
        std::thread::sleep(down);
        self.spawn()?;
        self.wait_ready(Duration::from_secs(30))
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let admin: AdminClient<DefaultClientContext> = client_config(&self.bootstrap()).create()?;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!("broker {} exited with {status} during start-up:\n{log}", self.name);
            }
            if admin.inner().fetch_metadata(None, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("broker {} on {} not ready after {timeout:?} (log: {})", self.name, self.bootstrap(), self.log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
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
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let rt = block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for r in rt {
        if let Err((t, code)) = r {
            bail!("create topic {t} on {bootstrap}: {code:?}");
        }
    }
    Ok(())
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

    /// A [`sample_records`] record's identity: its partition and `seq` header.
    pub fn seq(&self) -> (i32, String) {
        let v = self.headers.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.clone()).expect("a sample record has a seq header");
        (self.partition, String::from_utf8(v).expect("seq is UTF-8"))
    }
}

/// A long-lived producer for tests and the demo.
pub struct RecordProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl RecordProducer {
    pub fn new(bootstrap: &str) -> Result<Self> {
        let producer = client_config(bootstrap).set("linger.ms", "5").set("enable.idempotence", "true").create()?;
        Ok(RecordProducer { producer })
    }

    /// Sends records (partition, key, value, headers, timestamp) and waits for all acknowledgements.
    pub fn send_all(&self, topic: &str, records: &[TestRecord]) -> Result<()> {
        for r in records {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(r.partition);
            if let Some(k) = &r.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                rec = rec.payload(v.as_slice());
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            if !r.headers.is_empty() {
                let mut h = OwnedHeaders::new();
                for (k, v) in &r.headers {
                    h = h.insert(Header { key: k, value: v.as_deref() });
                }
                rec = rec.headers(h);
            }
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

/// A child process (e.g. `ferry mirror`) with its output in a log file; killed on drop.
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(program: &std::path::Path, args: &[&str], log_name: &str) -> Result<Process> {
        let log = std::env::temp_dir().join(format!("{log_name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        Ok(Process { child: Some(child), log })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no chance to flush or store anything.
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
        let c = self.consumer.committed_offsets(tpl, Duration::from_secs(10))?;
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
    let p: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> = client_config(bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .unwrap();
    let payload = vec![b'x'; size];
    for i in 0..n {
        let key = format!("{i:012}");
        let mut rec = BaseRecord::to(topic).partition((i % partitions as usize) as i32).key(key.as_bytes()).payload(&payload[..]);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(300)).unwrap();
}

/// The sum of `ferry_mirror_records_total` on a `ferry mirror --metrics-addr` endpoint (0 if it
/// does not answer).
pub fn scrape_records(addr: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return 0.0 };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("ferry_mirror_records_total{"))
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
