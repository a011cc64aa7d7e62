//! `ferry mirror` as a user runs it: the real binary against Apache Kafka brokers on loopback.
//! Every test starts its own brokers and uses unique topic names.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod common;

use common::{ferry, start_mirror, two_clusters, write_config};
use ferry_mirror::heartbeat::Heartbeat;
use ferry_testkit::{consume_all, create_topic, list_topics, produce, sample_records, unique, wait_for, Broker, TestRecord};


fn count(bootstrap: &str, topic: &str, partitions: i32, expected: usize, timeout: Duration) -> usize {
    consume_all(bootstrap, topic, partitions, expected, timeout).map(|r| r.len()).unwrap_or(0)
}

fn topic_names(bootstrap: &str) -> Vec<String> {
    let mut names: Vec<String> = list_topics(bootstrap).unwrap().into_iter().map(|(n, _)| n).collect();
    names.sort();
    names
}

fn by_partition(records: &[TestRecord]) -> BTreeMap<i32, Vec<&TestRecord>> {
    let mut out: BTreeMap<i32, Vec<&TestRecord>> = BTreeMap::new();
    for r in records {
        out.entry(r.partition).or_default().push(r);
    }
    out
}


#[test]
fn three_topics_arrive_identical_and_in_order_with_heartbeats() {
    let (a, b) = (Broker::start("a").unwrap(), Broker::start("b").unwrap());
    let topics: Vec<String> = (0..3).map(|i| unique(&format!("orders{i}"))).collect();
    let per_partition = 10_000;
    let mut sent = BTreeMap::new();
    for t in &topics {
        create_topic(&a.bootstrap(), t, 3).unwrap();
        let records = sample_records(3, per_partition, 1_700_000_000_000);
        produce(&a.bootstrap(), t, &records).unwrap();
        sent.insert(t.clone(), records);
    }
    let config = write_config("faithful", &two_clusters(&a, &b, "a->b.enabled = true\n"));
    let mirror = start_mirror(&config, "mirror-faithful");

    for t in &topics {
        let remote = format!("a.{t}");
        let expected = 3 * per_partition;
        let got = consume_all(&b.bootstrap(), &remote, 3, expected, Duration::from_secs(120)).unwrap();
        assert_eq!(got.len(), expected, "{remote}: {} of {expected} records arrived\n{}", got.len(), mirror.output());
        let want = by_partition(&sent[t]);
        let have = by_partition(&got);
        for (p, want) in &want {
            let have = &have[p];
            assert_eq!(have.len(), want.len(), "{remote} partition {p}");
            for (i, (h, w)) in have.iter().zip(want.iter()).enumerate() {
                assert_eq!(h.content(), w.content(), "{remote} partition {p} record {i} differs");
            }
        }
        println!("{remote}: {expected} records identical (key, value, headers, timestamp, partition, order)");
    }

    // Heartbeats: MM2's format on the target's `heartbeats` topic.
    let beats = consume_all(&b.bootstrap(), "heartbeats", 1, 2, Duration::from_secs(10)).unwrap();
    assert!(beats.len() >= 2, "heartbeats on b: {}", beats.len());
    let hb = Heartbeat::decode(beats[0].key.as_deref().unwrap(), beats[0].value.as_deref().unwrap()).unwrap();
    assert_eq!((hb.source_cluster.as_str(), hb.target_cluster.as_str()), ("a", "b"));
    assert!(hb.timestamp_ms > 1_700_000_000_000);
}

