//! Exactly-once cost benchmark (not a timed test): the same flow replicated at least once and
//! exactly once, measured in the same run on the same kind of brokers.
//!
//!   cargo bench -p ferry-cli --bench exactly_once
//!   FERRY_BENCH_RECORDS=200000 FERRY_BENCH_ROUNDS=1 cargo bench -p ferry-cli --bench exactly_once   (quicker)
//!
//! Apache Kafka brokers (`BrokerOptions::benchmark()`), fresh for each run, so the cost includes
//! Kafka's transaction coordinator (markers, transaction log). The topic is filled first;
//! then `ferry mirror` starts and is timed from its "replicating new partitions" log line until
//! its `ferry_mirror_records_total` reaches every record (in exactly-once mode records count
//! when their transaction commits, so this includes the wait for the last commit). Commit
//! interval (`offset.flush.interval.ms`) 1000 ms, the default, and 100 ms.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_testkit::{create_topic, fill, free_port, scrape_records, unique, Broker, BrokerOptions, Process};

const PARTITIONS: i32 = 24;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

/// Seconds to replicate `n` records and the steady rate (rec/s).
fn run(exactly_once: bool, flush_ms: u64, n: usize, size: usize) -> (f64, f64) {
    let a = Broker::start_with("bench-eos-a", BrokerOptions::benchmark()).unwrap();
    let b = Broker::start_with("bench-eos-b", BrokerOptions::benchmark()).unwrap();
    create_topic(&a.bootstrap(), "orders", PARTITIONS).unwrap();
    fill(&a.bootstrap(), "orders", PARTITIONS, n, size);
    let config = std::env::temp_dir().join(format!("{}.properties", unique("bench-eos")));
    std::fs::write(
        &config,
        format!(
            "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\na->b.enabled = true\na->b.topics = orders\nrefresh.topics.interval.seconds = 1\n\
             offset.flush.interval.ms = {flush_ms}\nexactly.once.support = {}\n",
            a.bootstrap(),
            b.bootstrap(),
            if exactly_once { "enabled" } else { "disabled" }
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let mut mirror = Process::spawn(ferry(), &["mirror", "--config", config.to_str().unwrap(), "--metrics-addr", &addr], &unique("bench-eos")).unwrap();
    // FERRY_BENCH_PERF=DIR: `perf record` the mirror process (call graphs) into DIR, one file
    // per run, for profiling; the numbers of such a run are not comparable.
    let perf = std::env::var("FERRY_BENCH_PERF").ok().map(|dir| {
        let out = format!("{dir}/ferry-{}-{flush_ms}.perf", if exactly_once { "eos" } else { "alo" });
        std::process::Command::new("perf")
            .args(["record", "-F", "999", "-g", "-o", &out, "-p", &mirror.pid().to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf")
    });
    // Timed from the moment the mirror starts replicating (its log says so) until every record
    // counts as replicated, which in exactly-once mode is when the transaction holding the last
    // one has committed: the rate includes waiting for the commit, as a read_committed reader
    // would. (Counters move at commits there, so a rate between 10 % and 100 % means nothing.)
    let mut replicating = None;
    loop {
        if replicating.is_none() && mirror.output().contains("replicating new partitions") {
            replicating = Some(started.elapsed());
        }
        if scrape_records(&addr) >= n as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        assert!(started.elapsed() < Duration::from_secs(600), "not finished:\n{}", mirror.output());
    }
    let total = started.elapsed();
    let steady = n as f64 / (total - replicating.expect("the mirror never said it replicates")).as_secs_f64();
    if let Some(mut perf) = perf {
        let _ = std::process::Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait();
    }
    let _ = mirror.terminate(Duration::from_secs(20));
    (total.as_secs_f64(), steady)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("FERRY_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(800_000);
    let rounds: usize = std::env::var("FERRY_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let size = 100;
    println!("# Ferry exactly-once benchmark: {n} records of {size} B, {PARTITIONS} partitions, Apache Kafka 4.1.1 (one KRaft node per cluster), 2 cores, median of {rounds} rounds (modes interleaved)");
    let modes = [(false, 1000), (true, 1000), (true, 100)];
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (i, &(exactly_once, flush_ms)) in modes.iter().enumerate() {
            results[i].push(run(exactly_once, flush_ms, n, size));
        }
    }
    println!("| mode | commit interval | total s | rec/s replicated (committed) | ratio to at-least-once |");
    println!("|---|---|---|---|---|");
    let base = median(results[0].iter().map(|r| r.1).collect());
    for (i, &(exactly_once, flush_ms)) in modes.iter().enumerate() {
        let total = median(results[i].iter().map(|r| r.0).collect());
        let steady = median(results[i].iter().map(|r| r.1).collect());
        let mode = if exactly_once { "exactly once" } else { "at least once" };
        println!("| {mode} | {flush_ms} ms | {total:.2} | {steady:.0} | {:.2}x |", steady / base);
    }
}
