//! `ferry sql run --engine flink` on a real Apache Flink 2.2 session cluster (JobManager,
//! TaskManager and SQL Gateway from Maven Central's jars, `scripts/flink-cluster`) over Apache
//! Kafka: the same job file the embedded engine runs is submitted through the gateway, followed,
//! stopped with a savepoint and resumed from it; the sinks are compared with a reference the test
//! computes from the input, and a shared set of jobs (windows, updating aggregates, joins) gives
//! equal results on both engines.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use ferry_testkit::{create_topic, unique, Broker, FlinkCluster, RecordProducer, TestRecord};
use serde_json::{json, Value};

const CUSTOMERS: [&str; 5] = ["ann", "bob", "cy", "dee", "eve"];

fn orders(from: u64, to: u64) -> Vec<TestRecord> {
    (from..to)
        .map(|i| TestRecord { partition: (i % 2) as i32, offset: 0, key: None, value: Some(json!({"id": i, "customer": CUSTOMERS[(i % 5) as usize], "amount": i * 7 % 100}).to_string().into_bytes()), headers: vec![], timestamp: None })
        .collect()
}

/// Per customer: orders and the sum of their amounts.
fn totals(upto: u64) -> BTreeMap<String, (i64, i64)> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for i in 0..upto {
        let e = out.entry(CUSTOMERS[(i % 5) as usize].to_string()).or_default();
        *e = (e.0 + 1, e.1 + (i * 7 % 100) as i64);
    }
    out
}

/// `ferry sql ARGS`: (exit code, stdout, stderr).
fn sql(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::ferry()).arg("sql").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn job_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.sql", unique("flink-job")));
    std::fs::write(&path, text).unwrap();
    // The embedded engine accepts it as it is: one dialect.
    let (code, out, err) = sql(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    path
}

/// The ids of the Flink jobs a `run` printed.
fn job_ids(stdout: &str) -> Vec<String> {
    stdout.lines().filter_map(|l| l.strip_prefix("flink job ")).filter(|l| l.contains(" submitted")).map(|l| l.split_whitespace().next().unwrap().to_string()).collect()
}

/// The upsert topic folded by key.
fn folded(bootstrap: &str, topic: &str) -> BTreeMap<String, (i64, i64)> {
    let total: i64 = ferry_testkit::watermarks(bootstrap, topic, 0).unwrap().1;
    let mut out = BTreeMap::new();
    for r in ferry_testkit::consume_all(bootstrap, topic, 1, total as usize, std::time::Duration::from_secs(20)).unwrap() {
        let key: Value = serde_json::from_slice(r.key.as_ref().unwrap()).unwrap();
        let customer = key["customer"].as_str().unwrap().to_string();
        match r.value {
            Some(v) => {
                let v: Value = serde_json::from_slice(&v).unwrap();
                out.insert(customer, (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap()));
            }
            None => {
                out.remove(&customer);
            }
        }
    }
    out
}

/// The ids in the copy topic, with how often each was written.
fn copied(bootstrap: &str, topic: &str) -> BTreeMap<i64, usize> {
    let total: i64 = (0..2).map(|p| ferry_testkit::watermarks(bootstrap, topic, p).unwrap().1).sum();
    let mut out = BTreeMap::new();
    for r in ferry_testkit::consume_all(bootstrap, topic, 2, total as usize, std::time::Duration::from_secs(20)).unwrap() {
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        *out.entry(v["id"].as_i64().unwrap()).or_default() += 1;
    }
    out
}

