//! `ferry sql` on Apache Kafka: a job file in Flink's dialect reads a topic, filters and
//! projects it with Flink's functions, metadata and computed columns, and writes another topic;
//! the sink's records are compared with a reference the test computes from the same input.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;

use ferry_testkit::{consume_all, create_topic, unique, Broker, RecordProducer, TestRecord};
use serde_json::{json, Value};

/// A job file Ferry runs, checked to be valid Flink SQL too: Apache Flink's planner plans every
/// INSERT (`ferry_testkit::flink_explain`; Ferry's `CREATE MATERIALIZED VIEW` is not Flink's and
/// is left out). The dialect is Flink's, so a file Flink refuses is a bug in Ferry's dialect.
fn job_file(name: &str, text: &str) -> PathBuf {
    let path = unchecked_job_file(name, text);
    if let Err(e) = ferry_testkit::flink_explain(&path) {
        panic!("{e:#}\n--- the job file:\n{text}");
    }
    path
}

/// A job file with a mistake on purpose (Ferry must refuse it).
fn unchecked_job_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.sql", unique(name)));
    std::fs::write(&path, text).unwrap();
    path
}

/// `ferry sql ARGS`: (exit code, stdout, stderr). A command still running after three minutes
/// is killed and reported (exit code -1), so that a job that never ends fails its test.
fn sql(args: &[&str]) -> (i32, String, String) {
    let (out, err) = (std::env::temp_dir().join(unique("sql-out")), std::env::temp_dir().join(unique("sql-err")));
    let mut child = Command::new(common::ferry())
        .arg("sql")
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    match status {
        Some(status) => (status.code().unwrap_or(-1), read(&out), read(&err)),
        None => (-1, read(&out), format!("{}\nferry sql {args:?} was still running after 180 s (killed)", read(&err))),
    }
}

const CUSTOMERS: [&str; 4] = ["ann", "bob", "cy", "dee"];

/// Order `i`: amount in cents, customer, event time.
fn order(i: usize) -> (i64, &'static str, i64) {
    ((i as i64 * 7919) % 30_000, CUSTOMERS[i % 4], 1_700_000_000_000 + i as i64 * 250)
}

fn orders(from: usize, to: usize, partitions: i32) -> Vec<TestRecord> {
    (from..to)
        .map(|i| {
            let (cents, customer, ts) = order(i);
            let value = json!({"id": i, "customer": customer, "amount": cents as f64 / 100.0, "ts": format_ts(ts), "note": {"channel": if i % 2 == 0 { "web" } else { "shop" }}});
            TestRecord { partition: (i % partitions as usize) as i32, offset: 0, key: Some(customer.as_bytes().to_vec()), value: Some(value.to_string().into_bytes()), headers: vec![], timestamp: Some(ts) }
        })
        .collect()
}

fn format_ts(ms: i64) -> String {
    ferry_testkit::sql_timestamp(ms)
}

fn tables(bootstrap: &str, source: &str, sink: &str, extra_source: &str) -> String {
    format!(
        "CREATE TABLE orders (
  id BIGINT,
  customer STRING,
  amount DECIMAL(10, 2),
  ts TIMESTAMP(3),
  note ROW<channel STRING>,
  part INT METADATA FROM 'partition' VIRTUAL,
  `off` BIGINT METADATA FROM 'offset' VIRTUAL,
  tier AS CASE WHEN amount >= 200 THEN 'gold' ELSE 'silver' END,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '{source}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'format' = 'json',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset'{extra_source}
);
CREATE TABLE big (
  who STRING,
  id BIGINT,
  doubled DECIMAL(12, 2),
  tier STRING,
  channel STRING,
  src STRING,
  ts TIMESTAMP(3)
) WITH (
  'connector' = 'kafka',
  'topic' = '{sink}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'key.format' = 'raw',
  'key.fields' = 'who',
  'value.format' = 'json'
);
"
    )
}

const QUERY: &str = "INSERT INTO big
SELECT UPPER(customer), id, amount * 2, tier, note.channel,
       CONCAT(CAST(part AS STRING), '/', CAST(`off` AS STRING)), ts
FROM orders
WHERE amount > 100 AND customer <> 'dee';
";

/// What the job must write for `records` (as produced, with their offsets): by id.
fn reference(records: &[TestRecord]) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let id = v["id"].as_i64().unwrap();
        let (cents, customer, ts) = order(id as usize);
        if cents <= 10_000 || customer == "dee" {
            continue;
        }
        out.insert(
            id,
            json!({
                "who": customer.to_uppercase(),
                "id": id,
                "doubled": format!("{}.{:02}", cents * 2 / 100, cents * 2 % 100),
                "tier": if cents >= 20_000 { "gold" } else { "silver" },
                "channel": if id % 2 == 0 { "web" } else { "shop" },
                "src": format!("{}/{}", r.partition, r.offset),
                "ts": format_ts(ts),
            }),
        );
    }
    out
}

/// The sink's records by id, the value's decimal as text; and each key's partitions.
fn written(bootstrap: &str, topic: &str, partitions: i32, expected: usize) -> (BTreeMap<i64, Value>, Vec<Value>, HashMap<String, Vec<i32>>) {
    let got = consume_all(bootstrap, topic, partitions, expected, std::time::Duration::from_secs(20)).unwrap();
    let mut by_id = BTreeMap::new();
    let mut all = Vec::new();
    let mut keys: HashMap<String, Vec<i32>> = HashMap::new();
    for r in &got {
        let mut v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        assert_eq!(Some(key.as_str()), v["who"].as_str(), "the key is the `who` column: {v}");
        let entry = keys.entry(key).or_default();
        if !entry.contains(&r.partition) {
            entry.push(r.partition);
        }
        // DECIMAL(12, 2) as its text with two places, whichever JSON form it takes.
        let d = &v["doubled"];
        let text = match d {
            Value::String(s) => s.clone(),
            Value::Number(n) => format!("{:.2}", n.as_f64().unwrap()),
            other => panic!("doubled is {other}"),
        };
        v["doubled"] = Value::String(text);
        all.push(v.clone());
        by_id.insert(v["id"].as_i64().unwrap(), v);
    }
    (by_id, all, keys)
}

