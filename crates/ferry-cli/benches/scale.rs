//! Scale-out benchmark (not a timed test): one flow replicated by 1 and by 2 `ferry mirror`
//! processes, measured in the same run against the same kind of brokers; then takeover times
//! after `kill -9`.
//!
//!   cargo bench -p ferry-cli --bench scale
//!   FERRY_BENCH_RECORDS=500000 FERRY_BENCH_KILLS=3 cargo bench -p ferry-cli --bench scale   (quicker)
//!
//! Apache Kafka brokers (`BrokerOptions::benchmark()`), one KRaft node per cluster.
//!
//! Throughput (24 partitions): the processes start on a small warm-up
//! topic, so the group is settled; the bench topic is filled while it is not selected, then
//! `ferry ctl topics --add` selects it. Timed from that command until every record is replicated
//! (sum of the processes' `ferry_mirror_records_total`), which includes the rebalance that
//! assigns the new topic's partitions; the steady rate is taken between 10 % and 100 %.
//!
//! Takeover: two processes share 24 partitions; one is killed; timed until the survivor was
//! assigned all of them. Session timeout 10 s (Ferry's default for the member).

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_testkit::{create_topic, fill, free_port, scrape_records, unique, wait_for, Broker, BrokerOptions, Process};

const PARTITIONS: i32 = 24;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

fn write(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.properties", unique("bench-scale")));
    std::fs::write(&path, text).unwrap();
    path
}

/// The sum of `partitions=N` over the log lines of `p` that contain `event`.
fn logged(p: &Process, event: &str) -> usize {
    p.output()
        .lines()
        .filter(|l| l.contains(event))
        .filter_map(|l| l.split("partitions=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

fn assigned(p: &Process) -> usize {
    logged(p, "group assigned partitions to this process")
}

fn handed(p: &Process) -> usize {
    logged(p, "partitions handed over to another process")
}

/// Seconds to replicate `n` records with `processes` processes, and the steady rate (rec/s).
fn throughput(processes: usize, n: usize, size: usize) -> (f64, f64) {
    let a = Broker::start_with("bench-scale-a", BrokerOptions::benchmark()).unwrap();
    let b = Broker::start_with("bench-scale-b", BrokerOptions::benchmark()).unwrap();
    let warm = unique("warm");
    let topic = unique("bench");
    create_topic(&a.bootstrap(), &warm, PARTITIONS).unwrap();
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    let config = write(&format!(
        "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\na->b.enabled = true\na->b.topics = {warm}\n\
         refresh.topics.interval.seconds = 1\noffset.flush.interval.ms = 100\n",
        a.bootstrap(),
        b.bootstrap()
    ));
    let mut mirrors = Vec::new();
    let mut metrics = Vec::new();
    for _ in 0..processes {
        let addr = format!("127.0.0.1:{}", free_port());
        mirrors.push(Process::spawn(ferry(), &["mirror", "--config", config.to_str().unwrap(), "--metrics-addr", &addr], &unique("bench-scale-mirror")).unwrap());
        metrics.push(addr);
        // Settled: the warm-up topic's partitions are spread over every process started so far.
        let expect = PARTITIONS as usize;
        wait_for(Duration::from_secs(60), || {
            let held: usize = mirrors.iter().map(|m| assigned(m) - handed(m)).sum();
            (held == expect && mirrors.iter().all(|m| assigned(m) > 0)).then_some(())
        })
        .unwrap_or_else(|| panic!("group did not settle:\n{}", mirrors.iter().map(|m| m.output()).collect::<Vec<_>>().join("\n----\n")));
    }
    fill(&a.bootstrap(), &topic, PARTITIONS, n, size);
    let base: f64 = metrics.iter().map(|m| scrape_records(m)).sum();

    let started = Instant::now();
    let out = std::process::Command::new(ferry())
        .args(["ctl", "topics", "--config", config.to_str().unwrap(), "--source", "a", "--target", "b", "--add", &topic])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut tenth = None;
    loop {
        let done: f64 = metrics.iter().map(|m| scrape_records(m)).sum::<f64>() - base;
        if tenth.is_none() && done >= n as f64 / 10.0 {
            tenth = Some(started.elapsed());
        }
        if done >= n as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(started.elapsed() < Duration::from_secs(600), "not finished");
    }
    let total = started.elapsed();
    let steady = 0.9 * n as f64 / (total - tenth.unwrap()).as_secs_f64();
    for mut m in mirrors {
        let _ = m.terminate(Duration::from_secs(20));
    }
    (total.as_secs_f64(), steady)
}

/// Seconds from `kill -9` of one of two processes until the survivor holds every partition.
fn takeover() -> f64 {
    let a = Broker::start_with("bench-takeover-a", BrokerOptions::benchmark()).unwrap();
    let b = Broker::start_with("bench-takeover-b", BrokerOptions::benchmark()).unwrap();
    create_topic(&a.bootstrap(), "orders", PARTITIONS).unwrap();
    let config = write(&format!(
        "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\na->b.enabled = true\na->b.topics = orders\nrefresh.topics.interval.seconds = 1\n",
        a.bootstrap(),
        b.bootstrap()
    ));
    let start = |name: &str| Process::spawn(ferry(), &["mirror", "--config", config.to_str().unwrap()], &unique(name)).unwrap();
    let mut first = start("bench-takeover-1");
    wait_for(Duration::from_secs(60), || (assigned(&first) == PARTITIONS as usize).then_some(())).expect("first process never assigned");
    let second = start("bench-takeover-2");
    wait_for(Duration::from_secs(60), || (assigned(&second) > 0 && handed(&first) > 0).then_some(())).expect("second process never assigned");
    std::thread::sleep(Duration::from_secs(2));
    let before = assigned(&second);
    first.kill_9();
    let killed = Instant::now();
    wait_for(Duration::from_secs(60), || (assigned(&second) - handed(&second) == PARTITIONS as usize && assigned(&second) > before).then_some(()))
        .unwrap_or_else(|| panic!("no takeover:\n{}", second.output()));
    killed.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let n: usize = std::env::var("FERRY_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let kills: usize = std::env::var("FERRY_BENCH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let size = 100;
    println!("# Ferry scale-out benchmark: {n} records of {size} B, {PARTITIONS} partitions, Apache Kafka 4.1.1 (one KRaft node per cluster) on loopback, 2 cores");
    println!("| processes | seconds (from ctl --add) | records/s overall | steady records/s (10 %..100 %) | vs 1 process (steady) |");
    println!("|---|---|---|---|---|");
    let (one_s, one_steady) = throughput(1, n, size);
    println!("| 1 | {one_s:.2} | {:.0} | {one_steady:.0} | 1.00 |", n as f64 / one_s);
    let (two_s, two_steady) = throughput(2, n, size);
    println!("| 2 | {two_s:.2} | {:.0} | {two_steady:.0} | {:.2} |", n as f64 / two_s, two_steady / one_steady);

    let mut times: Vec<f64> = (0..kills).map(|_| takeover()).collect();
    println!("\nTakeover after kill -9 (Kafka's group coordinator, session timeout 10 s), {kills} runs: {}", times.iter().map(|t| format!("{t:.1} s")).collect::<Vec<_>>().join(", "));
    times.sort_by(f64::total_cmp);
    println!("p50 {:.1} s, p99 {:.1} s", percentile(&times, 0.5), percentile(&times, 0.99));
}