#[test]
fn new_topics_are_discovered_within_the_interval_and_excludes_are_honoured() {
    let (a, b) = (Broker::start("a").unwrap(), Broker::start("b").unwrap());
    let prefix = unique("disc");
    let config = write_config("discovery", &two_clusters(&a, &b, &format!(
        "a->b.enabled = true\na->b.topics = {prefix}.*\ntopics.exclude = .*-secret\n")));
    let mirror = start_mirror(&config, "mirror-discovery");
    // The mirror is up and has nothing to do: the heartbeats topic shows it reached b.
    wait_for(Duration::from_secs(20), || topic_names(&b.bootstrap()).contains(&"heartbeats".to_string()).then_some(()))
        .unwrap_or_else(|| panic!("mirror never reached b:\n{}", mirror.output()));

    let fresh = format!("{prefix}-fresh");
    let secret = format!("{prefix}-secret");
    let other = unique("unlisted");
    for t in [&fresh, &secret, &other] {
        create_topic(&a.bootstrap(), t, 2).unwrap();
        produce(&a.bootstrap(), t, &sample_records(2, 50, 1_700_000_000_000)).unwrap();
    }
    let created = Instant::now();
    let remote = format!("a.{fresh}");
    wait_for(Duration::from_secs(10), || topic_names(&b.bootstrap()).contains(&remote).then_some(()))
        .unwrap_or_else(|| panic!("{remote} not created within 10 s:\n{}", mirror.output()));
    println!("new topic replicated as {remote} after {:?} (refresh interval 1 s)", created.elapsed());
    assert_eq!(count(&b.bootstrap(), &remote, 2, 100, Duration::from_secs(20)), 100);
    std::thread::sleep(Duration::from_secs(3));
    let names = topic_names(&b.bootstrap());
    assert!(!names.contains(&format!("a.{secret}")), "excluded topic replicated: {names:?}");
    assert!(!names.contains(&format!("a.{other}")), "topic outside `topics` replicated: {names:?}");
}

#[test]
fn bidirectional_default_policy_stays_loop_free() {
    let (a, b) = (Broker::start("a").unwrap(), Broker::start("b").unwrap());
    let t = unique("bidi");
    create_topic(&a.bootstrap(), &t, 2).unwrap();
    create_topic(&b.bootstrap(), &t, 2).unwrap();
    produce(&a.bootstrap(), &t, &sample_records(2, 100, 1_700_000_000_000)).unwrap();
    produce(&b.bootstrap(), &t, &sample_records(2, 50, 1_700_000_000_000)).unwrap();
    let config = write_config("bidi", &two_clusters(&a, &b, "a->b.enabled = true\nb->a.enabled = true\n"));
    let mirror = start_mirror(&config, "mirror-bidi");

    assert_eq!(count(&b.bootstrap(), &format!("a.{t}"), 2, 200, Duration::from_secs(30)), 200, "{}", mirror.output());
    assert_eq!(count(&a.bootstrap(), &format!("b.{t}"), 2, 100, Duration::from_secs(30)), 100, "{}", mirror.output());
    // Heartbeats travel one hop (a.heartbeats on b, b.heartbeats on a) and never come back.
    wait_for(Duration::from_secs(15), || topic_names(&b.bootstrap()).contains(&"a.heartbeats".to_string()).then_some(()))
        .expect("a's heartbeats replicated to b");
    let before = (topic_names(&a.bootstrap()), topic_names(&b.bootstrap()));
    std::thread::sleep(Duration::from_secs(4));
    let after = (topic_names(&a.bootstrap()), topic_names(&b.bootstrap()));
    assert_eq!(before, after, "topic sets keep changing");
    for names in [&after.0, &after.1] {
        assert!(!names.iter().any(|n| n.starts_with("a.b.") || n.starts_with("b.a.")), "loop: {names:?}");
    }
    assert_eq!(count(&b.bootstrap(), &format!("a.{t}"), 2, 200, Duration::from_secs(5)), 200, "counts stay put");
    assert_eq!(count(&a.bootstrap(), &format!("b.{t}"), 2, 100, Duration::from_secs(5)), 100, "counts stay put");
}

#[test]
fn identity_policy_bidirectional_is_loop_free_through_provenance() {
    let (a, b) = (Broker::start("a").unwrap(), Broker::start("b").unwrap());
    let t = unique("ident");
    create_topic(&a.bootstrap(), &t, 1).unwrap();
    create_topic(&b.bootstrap(), &t, 1).unwrap();
    produce(&a.bootstrap(), &t, &sample_records(1, 100, 1_700_000_000_000)).unwrap();
    produce(&b.bootstrap(), &t, &sample_records(1, 40, 1_700_000_000_000)).unwrap();
    let config = write_config("identity", &two_clusters(&a, &b,
        "a->b.enabled = true\nb->a.enabled = true\nreplication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy\n"));
    let mirror = start_mirror(&config, "mirror-identity");
    // Each side ends with its own records plus the other's, once: 140. MM2 would loop forever.
    assert_eq!(count(&a.bootstrap(), &t, 1, 140, Duration::from_secs(30)), 140, "{}", mirror.output());
    assert_eq!(count(&b.bootstrap(), &t, 1, 140, Duration::from_secs(30)), 140, "{}", mirror.output());
    std::thread::sleep(Duration::from_secs(4));
    let on_a = consume_all(&a.bootstrap(), &t, 1, 1_000, Duration::from_secs(3)).unwrap();
    let on_b = consume_all(&b.bootstrap(), &t, 1, 1_000, Duration::from_secs(3)).unwrap();
    assert_eq!((on_a.len(), on_b.len()), (140, 140), "records looped");
    let from_b = on_a.iter().filter(|r| r.headers.iter().any(|(k, v)| k == "ferry.provenance" && v.as_deref() == Some(b"b"))).count();
    assert_eq!(from_b, 40, "b's records on a carry provenance `b`");
}

