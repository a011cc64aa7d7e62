use std::time::Duration;
use ferry_testkit::*;
use rdkafka::consumer::{BaseConsumer, Consumer, CommitMode};
use rdkafka::{Offset, TopicPartitionList, Message};

fn main() -> anyhow::Result<()> {
    let b = Broker::start("probe")?;
    let bs = b.bootstrap();
    create_topic(&bs, "t", 3)?;
    produce(&bs, "t", &sample_records(3, 10, 1000))?;
    let c1: BaseConsumer = client_config(&bs).set("group.id", "g1").set("enable.auto.commit", "false").set("auto.offset.reset", "earliest").create()?;
    c1.subscribe(&["t"])?;
    let mut n = 0;
    let start = std::time::Instant::now();
    while n < 12 && start.elapsed() < Duration::from_secs(20) {
        if let Some(Ok(m)) = c1.poll(Duration::from_millis(100)) { n += 1; let _ = m.offset(); }
    }
    c1.commit_consumer_state(CommitMode::Sync)?;
    println!("c1 consumed {n}, committed {:?}", c1.committed(Duration::from_secs(5))?);
    let other: BaseConsumer = client_config(&bs).set("group.id", "g1").set("enable.auto.commit", "false").create()?;
    match other.fetch_group_list(None, Duration::from_secs(5)) {
        Ok(list) => for g in list.groups() { println!("group {} state={} proto={} members={}", g.name(), g.state(), g.protocol_type(), g.members().len()); },
        Err(e) => println!("list groups error {e}"),
    }
    match other.fetch_group_list(Some("g1"), Duration::from_secs(5)) {
        Ok(list) => for g in list.groups() { println!("describe {} state={} members={}", g.name(), g.state(), g.members().len()); },
        Err(e) => println!("describe error {e}"),
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 { tpl.add_partition("t", p); }
    println!("other sees committed {:?}", other.committed_offsets(tpl.clone(), Duration::from_secs(5)));
    let mut set = TopicPartitionList::new();
    for p in 0..3 { set.add_partition_offset("t", p, Offset::Offset(1))?; }
    println!("commit while active: {:?}", other.commit(&set, CommitMode::Sync));
    drop(c1);
    std::thread::sleep(Duration::from_secs(2));
    match other.fetch_group_list(Some("g1"), Duration::from_secs(5)) {
        Ok(list) => for g in list.groups() { println!("after close describe {} state={} members={}", g.name(), g.state(), g.members().len()); },
        Err(e) => println!("describe error {e}"),
    }
    println!("commit after close: {:?}", other.commit(&set, CommitMode::Sync));
    println!("other sees committed {:?}", other.committed_offsets(tpl.clone(), Duration::from_secs(5)));
    // unknown group
    let fresh: BaseConsumer = client_config(&bs).set("group.id", "nope").create()?;
    println!("unknown group committed {:?}", fresh.committed_offsets(tpl, Duration::from_secs(5)));
    Ok(())
}
