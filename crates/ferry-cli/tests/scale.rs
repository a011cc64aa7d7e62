//! Several `ferry mirror` processes share one flow through Kafka's group protocol, on Apache
//! Kafka brokers (its coordinator is the one users run).
//!
//! - Processes join and leave gracefully while records flow. Each owns about half, then a third;
//!   the third takes only what it must (cooperative, sticky); SIGTERM hands the partitions over;
//!   every record arrives and a handover re-sends nothing (0 duplicates, asserted).
//! - `kill -9` of a process mid-stream: the survivor takes over after the session timeout and
//!   every record arrives; the takeover time on Kafka's coordinator is printed and bounded.
//! - A soak with periodic kills.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ctl, one_topic_flow, produce_slowly, start_mirror};
use ferry_testkit::{consume_all, sample_records, wait_for, Process, RecordProducer, TestRecord};

const PARTITIONS: i32 = 24;

/// Waits until the remote topic holds every record; returns (records on the target, duplicates).
fn all_arrived(bootstrap: &str, remote: &str, records: &[TestRecord], logs: &[&Process]) -> (usize, usize) {
    let total = records.len();
    let got = common::all_arrived(bootstrap, remote, PARTITIONS, records, total, Duration::from_secs(120), logs);
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for r in &got {
        *per_partition.entry(r.partition).or_default() += 1;
    }
    let per_source = total / PARTITIONS as usize;
    let duplicated: BTreeMap<i32, usize> = per_partition.into_iter().filter(|&(_, n)| n > per_source).map(|(p, n)| (p, n - per_source)).collect();
    if !duplicated.is_empty() {
        println!("duplicates per partition: {duplicated:?}");
    }
    (got.len(), got.len() - total)
}

