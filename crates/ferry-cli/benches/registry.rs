//! `ferry registry` under load over loopback (not a timed test), against a local Apache Kafka
//! broker keeping `_schemas`.
//!
//!   cargo bench -p ferry-cli --bench registry                 # 5 s per operation
//!   BENCH_SECONDS=10 BENCH_CONNECTIONS=32 cargo bench -p ferry-cli --bench registry
//!
//! Every operation runs on BENCH_CONNECTIONS keep-alive HTTP/1.1 connections for BENCH_SECONDS:
//! get a schema by id, look a schema up in its subject, register a schema the subject has
//! already, register a new one (a Kafka transaction each), and check compatibility against 10,
//! 100 and 1,000 versions under BACKWARD_TRANSITIVE (30-field schemas, each version adding a field and dropping one). Each prints requests/s, p50 and p99, and
//! their ratios to `GET /` (a static route of the same server, through the same middleware:
//! the HTTP ceiling) measured in the same run after a warm-up, and measured again at the end.
//! Every answer must be 200; every compatibility check is of a different candidate.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_testkit::{free_port, unique, Broker, Process};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Request {
    method: &'static str,
    path: String,
    body: String,
}

fn get(path: String) -> Request {
    Request { method: "GET", path, body: String::new() }
}

fn post(path: String, body: Value) -> Request {
    Request { method: "POST", path, body: body.to_string() }
}

/// One keep-alive connection: sends a request, reads the answer; (status, body).
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    async fn open(addr: &str) -> Connection {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Connection { reader: BufReader::new(stream) }
    }

    async fn send(&mut self, r: &Request) -> (u16, String) {
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n",
            r.method,
            r.path,
            r.body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(r.body.as_bytes()).await.unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).await.unwrap();
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