fn tables(bootstrap: &str, source: &str, copy: &str, sums: &str, bounded: bool) -> String {
    let bound = if bounded { ",\n  'scan.bounded.mode' = 'latest-offset'" } else { "" };
    format!(
        "CREATE TABLE orders (id BIGINT, customer STRING, amount BIGINT) WITH (
  'connector' = 'kafka', 'topic' = '{source}', 'properties.bootstrap.servers' = '{bootstrap}',
  'format' = 'json', 'scan.startup.mode' = 'earliest-offset'{bound}
);
CREATE TABLE copy (id BIGINT, customer STRING, amount BIGINT) WITH (
  'connector' = 'kafka', 'topic' = '{copy}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json'
);
CREATE TABLE totals (customer STRING, n BIGINT, total BIGINT, PRIMARY KEY (customer) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = '{sums}', 'properties.bootstrap.servers' = '{bootstrap}',
  'key.format' = 'json', 'value.format' = 'json'
);
EXECUTE STATEMENT SET
BEGIN
  INSERT INTO copy SELECT id, customer, amount FROM orders;
  INSERT INTO totals SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer;
END;
"
    )
}

/// Waits until the totals cover orders 0..n and each of them was copied exactly once.
fn all_copied_once(bootstrap: &str, sums: &str, copy: &str, n: u64, what: &str) {
    let reached = ferry_testkit::wait_for(std::time::Duration::from_secs(90), || (folded(bootstrap, sums) == totals(n)).then_some(()));
    assert!(reached.is_some(), "{what}: totals {:?}", folded(bootstrap, sums));
    let want: BTreeMap<i64, usize> = (0..n as i64).map(|i| (i, 1)).collect();
    let got = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || Some(copied(bootstrap, copy)).filter(|c| *c == want));
    assert_eq!(got, Some(want), "{what}");
}

/// A topic's records as a sorted list of JSON values (an append table), or folded by key (an
/// upsert table).
fn table_of(bootstrap: &str, topic: &str, partitions: i32, upsert: bool) -> Vec<Value> {
    let total: i64 = (0..partitions).map(|p| ferry_testkit::watermarks(bootstrap, topic, p).unwrap().1).sum();
    let records = ferry_testkit::consume_all(bootstrap, topic, partitions, total as usize, std::time::Duration::from_secs(20)).unwrap();
    let mut rows: Vec<Value> = if upsert {
        let mut folded: BTreeMap<String, Value> = BTreeMap::new();
        for r in records {
            let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
            match r.value {
                Some(v) => folded.insert(key, serde_json::from_slice(&v).unwrap()),
                None => folded.remove(&key),
            };
        }
        folded.into_values().collect()
    } else {
        records.iter().map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap()).collect()
    };
    rows.sort_by_key(|v| v.to_string());
    rows
}

