//! The monitor against Apache Kafka, polling every second.
//!
//! - Each status produced on purpose and seen by the monitor within two polls of the condition
//!   (STALL needs a whole window, [`MIN_SPAN_MS`], by design: a member may commit only every few
//!   seconds): a group nobody consumes with lag (STOP), a member committing the same offset
//!   (STALL), an offset reset backwards (REWIND), a group slower than its producer (WARN), a group
//!   caught up on an idle topic (OK).
//! - Lag in seconds against ground truth the test computes from every record's timestamp, in four
//!   phases: steady load, a 50x burst, idle, and a replay from the start, within max(2 s, 5 %).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_kafka::ClusterClient;
use ferry_monitor::collect::{GroupView, Monitor};
use ferry_monitor::status::{Status, MIN_SPAN_MS};
use ferry_testkit::{commit_offsets, create_topic, unique, wait_for, Broker, RecordProducer, TestRecord};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const POLL: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn records(n: usize, at_ms: i64) -> Vec<TestRecord> {
    (0..n).map(|i| TestRecord { partition: 0, offset: 0, key: Some(format!("k{i}").into_bytes()), value: Some(b"v".to_vec()), headers: vec![], timestamp: Some(at_ms) }).collect()
}

fn group(monitor: &Monitor, name: &str) -> Option<GroupView> {
    monitor.cluster("a")?.groups.get(name).cloned()
}

/// Waits until the group shows `status`; returns its view and how long it took.
fn status_seen(monitor: &Monitor, name: &str, status: Status, within: Duration) -> (GroupView, Duration) {
    let started = Instant::now();
    let g = wait_for(within, || group(monitor, name).filter(|g| g.status == status)).unwrap_or_else(|| panic!("{name} never {status:?} within {within:?}: {:?}", group(monitor, name)));
    (g, started.elapsed())
}

