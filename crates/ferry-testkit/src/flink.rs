//! Apache Flink from Maven Central (`scripts/install-flink` copies it into `.flink/lib`), to run
//! the same SQL job files on Flink: `scripts/flink/FlinkSql.java` plans them (EXPLAIN) or runs
//! them in a local MiniCluster in one JVM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
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
                let javac = std::env::var_os("JAVA_HOME").map_or_else(|| PathBuf::from("javac"), |h| PathBuf::from(h).join("bin/javac"));
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

fn flink_sql(mode: &str, job: &Path, parallelism: usize) -> Result<(String, Duration)> {
    let home = flink_home()?;
    let classpath = format!("{}/*:{}", home.join("lib").display(), runner()?.display());
    let started = Instant::now();
    let out = Command::new(crate::kafka::java())
        .args(["-Xmx1g", "-XX:+UseSerialGC", "-cp", &classpath])
        .arg(format!("-Dlog4j.configurationFile={}", home.join("log4j2.properties").display()))
        .args(["FlinkSql", mode])
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

/// Plans every INSERT of `job` with Flink's planner (its parser, catalog, type checks and
/// optimizer): an error says what Flink refused.
pub fn flink_explain(job: &Path) -> Result<()> {
    flink_sql("explain", job, 1).map(|_| ())
}

/// Runs `job` on Flink (a local MiniCluster) until its bounded sources end: the time from the
/// JVM's start, and the time from the job's submission (as the runner measured it).
pub fn flink_run(job: &Path, parallelism: usize) -> Result<(Duration, Duration)> {
    let (stdout, took) = flink_sql("run", job, parallelism)?;
    let ms = stdout.lines().find_map(|l| l.strip_prefix("flink finished in ")?.strip_suffix(" ms")?.parse::<u64>().ok()).context("the runner did not say how long the job took")?;
    Ok((took, Duration::from_millis(ms)))
}
