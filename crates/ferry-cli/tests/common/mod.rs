//! What every `ferry` integration test needs: the binary, a config file, a running mirror.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};

use ferry_testkit::{unique, Broker, Process};

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

/// Runs `ferry ctl ARGS`: (exit code, stdout, stderr).
pub(crate) fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(ferry()).arg("ctl").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}