#[test]
fn a_job_filters_projects_and_writes_exactly_what_the_query_says() {
    let broker = Broker::start("sql-a").unwrap();
    let (source, sink) = (unique("orders"), unique("big"));
    // Orders on partitions 0 to 2; partition 3 holds only an aborted transaction (its last
    // offset is a control record no consumer sees) and partition 4 nothing: a bounded job
    // must still see every partition's end.
    create_topic(&broker.bootstrap(), &source, 5).unwrap();
    create_topic(&broker.bootstrap(), &sink, 2).unwrap();
    let records = orders(0, 3_000, 3);
    RecordProducer::new(&broker.bootstrap()).unwrap().send_all(&source, &records).unwrap();
    let aborted: Vec<TestRecord> = orders(5_000, 5_020, 1).into_iter().map(|r| TestRecord { partition: 3, ..r }).collect();
    ferry_testkit::TxnProducer::new(&broker.bootstrap()).unwrap().transaction(&source, &aborted, false).unwrap();
    // Offsets as the broker gave them: records go to their partitions in order.
    let mut next = [0i64; 3];
    let records: Vec<TestRecord> = records
        .into_iter()
        .map(|mut r| {
            r.offset = next[r.partition as usize];
            next[r.partition as usize] += 1;
            r
        })
        .collect();

    let file = job_file("sql-job", &format!("{}{QUERY}", tables(&broker.bootstrap(), &source, &sink, "")));
    let (code, out, err) = sql(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = sql(&["explain", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("filter") && out.contains("sink big"), "{out}");

    let started = std::time::Instant::now();
    let (code, _, err) = sql(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "the bounded job must finish: {err}");
    let want = reference(&records);
    let (got, all, keys) = written(&broker.bootstrap(), &sink, 2, want.len());
    assert_eq!(all.len(), want.len(), "one record per selected order, no duplicates");
    for (id, v) in &want {
        assert_eq!(got.get(id), Some(v), "order {id}");
    }
    assert_eq!(got.len(), want.len());
    assert!(keys.values().all(|p| p.len() == 1), "a key's records share one partition: {keys:?}");
    println!("sql: {} orders in, {} written as the reference says, in {:?}", records.len(), want.len(), started.elapsed());
}

#[test]
fn a_record_that_does_not_decode_stops_the_job_or_is_skipped_and_counted() {
    let broker = Broker::start("sql-bad").unwrap();
    let (source, sink) = (unique("orders"), unique("big"));
    create_topic(&broker.bootstrap(), &source, 1).unwrap();
    create_topic(&broker.bootstrap(), &sink, 1).unwrap();
    let mut records = orders(0, 200, 1);
    records[57].value = Some(b"{\"id\": 57, \"amount\": \"lots\"".to_vec());
    RecordProducer::new(&broker.bootstrap()).unwrap().send_all(&source, &records).unwrap();

    let file = job_file("sql-bad", &format!("{}{QUERY}", tables(&broker.bootstrap(), &source, &sink, "")));
    let (code, _, err) = sql(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("topic {source} partition 0 offset 57")) && err.contains("json.ignore-parse-errors"), "{err}");

    let file = job_file("sql-skip", &format!("{}{QUERY}", tables(&broker.bootstrap(), &source, &sink, ",\n  'json.ignore-parse-errors' = 'true'")));
    let (code, _, err) = sql(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("record skipped: it does not decode") && err.contains("offset=57"), "{err}");
    assert!(err.contains("skipped=1"), "{err}");
    let mut good = records.clone();
    for (i, r) in good.iter_mut().enumerate() {
        r.offset = i as i64;
    }
    good.remove(57);
    let want = reference(&good);
    let (got, all, _) = written(&broker.bootstrap(), &sink, 1, want.len());
    assert_eq!((got, all.len()), (want.clone(), want.len()));
}

#[test]
fn a_job_with_a_group_resumes_after_what_it_wrote() {
    let broker = Broker::start("sql-group").unwrap();
    let (source, sink) = (unique("orders"), unique("big"));
    create_topic(&broker.bootstrap(), &source, 2).unwrap();
    create_topic(&broker.bootstrap(), &sink, 2).unwrap();
    let producer = RecordProducer::new(&broker.bootstrap()).unwrap();
    let first = orders(0, 400, 2);
    producer.send_all(&source, &first).unwrap();
    // group-offsets with earliest for partitions the group has no offset for.
    let extra = format!(",\n  'properties.group.id' = '{}',\n  'properties.auto.offset.reset' = 'earliest'", unique("sql-group"));
    let text = format!("{}{QUERY}", tables(&broker.bootstrap(), &source, &sink, &extra)).replace("'scan.startup.mode' = 'earliest-offset',\n", "");
    let file = job_file("sql-group", &text);
    let (code, _, err) = sql(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let second = orders(400, 900, 2);
    producer.send_all(&source, &second).unwrap();
    let (code, _, err) = sql(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("records_in=500"), "the second run reads only the new records: {err}");

    let mut all_records: Vec<TestRecord> = first.into_iter().chain(second).collect();
    let mut next = [0i64; 2];
    for r in &mut all_records {
        r.offset = next[r.partition as usize];
        next[r.partition as usize] += 1;
    }
    let want = reference(&all_records);
    let (got, all, _) = written(&broker.bootstrap(), &sink, 2, want.len());
    assert_eq!(all.len(), want.len(), "no record written twice");
    assert_eq!(got, want);
}

#[test]
fn a_job_file_with_a_mistake_is_refused_with_its_line_and_column() {
    let cases = [
        ("CREATE TABLE t (\n  a INT,\n  b FOO\n) WITH ('connector' = 'kafka');", ":3:5: unknown data type FOO"),
        (
            "CREATE TABLE t (a INT) WITH ('connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = 'x:1',\n  'format' = 'json', 'scan.startup.mode' = 'from-the-start');",
            ":2:22: table t: unknown scan.startup.mode 'from-the-start'",
        ),
        (
            "CREATE TABLE t (a INT) WITH ('connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = 'x:1', 'format' = 'json');\nCREATE TABLE s (a INT) WITH ('connector' = 'kafka', 'topic' = 's', 'properties.bootstrap.servers' = 'x:1', 'format' = 'json');\nINSERT INTO s\nSELECT b FROM t;",
            ":4:8:",
        ),
        ("CREATE TABLE t (a INT) WITH ('connector' = 'filesystem');", ":1:30: table t: connector 'filesystem' is not supported"),
        // Flink refuses a reserved word as a name unless quoted; so does Ferry (Flink's list).
        ("CREATE TABLE t (a INT, `value` INT) WITH ('connector' = 'kafka');\nINSERT INTO t SELECT a AS out, `value` FROM t;", ":2:27: out is a reserved word in Flink SQL: quote it with backticks (`out`)"),
    ];
    for (text, want) in cases {
        let file = unchecked_job_file("sql-wrong", text);
        let (code, out, err) = sql(&["check", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.starts_with(&format!("{}{want}", file.display())), "want {want:?} in: {err}");
    }
    let (code, _, err) = sql(&["check", "/nonexistent/job.sql"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/job.sql"), "{err}");
}

/// The jobs `ferry serve` lists (GET /api/v1/sql/jobs).
fn served_jobs(addr: &str) -> Vec<Value> {
    match ferry_testkit::http_request(addr, "GET", "/api/v1/sql/jobs", &[], "") {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A job reports to `ferry serve` as the mirrors do: a bounded job is listed finished with its
/// counts, a running one running, and one killed with -9 lost once its reports stop.
#[test]
fn jobs_report_their_progress_to_ferry_serve() {
    let broker = Broker::start("sql-report").unwrap();
    let bootstrap = broker.bootstrap();
    let (source, sink, live_sink) = (unique("orders"), unique("big"), unique("live"));
    create_topic(&bootstrap, &source, 2).unwrap();
    create_topic(&bootstrap, &sink, 2).unwrap();
    create_topic(&bootstrap, &live_sink, 2).unwrap();
    let records = orders(0, 400, 2);
    RecordProducer::new(&bootstrap).unwrap().send_all(&source, &records).unwrap();
    let config = std::env::temp_dir().join(format!("{}.properties", unique("sql-serve")));
    std::fs::write(&config, format!("clusters = a\na.bootstrap.servers = {bootstrap}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let mut serve = ferry_testkit::Process::spawn(common::ferry(), &["serve", "--config", config.to_str().unwrap(), "--listen", &addr], &unique("sql-serve")).unwrap();

    // A bounded job: finished, with what it read and wrote.
    let file = job_file("sql-report", &format!("{}{QUERY}", tables(&bootstrap, &source, &sink, "")));
    let (code, _, err) = sql(&["run", file.to_str().unwrap(), "--name", "bounded-orders"]);
    assert_eq!(code, 0, "{err}");
    let written = reference(&records).len() as u64;
    let job = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || served_jobs(&addr).into_iter().find(|j| j["job"] == "bounded-orders" && j["state"] == "finished"))
        .unwrap_or_else(|| panic!("ferry serve never listed the finished job: {:?}\n{}", served_jobs(&addr), serve.output()));
    assert_eq!((job["records_in"].as_u64(), job["records_out"].as_u64()), (Some(400), Some(written)), "{job}");
    assert_eq!((job["pipelines"][0]["source"].as_str(), job["pipelines"][0]["sink"].as_str()), (Some("orders"), Some("big")), "{job}");
    assert!(job["file"].as_str().is_some_and(|f| f.ends_with(".sql")), "{job}");

    // The SQL console's engine side: a job file's tables, and a query sampled over them, its
    // rows streamed as they arrive.
    let ddl = tables(&bootstrap, &source, &sink, "");
    let post = |path: &str, body: Value| ferry_testkit::http_request(&addr, "POST", path, &[("Content-Type", "application/json")], &body.to_string()).unwrap();
    let (status, body) = post("/api/v1/sql/tables", json!({"tables": ddl}));
    assert_eq!(status, 200, "{body}");
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(), ["orders", "big"], "{body}");
    assert!(listed[0]["columns"].as_array().unwrap().iter().any(|c| c["name"] == "amount" && c["type"].as_str().is_some_and(|t| t.starts_with("DECIMAL"))), "{body}");
    let (status, body) = post("/api/v1/sql/sample", json!({"tables": ddl, "query": "SELECT id, UPPER(customer) AS who FROM orders WHERE id < 30", "limit": 1000}));
    assert_eq!(status, 200, "{body}");
    let rows: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut ids: Vec<i64> = rows.iter().map(|r| r["row"]["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>(), "every row of the bounded input that passes, once: {body}");
    assert!(rows.iter().all(|r| r["kind"] == "+I" && r["row"]["who"].as_str().is_some_and(|w| CUSTOMERS.iter().any(|c| c.to_uppercase() == w))), "{body}");
    let (_, body) = post("/api/v1/sql/sample", json!({"tables": ddl, "query": "SELECT id FROM orders", "limit": 5}));
    assert_eq!(body.lines().count(), 5, "the limit: {body}");
    let (status, body) = post("/api/v1/sql/sample", json!({"tables": ddl, "query": "SELECT nope FROM orders"}));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("query:1:8:"), "the place in the query: {body}");
    // The same in the console's SQL page, in headless Chromium.
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-sql-sample.png");
    let (ran, seen) = common::console_script(&["sql-sample.mjs", &format!("http://{addr}/"), "", screenshot.to_str().unwrap(), &ddl, "SELECT id, customer, amount FROM orders WHERE id < 12"]);
    println!("browser: {seen}\nscreenshot: {}", screenshot.display());
    assert!(ran, "{seen}");
    assert_eq!(seen["tables"], json!(["orders", "big"]));
    assert_eq!(seen["header"], json!(["", "id", "customer", "amount"]));
    assert_eq!(seen["rows"].as_array().map(Vec::len), Some(12), "{seen}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "screenshot saved");

    // A job that runs on: running with its counts and the view it serves, each endpoint's URL
    // listed and copied from the console; killed, lost once its reports stop.
    let live = job_file(
        "sql-report-live",
        &format!(
            "CREATE TABLE orders (id BIGINT, customer STRING) WITH ('connector' = 'kafka', 'topic' = '{source}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json', 'scan.startup.mode' = 'earliest-offset');
CREATE TABLE copies (id BIGINT, customer STRING) WITH ('connector' = 'kafka', 'topic' = '{live_sink}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
INSERT INTO copies SELECT id, customer FROM orders;
CREATE MATERIALIZED VIEW per_customer WITH ('endpoint.busy' = 'SELECT customer, n FROM per_customer WHERE n >= {{min}}')
AS SELECT customer, COUNT(*) AS n FROM orders GROUP BY customer;
"
        ),
    );
    let view_addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let state = std::env::temp_dir().join(unique("sql-live-state"));
    let mut running = ferry_testkit::Process::spawn(common::ferry(), &["sql", "run", live.to_str().unwrap(), "--name", "live-orders", "--listen", &view_addr, "--state-dir", state.to_str().unwrap()], &unique("sql-live")).unwrap();
    let seen = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || {
        served_jobs(&addr).into_iter().find(|j| j["job"] == "live-orders" && j["state"] == "running" && j["pipelines"].as_array().is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["records_in"] == 400)) && j["views"][0]["rows"] == 4)
    });
    let job = seen.unwrap_or_else(|| panic!("the running job was not listed running with 400 records and its view's 4 rows: {:?}\n{}", served_jobs(&addr), running.output()));
    assert_eq!(job["engine"], "ferry");
    let endpoints = job["views"][0]["endpoints"].as_array().unwrap();
    let url = |name: &str| endpoints.iter().find(|e| e["name"] == name).and_then(|e| e["url"].as_str()).unwrap_or_else(|| panic!("no URL for {name}: {job}")).to_string();
    assert_eq!(url("all"), format!("http://{view_addr}/api/v1/query/per_customer/all"));
    assert_eq!(url("busy"), format!("http://{view_addr}/api/v1/query/per_customer/busy?min="));
    assert_eq!(url("lookup"), format!("http://{view_addr}/api/v1/query/per_customer/lookup?customer="));
    // The URLs answer: every customer's 100 orders.
    let (status, body) = ferry_testkit::http_request(&view_addr, "GET", &format!("{}100", url("busy").trim_start_matches(&format!("http://{view_addr}"))), &[], "").unwrap();
    assert_eq!(status, 200, "{body}");
    let mut busy: Vec<(String, i64)> = serde_json::from_str::<Vec<Value>>(&body).unwrap().iter().map(|r| (r["customer"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap())).collect();
    busy.sort();
    assert_eq!(busy, CUSTOMERS.iter().map(|c| (c.to_string(), 100)).collect::<Vec<_>>(), "{body}");
    // In the console: the view's endpoints with their URLs; the copy button puts one on the
    // clipboard.
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-sql-views.png");
    let (ran, shown) = common::console_script(&["sql-views.mjs", &format!("http://{addr}/"), "", screenshot.to_str().unwrap(), "per_customer", "busy"]);
    println!("browser: {shown}\nscreenshot: {}", screenshot.display());
    assert!(ran, "{shown}");
    assert_eq!(shown["endpoints"], json!(["all", "lookup", "busy"]), "{shown}");
    assert_eq!(shown["copied"], url("busy"), "the clipboard holds the endpoint's URL: {shown}");
    assert_eq!(shown["button"], "copied");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "screenshot saved");
    // Restarted by ferry serve: the run starts again from its checkpoint (nothing read twice),
    // then takes new orders.
    let process = job["process"].as_str().unwrap().to_string();
    let post = |path: &str| ferry_testkit::http_request(&addr, "POST", path, &[], "").unwrap();
    let (status, body) = post(&format!("/api/v1/sql/jobs/{process}/restart"));
    assert_eq!(status, 202, "{body}");
    let this_run = |j: &Value| j["process"] == process.as_str() && j["state"] == "running";
    let restarted = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || served_jobs(&addr).into_iter().find(|j| this_run(j) && j["restarts"] == 1 && j["views"][0]["rows"] == 4));
    let job = restarted.unwrap_or_else(|| panic!("never restarted: {:?}\n{}", served_jobs(&addr), running.output()));
    assert!(job["pipelines"].as_array().unwrap().iter().all(|p| p["records_in"] == 0), "resumed from the checkpoint, nothing read again: {job}");
    let extra: Vec<TestRecord> = (400..440).map(|i| TestRecord { partition: (i % 2) as i32, offset: 0, key: None, value: Some(json!({"id": i, "customer": CUSTOMERS[i % 4]}).to_string().into_bytes()), headers: vec![], timestamp: None }).collect();
    RecordProducer::new(&bootstrap).unwrap().send_all(&source, &extra).unwrap();
    let fed = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || served_jobs(&addr).into_iter().find(|j| this_run(j) && j["pipelines"].as_array().unwrap().iter().all(|p| p["records_in"] == 40)));
    assert!(fed.is_some(), "the restarted run read the new orders: {:?}", served_jobs(&addr));
    let (_, body) = ferry_testkit::http_request(&view_addr, "GET", "/api/v1/query/per_customer/busy?min=110", &[], "").unwrap();
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 4, "each customer's 110 orders across the restart: {body}");
    assert_eq!(read_to_end(&bootstrap, &live_sink, 2).len(), 440, "each order copied once across the restart");
    // A job file that no longer plans: the restart is refused with its place, the job runs on.
    let text = std::fs::read_to_string(&live).unwrap();
    std::fs::write(&live, text.replace("SELECT id, customer FROM orders", "SELECT id, nope FROM orders")).unwrap();
    let (status, _) = post(&format!("/api/v1/sql/jobs/{process}/restart"));
    assert_eq!(status, 202);
    let refused = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || served_jobs(&addr).into_iter().find(|j| this_run(j) && j["error"].as_str().is_some_and(|e| e.contains(":3:"))));
    let job = refused.unwrap_or_else(|| panic!("the refusal was not told: {:?}", served_jobs(&addr)));
    assert_eq!(job["restarts"], 1, "{job}");
    std::fs::write(&live, text).unwrap();
    // Stopped from the console: finished, and the process ends.
    let (ran, clicked) = common::console_script(&["sql-stop.mjs", &format!("http://{addr}/"), "", &process]);
    assert!(ran, "{clicked}");
    assert_eq!(clicked["asked"], process.as_str(), "{clicked}");
    assert_eq!(clicked["state"], "finished", "{clicked}");
    let status = running.wait_timeout(std::time::Duration::from_secs(30)).unwrap().unwrap_or_else(|| panic!("the stopped job's process did not end\n{}", running.output()));
    assert!(status.success(), "{status:?}\n{}", running.output());
    let (status, body) = post(&format!("/api/v1/sql/jobs/{process}/stop"));
    assert_eq!(status, 409, "a finished run takes no command: {body}");

    // A run without a state directory is not restarted (it would read its tables again); killed,
    // it is lost once its reports stop.
    let mut running = ferry_testkit::Process::spawn(common::ferry(), &["sql", "run", live.to_str().unwrap(), "--name", "live-orders"], &unique("sql-live")).unwrap();
    let job = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || served_jobs(&addr).into_iter().find(|j| j["job"] == "live-orders" && j["state"] == "running" && j["process"] != process.as_str()))
        .unwrap_or_else(|| panic!("the second run was not listed: {:?}\n{}", served_jobs(&addr), running.output()));
    let (status, body) = post(&format!("/api/v1/sql/jobs/{}/restart", job["process"].as_str().unwrap()));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("--state-dir"), "{body}");
    assert_eq!(post("/api/v1/sql/jobs/nohost:1:1/stop").0, 404);
    running.kill_9();
    let lost = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || served_jobs(&addr).into_iter().find(|j| j["process"] == job["process"] && j["state"] == "lost"));
    assert!(lost.is_some(), "the killed job was not called lost: {:?}", served_jobs(&addr));
    assert!(serve.is_running(), "{}", serve.output());
}