#[test]
fn chain_a_to_b_to_c_names_the_full_path() {
    let (a, b, c) = (Broker::start("a").unwrap(), Broker::start("b").unwrap(), Broker::start("c").unwrap());
    let t = unique("chain");
    create_topic(&a.bootstrap(), &t, 2).unwrap();
    produce(&a.bootstrap(), &t, &sample_records(2, 100, 1_700_000_000_000)).unwrap();
    let config = write_config("chain", &format!(
        "clusters = a, b, c\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\nc.bootstrap.servers = {}\nrefresh.topics.interval.seconds = 1\na->b.enabled = true\nb->c.enabled = true\nc->a.enabled = true\n",
        a.bootstrap(), b.bootstrap(), c.bootstrap()));
    let mirror = start_mirror(&config, "mirror-chain");
    let remote = format!("b.a.{t}");
    assert_eq!(count(&c.bootstrap(), &remote, 2, 200, Duration::from_secs(40)), 200, "{}", mirror.output());
    // circular a->b->c->a: c's copy must not return to a.
    std::thread::sleep(Duration::from_secs(3));
    let on_a = topic_names(&a.bootstrap());
    assert!(!on_a.iter().any(|n| n.ends_with(&format!("a.{t}"))), "cycle back into a: {on_a:?}");
    assert!(on_a.contains(&"c.b.heartbeats".to_string()) || on_a.contains(&"c.heartbeats".to_string()), "heartbeats trace upstream: {on_a:?}");
}

