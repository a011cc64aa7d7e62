//! What every `ferry` integration test needs: the binary, a config file, a running mirror.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_testkit::{consume_all, unique, wait_for, Broker, Mock, Process, RecordProducer, TestRecord};

pub(crate) fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

pub(crate) fn write_config(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.properties", unique(name)));
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn start_mirror(config: &Path, log: &str) -> Process {
    Process::spawn(ferry(), &["mirror", "--config", config.to_str().unwrap()], &unique(log)).unwrap()
}

/// Clusters `a` and `b` with a 1 s topic refresh, plus `extra` lines.
pub(crate) fn two_clusters(a: &Broker, b: &Broker, extra: &str) -> String {
    format!(
        "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\nrefresh.topics.interval.seconds = 1\n{extra}",
        a.bootstrap(),
        b.bootstrap()
    )
}

/// Two Kafka brokers, a new topic on `a` with `partitions`, and a config (1 s refresh) that
/// replicates only that topic from `a` to `b`: (a, b, topic, config).
pub(crate) fn one_topic_flow(name: &str, partitions: i32) -> (Broker, Broker, String, PathBuf) {
    one_topic_flow_with(name, partitions, "")
}

/// [`one_topic_flow`] with `extra` lines in the config.
pub(crate) fn one_topic_flow_with(name: &str, partitions: i32, extra: &str) -> (Broker, Broker, String, PathBuf) {
    let (a, b) = (Broker::start(&format!("{name}-a")).unwrap(), Broker::start(&format!("{name}-b")).unwrap());
    let topic = unique(name);
    ferry_testkit::create_topic(&a.bootstrap(), &topic, partitions).unwrap();
    let config = write_config(name, &two_clusters(&a, &b, &format!("a->b.enabled = true\na->b.topics = {topic}\n{extra}")));
    (a, b, topic, config)
}

/// Produces `records` in chunks, one chunk per `pause`, on its own thread.
pub(crate) fn produce_slowly(bootstrap: String, topic: String, records: Vec<TestRecord>, chunk: usize, pause: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let producer = RecordProducer::new(&bootstrap).unwrap();
        for c in records.chunks(chunk) {
            let t0 = std::time::Instant::now();
            producer.send_all(&topic, c).unwrap();
            std::thread::sleep(pause.saturating_sub(t0.elapsed()));
        }
    })
}

/// Waits up to `timeout` until `remote` (`partitions` partitions) on `bootstrap` holds every one of
/// the sample `records`, and at least `at_least` records in all; then asserts that it holds no
/// record the source did not have. Panics with the processes' logs when records are missing.
/// Returns everything the target holds.
pub(crate) fn all_arrived(bootstrap: &str, remote: &str, partitions: i32, records: &[TestRecord], at_least: usize, timeout: Duration, logs: &[&Process]) -> Vec<TestRecord> {
    let want: HashSet<(i32, String)> = records.iter().map(TestRecord::seq).collect();
    let mut last_read = String::new();
    let got = wait_for(timeout, || {
        let got = consume_all(bootstrap, remote, partitions, at_least, Duration::from_secs(3)).unwrap();
        let distinct: HashSet<(i32, String)> = got.iter().map(TestRecord::seq).collect();
        let done = distinct.is_superset(&want) && got.len() >= at_least;
        if !done {
            let missing: Vec<usize> = (0..partitions).map(|p| want.iter().filter(|k| k.0 == p && !distinct.contains(*k)).count()).collect();
            last_read = format!("the last read got {} records; missing per partition: {missing:?}", got.len());
        }
        done.then_some(got)
    })
    .unwrap_or_else(|| {
        let logs: Vec<String> = logs.iter().map(|p| p.output()).collect();
        panic!("records missing on {remote} after {timeout:?} ({last_read}):\n{}", logs.join("\n-----\n"))
    });
    let distinct: HashSet<(i32, String)> = got.iter().map(TestRecord::seq).collect();
    assert_eq!(distinct, want, "the target holds other records than the source");
    got
}

/// Runs `ferry ctl ARGS`: (exit code, stdout, stderr).
pub(crate) fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(ferry()).arg("ctl").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Two mock clusters `a` and `b` holding every topic flow `a->b` needs for `topic`, and a
/// config file for the flow (named after `name`).
pub(crate) fn mock_pair(name: &str, topic: &str, partitions: i32) -> (Mock, Mock, PathBuf) {
    let a = Mock::new(1).unwrap();
    let b = Mock::new(1).unwrap();
    ferry_testkit::mock_flow_topics(&a, &b, topic, partitions);
    let config = write_config(name, &mock_config(&a.bootstrap_servers(), &b.bootstrap_servers()));
    (a, b, config)
}

pub(crate) fn mock_config(a: &str, b: &str) -> String {
    format!(
        "clusters = a, b\na.bootstrap.servers = {a}\nb.bootstrap.servers = {b}\nrefresh.topics.interval.seconds = 1\n\
         a->b.enabled = true\nemit.checkpoints.enabled = false\nsync.topic.configs.enabled = false\n"
    )
}


/// The Python of `target/test-venv`: confluent-kafka with its Avro, JSON Schema and Protobuf
/// extras (`scripts/install-test-tools` creates it).
pub(crate) fn venv_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/python");
    assert!(python.exists(), "{} is missing: scripts/install-test-tools creates it (confluent-kafka with its Avro extras)", python.display());
    python
}

/// A `ferry registry` properties file over `broker`, on a free port: (address, file).
pub(crate) fn registry_config(broker: &Broker, name: &str) -> (String, PathBuf) {
    let addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let config = std::env::temp_dir().join(format!("{}.properties", unique(name)));
    std::fs::write(&config, format!("listeners=http://{addr}\nkafkastore.bootstrap.servers=PLAINTEXT://{}\nkafkastore.topic.replication.factor=1\n", broker.bootstrap())).unwrap();
    (addr, config)
}

/// `ferry registry --config CONFIG`, once it listens at `addr`.
pub(crate) fn spawn_registry(name: &str, addr: &str, config: &Path) -> Process {
    let process = Process::spawn(ferry(), &["registry", "--config", config.to_str().unwrap()], &unique(name)).unwrap();
    wait_for(Duration::from_secs(60), || std::net::TcpStream::connect(addr).ok().map(|_| ())).unwrap_or_else(|| panic!("the registry did not listen:\n{}", process.output()));
    process
}

/// Runs a console script of `tests/browser` (`args[0]`, then its arguments) in headless
/// Chromium: whether it succeeded, and the JSON of what it saw.
#[allow(dead_code)]
pub(crate) fn console_script(args: &[&str]) -> (bool, serde_json::Value) {
    let out = std::process::Command::new("node")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser"))
        .args(args)
        .output()
        .expect("node is needed (scripts/install-test-tools)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("browser script output: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), seen)
}
