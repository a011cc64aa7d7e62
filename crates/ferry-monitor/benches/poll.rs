//! One poll of a whole cluster by the monitor (brokers, topics, every consumer group with lag in
//! records and seconds) against Kafka's own `kafka-consumer-groups --describe --all-groups` (the
//! incumbent: lag in records only) on the same broker, in the same run. Not a timed test.
//!
//!   cargo bench -p ferry-monitor --bench poll                          # 10,000 partitions, 2,000 groups
//!   BENCH_TOPICS=20 BENCH_PARTITIONS=50 BENCH_GROUPS=200 cargo bench -p ferry-monitor --bench poll
//!
//! Every partition holds 10 records; each group commits offset 5 on 5 partitions of different
//! topics (so every committed partition lags and its record's timestamp is read). The monitor's
//! first poll is timed from its start (clients included), then a second one from the first.

use std::time::{Duration, Instant};

use ferry_kafka::ClusterClient;
use ferry_monitor::collect::Monitor;
use ferry_testkit::{commit_offsets, create_topic, kafka_tool, Broker, RecordProducer, TestRecord};

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
}
