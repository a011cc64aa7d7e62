//! End-to-end replication benchmark (not a timed test) on Apache Kafka: Ferry beside
//! MirrorMaker 2 and two baselines, measured in the same run against the same local Kafka
//! brokers (single-node KRaft, `BrokerOptions::benchmark()`: 1 GiB heap, full JIT).
//!
//!   cargo bench -p ferry-cli --bench replication
//!   FERRY_BENCH_RECORDS=200000 FERRY_BENCH_SIZES=100 cargo bench -p ferry-cli --bench replication
//!
//! For each record size, over the same source topic (12 partitions):
//! - consume-only ceiling: an rdkafka consumer in this process with the fetch settings of
//!   Ferry's relay (`fetch.wait.max.ms` 20, `fetch.queue.backoff.ms` 100), one thread as Ferry's
//!   default `tasks.max = 1`;
//! - naive relay: a minimal rdkafka consume->produce loop in this process;
//! - MirrorMaker 2 in dedicated mode (`connect-mirror` 4.1.1, its own JVM, `tasks.max = 1`,
//!   producer `linger.ms` 5 and `batch.size` 256 KiB as its docs suggest for throughput, 512 MiB
//!   heap), into its own target broker;
//! - `ferry mirror` with its defaults, its own process, into its own target broker.
//!
//! The mirrors are timed from process launch (start-up, discovery and topic creation count) and
//! their progress is the remote topic's end offsets; "steady" excludes the start-up. CPU-seconds
//! per GB (start-up included) and peak RSS (VmHWM) are the mirror process's own. Latency: a live
//! topic fed for 5 s at half MirrorMaker 2's steady rate (both mirrors below capacity), arrival
//! on the target minus the record's timestamp.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_testkit::{create_topic, fill, free_port, kafka_java, unique, watermarks, Broker, BrokerOptions, Process};
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

/// A consumer that fetches exactly as Ferry's relay does.
fn consumer(bootstrap: &str) -> BaseConsumer {
    cfg(bootstrap)
        .set("group.id", unique("bench"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", ferry_mirror::relay_defaults::FETCH_WAIT_MAX_MS)
        .set("fetch.queue.backoff.ms", ferry_mirror::relay_defaults::FETCH_QUEUE_BACKOFF_MS)
        .create()
        .unwrap()
}

/// CPU seconds (user + system) of this process so far.
fn self_cpu() -> f64 {
    proc_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap())
}

fn proc_cpu(stat: &str) -> f64 {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Peak resident set size of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).map_or(f64::NAN, |kb| kb / 1024.0)
}

fn consume_only(bootstrap: &str, topic: &str, n: usize) -> (f64, f64) {
    let c = consumer(bootstrap);
    assign_all(&c, topic);
    let cpu0 = self_cpu();
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            got += 1;
        }
    }
    (start.elapsed().as_secs_f64(), self_cpu() - cpu0)
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

/// Records in `topic` on `bootstrap` (sum of end offsets; the mirrors write no markers), 0 while
/// it does not exist.
fn count(bootstrap: &str, topic: &str) -> i64 {
    (0..PARTITIONS).map(|p| watermarks(bootstrap, topic, p).map_or(0, |(_, high)| high)).sum()
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() { return -1; }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

struct Run {
    /// From launch to the first and the last of `n` records on the target.
    first_s: f64,
    done_s: f64,
    cpu_s: f64,
    rss_mib: f64,
    /// Latencies (ms) of the live stream.
    latency: Vec<i64>,
}

/// Launches a mirror (`spawn`), waits until `n` records of `topic` are on `target`, then feeds
/// `{topic}-live` on `source` for 5 s at `rate` records/s (None: half this mirror's own steady
/// rate) and measures their arrival. Returns the run and the rate used.
/// Where a mirror under measurement reads and writes.
struct Route<'a> {
    source: &'a str,
    target: &'a str,
    /// The pre-filled topic.
    topic: &'a str,
    /// The topic fed while latency is measured.
    live: &'a str,
}