/// Ferry refuses exactly the names Flink refuses: its list of reserved words is the one Flink's
/// parser reports.
#[test]
fn ferry_reserves_the_words_flink_reserves() {
    let flink: std::collections::BTreeSet<String> = ferry_testkit::flink_reserved_words().unwrap().into_iter().collect();
    let ferry: std::collections::BTreeSet<String> = ferry_sql::reserved::words().iter().map(|w| (*w).to_string()).collect();
    assert!(flink.len() > 400, "Flink reported {} reserved words", flink.len());
    assert_eq!(ferry.difference(&flink).collect::<Vec<_>>(), Vec::<&String>::new(), "reserved in Ferry's list, not in Flink's");
    assert_eq!(flink.difference(&ferry).collect::<Vec<_>>(), Vec::<&String>::new(), "reserved in Flink, missing from Ferry's list");
}

/// Bid `i` on one partition: item, price, event time. Every 7th bid is 3 s behind (out of order,
/// within the 5 s watermark delay); every 50th is 30 s behind: late for its windows.
fn bid(i: usize) -> (&'static str, i64, i64) {
    let base = 1_700_000_000_000 + i as i64 * 100;
    let ts = if i % 50 == 49 {
        base - 30_000
    } else if i % 7 == 6 {
        base - 3_000
    } else {
        base
    };
    (["a", "b", "c"][i % 3], (i as i64 * 37) % 100, ts)
}

/// The windows holding time `t`: every `[start, start + size)` with `start` a multiple of `slide`.
fn windows_of(t: i64, slide: i64, size: i64) -> Vec<(i64, i64)> {
    let mut start = t.div_euclid(slide) * slide;
    let mut out = Vec::new();
    while start > t - size {
        out.push((start, start + size));
        start -= slide;
    }
    out.reverse();
    out
}

/// What a window aggregate over `n` bids must write, and how many bids are late: a bid is late
/// for a window when the watermark before it (the largest `ts - 5 s` so far) has reached the
/// window's end minus 1 ms, and dropped when late for all its windows.
fn window_reference(n: usize, slide: i64, size: i64) -> (BTreeMap<(String, String, String), (i64, i64)>, u64) {
    let mut watermark = i64::MIN;
    let mut sums: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    let mut late = 0;
    for i in 0..n {
        let (item, price, ts) = bid(i);
        let open: Vec<(i64, i64)> = windows_of(ts, slide, size).into_iter().filter(|(_, end)| end - 1 > watermark).collect();
        if open.is_empty() {
            late += 1;
        }
        for (start, end) in open {
            let e = sums.entry((item.to_string(), format_ts(start), format_ts(end))).or_default();
            e.0 += 1;
            e.1 += price;
        }
        watermark = watermark.max(ts - 5_000);
    }
    (sums, late)
}

/// What a SESSION aggregate (gap `gap`) over `n` bids must write, and how many bids are late:
/// per item, a bid opens `[ts, ts + gap)` and joins the open sessions it overlaps; a session is
/// closed once the watermark (before the bid) reaches its end minus 1 ms; a bid whose merged
/// session would end by then is late.
fn session_reference(n: usize, gap: i64) -> (BTreeMap<(String, String, String), (i64, i64)>, u64) {
    let mut watermark = i64::MIN;
    let mut open: BTreeMap<String, Vec<(i64, i64, i64, i64)>> = BTreeMap::new();
    let mut closed: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    let mut late = 0;
    let mut close = |open: &mut BTreeMap<String, Vec<(i64, i64, i64, i64)>>, watermark: i64| {
        for (item, sessions) in open.iter_mut() {
            sessions.retain(|(start, end, count, total)| {
                let done = end - 1 <= watermark;
                if done {
                    closed.insert((item.clone(), format_ts(*start), format_ts(*end)), (*count, *total));
                }
                !done
            });
        }
    };
    for i in 0..n {
        let (item, price, ts) = bid(i);
        close(&mut open, watermark);
        let sessions = open.entry(item.to_string()).or_default();
        let (mut start, mut end, mut count, mut total) = (ts, ts + gap, 1, price);
        let (overlapping, rest): (Vec<_>, Vec<_>) = sessions.iter().partition(|(s, e, _, _)| *s < ts + gap && *e > ts);
        for (s, e, c, t) in &overlapping {
            start = start.min(*s);
            end = end.max(*e);
            count += c;
            total += t;
        }
        if end - 1 <= watermark {
            late += 1;
        } else {
            *sessions = rest.into_iter().chain([(start, end, count, total)]).collect();
        }
        watermark = watermark.max(ts - 5_000);
    }
    close(&mut open, i64::MAX);
    (closed, late)
}

/// A topic's records read to its end.
fn read_to_end(bootstrap: &str, topic: &str, partitions: i32) -> Vec<TestRecord> {
    let total: i64 = (0..partitions).map(|p| ferry_testkit::watermarks(bootstrap, topic, p).unwrap().1).sum();
    consume_all(bootstrap, topic, partitions, total as usize, std::time::Duration::from_secs(20)).unwrap()
}

/// The `late=` a pipeline into `sink` reported when it finished.
fn late_reported(log: &str, sink: &str) -> u64 {
    let line = log.lines().find(|l| l.contains("pipeline finished") && l.contains(&format!("sink={sink} "))).unwrap_or_else(|| panic!("no finish line for {sink}: {log}"));
    line.split_whitespace().find_map(|w| w.strip_prefix("late=")).unwrap().parse().unwrap()
}

