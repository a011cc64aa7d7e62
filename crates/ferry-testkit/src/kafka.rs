//! Apache Kafka brokers and Kafka's Java tools, run from the jars `scripts/install-kafka` copies
//! from Maven Central into `.kafka/lib` (or `$FERRY_KAFKA_HOME/lib`).
//!
//! A [`Broker`] is a single-node KRaft cluster (broker and controller in one JVM) on two free
//! loopback ports, with its log dir under the temp dir: it survives `kill -9` and
//! [`Broker::restart`] comes back with every acknowledged record. Storage is formatted once per
//! test process by Kafka's own `StorageTool` into a template that each broker copies with a fresh
//! cluster id, which saves a JVM start (about 3 s) per broker.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use crate::{client_config, free_port, unique};

/// Where the installed Kafka is: `$FERRY_KAFKA_HOME`, else `.kafka` at the workspace root.
pub fn kafka_home() -> Result<PathBuf> {
    let home = std::env::var_os("FERRY_KAFKA_HOME").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.kafka"), PathBuf::from);
    if !home.join("lib").is_dir() {
        bail!("Apache Kafka is not installed in {}: run `scripts/install-kafka` (needs Java 17+ and Maven)", home.display());
    }
    Ok(home)
}

/// The `java` binary: `$JAVA_HOME/bin/java`, else `java` on PATH.
pub(crate) fn java() -> PathBuf {
    jdk_tool("java")
}

/// A JDK tool (`java`, `javac`, `jar`): `$JAVA_HOME/bin/TOOL`, else TOOL on PATH.
pub(crate) fn jdk_tool(tool: &str) -> PathBuf {
    std::env::var_os("JAVA_HOME").map_or_else(|| PathBuf::from(tool), |h| PathBuf::from(h).join("bin").join(tool))
}

/// A JVM command with Kafka's classpath and logging configuration (warnings and readiness lines
/// to stdout), running `main_class`.
pub fn kafka_java(heap: &str, main_class: &str) -> Result<Command> {
    kafka_java_with(heap, &[], main_class)
}

/// Runs one of Kafka's Java tools (`main_class` with `args`) to completion: its stdout, or an
/// error with its output when it exits non-zero.
pub fn kafka_tool(main_class: &str, args: &[&str]) -> Result<String> {
    run_to_completion(kafka_java("256m", main_class)?, main_class, args)
}

/// Runs a JVM command with `args`: its stdout, or an error with its output when it fails.
fn run_to_completion(mut cmd: Command, main_class: &str, args: &[&str]) -> Result<String> {
    let out = cmd.args(args).output().with_context(|| format!("start {main_class}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{main_class} {} exited with {}:\n{stdout}\n{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(stdout)
}

/// The lines a MirrorMaker 2 file needs on single-node test clusters: replication factor 1 for
/// the remote topics and every internal topic MM2 and its Connect worker create.
pub fn mm2_single_node_settings() -> String {
    ["replication.factor", "checkpoints.topic.replication.factor", "heartbeats.topic.replication.factor",
        "offset-syncs.topic.replication.factor", "offset.storage.replication.factor", "status.storage.replication.factor",
        "config.storage.replication.factor"]
        .iter()
        .map(|key| format!("{key} = 1\n"))
        .collect()
}

/// How a broker runs.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// JVM heap (`-Xmx`).
    pub heap: String,
    /// C1 only (`-XX:TieredStopAtLevel=1`): starts in about half the CPU time, runs slower; for
    /// tests, not for benchmarks.
    pub quick_jit: bool,
    /// Its own process group, so a Ctrl-C in the terminal (SIGINT to the foreground group) does
    /// not reach it: the demo drains the mirror before it stops its brokers.
    pub own_process_group: bool,
    /// Extra `server.properties` lines.
    pub extra: Vec<(String, String)>,
    /// Users of a second listener, SASL_PLAINTEXT with PLAIN ([`Broker::sasl_bootstrap`]);
    /// none: no such listener. The PLAINTEXT listener stays for the test's own clients.
    pub sasl_users: Vec<(String, String)>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions { heap: "384m".into(), quick_jit: true, own_process_group: false, extra: Vec::new(), sasl_users: Vec::new() }
    }
}

impl BrokerOptions {
    /// Full JIT and a 1 GiB heap, as Kafka's own start scripts run a broker (benchmarks).
    pub fn benchmark() -> Self {
        BrokerOptions { heap: "1g".into(), quick_jit: false, ..Self::default() }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// Adds a user of the SASL_PLAINTEXT (PLAIN) listener.
    pub fn with_sasl_user(mut self, user: &str, password: &str) -> Self {
        self.sasl_users.push((user.into(), password.into()));
        self
    }
}

/// A single-node Apache Kafka cluster (KRaft, combined broker and controller) on loopback; killed
/// on drop, its log dir removed.
pub struct Broker {
    pub name: String,
    pub port: u16,
    controller_port: u16,
    sasl_port: u16,
    dir: PathBuf,
    options: BrokerOptions,
    child: Option<Child>,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker with the test settings and waits until it answers metadata requests.
    pub fn start(name: &str) -> Result<Broker> {
        Self::start_with(name, BrokerOptions::default())
    }