fn measure(spawn: impl FnOnce() -> Process, route: &Route<'_>, n: usize, size: usize, rate: Option<usize>) -> (Run, usize) {
    let Route { source, target, topic, live } = *route;
    let remote = format!("a.{topic}");
    let launched = Instant::now();
    let mut mirror = spawn();
    let pid = mirror.pid();
    let mut first_s = None;
    loop {
        let done = count(target, &remote);
        if done > 0 && first_s.is_none() {
            first_s = Some(launched.elapsed().as_secs_f64());
        }
        if done >= n as i64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(launched.elapsed() < Duration::from_secs(900), "the mirror did not finish:\n{}", mirror.output());
    }
    let done_s = launched.elapsed().as_secs_f64();
    let cpu_s = proc_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    let first = first_s.unwrap_or(done_s);
    let rate = rate.unwrap_or((n as f64 / (done_s - first).max(1e-3) / 2.0) as usize);

    let live = live.to_string();
    let reader: BaseConsumer = cfg(target).set("group.id", unique("lat")).set("fetch.wait.max.ms", "10").create().unwrap();
    let remote_live = format!("a.{live}");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS { tpl.add_partition_offset(&remote_live, p, Offset::Beginning).unwrap(); }
    reader.assign(&tpl).unwrap();
    let seconds = 5;
    let feeder = {
        let (bootstrap, live) = (source.to_string(), live.clone());
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
        })
    };
    let mut latency = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds as u64 + 60);
    let mut idle_since: Option<Instant> = None;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                if let Timestamp::CreateTime(ts) = m.timestamp() { latency.push(now_ms() - ts); }
                idle_since = None;
            }
            _ if feeder.is_finished() && idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(5) => break,
            _ => {}
        }
    }
    let _ = feeder.join();
    latency.sort_unstable();
    let rss_mib = peak_rss_mib(pid);
    let _ = mirror.terminate(Duration::from_secs(30));
    (Run { first_s: first, done_s, cpu_s, rss_mib, latency }, rate)
}

fn mm2_properties(source: &str, target: &str, topic: &str, live: &str) -> String {
    let mut p = format!(
        "clusters = a, b\na.bootstrap.servers = {source}\nb.bootstrap.servers = {target}\n\
         a->b.enabled = true\na->b.topics = {topic}, {live}\nb->a.enabled = false\n\
         tasks.max = 1\nrefresh.topics.interval.seconds = 5\nsync.topic.acls.enabled = false\n\
         b.producer.linger.ms = 5\nb.producer.batch.size = 262144\n\
         a.consumer.fetch.max.wait.ms = 20\n"
    );
    p.push_str(&ferry_testkit::mm2_single_node_settings());
    p
}