/// Partitions per owning process (by pid), from `ferry ctl status --json`.
fn owners(config: &Path) -> BTreeMap<u32, BTreeSet<i32>> {
    let (code, json, err) = ctl(&["status", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "ctl status: {err}{json}");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut out: BTreeMap<u32, BTreeSet<i32>> = BTreeMap::new();
    for t in status["flows"][0]["replicated"].as_array().unwrap() {
        for p in t["partitions"].as_array().unwrap() {
            if let Some(owner) = p["owner"].as_str() {
                // host:pid:start-ms
                let pid: u32 = owner.rsplit(':').nth(1).unwrap().parse().unwrap();
                out.entry(pid).or_default().insert(p["partition"].as_i64().unwrap() as i32);
            }
        }
    }
    out
}

/// Waits until `status` shows exactly these processes owning all partitions between them,
/// balanced (the sticky assignor's shares differ by at most one; a cooperative rebalance
/// passes through unbalanced states on its way).
fn wait_owned_by(config: &Path, pids: &[u32], logs: &[&Process]) -> BTreeMap<u32, BTreeSet<i32>> {
    let want: BTreeSet<u32> = pids.iter().copied().collect();
    wait_for(Duration::from_secs(60), || {
        let o = owners(config);
        let covered: usize = o.values().map(BTreeSet::len).sum();
        let (min, max) = (o.values().map(BTreeSet::len).min().unwrap_or(0), o.values().map(BTreeSet::len).max().unwrap_or(0));
        (o.keys().copied().collect::<BTreeSet<_>>() == want && covered == PARTITIONS as usize && max - min <= 1).then_some(o)
    })
    .unwrap_or_else(|| {
        let logs: Vec<String> = logs.iter().map(|p| p.output()).collect();
        panic!("ownership never settled on {want:?}: {:?}\n{}", owners(config), logs.join("\n-----\n"))
    })
}

fn sizes(o: &BTreeMap<u32, BTreeSet<i32>>) -> Vec<usize> {
    o.values().map(BTreeSet::len).collect()
}

/// Two processes join one after another, then a third joins; the last one leaves (SIGTERM)
/// while records flow from `topic` on `source`. Returns the duplicates on the target and the
/// handover commits the broker refused.
fn join_and_leave(source: &str, target: &str, config: &Path, topic: &str) -> (usize, usize) {
    let remote = format!("a.{topic}");
    // About 25 s of production: joins and leaves happen while records flow.
    let records = sample_records(PARTITIONS, 1_000, 1_700_000_000_000);
    let writer = produce_slowly(source.to_string(), topic.to_string(), records.clone(), 1_200, Duration::from_millis(1_200));

    let first = start_mirror(config, "scale-1");
    let alone = wait_owned_by(config, &[first.pid()], &[&first]);
    println!("one process owns {:?} partitions", sizes(&alone));

    let second = start_mirror(config, "scale-2");
    let joined = Instant::now();
    let two = wait_owned_by(config, &[first.pid(), second.pid()], &[&first, &second]);
    println!("two processes own {:?} partitions ({:?} after the second started)", sizes(&two), joined.elapsed());

    let third = start_mirror(config, "scale-3");
    let three = wait_owned_by(config, &[first.pid(), second.pid(), third.pid()], &[&first, &second, &third]);
    println!("three processes own {:?} partitions", sizes(&three));
    // Incremental and sticky: the first two keep what they had except what the third took.
    let regained: Vec<u32> = [first.pid(), second.pid()].into_iter().filter(|pid| !three[pid].is_subset(&two[pid])).collect();
    let moved: usize = [first.pid(), second.pid()].iter().map(|pid| two[pid].difference(&three[pid]).count()).sum();
    assert!(regained.is_empty(), "processes {regained:?} were given partitions they did not own: {two:?} -> {three:?}");
    assert_eq!(moved, three[&third.pid()].len());
    // Whoever gave partitions away handed them over (runs stored, positions committed under its
    // generation): Kafka accepts a revoking member's commit while the others rejoin.
    for p in [&first, &second] {
        let log = p.output();
        assert!(log.lines().filter(|l| l.contains("partitions handed over to another process")).all(|l| l.contains("committed=true")), "{log}");
    }
    println!("{moved} partitions moved; the other {} kept replicating where they were", PARTITIONS as usize - moved);
    leave(third, &[&first, &second], target, &remote, &records, writer)
}

/// SIGTERM of `leaving`: it exits 0 within seconds and `staying` take its partitions over;
/// then every record must arrive. Returns the duplicates and the refused handover commits.
fn leave(mut leaving: Process, staying: &[&Process], target: &str, remote: &str, records: &[TestRecord], writer: std::thread::JoinHandle<()>) -> (usize, usize) {
    let assigned_before: usize = staying.iter().map(|p| p.output().matches("group assigned partitions to this process").count()).sum();
    let stopped = Instant::now();
    let status = leaving.terminate(Duration::from_secs(15)).unwrap();
    println!("SIGTERM: the leaving process exited {status} after {:?}", stopped.elapsed());
    assert!(status.success(), "{}", leaving.output());
    assert!(stopped.elapsed() < Duration::from_secs(10), "shutdown took {:?}", stopped.elapsed());
    let mut logs: Vec<&Process> = staying.to_vec();
    logs.push(&leaving);
    let pids: Vec<u32> = staying.iter().map(|p| p.pid()).collect();
    let taken = wait_for(Duration::from_secs(30), || {
        let assigned: usize = staying.iter().map(|p| p.output().matches("group assigned partitions to this process").count()).sum();
        (assigned > assigned_before).then(|| stopped.elapsed())
    })
    .unwrap_or_else(|| panic!("nobody took the partitions over:\n{}", staying.iter().map(|p| p.output()).collect::<Vec<_>>().join("\n-----\n")));
    println!("after the leave: the staying process(es) {pids:?} were given its partitions {taken:?} after SIGTERM");

    writer.join().unwrap();
    let (on_target, duplicates) = all_arrived(target, remote, records, &logs);
    println!("all {} records arrived ({on_target} on the target): {duplicates} duplicates across the handovers", records.len());
    let refused = logs.iter().map(|p| p.output().matches("committed=false").count()).sum();
    (duplicates, refused)
}

#[test]
fn processes_join_and_leave_and_handovers_are_exact() {
    let (a, b, topic, config) = one_topic_flow("shared", PARTITIONS);
    let (duplicates, refused) = join_and_leave(&a.bootstrap(), &b.bootstrap(), &config, &topic);
    assert_eq!(refused, 0, "Kafka refused a handover commit");
    assert_eq!(duplicates, 0, "every handover was committed, yet records were re-sent");
}

/// How many partitions a process was given, from its log.
fn assigned_in_log(p: &Process) -> usize {
    p.output()
        .lines()
        .filter(|l| l.contains("group assigned partitions to this process"))
        .filter_map(|l| l.split("partitions=").nth(1).and_then(|n| n.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<usize>().ok()))
        .sum()
}

#[test]
fn a_killed_process_is_taken_over_within_the_session_timeout() {
    let (a, b, topic, config) = one_topic_flow("takeover", PARTITIONS);
    let remote = format!("a.{topic}");
    let records = sample_records(PARTITIONS, 600, 1_700_000_000_000);
    let writer = produce_slowly(a.bootstrap(), topic.clone(), records.clone(), 960, Duration::from_millis(1_000));

    let mut first = start_mirror(&config, "takeover-1");
    let second = start_mirror(&config, "takeover-2");
    let shares = wait_owned_by(&config, &[first.pid(), second.pid()], &[&first, &second]);
    println!("two processes own {:?} partitions", sizes(&shares));

    // Killed in a steady state: both own their share and store positions every second.
    std::thread::sleep(Duration::from_secs(5));
    // The survivor is done when the group has given it the killed process's share as well.
    let owed = assigned_in_log(&second) + shares[&first.pid()].len();
    first.kill_9();
    let killed = Instant::now();
    let took = wait_for(Duration::from_secs(40), || (assigned_in_log(&second) >= owed).then(|| killed.elapsed()))
        .unwrap_or_else(|| panic!("no takeover after kill -9:\n{}", second.output()));
    // Kafka's coordinator moves the partitions once the session times out (10 s) and the
    // survivor rejoins.
    println!("kill -9: the survivor owned all {PARTITIONS} partitions {took:?} after the kill (session timeout 10 s)");
    assert!(took < Duration::from_secs(25), "takeover took {took:?}");

    writer.join().unwrap();
    let (on_target, duplicates) = all_arrived(&b.bootstrap(), &remote, &records, &[&first, &second]);
    println!("all {} records arrived ({on_target} on the target): {duplicates} duplicates re-sent after kill -9", records.len());
    // What a killed process re-sends is what it replicated after its last stored position:
    // positions are stored every second (offset.flush.interval.ms), and records arrive at 960/s,
    // so at most about a second's worth (plus the batch being stored when it died).
    assert!(duplicates <= 2 * 960, "{duplicates} duplicates after kill -9: more than the 1 s store interval's worth");
}

/// A bounded soak: records flow for `FERRY_SOAK_SECS` (default 60: two kills) while a process is killed
/// (`kill -9`) and a new one started every 30 s; afterwards every record is on the target.
/// 6 partitions.
#[test]
fn soak_with_periodic_kills_loses_nothing() {
    const SOAK_PARTITIONS: i32 = 6;
    let secs: u64 = std::env::var("FERRY_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let (a, b, topic, config) = one_topic_flow("soak", SOAK_PARTITIONS);
    // 300 records/s for `secs` seconds.
    let per_partition = (secs as usize * 300) / SOAK_PARTITIONS as usize;
    let records = sample_records(SOAK_PARTITIONS, per_partition, 1_700_000_000_000);
    let chunks = (secs * 10) as usize;
    let writer = produce_slowly(a.bootstrap(), topic.clone(), records.clone(), records.len().div_ceil(chunks), Duration::from_millis(100));

    let started = Instant::now();
    let mut live = vec![start_mirror(&config, "soak-0"), start_mirror(&config, "soak-1")];
    let mut killed = Vec::new();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(secs.saturating_sub(20)) {
        std::thread::sleep(Duration::from_secs(30).min(Duration::from_secs(secs)));
        let mut victim = live.remove(0);
        victim.kill_9();
        kills += 1;
        killed.push(victim);
        live.push(start_mirror(&config, &format!("soak-{}", kills + 1)));
        println!("soak: {:?}: kill -9 #{kills}, a new process started", started.elapsed());
    }
    writer.join().unwrap();
    let total = records.len();
    let mut logs: Vec<&Process> = live.iter().collect();
    logs.extend(killed.iter());
    let got = common::all_arrived(&b.bootstrap(), &format!("a.{topic}"), SOAK_PARTITIONS, &records, total, Duration::from_secs(120), &logs);
    println!(
        "soak: {:?}, {kills} kills: all {total} records arrived; {} on the target ({} duplicates re-sent after kills)",
        started.elapsed(),
        got.len(),
        got.len() - total
    );
}

/// Partitions taken over while the flow is quiet (no offset runs written since this process
/// started) start at once: reading the runs to their end must not wait for records that were
/// read already.
#[test]
fn partitions_taken_over_on_a_quiet_flow_start_at_once() {
    let (a, b, topic, config) = one_topic_flow("quiet", 4);
    let remote = format!("a.{topic}");
    let producer = RecordProducer::new(&a.bootstrap()).unwrap();
    let first = sample_records(4, 100, 1_700_000_000_000);
    producer.send_all(&topic, &first).unwrap();
    let mut earlier = start_mirror(&config, "quiet-0");
    wait_for(Duration::from_secs(60), || (consume_all(&b.bootstrap(), &remote, 4, 400, Duration::from_secs(2)).unwrap().len() >= 400).then_some(()))
        .unwrap_or_else(|| panic!("not replicated:\n{}", earlier.output()));
    assert!(earlier.terminate(Duration::from_secs(15)).unwrap().success());

    // The offset runs now hold history; the next processes read it at start-up, then nothing new.
    let stays = start_mirror(&config, "quiet-1");
    let assigned = |p: &Process| p.output().matches("group assigned partitions to this process").count();
    let started = |p: &Process| p.output().matches("replicating new partitions").count();
    wait_for(Duration::from_secs(30), || (started(&stays) >= 1).then_some(())).unwrap_or_else(|| panic!("{}", stays.output()));
    let mut leaves = start_mirror(&config, "quiet-2");
    wait_for(Duration::from_secs(30), || (started(&leaves) >= 1).then_some(())).unwrap_or_else(|| panic!("{}", leaves.output()));
    let (given, running) = (assigned(&stays), started(&stays));

    let left = Instant::now();
    assert!(leaves.terminate(Duration::from_secs(15)).unwrap().success());
    let took = wait_for(Duration::from_secs(20), || (assigned(&stays) > given && started(&stays) > running).then(|| left.elapsed()))
        .unwrap_or_else(|| panic!("the partitions given back were not started:\n{}", stays.output()));
    println!("partitions given back on a quiet flow were replicating again {took:?} after SIGTERM of their owner");
    assert!(!stays.output().contains("cannot start assigned partitions"), "{}", stays.output());

    let second = sample_records(4, 150, 1_700_000_000_000).split_off(first.len());
    producer.send_all(&topic, &second).unwrap();
    let got = wait_for(Duration::from_secs(60), || {
        let got = consume_all(&b.bootstrap(), &remote, 4, 600, Duration::from_secs(2)).unwrap();
        (got.len() >= 600).then_some(got)
    })
    .unwrap_or_else(|| panic!("later records missing:\n{}", stays.output()));
    let distinct: HashSet<(i32, String)> = got.iter().map(TestRecord::seq).collect();
    assert_eq!(distinct.len(), 600);
    println!("all 600 records on the target, {} duplicates", got.len() - 600);
}
