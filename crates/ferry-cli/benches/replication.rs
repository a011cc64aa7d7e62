//! End-to-end replication benchmark (not a timed test): Ferry beside baselines measured in the
//! same run against the same local tansu brokers.
//!
//!   cargo bench -p ferry-cli --bench replication
//!   FERRY_BENCH_RECORDS=200000 cargo bench -p ferry-cli --bench replication   (quicker)
//!
//! For each record size: (i) consume-only ceiling: a plain rdkafka consumer reading the data;
//! (ii) naive relay: a minimal rdkafka consume->produce loop in this process; (iii) `ferry
//! mirror` as its own process. Throughput, MB/s, CPU-seconds per GB (of the relaying process
//! only: /proc for Ferry, getrusage for the in-process relay), and for Ferry p50/p99 latency
//! of a live stream produced at half the consume-only ceiling.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_testkit::{create_topic, fill, free_port, scrape_records, unique, Broker, Process};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, Timestamp, TopicPartitionList};

const PARTITIONS: i32 = 12;

fn cfg(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn assign_all(c: &BaseConsumer, topic: &str) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
}

/// Baseline consumers fetch exactly as Ferry's relay does (tansu holds a fetch for the full
/// `fetch.wait.max.ms`, so a different value would make the comparison meaningless).
fn consumer(bootstrap: &str) -> BaseConsumer {
    cfg(bootstrap)
        .set("group.id", unique("bench"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", ferry_mirror::relay_defaults::FETCH_WAIT_MAX_MS)
        .create()
        .unwrap()
}

/// CPU seconds (user + system) of this process so far.
fn self_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    proc_cpu(&stat)
}

fn proc_cpu(stat: &str) -> f64 {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn consume_only(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let c = consumer(bootstrap);
    assign_all(&c, topic);
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            got += 1;
        }
    }
    start.elapsed().as_secs_f64()
}

