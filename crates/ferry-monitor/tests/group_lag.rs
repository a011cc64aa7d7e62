//! A consumer group's lag read from Apache Kafka: records not consumed and their age in seconds,
//! exact from the record at the committed offset (create time, and log-append time), 0 for a
//! caught-up partition, nothing invented for one the group never committed; and the group's
//! members with what they are assigned.

use std::time::Duration;

use ferry_kafka::ClusterClient;
use ferry_monitor::groups::group_lag;
use ferry_monitor::lag::Method;
use ferry_testkit::{commit_offsets, create_topic, create_topic_with, unique, wait_for, Broker, GroupConsumer, RecordProducer, TestRecord};

fn record(partition: i32, i: usize, timestamp: Option<i64>) -> TestRecord {
    TestRecord { partition, offset: 0, key: Some(format!("k{i}").into_bytes()), value: Some(format!("v{i}").into_bytes()), headers: vec![], timestamp }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn lag_in_records_and_exact_seconds_and_the_members_of_a_group() {
    let broker = Broker::start("monitor-lag").unwrap();
    let cluster = ClusterClient::new("a", broker.bootstrap());
    let (topic, appended) = (unique("orders"), unique("appended"));
    create_topic(&broker.bootstrap(), &topic, 3).unwrap();
    create_topic_with(&broker.bootstrap(), &appended, 1, &[("message.timestamp.type", "LogAppendTime")]).unwrap();
    // Partition 0: records stamped an hour ago, one per second; partition 1 read to its end;
    // partition 2 never committed.
    let hour_ago = now_ms() - 3_600_000;
    let mut records: Vec<TestRecord> = (0..10).map(|i| record(0, i, Some(hour_ago + i as i64 * 1000))).collect();
    records.extend((0..5).map(|i| record(1, i, Some(hour_ago))));
    records.extend((0..4).map(|i| record(2, i, Some(hour_ago))));
    let producer = RecordProducer::new(&broker.bootstrap()).unwrap();
    producer.send_all(&topic, &records).unwrap();
    producer.send_all(&appended, &[record(0, 0, None), record(0, 1, None)]).unwrap();
    let group = unique("billing");
    commit_offsets(&broker.bootstrap(), &group, &[(&topic, 0, 4), (&topic, 1, 5), (&appended, 0, 1)]).unwrap();

    // The group is empty: its partitions are found from what it committed; partition 2 is named
    // as assigned, to see that an uncommitted one gets no lag.
    let now = now_ms();
    let lags = group_lag(&cluster, &group, &[(topic.clone(), 2)], now, Duration::from_secs(10)).unwrap();
    assert_eq!(lags.len(), 4, "{lags:?}");
    println!("{lags:#?}");
    let at = |t: &str, p: i32| lags.iter().find(|l| l.topic == t && l.partition == p).unwrap();
    let p0 = at(&topic, 0);
    assert_eq!((p0.committed, p0.end, p0.lag), (Some(4), 10, Some(6)));
    let s = p0.lag_seconds.unwrap();
    assert_eq!(s.method, Method::RecordTimestamp);
    // The record at offset 4 was stamped hour_ago + 4 s: exact, whatever came after it.
    assert_eq!(s.seconds, (now - (hour_ago + 4000)) as f64 / 1000.0);
    let p1 = at(&topic, 1);
    assert_eq!((p1.lag, p1.lag_seconds.map(|s| (s.seconds, s.method))), (Some(0), Some((0.0, Method::CaughtUp))), "caught up: 0 s");
    let p2 = at(&topic, 2);
    assert_eq!((p2.committed, p2.lag, p2.lag_seconds), (None, None, None), "never committed: no lag invented");
    let appended_lag = at(&appended, 0).lag_seconds.unwrap();
    assert_eq!(appended_lag.method, Method::RecordTimestamp, "log-append time counts too");
    assert!((0.0..60.0).contains(&appended_lag.seconds), "{appended_lag:?}");

    // A live member and what it is assigned.
    let live = unique("live");
    let consumer = GroupConsumer::new(&broker.bootstrap(), &live, &[&topic]).unwrap();
    consumer.read_until(Duration::from_secs(30), |got| got.len() >= records.len()).unwrap();
    let described = wait_for(Duration::from_secs(30), || {
        let groups = ferry_kafka::describe_groups(&cluster, Some(&live), Duration::from_secs(5)).ok()?;
        groups.into_iter().find(|g| g.name == live && g.state == "Stable")
    })
    .expect("the live group is described as Stable");
    assert_eq!(described.protocol_type, "consumer");
    assert_eq!(described.members.len(), 1);
    let mut assigned = described.members[0].assignment.clone();
    assigned.sort();
    assert_eq!(assigned, vec![(topic.clone(), 0), (topic.clone(), 1), (topic.clone(), 2)]);
    let empty = ferry_kafka::describe_groups(&cluster, Some(&group), Duration::from_secs(5)).unwrap();
    assert!(empty.iter().any(|g| g.name == group && g.state == "Empty" && g.members.is_empty()), "{empty:?}");
    consumer.close();
}
