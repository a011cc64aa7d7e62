//! `ferry sql` under load (not a timed test): end-to-end latency at half the job's throughput,
//! and a materialized view's reads meanwhile, against ceilings measured in the same run:
//!
//!   cargo bench -p ferry-cli --bench sql_latency
//!   FERRY_BENCH_SECONDS=10 cargo bench -p ferry-cli --bench sql_latency
//!
//! 1. Throughput: 300,000 JSON bids already in the topic, a bounded job (filter and projection
//!    into a topic, and a view of COUNT and SUM per item) timed from launch: R records/s.
//! 2. The same job, unbounded, with `--listen`; a producer writes bids at R/2 records/s for
//!    FERRY_BENCH_SECONDS (default 20), each carrying the wall-clock time it was handed to the
//!    producer; a consumer of the sink topic takes each row's latency as its arrival time minus
//!    that (one machine, one clock). The ceiling: the same producer and consumer with nothing in
//!    between (the consumer reads the source topic), in the same run.
//! 3. Meanwhile four threads read the view (`/api/v1/query/totals/all?limit=100` and a key
//!    lookup), each about 50 times a second (a busy dashboard; reading flat out would measure
//!    two cores shared by the broker, the job, the producer and the readers), and as many
//!    requests go to the same server's `/api/v1/views`, a route that reads no view: the HTTP
//!    ceiling. p50 and p99 of each.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_testkit::{create_topic, http_request, sql_timestamp, unique, Broker, BrokerOptions, Process, RecordProducer, TestRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const ITEMS: usize = 1000;

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn bid(i: usize, sent_ms: f64) -> String {
    format!(r#"{{"item":"i{}","price":{},"ts":"{}","sent":{sent_ms:.3}}}"#, i % ITEMS, (i * 37) % 100, sql_timestamp(1_700_000_000_000 + i as i64 * 10))
}

fn job(bootstrap: &str, source: &str, sink: &str, bounded: bool) -> std::path::PathBuf {
    let bound = if bounded { ", 'scan.bounded.mode' = 'latest-offset'" } else { "" };
    let text = format!(
        "CREATE TABLE bids (item STRING, price BIGINT, ts TIMESTAMP(3), sent DOUBLE, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'kafka', 'topic' = '{source}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json', 'scan.startup.mode' = 'earliest-offset'{bound});
CREATE TABLE passed (item STRING, price BIGINT, sent DOUBLE)
WITH ('connector' = 'kafka', 'topic' = '{sink}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
INSERT INTO passed SELECT item, price, sent FROM bids WHERE price >= 0;
CREATE MATERIALIZED VIEW totals AS SELECT item, COUNT(*) AS n, SUM(price) AS total FROM bids GROUP BY item;
"
    );
    let file = std::env::temp_dir().join(format!("{}.sql", unique("sql-latency")));
    std::fs::write(&file, text).unwrap();
    file
}

/// Writes `rate` bids a second for `seconds`, in 10 ms slices, each stamped when handed over.
fn paced_producer(bootstrap: &str, topic: &str, rate: f64, seconds: f64) -> u64 {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "1").create().unwrap();
    // Connected, with the partitions' leaders known, before the first stamped record: otherwise
    // the first records' latency is the producer's start.
    p.client().fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let value = bid(sent as usize, now_ms());
            let partition = (sent % PARTITIONS as u64) as i32;
            let mut record = BaseRecord::<(), String>::to(topic).payload(&value).partition(partition);
            loop {
                match p.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    p.flush(Duration::from_secs(60)).unwrap();
    sent
}

/// Reads `topic` from its end until `stop`, each row's latency in ms (arrival minus `sent`).
fn latencies(bootstrap: &str, topic: &str, ready: &AtomicBool, stop: &AtomicBool) -> Vec<f64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("latency"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    c.assign(&tpl).unwrap();
    // Until the assignment has taken effect: a poll resolves the end offsets.
    let _ = c.poll(Duration::from_millis(500));
    ready.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    while !stop.load(Ordering::SeqCst) || quiet_since.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
            let arrived = now_ms();
            quiet_since = Instant::now();
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            if let Some(sent) = v["sent"].as_f64() {
                out.push(arrived - sent);
            }
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut v: Vec<f64>) -> (usize, f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v.len(), percentile(&v, 0.5), percentile(&v, 0.99), v.last().copied().unwrap_or(f64::NAN))
}

/// Produces at `rate` for `seconds` while a consumer of `read` measures latencies.
fn measure(bootstrap: &str, write: &str, read: &str, rate: f64, seconds: f64) -> (u64, Vec<f64>) {
    let (ready, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let reader = {
        let (bootstrap, read, ready, stop) = (bootstrap.to_string(), read.to_string(), ready.clone(), stop.clone());
        std::thread::spawn(move || latencies(&bootstrap, &read, &ready, &stop))
    };
    while !ready.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = paced_producer(bootstrap, write, rate, seconds);
    stop.store(true, Ordering::SeqCst);
    (sent, reader.join().unwrap())
}

fn main() {
    let seconds: f64 = std::env::var("FERRY_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20.0);
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let broker = Broker::start_with("bench-sql-latency", BrokerOptions::benchmark()).unwrap();
    let bootstrap = broker.bootstrap();

    // 1. The job's throughput over records already written.
    let (preload, preload_sink) = (unique("bids-preload"), unique("passed-preload"));
    create_topic(&bootstrap, &preload, PARTITIONS).unwrap();
    create_topic(&bootstrap, &preload_sink, PARTITIONS).unwrap();
    let n = 300_000;
    let records: Vec<TestRecord> = (0..n)
        .map(|i| TestRecord { partition: (i % PARTITIONS as usize) as i32, offset: 0, key: None, value: Some(bid(i, 0.0).into_bytes()), headers: vec![], timestamp: None })
        .collect();
    RecordProducer::new(&bootstrap).unwrap().send_all(&preload, &records).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(ferry).args(["sql", "run", job(&bootstrap, &preload, &preload_sink, true).to_str().unwrap()]).env("RUST_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("throughput: {n} bids in {:.2} s: {rate:.0} records/s (filter and projection to a topic, and a view per item)", started.elapsed().as_secs_f64());
    let half = rate / 2.0;

    // 2. The ceiling: producer to consumer through the broker alone.
    let direct = unique("bids-direct");
    create_topic(&bootstrap, &direct, PARTITIONS).unwrap();
    let (sent, lat) = measure(&bootstrap, &direct, &direct, half, seconds);
    let (count, p50_direct, p99_direct, max_direct) = summary(lat);
    assert_eq!(count as u64, sent, "the direct consumer read every record");
    println!("ceiling (producer -> broker -> consumer) at {half:.0} records/s for {seconds} s: {count} records, p50 {p50_direct:.1} ms, p99 {p99_direct:.1} ms, max {max_direct:.1} ms");

    // 2 and 3. The running job at half its throughput, with its view read meanwhile.
    let (source, sink) = (unique("bids-live"), unique("passed-live"));
    create_topic(&bootstrap, &source, PARTITIONS).unwrap();
    create_topic(&bootstrap, &sink, PARTITIONS).unwrap();
    let addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let file = job(&bootstrap, &source, &sink, false);
    let mut process = Process::spawn(ferry, &["sql", "run", file.to_str().unwrap(), "--listen", &addr], &unique("bench-sql-latency")).unwrap();
    ferry_testkit::wait_for(Duration::from_secs(30), || http_request(&addr, "GET", "/api/v1/views", &[], "").ok().filter(|(s, _)| *s == 200).map(|_| ())).expect("the job's API answers");
    let reading = Arc::new(AtomicBool::new(true));
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let (addr, reading) = (addr.clone(), reading.clone());
            std::thread::spawn(move || {
                let (mut view, mut ceiling) = (Vec::new(), Vec::new());
                let mut k = 0usize;
                while reading.load(Ordering::SeqCst) {
                    let path = if k.is_multiple_of(2) { "/api/v1/query/totals/all?limit=100".to_string() } else { format!("/api/v1/query/totals/lookup?item=i{}", (k * 7 + t) % ITEMS) };
                    for (route, into) in [(path.as_str(), &mut view), ("/api/v1/views", &mut ceiling)] {
                        let started = Instant::now();
                        let (status, _) = http_request(&addr, "GET", route, &[], "").unwrap();
                        // The lookup of an item not seen yet is a 404, answered as fast.
                        assert!(status == 200 || status == 404, "{route}: {status}");
                        into.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    k += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                (view, ceiling)
            })
        })
        .collect();
    let (sent, lat) = measure(&bootstrap, &source, &sink, half, seconds);
    reading.store(false, Ordering::SeqCst);
    let (mut view, mut ceiling) = (Vec::new(), Vec::new());
    for r in readers {
        let (v, c) = r.join().unwrap();
        view.extend(v);
        ceiling.extend(c);
    }
    let (count, p50, p99, max) = summary(lat);
    assert!(process.is_running(), "the job ended:\n{}", std::fs::read_to_string(&process.log).unwrap_or_default());
    process.kill_9();
    assert_eq!(count as u64, sent, "every bid passed the filter and arrived");
    println!(
        "ferry sql at {half:.0} records/s (half its throughput) for {seconds} s: {count} records, end-to-end p50 {p50:.1} ms ({:.1}x the ceiling), p99 {p99:.1} ms ({:.1}x), max {max:.1} ms",
        p50 / p50_direct,
        p99 / p99_direct
    );
    let (view_n, view_p50, view_p99, view_max) = summary(view);
    let (ceiling_n, ceiling_p50, ceiling_p99, _) = summary(ceiling);
    println!(
        "view reads meanwhile (4 threads at about 50 a second, /all?limit=100 and lookups): {view_n} requests, p50 {view_p50:.2} ms, p99 {view_p99:.2} ms, max {view_max:.2} ms; the same server's /api/v1/views: {ceiling_n} requests, p50 {ceiling_p50:.2} ms, p99 {ceiling_p99:.2} ms (view p99 {:.1}x)",
        view_p99 / ceiling_p99
    );
}