#[test]
fn windows_and_updating_aggregates_write_what_an_independent_reference_computes() {
    let broker = Broker::start("sql-agg").unwrap();
    let bootstrap = broker.bootstrap();
    let (bids, tumbled, hopped, orders_topic, totals, top_bids) = (unique("bids"), unique("tumbled"), unique("hopped"), unique("orders"), unique("totals"), unique("top-bids"));
    create_topic(&bootstrap, &top_bids, 1).unwrap();
    let sessions = unique("sessions");
    create_topic(&bootstrap, &sessions, 1).unwrap();
    create_topic(&bootstrap, &bids, 1).unwrap();
    create_topic(&bootstrap, &tumbled, 2).unwrap();
    create_topic(&bootstrap, &hopped, 1).unwrap();
    create_topic(&bootstrap, &orders_topic, 3).unwrap();
    create_topic(&bootstrap, &totals, 2).unwrap();
    let n = 3_000;
    let bid_records: Vec<TestRecord> = (0..n)
        .map(|i| {
            let (item, price, ts) = bid(i);
            TestRecord { partition: 0, offset: 0, key: None, value: Some(json!({"item": item, "price": price, "ts": format_ts(ts)}).to_string().into_bytes()), headers: vec![], timestamp: Some(ts) }
        })
        .collect();
    // Orders for the updating aggregate, on 3 partitions; zed's last order takes its MAX over
    // the HAVING bound: zed must end absent.
    let zed = |k: i64, cents: i64| {
        let value = json!({"id": 10_000 + k, "customer": "zed", "amount": cents as f64 / 100.0, "ts": format_ts(1_700_000_000_000), "note": {"channel": "web"}});
        TestRecord { partition: 0, offset: 0, key: None, value: Some(value.to_string().into_bytes()), headers: vec![], timestamp: None }
    };
    let mut order_records = orders(0, 2_000, 3);
    for (k, cents) in [(0, 100), (1, 200), (2, 300), (3, 29_990)] {
        order_records.push(zed(k, cents));
    }
    let producer = RecordProducer::new(&bootstrap).unwrap();
    producer.send_all(&bids, &bid_records).unwrap();
    producer.send_all(&orders_topic, &order_records).unwrap();

    let job = format!(
        "{orders_ddl}CREATE TABLE bids (item STRING, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'kafka', 'topic' = '{bids}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json',
      'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
CREATE TABLE tumbled (item STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), bids BIGINT, total BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{tumbled}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
CREATE TABLE hopped (item STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), bids BIGINT, total BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{hopped}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
CREATE TABLE sessions (item STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), bids BIGINT, total BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{sessions}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
CREATE TABLE top_bids (item STRING, price BIGINT, rn BIGINT, PRIMARY KEY (item, rn) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{top_bids}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
CREATE TABLE totals (customer STRING, orders BIGINT, cents BIGINT, parts BIGINT, top DECIMAL(10, 2), PRIMARY KEY (customer) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{totals}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
EXECUTE STATEMENT SET BEGIN
INSERT INTO tumbled
  SELECT item, window_start, window_end, COUNT(*), SUM(price)
  FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECONDS))
  GROUP BY item, window_start, window_end;
INSERT INTO hopped
  SELECT item, window_start, window_end, COUNT(*), SUM(price)
  FROM TABLE(HOP(DATA => TABLE bids, TIMECOL => DESCRIPTOR(ts), SLIDE => INTERVAL '5' SECOND, SIZE => INTERVAL '20' SECOND))
  GROUP BY item, window_start, window_end;
INSERT INTO sessions
  SELECT item, window_start, window_end, COUNT(*), SUM(price)
  FROM TABLE(SESSION(TABLE bids PARTITION BY item, DESCRIPTOR(ts), INTERVAL '0.4' SECOND))
  GROUP BY item, window_start, window_end;
INSERT INTO top_bids
  SELECT item, price, rn FROM (
    SELECT item, price, ROW_NUMBER() OVER (PARTITION BY item ORDER BY price DESC) AS rn FROM bids)
  WHERE rn <= 3;
INSERT INTO totals
  SELECT customer, COUNT(*), SUM(CAST(amount * 100 AS BIGINT)), COUNT(DISTINCT part), MAX(amount)
  FROM orders
  GROUP BY customer
  HAVING MAX(amount) < 299.5;
END;
",
        orders_ddl = tables(&bootstrap, &orders_topic, &unique("unused"), "").split("CREATE TABLE big").next().unwrap()
    );
    let file = job_file("sql-agg", &job);
    let (code, out, err) = sql(&["explain", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("window aggregate") && out.contains("updating aggregate"), "{out}");
    let (code, _, log) = sql(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "the bounded job must finish: {log}");

    // Window aggregates: each (item, window) written once, with the reference's count and sum.
    for (sink, partitions, slide, size) in [(&tumbled, 2, 10_000, 10_000), (&hopped, 1, 5_000, 20_000), (&sessions, 1, 0, 400)] {
        let (want, late) = if slide == 0 { session_reference(n, size) } else { window_reference(n, slide, size) };
        assert!(late > 0, "the input has late bids");
        let mut got: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
        for r in read_to_end(&bootstrap, sink, partitions) {
            let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            let key = (v["item"].as_str().unwrap().to_string(), v["window_start"].as_str().unwrap().to_string(), v["window_end"].as_str().unwrap().to_string());
            let prev = got.insert(key.clone(), (v["bids"].as_i64().unwrap(), v["total"].as_i64().unwrap()));
            assert!(prev.is_none(), "{sink}: window {key:?} written twice");
        }
        assert_eq!(got.len(), want.len(), "{sink}: windows written");
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "{sink}: window {k:?}");
        }
        let sink_name = if sink == &tumbled {
            "tumbled"
        } else if sink == &hopped {
            "hopped"
        } else {
            "sessions"
        };
        assert_eq!(late_reported(&log, sink_name), late, "{sink}: late bids counted");
        println!("{sink_name}: {} windows as the reference computes them, {late} late bids counted", want.len());
    }

    // Top-N: the upsert topic keyed by (item, rank) folds to each item's 3 highest prices (ties
    // in arrival order).
    let mut want_top: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for item in ["a", "b", "c"] {
        let mut prices: Vec<(i64, usize)> = (0..n).filter(|i| bid(*i).0 == item).map(|i| (bid(i).1, i)).collect();
        prices.sort_by_key(|(p, i)| (-p, *i));
        for (rank, (price, _)) in prices.iter().take(3).enumerate() {
            want_top.insert((item.to_string(), rank as i64 + 1), *price);
        }
    }
    let mut got_top: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for r in read_to_end(&bootstrap, &top_bids, 1) {
        let key: Value = serde_json::from_slice(r.key.as_ref().unwrap()).unwrap();
        let k = (key["item"].as_str().unwrap().to_string(), key["rn"].as_i64().unwrap());
        match &r.value {
            Some(v) => {
                got_top.insert(k, serde_json::from_slice::<Value>(v).unwrap()["price"].as_i64().unwrap());
            }
            None => {
                got_top.remove(&k);
            }
        }
    }
    assert_eq!(got_top, want_top, "Top-N");

    // `ferry sql sample`: a query over the job's tables prints its changelog; folded, it is the
    // aggregate over every bid (no window, so none is late).
    let (code, out, err) = sql(&["sample", "SELECT item, COUNT(*) AS n, SUM(price) AS total FROM bids GROUP BY item", "--config", file.to_str().unwrap(), "--limit", "0"]);
    assert_eq!(code, 0, "{err}");
    let mut folded: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for line in out.lines() {
        let (op, row) = line.split_once(' ').unwrap();
        let v: Value = serde_json::from_str(row).unwrap();
        let item = v["item"].as_str().unwrap().to_string();
        match op {
            "+I" | "+U" => {
                folded.insert(item, (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap()));
            }
            "-U" | "-D" => assert_eq!(folded.remove(&item), Some((v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap())), "a retraction takes back the row before it"),
            other => panic!("change kind {other}"),
        }
    }
    let mut want_items: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for i in 0..n {
        let (item, price, _) = bid(i);
        let e = want_items.entry(item.to_string()).or_default();
        e.0 += 1;
        e.1 += price;
    }
    assert_eq!(folded, want_items, "{out}");
    let (code, out, err) = sql(&["sample", "SELECT item, price FROM bids WHERE price > 50;", "--config", file.to_str().unwrap(), "--limit", "5"]);
    assert_eq!((code, out.lines().count()), (0, 5), "{out}{err}");
    assert!(out.lines().all(|l| l.starts_with("+I {\"item\":")), "{out}");
    let (code, _, err) = sql(&["sample", "SELECT item,\n  nope FROM bids", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("query:2:3:") && err.contains("nope"), "{err}");

    // The updating aggregate: the upsert topic folded by key is the reference's final table.
    let mut want: BTreeMap<String, (i64, i64, i64, f64)> = BTreeMap::new();
    let mut parts: HashMap<String, std::collections::BTreeSet<i32>> = HashMap::new();
    for r in &order_records {
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let customer = v["customer"].as_str().unwrap().to_string();
        let amount = v["amount"].as_f64().unwrap();
        let e = want.entry(customer.clone()).or_insert((0, 0, 0, f64::MIN));
        e.0 += 1;
        e.1 += (amount * 100.0).round() as i64;
        e.3 = e.3.max(amount);
        parts.entry(customer).or_default().insert(r.partition);
    }
    for (customer, e) in &mut want {
        e.2 = parts[customer].len() as i64;
    }
    want.retain(|_, e| e.3 < 299.5);
    assert!(!want.contains_key("zed") && want.len() >= 3, "{want:?}");
    let mut folded: BTreeMap<String, (i64, i64, i64, f64)> = BTreeMap::new();
    let mut zed_deleted = false;
    for r in read_to_end(&bootstrap, &totals, 2) {
        let key: Value = serde_json::from_slice(r.key.as_ref().expect("upsert records have keys")).unwrap();
        let customer = key["customer"].as_str().unwrap().to_string();
        match &r.value {
            None => {
                zed_deleted |= customer == "zed";
                folded.remove(&customer);
            }
            Some(v) => {
                let v: Value = serde_json::from_slice(v).unwrap();
                let top = match &v["top"] {
                    Value::String(s) => s.parse().unwrap(),
                    other => other.as_f64().unwrap(),
                };
                folded.insert(customer, (v["orders"].as_i64().unwrap(), v["cents"].as_i64().unwrap(), v["parts"].as_i64().unwrap(), top));
            }
        }
    }
    assert_eq!(folded, want, "the upsert topic folded by key");
    if zed_deleted {
        println!("zed's orders were read in more than one batch: its row was written, then deleted");
    }

    // Unbounded: a group's row is written, then deleted by a tombstone when HAVING stops holding.
    let (live, live_totals) = (unique("live"), unique("live-totals"));
    create_topic(&bootstrap, &live, 1).unwrap();
    create_topic(&bootstrap, &live_totals, 1).unwrap();
    let live_job = format!(
        "{orders_ddl}CREATE TABLE live_totals (customer STRING, orders BIGINT, top DECIMAL(10, 2), PRIMARY KEY (customer) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{live_totals}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
INSERT INTO live_totals SELECT customer, COUNT(*), MAX(amount) FROM orders GROUP BY customer HAVING MAX(amount) < 299.5;
",
        orders_ddl = tables(&bootstrap, &live, &unique("unused"), "").split("CREATE TABLE big").next().unwrap().replace(",\n  'scan.bounded.mode' = 'latest-offset'", "")
    );
    let file = job_file("sql-live", &live_job);
    let mut job = ferry_testkit::Process::spawn(common::ferry(), &["sql", "run", file.to_str().unwrap()], &unique("sql-live")).unwrap();
    let zed_rows = |bootstrap: &str| -> Vec<Option<Value>> {
        read_to_end(bootstrap, &live_totals, 1).into_iter().filter(|r| r.key.as_deref() == Some(br#"{"customer":"zed"}"#.as_slice())).map(|r| r.value.map(|v| serde_json::from_slice(&v).unwrap())).collect()
    };
    producer.send_all(&live, &[zed(0, 100), zed(1, 200), zed(2, 300)]).unwrap();
    let first = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || zed_rows(&bootstrap).last().cloned().flatten().filter(|v| v["orders"] == 3));
    assert!(first.is_some(), "zed's row for its first 3 orders: {:?}\n{}", zed_rows(&bootstrap), job.output());
    producer.send_all(&live, &[zed(3, 29_990)]).unwrap();
    let deleted = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || zed_rows(&bootstrap).last().is_some_and(Option::is_none).then_some(()));
    assert!(deleted.is_some(), "zed's row deleted by a tombstone: {:?}\n{}", zed_rows(&bootstrap), job.output());
    let status = job.terminate(std::time::Duration::from_secs(20)).unwrap();
    assert!(status.success(), "SIGTERM stops the job cleanly: {status:?}\n{}", job.output());
}