#[test]
fn kill_9_then_restart_loses_nothing_and_resends_at_most_one_window() {
    let (a, b) = (Broker::start("a").unwrap(), Broker::start("b").unwrap());
    let t = unique("crash");
    let per_partition = 20_000;
    create_topic(&a.bootstrap(), &t, 3).unwrap();
    let records = sample_records(3, per_partition, 1_700_000_000_000);
    // Produce in the background so the crash lands mid-stream: the second half waits for the
    // kill, so the stream goes on across it however fast (or slowly, under load) the mirror is.
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (bootstrap, t, records, killed) = (a.bootstrap(), t.clone(), records.clone(), killed.clone());
        std::thread::spawn(move || {
            let producer = ferry_testkit::RecordProducer::new(&bootstrap).unwrap();
            for (i, chunk) in records.chunks(1_000).enumerate() {
                while i >= 30 && !killed.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                producer.send_all(&t, chunk).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let config = write_config("crash", &two_clusters(&a, &b, "a->b.enabled = true\n"));
    let remote = format!("a.{t}");

    let mut first = start_mirror(&config, "mirror-crash-1");
    wait_for(Duration::from_secs(60), || {
        let n = count(&b.bootstrap(), &remote, 3, 12_000, Duration::from_millis(500));
        (n >= 12_000).then_some(n)
    })
    .unwrap_or_else(|| panic!("no progress before the crash:\n{}", first.output()));
    first.kill_9();
    killed.store(true, std::sync::atomic::Ordering::Relaxed);
    let at_crash = count(&b.bootstrap(), &remote, 3, 3 * per_partition, Duration::from_secs(2));
    println!("killed -9 mid-stream with {at_crash} of {} records on b", 3 * per_partition);
    assert!(at_crash < 3 * per_partition, "the crash must land mid-stream");

    // Restarted at once: the killed process stays a member of the positions group until its
    // session times out (10 s), and Kafka's coordinator holds the new member's join until then.
    let second = start_mirror(&config, "mirror-crash-2");
    writer.join().unwrap();
    let expected = 3 * per_partition;
    let seq = |r: &TestRecord| (r.partition, r.headers.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.clone()));
    let got = wait_for(Duration::from_secs(120), || {
        let got = consume_all(&b.bootstrap(), &remote, 3, expected, Duration::from_secs(2)).unwrap();
        let distinct: std::collections::HashSet<_> = got.iter().map(seq).collect();
        (distinct.len() >= expected).then_some(got)
    })
    .unwrap_or_else(|| panic!("records missing after restart:\n{}", second.output()));

    let want = by_partition(&records);
    let have = by_partition(&got);
    let mut duplicates = 0;
    for (p, want) in &want {
        let have = &have[p];
        // The target holds source[0..k] then source[j..n] with j <= k: one re-sent window.
        let mut i = 0;
        while i < have.len() && i < want.len() && have[i].content() == want[i].content() {
            i += 1;
        }
        let resume = if i == have.len() { want.len() } else {
            want.iter().position(|w| w.content() == have[i].content()).expect("unknown record on target")
        };
        assert!(resume <= i, "partition {p}: gap between {i} and {resume}");
        let rest = &have[i..];
        assert_eq!(rest.len(), want.len() - resume, "partition {p}: tail length");
        for (h, w) in rest.iter().zip(&want[resume..]) {
            assert_eq!(h.content(), w.content(), "partition {p}: re-sent tail out of order");
        }
        println!("partition {p}: crash window re-sent {} records", i - resume);
        duplicates += i - resume;
    }
    println!("kill -9 + restart: 0 missing, {duplicates} duplicates (one re-sent window per partition), {} records on b", got.len());
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let (a, b) = (Broker::start("a").unwrap(), Broker::start("b").unwrap());
    let t = unique("term");
    create_topic(&a.bootstrap(), &t, 1).unwrap();
    produce(&a.bootstrap(), &t, &sample_records(1, 500, 1_700_000_000_000)).unwrap();
    let config = write_config("term", &two_clusters(&a, &b, "a->b.enabled = true\n"));
    let mut mirror = start_mirror(&config, "mirror-term");
    assert_eq!(count(&b.bootstrap(), &format!("a.{t}"), 1, 500, Duration::from_secs(30)), 500, "{}", mirror.output());
    let started = Instant::now();
    let status = mirror.terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "exit status {status}:\n{}", mirror.output());
    println!("SIGTERM -> exit 0 in {:?}", started.elapsed());
    // Positions were stored: a restart re-sends nothing.
    let again = start_mirror(&config, "mirror-term-2");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(&b.bootstrap(), &format!("a.{t}"), 1, 1_000, Duration::from_secs(3)), 500, "{}", again.output());
}

#[test]
fn malformed_configs_exit_non_zero_naming_file_line_and_key() {
    // No broker: validation must fail before any cluster is contacted.
    let cases = [
        ("clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = 127.0.0.1:2\na->b.enabled = true\na->b.topics = (oops\n", ":5: a->b.topics: invalid regex '(oops'"),
        ("clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = 127.0.0.1:2\na->c.enabled = true\n", ":4: a->c.enabled: unknown cluster alias 'c'"),
        ("clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = 127.0.0.1:2\na->b.enabled = true\ntasks.max = zero\n", ":5: tasks.max: expected a positive whole number, got 'zero'"),
        ("clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = 127.0.0.1:2\na->b.enabled = maybe\n", ":4: a->b.enabled: expected true or false, got 'maybe'"),
        ("a.bootstrap.servers = 127.0.0.1:1\n", "clusters: missing"),
    ];
    for (text, expected) in cases {
        let path = write_config("bad", text);
        let out = std::process::Command::new(ferry()).args(["mirror", "--config", path.to_str().unwrap()]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expected}: {stderr}");
        assert!(stderr.contains(&format!("{}", path.display())), "names the file: {stderr}");
        assert!(stderr.contains(expected), "expected `{expected}` in: {stderr}");
    }
    let out = std::process::Command::new(ferry()).args(["mirror", "--config", "/nonexistent/mm2.properties"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read configuration /nonexistent/mm2.properties"));
    // --clusters with an unknown alias
    let path = write_config("ok", "clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = 127.0.0.1:2\na->b.enabled = true\n");
    let out = std::process::Command::new(ferry()).args(["mirror", "--config", path.to_str().unwrap(), "--clusters", "z"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clusters: unknown cluster alias 'z'"));
    // a valid file passes --check without any cluster
    let out = std::process::Command::new(ferry()).args(["mirror", "--config", path.to_str().unwrap(), "--check"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a->b"));
}
