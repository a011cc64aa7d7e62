//! Broker faults on Apache Kafka brokers: SIGSTOP a broker for 15 s mid-stream, then SIGCONT
//! (past the mirror's 10 s group session when the target stalls); SIGKILL a broker mid-stream
//! and start it again on its log dir; the target down past the session; SIGTERM of the mirror
//! while the target is stalled; a remote topic deleted under the mirror. Every record must
//! arrive; duplicates are counted and printed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{ctl, one_topic_flow, start_mirror, two_clusters, write_config};
use ferry_testkit::{consume_all, create_topic, sample_records, signal, unique, wait_for, Broker, Process, RecordProducer, TestRecord};

const PARTITIONS: i32 = 3;
const PER_PARTITION: usize = 6_000;

/// Produces in the background (about 10 s), stalls `victim` for 15 s once a third is on b, and
/// checks that every record arrives.
fn stall_and_check(name: &str, stall_source: bool) {
    let a = Broker::start(&format!("{name}-a")).unwrap();
    let b = Broker::start(&format!("{name}-b")).unwrap();
    let topic = unique(name);
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    let records = sample_records(PARTITIONS, PER_PARTITION, 1_700_000_000_000);
    let config = write_config(name, &two_clusters(&a, &b, "a->b.enabled = true\n"));
    let mirror: Process = start_mirror(&config, &format!("{name}-mirror"));
    let remote = format!("a.{topic}");
    let total = records.len();

    // A stalled source holds the producer's requests; librdkafka retries them.
    let writer = common::produce_slowly(a.bootstrap(), topic.clone(), records.clone(), 600, Duration::from_millis(300));
    wait_for(Duration::from_secs(60), || {
        (consume_all(&b.bootstrap(), &remote, PARTITIONS, total / 3, Duration::from_secs(1)).unwrap().len() >= total / 3).then_some(())
    })
    .unwrap_or_else(|| panic!("no progress before the stall:\n{}", mirror.output()));

    let victim = if stall_source { &a } else { &b };
    let pid = victim.pid().unwrap();
    signal(pid, "-STOP");
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    signal(pid, "-CONT");
    println!("{name}: broker {} stopped for {:?}", if stall_source { "a (source)" } else { "b (target)" }, stopped.elapsed());
    writer.join().unwrap();

    let resumed = Instant::now();
    let got = common::all_arrived(&b.bootstrap(), &remote, PARTITIONS, &records, total, Duration::from_secs(120), &[&mirror]);
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for r in &got {
        *per_partition.entry(r.partition).or_default() += 1;
    }
    println!(
        "{name}: all {total} records arrived {:?} after SIGCONT; {} duplicates; per partition {per_partition:?}",
        resumed.elapsed(),
        got.len() - total
    );
    // Replication goes on after the stall (a target stalled past the group session timeout
    // cost this process its partitions; it must have rejoined and resumed them).
    let more = sample_records(PARTITIONS, 300, 1_750_000_000_000);
    RecordProducer::new(&a.bootstrap()).unwrap().send_all(&topic, &more).unwrap();
    let after = Instant::now();
    let all = total + more.len();
    wait_for(Duration::from_secs(60), || {
        (consume_all(&b.bootstrap(), &remote, PARTITIONS, all, Duration::from_secs(3)).unwrap().len() >= all).then_some(())
    })
    .unwrap_or_else(|| panic!("{name}: records produced after the stall never arrived:\n{}", mirror.output()));
    println!("{name}: {} more records produced after the stall arrived within {:?}", more.len(), after.elapsed());
    // The log says what happened and to which cluster, and that it recovered.
    let log = mirror.output();
    let cluster = if stall_source { "cluster 'a' (" } else { "cluster 'b' (" };
    let named: Vec<&str> = log.lines().filter(|l| l.contains("WARN") && l.contains(cluster)).collect();
    println!("{name}: {} warning(s) naming {cluster}..., first: {}", named.len(), named.first().unwrap_or(&"-"));
    assert!(!named.is_empty(), "{name}: no warning names the stalled cluster:\n{log}");
    let recovered = ["topic refresh works again", "target cluster acknowledges again", "source cluster delivers again"];
    assert!(recovered.iter().any(|r| log.contains(r)), "{name}: recovery not logged:\n{log}");
    if !stall_source {
        // Records were in flight to the stopped target: the stall itself is reported, and its end.
        assert!(log.contains("target cluster acknowledges nothing"), "{name}: the unacknowledged records were not reported:\n{log}");
        assert!(log.contains("target cluster acknowledges again"), "{name}: the end of the stall was not reported:\n{log}");
    }
}