    pub fn start_with(name: &str, options: BrokerOptions) -> Result<Broker> {
        let template = formatted_template()?;
        let mut last_error = None;
        // A free port can be taken by someone else between our probe and the broker's bind.
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(unique(&format!("ferry-kafka-{name}")));
            copy_template(template, &dir)?;
            let (port, controller_port) = (free_port(), free_port());
            let log = dir.with_extension("log");
            let sasl_port = if options.sasl_users.is_empty() { 0 } else { free_port() };
            let mut broker = Broker { name: name.to_string(), port, controller_port, sasl_port, dir, options: options.clone(), child: None, log };
            broker.write_properties()?;
            match broker.spawn().and_then(|()| broker.wait_ready(Duration::from_secs(60))) {
                Ok(()) => return Ok(broker),
                Err(e) => last_error = Some(e),
            }
            broker.kill();
            let _ = std::fs::remove_dir_all(&broker.dir);
        }
        Err(last_error.unwrap())
    }

    fn properties(&self) -> String {
        let mut p = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{cport}\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.listener.names=CONTROLLER\n\
             log.dirs={data}\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=2\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=2\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             # Test records carry fixed timestamps from 2023; time retention (7 days by default,\n\
             # judged by record timestamps) would delete them 30 s after start. Tests that need\n\
             # retention set it per topic.\n\
             log.retention.ms=-1\n\
             # Topics exist only when someone creates them: a missing create is a test failure.\n\
             auto.create.topics.enable=false\n\
             # A killed producer's open transaction is aborted soon after its timeout.\n\
             transaction.abort.timed.out.transaction.cleanup.interval.ms=1000\n\
             # A restarted broker waits for its previous registration's session to expire (9 s by\n\
             # default) before it serves: kill -9 and restart tests come back in about 2 s.\n\
             broker.session.timeout.ms=2000\n\
             broker.heartbeat.interval.ms=500\n\
             # Few threads and buffers: many brokers share two cores in a test run.\n\
             num.network.threads=2\n\
             num.io.threads=2\n\
             background.threads=2\n\
             num.recovery.threads.per.data.dir=1\n\
             log.cleaner.threads=1\n\
             log.cleaner.dedupe.buffer.size=8388608\n",
            cport = self.controller_port,
            data = self.dir.display(),
        );
        let (port, cport) = (self.port, self.controller_port);
        if self.options.sasl_users.is_empty() {
            p.push_str(&format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"));
        } else {
            let sport = self.sasl_port;
            let users: String = self.options.sasl_users.iter().map(|(u, pw)| format!(" user_{u}=\"{pw}\"")).collect();
            p.push_str(&format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sport},CONTROLLER://127.0.0.1:{cport}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sport}\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT\n\
                 sasl.enabled.mechanisms=PLAIN\n\
                 listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required{users};\n"));
        }
        for (k, v) in &self.options.extra {
            p.push_str(&format!("{k}={v}\n"));
        }
        p
    }

    fn write_properties(&self) -> Result<()> {
        let path = self.dir.join("server.properties");
        std::fs::write(&path, self.properties()).with_context(|| format!("write {}", path.display()))
    }