/// Windows, an updating aggregate with HAVING, and joins (regular and interval) over the same
/// bounded input on both engines: equal results, each checked not to be empty.
fn same_results_on_both_engines(bootstrap: &str, gateway: &str, producer: &RecordProducer) {
    let (orders_topic, customers_topic) = (unique("orders"), unique("customers"));
    create_topic(bootstrap, &orders_topic, 2).unwrap();
    create_topic(bootstrap, &customers_topic, 1).unwrap();
    let orders: Vec<TestRecord> = (0..600_i64)
        .map(|i| {
            // Out of order by up to 4 s; 10 customers, c8 and c9 unknown to the customers table.
            let ts = 1_700_000_000_000 + i * 500 - (i * 7919 % 4) * 1000;
            let value = json!({"id": i, "customer": format!("c{}", i % 10), "amount": i * 13 % 97, "ts": ferry_testkit::sql_timestamp(ts)});
            TestRecord { partition: (i % 2) as i32, offset: 0, key: None, value: Some(value.to_string().into_bytes()), headers: vec![], timestamp: None }
        })
        .collect();
    let customers: Vec<TestRecord> = (0..8)
        .map(|c| TestRecord { partition: 0, offset: 0, key: None, value: Some(json!({"name": format!("c{c}"), "tier": if c % 3 == 0 { "gold" } else { "silver" }, "ts": ferry_testkit::sql_timestamp(1_700_000_000_000)}).to_string().into_bytes()), headers: vec![], timestamp: None })
        .collect();
    producer.send_all(&orders_topic, &orders).unwrap();
    producer.send_all(&customers_topic, &customers).unwrap();
    // (name, sink columns, upsert, query)
    let jobs = [
        ("tumble", "customer STRING, window_start TIMESTAMP(3), n BIGINT, total BIGINT", false, "SELECT customer, window_start, COUNT(*), SUM(amount) FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY customer, window_start, window_end"),
        ("hop", "customer STRING, window_end TIMESTAMP(3), top BIGINT", false, "SELECT customer, window_end, MAX(amount) FROM TABLE(HOP(TABLE orders, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND)) GROUP BY customer, window_start, window_end"),
        ("having", "customer STRING, n BIGINT, average BIGINT, PRIMARY KEY (customer) NOT ENFORCED", true, "SELECT customer, COUNT(*), AVG(amount) FROM orders GROUP BY customer HAVING SUM(amount) > 2800"),
        ("joined", "id BIGINT, customer STRING, tier STRING", false, "SELECT o.id, o.customer, c.tier FROM orders AS o JOIN customers AS c ON o.customer = c.name WHERE o.amount > 50"),
        ("interval", "id BIGINT, tier STRING", false, "SELECT o.id, c.tier FROM orders AS o, customers AS c WHERE o.customer = c.name AND o.ts BETWEEN c.ts AND c.ts + INTERVAL '30' SECOND"),
    ];
    for (name, columns, upsert, query) in jobs {
        let mut results = Vec::new();
        for engine in ["ferry", "flink"] {
            let sink = unique(&format!("{name}-{engine}"));
            create_topic(bootstrap, &sink, 1).unwrap();
            let connector = if upsert { "'connector' = 'upsert-kafka', 'key.format' = 'json', 'value.format' = 'json'" } else { "'connector' = 'kafka', 'format' = 'json'" };
            let text = format!(
                "CREATE TABLE orders (id BIGINT, customer STRING, amount BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH (
  'connector' = 'kafka', 'topic' = '{orders_topic}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
CREATE TABLE customers (name STRING, tier STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH (
  'connector' = 'kafka', 'topic' = '{customers_topic}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
CREATE TABLE results ({columns}) WITH ({connector}, 'topic' = '{sink}', 'properties.bootstrap.servers' = '{bootstrap}');
INSERT INTO results {query};
"
            );
            let file = job_file(&text);
            let (code, out, err) = if engine == "ferry" { sql(&["run", file.to_str().unwrap()]) } else { sql(&["run", file.to_str().unwrap(), "--engine", "flink", "--gateway", gateway]) };
            assert_eq!(code, 0, "{name} on {engine}: {out}{err}");
            results.push(table_of(bootstrap, &sink, 1, upsert));
        }
        assert!(!results[0].is_empty(), "{name}: no rows");
        assert_eq!(results[0], results[1], "{name}: Ferry's rows, then Flink's");
    }
}

#[test]
fn a_job_file_runs_on_flink_stops_with_a_savepoint_and_resumes_from_it() {
    let broker = Broker::start("flink-engine").unwrap();
    let bootstrap = broker.bootstrap();
    let flink = FlinkCluster::start("flink-engine", 2).unwrap();
    let gateway = flink.gateway();
    let producer = RecordProducer::new(&bootstrap).unwrap();
    same_results_on_both_engines(&bootstrap, &gateway, &producer);

    // A bounded job, followed to its end: the command exits 0 once Flink says FINISHED.
    let (source, copy, sums) = (unique("orders"), unique("copy"), unique("totals"));
    create_topic(&bootstrap, &source, 2).unwrap();
    create_topic(&bootstrap, &copy, 2).unwrap();
    create_topic(&bootstrap, &sums, 1).unwrap();
    producer.send_all(&source, &orders(0, 300)).unwrap();
    let file = job_file(&tables(&bootstrap, &source, &copy, &sums, true));
    let (code, out, err) = sql(&["run", file.to_str().unwrap(), "--engine", "flink", "--gateway", &gateway]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(job_ids(&out).len(), 1, "one job for the statement set: {out}");
    assert!(out.contains(": FINISHED"), "{out}");
    assert_eq!(folded(&bootstrap, &sums), totals(300));
    assert_eq!(copied(&bootstrap, &copy), (0..300).map(|i| (i, 1)).collect());

    // An unbounded job: detached, listed running, stopped with a savepoint, resumed from it.
    let (source, copy, sums) = (unique("orders"), unique("copy"), unique("totals"));
    create_topic(&bootstrap, &source, 2).unwrap();
    create_topic(&bootstrap, &copy, 2).unwrap();
    create_topic(&bootstrap, &sums, 1).unwrap();
    producer.send_all(&source, &orders(0, 400)).unwrap();
    let file = job_file(&tables(&bootstrap, &source, &copy, &sums, false));
    let (code, out, err) = sql(&["run", file.to_str().unwrap(), "--engine", "flink", "--gateway", &gateway, "--detach", "--name", "resumable"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = job_ids(&out).pop().unwrap_or_else(|| panic!("no job id: {out}{err}"));
    let reached = ferry_testkit::wait_for(std::time::Duration::from_secs(90), || (folded(&bootstrap, &sums) == totals(400)).then_some(()));
    assert!(reached.is_some(), "Flink's totals never reached the reference's: {:?}", folded(&bootstrap, &sums));
    let (code, out, err) = sql(&["jobs", "--gateway", &gateway]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.contains(&first) && l.contains("resumable") && l.ends_with("RUNNING")), "{out}");

    let (code, out, err) = sql(&["stop", &first, "--gateway", &gateway]);
    assert_eq!(code, 0, "{out}{err}");
    let savepoint = out.trim().to_string();
    assert!(savepoint.contains("savepoint-"), "a savepoint path: {out}");
    let (_, out, _) = sql(&["jobs", "--gateway", &gateway]);
    assert!(out.lines().any(|l| l.contains(&first) && l.ends_with("FINISHED")), "{out}");

    // While it is stopped, more orders; the resumed job reads only those (its offsets and its
    // state come from the savepoint): each order copied once, totals over all.
    producer.send_all(&source, &orders(400, 700)).unwrap();
    let (code, out, err) = sql(&["run", file.to_str().unwrap(), "--engine", "flink", "--gateway", &gateway, "--detach", "--from-savepoint", &savepoint, "--name", "resumable"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = job_ids(&out).pop().unwrap();
    assert_ne!(second, first);
    all_copied_once(&bootstrap, &sums, &copy, 700, "the resumed job's totals; each order copied exactly once across the stop and the resume");
    // ferry serve lists the cluster's jobs and stops one with a savepoint over REST.
    let config = std::env::temp_dir().join(format!("{}.properties", unique("flink-serve")));
    std::fs::write(&config, format!("clusters = a\na.bootstrap.servers = {bootstrap}\n")).unwrap();
    let serve_addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let data = std::env::temp_dir().join(unique("flink-serve-data"));
    let mut serve = ferry_testkit::Process::spawn(common::ferry(), &["serve", "--config", config.to_str().unwrap(), "--listen", &serve_addr, "--data-dir", data.to_str().unwrap(), "--flink-gateway", &gateway], &unique("flink-serve")).unwrap();
    let listed = ferry_testkit::wait_for(std::time::Duration::from_secs(60), || match ferry_testkit::http_request(&serve_addr, "GET", "/api/v1/sql/flink/jobs", &[], "") {
        Ok((200, body)) => serde_json::from_str::<Vec<Value>>(&body).ok().filter(|jobs| jobs.iter().any(|j| j["id"] == second.as_str() && j["state"] == "running" && j["gateway"] == gateway.as_str())),
        _ => None,
    });
    assert!(listed.is_some(), "the resumed job listed running by ferry serve\n{}", serve.output());
    // Its progress from the JobManager's metrics: the 300 orders read since the resume, each
    // into the copy and the totals (no window drops late rows and the orders table has no
    // watermark: neither is told).
    let measured = ferry_testkit::wait_for(std::time::Duration::from_secs(60), || {
        let (_, body) = ferry_testkit::http_request(&serve_addr, "GET", "/api/v1/sql/flink/jobs", &[], "").ok()?;
        let jobs: Vec<Value> = serde_json::from_str(&body).ok()?;
        jobs.into_iter().find(|j| j["id"] == second.as_str() && j["records_in"].as_u64() >= Some(300) && j["records_out"].as_u64() >= Some(301))
    });
    let job = measured.unwrap_or_else(|| panic!("the resumed job's metrics never showed its 300 orders\n{}", serve.output()));
    assert_eq!((job["late"].as_u64(), job["watermark_ms"].as_i64(), job["metrics_error"].as_str()), (None, None, None), "{job}");
    // The console's SQL page in headless Chromium: the job's row, stopped from its button.
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-sql.png");
    let (ran, seen) = common::console_script(&["sql.mjs", &format!("http://{serve_addr}/"), "", screenshot.to_str().unwrap(), &second]);
    println!("browser: {seen}\nscreenshot: {}", screenshot.display());
    assert!(ran, "{seen}\n{}", serve.output());
    assert_eq!(seen["row"][0], "flink");
    assert_eq!(seen["row"][1], "resumable");
    assert!(seen["row"][4].as_str().is_some_and(|n| n.replace(',', "").parse::<u64>().is_ok_and(|n| n >= 300)), "records in shown: {seen}");
    assert!(seen["savepoint"].as_str().is_some_and(|p| p.contains("savepoint-")), "{seen}");
    assert_eq!(seen["state"], "finished");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "screenshot saved");
    let (status, body) = ferry_testkit::http_request(&serve_addr, "POST", &format!("/api/v1/sql/flink/jobs/{second}/stop"), &[], "").unwrap();
    assert_eq!(status, 404, "a stopped job cannot be stopped again: {body}");
    let (_, body) = ferry_testkit::http_request(&serve_addr, "GET", "/api/v1/sql/flink/jobs", &[], "").unwrap();
    assert!(serde_json::from_str::<Vec<Value>>(&body).unwrap().iter().any(|j| j["id"] == second.as_str() && j["state"] == "finished" && j["restarted_as"] == seen["restarted"]), "{body}");
    // The console resumed it from its savepoint with the statements ferry sql run recorded: more
    // orders, each copied once, totals over all.
    assert_eq!(seen["resume"], "resume");
    let third = seen["restarted"].as_str().unwrap_or_else(|| panic!("no restarted job: {seen}")).to_string();
    assert_eq!(seen["restartedRow"][3], "running", "{seen}");
    producer.send_all(&source, &orders(700, 800)).unwrap();
    all_copied_once(&bootstrap, &sums, &copy, 800, "the job resumed from the console; each order copied exactly once across the console's stop and resume");
    // A running job restarted over REST: stopped with a savepoint and started again from it.
    let (status, body) = ferry_testkit::http_request(&serve_addr, "POST", &format!("/api/v1/sql/flink/jobs/{third}/restart"), &[], "").unwrap();
    assert_eq!(status, 200, "{body}\n{}", serve.output());
    let restarted: Value = serde_json::from_str(&body).unwrap();
    let fourth = restarted["restarted"].as_str().unwrap().to_string();
    assert!(restarted["savepoint"].as_str().is_some_and(|p| p.contains("savepoint-")) && fourth != third, "{body}");
    producer.send_all(&source, &orders(800, 900)).unwrap();
    all_copied_once(&bootstrap, &sums, &copy, 900, "the restarted job; each order copied exactly once across the restart");
    // A savepoint resumed once is not resumed twice; a job Ferry did not submit has no statements.
    let (status, body) = ferry_testkit::http_request(&serve_addr, "POST", &format!("/api/v1/sql/flink/jobs/{second}/restart"), &[], "").unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains(&format!("restarted already, as {third}")), "{body}");
    // The first run's savepoint was resumed by `ferry sql run --from-savepoint`: told, and not
    // resumed again.
    let (_, body) = ferry_testkit::http_request(&serve_addr, "GET", "/api/v1/sql/flink/jobs", &[], "").unwrap();
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    let job = listed.iter().find(|j| j["id"] == first.as_str()).unwrap_or_else(|| panic!("{body}"));
    assert_eq!((job["restarted_as"].as_str(), job["savepoint"].as_str()), (Some(second.as_str()), None), "{job}");
    let (status, body) = ferry_testkit::http_request(&serve_addr, "POST", &format!("/api/v1/sql/flink/jobs/{first}/restart"), &[], "").unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains(&format!("was resumed already, by {second}")), "{body}");
    let (status, body) = ferry_testkit::http_request(&serve_addr, "POST", "/api/v1/sql/flink/jobs/0123456789abcdef0123456789abcdef/restart", &[], "").unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, _) = ferry_testkit::http_request(&serve_addr, "POST", &format!("/api/v1/sql/flink/jobs/{fourth}/stop"), &[], "").unwrap();
    assert_eq!(status, 200);
    let _ = serve.terminate(std::time::Duration::from_secs(20));

    // A materialized view whose query runs on Flink: Ferry serves it from the changelog topic
    // at the same URL, with the same answers as the embedded engine's.
    let view_job = format!(
        "{}CREATE MATERIALIZED VIEW spend WITH ('endpoint.big' = 'SELECT customer, total FROM spend WHERE total >= {{min}}') AS
SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer;
",
        tables(&bootstrap, &source, &copy, &sums, false).split("CREATE TABLE copy").next().unwrap()
    );
    let file = job_file(&view_job);
    let addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let mut served = ferry_testkit::Process::spawn(common::ferry(), &["sql", "run", file.to_str().unwrap(), "--engine", "flink", "--gateway", &gateway, "--listen", &addr, "--name", "views"], &unique("flink-views")).unwrap();
    let want: Vec<Value> = totals(900).iter().map(|(c, (n, t))| json!({"customer": c, "n": n, "total": t})).collect();
    let got = ferry_testkit::wait_for(std::time::Duration::from_secs(120), || match ferry_testkit::http_request(&addr, "GET", "/api/v1/query/spend/all", &[], "") {
        Ok((200, body)) => Some(serde_json::from_str::<Vec<Value>>(&body).unwrap()).filter(|rows| *rows == want),
        _ => None,
    });
    assert_eq!(got, Some(want.clone()), "the view served from Flink's changelog\n{}", served.output());
    let (status, body) = ferry_testkit::http_request(&addr, "GET", "/api/v1/query/spend/big?min=2000", &[], "").unwrap();
    let big: Vec<Value> = want.iter().filter(|r| r["total"].as_i64().unwrap() >= 2000).map(|r| json!({"customer": r["customer"], "total": r["total"]})).collect();
    assert_eq!((status, serde_json::from_str::<Vec<Value>>(&body).unwrap()), (200, big));
    let status = served.terminate(std::time::Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}\n{}", served.output());
}

#[test]
fn an_unreachable_gateway_and_misused_flags_are_refused_clearly() {
    let file = job_file(&tables("127.0.0.1:9", "a", "b", "c", true));
    let port = ferry_testkit::free_port();
    let (code, _, err) = sql(&["run", file.to_str().unwrap(), "--engine", "flink", "--gateway", &format!("http://127.0.0.1:{port}")]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("cannot reach the SQL Gateway at http://127.0.0.1:{port}")), "{err}");
    let (code, _, err) = sql(&["run", file.to_str().unwrap(), "--engine", "flink"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--engine flink needs --gateway"), "{err}");
    let (code, _, err) = sql(&["run", file.to_str().unwrap(), "--engine", "flink", "--gateway", "http://127.0.0.1:1", "--state-dir", "/tmp/x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--state-dir is for the embedded engine"), "{err}");
    let (code, _, err) = sql(&["run", file.to_str().unwrap(), "--from-savepoint", "/tmp/x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--from-savepoint is for --engine flink"), "{err}");
}
