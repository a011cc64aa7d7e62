//! What the SQL benchmarks share: a sink's result read back for comparison.
#![allow(dead_code)] // each benchmark uses a part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_testkit::{create_topic, flink_run, unique, watermarks};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// A sink's result: an append topic's values as a sorted multiset of JSON texts (keys in order),
/// an upsert topic's table (the last value per key, tombstones removing) in key order.
pub(crate) fn result(bootstrap: &str, topic: &str, partitions: i32, upsert: bool) -> Vec<(String, String)> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", unique("result")).set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = 0;
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        ends += watermarks(bootstrap, topic, p).unwrap().1;
    }
    c.assign(&tpl).unwrap();
    // Numbers by value: Flink writes a DECIMAL as Jackson normalizes it (908.000 as 9.08E+2),
    // Ferry with its scale.
    let canonical = |bytes: Option<&[u8]>| bytes.map(|b| serde_json::from_slice::<serde_json::Value>(b).map(|v| numbers_by_value(v).to_string()).unwrap_or_else(|_| String::from_utf8_lossy(b).into_owned()));
    let mut rows = Vec::new();
    let mut table = std::collections::BTreeMap::new();
    let mut read = 0;
    while read < ends {
        let Some(Ok(m)) = c.poll(Duration::from_secs(10)) else { panic!("{topic}: read {read} of {ends}") };
        read += 1;
        if upsert {
            let key = canonical(m.key()).unwrap_or_default();
            match canonical(m.payload()) {
                Some(v) => table.insert(key, v),
                None => table.remove(&key),
            };
        } else {
            rows.push((String::new(), canonical(m.payload()).unwrap_or_default()));
        }
    }
    if upsert {
        return table.into_iter().collect();
    }
    rows.sort();
    rows
}

/// Runs the job file `job(sink topic)` with `ferry sql run` (its own process, timed from launch)
/// and, with `flink`, on Apache Flink with parallelism 1 and 2, each into a topic of its own;
/// asserts that Flink's results equal Ferry's and prints each rate over `events` input events
/// (and Ferry's against `baseline` events/s when given). Ferry's rate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ferry_and_flink(ferry: &Path, bootstrap: &str, partitions: i32, name: &str, events: usize, upsert: bool, flink: bool, baseline: Option<f64>, job: impl Fn(&str) -> PathBuf) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // One subtask first (the baseline of the parallel run), then as many as the machine's cores
    // (the default); both must write the same results.
    let mut single = None;
    let mut sink = String::new();
    let mut rate = 0.0;
    for parallelism in [1, cores] {
        sink = unique(name);
        create_topic(bootstrap, &sink, partitions).unwrap();
        let file = job(&sink);
        let started = Instant::now();
        let out = Command::new(ferry).args(["sql", "run", file.to_str().unwrap(), "--parallelism", &parallelism.to_string()]).env("RUST_LOG", "warn").output().unwrap();
        let took = started.elapsed();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let written: i64 = (0..partitions).map(|p| watermarks(bootstrap, &sink, p).unwrap().1).sum();
        rate = events as f64 / took.as_secs_f64();
        let versus = baseline.map_or(String::new(), |b| format!("  {:>5.2}x naive", rate / b));
        match &single {
            None => {
                println!("{name:<8} p=1 {:>6.2} s {:>10.0} events/s{versus}  ({written} records written)", took.as_secs_f64(), rate);
                single = Some((rate, result(bootstrap, &sink, partitions, upsert)));
            }
            Some((one, rows)) => {
                assert!(*rows == result(bootstrap, &sink, partitions, upsert), "{name}: the results at parallelism {parallelism} differ from those at 1");
                println!("{name:<8} p={parallelism} {:>6.2} s {:>10.0} events/s{versus}  {:>5.2}x p=1  ({written} records written, results equal)", took.as_secs_f64(), rate, rate / one);
            }
        }
        if cores == 1 {
            break;
        }
    }
    if !flink {
        return rate;
    }
    let ours = result(bootstrap, &sink, partitions, upsert);
    for parallelism in [1, 2] {
        let flink_sink = unique(&format!("flink-{name}"));
        create_topic(bootstrap, &flink_sink, partitions).unwrap();
        let (took_flink, job_only) = flink_run(&job(&flink_sink), parallelism).unwrap_or_else(|e| panic!("{name} on Flink: {e:#}"));
        let theirs = result(bootstrap, &flink_sink, partitions, upsert);
        if ours != theirs {
            let differ: Vec<String> = ours.iter().zip(&theirs).filter(|(a, b)| a != b).take(3).map(|(a, b)| format!("Ferry {a:?} Flink {b:?}")).collect();
            panic!("{name}: Ferry's and Flink's results differ ({} and {} rows): {differ:?}", ours.len(), theirs.len());
        }
        let flink_rate = events as f64 / took_flink.as_secs_f64();
        println!(
            "  flink p={parallelism} {:>6.2} s {:>10.0} events/s  Ferry {:>5.2}x Flink  (job alone, without the JVM's start: {:.2} s, Ferry {:.2}x; results equal: {} rows)",
            took_flink.as_secs_f64(),
            flink_rate,
            rate / flink_rate,
            job_only.as_secs_f64(),
            rate * job_only.as_secs_f64() / events as f64,
            ours.len()
        );
    }
    rate
}

fn numbers_by_value(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().and_then(serde_json::Number::from_f64).map_or(Value::Number(n), Value::Number),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_by_value).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, numbers_by_value(v))).collect()),
        other => other,
    }
}