struct Measured {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `make(n)` requests on `connections` connections for `seconds`.
async fn load(addr: &str, connections: usize, seconds: u64, make: impl Fn(u64) -> Request + Send + Sync + 'static) -> Measured {
    let make = std::sync::Arc::new(make);
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (make, counter, addr) = (make.clone(), counter.clone(), addr.to_string());
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::open(&addr).await;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let r = make(counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                let sent = Instant::now();
                let (status, body) = c.send(&r).await;
                latencies.push(sent.elapsed());
                assert_eq!(status, 200, "{} {}: {body}", r.method, r.path);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Measured { rps: all.len() as f64 / elapsed.as_secs_f64(), p50: at(0.5), p99: at(0.99) }
}

/// A record schema with `fields` optional fields (each added with a default: every version
/// reads the ones before it).
fn record(name: &str, fields: usize) -> String {
    let fields: Vec<Value> = (0..fields).map(|i| json!({"name": format!("f{i}"), "type": ["null", "long"], "default": null})).collect();
    json!({"type": "record", "name": name, "namespace": "bench", "fields": fields}).to_string()
}

/// Version `v` of a subject's history: 30 optional fields, each version adding one and
/// dropping the oldest (every version differs for a reader, as real histories do; real schemas
/// have tens of fields).
fn version(v: usize) -> String {
    let fields: Vec<Value> = (v.saturating_sub(29)..=v).map(|i| json!({"name": format!("f{i}"), "type": ["null", "long"], "default": null})).collect();
    json!({"type": "record", "name": "History", "namespace": "bench", "fields": fields}).to_string()
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let connections: usize = std::env::var("BENCH_CONNECTIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let broker = Broker::start("bench-registry").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = std::env::temp_dir().join(format!("{}.properties", unique("bench-registry")));
    std::fs::write(&config, format!("listeners=http://{addr}\nkafkastore.bootstrap.servers={}\nkafkastore.topic.replication.factor=1\n", broker.bootstrap())).unwrap();
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let process = Process::spawn(ferry, &["registry", "--config", config.to_str().unwrap()], &unique("bench-registry")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let wait = Instant::now();
        while TcpStream::connect(&addr).await.is_err() {
            assert!(wait.elapsed() < Duration::from_secs(60), "the registry did not listen:\n{}", process.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut c = Connection::open(&addr).await;
        // Seed: 200 schemas to get by id; subjects of 10, 100 and 1,000 versions (registered at
        // NONE, then checked at BACKWARD_TRANSITIVE).
        let seeding = Instant::now();
        let mut ids = Vec::new();
        for i in 0..200 {
            let (status, body) = c.send(&post(format!("/subjects/ids-{i}-value/versions"), json!({"schema": record(&format!("Id{i}"), 3)}))).await;
            assert_eq!(status, 200, "{body}");
            ids.push(serde_json::from_str::<Value>(&body).unwrap()["id"].as_i64().unwrap());
        }
        for versions in [10, 100, 1000] {
            let subject = format!("history-{versions}-value");
            assert_eq!(c.send(&Request { method: "PUT", path: format!("/config/{subject}"), body: json!({"compatibility": "NONE"}).to_string() }).await.0, 200);
            for v in 0..versions {
                let (status, body) = c.send(&post(format!("/subjects/{subject}/versions"), json!({"schema": version(v)}))).await;
                assert_eq!(status, 200, "{body}");
            }
            assert_eq!(c.send(&Request { method: "PUT", path: format!("/config/{subject}"), body: json!({"compatibility": "BACKWARD_TRANSITIVE"}).to_string() }).await.0, 200);
        }
        println!("seeded 200 schemas and 1,110 versions in {:?} ({connections} connections, {seconds} s per operation)", seeding.elapsed());

        // Warmed up first; the ceiling is the better of a measure before and after the rest.
        load(&addr, connections, 1, |_| get("/".into())).await;
        let ceiling = load(&addr, connections, seconds, |_| get("/".into())).await;
        let report = |name: &str, m: &Measured| {
            println!(
                "{name:<34} {:>9.0} req/s ({:.2}x)   p50 {:>8.2?} ({:.2}x)   p99 {:>8.2?} ({:.2}x)",
                m.rps,
                m.rps / ceiling.rps,
                m.p50,
                m.p50.as_secs_f64() / ceiling.p50.as_secs_f64(),
                m.p99,
                m.p99.as_secs_f64() / ceiling.p99.as_secs_f64()
            );
        };
        report("GET / (HTTP ceiling)", &ceiling);
        let by_id = ids.clone();
        report("get schema by id", &load(&addr, connections, seconds, move |n| get(format!("/schemas/ids/{}", by_id[n as usize % by_id.len()]))).await);
        report("lookup in subject", &load(&addr, connections, seconds, |n| post(format!("/subjects/ids-{}-value", n % 200), json!({"schema": record(&format!("Id{}", n % 200), 3)}))).await);
        report("register existing", &load(&addr, connections, seconds, |n| post(format!("/subjects/ids-{}-value/versions", n % 200), json!({"schema": record(&format!("Id{}", n % 200), 3)}))).await);
        let run = unique("new");
        report("register new", &load(&addr, connections, seconds, move |n| post(format!("/subjects/{run}-{n}-value/versions"), json!({"schema": record(&format!("New{n}"), 2)}))).await);
        for versions in [10, 100, 1000] {
            // A different candidate each time (one more optional field, named by the request), so
            // no check repeats an earlier one.
            let m = load(&addr, connections, seconds, move |n| {
                let mut candidate: Value = serde_json::from_str(&version(versions)).unwrap();
                candidate["fields"].as_array_mut().unwrap().push(json!({"name": format!("extra{n}"), "type": ["null", "string"], "default": null}));
                post(format!("/compatibility/subjects/history-{versions}-value/versions"), json!({"schema": candidate.to_string()}))
            })
            .await;
            report(&format!("check vs {versions} versions (transitive)"), &m);
        }
        let after = load(&addr, connections, seconds, |_| get("/".into())).await;
        println!("GET / again at the end: {:.0} req/s, p50 {:.2?} (the ceiling above is the first measure)", after.rps, after.p50);
    });
    let rss = std::fs::read_to_string(format!("/proc/{}/status", process.pid())).ok().and_then(|s| s.lines().find(|l| l.starts_with("VmRSS")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)));
    println!("registry RSS after the run: {} MiB", rss.unwrap_or(0) / 1024);
}
