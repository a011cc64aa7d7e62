//! Monitoring a large cluster. First, one poll of the whole cluster by the monitor (brokers,
//! topics, every consumer group with lag in records and seconds) against Kafka's own
//! `kafka-consumer-groups --describe --all-groups` (the incumbent: lag in records only) on the same
//! broker, in the same run. Then `ferry serve` over the same cluster: the API's list calls (answered
//! from memory) against its `/health` route (the HTTP ceiling), and the Monitoring page in headless
//! Chromium (tests/browser/monitor-scale.mjs; `scripts/install-test-tools` installs it): how long
//! each view takes to show, and its longest main-thread task through two refreshes. Not a timed test.
//!
//!   cargo bench -p ferry-cli --bench monitor                          # 10,000 partitions, 2,000 groups
//!   BENCH_TOPICS=20 BENCH_PARTITIONS=50 BENCH_GROUPS=200 cargo bench -p ferry-cli --bench monitor
//!
//! Every partition holds 10 records; each group commits offset 5 on 5 partitions of different
//! topics (so every committed partition lags and its record's timestamp is read). The monitor's
//! first poll is timed from its start (clients included), then a second one from the first.

use std::time::{Duration, Instant};

use ferry_kafka::ClusterClient;
use ferry_monitor::collect::Monitor;
use ferry_testkit::{commit_offsets, create_topic, free_port, http_request, kafka_tool, unique, wait_for, Broker, Process, RecordProducer, TestRecord};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let (topics, partitions, groups) = (env("BENCH_TOPICS", 100), env("BENCH_PARTITIONS", 100), env("BENCH_GROUPS", 2_000));
    let broker = Broker::start("bench-monitor").unwrap();
    let bootstrap = broker.bootstrap();
    let started = Instant::now();
    let names: Vec<String> = (0..topics).map(|t| format!("bench-{t:03}")).collect();
    for name in &names {
        create_topic(&bootstrap, name, partitions as i32).unwrap();
    }
    let producer = RecordProducer::new(&bootstrap).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for name in &names {
        let records: Vec<TestRecord> = (0..partitions as i32)
            .flat_map(|p| (0..10).map(move |i| TestRecord { partition: p, offset: 0, key: Some(format!("k{i}").into_bytes()), value: Some(b"v".to_vec()), headers: vec![], timestamp: Some(now) }))
            .collect();
        producer.send_all(name, &records).unwrap();
    }
    // Groups commit in parallel (a consumer each).
    let threads = 8;
    std::thread::scope(|s| {
        for w in 0..threads {
            let (bootstrap, names) = (&bootstrap, &names);
            s.spawn(move || {
                for g in (w..groups).step_by(threads) {
                    let commits: Vec<(String, i32)> = (0..5).map(|k| (names[(g + k * 7) % topics].clone(), ((g * 13 + k) % partitions) as i32)).collect();
                    let offsets: Vec<(&str, i32, i64)> = commits.iter().map(|(t, p)| (t.as_str(), *p, 5)).collect();
                    commit_offsets(bootstrap, &format!("bench-group-{g:05}"), &offsets).unwrap();
                }
            });
        }
    });
    println!("setup: {topics} topics x {partitions} partitions = {} partitions, {groups} groups with 5 lagging partitions each, in {:?}", topics * partitions, started.elapsed());

    // The incumbent: Kafka's own command, every group's lag in records.
    let t0 = Instant::now();
    let out = kafka_tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", &["--bootstrap-server", &bootstrap, "--describe", "--all-groups"]).unwrap();
    let incumbent = t0.elapsed();
    let described = out.lines().filter(|l| l.starts_with("bench-group-")).count();
    println!("kafka-consumer-groups --describe --all-groups: {incumbent:?} ({described} group partitions listed; JVM start included)");

    // Ferry's monitor: the first poll (clients made) and the next one.
    let cancel = tokio_util::sync::CancellationToken::new();
    let t0 = Instant::now();
    let monitor = Monitor::start(&[ClusterClient::new("a", bootstrap.clone())], Duration::from_millis(100), cancel.clone());
    let first = loop {
        if let Some(s) = monitor.cluster("a").filter(|s| s.polled_at_ms.is_some()) {
            assert!(s.error.is_none(), "{:?}", s.error);
            break (t0.elapsed(), s);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (first_took, snap) = first;
    let with_seconds = snap.groups.values().flat_map(|g| &g.partitions).filter(|p| p.lag.lag_seconds.is_some()).count();
    let t1 = Instant::now();
    let at = snap.polled_at_ms;
    let second_took = loop {
        if monitor.cluster("a").is_some_and(|s| s.polled_at_ms != at) {
            break t1.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    cancel.cancel();
    println!("ferry monitor, first poll: {first_took:?}; next poll: {second_took:?}; {} groups, {with_seconds} partitions with lag in seconds, {} topics",
        snap.groups.len(), snap.topics.len());
    println!("ratio (next poll / incumbent): {:.2}", second_took.as_secs_f64() / incumbent.as_secs_f64());

    console(&bootstrap, &names[0]);
}

/// The median time of `n` GETs of `path` (a new connection each, as the HTTP/1.0 helper does).
fn median_get(addr: &str, path: &str, token: &str, n: usize) -> Duration {
    let auth = format!("Bearer {token}");
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let (status, body) = http_request(addr, "GET", path, &[("Authorization", &auth)], "").unwrap();
            assert_eq!(status, 200, "{path}: {body}");
            t0.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// `ferry serve` over the cluster: its list calls against its health route, then the console in
/// Chromium.
fn console(bootstrap: &str, topic: &str) {
    let dir = std::env::temp_dir().join(unique("bench-monitor"));
    std::fs::create_dir_all(&dir).unwrap();
    let (config, token_file) = (dir.join("clusters.properties"), dir.join("token"));
    std::fs::write(&config, format!("clusters = a\na.bootstrap.servers = {bootstrap}\n")).unwrap();
    let token = "bench-token";
    std::fs::write(&token_file, token).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let ferry = std::path::Path::new(env!("CARGO_BIN_EXE_ferry"));
    let data = dir.join("data");
    let mut serve = Process::spawn(ferry, &["serve", "--config", config.to_str().unwrap(), "--listen", &addr, "--api-token-file", token_file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()], "bench-serve").unwrap();
    let auth = format!("Bearer {token}");
    let t0 = Instant::now();
    wait_for(Duration::from_secs(120), || http_request(&addr, "GET", "/api/v1/clusters/a/overview", &[("Authorization", &auth)], "").ok().filter(|(s, _)| *s == 200))
        .unwrap_or_else(|| panic!("ferry serve never polled the cluster:\n{}", serve.output()));
    println!("ferry serve: first poll answered {:?} after start", t0.elapsed());

    let ceiling = median_get(&addr, "/api/v1/health", token, 51);
    println!("API, median of 51 GETs (new connection each), ratio to /api/v1/health ({:.2} ms, the HTTP ceiling):", ceiling.as_secs_f64() * 1e3);
    for path in ["/api/v1/clusters/a/overview", "/api/v1/clusters/a/groups?limit=200&sort=status", "/api/v1/clusters/a/groups?limit=200&sort=lag_seconds&search=group-01", "/api/v1/clusters/a/topics?limit=200"] {
        let took = median_get(&addr, path, token, 51);
        println!("  {path:<70} {:>8.2} ms  {:>6.1}x", took.as_secs_f64() * 1e3, took.as_secs_f64() / ceiling.as_secs_f64());
    }

    let shots = dir.join("page");
    let out = std::process::Command::new("node")
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser"))
        .args(["monitor-scale.mjs", &format!("http://{addr}/"), token, shots.to_str().unwrap(), "a", "bench-group-00000", topic])
        .output()
        .expect("node is needed (scripts/install-test-tools)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("browser script output: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{seen}");
    println!("console in headless Chromium (screenshots {}-*.png); target: no task over 200 ms", shots.display());
    println!("  cards: {}", seen["cards"]);
    for (name, v) in seen["views"].as_object().unwrap() {
        // The Long Tasks API reports tasks of 50 ms and more.
        let longest = match v["longest_task_ms"].as_f64() {
            Some(ms) if ms > 0.0 => format!("longest task {ms:.0} ms"),
            _ => "no task of 50 ms or more".to_string(),
        };
        println!("  {name:<10} shown in {:>5} ms, {longest} through two refreshes, {} rows", v["ready_ms"], v["rows"]);
    }
    serve.terminate(Duration::from_secs(10)).unwrap();
}
