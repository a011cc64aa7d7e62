//! Offset history under a transactional source (not a timed test): a producer commits a
//! transaction every 100 ms on `a` while `ferry mirror` replicates to `b` and checkpoints a
//! group that stopped early (it lags the whole run). Against local Apache Kafka brokers.
//!
//!   cargo bench -p ferry-cli --bench transactional_history            # 10 minutes
//!   BENCH_SECONDS=60 FERRY_BENCH_EOS=1 cargo bench -p ferry-cli --bench transactional_history
//!
//! Every commit marker is a source offset without a record, so before coalescing each
//! transaction started an offset run: the baseline, counted in the same run, is one run per
//! transaction and partition. Printed: the runs Ferry stored against that baseline, the
//! lagging group's checkpoint against its exact translation (records it would read again; it
//! must never be past the exact one), and the mirror's CPU and memory in the first and the last
//! minute (work that grew with the history would show as a ratio above 1).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_mirror::offset_store::RunLog;
use ferry_mirror::records::Checkpoint;
use ferry_testkit::{client_config, commit_offsets, consume_all, create_topic, unique, watermarks, Broker, BrokerOptions, Process, TestRecord, TxnProducer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
/// Records per partition in each transaction.
const PER_TXN: usize = 5;

/// Reads a compacted internal topic from its start until it is idle for a second.
fn read_topic(bootstrap: &str, topic: &str, mut apply: impl FnMut(&[u8], Option<&[u8]>)) {
    let c: BaseConsumer = client_config(bootstrap).set("group.id", unique("bench")).create().unwrap();
    let partitions = ferry_testkit::list_topics(bootstrap).unwrap().into_iter().find(|(t, _)| t == topic).map_or(1, |(_, n)| n);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            idle = Instant::now();
            if let Some(k) = m.key() {
                apply(k, m.payload());
            }
        }
    }
}