    fn spawn(&mut self) -> Result<()> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).with_context(|| format!("create {}", self.log.display()))?;
        let flags: &[&str] = if self.options.quick_jit { &["-XX:TieredStopAtLevel=1"] } else { &[] };
        let mut cmd = kafka_java_with(&self.options.heap, flags, "kafka.Kafka")?;
        cmd.arg(self.dir.join("server.properties")).stdout(out.try_clone()?).stderr(out);
        if self.options.own_process_group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        self.child = Some(cmd.spawn().context("start the Kafka broker (java)")?);
        Ok(())
    }

    /// Kills the broker (SIGKILL), keeps it down for `down`, and starts it again on the same
    /// ports and log dir.
    pub fn restart(&mut self, down: Duration) -> Result<()> {
        self.kill();
        std::thread::sleep(down);
        self.spawn()?;
        self.wait_ready(Duration::from_secs(60))
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The SASL_PLAINTEXT (PLAIN) listener; only with [`BrokerOptions::with_sasl_user`].
    pub fn sasl_bootstrap(&self) -> String {
        assert!(self.sasl_port != 0, "broker {} has no SASL listener (BrokerOptions::with_sasl_user)", self.name);
        format!("127.0.0.1:{}", self.sasl_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The broker's log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let admin: AdminClient<DefaultClientContext> = client_config(&self.bootstrap()).create()?;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("Kafka broker {} exited with {status} during start-up:\n{}", self.name, self.output());
            }
            if admin.inner().fetch_metadata(None, Duration::from_secs(1)).is_ok_and(|m| !m.brokers().is_empty()) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("Kafka broker {} on {} not ready after {timeout:?} (log: {})", self.name, self.bootstrap(), self.log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no chance to flush or shut down cleanly.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the clean shutdown (the demo's end).
    pub fn stop(&mut self, timeout: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let start = Instant::now();
            while start.elapsed() < timeout {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`kafka_java`] with extra JVM flags (they must precede the main class).
pub fn kafka_java_with(heap: &str, jvm_flags: &[&str], main_class: &str) -> Result<Command> {
    kafka_java_cp(heap, jvm_flags, &[], main_class)
}

/// [`kafka_java_with`] with more classpath entries before Kafka's jars.
fn kafka_java_cp(heap: &str, jvm_flags: &[&str], classpath: &[&Path], main_class: &str) -> Result<Command> {
    let home = kafka_home()?;
    let mut cp: Vec<String> = classpath.iter().map(|p| p.display().to_string()).collect();
    cp.push(format!("{}/*", home.join("lib").display()));
    let mut cmd = Command::new(java());
    cmd.arg(format!("-Xmx{heap}"))
        .args(["-XX:+UseSerialGC", "-XX:-UsePerfData", "-Djava.awt.headless=true"])
        .args(jvm_flags)
        .arg(format!("-Dlog4j2.configurationFile={}", home.join("log4j2.properties").display()))
        .arg(format!("-Dkafka.logs.dir={}", std::env::temp_dir().display()))
        .arg("-cp")
        .arg(cp.join(":"))
        .arg(main_class)
        .stdin(Stdio::null());
    Ok(cmd)
}

/// Compiles a single-file Java program against Kafka's jars (`javac` from `$JAVA_HOME` or PATH)
/// into a fresh directory; returns that directory, the classpath entry for [`java_program`].
pub fn compile_java(source: &Path) -> Result<PathBuf> {
    let out = std::env::temp_dir().join(unique("ferry-java"));
    std::fs::create_dir_all(&out)?;
    let javac = jdk_tool("javac");
    let status = Command::new(&javac)
        .arg("-cp")
        .arg(format!("{}/*", kafka_home()?.join("lib").display()))
        .arg("-d")
        .arg(&out)
        .arg(source)
        .status()
        .with_context(|| format!("start {}", javac.display()))?;
    if !status.success() {
        bail!("javac {} failed with {status}", source.display());
    }
    Ok(out)
}

/// Runs `main_class` from `classes` (see [`compile_java`]) with Kafka's jars: its stdout, or an
/// error with its output.
pub fn java_program(classes: &Path, main_class: &str, args: &[&str]) -> Result<String> {
    run_to_completion(kafka_java_cp("256m", &[], &[classes], main_class)?, main_class, args)
}

/// A log dir formatted by Kafka's `StorageTool` (node 1, static voter), once per process.
fn formatted_template() -> Result<&'static Path> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| format_template().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| anyhow::anyhow!("format Kafka storage: {e}"))
}

fn format_template() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(unique("ferry-kafka-format"));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir)?;
    let props = dir.join("server.properties");
    std::fs::write(
        &props,
        format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:9093\n\
             controller.listener.names=CONTROLLER\nlisteners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\nlog.dirs={}\n",
            data.display()
        ),
    )?;
    kafka_tool("kafka.tools.StorageTool", &["format", &format!("--cluster-id={}", random_id()), "-c", props.to_str().context("temp dir is not UTF-8")?])?;
    Ok(data)
}

/// Copies the formatted template into `dir` with a fresh cluster id and directory id.
fn copy_template(template: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(template)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
        } else {
            bail!("unexpected directory {} in the formatted Kafka storage", entry.path().display());
        }
    }
    let meta = dir.join("meta.properties");
    let text = std::fs::read_to_string(&meta)?;
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("cluster.id=") {
                format!("cluster.id={}\n", random_id())
            } else if l.starts_with("directory.id=") {
                format!("directory.id={}\n", random_id())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&meta, text)?;
    Ok(())
}

/// A Kafka UUID as its tools print it: 16 random bytes, base64url without padding, never
/// starting with `-` (Kafka's `Uuid.randomUuid` makes the same promise: a leading `-` reads as
/// an option on a command line).
fn random_id() -> String {
    loop {
        let id = random_base64_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn random_base64_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    let mut out = String::with_capacity(22);
    let mut bits = 0u32;
    let mut acc = 0u32;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_ids_are_22_base64url_characters_and_differ() {
        let (a, b) = (super::random_id(), super::random_id());
        assert_eq!(a.len(), 22);
        assert!((0..200).all(|_| !super::random_id().starts_with('-')));
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }
}