/// Kills a broker (SIGKILL) mid-stream and starts it again on the same ports and log dir:
/// every record must arrive.
fn restart_and_check(name: &str, restart_source: bool) {
    let mut a = Broker::start(&format!("{name}-a")).unwrap();
    let mut b = Broker::start(&format!("{name}-b")).unwrap();
    let topic = unique(name);
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    let records = sample_records(PARTITIONS, 1_000, 1_700_000_000_000);
    let config = write_config(name, &two_clusters(&a, &b, "a->b.enabled = true\n"));
    let mirror: Process = start_mirror(&config, &format!("{name}-mirror"));
    let remote = format!("a.{topic}");
    let total = records.len();
    let started = Instant::now();
    // Produced before the restart: the restart lands mid-stream, with records in flight.
    RecordProducer::new(&a.bootstrap()).unwrap().send_all(&topic, &records[..total / 2]).unwrap();
    wait_for(Duration::from_secs(60), || {
        (consume_all(&b.bootstrap(), &remote, PARTITIONS, total / 6, Duration::from_secs(1)).unwrap().len() >= total / 6).then_some(())
    })
    .unwrap_or_else(|| panic!("no progress before the restart:\n{}", mirror.output()));
    println!("{name}: {} records on the target {:?} after the start", total / 6, started.elapsed());
    let down = Instant::now();
    let broker = if restart_source { &mut a } else { &mut b };
    broker.restart(Duration::from_secs(5)).unwrap();
    println!("{name}: broker {} killed and back after {:?}", if restart_source { "a (source)" } else { "b (target)" }, down.elapsed());
    RecordProducer::new(&a.bootstrap()).unwrap().send_all(&topic, &records[total / 2..]).unwrap();

    let back = Instant::now();
    let got = common::all_arrived(&b.bootstrap(), &remote, PARTITIONS, &records, total, Duration::from_secs(120), &[&mirror]);
    println!("{name}: all {total} records arrived {:?} after the broker was back; {} duplicates", back.elapsed(), got.len() - total);
    let log = mirror.output();
    let cluster = if restart_source { "cluster=a" } else { "cluster=b" };
    assert!(log.lines().any(|l| l.contains("WARN") && l.contains(cluster)), "{name}: no warning names the restarted cluster:\n{log}");
}

#[test]
fn target_broker_restarted_mid_stream_loses_nothing() {
    restart_and_check("restart-target", false);
}

#[test]
fn source_broker_restarted_mid_stream_loses_nothing() {
    restart_and_check("restart-source", true);
}

#[test]
fn target_broker_stalled_for_15s_loses_nothing() {
    stall_and_check("stall-target", false);
}

#[test]
fn source_broker_stalled_for_15s_loses_nothing() {
    stall_and_check("stall-source", true);
}

