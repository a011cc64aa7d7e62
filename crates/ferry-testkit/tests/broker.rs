//! The test kit's Kafka broker: starts, keeps acknowledged records across kill -9 and restart,
//! pauses under SIGSTOP, and Kafka's Java tools reach it.

use std::time::{Duration, Instant};

use ferry_testkit::{consume_all, create_topic, kafka_tool, produce, sample_records, Broker};

#[test]
fn a_broker_keeps_acknowledged_records_across_kill_9_and_restart() {
    let started = Instant::now();
    let mut broker = Broker::start("kit").unwrap();
    println!("broker ready in {:?}", started.elapsed());
    create_topic(&broker.bootstrap(), "t", 3).unwrap();
    let records = sample_records(3, 100, 1_700_000_000_000);
    produce(&broker.bootstrap(), "t", &records).unwrap();

    let restarted = Instant::now();
    broker.restart(Duration::from_millis(100)).unwrap();
    println!("restarted in {:?}", restarted.elapsed());
    let got = consume_all(&broker.bootstrap(), "t", 3, records.len(), Duration::from_secs(30)).unwrap();
    assert_eq!(got.len(), records.len());
    let mut want: Vec<_> = records.iter().map(|r| r.content()).collect();
    let mut have: Vec<_> = got.iter().map(|r| r.content()).collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);

    // Kafka's own tools see the topic with its three partitions.
    let described = kafka_tool("org.apache.kafka.tools.TopicCommand", &["--bootstrap-server", &broker.bootstrap(), "--describe", "--topic", "t"]).unwrap();
    assert!(described.contains("PartitionCount: 3"), "{described}");
}