/// CPU seconds (user + system) and resident memory (MiB) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the command name: state is field 0, utime 11, stime 12, rss (pages) 21.
    ((ticks(11) + ticks(12)) / 100.0, ticks(21) * 4096.0 / (1024.0 * 1024.0))
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let eos = std::env::var("FERRY_BENCH_EOS").is_ok_and(|v| v == "1");
    let (a, b) = (Broker::start_with("a", BrokerOptions::benchmark()).unwrap(), Broker::start_with("b", BrokerOptions::benchmark()).unwrap());
    let topic = unique("txns");
    let remote = format!("a.{topic}");
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    let config = std::env::temp_dir().join(format!("{}.properties", unique("bench-txn-history")));
    let mut text = format!(
        "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\na->b.enabled = true\na->b.topics = {topic}\n\
         refresh.topics.interval.seconds = 1\nrefresh.groups.interval.seconds = 1\nemit.checkpoints.interval.seconds = 1\n",
        a.bootstrap(), b.bootstrap());
    if eos {
        text.push_str("exactly.once.support = enabled\n");
    }
    std::fs::write(&config, text).unwrap();
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let mirror = Process::spawn(ferry, &["mirror", "--config", config.to_str().unwrap()], &unique("bench-txn-history")).unwrap();
    println!("## offset history under a transactional source ({}; {seconds} s, a transaction every 100 ms, {PER_TXN} records per partition in each, {PARTITIONS} partitions)",
        if eos { "exactly-once mode" } else { "at-least-once mode" });

    let producer = TxnProducer::new(&a.bootstrap()).unwrap();
    let mut seq = 0u64;
    let mut batch = || -> Vec<TestRecord> {
        (0..PER_TXN)
            .flat_map(|_| (0..PARTITIONS).map(|p| (p, 0)))
            .map(|(p, _)| {
                seq += 1;
                TestRecord { partition: p, offset: -1, key: Some(seq.to_string().into_bytes()), value: Some(vec![b'x'; 100]), headers: vec![], timestamp: None }
            })
            .collect()
    };
    let started = Instant::now();
    let mut txns = 0u64;
    let lagging = unique("lagging");
    let mut committed: Vec<(i32, i64)> = Vec::new();
    // CPU windows: one early (after start-up), one at the end.
    let minute = Duration::from_secs(60.min(seconds / 3).max(1));
    let warm = minute / 2;
    let (mut early_start, mut early_end, mut last_start) = (None, None, None);
    let mut next = Instant::now();
    let mut memory: Vec<f64> = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        if started.elapsed() >= minute * memory.len() as u32 {
            memory.push(usage(mirror.pid()).1);
        }
        producer.transaction(&topic, &batch(), true).unwrap();
        txns += 1;
        if txns == 50 {
            // The lagging group: one partition at a transaction's end (just past its marker),
            // the others inside a transaction; it never commits again.
            for p in 0..PARTITIONS {
                let (_, high) = watermarks(&a.bootstrap(), &topic, p).unwrap();
                committed.push((p, if p == 0 { high } else { high - 1 - i64::from(p) }));
            }
            let offsets: Vec<(&str, i32, i64)> = committed.iter().map(|&(p, o)| (topic.as_str(), p, o)).collect();
            commit_offsets(&a.bootstrap(), &lagging, &offsets).unwrap();
        }
        let elapsed = started.elapsed();
        if early_start.is_none() && elapsed >= warm {
            early_start = Some(usage(mirror.pid()));
        }
        if early_end.is_none() && elapsed >= warm + minute {
            early_end = Some(usage(mirror.pid()));
        }
        if last_start.is_none() && elapsed + minute >= Duration::from_secs(seconds) {
            last_start = Some(usage(mirror.pid()));
        }
        next += Duration::from_millis(100);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let end = usage(mirror.pid());
    let (early_start, early_end, last_start) = (early_start.unwrap(), early_end.unwrap(), last_start.unwrap());
    let records = txns as usize * PER_TXN * PARTITIONS as usize;
    // Everything replicated, then the stored history, read as a restarted process reads it.
    let on_target = consume_all(&b.bootstrap(), &remote, PARTITIONS, records, Duration::from_secs(120)).unwrap();
    assert_eq!(on_target.len(), records, "every committed record is replicated, once:\n{}", mirror.output());
    std::thread::sleep(Duration::from_secs(3));
    let mut log = RunLog::default();
    read_topic(&a.bootstrap(), "ferry-offset-runs.b.internal", |k, v| log.apply(k, v));
    let mut runs_per_partition = Vec::new();
    for p in 0..PARTITIONS {
        runs_per_partition.push(log.map(&topic, p).map_or(0, |m| m.run_count()));
    }
    let stored: usize = runs_per_partition.iter().sum();
    let baseline = txns as usize * PARTITIONS as usize;
    println!("transactions committed: {txns}; records replicated: {records}");
    println!("offset runs stored: {stored} ({runs_per_partition:?} per partition); baseline, one run per transaction and partition: {baseline}; ratio {:.4}x",
        stored as f64 / baseline as f64);

    // A second group, reading far behind, commits now positions from the start of the run
    // (history old enough to be coalesced): translated now, not when the runs were exact.
    let behind = unique("behind");
    let behind_at: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 6 * (120 + 37 * i64::from(p)) + 2 + i64::from(p % 3))).collect();
    let offsets: Vec<(&str, i32, i64)> = behind_at.iter().map(|&(p, o)| (topic.as_str(), p, o)).collect();
    commit_offsets(&a.bootstrap(), &behind, &offsets).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    // Both groups' checkpoints against the exact translation, from both logs' records.
    let on_source = consume_all(&a.bootstrap(), &topic, PARTITIONS, records, Duration::from_secs(120)).unwrap();
    let copies: BTreeMap<Vec<u8>, i64> = on_target.iter().map(|r| (r.key.clone().unwrap(), r.offset)).collect();
    let mut latest: BTreeMap<(String, i32), Checkpoint> = BTreeMap::new();
    read_topic(&b.bootstrap(), "a.checkpoints.internal", |k, v| {
        if let Some(c) = v.and_then(|v| Checkpoint::decode(k, v).ok()).filter(|c| c.group == lagging || c.group == behind) {
            latest.insert((c.group.clone(), c.partition), c);
        }
    });
    for (group, committed, what) in [(&lagging, &committed, "committed after 50 transactions, translated then"), (&behind, &behind_at, "committed at the end, old position")] {
        let mut reread = Vec::new();
        for &(p, upstream) in committed {
            let first_unread = on_source.iter().find(|r| r.partition == p && r.offset >= upstream).unwrap();
            let exact = copies[first_unread.key.as_ref().unwrap()];
            let c = latest.get(&(group.clone(), p)).unwrap_or_else(|| panic!("{group} partition {p}: no checkpoint after {seconds} s:\n{}", mirror.output()));
            assert_eq!(c.upstream_offset, upstream);
            assert!(c.downstream_offset <= exact, "{group} partition {p}: checkpoint {} is past the exact translation {exact}: records would be skipped", c.downstream_offset);
            reread.push(exact - c.downstream_offset);
        }
        println!("group {what}: records read again at failover per partition {reread:?} (exact = 0; bound {})", ferry_mirror::offset_map::MAX_RUN_GAPS);
    }
    let cpu = |from: (f64, f64), to: (f64, f64)| (to.0 - from.0) / minute.as_secs_f64();
    let (cpu_first, cpu_last) = (cpu(early_start, early_end), cpu(last_start, end));
    println!("mirror CPU over {minute:?}: early {:.1} %, last {:.1} %; ratio last/early {:.2}x", cpu_first * 100.0, cpu_last * 100.0, cpu_last / cpu_first.max(1e-9));
    println!("mirror resident memory: early {:.1} MiB, at the end {:.1} MiB; ratio {:.2}x", early_end.1, end.1, end.1 / early_end.1.max(1e-9));
    let memory: Vec<String> = memory.iter().map(|m| format!("{m:.0}")).collect();
    println!("mirror resident memory every {minute:?}, MiB: {}", memory.join(", "));
    drop(mirror);
}