/// The target is down for 15 s (killed, then started again on its log dir), past the group
/// session (10 s): the mirror loses its partitions, rejoins when the target is back, resumes
/// from the stored positions, and nothing is lost.
#[test]
fn target_down_past_the_session_timeout_rejoins_and_loses_nothing() {
    let (a, mut b, topic, config) = one_topic_flow("down-target", PARTITIONS);
    let remote = format!("a.{topic}");
    let mirror = start_mirror(&config, "down-target-mirror");
    let producer = RecordProducer::new(&a.bootstrap()).unwrap();
    let first = sample_records(PARTITIONS, 500, 1_700_000_000_000);
    producer.send_all(&topic, &first).unwrap();
    wait_for(Duration::from_secs(60), || {
        (consume_all(&b.bootstrap(), &remote, PARTITIONS, first.len(), Duration::from_secs(2)).unwrap().len() >= first.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing replicated before the outage:\n{}", mirror.output()));

    let down = Instant::now();
    b.kill();
    // Records produced while the target is down wait on the source.
    let second: Vec<TestRecord> = sample_records(PARTITIONS, 1_000, 1_700_000_000_000).split_off(first.len());
    producer.send_all(&topic, &second).unwrap();
    b.restart(Duration::from_secs(15).saturating_sub(down.elapsed())).unwrap();
    let up = Instant::now();
    println!("target down for {:?}", down.elapsed());

    let total = first.len() + second.len();
    let both: Vec<TestRecord> = first.iter().chain(&second).cloned().collect();
    let got = common::all_arrived(&b.bootstrap(), &remote, PARTITIONS, &both, total, Duration::from_secs(90), &[&mirror]);
    println!("all {total} records arrived {:?} after the target came back; {} duplicates", up.elapsed(), got.len() - total);
    // Replication itself must come back: the mirror rejoins and replicates new records.
    let rejoined = wait_for(Duration::from_secs(60), || {
        let log = mirror.output();
        let lost = log.find("partitions lost")?;
        log[lost..].contains("group assigned partitions to this process").then(|| up.elapsed())
    })
    .unwrap_or_else(|| panic!("no rejoin after the expired session:\n{}", mirror.output()));
    let third = sample_records(PARTITIONS, 1_200, 1_700_000_000_000).split_off(total);
    producer.send_all(&topic, &third).unwrap();
    let all = total + third.len();
    wait_for(Duration::from_secs(60), || {
        let got = consume_all(&b.bootstrap(), &remote, PARTITIONS, all, Duration::from_secs(3)).unwrap();
        (got.iter().map(TestRecord::seq).collect::<HashSet<_>>().len() >= all).then_some(())
    })
    .unwrap_or_else(|| panic!("records produced after the rejoin never arrived:\n{}", mirror.output()));
    println!("rejoined {rejoined:?} after the target came back; {} later records arrived", third.len());
    let log = mirror.output();
    assert!(log.contains("target cluster acknowledges nothing"), "the outage was not reported:\n{log}");
}

/// SIGTERM while the target does not answer, with records in flight: the process must not hang
/// on librdkafka's timeouts. It stops within its 30 s grace: exit 0 when what it stored is
/// consistent, 1 (saying why) when the grace ran out.
#[test]
fn sigterm_with_a_stalled_target_stops_in_bounded_time() {
    let a = Broker::start("grace-a").unwrap();
    let b = Broker::start("grace-b").unwrap();
    let topic = unique("grace");
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    let records = sample_records(PARTITIONS, 300, 1_700_000_000_000);
    let (first, second) = records.split_at(300);
    let producer = RecordProducer::new(&a.bootstrap()).unwrap();
    producer.send_all(&topic, first).unwrap();
    let config = write_config("grace", &two_clusters(&a, &b, "a->b.enabled = true\n"));
    let mut mirror = start_mirror(&config, "grace-mirror");
    let remote = format!("a.{topic}");
    wait_for(Duration::from_secs(60), || {
        (consume_all(&b.bootstrap(), &remote, PARTITIONS, first.len(), Duration::from_secs(1)).unwrap().len() >= first.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing replicated:\n{}", mirror.output()));
    // The positions of what was replicated are stored (every 1 s; later under load) before the
    // target stalls: what follows must not lose them.
    let stored = |config: &std::path::Path| -> Vec<Option<i64>> {
        let (_, json, _) = ctl(&["status", "--config", config.to_str().unwrap(), "--json"]);
        let status: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        status["flows"][0]["replicated"][0]["partitions"].as_array().map_or_else(Vec::new, |ps| ps.iter().map(|p| p["position"].as_i64()).collect())
    };
    wait_for(Duration::from_secs(30), || {
        let s = stored(&config);
        (s.len() == PARTITIONS as usize && s.iter().all(|p| p.is_some_and(|p| p >= first.len() as i64 / PARTITIONS as i64))).then_some(())
    })
    .unwrap_or_else(|| panic!("positions never stored: {:?}\n{}", stored(&config), mirror.output()));
    let pid = b.pid().unwrap();
    signal(pid, "-STOP");
    // Records the mirror takes from the source but cannot deliver: in flight, not stored.
    producer.send_all(&topic, second).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let sent = Instant::now();
    let status = mirror.terminate(Duration::from_secs(60));
    let stopped = sent.elapsed();
    signal(pid, "-CONT");
    let status = status.unwrap();
    println!("SIGTERM with the target stopped and records in flight: {status} after {stopped:?}");
    assert!(stopped < Duration::from_secs(35), "took {stopped:?}:\n{}", mirror.output());
    match status.code() {
        Some(0) => {}
        Some(1) => assert!(mirror.output().contains("shutdown did not finish"), "{}", mirror.output()),
        other => panic!("exit {other:?}:\n{}", mirror.output()),
    }

    // Nothing is lost: every stored position is at or before the first record the target did
    // not acknowledge, so a restart re-sends from there.
    let (code, json, err) = ctl(&["status", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}{json}");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let on_target = consume_all(&b.bootstrap(), &remote, PARTITIONS, records.len(), Duration::from_secs(3)).unwrap();
    for p in status["flows"][0]["replicated"][0]["partitions"].as_array().unwrap() {
        let (partition, position) = (p["partition"].as_i64().unwrap() as i32, p["position"].as_i64().unwrap());
        let delivered = on_target.iter().filter(|r| r.partition == partition).count() as i64;
        println!("partition {partition}: stored position {position}, {delivered} records on the target");
        assert!(position <= delivered, "partition {partition}: position {position} passes the {delivered} records delivered");
        assert!(position >= first.len() as i64 / PARTITIONS as i64, "partition {partition}: position {position} lost stored progress");
    }
    // A new process resumes there (Kafka expires the old member's session first) and every
    // record arrives.
    let restarted = start_mirror(&config, "grace-mirror-2");
    let got = common::all_arrived(&b.bootstrap(), &remote, PARTITIONS, &records, records.len(), Duration::from_secs(90), &[&restarted]);
    println!("after a restart all {} records arrived; {} duplicates", records.len(), got.len() - records.len());
}

/// The remote topic is deleted on the target while it is being replicated: Ferry says so
/// loudly (the records it held are gone from the target), creates it again, and records
/// produced afterwards arrive in it.
#[test]
fn a_remote_topic_deleted_under_us_is_reported_and_replication_goes_on() {
    let (a, b, topic, config) = one_topic_flow("deleted", PARTITIONS);
    let mirror = start_mirror(&config, "deleted-mirror");
    let remote = format!("a.{topic}");
    let producer = RecordProducer::new(&a.bootstrap()).unwrap();
    let records = sample_records(PARTITIONS, 200, 1_700_000_000_000);
    let (before, after) = records.split_at(300);
    producer.send_all(&topic, before).unwrap();
    wait_for(Duration::from_secs(60), || {
        (consume_all(&b.bootstrap(), &remote, PARTITIONS, before.len(), Duration::from_secs(1)).unwrap().len() >= before.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("not replicated:\n{}", mirror.output()));

    ferry_testkit::delete_topic(&b.bootstrap(), &remote).unwrap();
    let deleted = Instant::now();
    let reported = wait_for(Duration::from_secs(30), || mirror.output().contains("REMOTE TOPIC DELETED").then(|| deleted.elapsed()))
        .unwrap_or_else(|| panic!("the deletion was not reported:\n{}", mirror.output()));
    let line = mirror.output().lines().find(|l| l.contains("REMOTE TOPIC DELETED")).unwrap().to_string();
    println!("deleted on the target; reported {reported:?} later: {line}");
    assert!(line.contains("ERROR") && line.contains(&remote) && line.contains("cluster=b"), "{line}");

    producer.send_all(&topic, after).unwrap();
    let got = wait_for(Duration::from_secs(60), || {
        let got = consume_all(&b.bootstrap(), &remote, PARTITIONS, after.len(), Duration::from_secs(2)).unwrap();
        let seen: HashSet<(i32, String)> = got.iter().map(TestRecord::seq).collect();
        after.iter().map(TestRecord::seq).all(|k| seen.contains(&k)).then_some(got)
    })
    .unwrap_or_else(|| panic!("records produced after the deletion never arrived:\n{}", mirror.output()));
    println!("the recreated {remote} holds {} records: all {} produced after the deletion", got.len(), after.len());
}

/// A record the target refuses for good (over the remote topic's max.message.bytes) stops its
/// partition: said at once, and 30 s later the partition is reported as stalled (lag waiting,
/// nothing replicated) with the reason, and counted in ferry_mirror_stalled_partitions. The
/// other partition goes on.
#[test]
fn a_partition_the_target_refuses_is_reported_as_stalled_and_counted() {
    let a = Broker::start("refused-a").unwrap();
    let b = Broker::start("refused-b").unwrap();
    let topic = unique("refused");
    create_topic(&a.bootstrap(), &topic, 2).unwrap();
    // The remote topic exists with a small record limit; configs are not synced over it.
    ferry_testkit::create_topic_with(&b.bootstrap(), &format!("a.{topic}"), 2, &[("max.message.bytes", "10000")]).unwrap();
    let big = TestRecord { partition: 0, offset: 0, key: Some(b"big".to_vec()), value: Some(vec![7; 50_000]), headers: vec![], timestamp: Some(1_700_000_000_000) };
    let producer = RecordProducer::new(&a.bootstrap()).unwrap();
    producer.send_all(&topic, &[big]).unwrap();
    let small = sample_records(2, 10, 1_700_000_000_000);
    producer.send_all(&topic, &small).unwrap();
    let config = write_config("refused", &two_clusters(&a, &b, &format!("a->b.enabled = true\na->b.topics = {topic}\nsync.topic.configs.enabled = false\n")));
    let metrics = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let mirror = Process::spawn(common::ferry(), &["mirror", "--config", config.to_str().unwrap(), "--metrics-addr", &metrics], &unique("refused-mirror")).unwrap();
    // Partition 1 replicates; partition 0 stops at the big record.
    let p1: Vec<TestRecord> = small.iter().filter(|r| r.partition == 1).cloned().collect();
    common::all_arrived(&b.bootstrap(), &format!("a.{topic}"), 2, &p1, p1.len(), Duration::from_secs(60), &[&mirror]);
    let stalled = wait_for(Duration::from_secs(60), || mirror.output().lines().find(|l| l.contains("PARTITION STALLED")).map(str::to_string))
        .unwrap_or_else(|| panic!("the stopped partition was never reported as stalled:\n{}", mirror.output()));
    println!("{stalled}");
    assert!(stalled.contains(&format!("topic={topic}")) && stalled.contains("partition=0 ") && stalled.contains("lag=11"), "{stalled}");
    assert!(stalled.contains("failed=") && !stalled.contains("failed=-"), "the reason is not given: {stalled}");
    // Said once for the partition, not once per record of the refused batch.
    assert_eq!(mirror.output().matches("delivery failed permanently").count(), 1, "{}", mirror.output());
    assert_eq!(ferry_testkit::scrape(&metrics, "ferry_mirror_stalled_partitions"), 1.0);
}

/// The per-partition order Ferry guarantees in at-least-once mode (ARCHITECTURE.md, "Order per
/// partition"), with librdkafka's mock cluster failing produce requests:
/// - retriable errors (a leader moving): the idempotent producer retries in order, so the target
///   holds every source record once, in source order;
/// - batches that fail for good (they outlive `message.timeout.ms` while every produce request
///   fails): the relay re-sends from the first failed record, so records may repeat, but none is
///   lost and the last copies are in source order.
#[test]
fn order_per_partition_survives_retried_and_failed_produce_requests() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let seqs = |records: &[TestRecord], p: i32| -> Vec<usize> { records.iter().filter(|r| r.partition == p).map(|r| r.seq().1.parse().unwrap()).collect() };
    for (name, failing, timeout_ms) in [("order-retried", 30, 300_000), ("order-failed", 400, 1_500)] {
        let (a, b, config) = common::mock_pair(name, "orders", PARTITIONS);
        let text = std::fs::read_to_string(&config).unwrap();
        let config = write_config(name, &format!("{text}b.producer.message.timeout.ms = {timeout_ms}\nb.producer.retry.backoff.ms = 20\nb.producer.retry.backoff.max.ms = 20\n"));
        let mirror = start_mirror(&config, name);
        let producer = RecordProducer::new(&a.bootstrap_servers()).unwrap();
        let records = sample_records(PARTITIONS, 600, 1_700_000_000_000);
        let (first, second) = records.split_at(records.len() / 3);
        producer.send_all("orders", first).unwrap();
        common::all_arrived(&b.bootstrap_servers(), "a.orders", PARTITIONS, first, first.len(), Duration::from_secs(60), &[&mirror]);
        b.request_errors(RDKafkaApiKey::Produce, &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; failing]);
        producer.send_all("orders", second).unwrap();
        let got = common::all_arrived(&b.bootstrap_servers(), "a.orders", PARTITIONS, &records, records.len(), Duration::from_secs(90), &[&mirror]);
        let log = mirror.output();
        let want: Vec<usize> = (0..600).collect();
        for p in 0..PARTITIONS {
            let on_target = seqs(&got, p);
            if timeout_ms == 300_000 {
                assert_eq!(on_target, want, "partition {p}: retried requests must keep order without duplicates:\n{log}");
            } else {
                // The last copy of each record, in target order, is the source order.
                let mut seen = HashSet::new();
                let mut last: Vec<usize> = on_target.iter().rev().filter(|s| seen.insert(**s)).copied().collect();
                last.reverse();
                assert_eq!(last, want, "partition {p}: every record, the last copies in source order:\n{log}");
            }
        }
        println!("{name}: {failing} produce requests failed; target holds {} copies of {} records", got.len(), records.len());
        let failed_for_good = log.contains("delivery failed: re-sending from this offset");
        assert_eq!(failed_for_good, timeout_ms != 300_000, "whether a batch failed for good:\n{log}");
        assert!(!log.contains("delivery failed permanently"), "no partition may stop:\n{log}");
    }
}
