//! Broker stalls: SIGSTOP a tansu broker for 15 s mid-stream, then SIGCONT. Every record must
//! arrive; duplicates are counted and printed. (tansu with memory storage loses its data on a
//! restart, so a broker restart is not a fault a test can recover from here.)

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{start_mirror, two_clusters, write_config};
use ferry_testkit::{consume_all, create_topic, sample_records, unique, wait_for, Broker, Process, RecordProducer, TestRecord};

const PARTITIONS: i32 = 3;
const PER_PARTITION: usize = 6_000;

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

fn seq(r: &TestRecord) -> (i32, String) {
    let v = r.headers.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.clone()).unwrap();
    (r.partition, String::from_utf8(v).unwrap())
}

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

    let writer = {
        let (bootstrap, topic, records) = (a.bootstrap(), topic.clone(), records.clone());
        std::thread::spawn(move || {
            let producer = RecordProducer::new(&bootstrap).unwrap();
            for chunk in records.chunks(600) {
                // A stalled source holds the producer's requests; librdkafka retries them.
                producer.send_all(&topic, chunk).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
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
    let got = wait_for(Duration::from_secs(120), || {
        let got = consume_all(&b.bootstrap(), &remote, PARTITIONS, total, Duration::from_secs(3)).unwrap();
        let distinct: HashSet<(i32, String)> = got.iter().map(seq).collect();
        (distinct.len() >= total).then_some(got)
    })
    .unwrap_or_else(|| panic!("{name}: records missing after the stall:\n{}", mirror.output()));
    let distinct: HashSet<(i32, String)> = got.iter().map(seq).collect();
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for r in &got {
        *per_partition.entry(r.partition).or_default() += 1;
    }
    let want: HashSet<(i32, String)> = records.iter().map(seq).collect();
    assert_eq!(distinct, want, "{name}: the target holds other records than the source");
    println!(
        "{name}: all {total} records arrived {:?} after SIGCONT; {} duplicates; per partition {per_partition:?}",
        resumed.elapsed(),
        got.len() - total
    );
    // The log says what happened and to which cluster, and that it recovered.
    let log = mirror.output();
    let cluster = if stall_source { "cluster 'a' (" } else { "cluster 'b' (" };
    let named: Vec<&str> = log.lines().filter(|l| l.contains("WARN") && l.contains(cluster)).collect();
    println!("{name}: {} warning(s) naming {cluster}..., first: {}", named.len(), named.first().unwrap_or(&"-"));
    assert!(!named.is_empty(), "{name}: no warning names the stalled cluster:\n{log}");
    assert!(log.contains("topic refresh works again"), "{name}: recovery not logged:\n{log}");
    if !stall_source {
        // Records were in flight to the stopped target: the stall itself is reported, and its end.
        assert!(log.contains("target cluster acknowledges nothing"), "{name}: the unacknowledged records were not reported:\n{log}");
        assert!(log.contains("target cluster acknowledges again"), "{name}: the end of the stall was not reported:\n{log}");
    }
}

#[test]
fn target_broker_stalled_for_15s_loses_nothing() {
    stall_and_check("stall-target", false);
}

#[test]
fn source_broker_stalled_for_15s_loses_nothing() {
    stall_and_check("stall-source", true);
}
