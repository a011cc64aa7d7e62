//! Switching from MirrorMaker 2 to Ferry with the same file: MirrorMaker 2 (dedicated mode,
//! `connect-mirror` 4.1.1 from Maven Central) copies a topic and stops; Ferry starts on the same
//! properties file and goes on where MM2 stopped (its Connect offsets on the target), checked
//! against the target's last record: no record copied twice, none skipped.

mod common;

use std::time::Duration;

use common::{all_arrived, start_mirror, write_config};
use ferry_testkit::{consume_all, create_topic, kafka_java, list_topics, sample_records, unique, wait_for, Broker, Process, RecordProducer, TestRecord};

const PARTITIONS: i32 = 2;

/// A plain MM2 file, as a MirrorMaker 2 user has it (single-node test clusters: replication
/// factors of 1 for its internal topics).
fn mm2_file(a: &Broker, b: &Broker, topic: &str) -> String {
    format!(
        "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\n\
         a->b.enabled = true\na->b.topics = {topic}\nb->a.enabled = false\n\
         tasks.max = 1\nrefresh.topics.interval.seconds = 1\n{}",
        a.bootstrap(), b.bootstrap(), ferry_testkit::mm2_single_node_settings()
    )
}

#[test]
fn ferry_takes_over_from_mirror_maker_2_without_a_duplicate_or_a_gap() {
    let (a, b) = (Broker::start("mig-a").unwrap(), Broker::start("mig-b").unwrap());
    let topic = unique("orders");
    let remote = format!("a.{topic}");
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    let first = sample_records(PARTITIONS, 100, 1_700_000_000_000);
    let producer = RecordProducer::new(&a.bootstrap()).unwrap();
    producer.send_all(&topic, &first).unwrap();
    let config = write_config("mig", &mm2_file(&a, &b, &topic));

    // MirrorMaker 2 copies the first 200 records and stops cleanly (its last offset commit).
    let mut cmd = kafka_java("512m", "org.apache.kafka.connect.mirror.MirrorMaker").unwrap();
    cmd.arg(&config);
    let mut mm2 = Process::spawn_command(cmd, &std::env::temp_dir().join(format!("{}.log", unique("mig-mm2")))).unwrap();
    all_arrived(&b.bootstrap(), &remote, PARTITIONS, &first, first.len(), Duration::from_secs(120), &[&mm2]);
    let stopped = mm2.terminate(Duration::from_secs(60)).unwrap();
    println!("MirrorMaker 2 copied {} records and stopped ({stopped})", first.len());
    assert!(list_topics(&b.bootstrap()).unwrap().iter().any(|(t, _)| t == "mm2-offsets.a.internal"), "MM2 left no Connect offsets");

    // `ferry mirror --check` says where each partition would resume, before anything runs.
    let check = std::process::Command::new(common::ferry()).args(["mirror", "--config", config.to_str().unwrap(), "--check"]).output().unwrap();
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    println!("{out}");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    for p in 0..PARTITIONS {
        assert!(out.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols == [topic.as_str(), &p.to_string(), "100", "mirrormaker2"]
        }), "partition {p}: {out}");
    }

    // Ferry on the same file: resumes after MM2's last record, partition by partition.
    let more: Vec<TestRecord> = sample_records(PARTITIONS, 150, 1_700_000_000_000).into_iter().filter(|r| r.seq().1.parse::<usize>().unwrap() >= 100).collect();
    producer.send_all(&topic, &more).unwrap();
    let mirror = start_mirror(&config, "mig-ferry");
    let all: Vec<TestRecord> = first.iter().chain(&more).cloned().collect();
    all_arrived(&b.bootstrap(), &remote, PARTITIONS, &all, all.len(), Duration::from_secs(60), &[&mirror]);
    std::thread::sleep(Duration::from_secs(3));
    let on_target = consume_all(&b.bootstrap(), &remote, PARTITIONS, usize::MAX, Duration::from_secs(3)).unwrap();
    let log = mirror.output();
    assert_eq!(on_target.len(), all.len(), "{} duplicates after the takeover:\n{log}", on_target.len() as i64 - all.len() as i64);
    let took_over: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("taking over from MirrorMaker 2: resuming after the last record it copied") && l.contains(&format!("topic={topic} ")))
        .collect();
    println!("{}", took_over.join("\n"));
    assert_eq!(took_over.len(), PARTITIONS as usize, "{log}");
    for p in 0..PARTITIONS {
        assert!(took_over.iter().any(|l| l.contains(&format!("partition={p} ")) && l.contains("position=100")), "{log}");
    }
    // Ferry's own positions are stored from then on: a restart resumes from them, not from MM2's.
    let mut mirror = mirror;
    assert!(mirror.terminate(Duration::from_secs(20)).unwrap().success());
    let again = start_mirror(&config, "mig-ferry-2");
    let extra = sample_records(PARTITIONS, 160, 1_700_000_000_000).into_iter().filter(|r| r.seq().1.parse::<usize>().unwrap() >= 150).collect::<Vec<_>>();
    producer.send_all(&topic, &extra).unwrap();
    let total = all.len() + extra.len();
    wait_for(Duration::from_secs(60), || (consume_all(&b.bootstrap(), &remote, PARTITIONS, total, Duration::from_secs(2)).unwrap().len() >= total).then_some(()))
        .unwrap_or_else(|| panic!("records after the restart never arrived:\n{}", again.output()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(consume_all(&b.bootstrap(), &remote, PARTITIONS, usize::MAX, Duration::from_secs(3)).unwrap().len(), total);
    // (A partition with no new record since the takeover has no position of Ferry's yet and is
    // checked against MM2's again, to the same point.)
    let again_log = again.output();
    assert!(!again_log.lines().any(|l| l.contains("taking over from MirrorMaker 2") && l.contains(&format!("topic={topic} "))), "{again_log}");
}
