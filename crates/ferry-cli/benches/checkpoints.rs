//! Checkpoint benchmark (not a timed test): how fresh checkpoints are, and what a failover
//! under load costs in duplicates and misses, against local Apache Kafka brokers, for Ferry and
//! for MirrorMaker 2 in the same run (each on brokers of its own).
//!
//!   cargo bench -p ferry-cli --bench checkpoints
//!
//! MirrorMaker 2 runs in dedicated mode with checkpoints, group and topic refreshes every second
//! (its defaults are 60 s and 600 s; the same as Ferry here) and its default `offset.lag.max`
//! (100). Its failover is what its users do: the group's latest checkpoints, as
//! `RemoteClusterUtils.translateOffsets` returns them, committed on the target.
//!
//! Freshness: a burst of records is produced on `a` and the group commits the new end offsets at
//! t0; the time until `a.checkpoints.internal` on `b` carries those offsets for every partition
//! is the checkpoint freshness. The baseline, measured in the same run for the same burst, is
//! the replication latency of the burst itself (a checkpoint cannot exist before its records
//! are replicated). Failover: while a producer keeps writing, a group reads on `a`, commits and
//! stops; after 2 s, `ferry ctl failover` moves it to `b`, where it reads on. Duplicates and
//! misses per partition are counted from the records' sequence numbers.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_mirror::records::Checkpoint;
use ferry_testkit::{client_config, commit_offsets, create_topic, kafka_java, unique, Broker, BrokerOptions, GroupConsumer, Process, RecordProducer, TestRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;
const SAMPLES: usize = 40;
const FAILOVERS: usize = 3;
/// How long a sample waits for its checkpoint (MirrorMaker 2 checkpoints a group's exact
/// position only when an offset sync lands on it, so many never arrive).
const CHECKPOINT_WAIT: Duration = Duration::from_secs(5);

fn tail(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let c: BaseConsumer = client_config(bootstrap).set("group.id", unique("bench")).set("fetch.wait.max.ms", "10").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

fn burst(seq: &mut [i64], n: i64) -> Vec<TestRecord> {
    let mut out = Vec::new();
    for _ in 0..n {
        for (p, s) in seq.iter_mut().enumerate() {
            out.push(TestRecord { partition: p as i32, offset: -1, key: Some(s.to_string().into_bytes()), value: Some(vec![b'x'; 100]), headers: vec![("seq".into(), Some(s.to_string().into_bytes()))], timestamp: None });
            *s += 1;
        }
    }
    out
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn seq_of(r: &TestRecord) -> i64 {
    let v = r.headers.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.clone()).unwrap();
    String::from_utf8(v).unwrap().parse().unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Mirror {
    Ferry,
    MirrorMaker2,
}

fn main() {
    for mirror in [Mirror::Ferry, Mirror::MirrorMaker2] {
        scenario(mirror);
    }
}

/// The latest checkpoint of `group` per partition in `a.checkpoints.internal` on `bootstrap`:
/// (target topic, partition, downstream offset).
fn latest_checkpoints(bootstrap: &str, group: &str) -> Vec<(String, i32, i64)> {
    let c = tail(bootstrap, "a.checkpoints.internal", 1);
    let mut latest: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(1) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            idle = Instant::now();
            if let (Some(k), Some(v)) = (m.key(), m.payload()) {
                if let Ok(c) = Checkpoint::decode(k, v) {
                    if c.group == group {
                        latest.insert((c.topic, c.partition), c.downstream_offset);
                    }
                }
            }
        }
    }
    latest.into_iter().map(|((t, p), o)| (t, p, o)).collect()
}

fn scenario(mirror: Mirror) {
    let name = if mirror == Mirror::Ferry { "ferry mirror" } else { "MirrorMaker 2 (dedicated)" };
    println!("## {name}");
    let (a, b) = (Broker::start_with("a", BrokerOptions::benchmark()).unwrap(), Broker::start_with("b", BrokerOptions::benchmark()).unwrap());
    let topic = unique("bench");
    let remote = format!("a.{topic}");
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    let config = std::env::temp_dir().join(format!("{}.properties", unique("bench-checkpoints")));
    let mut text = format!(
        "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\na->b.enabled = true\na->b.topics = {topic}\nrefresh.topics.interval.seconds = 1\nrefresh.groups.interval.seconds = 1\n",
        a.bootstrap(), b.bootstrap());
    if mirror == Mirror::MirrorMaker2 {
        text.push_str("b->a.enabled = false\ntasks.max = 1\nemit.checkpoints.interval.seconds = 1\nsync.topic.acls.enabled = false\n");
        text.push_str(&ferry_testkit::mm2_single_node_settings());
    }
    std::fs::write(&config, text).unwrap();
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let _mirror = match mirror {
        Mirror::Ferry => Process::spawn(ferry, &["mirror", "--config", config.to_str().unwrap()], &unique("bench-checkpoints")).unwrap(),
        Mirror::MirrorMaker2 => {
            let mut cmd = kafka_java("512m", "org.apache.kafka.connect.mirror.MirrorMaker").unwrap();
            cmd.arg(&config);
            Process::spawn_command(cmd, &std::env::temp_dir().join(format!("{}.log", unique("bench-checkpoints-mm2")))).unwrap()
        }
    };

    // --- freshness ---
    let producer = RecordProducer::new(&a.bootstrap()).unwrap();
    let mut seq = vec![0i64; PARTITIONS as usize];
    producer.send_all(&topic, &burst(&mut seq, 10)).unwrap();
    while !ferry_testkit::list_topics(&b.bootstrap()).unwrap().iter().any(|(t, _)| t == "a.checkpoints.internal") {
        // the checkpoints topic appears once the flow's checkpointer runs
        std::thread::sleep(Duration::from_millis(200));
    }
    let group = unique("fresh");
    let replicated = tail(&b.bootstrap(), &remote, PARTITIONS);
    let checkpoints = tail(&b.bootstrap(), "a.checkpoints.internal", 1);
    let mut seen_remote = 0usize;
    let (mut fresh, mut repl) = (Vec::new(), Vec::new());
    let mut latest: HashMap<i32, i64> = HashMap::new();
    let mut never = 0;
    for _ in 0..SAMPLES {
        producer.send_all(&topic, &burst(&mut seq, 10)).unwrap();
        let t0 = Instant::now();
        let ends: Vec<(&str, i32, i64)> = seq.iter().enumerate().map(|(p, s)| (topic.as_str(), p as i32, *s)).collect();
        commit_offsets(&a.bootstrap(), &group, &ends).unwrap();
        let want_remote: usize = seq.iter().sum::<i64>() as usize;
        let (mut t_rep, mut t_ck) = (None, None);
        while (t_rep.is_none() || t_ck.is_none()) && t0.elapsed() < CHECKPOINT_WAIT {
            while let Some(Ok(_)) = replicated.poll(Duration::ZERO) {
                seen_remote += 1;
            }
            if t_rep.is_none() && seen_remote >= want_remote {
                t_rep = Some(t0.elapsed());
            }
            while let Some(Ok(m)) = checkpoints.poll(Duration::ZERO) {
                if let (Some(k), Some(v)) = (m.key(), m.payload()) {
                    if let Ok(c) = Checkpoint::decode(k, v) {
                        if c.group == group {
                            latest.insert(c.partition, c.upstream_offset);
                        }
                    }
                }
            }
            if t_ck.is_none() && seq.iter().enumerate().all(|(p, s)| latest.get(&(p as i32)) == Some(s)) {
                t_ck = Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // A checkpoint that never carried the commit counts as the whole wait (and apart).
        if t_ck.is_none() {
            never += 1;
        }
        fresh.push(t_ck.unwrap_or(CHECKPOINT_WAIT).as_secs_f64() * 1000.0);
        repl.push(t_rep.expect("replicated within the wait").as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(300));
    }
    fresh.sort_by(f64::total_cmp);
    repl.sort_by(f64::total_cmp);
    let (f50, f99, r50, r99) = (percentile(&fresh, 0.5), percentile(&fresh, 0.99), percentile(&repl, 0.5), percentile(&repl, 0.99));
    println!("checkpoint freshness over {SAMPLES} commits ({PARTITIONS} partitions; emit.checkpoints.interval.seconds = 1):");
    println!("  commit -> checkpoint on target: p50 {f50:.0} ms, p99 {f99:.0} ms (goal p99 <= 2000 ms; MM2 default interval 60000 ms)");
    println!("  baseline, same bursts, produce ack -> replicated on target: p50 {r50:.0} ms, p99 {r99:.0} ms");
    println!("  ratio checkpoint/replication: p50 {:.1}x, p99 {:.1}x", f50 / r50.max(1.0), f99 / r99.max(1.0));
    println!("  commits whose exact offsets never appeared in a checkpoint within {CHECKPOINT_WAIT:?}: {never} of {SAMPLES}");

    // --- failover under load ---
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (running, bootstrap, topic) = (running.clone(), a.bootstrap(), topic.clone());
        let mut seq = seq.clone();
        std::thread::spawn(move || {
            let p = RecordProducer::new(&bootstrap).unwrap();
            while running.load(Ordering::Relaxed) {
                p.send_all(&topic, &burst(&mut seq, 20)).unwrap(); // ~120 records per 100 ms
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    println!("failover under load (~1200 records/s on a; the group stops, 2 s later fails over, reads on b):");
    let mut total = (0usize, 0usize, 0usize);
    for round in 0..FAILOVERS {
        let g = unique("failover");
        let mut ledger: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        // the group starts at the current end on a (commit it first), reads 3 s, commits, stops
        let start: Vec<(&str, i32, i64)> = (0..PARTITIONS).map(|p| {
            let (_, high) = tail(&a.bootstrap(), &topic, PARTITIONS).fetch_watermarks(&topic, p, Duration::from_secs(5)).unwrap();
            (topic.as_str(), p, high)
        }).collect();
        commit_offsets(&a.bootstrap(), &g, &start).unwrap();
        let c = GroupConsumer::new(&a.bootstrap(), &g, &[&topic]).unwrap();
        for (_, r) in c.read_until(Duration::from_secs(3), |_| false).unwrap() {
            ledger.entry(r.partition).or_default().push(seq_of(&r));
        }
        c.commit().unwrap();
        c.close();
        std::thread::sleep(Duration::from_secs(2));
        match mirror {
            Mirror::Ferry => {
                let out = std::process::Command::new(ferry)
                    .args(["ctl", "failover", "--config", config.to_str().unwrap(), "--group", &g, "--from", "a", "--to", "b"])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            Mirror::MirrorMaker2 => {
                let translated = latest_checkpoints(&b.bootstrap(), &g);
                assert!(!translated.is_empty(), "MirrorMaker 2 wrote no checkpoint of {g}");
                let offsets: Vec<(&str, i32, i64)> = translated.iter().map(|(t, p, o)| (t.as_str(), *p, *o)).collect();
                commit_offsets(&b.bootstrap(), &g, &offsets).unwrap();
            }
        }
        let c = GroupConsumer::new(&b.bootstrap(), &g, &[&remote]).unwrap();
        for (_, r) in c.read_until(Duration::from_secs(3), |_| false).unwrap() {
            ledger.entry(r.partition).or_default().push(seq_of(&r));
        }
        c.close();
        let mut line = Vec::new();
        for p in 0..PARTITIONS {
            let got = ledger.remove(&p).unwrap_or_default();
            let mut counts: HashMap<i64, usize> = HashMap::new();
            for s in &got {
                *counts.entry(*s).or_default() += 1;
            }
            let dups: usize = counts.values().map(|n| n - 1).sum();
            let (lo, hi) = (got.iter().min().copied().unwrap_or(0), got.iter().max().copied().unwrap_or(-1));
            let missing = (lo..=hi).filter(|s| !counts.contains_key(s)).count();
            total = (total.0 + got.len(), total.1 + dups, total.2 + missing);
            line.push(format!("p{p}: {} read, {dups} dup, {missing} missed", got.len()));
        }
        println!("  round {}: {}", round + 1, line.join("; "));
    }
    running.store(false, Ordering::Relaxed);
    load.join().unwrap();
    println!("  total over {FAILOVERS} failovers x {PARTITIONS} partitions: {} records read, {} duplicates, {} missed", total.0, total.1, total.2);
}
