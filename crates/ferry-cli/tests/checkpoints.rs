//! Consumer-group checkpoints, exact offset translation, failover and failback: the real
//! `ferry` binary against Apache Kafka brokers on loopback.
//!
//! Remote topics are pre-seeded with "junk" records before replication starts, so target
//! offsets differ from source offsets: a translation that passed offsets through unchanged
//! would make the failed-over consumer re-read records, and junk records are never a valid
//! thing to read.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{ctl, start_mirror, two_clusters, write_config};
use ferry_testkit::{commit_offsets, consume_all, create_topic, produce, sample_records, unique, wait_for, Broker, GroupConsumer, TestRecord};

const PARTITIONS: i32 = 3;

fn seq(r: &TestRecord) -> i64 {
    let h = r.headers.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.clone()).expect("every test record has a seq header");
    String::from_utf8(h).unwrap().parse().unwrap_or_else(|_| panic!("a junk record was read: {r:?}"))
}

fn junk(per_partition: usize) -> Vec<TestRecord> {
    (0..per_partition)
        .flat_map(|_| (0..PARTITIONS).map(|p| TestRecord {
            partition: p,
            offset: -1,
            key: Some(b"junk".to_vec()),
            value: Some(b"junk".to_vec()),
            headers: vec![("seq".into(), Some(b"junk".to_vec()))],
            timestamp: None,
        }))
        .collect()
}

/// What a group read, by logical stream (`<origin cluster>/<topic>`) and partition: seq numbers
/// in read order.
#[derive(Default)]
struct Ledger(BTreeMap<(String, i32), Vec<i64>>);

impl Ledger {
    fn add(&mut self, stream: &str, r: &TestRecord) {
        self.0.entry((stream.to_string(), r.partition)).or_default().push(seq(r));
    }

    /// Every partition of `stream` read exactly `0..per_partition`, in order: prints and checks
    /// duplicates and misses per partition.
    fn check_exact(&self, stream: &str, per_partition: i64) {
        for p in 0..PARTITIONS {
            let got = self.0.get(&(stream.to_string(), p)).cloned().unwrap_or_default();
            let mut seen = HashMap::new();
            for s in &got {
                *seen.entry(*s).or_insert(0) += 1;
            }
            let duplicates: usize = seen.values().map(|n| n - 1).sum();
            let missing = (0..per_partition).filter(|s| !seen.contains_key(s)).count();
            println!("{stream} partition {p}: read {} records, {duplicates} duplicates, {missing} missing", got.len());
            assert_eq!((duplicates, missing), (0, 0), "{stream} partition {p}");
            assert_eq!(got, (0..per_partition).collect::<Vec<_>>(), "{stream} partition {p}: out of order");
        }
    }
}

/// Reads until at least `total` records arrived and every partition of every topic gave one.
fn read_some(c: &GroupConsumer, topics: &[&str], total: usize) -> Vec<(String, TestRecord)> {
    c.read_until(Duration::from_secs(60), |got| {
        got.len() >= total
            && topics.iter().all(|t| (0..PARTITIONS).all(|p| got.iter().any(|(tt, r)| tt == t && r.partition == p)))
    })
    .unwrap()
}

/// Reads until `total` records arrived, then 2 s more to catch any extra (a duplicate).
fn read_rest(c: &GroupConsumer, total: usize) -> Vec<(String, TestRecord)> {
    let mut got = c.read_until(Duration::from_secs(60), |got| got.len() >= total).unwrap();
    got.extend(c.read_until(Duration::from_secs(2), |_| false).unwrap());
    got
}

#[derive(Debug)]
struct Row {
    topic: String,
    partition: i32,
    offset: i64,
    source_topic: String,
    source_offset: i64,
}

