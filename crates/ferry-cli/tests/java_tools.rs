//! Kafka's own Java code reads what Ferry writes: MirrorMaker 2's `RemoteClusterUtils` translates
//! a group's offsets from Ferry's checkpoints to exactly what `ferry ctl offsets export` prints,
//! `kafka-consumer-groups --reset-offsets --from-file` applies that export, and `MirrorClient`
//! reads Ferry's heartbeats (upstream clusters, replication hops, remote topics) in a
//! bidirectional setup.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ctl, start_mirror, two_clusters, write_config};
use ferry_testkit::{commit_offsets, compile_java, create_topic, java_program, kafka_tool, produce, sample_records, unique, wait_for, Broker, GroupConsumer};

const PARTITIONS: i32 = 3;

#[test]
fn mirror_maker_client_code_and_consumer_group_tool_read_what_ferry_writes() {
    let classes = compile_java(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/MirrorCompat.java")).unwrap();
    let (a, b) = (Broker::start("java-a").unwrap(), Broker::start("java-b").unwrap());
    let topic = unique("orders");
    let remote = format!("a.{topic}");
    create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
    produce(&a.bootstrap(), &topic, &sample_records(PARTITIONS, 100, 1_700_000_000_000)).unwrap();
    // The remote topic holds 7 records per partition before replication: offsets differ.
    create_topic(&b.bootstrap(), &remote, PARTITIONS).unwrap();
    let junk: Vec<_> = sample_records(PARTITIONS, 7, 1_600_000_000_000).into_iter().map(|mut r| {
        r.headers.clear();
        r
    }).collect();
    produce(&b.bootstrap(), &remote, &junk).unwrap();
    let config = write_config("java", &two_clusters(&a, &b, &format!(
        "a->b.enabled = true\na->b.topics = {topic}\nrefresh.groups.interval.seconds = 1\nemit.checkpoints.interval.seconds = 1\n\
         b->a.enabled = true\nb->a.topics = none\n")));
    let config_str = config.to_str().unwrap();
    let mirror = start_mirror(&config, "java-mirror");

    let group = unique("app");
    commit_offsets(&a.bootstrap(), &group, &[(&topic, 0, 40), (&topic, 1, 55), (&topic, 2, 100)]).unwrap();
    let export = || ctl(&["offsets", "export", "--config", config_str, "--source", "a", "--target", "b", "--group", &group]);
    let want = "40,47 55,62 100,107";
    let csv = wait_for(Duration::from_secs(60), || {
        let (code, csv, _) = export();
        let offsets: Vec<String> = csv.lines().filter_map(|l| l.rsplit(',').next().map(str::to_string)).collect();
        (code == 0 && offsets.len() == 3 && offsets == ["47", "62", "107"]).then_some(csv)
    })
    .unwrap_or_else(|| panic!("checkpoints of {group} never reached {want}: {:?}\n{}", export(), mirror.output()));
    println!("ferry ctl offsets export:\n{csv}");

    // MirrorMaker 2's client code, reading Ferry's checkpoints topic.
    let translated = java_program(&classes, "MirrorCompat", &["translate", &b.bootstrap(), "a", &group]).unwrap();
    println!("RemoteClusterUtils.translateOffsets:\n{translated}");
    assert_eq!(translated.trim(), csv.trim(), "RemoteClusterUtils and ferry ctl disagree");

    // kafka-consumer-groups applies the export as it is.
    let plan = std::env::temp_dir().join(format!("{}.csv", unique("plan")));
    std::fs::write(&plan, &csv).unwrap();
    let out = kafka_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &["--bootstrap-server", &b.bootstrap(), "--group", &group, "--reset-offsets", "--from-file", plan.to_str().unwrap(), "--execute"],
    )
    .unwrap();
    println!("kafka-consumer-groups --reset-offsets --from-file:\n{out}");
    let on_b = GroupConsumer::new(&b.bootstrap(), &group, &[]).unwrap().committed(&[(&remote, 0), (&remote, 1), (&remote, 2)]).unwrap();
    let committed: Vec<Option<i64>> = on_b.iter().map(|(_, _, o)| *o).collect();
    assert_eq!(committed, vec![Some(47), Some(62), Some(107)], "the group's offsets on b after the reset");

    // MirrorClient reads Ferry's heartbeats and remote topics. It finds upstream clusters by the
    // heartbeats topics replicated into a cluster: b->a writes `heartbeats` on a, and a->b
    // replicates it to b as `a.heartbeats`. (Ferry emits heartbeats only for enabled flows; MM2
    // also emits them for disabled pairs, so a one-way MM2 a->b shows `a` upstream of b and a
    // one-way Ferry flow does not: ARCHITECTURE.md.)
    let mut last = String::new();
    let hb = wait_for(Duration::from_secs(30), || {
        last = java_program(&classes, "MirrorCompat", &["heartbeats", &b.bootstrap(), "a"]).unwrap_or_else(|e| e.to_string());
        last.contains("hops=1").then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("MirrorClient never saw a heartbeat from a: {last}\n{}", mirror.output()));
    println!("MirrorClient:\n{hb}");
    assert!(hb.contains("upstream=[a]"), "{hb}");
    assert!(hb.lines().any(|l| l.starts_with("remote=") && l.contains(&remote)), "{hb}");
    drop(mirror);
}