#[test]
fn each_status_on_purpose_and_lag_seconds_against_the_truth() {
    let broker = Broker::start("monitor-status").unwrap();
    let bootstrap = broker.bootstrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let monitor = Monitor::start(&[ClusterClient::new("a", bootstrap.clone())], POLL, cancel.clone());
    let producer = RecordProducer::new(&bootstrap).unwrap();
    let two_polls = POLL * 2 + Duration::from_secs(2); // the condition's own poll, one more, and a read

    // STOP: 20 records, offset 5 committed, no member.
    let stopped = unique("stopped");
    create_topic(&bootstrap, &stopped, 1).unwrap();
    producer.send_all(&stopped, &records(20, now_ms())).unwrap();
    commit_offsets(&bootstrap, &stopped, &[(&stopped, 0, 5)]).unwrap();
    // Seen once the monitor has the group at all, then within two polls.
    wait_for(Duration::from_secs(20), || group(&monitor, &stopped)).expect("the group is listed");
    let (g, took) = status_seen(&monitor, &stopped, Status::Stop, two_polls);
    println!("STOP after {took:?}: {}", g.reason);

    // REWIND: 10, then back to 3.
    let rewound = unique("rewound");
    commit_offsets(&bootstrap, &rewound, &[(&stopped, 0, 10)]).unwrap();
    wait_for(Duration::from_secs(20), || group(&monitor, &rewound)).expect("the group is listed");
    commit_offsets(&bootstrap, &rewound, &[(&stopped, 0, 3)]).unwrap();
    let (g, took) = status_seen(&monitor, &rewound, Status::Rewind, two_polls);
    println!("REWIND after {took:?}: {}", g.reason);

    // OK: caught up, and the topic idle.
    let idle = unique("idle");
    commit_offsets(&bootstrap, &idle, &[(&stopped, 0, 20)]).unwrap();
    wait_for(Duration::from_secs(20), || group(&monitor, &idle)).expect("the group is listed");
    let (g, _) = status_seen(&monitor, &idle, Status::Ok, two_polls);
    assert_eq!((g.lag, g.partitions[0].lag.lag_seconds.map(|s| s.seconds)), (0, Some(0.0)), "caught up on an idle topic: 0 records, 0 s");

    // WARN: the producer writes 20/s, the group commits 5/s more each second.
    let slow = unique("slow");
    let busy = unique("busy");
    create_topic(&bootstrap, &busy, 1).unwrap();
    producer.send_all(&busy, &records(20, now_ms())).unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let writer = {
        let (running, bootstrap, busy, slow) = (running.clone(), bootstrap.clone(), busy.clone(), slow.clone());
        std::thread::spawn(move || {
            let producer = RecordProducer::new(&bootstrap).unwrap();
            let mut committed = 0;
            while running.load(Ordering::Relaxed) {
                producer.send_all(&busy, &records(20, now_ms())).unwrap();
                committed += 5;
                commit_offsets(&bootstrap, &slow, &[(&busy, 0, committed)]).unwrap();
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };
    wait_for(Duration::from_secs(20), || group(&monitor, &slow)).expect("the group is listed");
    // Three samples are needed to see a trend: the second poll after the first is the earliest.
    let (g, took) = status_seen(&monitor, &slow, Status::Warn, two_polls + POLL * 2);
    println!("WARN after {took:?}: {}", g.reason);
    running.store(false, Ordering::Relaxed);
    writer.join().unwrap();

    // STALL: a live member owns the partition and commits offset 5 again and again.
    let stalled = unique("stalled");
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &stalled)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    member.subscribe(&[&stopped]).unwrap();
    let started = Instant::now();
    let mut seen = None;
    while started.elapsed() < Duration::from_millis(MIN_SPAN_MS as u64) + Duration::from_secs(30) {
        let _ = member.poll(Duration::from_millis(200));
        let assignment = member.assignment().unwrap();
        if assignment.count() > 0 {
            member.pause(&assignment).unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&stopped, 0, Offset::Offset(5)).unwrap();
            let _ = member.commit(&tpl, CommitMode::Sync);
        }
        if let Some(g) = group(&monitor, &stalled).filter(|g| g.status == Status::Stall) {
            seen = Some((g, started.elapsed()));
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (g, took) = seen.unwrap_or_else(|| panic!("never STALL: {:?}", group(&monitor, &stalled)));
    println!("STALL after {took:?} (a whole window, {MIN_SPAN_MS} ms, by design): {}", g.reason);
    assert_eq!(g.members.len(), 1, "{g:?}");

    // Lag in seconds against the truth: every record's timestamp is known here.
    let truth_topic = unique("truth");
    create_topic(&bootstrap, &truth_topic, 1).unwrap();
    let reader = unique("reader");
    let mut stamps: Vec<i64> = Vec::new();
    let write = |n: usize, stamps: &mut Vec<i64>| {
        let at = now_ms();
        producer.send_all(&truth_topic, &records(n, at)).unwrap();
        stamps.extend(std::iter::repeat_n(at, n));
    };
    let mut worst: Vec<(String, f64, f64)> = Vec::new();
    // The monitor's answer against the truth at the instant it polled: now minus the timestamp
    // of the first record the group has not consumed.
    let mut check = |phase: &str, stamps: &[i64], committed: i64| {
        let g = wait_for(Duration::from_secs(20), || group(&monitor, &reader).filter(|g| g.partitions[0].lag.committed == Some(committed))).unwrap_or_else(|| panic!("{phase}: never saw offset {committed}"));
        let p = &g.partitions[0].lag;
        let answer = p.lag_seconds.unwrap_or_else(|| panic!("{phase}: no lag in seconds: {p:?}"));
        let truth = if committed as usize >= stamps.len() { 0.0 } else { (g.polled_at_ms - stamps[committed as usize]) as f64 / 1000.0 };
        let allowed = (truth * 0.05).max(2.0);
        println!("{phase}: lag {} records, {:.3} s by {:?}; truth {truth:.3} s", p.lag.unwrap_or(0), answer.seconds, answer.method);
        assert!((answer.seconds - truth).abs() <= allowed, "{phase}: {:.3} s, truth {truth:.3} s (allowed ±{allowed:.1} s)", answer.seconds);
        worst.push((phase.to_string(), answer.seconds, truth));
    };
    // Steady load: 10 records every 500 ms for 6 s, the group 2 s behind.
    for _ in 0..12 {
        write(10, &mut stamps);
        std::thread::sleep(Duration::from_millis(500));
    }
    let committed = stamps.len() as i64 - 40;
    commit_offsets(&bootstrap, &reader, &[(&truth_topic, 0, committed)]).unwrap();
    check("steady", &stamps, committed);
    // A burst of 50x the steady rate: the lag in records jumps, the lag in seconds does not.
    write(1_000, &mut stamps);
    std::thread::sleep(POLL * 2);
    check("burst", &stamps, committed);
    // Idle and caught up: 0 s.
    let end = stamps.len() as i64;
    commit_offsets(&bootstrap, &reader, &[(&truth_topic, 0, end)]).unwrap();
    std::thread::sleep(POLL * 2);
    check("idle", &stamps, end);
    // A replay from the start: as old as the first record.
    commit_offsets(&bootstrap, &reader, &[(&truth_topic, 0, 0)]).unwrap();
    check("replay", &stamps, 0);
    println!("lag seconds (answer, truth) per phase: {worst:?}");
    cancel.cancel();
}