/// `ferry ctl offsets export --format json`, parsed; empty while there are no checkpoints.
fn export(config: &str, source: &str, target: &str, group: &str) -> Vec<Row> {
    let (code, out, _) = ctl(&["offsets", "export", "--config", config, "--source", source, "--target", target, "--group", group, "--format", "json"]);
    if code != 0 {
        return Vec::new();
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter()
        .map(|v| Row {
            topic: v["topic"].as_str().unwrap().to_string(),
            partition: v["partition"].as_i64().unwrap() as i32,
            offset: v["offset"].as_i64().unwrap(),
            source_topic: v["source_topic"].as_str().unwrap().to_string(),
            source_offset: v["source_offset"].as_i64().unwrap(),
        })
        .collect()
}

/// Waits until the checkpoints of `group` match its committed offsets on the source.
fn wait_for_checkpoints(config: &str, source: &str, target: &str, group: &str, committed: &[(String, i32, Option<i64>)]) -> Vec<Row> {
    let want: Vec<(String, i32, i64)> = committed.iter().map(|(t, p, o)| (t.clone(), *p, o.expect("committed"))).collect();
    wait_for(Duration::from_secs(30), || {
        let rows = export(config, source, target, group);
        let all = want.iter().all(|(t, p, o)| rows.iter().any(|r| &r.source_topic == t && r.partition == *p && r.source_offset == *o));
        all.then_some(rows)
    })
    .unwrap_or_else(|| panic!("checkpoints of {group} for {source}->{target} never matched {want:?}; last export: {:?}", export(config, source, target, group)))
}

#[test]
fn a_group_fails_over_and_back_without_a_lost_or_repeated_record() {
    let (a, b) = (Broker::start("a").unwrap(), Broker::start("b").unwrap());
    let topic = unique("orders");
    let (on_a, on_b) = (format!("a.{topic}"), format!("b.{topic}"));
    let per_partition = 1000usize;
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    let (first_half, second_half): (Vec<TestRecord>, Vec<TestRecord>) =
        sample_records(PARTITIONS, per_partition, 1_700_000_000_000).into_iter().partition(|r| seq(r) < per_partition as i64 / 2);
    produce(&a.bootstrap(), &topic, &first_half).unwrap();
    // Remote topics exist before replication and hold other records: offsets differ by 50 / 30.
    create_topic(&b.bootstrap(), &on_a, PARTITIONS).unwrap();
    produce(&b.bootstrap(), &on_a, &junk(50)).unwrap();
    create_topic(&a.bootstrap(), &on_b, PARTITIONS).unwrap();
    produce(&a.bootstrap(), &on_b, &junk(30)).unwrap();

    let config = write_config("failover", &two_clusters(&a, &b,
        "a->b.enabled = true\nb->a.enabled = true\nrefresh.groups.interval.seconds = 1\nemit.checkpoints.interval.seconds = 1\n"));
    let config = config.to_str().unwrap();
    let mut mirror = start_mirror(std::path::Path::new(config), "mirror-failover");
    let total = PARTITIONS as usize * per_partition;
    let replicated = first_half.len() + 150;
    assert_eq!(consume_all(&b.bootstrap(), &on_a, PARTITIONS, replicated, Duration::from_secs(60)).unwrap().len(), replicated, "{}", mirror.output());

    // A restart between the offset syncs and the checkpoints: translation of offsets synced
    // before the restart must come from the stored history.
    mirror.terminate(Duration::from_secs(20)).unwrap();
    let mirror = start_mirror(std::path::Path::new(config), "mirror-failover-2");

    // A group far behind: commits near the start after everything was replicated.
    let laggard = unique("laggard");
    commit_offsets(&a.bootstrap(), &laggard, &[(&topic, 0, 10), (&topic, 1, 11), (&topic, 2, 12)]).unwrap();

    // The group reads half of every partition on a (all there is so far); then the rest arrives.
    let group = unique("app");
    let mut ledger = Ledger::default();
    let c = GroupConsumer::new(&a.bootstrap(), &group, &[&topic]).unwrap();
    for (_, r) in read_some(&c, &[&topic], first_half.len()) {
        ledger.add("a", &r);
    }
    c.commit().unwrap();
    let committed_a = c.committed(&[(&topic, 0), (&topic, 1), (&topic, 2)]).unwrap();
    c.close();
    println!("group committed on a: {committed_a:?}");
    produce(&a.bootstrap(), &topic, &second_half).unwrap();

    let lag_rows = wait_for_checkpoints(config, "a", "b", &laggard, &[(topic.clone(), 0, Some(10)), (topic.clone(), 1, Some(11)), (topic.clone(), 2, Some(12))]);
    for r in &lag_rows {
        assert_eq!((r.topic.as_str(), r.offset), (on_a.as_str(), r.source_offset + 50), "laggard {r:?}: exact translation of an old offset");
    }
    let rows = wait_for_checkpoints(config, "a", "b", &group, &committed_a);
    for r in &rows {
        assert_eq!(r.offset, r.source_offset + 50, "{r:?}");
    }

    // CSV export: topic,partition,offset
    let (code, csv, err) = ctl(&["offsets", "export", "--config", config, "--source", "a", "--target", "b", "--group", &group]);
    assert_eq!(code, 0, "{err}");
    for r in &rows {
        assert!(csv.lines().any(|l| l == format!("{},{},{}", on_a, r.partition, r.offset)), "csv lacks {r:?}:\n{csv}");
    }

    // Failover is refused while the group is active on b.
    let squatter = GroupConsumer::new(&b.bootstrap(), &group, &[&on_a]).unwrap();
    // assigned (and so a member) once it reads anything (junk: it has no offsets on b yet)
    squatter.read_until(Duration::from_secs(30), |got| !got.is_empty()).unwrap();
    let (code, out, err) = ctl(&["failover", "--config", config, "--group", &group, "--from", "a", "--to", "b"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("refused") && err.contains("active member"), "{err}");
    println!("failover while active: {}", err.trim());
    squatter.close();
    wait_for(Duration::from_secs(15), || {
        let (code, out, err) = ctl(&["failover", "--config", config, "--group", &group, "--from", "a", "--to", "b"]);
        (code == 0).then(|| println!("{out}")).or_else(|| { println!("retrying failover: {}", err.trim()); None })
    })
    .expect("failover succeeds once the group is empty");

    // On b: the rest of a's records, plus new records produced on b (producers switched). The
    // group reads everything there is so far; more arrives on b afterwards.
    create_topic(&b.bootstrap(), &topic, PARTITIONS).unwrap();
    let new_per_partition = 200usize;
    let (b_first, b_second): (Vec<TestRecord>, Vec<TestRecord>) =
        sample_records(PARTITIONS, new_per_partition, 1_750_000_000_000).into_iter().partition(|r| seq(r) < 120);
    produce(&b.bootstrap(), &topic, &b_first).unwrap();
    let on_b_count = 90 + b_first.len();
    assert_eq!(consume_all(&a.bootstrap(), &on_b, PARTITIONS, on_b_count, Duration::from_secs(30)).unwrap().len(), on_b_count, "b->a replicates");
    let c = GroupConsumer::new(&b.bootstrap(), &group, &[&on_a, &topic]).unwrap();
    let read_on_a: usize = ledger.0.values().map(Vec::len).sum();
    let remaining_a = total - read_on_a;
    let got = c.read_until(Duration::from_secs(60), |got| got.len() >= remaining_a + b_first.len()).unwrap();
    for (t, r) in &got {
        ledger.add(if *t == on_a { "a" } else { "b" }, r);
    }
    c.commit().unwrap();
    let committed_b = c.committed(&[(&on_a, 0), (&on_a, 1), (&on_a, 2), (&topic, 0), (&topic, 1), (&topic, 2)]).unwrap();
    c.close();
    println!("group committed on b: {committed_b:?}");
    produce(&b.bootstrap(), &topic, &b_second).unwrap();

    // Fail back along b->a: a.<topic> positions go back to <topic> on a; <topic> on b to b.<topic> on a.
    let rows = wait_for_checkpoints(config, "b", "a", &group, &committed_b);
    for r in &rows {
        if r.source_topic == on_a {
            assert_eq!((r.topic.as_str(), r.offset), (topic.as_str(), r.source_offset - 50), "reverse translation {r:?}");
        } else {
            assert_eq!((r.topic.as_str(), r.offset), (on_b.as_str(), r.source_offset + 30), "forward translation {r:?}");
        }
    }
    let (code, out, err) = ctl(&["failback", "--config", config, "--group", &group, "--from", "b", "--to", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");

    let read_b_new: usize = ledger.0.iter().filter(|((s, _), _)| s == "b").map(|(_, v)| v.len()).sum();
    let read_a_all: usize = ledger.0.iter().filter(|((s, _), _)| s == "a").map(|(_, v)| v.len()).sum();
    let expected = (total - read_a_all) + (PARTITIONS as usize * new_per_partition - read_b_new);
    let c = GroupConsumer::new(&a.bootstrap(), &group, &[&topic, &on_b]).unwrap();
    let got = read_rest(&c, expected);
    for (t, r) in &got {
        ledger.add(if *t == topic { "a" } else { "b" }, r);
    }
    c.close();
    println!("after failback: read {} records on a (expected {expected})", got.len());
    ledger.check_exact("a", per_partition as i64);
    ledger.check_exact("b", new_per_partition as i64);
    println!("MM2 would re-read up to offset.lag.max = 100 records per partition per move; Ferry: 0");
    drop(mirror);
}

#[test]
fn group_offset_sync_commits_translated_offsets_but_never_rewinds_or_touches_an_active_group() {
    let (a, b) = (Broker::start("a").unwrap(), Broker::start("b").unwrap());
    let topic = unique("t");
    let remote = format!("a.{topic}");
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    create_topic(&b.bootstrap(), &remote, PARTITIONS).unwrap();
    produce(&b.bootstrap(), &remote, &junk(20)).unwrap();
    produce(&a.bootstrap(), &topic, &sample_records(PARTITIONS, 300, 1_700_000_000_000)).unwrap();
    let config = write_config("groupsync", &two_clusters(&a, &b,
        "a->b.enabled = true\nrefresh.groups.interval.seconds = 1\nsync.group.offsets.enabled = true\n"));
    let mirror = start_mirror(&config, "mirror-groupsync");
    assert_eq!(consume_all(&b.bootstrap(), &remote, PARTITIONS, 960, Duration::from_secs(60)).unwrap().len(), 960, "{}", mirror.output());

    let (fresh, ahead, active) = (unique("fresh"), unique("ahead"), unique("active"));
    // `ahead` already consumed further on b; `active` has a live member on b.
    commit_offsets(&b.bootstrap(), &ahead, &[(&remote, 0, 250), (&remote, 1, 250), (&remote, 2, 250)]).unwrap();
    let member = GroupConsumer::new(&b.bootstrap(), &active, &[&remote]).unwrap();
    member.read_until(Duration::from_secs(30), |got| got.len() >= 3).unwrap();
    member.commit().unwrap();
    let parts = [(remote.as_str(), 0), (remote.as_str(), 1), (remote.as_str(), 2)];
    let active_before = member.committed(&parts).unwrap();
    for g in [&fresh, &ahead, &active] {
        commit_offsets(&a.bootstrap(), g, &[(&topic, 0, 100), (&topic, 1, 101), (&topic, 2, 102)]).unwrap();
    }

    let on_b = |group: &str| GroupConsumer::new(&b.bootstrap(), group, &[]).and_then(|c| c.committed(&parts)).unwrap();
    let synced = wait_for(Duration::from_secs(30), || {
        let c = on_b(&fresh);
        (c.iter().map(|(_, _, o)| *o).collect::<Vec<_>>() == vec![Some(120), Some(121), Some(122)]).then_some(c)
    });
    assert!(synced.is_some(), "fresh group synced to the translated offsets (source + 20); has {:?}\n{}", on_b(&fresh), mirror.output());
    // Checkpoints for the other two exist (each group is found by its own refresh), and a few
    // sync intervals pass.
    for g in [&ahead, &active] {
        let export = || common::ctl(&["offsets", "export", "--config", config.to_str().unwrap(), "--source", "a", "--target", "b", "--group", g]);
        wait_for(Duration::from_secs(20), || (export().0 == 0).then_some(())).unwrap_or_else(|| panic!("no checkpoints of {g}: {}", export().2));
    }
    std::thread::sleep(Duration::from_secs(3));
    let ahead_now: Vec<Option<i64>> = on_b(&ahead).iter().map(|(_, _, o)| *o).collect();
    assert_eq!(ahead_now, vec![Some(250); 3], "a group further ahead on the target is never rewound");
    assert_eq!(member.committed(&parts).unwrap(), active_before, "an active group on the target is left alone");
    println!("fresh: synced to 120/121/122; ahead: kept at 250; active: kept at {active_before:?}");
    member.close();
    drop(mirror);
}

/// A transactional source with aborted transactions: the remote topic holds exactly the
/// committed records (a read_committed reader sees nothing else), and group offsets translate
/// exactly across the commit markers and the aborted records' gaps.
#[test]
fn a_transactional_source_replicates_committed_records_and_groups_translate_across_gaps() {
    let (a, b, topic, config) = common::one_topic_flow_with("ledger", 1, "refresh.groups.interval.seconds = 1\nemit.checkpoints.interval.seconds = 1\n");
    let remote = format!("a.{topic}");
    // seq 0..30 committed in three transactions, 15 records aborted in two; source offsets:
    // 0-9 seq 0-9, 10 marker, 11-20 aborted, 21 marker, 22-31 seq 10-19, 32 marker,
    // 33-37 aborted, 38 marker, 39-48 seq 20-29, 49 marker.
    let committed: Vec<TestRecord> = sample_records(1, 30, 1_700_000_000_000);
    let aborted: Vec<TestRecord> = sample_records(1, 10, 1_700_000_100_000).into_iter().map(|mut r| {
        r.headers[0].1 = Some(b"aborted".to_vec());
        r
    }).collect();
    let txn = ferry_testkit::TxnProducer::new(&a.bootstrap()).unwrap();
    txn.transaction(&topic, &committed[0..10], true).unwrap();
    txn.transaction(&topic, &aborted, false).unwrap();
    txn.transaction(&topic, &committed[10..20], true).unwrap();
    txn.transaction(&topic, &aborted[0..5], false).unwrap();
    txn.transaction(&topic, &committed[20..30], true).unwrap();
    assert_eq!(ferry_testkit::watermarks(&a.bootstrap(), &topic, 0).unwrap(), (0, 50));

    let config = config.to_str().unwrap();
    let mirror = start_mirror(std::path::Path::new(config), "mirror-txn");
    let got = common::all_arrived(&b.bootstrap(), &remote, 1, &committed, committed.len(), Duration::from_secs(60), &[&mirror]);
    let seqs: Vec<i64> = got.iter().map(seq).collect();
    assert_eq!(seqs, (0..30).collect::<Vec<_>>(), "exactly the committed records, in order");

    // Three groups on a: read 15 records and committed (offset 27, inside the second committed
    // transaction); read everything (offset at the last marker or past it); committed by hand
    // inside the first abort gap (offset 15).
    let (half, all, gap) = (unique("half"), unique("all"), unique("gap"));
    let c = GroupConsumer::new(&a.bootstrap(), &half, &[&topic]).unwrap();
    let read = c.read_until(Duration::from_secs(30), |got| got.len() >= 15).unwrap();
    assert_eq!(read.len(), 15);
    c.commit().unwrap();
    let half_committed = c.committed(&[(&topic, 0)]).unwrap();
    c.close();
    let c = GroupConsumer::new(&a.bootstrap(), &all, &[&topic]).unwrap();
    assert_eq!(c.read_until(Duration::from_secs(30), |got| got.len() >= 30).unwrap().len(), 30);
    c.commit().unwrap();
    let all_committed = c.committed(&[(&topic, 0)]).unwrap();
    c.close();
    commit_offsets(&a.bootstrap(), &gap, &[(&topic, 0, 15)]).unwrap();
    println!("committed on a: half {half_committed:?}, all {all_committed:?}, gap 15");
    assert_eq!(half_committed[0].2, Some(27));

    // On b the remote topic is dense: seq i is at offset i.
    for (group, committed, want) in [(&half, half_committed, 15), (&all, all_committed, 30), (&gap, vec![(topic.clone(), 0, Some(15))], 10)] {
        let rows = wait_for_checkpoints(config, "a", "b", group, &committed);
        println!("{group}: source offset {} -> target offset {}", rows[0].source_offset, rows[0].offset);
        assert_eq!((rows[0].topic.as_str(), rows[0].offset), (remote.as_str(), want), "{group}: {rows:?}");
    }

    // A real consumer of the failed-over group resumes at the next committed record.
    let (code, out, err) = ctl(&["failover", "--config", config, "--group", &half, "--from", "a", "--to", "b"]);
    assert_eq!(code, 0, "{out}{err}");
    let c = GroupConsumer::new(&b.bootstrap(), &half, &[&remote]).unwrap();
    let rest = read_rest(&c, 15);
    let seqs: Vec<i64> = rest.iter().map(|(_, r)| seq(r)).collect();
    assert_eq!(seqs, (15..30).collect::<Vec<_>>(), "after failover the group reads seq 15..30 exactly");
    c.close();
    drop(mirror);
}
