//! Remote topics follow their source on Apache Kafka: configs at creation and when they change
//! (excluded keys never copied), and partitions added on the source.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{one_topic_flow, start_mirror, two_clusters, write_config};
use ferry_testkit::{add_partitions, consume_all, create_topic_with, list_topics, sample_records, set_topic_configs, topic_configs, unique, wait_for, Broker, RecordProducer};

fn configs(bootstrap: &str, topic: &str) -> BTreeMap<String, String> {
    topic_configs(bootstrap, topic).unwrap()
}

#[test]
fn a_compacted_source_makes_a_compacted_remote_topic_and_config_changes_follow() {
    let (a, b) = (Broker::start("cfg-a").unwrap(), Broker::start("cfg-b").unwrap());
    let topic = unique("accounts");
    let remote = format!("a.{topic}");
    // min.insync.replicas is in MM2's default config.properties.exclude. The topic is created
    // with its configs (one_topic_flow creates a plain one).
    create_topic_with(&a.bootstrap(), &topic, 2, &[("cleanup.policy", "compact"), ("min.compaction.lag.ms", "60000"), ("min.insync.replicas", "1")]).unwrap();
    let config = write_config("cfg", &two_clusters(&a, &b, &format!("a->b.enabled = true\na->b.topics = {topic}\nsync.topic.configs.interval.seconds = 2\n")));
    let mirror = start_mirror(&config, "cfg-mirror");

    let created = wait_for(Duration::from_secs(30), || list_topics(&b.bootstrap()).unwrap().iter().any(|(t, _)| *t == remote).then(|| configs(&b.bootstrap(), &remote)))
        .unwrap_or_else(|| panic!("{remote} not created:\n{}", mirror.output()));
    println!("remote topic at creation: {created:?}");
    // At creation, not after a later sync: a record compacted away in between would be lost.
    assert_eq!(created.get("cleanup.policy").map(String::as_str), Some("compact"), "{remote} was created without the source's cleanup.policy");
    assert_eq!(created.get("min.compaction.lag.ms").map(String::as_str), Some("60000"));
    assert!(!created.contains_key("min.insync.replicas"), "an excluded key was copied: {created:?}");

    // A change on the source reaches the target within the sync interval.
    set_topic_configs(&a.bootstrap(), &topic, &[("cleanup.policy", "compact,delete"), ("retention.ms", "86400000"), ("min.compaction.lag.ms", "60000"), ("min.insync.replicas", "1")]).unwrap();
    let changed = Instant::now();
    let synced = wait_for(Duration::from_secs(20), || {
        let c = configs(&b.bootstrap(), &remote);
        (c.get("cleanup.policy").map(String::as_str) == Some("compact,delete") && c.get("retention.ms").map(String::as_str) == Some("86400000")).then_some(c)
    })
    .unwrap_or_else(|| panic!("config change not synced: {:?}\n{}", configs(&b.bootstrap(), &remote), mirror.output()));
    println!("config change reached the target {:?} after it was made (interval 2 s): {synced:?}", changed.elapsed());
    assert!(changed.elapsed() < Duration::from_secs(10), "took {:?}", changed.elapsed());
    assert!(!synced.contains_key("min.insync.replicas"), "an excluded key was copied: {synced:?}");
}

#[test]
fn partitions_added_on_the_source_are_added_on_the_target_and_their_records_arrive() {
    let (a, b, topic, config) = one_topic_flow("grow", 2);
    let remote = format!("a.{topic}");
    let producer = RecordProducer::new(&a.bootstrap()).unwrap();
    let before = sample_records(2, 100, 1_700_000_000_000);
    producer.send_all(&topic, &before).unwrap();
    let mirror = start_mirror(&config, "grow-mirror");
    common::all_arrived(&b.bootstrap(), &remote, 2, &before, before.len(), Duration::from_secs(60), &[&mirror]);

    add_partitions(&a.bootstrap(), &topic, 5).unwrap();
    let grown = Instant::now();
    // Records on every partition, the new ones included.
    let after: Vec<_> = sample_records(5, 200, 1_700_000_000_000).into_iter().filter(|r| r.partition >= 2 || r.seq().1.parse::<usize>().unwrap() >= 100).collect();
    // A new producer: the first one's metadata still has two partitions.
    RecordProducer::new(&a.bootstrap()).unwrap().send_all(&topic, &after).unwrap();
    let partitions = wait_for(Duration::from_secs(30), || list_topics(&b.bootstrap()).unwrap().into_iter().find(|(t, n)| *t == remote && *n == 5).map(|_| grown.elapsed()))
        .unwrap_or_else(|| panic!("{remote} was not grown to 5 partitions: {:?}\n{}", list_topics(&b.bootstrap()), mirror.output()));
    println!("{remote} had 5 partitions {partitions:?} after the source grew (refresh interval 1 s)");
    let all: Vec<_> = before.iter().chain(&after).cloned().collect();
    let got = common::all_arrived(&b.bootstrap(), &remote, 5, &all, all.len(), Duration::from_secs(60), &[&mirror]);
    let on_new = got.iter().filter(|r| r.partition >= 2).count();
    println!("all {} records arrived, {on_new} of them on the new partitions, each on its source partition", all.len());
    assert_eq!(on_new, 3 * 200);
    assert_eq!(consume_all(&b.bootstrap(), &remote, 5, all.len() + 1, Duration::from_secs(2)).unwrap().len(), all.len(), "duplicates");
}

#[test]
fn remote_topics_are_created_with_the_source_configs_even_when_configs_are_not_synced() {
    // MM2 copies a topic's configs when it creates the remote topic whatever
    // sync.topic.configs.enabled says; a compacted topic created as delete-policy loses records.
    // Here config sync is off and topics are re-listed only every 60 s, so the second topic
    // comes through the forced refresh of `ferry ctl topics --add`.
    let (a, b) = (Broker::start("cfgoff-a").unwrap(), Broker::start("cfgoff-b").unwrap());
    let (first, second) = (unique("ledger"), unique("accounts"));
    for topic in [&first, &second] {
        create_topic_with(&a.bootstrap(), topic, 1, &[("cleanup.policy", "compact")]).unwrap();
    }
    let text = two_clusters(&a, &b, &format!("a->b.enabled = true\na->b.topics = {first}\nsync.topic.configs.enabled = false\na->b.refresh.topics.interval.seconds = 60\n"));
    let config = write_config("cfgoff", &text);
    let mirror = start_mirror(&config, "cfgoff-mirror");
    let policy = |remote: &str| {
        wait_for(Duration::from_secs(30), || list_topics(&b.bootstrap()).unwrap().iter().any(|(t, _)| t == remote).then(|| configs(&b.bootstrap(), remote)))
            .unwrap_or_else(|| panic!("{remote} not created:\n{}", mirror.output()))
            .get("cleanup.policy")
            .cloned()
    };
    assert_eq!(policy(&format!("a.{first}")).as_deref(), Some("compact"), "created at start-up without the source's configs");
    let (code, _, err) = common::ctl(&["topics", "--config", config.to_str().unwrap(), "--source", "a", "--target", "b", "--add", &second]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(policy(&format!("a.{second}")).as_deref(), Some("compact"), "created by a forced refresh without the source's configs");
}
