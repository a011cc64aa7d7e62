//! `ferry serve` against running `ferry mirror` processes and Apache Kafka brokers on loopback:
//! the API's numbers, aggregation across processes and restarts, the token, the OpenAPI
//! document (validated by Python's openapi-spec-validator), and the console in headless
//! Chromium (Debian's, driven by playwright-core; see scripts/install-test-tools).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ferry, two_clusters, write_config};
use ferry_mirror::report::now_ms;
use ferry_testkit::{create_topic, free_port, produce, sample_records, unique, wait_for, Broker, Process};

/// A plain HTTP/1.1 GET: (status, body).
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn json(addr: &str, path: &str, token: &str) -> serde_json::Value {
    let (status, body) = get(addr, path, Some(token));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn flow(addr: &str, token: &str, name: &str) -> serde_json::Value {
    json(addr, "/api/v1/flows", token).as_array().unwrap().iter().find(|f| f["flow"] == name).cloned().unwrap()
}

/// Records of one topic of a flow, as the API reports them (0 if not there yet).
fn topic_records(addr: &str, token: &str, name: &str, topic: &str) -> u64 {
    let detail = json(addr, &format!("/api/v1/flows/{}", name.replace('>', "%3E")), token);
    detail["topics"].as_array().unwrap().iter().find(|t| t["topic"] == topic).map_or(0, |t| t["records_total"].as_u64().unwrap())
}

/// Waits until the flow's summary satisfies `check`; returns it and how long it took.
fn until(addr: &str, token: &str, name: &str, timeout: Duration, check: impl Fn(&serde_json::Value) -> bool) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let found = wait_for(timeout, || Some(flow(addr, token, name)).filter(|f| check(f)));
    let last = json(addr, &format!("/api/v1/flows/{}", name.replace('>', "%3E")), token);
    (found.unwrap_or_else(|| panic!("{name} never matched within {timeout:?}; last: {last}")), start.elapsed())
}

/// Runs the console's browser script (tests/browser/console.mjs): (success, what it saw).
fn browser(addr: &str, token: &str, screenshot: &Path, extra: &[&str]) -> (bool, serde_json::Value) {
    let url = format!("http://{addr}/");
    let mut args = vec!["console.mjs", &url, token, screenshot.to_str().unwrap(), "a->b", "a.orders"];
    args.extend_from_slice(extra);
    common::console_script(&args)
}

fn start_serve(config: &Path, token_file: &Path, port: u16) -> Process {
    start_serve_in(config, token_file, port, &std::env::temp_dir().join(unique("serve-data")), &[])
}

fn start_serve_in(config: &Path, token_file: &Path, port: u16, data_dir: &Path, extra: &[&str]) -> Process {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--config", config.to_str().unwrap(), "--listen", &listen, "--api-token-file", token_file.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    Process::spawn(ferry(), &args, &unique("serve")).unwrap()
}

