//! Apache Flink from Maven Central (`scripts/install-flink` copies it into `.flink/lib`), to run
//! the same SQL job files on Flink: `scripts/flink/FlinkSql.java` plans them (EXPLAIN) or runs
//! them in a local MiniCluster in one JVM.

use std::path::{Path, PathBuf};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where Flink's jars are: `$FERRY_FLINK_HOME`, else the repository's `.flink`.
pub fn flink_home() -> Result<PathBuf> {
    let home = std::env::var_os("FERRY_FLINK_HOME").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.flink"), PathBuf::from);
    if !home.join("lib").is_dir() {
        bail!("Apache Flink is not installed in {}: run `scripts/install-flink` (needs Java 17+ and Maven)", home.display());
    }
    Ok(home)
}

/// `FlinkSql.java` compiled against Flink's jars, once per process.
fn runner() -> Result<&'static Path> {
    static CLASSES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            let compile = || -> Result<PathBuf> {
                let out = std::env::temp_dir().join(crate::unique("ferry-flink"));
                std::fs::create_dir_all(&out)?;
                let javac = crate::kafka::jdk_tool("javac");
                let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/flink/FlinkSql.java");
                let status = Command::new(&javac).arg("-cp").arg(format!("{}/*", flink_home()?.join("lib").display())).arg("-d").arg(&out).arg(&source).status().with_context(|| format!("start {}", javac.display()))?;
                if !status.success() {
                    bail!("javac {} failed", source.display());
                }
                Ok(out)
            };
            compile().map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| anyhow::anyhow!("compile FlinkSql.java: {e}"))
}

/// `FlinkSql run FILE PARALLELISM`: its stdout and how long the JVM ran.
fn flink_sql_run(job: &Path, parallelism: usize) -> Result<(String, Duration)> {
    let home = flink_home()?;
    let classpath = format!("{}/*:{}", home.join("lib").display(), runner()?.display());
    let started = Instant::now();
    let out = Command::new(crate::kafka::java())
        .args(["-Xmx1g", "-XX:+UseSerialGC", "-cp", &classpath])
        .arg(format!("-Dlog4j.configurationFile={}", home.join("log4j2.properties").display()))
        .args(["FlinkSql", "run"])
        .arg(job)
        .arg(parallelism.to_string())
        .output()
        .context("start java")?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The exception's message, not the stack.
        let cause: Vec<&str> = stderr.lines().filter(|l| !l.trim_start().starts_with("at ") && !l.trim_start().starts_with("...")).take(12).collect();
        bail!("Flink refused {}: {}", job.display(), cause.join("\n"));
    }
    Ok((stdout, took))
}

