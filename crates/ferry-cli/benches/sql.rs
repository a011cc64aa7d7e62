//! `ferry sql` throughput on Apache Kafka (not a timed test), against a naive baseline measured
//! in the same run on the same broker (`BrokerOptions::benchmark()`):
//!
//!   cargo bench -p ferry-cli --bench sql
//!   FERRY_BENCH_RECORDS=200000 cargo bench -p ferry-cli --bench sql
//!
//! The input: N JSON bids (`{"item": "i17", "price": 42, "ts": "2023-11-14 22:13:20.25"}`, 1,000
//! items, 10 ms of event time apart) on 4 partitions. Each job is a bounded `ferry sql run` (its
//! own process, timed from launch: start-up counts) writing to its own topic:
//! - naive: an rdkafka consume → serde_json parse → filter → serialize → produce loop in this
//!   process (one thread), the same filter and projection as the `filter` job;
//! - filter: `SELECT item, price * 2 FROM bids WHERE price > 50`;
//! - tumble: `COUNT(*), SUM(price)` per item per 1-second TUMBLE window;
//! - group: `COUNT(*), SUM(price)` per item, an updating aggregate into upsert-kafka;
//! - top-n: the 3 highest prices per item (ROW_NUMBER), into upsert-kafka.
//!
//! Each job file then runs on Apache Flink 2.2 (`scripts/install-flink`: a local MiniCluster in
//! one JVM, `scripts/flink/FlinkSql.java`, timed from the JVM's start as Ferry is from its
//! process's), with parallelism 1 and 2, each into a topic of its own; the results must be equal:
//! every record of an append job (as a multiset of JSON values), an upsert job's table folded by
//! key. `FERRY_BENCH_FLINK=0` leaves Flink out.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_testkit::{create_topic, send_waiting, sql_timestamp, unique, Broker, BrokerOptions, RecordProducer, TestRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

fn cfg(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn produce(bootstrap: &str, topic: &str, n: usize) {
    let records: Vec<TestRecord> = (0..n)
        .map(|i| {
            let value = format!(r#"{{"item":"i{}","price":{},"ts":"{}"}}"#, i % 1000, (i * 37) % 100, sql_timestamp(1_700_000_000_000 + i as i64 * 10));
            TestRecord { partition: (i % PARTITIONS as usize) as i32, offset: 0, key: None, value: Some(value.into_bytes()), headers: vec![], timestamp: None }
        })
        .collect();
    RecordProducer::new(bootstrap).unwrap().send_all(topic, &records).unwrap();
}

/// The naive baseline: consume, parse, filter, project, serialize, produce; until all `n` read.
fn naive(bootstrap: &str, source: &str, sink: &str, n: usize) -> Duration {
    let started = Instant::now();
    let c: BaseConsumer = cfg(bootstrap).set("group.id", unique("naive")).set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(source, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let p: ThreadedProducer<DefaultProducerContext> = cfg(bootstrap).set("linger.ms", "5").set("acks", "all").set("enable.idempotence", "true").create().unwrap();
    let mut read = 0;
    while read < n {
        let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else { continue };
        read += 1;
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
        if v["price"].as_i64().unwrap_or(0) > 50 {
            let out = serde_json::json!({"item": v["item"], "doubled": v["price"].as_i64().unwrap_or(0) * 2}).to_string();
            send_waiting(&p, BaseRecord::<(), _>::to(sink).payload(out.as_bytes()));
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
    started.elapsed()
}

fn main() {
    let n: usize = std::env::var("FERRY_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let broker = Broker::start_with("bench-sql", BrokerOptions::benchmark()).unwrap();
    let bootstrap = broker.bootstrap();
    let bids = unique("bids");
    create_topic(&bootstrap, &bids, PARTITIONS).unwrap();
    let started = Instant::now();
    produce(&bootstrap, &bids, n);
    println!("sql benchmark: {n} bids on {PARTITIONS} partitions written in {:.1} s", started.elapsed().as_secs_f64());

    let naive_sink = unique("naive");
    create_topic(&bootstrap, &naive_sink, PARTITIONS).unwrap();
    let baseline = naive(&bootstrap, &bids, &naive_sink, n);
    let base_rate = n as f64 / baseline.as_secs_f64();
    println!("{:<8} {:>8.2} s {:>10.0} records/s  (consume, serde_json, filter, produce; one thread)", "naive", baseline.as_secs_f64(), base_rate);

    let source_ddl = format!(
        "CREATE TABLE bids (item STRING, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'kafka', 'topic' = '{bids}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json',
      'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');\n"
    );
    let jobs = [
        ("filter", "item STRING, doubled BIGINT", false, "SELECT item, price * 2 FROM bids WHERE price > 50"),
        ("tumble", "item STRING, window_start TIMESTAMP(3), n BIGINT, total BIGINT", false, "SELECT item, window_start, COUNT(*), SUM(price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY item, window_start, window_end"),
        ("group", "item STRING, n BIGINT, total BIGINT", true, "SELECT item, COUNT(*), SUM(price) FROM bids GROUP BY item"),
        ("top-n", "item STRING, price BIGINT, rn BIGINT", true, "SELECT item, price, rn FROM (SELECT item, price, ROW_NUMBER() OVER (PARTITION BY item ORDER BY price DESC) AS rn FROM bids) WHERE rn <= 3"),
    ];
    let flink = std::env::var("FERRY_BENCH_FLINK").map_or(true, |v| v != "0");
    for (name, columns, upsert, query) in jobs {
        let job = |sink: &str| {
            let sink_ddl = if upsert {
                let key = if name == "top-n" { "item, rn" } else { "item" };
                format!("CREATE TABLE results ({columns}, PRIMARY KEY ({key}) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = '{sink}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');\n")
            } else {
                format!("CREATE TABLE results ({columns}) WITH ('connector' = 'kafka', 'topic' = '{sink}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');\n")
            };
            let file = std::env::temp_dir().join(format!("{}.sql", unique("bench-sql")));
            std::fs::write(&file, format!("{source_ddl}{sink_ddl}INSERT INTO results {query};\n")).unwrap();
            file
        };
        support::ferry_and_flink(ferry, &bootstrap, PARTITIONS, name, n, upsert, flink, Some(base_rate), job);
    }
}