fn naive_relay(src: &str, topic: &str, dst: &str, out: &str, n: usize) -> (f64, f64) {
    let c = consumer(src);
    let p: ThreadedProducer<DefaultProducerContext> = cfg(dst).set("linger.ms", "5").create().unwrap();
    assign_all(&c, topic);
    let cpu0 = self_cpu();
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let mut rec = BaseRecord::to(out).partition(m.partition());
            if let Some(k) = m.key() { rec = rec.key(k); }
            if let Some(v) = m.payload() { rec = rec.payload(v); }
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => { rec = r; std::thread::sleep(Duration::from_millis(1)); }
                }
            }
            got += 1;
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
    (start.elapsed().as_secs_f64(), self_cpu() - cpu0)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() { return -1; }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    // `cargo bench` passes --bench; nothing else is parsed.
    let n: usize = std::env::var("FERRY_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    println!("# Ferry replication benchmark: {n} records per size, {PARTITIONS} partitions, tansu 0.6.0 (memory storage) on loopback");
    println!("| size | run | records/s | MB/s | CPU-s per GB | vs ceiling | CPU vs naive | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // FERRY_BENCH_SIZES=100 runs one size (comma-separated record sizes in bytes).
    let sizes: Vec<usize> = std::env::var("FERRY_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1024]);
    for size in sizes {
        let a = Broker::start("bench-a").unwrap();
        let b = Broker::start("bench-b").unwrap();
        let topic = unique("bench");
        create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
        fill(&a.bootstrap(), &topic, PARTITIONS, n, size);
        let gb = (n * (size + 12)) as f64 / 1e9;
        let mb = gb * 1000.0;

        let ceiling_s = consume_only(&a.bootstrap(), &topic, n);
        let ceiling = n as f64 / ceiling_s;
        println!("| {size} B | consume-only ceiling | {:.0} | {:.1} | - | 1.00 | - | - | - |", ceiling, mb / ceiling_s);

        let naive_out = unique("naive");
        create_topic(&b.bootstrap(), &naive_out, PARTITIONS).unwrap();
        let (naive_s, naive_cpu) = naive_relay(&a.bootstrap(), &topic, &b.bootstrap(), &naive_out, n);
        let naive_cpu_gb = naive_cpu / gb;
        println!("| {size} B | naive rdkafka relay | {:.0} | {:.1} | {:.2} | {:.2} | 1.00 | - | - |",
            n as f64 / naive_s, mb / naive_s, naive_cpu_gb, (n as f64 / naive_s) / ceiling);

        // Ferry, as its own process; progress from its Prometheus endpoint.
        let metrics = format!("127.0.0.1:{}", free_port());
        let config = std::env::temp_dir().join(format!("{}.properties", unique("bench")));
        std::fs::write(&config, format!(
            "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\na->b.enabled = true\na->b.topics = {topic}, {topic}-live\nrefresh.topics.interval.seconds = 1\noffset.flush.interval.ms = 100\n{}",
            a.bootstrap(), b.bootstrap(), std::env::var("FERRY_BENCH_EXTRA").unwrap_or_default().replace(';', "\n"))).unwrap();
        let launched = Instant::now();
        let mut mirror = Process::spawn(ferry, &["mirror", "--config", config.to_str().unwrap(), "--metrics-addr", &metrics], &unique("bench-mirror")).unwrap();
        let pid = mirror.pid();
        // Timed from process launch: Ferry's start-up, discovery and topic creation count
        // against it (the baselines are timed from their first poll).
        // FERRY_BENCH_TRACE=1 prints when each tenth of the records was replicated.
        let trace = std::env::var("FERRY_BENCH_TRACE").is_ok();
        let mut tenths = Vec::new();
        loop {
            let done = scrape_records(&metrics);
            while trace && tenths.len() < 10 && done >= n as f64 * (tenths.len() + 1) as f64 / 10.0 {
                tenths.push(launched.elapsed().as_millis());
            }
            if done >= n as f64 { break; }
            std::thread::sleep(Duration::from_millis(20));
            assert!(launched.elapsed() < Duration::from_secs(600), "ferry did not finish:\n{}", mirror.output());
        }
        if trace {
            println!("<!-- {size} B: ms from launch at each tenth replicated: {tenths:?} -->");
        }
        let ferry_s = launched.elapsed().as_secs_f64();
        let ferry_cpu = proc_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
        let ferry_cpu_gb = ferry_cpu / gb;

        // Latency: a live topic fed at half the consume-only ceiling; a consumer on b measures
        // arrival time minus the record's timestamp.
        let live = format!("{topic}-live");
        create_topic(&a.bootstrap(), &live, PARTITIONS).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let rate = (ceiling / 2.0) as usize;
        let seconds = 5;
        let reader: BaseConsumer = cfg(&b.bootstrap()).set("group.id", unique("lat")).set("fetch.wait.max.ms", "10").create().unwrap();
        let remote = format!("a.{live}");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS { tpl.add_partition_offset(&remote, p, Offset::Beginning).unwrap(); }
        reader.assign(&tpl).unwrap();
        let feeder = {
            let bootstrap = a.bootstrap();
            let live = live.clone();
            std::thread::spawn(move || {
                let p: ThreadedProducer<DefaultProducerContext> = cfg(&bootstrap).set("linger.ms", "1").create().unwrap();
                let payload = vec![b'y'; size];
                let per_tick = rate / 100;
                for tick in 0..seconds * 100 {
                    let t0 = Instant::now();
                    for i in 0..per_tick {
                        let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&live).partition(((tick * per_tick + i) % PARTITIONS as usize) as i32).payload(&payload[..]).timestamp(now_ms());
                        let _ = p.send(rec);
                    }
                    std::thread::sleep(Duration::from_millis(10).saturating_sub(t0.elapsed()));
                }
                p.flush(Duration::from_secs(30)).unwrap();
                per_tick * seconds * 100
            })
        };
        let mut lat = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(seconds as u64 + 30);
        let mut idle_since: Option<Instant> = None;
        while Instant::now() < deadline {
            match reader.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    if let Timestamp::CreateTime(ts) = m.timestamp() { lat.push(now_ms() - ts); }
                    idle_since = None;
                }
                _ if feeder.is_finished() && idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(3) => break,
                _ => {}
            }
        }
        let _ = feeder.join();
        lat.sort_unstable();
        let _ = mirror.terminate(Duration::from_secs(20));
        println!("| {size} B | ferry mirror | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} |",
            n as f64 / ferry_s, mb / ferry_s, ferry_cpu_gb, (n as f64 / ferry_s) / ceiling, ferry_cpu_gb / naive_cpu_gb,
            percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!("|  |  (latency: {} records at {} rec/s, half the ceiling) | | | | | | | |", lat.len(), rate);
    }
}