#[test]
fn serve_reports_replication_across_processes_restarts_and_in_the_browser() {
    let a = Broker::start("serve-a").unwrap();
    let b = Broker::start("serve-b").unwrap();
    create_topic(&a.bootstrap(), "orders", 3).unwrap();
    create_topic(&b.bootstrap(), "payments", 2).unwrap();
    let text = two_clusters(&a, &b, "a->b.enabled = true\nb->a.enabled = true\na->b.topics = orders\nb->a.topics = payments\n");
    let config = write_config("serve", &text);
    let token = "t0ken-for-test";
    let token_file = std::env::temp_dir().join(unique("token"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let serve = start_serve(&config, &token_file, port);
    wait_for(Duration::from_secs(20), || std::net::TcpStream::connect(&addr).ok().map(|_| ())).unwrap_or_else(|| panic!("serve did not listen:\n{}", serve.output()));

    // 401 without a valid token; probes stay open.
    for path in ["/api/v1/flows", "/api/v1/clusters", "/metrics", "/"] {
        assert_eq!(get(&addr, path, None).0, 401, "{path}");
        assert_eq!(get(&addr, path, Some("wrong")).0, 401, "{path}");
    }
    assert_eq!(get(&addr, "/api/v1/health", None).0, 200);
    // Before any mirror runs, the flows are known from the file and paused.
    let f = flow(&addr, token, "a->b");
    assert_eq!(f["state"], "paused", "{f}");

    // One process per flow: a->b (--clusters b) and b->a (--clusters a).
    let cfg = config.to_str().unwrap();
    let mut first = Process::spawn(ferry(), &["mirror", "--config", cfg, "--clusters", "b"], &unique("serve-mirror-ab")).unwrap();
    let other = Process::spawn(ferry(), &["mirror", "--config", cfg, "--clusters", "a"], &unique("serve-mirror-ba")).unwrap();
    produce(&a.bootstrap(), "orders", &sample_records(3, 100, now_ms())).unwrap();
    produce(&b.bootstrap(), "payments", &sample_records(2, 50, now_ms())).unwrap();
    // (Flows also replicate `heartbeats` topics, as MM2 does: records are counted per topic.)
    let (f, took) = until(&addr, token, "a->b", Duration::from_secs(30), |f| {
        // The summary read first must already count them (it can be a report older than the detail).
        f["lag_records"] == 0 && f["state"] == "active" && f["records_total"].as_u64() >= Some(300) && topic_records(&addr, token, "a->b", "orders") == 300
    });
    println!("a->b: 300 produced into orders, API reports 300 replicated, lag {} after {took:?}", f["lag_records"]);
    assert!(f["heartbeat_age_ms"].as_i64().unwrap() < 5000, "{f}");
    assert!(f["latency"]["p99_ms"].as_i64().is_some(), "{f}");
    let (g, _) = until(&addr, token, "b->a", Duration::from_secs(30), |f| f["state"] == "active" && topic_records(&addr, token, "b->a", "payments") == 100);
    assert_eq!(g["processes"], 1);

    // A restart is a new process run: totals add up across runs.
    assert!(first.terminate(Duration::from_secs(20)).unwrap().success());
    let second = Process::spawn(ferry(), &["mirror", "--config", cfg, "--clusters", "b"], &unique("serve-mirror-ab2")).unwrap();
    produce(&a.bootstrap(), "orders", &sample_records(3, 50, now_ms())).unwrap();
    let (f, took) = until(&addr, token, "a->b", Duration::from_secs(40), |f| f["lag_records"] == 0 && topic_records(&addr, token, "a->b", "orders") == 450);
    println!("after a restart and 150 more: API reports 450 replicated into a.orders after {took:?} ({} processes reporting)", f["processes"]);
    let detail = json(&addr, "/api/v1/flows/a-%3Eb", token);
    let topic = detail["topics"].as_array().unwrap().iter().find(|t| t["topic"] == "orders").unwrap();
    assert_eq!((topic["topic"].as_str(), topic["remote_topic"].as_str(), topic["records_total"].as_u64()), (Some("orders"), Some("a.orders"), Some(450)));
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 3);
    // The whole picture in one view: both flows, both clusters, Prometheus series.
    let clusters = json(&addr, "/api/v1/clusters", token);
    assert!(clusters.as_array().unwrap().iter().all(|c| c["reachable"] == true), "{clusters}");

    // Consumer groups of every cluster: an empty group's committed partitions, lag in records and
    // exact seconds (the records carry their create time), caught-up partitions at 0 s.
    ferry_testkit::commit_offsets(&a.bootstrap(), "billing", &[("orders", 0, 10), ("orders", 1, 150), ("orders", 2, 0)]).unwrap();
    let billing = wait_for(Duration::from_secs(30), || {
        let (status, body) = get(&addr, "/api/v1/clusters/a/groups/billing", Some(token));
        (status == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    })
    .unwrap_or_else(|| panic!("the group was never reported:\n{}", serve.output()));
    println!("group billing on a: {billing}");
    assert_eq!((billing["state"].as_str(), billing["lag"].as_i64()), (Some("Empty"), Some(140 + 150)), "{billing}");
    let partitions = billing["partitions"].as_array().unwrap();
    let at = |p: i64| partitions.iter().find(|x| x["topic"] == "orders" && x["partition"] == p).unwrap();
    assert_eq!((at(0)["lag"].as_i64(), at(0)["lag_seconds_method"].as_str()), (Some(140), Some("record_timestamp")));
    assert!(at(0)["lag_seconds"].as_f64().is_some_and(|s| (0.0..600.0).contains(&s)), "{billing}");
    assert_eq!((at(1)["lag"].as_i64(), at(1)["lag_seconds_method"].as_str(), at(1)["lag_seconds"].as_f64()), (Some(0), Some("caught_up"), Some(0.0)));
    assert!(["OK", "WARN", "STALL", "STOP"].contains(&billing["status"].as_str().unwrap()), "{billing}");
    let page = json(&addr, "/api/v1/clusters/a/groups?search=BILL&limit=10", token);
    assert_eq!((page["total"].as_u64(), page["groups"][0]["group"].as_str(), page["groups"][0]["lag"].as_i64()), (Some(1), Some("billing"), Some(290)), "{page}");
    // Brokers and topics of the same cluster, from its metadata and end offsets.
    let brokers = json(&addr, "/api/v1/clusters/a/brokers", token);
    assert_eq!(brokers.as_array().map(Vec::len), Some(1), "{brokers}");
    assert!(brokers[0]["partitions_led"].as_u64().is_some_and(|n| n >= 3), "{brokers}");
    assert_eq!((brokers[0]["controller"].as_bool(), brokers[0]["rack"].is_null()), (Some(true), true), "one broker, no rack: {brokers}");
    let topics = json(&addr, "/api/v1/clusters/a/topics?search=ORDERS", token);
    let orders = topics["topics"].as_array().unwrap().iter().find(|t| t["topic"] == "orders").unwrap_or_else(|| panic!("{topics}"));
    assert_eq!((orders["partitions"].as_u64(), orders["end_total"].as_i64(), orders["offline"].as_u64()), (Some(3), Some(450), Some(0)), "{topics}");
    let detail = json(&addr, "/api/v1/clusters/a/topics/orders", token);
    assert_eq!(detail["partitions"][0]["isr"], detail["partitions"][0]["replicas"], "{detail}");
    assert!(detail["groups"].as_array().unwrap().contains(&serde_json::json!("billing")), "the consuming group is named: {detail}");
    // Sorted on the server before paging: the topic with the most records first.
    let largest = json(&addr, "/api/v1/clusters/a/topics?sort=records&limit=1", token);
    assert_eq!(largest["topics"][0]["topic"], "orders", "{largest}");
    let (status, body) = get(&addr, "/api/v1/clusters/a/groups?sort=size", Some(token));
    assert!(status == 400 && body.contains("sort: 'size' is not one of name, lag, lag_seconds, status"), "{status} {body}");
    assert_eq!(get(&addr, "/api/v1/clusters/a/topics/nothing", Some(token)).0, 404);
    assert_eq!(get(&addr, "/api/v1/clusters/nowhere/groups", Some(token)).0, 404);
    assert_eq!(get(&addr, "/api/v1/clusters/a/groups/nobody", Some(token)).0, 404);
    let (status, metrics) = get(&addr, "/metrics", Some(token));
    assert_eq!(status, 200);
    for line in ["ferry_replication_bytes_total{flow=\"a->b\"}", "ferry_replication_flow_state{flow=\"b->a\",state=\"active\"} 1", "ferry_cluster_up{cluster=\"a\"} 1",
        "ferry_group_lag_records{cluster=\"a\",group=\"billing\",topic=\"orders\",partition=\"0\"} 140", "ferry_group_lag_seconds{cluster=\"a\",group=\"billing\",topic=\"orders\",partition=\"1\"} 0",
        "ferry_topic_end_offsets_total{cluster=\"a\",topic=\"orders\"} 450"] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    // Exactly one status of the group is 1 (the group may change status between two reads).
    let current: Vec<&str> = metrics.lines().filter(|l| l.starts_with("ferry_group_status{cluster=\"a\",group=\"billing\"")).collect();
    assert_eq!((current.len(), current.iter().filter(|l| l.ends_with(" 1")).count()), (6, 1), "{current:?}");

    // The OpenAPI document validates.
    let (status, doc) = get(&addr, "/openapi.json", Some(token));
    assert_eq!(status, 200);
    let doc_file = std::env::temp_dir().join(format!("{}.json", unique("openapi")));
    std::fs::write(&doc_file, &doc).unwrap();
    let out = std::process::Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(&doc_file).output()
        .expect("python3 is needed (scripts/install-test-tools)");
    assert!(out.status.success(), "openapi-spec-validator (installed by scripts/install-test-tools) rejected /openapi.json:\n{}{}",
        String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // And it is the truth: schemathesis (an outside tool) calls every route with generated
    // input and finds no server error and no answer its schema, status codes or content type
    // do not allow.
    let schemathesis = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/schemathesis-venv/bin/schemathesis");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(&schemathesis)
        .current_dir(std::env::temp_dir()) // its cache directory goes there, not into the tree
        .args(["run", &format!("http://{addr}/openapi.json"), "-H", &format!("Authorization: Bearer {token}"), "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance", "--max-examples", "15", "--seed", "1", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap_or_else(|e| panic!("{} (installed by scripts/install-test-tools): {e}", schemathesis.display()));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found answers /openapi.json does not allow:\n{report}{}", String::from_utf8_lossy(&out.stderr));
    println!("schemathesis: no violation in {:?}: {}", started.elapsed(), report.lines().rev().find(|l| l.contains("passed") || l.contains("cases")).unwrap_or(""));

    // Any number of serve instances: a second one, started now, reads the same history.
    let port2 = free_port();
    let addr2 = format!("127.0.0.1:{port2}");
    let serve2 = start_serve(&config, &token_file, port2);
    wait_for(Duration::from_secs(20), || (TcpStream::connect(&addr2).is_ok() && get(&addr2, "/api/v1/ready", None).0 == 200).then_some(())).unwrap_or_else(|| panic!("second serve not ready:\n{}", serve2.output()));
    assert_eq!(topic_records(&addr2, token, "a->b", "orders"), 450, "the second serve instance disagrees");

    // Two live processes share a->b's partitions (scale-out): the API shows both, each
    // partition with its owner, and the totals keep adding up.
    let third = Process::spawn(ferry(), &["mirror", "--config", cfg, "--clusters", "b"], &unique("serve-mirror-ab3")).unwrap();
    wait_for(Duration::from_secs(30), || third.output().contains("group assigned partitions to this process").then_some(()))
        .unwrap_or_else(|| panic!("the third process got no partition:\n{}", third.output()));
    produce(&a.bootstrap(), "orders", &sample_records(3, 50, now_ms())).unwrap();
    let (f, took) = until(&addr, token, "a->b", Duration::from_secs(40), |f| {
        f["processes"] == 2 && f["lag_records"] == 0 && topic_records(&addr, token, "a->b", "orders") >= 600
    });
    let detail = json(&addr, "/api/v1/flows/a-%3Eb", token);
    let owners: std::collections::BTreeSet<String> = detail["topics"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["partitions"].as_array().unwrap().iter().map(|p| p["process"].as_str().unwrap().to_string()))
        .collect();
    println!("two processes share a->b: {} processes reporting, partition owners {owners:?}, {} replicated into a.orders, after {took:?}",
        f["processes"], topic_records(&addr, token, "a->b", "orders"));
    assert_eq!(owners.len(), 2, "both processes own partitions: {detail}");
    // Counted once: what a process replicated of a partition it handed over stays in its run's
    // totals (`released` in its reports), and the new owner counts from there on.
    assert_eq!(topic_records(&addr, token, "a->b", "orders"), 600, "{detail}");
    // Gracefully: its partitions go back at once.
    let mut third = third;
    assert!(third.terminate(Duration::from_secs(20)).unwrap().success(), "{}", third.output());

    // The console in a real browser: sign in, topology edge a->b, the topic row, a screenshot.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let (ok, seen) = browser(&addr, token, &screenshot, &[]);
    println!("browser: {seen}\nscreenshot: {}", screenshot.display());
    assert!(ok, "browser test failed: {seen}");
    assert_eq!(seen["signin"], true, "the console asked for the token");
    assert_eq!(seen["edge"]["class"], "edge", "a->b is healthy (not flagged): {seen}");
    assert!(seen["edge"]["text"].as_str().unwrap().contains("rec/s"), "{seen}");
    assert_eq!(seen["topicRow"][1], "orders");
    assert_eq!(seen["topicRow"][2], "a.orders");
    assert_eq!(seen["nodes"], serde_json::json!(["a", "b"]));
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "screenshot saved");

    // A stopped flow is flagged: stop b->a's only process; the flow turns paused, and the
    // console draws its edge and row red.
    drop(other);
    let (g, took) = until(&addr, token, "b->a", Duration::from_secs(30), |f| f["state"] == "paused");
    println!("b->a paused {took:?} after its process was killed: {}", g["reason"]);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-flagged.png");
    let (ok, seen) = browser(&addr, token, &screenshot, &["b->a"]);
    println!("browser, flagged: {seen}\nscreenshot: {}", screenshot.display());
    assert!(ok, "browser test failed: {seen}");
    assert_eq!(seen["failed"]["rowClass"], "bad", "{seen}");
    assert!(seen["failed"]["text"].as_str().unwrap().contains("paused"), "{seen}");
    // A failing flow is reported with its reason: the source cluster goes away.
    let mut a = a;
    a.kill();
    let (f, took) = until(&addr, token, "a->b", Duration::from_secs(60), |f| f["state"] == "failing");
    println!("a->b failing {took:?} after broker a was killed: {}", f["reason"]);
    assert!(f["reason"].as_str().unwrap().contains("cluster 'a'"), "{f}");
    let clusters = json(&addr, "/api/v1/clusters", token);
    let ca = clusters.as_array().unwrap().iter().find(|c| c["alias"] == "a").unwrap().clone();
    wait_for(Duration::from_secs(20), || {
        let clusters = json(&addr, "/api/v1/clusters", token);
        clusters.as_array().unwrap().iter().any(|c| c["alias"] == "a" && c["reachable"] == false).then_some(())
    })
    .unwrap_or_else(|| panic!("cluster a still shown reachable: {ca}"));
    // No secret in the logs of serve.
    assert!(!serve.output().contains(token), "the token appeared in serve's log");
    drop(second);
}

/// The console's Schemas page in headless Chromium over a real `ferry registry`: subjects with
/// their type, versions and latest id, the subject's compatibility level, and the diff between
/// two versions; the registry's credentials stay with `ferry serve`.
#[test]
fn the_schemas_page_lists_subjects_levels_and_diffs_versions() {
    let broker = Broker::start("serve-schemas").unwrap();
    let registry_addr = format!("127.0.0.1:{}", free_port());
    let dir = std::env::temp_dir().join(unique("serve-schemas"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("users.properties"), "admin: adm1n,admin\nconsole: c0nsole,readonly\n").unwrap();
    std::fs::write(
        dir.join("schema-registry.properties"),
        format!("listeners=http://{registry_addr}\nkafkastore.bootstrap.servers={}\nkafkastore.topic.replication.factor=1\nauthentication.method=BASIC\nauthentication.basic.users.file=users.properties\n", broker.bootstrap()),
    )
    .unwrap();
    let registry = Process::spawn(ferry(), &["registry", "--config", dir.join("schema-registry.properties").to_str().unwrap()], &unique("serve-registry")).unwrap();
    wait_for(Duration::from_secs(60), || TcpStream::connect(&registry_addr).ok().map(|_| ())).unwrap_or_else(|| panic!("the registry did not listen:\n{}", registry.output()));
    // Two versions of a subject and its level, written by the admin (the console's user is read-only).
    let v1 = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
    let v2 = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":""}]}"#;
    for (method, path, body) in [
        ("POST", "/subjects/orders-value/versions", serde_json::json!({"schema": v1})),
        ("POST", "/subjects/orders-value/versions", serde_json::json!({"schema": v2})),
        ("POST", "/subjects/payments-value/versions", serde_json::json!({"schema": "\"string\""})),
        ("PUT", "/config/orders-value", serde_json::json!({"compatibility": "FULL"})),
    ] {
        let (status, answer) = send(&registry_addr, method, path, &body);
        assert_eq!(status, 200, "{path}: {answer}\n{}", registry.output());
    }

    let a = Broker::start("serve-schemas-a").unwrap();
    let config = write_config("serve-schemas", &two_clusters(&a, &broker, "a->b.enabled = true\n"));
    let token = "t0ken-for-schemas";
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let credentials = dir.join("registry-credentials");
    std::fs::write(&credentials, "console:c0nsole\n").unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let serve = Process::spawn(
        ferry(),
        &["serve", "--config", config.to_str().unwrap(), "--listen", &listen, "--api-token-file", token_file.to_str().unwrap(), "--registry", &format!("http://{registry_addr}"), "--registry-credentials-file", credentials.to_str().unwrap(),
            "--data-dir", std::env::temp_dir().join(unique("serve-data")).to_str().unwrap()],
        &unique("serve-schemas"),
    )
    .unwrap();
    wait_for(Duration::from_secs(30), || TcpStream::connect(&listen).ok().map(|_| ())).unwrap_or_else(|| panic!("ferry serve did not listen:\n{}", serve.output()));
    // The proxy is read-only and limited to the registry's schema routes.
    assert_eq!(get(&listen, "/api/v1/registry/subjects", Some(token)).0, 200);
    assert_eq!(get(&listen, "/api/v1/registry/metrics", Some(token)).0, 404);
    assert_eq!(get(&listen, "/api/v1/registry/subjects", None).0, 401, "behind ferry serve's token");

    let screenshot = std::env::temp_dir().join(format!("{}.png", unique("schemas-page")));
    let (ran, seen) = common::console_script(&["schemas.mjs", &format!("http://{listen}/"), token, screenshot.to_str().unwrap(), "orders-value"]);
    println!("the Schemas page: {seen}");
    assert!(ran, "{seen}\nserve:\n{}\nregistry:\n{}", serve.output(), registry.output());
    assert_eq!(seen["subjects"], serde_json::json!(["orders-value", "payments-value"]));
    assert_eq!(seen["row"], serde_json::json!(["orders-value", "AVRO", "2", "2"]));
    assert_eq!((seen["level"].as_str(), seen["levelFrom"].as_str()), (Some("FULL"), Some("(set on the subject)")));
    assert_eq!(seen["versions"], serde_json::json!(["1", "2"]));
    assert_eq!(seen["ids"], serde_json::json!("(ids 1 → 2)"));
    let added: Vec<String> = seen["added"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
    assert!(added.iter().any(|l| l.contains("\"name\": \"note\"")), "the added field is marked added: {added:?}");
    assert!(seen["removed"].as_array().unwrap().iter().all(|l| !l.as_str().unwrap().contains("\"id\"")), "the kept field is not removed: {seen}");
    assert!(std::fs::metadata(&screenshot).map(|m| m.len() > 10_000).unwrap_or(false), "screenshot {}", screenshot.display());
    let log = serve.output();
    assert!(!log.contains("c0nsole"), "the registry password is never logged:\n{log}");
}

/// A write to the registry as its admin (basic auth `admin:adm1n`).
fn send(addr: &str, method: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    ferry_testkit::http_request(addr, method, path, &[("Authorization", "Basic YWRtaW46YWRtMW4="), ("Content-Type", "application/json")], &body.to_string()).unwrap()
}

/// A server on loopback that hands each connection to `serve`, which keeps what it received.
fn loopback_sink<T: Send + 'static>(serve: impl Fn(std::net::TcpStream, &std::sync::Mutex<Vec<T>>) + Send + 'static) -> (String, std::sync::Arc<std::sync::Mutex<Vec<T>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            serve(stream, &keep);
        }
    });
    (addr, got)
}

/// An HTTP sink: answers 200 to every request and keeps each JSON body.
fn webhook_sink() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    loopback_sink(|stream, keep| {
        let mut reader = std::io::BufReader::new(stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_ok() {
            keep.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
        }
        let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    })
}

/// An SMTP sink: accepts every message (no TLS, no auth) and keeps each one whole.
fn smtp_sink() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    loopback_sink(|stream, keep| {
        let mut out = stream.try_clone().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let _ = out.write_all(b"220 sink ESMTP\r\n");
        let mut in_data = false;
        let mut message = String::new();
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
                break;
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    keep.lock().unwrap().push(std::mem::take(&mut message));
                    let _ = out.write_all(b"250 queued\r\n");
                } else {
                    message.push_str(&line);
                }
                continue;
            }
            let reply: &[u8] = match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go on\r\n"
                }
                "QUIT" => {
                    let _ = out.write_all(b"221 bye\r\n");
                    break;
                }
                _ => b"250 ok\r\n",
            };
            let _ = out.write_all(reply);
        }
    })
}