/// One HTTP/1.0 GET: (status, head, body); status 0 when nothing answers.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    // A server not listening yet (or killed) answers status 0.
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new(), String::new()) };
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut head = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut response = String::new();
    if s.write_all(format!("{head}\r\n").as_bytes()).is_err() || s.read_to_string(&mut response).is_err() {
        return (0, String::new(), String::new());
    }
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn a_materialized_view_is_served_over_rest_as_it_changes() {
    let broker = Broker::start("sql-view").unwrap();
    let bootstrap = broker.bootstrap();
    let clicks = unique("clicks");
    create_topic(&bootstrap, &clicks, 2).unwrap();
    let token = std::env::temp_dir().join(unique("view-token"));
    std::fs::write(&token, "s3cret\n").unwrap();
    let addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let job = format!(
        "CREATE TABLE clicks (`user` STRING, page STRING, ms BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{clicks}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json', 'scan.startup.mode' = 'earliest-offset');
CREATE MATERIALIZED VIEW per_user WITH (
  'endpoint.busy' = 'SELECT `user`, n FROM per_user WHERE n >= {{min}}'
) AS SELECT `user`, COUNT(*) AS n, MAX(ms) AS last_ms, COUNT(DISTINCT page) AS pages FROM clicks GROUP BY `user`;
"
    );
    let file = job_file("sql-view", &job);
    let mut process = ferry_testkit::Process::spawn(common::ferry(), &["sql", "run", file.to_str().unwrap(), "--listen", &addr, "--api-token-file", token.to_str().unwrap()], &unique("sql-view")).unwrap();
    let key = [("Authorization", "Bearer s3cret")];
    let records: Vec<TestRecord> = (0..700)
        .map(|i| TestRecord { partition: i % 2, offset: 0, key: None, value: Some(json!({"user": format!("u{}", i % 7), "page": format!("p{}", i % 3), "ms": i}).to_string().into_bytes()), headers: vec![], timestamp: None })
        .collect();
    RecordProducer::new(&bootstrap).unwrap().send_all(&clicks, &records).unwrap();
    // The reference: per user, the count, the last ms and the distinct pages.
    let mut want: BTreeMap<String, (i64, i64, std::collections::BTreeSet<String>)> = BTreeMap::new();
    for i in 0..700i64 {
        let e = want.entry(format!("u{}", i % 7)).or_default();
        e.0 += 1;
        e.1 = e.1.max(i);
        e.2.insert(format!("p{}", i % 3));
    }
    let rows = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || {
        let (status, _, body) = get(&addr, "/api/v1/query/per_user/all", &key);
        let rows: Vec<Value> = serde_json::from_str(&body).ok()?;
        (status == 200 && rows.iter().map(|r| r["n"].as_i64().unwrap_or(0)).sum::<i64>() == 700).then_some(rows)
    })
    .unwrap_or_else(|| panic!("the view never held all 700 clicks: {:?}\n{}", get(&addr, "/api/v1/query/per_user/all", &key), process.output()));
    let got: BTreeMap<String, (i64, i64, usize)> = rows.iter().map(|r| (r["user"].as_str().unwrap().to_string(), (r["n"].as_i64().unwrap(), r["last_ms"].as_i64().unwrap(), r["pages"].as_i64().unwrap() as usize))).collect();
    let want: BTreeMap<String, (i64, i64, usize)> = want.into_iter().map(|(k, (n, last, pages))| (k, (n, last, pages.len()))).collect();
    assert_eq!(got, want);
    assert_eq!(rows.iter().map(|r| r["user"].as_str().unwrap()).collect::<Vec<_>>(), ["u0", "u1", "u2", "u3", "u4", "u5", "u6"], "rows in key order");

    // Freshness: the source offsets the rows reflect, and the count before paging.
    let (_, head, body) = get(&addr, "/api/v1/query/per_user/all?limit=2&offset=6", &key);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 1, "{body}");
    assert!(head.contains("x-total-count: 7"), "{head}");
    let offsets: i64 = head.lines().find_map(|l| l.strip_prefix("x-ferry-source-offsets: ")).unwrap().split(',').map(|p| p.rsplit_once('=').unwrap().1.parse::<i64>().unwrap()).sum();
    assert_eq!(offsets, 700, "{head}");

    // Endpoints with a typed parameter, lookups, and the API's errors.
    let (status, _, body) = get(&addr, "/api/v1/query/per_user/busy?min=100&key=s3cret", &[]);
    assert_eq!((status, serde_json::from_str::<Vec<Value>>(&body).unwrap().len()), (200, 7), "{body}");
    let (status, _, body) = get(&addr, "/api/v1/query/per_user/busy?min=101&key=s3cret", &[]);
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _, body) = get(&addr, "/api/v1/query/per_user/lookup?user=u3", &key);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"user": "u3", "n": 100, "last_ms": 696, "pages": 3}));
    for (path, want_status, want_text) in [
        ("/api/v1/query/per_user/lookup?user=zz", 404, "no row"),
        ("/api/v1/query/per_user/busy", 400, "parameter min is required"),
        ("/api/v1/query/per_user/busy?min=lots", 400, "'lots' is not a BIGINT"),
        ("/api/v1/query/per_user/all?limit=0", 400, "limit '0'"),
        ("/api/v1/query/per_user/nope", 404, "has no endpoint nope"),
        ("/api/v1/query/nope/all", 404, "no materialized view nope"),
    ] {
        let (status, _, body) = get(&addr, path, &key);
        assert_eq!(status, want_status, "{path}: {body}");
        assert!(body.contains(want_text), "{path}: {body}");
    }
    assert_eq!(get(&addr, "/api/v1/query/per_user/all", &[]).0, 401);
    assert_eq!(get(&addr, "/api/v1/query/per_user/all?key=wrong", &[]).0, 401);
    let (status, _, body) = get(&addr, "/api/v1/views", &key);
    let views: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, views[0]["name"].as_str(), views[0]["primary_key"].clone(), views[0]["rows"].as_i64()), (200, Some("per_user"), json!(["user"]), Some(7)), "{body}");

    // New clicks change the rows the next read sees.
    RecordProducer::new(&bootstrap).unwrap().send_all(&clicks, &[TestRecord { partition: 0, offset: 0, key: None, value: Some(json!({"user": "u3", "page": "p9", "ms": 5000}).to_string().into_bytes()), headers: vec![], timestamp: None }]).unwrap();
    let updated = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || {
        let (_, _, body) = get(&addr, "/api/v1/query/per_user/lookup?user=u3", &key);
        let row: Value = serde_json::from_str(&body).ok()?;
        (row["n"] == 101).then_some(row)
    });
    assert_eq!(updated, Some(json!({"user": "u3", "n": 101, "last_ms": 5000, "pages": 4})));
    let status = process.terminate(std::time::Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status:?}\n{}", process.output());
}

/// Event `i`: item, price, event time (in order, 10 ms apart), written as csv.
fn event(i: usize) -> (&'static str, i64, i64) {
    (["a", "b", "c"][i % 3], (i as i64 * 13) % 50, 1_700_000_000_000 + i as i64 * 10)
}

fn events(from: usize, to: usize) -> Vec<TestRecord> {
    (from..to)
        .map(|i| {
            let (item, price, ts) = event(i);
            // The csv format, as Flink's writes it.
            TestRecord { partition: 0, offset: 0, key: None, value: Some(format!("{item},{price},{}", format_ts(ts)).into_bytes()), headers: vec![], timestamp: Some(ts) }
        })
        .collect()
}

