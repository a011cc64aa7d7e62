//! `ferry sql` on Apache Kafka: a job file in Flink's dialect reads a topic, filters and
//! projects it with Flink's functions, metadata and computed columns, and writes another topic;
//! the sink's records are compared with a reference the test computes from the same input.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;

use ferry_testkit::{consume_all, create_topic, unique, Broker, RecordProducer, TestRecord};
use serde_json::{json, Value};

fn job_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.sql", unique(name)));
    std::fs::write(&path, text).unwrap();
    path
}

/// `ferry sql ARGS`: (exit code, stdout, stderr).
fn sql(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::ferry()).arg("sql").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
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

/// Flink's SQL timestamp text: `2023-11-14 22:13:20.25` (trailing zeros of the fraction dropped,
/// none for a whole second).
fn format_ts(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let fraction = match ms.rem_euclid(1000) {
        0 => String::new(),
        f => format!(".{f:03}").trim_end_matches('0').to_string(),
    };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{fraction}", rem / 3600, rem % 3600 / 60, rem % 60)
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
    create_topic(&broker.bootstrap(), &source, 3).unwrap();
    create_topic(&broker.bootstrap(), &sink, 2).unwrap();
    let records = orders(0, 3_000, 3);
    RecordProducer::new(&broker.bootstrap()).unwrap().send_all(&source, &records).unwrap();
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
    ];
    for (text, want) in cases {
        let file = job_file("sql-wrong", text);
        let (code, out, err) = sql(&["check", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.starts_with(&format!("{}{want}", file.display())), "want {want:?} in: {err}");
    }
    let (code, _, err) = sql(&["check", "/nonexistent/job.sql"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/job.sql"), "{err}");
}