fn main() {
    // `cargo bench` passes --bench; nothing else is parsed.
    let n: usize = std::env::var("FERRY_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    println!("# Ferry vs MirrorMaker 2: {n} records per size, {PARTITIONS} partitions, Apache Kafka 4.1.1 (one KRaft node per cluster) on loopback, 2 cores");
    println!("| size | run | records/s | MB/s | steady records/s | CPU-s per GB | peak RSS MiB | first record s | p50 ms | p99 ms | vs ceiling |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // FERRY_BENCH_SIZES=100 runs one size (comma-separated record sizes in bytes).
    let sizes: Vec<usize> = std::env::var("FERRY_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1024]);
    for size in sizes {
        let a = Broker::start_with("bench-a", BrokerOptions::benchmark()).unwrap();
        let b_ferry = Broker::start_with("bench-b-ferry", BrokerOptions::benchmark()).unwrap();
        let b_mm2 = Broker::start_with("bench-b-mm2", BrokerOptions::benchmark()).unwrap();
        let topic = unique("bench");
        create_topic(&a.bootstrap(), &topic, PARTITIONS).unwrap();
        // A live topic per mirror: each replicates only the records fed while it is measured.
        let (live_mm2, live_ferry) = (format!("{topic}-live-mm2"), format!("{topic}-live-ferry"));
        create_topic(&a.bootstrap(), &live_mm2, PARTITIONS).unwrap();
        create_topic(&a.bootstrap(), &live_ferry, PARTITIONS).unwrap();
        fill(&a.bootstrap(), &topic, PARTITIONS, n, size);
        let gb = (n * (size + 12)) as f64 / 1e9;
        let mb = gb * 1000.0;

        let (ceiling_s, ceiling_cpu) = consume_only(&a.bootstrap(), &topic, n);
        let ceiling = n as f64 / ceiling_s;
        println!("| {size} B | consume-only ceiling | {ceiling:.0} | {:.1} | - | {:.2} | - | - | - | - | 1.00 |", mb / ceiling_s, ceiling_cpu / gb);

        let naive_out = unique("naive");
        create_topic(&b_ferry.bootstrap(), &naive_out, PARTITIONS).unwrap();
        let (naive_s, naive_cpu) = naive_relay(&a.bootstrap(), &topic, &b_ferry.bootstrap(), &naive_out, n);
        println!("| {size} B | naive rdkafka relay | {:.0} | {:.1} | - | {:.2} | - | - | - | - | {:.2} |",
            n as f64 / naive_s, mb / naive_s, naive_cpu / gb, (n as f64 / naive_s) / ceiling);

        let row = |name: &str, r: &Run| {
            println!("| {size} B | {name} | {:.0} | {:.1} | {:.0} | {:.2} | {:.0} | {:.1} | {} | {} | {:.2} |",
                n as f64 / r.done_s, mb / r.done_s, n as f64 / (r.done_s - r.first_s).max(1e-3), r.cpu_s / gb, r.rss_mib, r.first_s,
                percentile(&r.latency, 0.5), percentile(&r.latency, 0.99), (n as f64 / r.done_s) / ceiling);
        };

        let mm2_config = std::env::temp_dir().join(format!("{}.properties", unique("bench-mm2")));
        std::fs::write(&mm2_config, mm2_properties(&a.bootstrap(), &b_mm2.bootstrap(), &topic, &live_mm2)).unwrap();
        // Latency is measured at half MirrorMaker 2's steady rate for both, so both run below
        // their capacity (half the ceiling was above it).
        let (mm2, rate) = measure(
            || {
                let log = std::env::temp_dir().join(format!("{}.log", unique("bench-mm2")));
                let mut cmd = kafka_java("512m", "org.apache.kafka.connect.mirror.MirrorMaker").unwrap();
                cmd.arg(&mm2_config);
                Process::spawn_command(cmd, &log).unwrap()
            },
            &Route { source: &a.bootstrap(), target: &b_mm2.bootstrap(), topic: &topic, live: &live_mm2 }, n, size, None,
        );
        row("MirrorMaker 2 (dedicated)", &mm2);

        let metrics = format!("127.0.0.1:{}", free_port());
        let config = std::env::temp_dir().join(format!("{}.properties", unique("bench")));
        std::fs::write(&config, format!(
            "clusters = a, b\na.bootstrap.servers = {}\nb.bootstrap.servers = {}\na->b.enabled = true\na->b.topics = {topic}, {live_ferry}\n{}",
            a.bootstrap(), b_ferry.bootstrap(), std::env::var("FERRY_BENCH_EXTRA").unwrap_or_default().replace(';', "\n"))).unwrap();
        let (ferry_run, _) = measure(
            || Process::spawn(ferry, &["mirror", "--config", config.to_str().unwrap(), "--metrics-addr", &metrics], &unique("bench-mirror")).unwrap(),
            &Route { source: &a.bootstrap(), target: &b_ferry.bootstrap(), topic: &topic, live: &live_ferry }, n, size, Some(rate),
        );
        row("ferry mirror", &ferry_run);
        println!("|  | Ferry / MM2 | {:.2}x | | {:.2}x | {:.2}x CPU | {:.2}x RSS | | | | |",
            mm2.done_s / ferry_run.done_s,
            (mm2.done_s - mm2.first_s) / (ferry_run.done_s - ferry_run.first_s),
            ferry_run.cpu_s / mm2.cpu_s, ferry_run.rss_mib / mm2.rss_mib);
        println!("|  | (latency: records fed at {rate} rec/s for 5 s, half MirrorMaker 2's steady rate) | | | | | | | | | |");
    }
}