#[test]
fn kill_9_and_a_restart_from_the_state_dir_lose_and_double_count_nothing() {
    let broker = Broker::start("sql-crash").unwrap();
    let bootstrap = broker.bootstrap();
    let (source, windows_topic, totals_topic) = (unique("events"), unique("per-second"), unique("totals"));
    create_topic(&bootstrap, &source, 1).unwrap();
    create_topic(&bootstrap, &windows_topic, 1).unwrap();
    create_topic(&bootstrap, &totals_topic, 1).unwrap();
    let state = std::env::temp_dir().join(unique("sql-state"));
    let job = format!(
        "SET 'execution.checkpointing.interval' = '500 ms';
CREATE TABLE events (item STRING, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH ('connector' = 'kafka', 'topic' = '{source}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'csv', 'scan.startup.mode' = 'earliest-offset');
CREATE TABLE per_second (item STRING, window_start TIMESTAMP(3), n BIGINT, total BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{windows_topic}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json',
      'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = 'crash-test');
CREATE TABLE totals (item STRING, n BIGINT, total BIGINT, PRIMARY KEY (item) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{totals_topic}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
INSERT INTO per_second SELECT item, window_start, COUNT(*), SUM(price) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY item, window_start, window_end;
INSERT INTO totals SELECT item, COUNT(*), SUM(price) FROM events GROUP BY item;
CREATE MATERIALIZED VIEW counts AS SELECT item, COUNT(*) AS n, SUM(price) AS total FROM events GROUP BY item;
"
    );
    let file = job_file("sql-crash", &job);
    let start = |name: &str, addr: &str| ferry_testkit::Process::spawn(common::ferry(), &["sql", "run", file.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--listen", addr], &unique(name)).unwrap();
    let view_total = |addr: &str| -> Option<i64> {
        let (status, _, body) = get(addr, "/api/v1/query/counts/all", &[]);
        let rows: Vec<Value> = serde_json::from_str(&body).ok()?;
        (status == 200).then(|| rows.iter().map(|r| r["n"].as_i64().unwrap_or(0)).sum())
    };
    let producer = RecordProducer::new(&bootstrap).unwrap();

    // Two crashes at different moments: after a pause (a checkpoint is certain), and at once.
    let total = 9_000;
    let mut produced = 0;
    let mut addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let mut job_process = start("sql-crash-0", &addr);
    for (round, pause_ms) in [(1, 1_500u64), (2, 200)] {
        producer.send_all(&source, &events(produced, produced + 3_000)).unwrap();
        produced += 3_000;
        ferry_testkit::wait_for(std::time::Duration::from_secs(30), || view_total(&addr).filter(|n| *n > 0).map(|_| ())).unwrap_or_else(|| panic!("round {round}: the view never filled:\n{}", job_process.output()));
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        let reached = view_total(&addr);
        job_process.kill_9();
        println!("round {round}: kill -9 {pause_ms} ms after the view filled; it held {reached:?} of {produced} events");
        addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
        job_process = start(&format!("sql-crash-{round}"), &addr);
    }
    producer.send_all(&source, &events(produced, total)).unwrap();
    let reached = ferry_testkit::wait_for(std::time::Duration::from_secs(60), || view_total(&addr).filter(|n| *n >= total as i64));
    assert_eq!(reached, Some(total as i64), "every event counted once in the view after two kill -9:\n{}", job_process.output());
    assert!(job_process.output().contains("resumed from a checkpoint"), "{}", job_process.output());

    // The reference, computed here.
    let mut per_item: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut per_window: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let last_ts = event(total - 1).2;
    for i in 0..total {
        let (item, price, ts) = event(i);
        let e = per_item.entry(item.to_string()).or_default();
        e.0 += 1;
        e.1 += price;
        let start = ts - ts.rem_euclid(1_000);
        if start + 1_000 - 1 <= last_ts {
            let w = per_window.entry((item.to_string(), format_ts(start))).or_default();
            w.0 += 1;
            w.1 += price;
        }
    }
    let (_, _, body) = get(&addr, "/api/v1/query/counts/all", &[]);
    let view: BTreeMap<String, (i64, i64)> = serde_json::from_str::<Vec<Value>>(&body).unwrap().iter().map(|r| (r["item"].as_str().unwrap().to_string(), (r["n"].as_i64().unwrap(), r["total"].as_i64().unwrap()))).collect();
    assert_eq!(view, per_item, "the view equals the reference");

    // The upsert topic (at least once) folds to the reference; the windows (an exactly-once
    // sink, read here read_committed, librdkafka's default) are there once each with the
    // reference's values.
    let folded = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || {
        let mut folded: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for r in read_to_end(&bootstrap, &totals_topic, 1) {
            let key: Value = serde_json::from_slice(r.key.as_ref().unwrap()).unwrap();
            let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            folded.insert(key["item"].as_str().unwrap().to_string(), (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap()));
        }
        (folded == per_item).then_some(folded)
    });
    assert_eq!(folded, Some(per_item.clone()), "the upsert topic folds to the reference");
    let got_windows = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || {
        let mut got: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        let mut rewritten = 0;
        for r in read_to_end(&bootstrap, &windows_topic, 1) {
            let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            let key = (v["item"].as_str().unwrap().to_string(), v["window_start"].as_str().unwrap().to_string());
            let value = (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap());
            if let Some(before) = got.insert(key.clone(), value) {
                assert_eq!(before, value, "window {key:?} written twice with different values");
                rewritten += 1;
            }
        }
        (got.len() >= per_window.len()).then_some((got, rewritten))
    });
    let (got_windows, rewritten) = got_windows.unwrap_or_else(|| panic!("windows missing:\n{}", job_process.output()));
    for (k, v) in &per_window {
        assert_eq!(got_windows.get(k), Some(v), "window {k:?}");
    }
    assert_eq!(rewritten, 0, "an exactly-once sink's committed records hold each window once");
    println!("after two kill -9: view and upsert topic equal the reference; {} windows, each committed once", per_window.len());
    let status = job_process.terminate(std::time::Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{}", job_process.output());
    let _ = std::fs::remove_dir_all(&state);
}

const REGIONS: [&str; 4] = ["eu", "us", "apac", "latam"];

/// Change `i` of the accounts table: an account's new (region, amount), or its deletion.
fn account_change(i: usize) -> (i64, Option<(&'static str, i64)>) {
    let id = ((i * 37) % 150) as i64;
    if i % 11 == 5 {
        return (id, None);
    }
    (id, Some((REGIONS[(i * 7 + i / 13) % 4], ((i * 7919) % 1200) as i64 - 100)))
}

#[test]
fn an_upsert_kafka_table_is_read_as_a_changelog_into_aggregates_and_views() {
    let broker = Broker::start("sql-upsert").unwrap();
    let bootstrap = broker.bootstrap();
    let (accounts, totals, spread) = (unique("accounts"), unique("region-totals"), unique("region-spread"));
    create_topic(&bootstrap, &accounts, 3).unwrap();
    create_topic(&bootstrap, &totals, 2).unwrap();
    create_topic(&bootstrap, &spread, 1).unwrap();
    // 2,000 changes of 150 accounts: upserts and tombstones, each key on one partition.
    let changes: Vec<(i64, Option<(&str, i64)>)> = (0..2_000).map(account_change).collect();
    let records: Vec<TestRecord> = changes
        .iter()
        .map(|(id, v)| TestRecord {
            partition: (*id % 3) as i32,
            offset: 0,
            key: Some(json!({"id": id}).to_string().into_bytes()),
            value: v.map(|(region, amount)| json!({"region": region, "amount": amount}).to_string().into_bytes()),
            headers: vec![],
            timestamp: None,
        })
        .collect();
    RecordProducer::new(&bootstrap).unwrap().send_all(&accounts, &records).unwrap();
    // The same changes with the key's field in the value too (Flink's default, 'ALL'): a
    // tombstone's id still comes from its key.
    let (accounts_all, rich_ids) = (unique("accounts-all"), unique("rich-ids"));
    create_topic(&bootstrap, &accounts_all, 3).unwrap();
    create_topic(&bootstrap, &rich_ids, 1).unwrap();
    let with_id: Vec<TestRecord> = records
        .iter()
        .zip(&changes)
        .map(|(r, (id, v))| TestRecord { value: v.map(|(region, amount)| json!({"id": id, "region": region, "amount": amount}).to_string().into_bytes()), ..r.clone() })
        .collect();
    RecordProducer::new(&bootstrap).unwrap().send_all(&accounts_all, &with_id).unwrap();
    // The reference: the table's last state, then the queries over it.
    let mut state: BTreeMap<i64, (&str, i64)> = BTreeMap::new();
    for (id, v) in &changes {
        match v {
            Some(v) => state.insert(*id, *v),
            None => state.remove(id),
        };
    }
    let mut want_totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (region, amount) in state.values().filter(|(_, a)| *a >= 0) {
        let e = want_totals.entry(region.to_string()).or_default();
        e.0 += 1;
        e.1 += amount;
    }
    // MIN, MAX and COUNT(DISTINCT) over the changelog: every value kept with its count.
    let mut amounts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (region, amount) in state.values() {
        amounts.entry(region.to_string()).or_default().push(*amount);
    }
    let want_spread: BTreeMap<String, Value> = amounts
        .iter()
        .map(|(r, a)| (r.clone(), json!({"region": r, "low": a.iter().min(), "high": a.iter().max(), "amounts": a.iter().collect::<std::collections::BTreeSet<_>>().len()})))
        .collect();
    let want_rich: BTreeMap<i64, (String, i64)> = state.iter().filter(|(_, (_, a))| *a > 800).map(|(id, (r, a))| (*id, (r.to_string(), *a))).collect();
    assert!(state.len() < 150 && want_rich.len() > 5 && want_totals.len() == 4, "the input deletes and moves accounts: {} live, {} rich", state.len(), want_rich.len());

    let addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let job = format!(
        "CREATE TABLE accounts (id BIGINT, region STRING, amount BIGINT, PRIMARY KEY (id) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{accounts}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json',
      'value.fields-include' = 'EXCEPT_KEY', 'scan.bounded.mode' = 'latest-offset');
CREATE TABLE region_totals (region STRING, accounts BIGINT, total BIGINT, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{totals}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
INSERT INTO region_totals SELECT region, COUNT(*), SUM(amount) FROM accounts WHERE amount >= 0 GROUP BY region;
CREATE TABLE region_spread (region STRING, low BIGINT, high BIGINT, amounts BIGINT, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{spread}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
INSERT INTO region_spread SELECT region, MIN(amount), MAX(amount), COUNT(DISTINCT amount) FROM accounts GROUP BY region;
CREATE MATERIALIZED VIEW rich WITH ('primary-key' = 'id') AS SELECT id, region, amount FROM accounts WHERE amount > 800;
CREATE TABLE accounts_all (id BIGINT, region STRING, amount BIGINT, PRIMARY KEY (id) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{accounts_all}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');
CREATE TABLE rich_ids (id BIGINT, amount BIGINT, PRIMARY KEY (id) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{rich_ids}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
INSERT INTO rich_ids SELECT id, amount FROM accounts_all WHERE amount > 800;
"
    );
    let file = job_file("sql-upsert", &job);
    let (code, out, err) = sql(&["explain", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("upserts by [id] as a changelog"), "{out}");
    let mut process = ferry_testkit::Process::spawn(common::ferry(), &["sql", "run", file.to_str().unwrap(), "--listen", &addr], &unique("sql-upsert")).unwrap();
    // The view: the accounts above 800 now, whatever they were before.
    let rows = ferry_testkit::wait_for(std::time::Duration::from_secs(60), || {
        let (status, head, body) = get(&addr, "/api/v1/query/rich/all?limit=1000", &[]);
        let offsets: i64 = head.lines().find_map(|l| l.strip_prefix("x-ferry-source-offsets: "))?.split(',').map(|p| p.rsplit_once('=').map_or(0, |(_, o)| o.parse::<i64>().unwrap_or(0))).sum();
        (status == 200 && offsets == 2_000).then(|| serde_json::from_str::<Vec<Value>>(&body).unwrap())
    })
    .unwrap_or_else(|| panic!("the view never read all 2,000 changes: {:?}\n{}", get(&addr, "/api/v1/query/rich/all", &[]), process.output()));
    let got: BTreeMap<i64, (String, i64)> = rows.iter().map(|r| (r["id"].as_i64().unwrap(), (r["region"].as_str().unwrap().to_string(), r["amount"].as_i64().unwrap()))).collect();
    assert_eq!(got, want_rich, "the view holds the table's current rows that pass the filter");

    // The aggregate: the upsert topic folded by key is the reference's totals (retractions as
    // accounts moved region, went below 0 or were deleted).
    let written = ferry_testkit::wait_for(std::time::Duration::from_secs(60), || {
        let mut folded: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for r in read_to_end(&bootstrap, &totals, 2) {
            let key: Value = serde_json::from_slice(r.key.as_ref().expect("upsert records have keys")).unwrap();
            let region = key["region"].as_str().unwrap().to_string();
            match &r.value {
                None => folded.remove(&region),
                Some(v) => {
                    let v: Value = serde_json::from_slice(v).unwrap();
                    folded.insert(region, (v["accounts"].as_i64().unwrap(), v["total"].as_i64().unwrap()))
                }
            };
        }
        (folded == want_totals).then_some(folded)
    });
    assert_eq!(written, Some(want_totals.clone()), "the upsert topic folded by key\n{}", process.output());
    let spread_written = ferry_testkit::wait_for(std::time::Duration::from_secs(60), || {
        let mut folded: BTreeMap<String, Value> = BTreeMap::new();
        for r in read_to_end(&bootstrap, &spread, 1) {
            let key: Value = serde_json::from_slice(r.key.as_ref().expect("upsert records have keys")).unwrap();
            let region = key["region"].as_str().unwrap().to_string();
            match &r.value {
                None => folded.remove(&region),
                Some(v) => folded.insert(region, serde_json::from_slice(v).unwrap()),
            };
        }
        (folded == want_spread).then_some(folded)
    });
    assert_eq!(spread_written, Some(want_spread), "MIN, MAX and COUNT(DISTINCT) over the changelog, folded by key\n{}", process.output());
    let want_ids: BTreeMap<i64, i64> = want_rich.iter().map(|(id, (_, a))| (*id, *a)).collect();
    let ids = ferry_testkit::wait_for(std::time::Duration::from_secs(60), || {
        let mut folded: BTreeMap<i64, i64> = BTreeMap::new();
        for r in read_to_end(&bootstrap, &rich_ids, 1) {
            let key: Value = serde_json::from_slice(r.key.as_ref().expect("upsert records have keys")).unwrap();
            let id = key["id"].as_i64().unwrap();
            match &r.value {
                None => folded.remove(&id),
                Some(v) => folded.insert(id, serde_json::from_slice::<Value>(v).unwrap()["amount"].as_i64().unwrap()),
            };
        }
        (folded == want_ids).then_some(folded)
    });
    assert_eq!(ids, Some(want_ids), "ids from the key of tombstones, with 'value.fields-include' = 'ALL'\n{}", process.output());
    let status = process.terminate(std::time::Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status:?}\n{}", process.output());

    // What cannot run over a changelog is refused with its place.
    let bad = job.replace("SELECT region, COUNT(*), SUM(amount) FROM", "SELECT region, COUNT(*), STDDEV_POP(amount) FROM");
    let (code, _, err) = sql(&["check", unchecked_job_file("sql-upsert-bad", &bad).to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":6:1:") && err.contains("STDDEV_POP cannot take rows back"), "{err}");
}

const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

/// Order `i`: customer, event time. Customers c0..c29 exist, c30..c39 do not.
fn join_order(i: usize) -> (String, i64) {
    (format!("c{}", i % 40), 1_700_000_000_000 + i as i64 * 100)
}

/// The payment of order `i`, if it is paid: its time (0 to 12 s after the order).
fn payment(i: usize) -> Option<i64> {
    (!i.is_multiple_of(3)).then(|| join_order(i).1 + (i % 7) as i64 * 2_000)
}

#[test]
fn regular_and_interval_joins_write_what_an_independent_reference_computes() {
    let broker = Broker::start("sql-join").unwrap();
    let bootstrap = broker.bootstrap();
    let (orders, customers, payments) = (unique("orders"), unique("customers"), unique("payments"));
    let (enriched, paid, unpaid) = (unique("enriched"), unique("paid"), unique("unpaid"));
    for (topic, partitions) in [(&orders, 2), (&customers, 1), (&payments, 2), (&enriched, 2), (&paid, 2), (&unpaid, 1)] {
        create_topic(&bootstrap, topic, partitions).unwrap();
    }
    let n = 600;
    let json_record = |partition: i32, value: Value| TestRecord { partition, offset: 0, key: None, value: Some(value.to_string().into_bytes()), headers: vec![], timestamp: None };
    let producer = RecordProducer::new(&bootstrap).unwrap();
    producer.send_all(&orders, &(0..n).map(|i| json_record((i % 2) as i32, json!({"id": i, "customer": join_order(i).0, "ts": format_ts(join_order(i).1)}))).collect::<Vec<_>>()).unwrap();
    producer.send_all(&customers, &(0..30).map(|c| json_record(0, json!({"name": format!("c{c}"), "tier": TIERS[c % 3]}))).collect::<Vec<_>>()).unwrap();
    // Payments in time order on each partition (so none is late).
    let mut pays: Vec<(i64, usize)> = (0..n).filter_map(|i| payment(i).map(|t| (t, i))).collect();
    pays.sort();
    producer.send_all(&payments, &pays.iter().map(|(t, i)| json_record((i % 2) as i32, json!({"order_id": i, "paid": format_ts(*t)}))).collect::<Vec<_>>()).unwrap();
    // Each customer's discount, versioned: a new one every 20 s; c9, c19 and c29 deleted at 50 s.
    let (discounts, discounted) = (unique("discounts"), unique("discounted"));
    create_topic(&bootstrap, &discounts, 1).unwrap();
    create_topic(&bootstrap, &discounted, 1).unwrap();
    let base = join_order(0).1;
    let mut versions: Vec<(i64, usize, Option<i64>)> = (0..30).flat_map(|c| (0..4).map(move |k| (base + k * 20_000, c, Some(c as i64 * 10 + k)))).collect();
    versions.extend([9, 19, 29].map(|c| (base + 50_000, c, None)));
    versions.sort();
    let discount_records: Vec<TestRecord> = versions
        .iter()
        .map(|(t, c, v)| TestRecord {
            partition: 0,
            offset: 0,
            key: Some(json!({"customer": format!("c{c}")}).to_string().into_bytes()),
            value: v.map(|pct| json!({"customer": format!("c{c}"), "pct": pct, "since": format_ts(*t)}).to_string().into_bytes()),
            headers: vec![],
            timestamp: Some(*t),
        })
        .collect();
    producer.send_all(&discounts, &discount_records).unwrap();

    let source = |name: &str, topic: &str, columns: &str| {
        format!("CREATE TABLE {name} ({columns}) WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json', 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');\n")
    };
    let job = format!(
        "{}{}{}CREATE TABLE enriched (id BIGINT, customer STRING, tier STRING, PRIMARY KEY (id) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{enriched}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
CREATE TABLE paid (id BIGINT, paid TIMESTAMP(3)) WITH ('connector' = 'kafka', 'topic' = '{paid}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
CREATE TABLE unpaid (id BIGINT) WITH ('connector' = 'kafka', 'topic' = '{unpaid}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
INSERT INTO enriched SELECT o.id, o.customer, c.tier FROM orders o LEFT JOIN customers c ON o.customer = c.name;
INSERT INTO paid SELECT o.id, p.paid FROM orders o JOIN payments p ON o.id = p.order_id AND p.paid BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND;
INSERT INTO unpaid SELECT o.id FROM orders o LEFT JOIN payments p ON o.id = p.order_id AND p.paid BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND WHERE p.order_id IS NULL;
CREATE TABLE discounts (customer STRING, pct BIGINT, since TIMESTAMP(3), WATERMARK FOR since AS since, PRIMARY KEY (customer) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{discounts}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');
CREATE TABLE discounted (id BIGINT, pct BIGINT) WITH ('connector' = 'kafka', 'topic' = '{discounted}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
INSERT INTO discounted SELECT o.id, d.pct FROM orders AS o LEFT JOIN discounts FOR SYSTEM_TIME AS OF o.ts AS d ON o.customer = d.customer;
",
        source("orders", &orders, "id BIGINT, customer STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND"),
        source("customers", &customers, "name STRING, tier STRING"),
        source("payments", &payments, "order_id BIGINT, paid TIMESTAMP(3), WATERMARK FOR paid AS paid - INTERVAL '1' SECOND"),
    );
    let file = job_file("sql-join", &job);
    let (code, out, err) = sql(&["explain", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Left join with customers") && out.contains("interval join, right time - left time in [0 ms, 10000 ms]"), "{out}");
    let out = Command::new(common::ferry()).args(["sql", "run", file.to_str().unwrap()]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(late_reported(&log, "paid") + late_reported(&log, "unpaid"), 0, "payments come in time order: none is late\n{log}");

    // LEFT JOIN: every order, with its customer's tier or none; padded rows taken back.
    let mut folded: BTreeMap<i64, Value> = BTreeMap::new();
    for r in read_to_end(&bootstrap, &enriched, 2) {
        let key: Value = serde_json::from_slice(r.key.as_ref().expect("upsert records have keys")).unwrap();
        let id = key["id"].as_i64().unwrap();
        match &r.value {
            None => folded.remove(&id),
            Some(v) => folded.insert(id, serde_json::from_slice::<Value>(v).unwrap()["tier"].clone()),
        };
    }
    let want: BTreeMap<i64, Value> = (0..n).map(|i| (i as i64, if i % 40 < 30 { json!(TIERS[(i % 40) % 3]) } else { Value::Null })).collect();
    assert_eq!(folded, want, "the upsert topic folded by order id");

    // Interval join: each order paid within 10 s, once.
    let mut got: Vec<(i64, String)> = read_to_end(&bootstrap, &paid, 2)
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            (v["id"].as_i64().unwrap(), v["paid"].as_str().unwrap().to_string())
        })
        .collect();
    got.sort();
    let want: Vec<(i64, String)> = (0..n).filter(|i| i % 3 != 0 && i % 7 <= 5).map(|i| (i as i64, format_ts(payment(i).unwrap()))).collect();
    assert_eq!(got, want, "paid within the interval, each once");
    let paid_count = want.len();
    // The outer interval join writes an order without a payment in time when it leaves the state.
    let mut got: Vec<i64> = read_to_end(&bootstrap, &unpaid, 1).iter().map(|r| serde_json::from_slice::<Value>(r.value.as_ref().unwrap()).unwrap()["id"].as_i64().unwrap()).collect();
    got.sort();
    let want: Vec<i64> = (0..n).filter(|i| i % 3 == 0 || i % 7 == 6).map(|i| i as i64).collect();
    assert_eq!(got, want, "orders not paid within 10 s, each once");
    // Temporal join: each order with the discount its customer had at the order's time.
    let mut got: Vec<(i64, Option<i64>)> = read_to_end(&bootstrap, &discounted, 1)
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            (v["id"].as_i64().unwrap(), v["pct"].as_i64())
        })
        .collect();
    got.sort();
    let want: Vec<(i64, Option<i64>)> = (0..n)
        .map(|i| {
            let (c, ts) = (i % 40, join_order(i).1);
            // A tombstone's -D carries the row it deletes (as Flink's changelog does), so the
            // deletion counts from that version's time: 40 s.
            let deleted = c % 10 == 9 && ts >= base + 40_000;
            (i as i64, (c < 30 && !deleted).then(|| c as i64 * 10 + ((ts - base) / 20_000).min(3)))
        })
        .collect();
    let differ: Vec<String> = got.iter().zip(&want).filter(|(g, w)| g != w).take(10).map(|(g, w)| format!("{g:?} want {w:?}")).collect();
    assert_eq!(got.len(), want.len(), "one row per order: {differ:?}");
    assert!(differ.is_empty(), "the version of each order's time: {differ:?}");

    // With --state-dir, a second run resumes both tables from the checkpoint: nothing is read or
    // written again.
    let state = std::env::temp_dir().join(unique("sql-join-state"));
    let only_paid: String = job.lines().filter(|l| !l.starts_with("INSERT INTO enriched") && !l.starts_with("INSERT INTO unpaid") && !l.starts_with("INSERT INTO discounted")).map(|l| format!("{l}\n")).collect();
    let file = job_file("sql-join-state", &only_paid);
    let run = || {
        let out = Command::new(common::ferry()).args(["sql", "run", file.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        log
    };
    let first = run();
    assert!(first.contains(&format!("records_in=1000 records_out={paid_count}")), "{first}");
    let second = run();
    assert!(second.contains("resumed from a checkpoint") && second.contains("records_in=0 records_out=0"), "{second}");
    assert_eq!(read_to_end(&bootstrap, &paid, 2).len(), 2 * paid_count, "the first run wrote each payment once more, the second nothing");
}

/// `tests/python/sql_avro.py MODE …` with confluent-kafka's Avro serializer: its stdout.
fn python_avro(mode: &str, registry: &str, bootstrap: &str, topic: &str, count: usize) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/sql_avro.py");
    let out = Command::new(common::venv_python()).arg(script).args([mode, &format!("http://{registry}"), bootstrap, topic, &count.to_string()]).output().unwrap();
    assert!(out.status.success(), "sql_avro.py {mode}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn avro_confluent_tables_read_and_write_what_confluents_serializers_do() {
    let broker = Broker::start("sql-avro").unwrap();
    let bootstrap = broker.bootstrap();
    let (addr, config) = common::registry_config(&broker, "sql-avro-registry");
    let _registry = common::spawn_registry("sql-avro-registry", &addr, &config);
    let (orders, big) = (unique("avro-orders"), unique("avro-big"));
    create_topic(&bootstrap, &orders, 2).unwrap();
    create_topic(&bootstrap, &big, 1).unwrap();
    // confluent-kafka's AvroSerializer registers its own schema (another field order, a field the
    // table lacks) and writes 300 orders.
    python_avro("produce", &addr, &bootstrap, &orders, 300);
    let job = format!(
        "CREATE TABLE orders (id BIGINT, customer STRING, amount BIGINT, ts TIMESTAMP(3))
WITH ('connector' = 'kafka', 'topic' = '{orders}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'avro-confluent',
      'avro-confluent.url' = 'http://{addr}', 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
CREATE TABLE big (id BIGINT, customer STRING, doubled BIGINT, ts TIMESTAMP(3))
WITH ('connector' = 'kafka', 'topic' = '{big}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'avro-confluent', 'avro-confluent.url' = 'http://{addr}');
INSERT INTO big SELECT id, UPPER(customer), amount * 2, ts FROM orders WHERE amount > 300 OR amount IS NULL;
"
    );
    let file = job_file("sql-avro", &job);
    let (code, out, err) = sql(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let base = 1_700_000_000_000i64;
    let want: Vec<Value> = (0..300i64)
        .filter(|i| i % 10 == 7 || i * 3 > 300)
        .map(|i| json!({"id": i, "customer": format!("C{}", i % 5), "doubled": if i % 10 == 7 { Value::Null } else { json!(i * 6) }, "ts": base + 100 * i}))
        .collect();
    // Read back by confluent-kafka's AvroDeserializer, with the schema Ferry registered.
    let mut got: Vec<Value> = serde_json::from_str(&python_avro("consume", &addr, &bootstrap, &big, want.len())).unwrap();
    got.sort_by_key(|v| v["id"].as_i64());
    assert_eq!(got, want);
    let (status, body, _) = {
        let (s, b) = ferry_testkit::http_request(&addr, "GET", &format!("/subjects/{big}-value/versions/latest"), &[], "").unwrap();
        (s, b, ())
    };
    assert_eq!(status, 200, "{body}");
    let schema: Value = serde_json::from_str(serde_json::from_str::<Value>(&body).unwrap()["schema"].as_str().unwrap()).unwrap();
    assert_eq!((schema["namespace"].as_str(), schema["name"].as_str()), (Some("org.apache.flink.avro.generated"), Some("record")), "the schema Flink derives: {schema}");

    // The SQL console's tables from the registry: the orders topic's table as Flink derives it
    // from the writer's schema, and a query sampled over that table as offered.
    let serve_config = std::env::temp_dir().join(format!("{}.properties", unique("avro-serve")));
    std::fs::write(&serve_config, format!("clusters = a\na.bootstrap.servers = {bootstrap}\n")).unwrap();
    let serve_addr = format!("127.0.0.1:{}", ferry_testkit::free_port());
    let mut serve = ferry_testkit::Process::spawn(common::ferry(), &["serve", "--config", serve_config.to_str().unwrap(), "--listen", &serve_addr, "--registry", &format!("http://{addr}")], &unique("avro-serve")).unwrap();
    let tables = ferry_testkit::wait_for(std::time::Duration::from_secs(30), || match ferry_testkit::http_request(&serve_addr, "GET", "/api/v1/sql/registry-tables", &[], "") {
        Ok((200, body)) => serde_json::from_str::<Vec<Value>>(&body).ok(),
        _ => None,
    })
    .unwrap_or_else(|| panic!("no registry tables\n{}", serve.output()));
    let table = tables.iter().find(|t| t["topic"] == orders.as_str()).unwrap_or_else(|| panic!("{orders} not offered: {tables:?}"));
    assert_eq!((table["subject"].as_str(), table["cluster"].as_str(), table["error"].as_str()), (Some(format!("{orders}-value").as_str()), Some("a"), None), "{table}");
    let columns: Vec<String> = table["columns"].as_array().unwrap().iter().map(|c| format!("{} {}", c["name"].as_str().unwrap(), c["type"].as_str().unwrap())).collect();
    assert_eq!(columns, ["note STRING NOT NULL", "id BIGINT NOT NULL", "customer STRING NOT NULL", "amount BIGINT", "ts TIMESTAMP(3) NOT NULL"], "{table}");
    assert!(tables.iter().any(|t| t["topic"] == big.as_str() && t["ddl"].is_string()), "the table Ferry registered for its sink too: {tables:?}");
    let ddl = table["ddl"].as_str().unwrap();
    let request = json!({"tables": ddl, "query": format!("SELECT id, customer, amount FROM `{orders}` WHERE id < 20"), "limit": 20}).to_string();
    let (status, body) = ferry_testkit::http_request(&serve_addr, "POST", "/api/v1/sql/sample", &[("Content-Type", "application/json")], &request).unwrap();
    assert_eq!(status, 200, "{body}");
    let mut sampled: Vec<Value> = body.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["row"].clone()).collect();
    sampled.sort_by_key(|r| r["id"].as_i64());
    let want: Vec<Value> = (0..20i64).map(|i| json!({"id": i, "customer": format!("c{}", i % 5), "amount": if i % 10 == 7 { Value::Null } else { json!(i * 3) }})).collect();
    assert_eq!(sampled, want, "{body}");
    // The same in the console's SQL page: the table added from the registry, a name completed.
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-sql-registry.png");
    let (ran, seen) = common::console_script(&["sql-registry.mjs", &format!("http://{serve_addr}/"), "", screenshot.to_str().unwrap(), &orders]);
    println!("browser: {seen}\nscreenshot: {}", screenshot.display());
    assert!(ran, "{seen}\n{}", serve.output());
    assert_eq!(seen["tables"], json!([orders]), "{seen}");
    assert_eq!(seen["ddl"].as_str().map(str::trim), Some(ddl), "{seen}");
    assert_eq!(seen["choices"], json!(["customer"]), "{seen}");
    assert_eq!(seen["query"], "SELECT customer", "{seen}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "screenshot saved");
    let _ = serve.terminate(std::time::Duration::from_secs(10));

    // A record that is not in the wire format stops the job, named.
    RecordProducer::new(&bootstrap).unwrap().send_all(&orders, &[TestRecord { partition: 0, offset: 0, key: None, value: Some(b"{\"id\": 1}".to_vec()), headers: vec![], timestamp: None }]).unwrap();
    let (code, _, err) = sql(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not decode (not Confluent's wire format") && err.contains(&format!("topic {orders} partition 0")), "{err}");
}

/// A pipeline spreads over subtasks: consumers share the source partitions and each key's state
/// lives in one subtask; the results equal a reference; a checkpoint keeps the parallelism it
/// was taken with (a restart adopts it, a job setting another is refused with both numbers).
#[test]
fn a_pipeline_over_subtasks_writes_what_one_thread_would_and_keeps_its_parallelism() {
    let broker = Broker::start("sql-subtasks").unwrap();
    let bootstrap = broker.bootstrap();
    let (source, sink) = (unique("orders"), unique("per-key"));
    create_topic(&bootstrap, &source, 4).unwrap();
    create_topic(&bootstrap, &sink, 2).unwrap();
    let producer = RecordProducer::new(&bootstrap).unwrap();
    producer.send_all(&source, &orders(0, 3_000, 4)).unwrap();
    let state = std::env::temp_dir().join(unique("sql-subtasks-state"));
    let job = |parallelism: Option<u32>| {
        let set = parallelism.map_or_else(String::new, |n| format!("SET 'parallelism.default' = '{n}';\n"));
        let table = tables(&bootstrap, &source, "unused", "").split("CREATE TABLE big").next().unwrap().to_string();
        format!(
            "{set}{table}CREATE TABLE per_key (k BIGINT, n BIGINT, ids BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '{sink}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'json', 'value.format' = 'json');
INSERT INTO per_key SELECT MOD(id, 37) AS k, COUNT(*) AS n, SUM(id) AS ids FROM orders WHERE customer <> 'dee' GROUP BY MOD(id, 37);
"
        )
    };
    let run = |text: &str, extra: &[&str]| {
        let file = job_file("sql-subtasks", text);
        let mut args = vec!["run", file.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
        args.extend_from_slice(extra);
        sql(&args)
    };
    let check = |upto: usize| {
        let mut want: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for id in (0..upto).filter(|i| order(*i).1 != "dee") {
            let e = want.entry(id as i64 % 37).or_default();
            *e = (e.0 + 1, e.1 + id as i64);
        }
        let mut got: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for r in read_to_end(&bootstrap, &sink, 2) {
            let key: Value = serde_json::from_slice(r.key.as_ref().unwrap()).unwrap();
            let k = key["k"].as_i64().unwrap();
            match r.value {
                Some(v) => {
                    let v: Value = serde_json::from_slice(&v).unwrap();
                    got.insert(k, (v["n"].as_i64().unwrap(), v["ids"].as_i64().unwrap()));
                }
                None => {
                    got.remove(&k);
                }
            }
        }
        assert_eq!(got, want, "the upsert table folded by key, after {upto} orders");
    };

    let (code, _, err) = run(&job(Some(3)), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("parallelism=3"), "{err}");
    check(3_000);

    // Another parallelism over the same checkpoint: refused, naming both, nothing read.
    let (code, _, err) = run(&job(Some(2)), &[]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("was taken with parallelism 3") && err.contains("'parallelism.default' = '2'"), "{err}");

    // Not set in the job: the checkpoint's parallelism wins over the command line's default.
    producer.send_all(&source, &orders(3_000, 4_000, 4)).unwrap();
    let (code, _, err) = run(&job(None), &["--parallelism", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("parallelism=3") && err.contains("records_in=1000"), "{err}");
    check(4_000);
}