/// The words Flink's SQL parser reserves (`scripts/flink/FlinkReserved.java`, run against the
/// parser inside flink-table-planner-loader's nested jar), sorted.
pub fn flink_reserved_words() -> Result<Vec<String>> {
    let home = flink_home()?;
    let lib = home.join("lib");
    let loader = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("flink-table-planner-loader-")))
        .with_context(|| format!("no flink-table-planner-loader jar in {}", lib.display()))?;
    let dir = std::env::temp_dir().join(crate::unique("flink-reserved"));
    std::fs::create_dir_all(&dir)?;
    let run = |cmd: &mut Command| -> Result<String> {
        let out = cmd.output().with_context(|| format!("start {:?}", cmd.get_program()))?;
        if !out.status.success() {
            bail!("{:?} failed: {}", cmd.get_program(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(Command::new(crate::kafka::jdk_tool("jar")).current_dir(&dir).arg("xf").arg(&loader).arg("flink-table-planner.jar"))?;
    let classpath = format!("{}:{}/*:{}", dir.join("flink-table-planner.jar").display(), lib.display(), dir.display());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/flink/FlinkReserved.java");
    run(Command::new(crate::kafka::jdk_tool("javac")).arg("-cp").arg(&classpath).arg("-d").arg(&dir).arg(&source))?;
    let words = run(Command::new(crate::kafka::java()).args(["-XX:TieredStopAtLevel=1", "-cp", &classpath, "FlinkReserved"]))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(words.lines().map(str::to_string).collect())
}

/// Plans every INSERT of `job` with Flink's planner (its parser, catalog, type checks and
/// optimizer): an error says what Flink refused. One JVM plans every file of a test binary
/// (`FlinkSql explain-each`, a new table environment per file), started at the first call.
pub fn flink_explain(job: &Path) -> Result<()> {
    static PLANNER: Mutex<Option<Planner>> = Mutex::new(None);
    let mut planner = PLANNER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if planner.is_none() {
        *planner = Some(Planner::start()?);
    }
    let answer = planner.as_mut().expect("started above").explain(job);
    if answer.is_err() {
        // A planner that failed to answer is not reused; the next call starts another.
        if let Some(Planner { mut child, .. }) = planner.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    match answer?.strip_prefix("refused ") {
        Some(cause) => bail!("Flink refused {}: {cause}", job.display()),
        None => Ok(()),
    }
}

/// `FlinkSql explain-each`: a path written on its stdin, one line answered on its stdout. It
/// ends when the test binary does (its stdin closes).
struct Planner {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Planner {
    fn start() -> Result<Self> {
        let home = flink_home()?;
        let classpath = format!("{}/*:{}", home.join("lib").display(), runner()?.display());
        let mut child = Command::new(crate::kafka::java())
            .args(["-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", &classpath])
            .arg(format!("-Dlog4j.configurationFile={}", home.join("log4j2.properties").display()))
            .args(["FlinkSql", "explain-each"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start java")?;
        let stdin = child.stdin.take().context("the planner's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the planner's stdout")?);
        Ok(Self { child, stdin, stdout })
    }

    /// The planner's answer for `job`: "explained N" or "refused CAUSE".
    fn explain(&mut self, job: &Path) -> Result<String> {
        let path = job.to_str().with_context(|| format!("{} is not UTF-8", job.display()))?;
        writeln!(self.stdin, "{path}").and_then(|()| self.stdin.flush()).context("write to the Flink planner")?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line).context("read the Flink planner's answer")? == 0 {
            bail!("the Flink planner ended without answering for {} (its log is on the test's stderr)", job.display());
        }
        let line = line.trim_end();
        if !line.starts_with("explained ") && !line.starts_with("refused ") {
            bail!("the Flink planner answered {line:?} for {}", job.display());
        }
        Ok(line.to_owned())
    }
}

/// Runs `job` on Flink (a local MiniCluster) until its bounded sources end: the time from the
/// JVM's start, and the time from the job's submission (as the runner measured it).
pub fn flink_run(job: &Path, parallelism: usize) -> Result<(Duration, Duration)> {
    let (stdout, took) = flink_sql_run(job, parallelism)?;
    let ms = stdout.lines().find_map(|l| l.strip_prefix("flink finished in ")?.strip_suffix(" ms")?.parse::<u64>().ok()).context("the runner did not say how long the job took")?;
    Ok((took, Duration::from_millis(ms)))
}

/// An Apache Flink session cluster on loopback (a JobManager, a TaskManager and a SQL Gateway,
/// started by `scripts/flink-cluster` from the jars in `.flink/lib`), stopped on drop.
pub struct FlinkCluster {
    process: Option<crate::Process>,
    pub dir: PathBuf,
    pub rest_port: u16,
    pub gateway_port: u16,
}

impl FlinkCluster {
    /// Starts a cluster with `slots` task slots and waits until its gateway answers and its
    /// TaskManager has registered.
    pub fn start(name: &str, slots: usize) -> Result<FlinkCluster> {
        flink_home()?;
        let dir = std::env::temp_dir().join(crate::unique(name));
        let (rest_port, gateway_port) = (crate::free_port(), crate::free_port());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/flink-cluster");
        let mut cmd = Command::new(&script);
        cmd.arg("run").arg(&dir).arg(rest_port.to_string()).arg(gateway_port.to_string()).arg(slots.to_string());
        let mut process = crate::Process::spawn_command(cmd, &dir.with_extension("log"))?;
        let started = Instant::now();
        loop {
            let out = process.output();
            if out.contains("flink-cluster: ready") {
                break;
            }
            if !process.is_running() || started.elapsed() > Duration::from_secs(180) {
                let logs: String = ["jobmanager", "taskmanager", "sql-gateway"].iter().map(|n| format!("--- {n}.log\n{}", std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default().lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"))).collect::<Vec<_>>().join("\n");
                let _ = process.terminate(Duration::from_secs(30));
                bail!("the Flink cluster did not start within {:?}:\n{out}\n{logs}", started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(FlinkCluster { process: Some(process), dir, rest_port, gateway_port })
    }

    /// The SQL Gateway's REST address.
    pub fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// The JobManager's REST address (Flink's web API).
    pub fn rest(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }
}

impl Drop for FlinkCluster {
    fn drop(&mut self) {
        // SIGTERM: the script stops its three JVMs (SIGKILL would leave them running).
        if let Some(mut p) = self.process.take() {
            let _ = p.terminate(Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{}.sql", crate::unique("flink-explain")));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// One planner answers file after file, a refusal names Flink's cause, and a refusal does
    /// not spoil the next file's answer.
    #[test]
    fn the_planner_accepts_and_refuses_file_after_file() {
        let table = "CREATE TABLE t (id BIGINT, name STRING) WITH ('connector' = 'datagen');\nCREATE TABLE s (id BIGINT, n BIGINT) WITH ('connector' = 'blackhole');\n";
        flink_explain(&file(&format!("{table}INSERT INTO s SELECT id, CHAR_LENGTH(name) FROM t;\n"))).unwrap();
        let refused = flink_explain(&file(&format!("{table}INSERT INTO s SELECT id, no_such_column FROM t;\n"))).unwrap_err().to_string();
        assert!(refused.contains("no_such_column"), "{refused}");
        // An updating aggregate into an append-only sink is a planning error, not a parse error.
        let kafka = "CREATE TABLE k (id BIGINT, n BIGINT) WITH ('connector' = 'kafka', 'topic' = 'k', 'properties.bootstrap.servers' = '127.0.0.1:1', 'format' = 'json');\n";
        let refused = flink_explain(&file(&format!("{table}{kafka}INSERT INTO k SELECT id, COUNT(*) FROM t GROUP BY id;\n"))).unwrap_err().to_string();
        assert!(refused.contains("update"), "{refused}");
        flink_explain(&file(&format!("{table}INSERT INTO s SELECT id, id * 2 FROM t WHERE name <> 'x';\n"))).unwrap();
    }
}