fn put(addr: &str, path: &str, token: &str, body: &serde_json::Value) -> (u16, String) {
    ferry_testkit::http_request(addr, "PUT", path, &[("Authorization", &format!("Bearer {token}")), ("Content-Type", "application/json")], &body.to_string()).unwrap()
}

/// A lag policy on a real group: one firing and one resolved notification reach a webhook on
/// loopback and an SMTP server on loopback; bad policies are refused naming the field; policies,
/// notifiers and the history survive a restart of serve.
#[test]
fn a_lag_alert_fires_and_resolves_once_to_a_webhook_and_by_email() {
    let a = Broker::start("alerts-a").unwrap();
    let b = Broker::start("alerts-b").unwrap();
    ferry_testkit::create_topic_with(&a.bootstrap(), "events", 2, &[("retention.ms", "86400000")]).unwrap();
    produce(&a.bootstrap(), "events", &sample_records(2, 100, now_ms())).unwrap();
    ferry_testkit::commit_offsets(&a.bootstrap(), "reporting", &[("events", 0, 0), ("events", 1, 100)]).unwrap();
    let config = write_config("alerts", &two_clusters(&a, &b, ""));
    let token = "alert-t0ken";
    let token_file = std::env::temp_dir().join(unique("token"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let data_dir = std::env::temp_dir().join(unique("alerts-data"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // A canary on a cluster the file does not have is refused, naming it.
    let mut refused = start_serve_in(&config, &token_file, free_port(), &data_dir, &["--canary", "z"]);
    let status = refused.wait_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{}", refused.output());
    assert!(refused.output().contains("--canary z: no such cluster"), "{}", refused.output());
    let mut serve = start_serve_in(&config, &token_file, port, &data_dir, &["--canary", "a"]);
    wait_for(Duration::from_secs(20), || TcpStream::connect(&addr).ok().map(|_| ())).unwrap_or_else(|| panic!("serve did not listen:\n{}", serve.output()));

    let (hook_addr, hooks) = webhook_sink();
    let (smtp_addr, mails) = smtp_sink();
    assert_eq!(put(&addr, "/api/v1/alerts/notifiers/hook", token, &serde_json::json!({"type": "webhook", "url": format!("http://{hook_addr}/alerts")})).0, 200);
    let mail = serde_json::json!({"type": "email", "smtp": smtp_addr, "from": "ferry@example.com", "to": ["oncall@example.com"]});
    assert_eq!(put(&addr, "/api/v1/alerts/notifiers/mail", token, &mail).0, 200);
    // Refused, naming the field, and nothing stored.
    let (status, body) = put(&addr, "/api/v1/alerts/policies/bad", token, &serde_json::json!({"entity": "group", "metric": "lag_records", "above": 50, "notifiers": ["pager"]}));
    assert!(status == 422 && body.contains("notifiers: no notifier named 'pager'"), "{status} {body}");
    let (status, body) = put(&addr, "/api/v1/alerts/policies/bad", token, &serde_json::json!({"entity": "group", "metric": "lag_records"}));
    assert!(status == 422 && body.contains("above/below"), "{status} {body}");
    assert_eq!(put(&addr, "/api/v1/alerts/policies/bad", token, &serde_json::json!({"entity": "group", "metrik": "x"})).0, 400);
    let policy = serde_json::json!({"entity": "group", "cluster": "a", "match": "^report", "metric": "lag_records", "above": 50.0, "for_seconds": 5, "notifiers": ["hook", "mail"]});
    let (status, body) = put(&addr, "/api/v1/alerts/policies/reporting-behind", token, &policy);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&addr, "/api/v1/alerts/policies", token).as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()), Some(vec!["reporting-behind".to_string()]));

    // 100 records behind on partition 0: it fires once, after 5 s.
    let started = Instant::now();
    let fired = wait_for(Duration::from_secs(60), || hooks.lock().unwrap().first().cloned()).unwrap_or_else(|| panic!("no firing notification: alerts {}, groups {}, hooks {:?}\n{}", get(&addr, "/api/v1/alerts", Some(token)).1, get(&addr, "/api/v1/clusters/a/groups", Some(token)).1, hooks.lock().unwrap(), serve.output()));
    println!("firing after {:?}: {fired}", started.elapsed());
    assert_eq!((fired["policy"].as_str(), fired["state"].as_str(), fired["entity"].as_str(), fired["name"].as_str(), fired["value"].as_f64()),
        (Some("reporting-behind"), Some("firing"), Some("group"), Some("reporting"), Some(100.0)), "{fired}");
    let firing = json(&addr, "/api/v1/alerts", token);
    assert_eq!(firing["firing"][0]["name"], "reporting", "{firing}");
    // Caught up: it resolves once.
    ferry_testkit::commit_offsets(&a.bootstrap(), "reporting", &[("events", 0, 100)]).unwrap();
    wait_for(Duration::from_secs(60), || (hooks.lock().unwrap().len() >= 2).then_some(())).unwrap_or_else(|| panic!("no resolved notification:\n{}", serve.output()));
    std::thread::sleep(Duration::from_secs(12)); // two more polls: no repeat of either
    let got = hooks.lock().unwrap().clone();
    let states: Vec<&str> = got.iter().map(|h| h["state"].as_str().unwrap_or("?")).collect();
    assert_eq!(states, ["firing", "resolved"], "exactly one of each: {got:?}");
    assert_eq!(got[1]["value"].as_f64(), Some(0.0));
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 2, "two e-mails: {mails:?}");
    assert!(mails[0].contains("Subject: [FIRING] reporting-behind") && mails[0].contains("To: oncall@example.com"), "{}", mails[0]);
    assert!(mails[1].contains("Subject: [RESOLVED] reporting-behind"), "{}", mails[1]);
    let view = json(&addr, "/api/v1/alerts", token);
    assert!(view["firing"].as_array().unwrap().is_empty(), "{view}");
    assert_eq!(view["history"].as_array().map(Vec::len), Some(2), "{view}");
    assert!(view["history"].as_array().unwrap().iter().all(|h| h["deliveries"].as_array().unwrap().iter().all(|d| d["ok"] == true)), "{view}");

    // The Monitoring page shows this cluster in every view, from real data, in Chromium.
    let shots = std::env::temp_dir().join(unique("monitor-page"));
    let (ran, seen) = common::console_script(&["monitor.mjs", &format!("http://{addr}/"), token, shots.to_str().unwrap(), "a", "reporting", "events"]);
    println!("the Monitoring page (screenshots {}-*.png): {seen}", shots.display());
    assert!(ran, "{seen}\nserve:\n{}", serve.output());
    assert!(seen["cards"].as_array().unwrap().iter().any(|c| c == "1brokers"), "{seen}");
    // The overview counts the whole cluster (not a page of it).
    let overview = json(&addr, "/api/v1/clusters/a/overview", token);
    let groups = json(&addr, "/api/v1/clusters/a/groups?limit=1000", token);
    let by_status: u64 = overview["groups_by_status"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!((overview["brokers"].as_u64(), overview["groups"].as_u64(), Some(by_status)), (Some(1), groups["total"].as_u64(), groups["total"].as_u64()), "{overview}");
    assert!(seen["cards"].as_array().unwrap().iter().any(|c| c.as_str() == Some(&format!("{}consumer groups", groups["total"]))), "{seen}");
    assert_eq!((seen["brokers"].as_u64(), seen["topicPartitions"].as_u64()), (Some(1), Some(2)), "{seen}");
    assert!(seen["consumers"].as_str().unwrap().contains("reporting"), "{seen}");
    assert_eq!(seen["configs"], serde_json::json!(["retention.ms86400000"]), "the topic's own setting: {seen}");
    assert_eq!(seen["groupRow"][0], "reporting", "{seen}");
    assert_eq!(seen["chartLines"].as_u64(), Some(2), "a lag line per partition: {seen}");
    assert!(seen["partitionRows"].as_array().unwrap().len() == 2, "{seen}");
    assert!(seen["policies"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().contains("lag_records")), "{seen}");
    // The canary: a record a second through broker 1, read back; its latency per broker.
    let canary = wait_for(Duration::from_secs(30), || Some(json(&addr, "/api/v1/clusters/a/canary", token)).filter(|c| c["brokers"][0]["samples"].as_u64() >= Some(3))).unwrap_or_else(|| panic!("no canary samples: {}", get(&addr, "/api/v1/clusters/a/canary", Some(token)).1));
    println!("canary on a: {canary}");
    let b = &canary["brokers"][0];
    assert_eq!((b["broker"].as_i64(), b["missing"].as_u64()), (Some(1), Some(0)), "{canary}");
    assert!(b["p50_ms"].as_f64().unwrap() <= b["p99_ms"].as_f64().unwrap(), "{canary}");
    assert!(get(&addr, "/metrics", Some(token)).1.contains("ferry_canary_latency_seconds{cluster=\"a\",broker=\"1\",quantile=\"0.99\"}"));
    assert_eq!(get(&addr, "/api/v1/clusters/b/canary", Some(token)).0, 404, "no canary asked on b");
    assert!(seen["canary"].as_array().unwrap().iter().all(|c| c.as_str().unwrap().ends_with(" ms")), "the Brokers page shows it: {seen}");
    // The group's history over the API: total lag went from 100 to 0, per partition too.
    let history = json(&addr, "/api/v1/clusters/a/groups/reporting/history", token);
    let lag: Vec<f64> = history["lag"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert!(lag.first() == Some(&100.0) && lag.last() == Some(&0.0), "{history}");
    assert_eq!(history["partitions"].as_array().map(Vec::len), Some(2), "{history}");
    assert_eq!(get(&addr, "/api/v1/clusters/a/groups/reporting/history?resolution=1h", Some(token)).0, 400);
    assert_eq!(get(&addr, "/api/v1/clusters/a/groups/nobody/history", Some(token)).0, 404);

    // A restart keeps policies, notifiers (secrets included), the alert history and the
    // monitoring history.
    assert!(serve.terminate(Duration::from_secs(20)).unwrap().success(), "{}", serve.output());
    let serve = start_serve_in(&config, &token_file, port, &data_dir, &[]);
    wait_for(Duration::from_secs(20), || TcpStream::connect(&addr).ok().map(|_| ())).unwrap_or_else(|| panic!("serve did not listen again:\n{}", serve.output()));
    let policies = json(&addr, "/api/v1/alerts/policies", token);
    assert_eq!(policies["reporting-behind"], policy, "{policies}");
    assert_eq!(json(&addr, "/api/v1/alerts/notifiers", token)["mail"]["smtp"], smtp_addr);
    assert_eq!(json(&addr, "/api/v1/alerts", token)["history"].as_array().map(Vec::len), Some(2));
    let kept = json(&addr, "/api/v1/clusters/a/groups/reporting/history", token);
    assert!(kept["lag"].as_array().unwrap().len() >= lag.len(), "the history survives a restart: {kept}");
    // A notifier in use cannot go; once its policy is gone it can.
    let delete = |path: &str| ferry_testkit::http_request(&addr, "DELETE", path, &[("Authorization", &format!("Bearer {token}"))], "").unwrap().0;
    assert_eq!(delete("/api/v1/alerts/notifiers/hook"), 409);
    assert_eq!(delete("/api/v1/alerts/policies/reporting-behind"), 204);
    assert_eq!(delete("/api/v1/alerts/notifiers/hook"), 204);
}
