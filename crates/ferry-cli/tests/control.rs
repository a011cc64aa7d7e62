//! `ferry ctl topics|groups|status` against running `ferry mirror` processes and Apache Kafka
//! brokers on loopback.
//!
//! The flows here refresh topics only every 60 s, so a change that shows within 5 s was applied
//! through the control topic, not picked up by a periodic refresh.

mod common;

use std::time::{Duration, Instant};

use common::{ctl, start_mirror, two_clusters, write_config};
use ferry_testkit::{commit_offsets, consume_all, create_topic, free_port, list_topics, produce, sample_records, wait_for, Broker, Process};

fn count(bootstrap: &str, topic: &str, partitions: i32) -> usize {
    consume_all(bootstrap, topic, partitions, usize::MAX, Duration::from_secs(2)).unwrap().len()
}

/// Waits until `topic` on `bootstrap` exists and holds `n` records; returns how long it took.
fn filled(bootstrap: &str, topic: &str, partitions: i32, n: usize, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    wait_for(timeout, || list_topics(bootstrap).unwrap().iter().any(|(t, _)| t == topic).then_some(()))?;
    // One reader for the rest of the time (a fresh reader per poll would spend it connecting).
    let got = consume_all(bootstrap, topic, partitions, n, timeout.saturating_sub(start.elapsed())).unwrap().len();
    (got >= n).then(|| start.elapsed())
}

/// Waits until a mirror's log holds `text` `times` times.
fn logged(mirror: &Process, text: &str, times: usize, timeout: Duration) -> bool {
    wait_for(timeout, || (mirror.output().matches(text).count() >= times).then_some(())).is_some()
}

fn topics_ctl(config: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["topics", "--config", config, "--source", "a", "--target", "b"];
    all.extend_from_slice(args);
    ctl(&all)
}

#[test]
fn topic_lists_change_live_persist_across_restarts_and_reach_every_mirror() {
    let a = Broker::start("ctl-a").unwrap();
    let b = Broker::start("ctl-b").unwrap();
    for topic in ["orders", "audit", "payments"] {
        create_topic(&a.bootstrap(), topic, 2).unwrap();
        produce(&a.bootstrap(), topic, &sample_records(2, 50, 1_700_000_000_000)).unwrap();
    }
    let text = two_clusters(&a, &b, "a->b.enabled = true\na->b.topics = orders\na->b.refresh.topics.interval.seconds = 60\n");
    let config = write_config("ctl", &text);
    let config_str = config.to_str().unwrap();
    let topics_line = text.lines().position(|l| l.starts_with("a->b.topics")).unwrap() + 1;

    let mut mirror = start_mirror(&config, "ctl-mirror-1");
    let t0 = Instant::now();
    filled(&b.bootstrap(), "a.orders", 2, 100, Duration::from_secs(30)).expect("orders replicated");
    println!("orders filled after {:?}", t0.elapsed());
    assert!(!list_topics(&b.bootstrap()).unwrap().iter().any(|(t, _)| t == "a.audit"), "audit is not in the file's list");

    // --add: the topic appears on b and fills.
    let t0 = Instant::now();
    let (code, _, err) = topics_ctl(config_str, &["--add", "audit"]);
    println!("ctl --add took {:?}", t0.elapsed());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("stored 1 change(s) in ferry-control.internal on cluster 'b'"), "{err}");
    let took = filled(&b.bootstrap(), "a.audit", 2, 100, Duration::from_secs(5));
    println!("--add audit: a.audit on b filled with 100 records {took:?} after ctl returned");
    assert!(took.is_some(), "a.audit did not fill within 5 s:\n{}", mirror.output());
    assert!(mirror.output().contains("replication lists changed by ferry ctl"), "{}", mirror.output());

    // A bad regex changes nothing.
    let (_, before, _) = topics_ctl(config_str, &["--list", "--json"]);
    let (code, _, err) = topics_ctl(config_str, &["--add", "payments", "--add", "bad("]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid regex 'bad(' for topics") && err.contains("nothing was changed"), "{err}");
    // Validated as it is matched (anchored): in (?x) mode '#' comments out the anchor's ')$'.
    let (code, _, err) = topics_ctl(config_str, &["--add", "(?x)orders#x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid regex '(?x)orders#x' for topics"), "{err}");
    let (_, after, _) = topics_ctl(config_str, &["--list", "--json"]);
    assert_eq!(before, after, "a rejected command wrote something");
    // A record no ctl would write (older version, written by hand) is reported and skipped;
    // the mirror keeps running and applies the next change.
    let bad_key = br#"{"flow":"a->b","list":"topics","kind":"allow","regex":"(?x)orders#x"}"#.to_vec();
    let bad_value = br#"{"action":"add","at_ms":5,"by":"hand"}"#.to_vec();
    let bad = ferry_testkit::TestRecord { partition: 0, offset: 0, key: Some(bad_key), value: Some(bad_value), headers: vec![], timestamp: None };
    produce(&b.bootstrap(), "ferry-control.internal", &[bad]).unwrap();
    assert!(logged(&mirror, "ignored records in the control topic", 1, Duration::from_secs(5)), "{}", mirror.output());
    assert!(mirror.output().contains("invalid regex '(?x)orders#x' for flow a->b"), "{}", mirror.output());
    assert!(mirror.is_running(), "{}", mirror.output());
    // So does removing what is not an entry, with a pointer to what works.
    let (code, _, err) = topics_ctl(config_str, &["--remove", "payments"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'payments' is not an entry of topics of flow a->b (entries: orders, audit)"), "{err}");

    // --remove: no further records replicated; the remote topic stays.
    let (code, _, err) = topics_ctl(config_str, &["--remove", "audit"]);
    assert_eq!(code, 0, "{err}");
    assert!(logged(&mirror, "topics -audit", 1, Duration::from_secs(5)), "{}", mirror.output());
    produce(&a.bootstrap(), "audit", &sample_records(2, 25, 1_700_000_100_000)).unwrap();
    produce(&a.bootstrap(), "orders", &sample_records(2, 25, 1_700_000_100_000)).unwrap();
    filled(&b.bootstrap(), "a.orders", 2, 150, Duration::from_secs(30)).expect("orders still replicated");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&b.bootstrap(), "a.audit", 2), 100, "records replicated after --remove");

    // --list: every entry with its origin.
    let (code, _, err) = topics_ctl(config_str, &["--add-exclude", r"tmp\..*"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = topics_ctl(config_str, &["--list"]);
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], format!("topics of flow a->b (base: {config_str})"));
    assert!(lines.iter().any(|l| l.starts_with("allow") && l.contains("orders") && l.ends_with(&format!("{config_str}:{topics_line} (a->b.topics)"))), "{out}");
    assert!(!out.contains("audit"), "a removed ctl addition is gone: {out}");
    assert!(lines.iter().any(|l| l.starts_with("exclude") && l.contains(r"tmp\..*") && l.contains("ferry ctl, ") && l.contains(" by ")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("exclude") && l.contains("__.*") && l.ends_with("default of topics.exclude")), "{out}");
    let (_, json, _) = topics_ctl(config_str, &["--list", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let allow: Vec<&str> = doc["allow"].as_array().unwrap().iter().map(|e| e["regex"].as_str().unwrap()).collect();
    assert_eq!(allow, ["orders"]);
    assert_eq!(doc["allow"][0]["origin"]["source"], "file");
    assert_eq!(doc["allow"][0]["origin"]["line"], topics_line);
    let exclude: Vec<&str> = doc["exclude"].as_array().unwrap().iter().map(|e| e["regex"].as_str().unwrap()).collect();
    assert_eq!(exclude, [r".*[\-\.]internal", r".*\.replica", "__.*", r"tmp\..*"]);

    // Changed while no mirror runs: the restarted mirror starts with the stored lists and
    // resumes audit from its stored position (no re-copy).
    assert!(mirror.terminate(Duration::from_secs(20)).unwrap().success());
    let (code, _, err) = topics_ctl(config_str, &["--add", "audit"]);
    assert_eq!(code, 0, "{err}");
    let mirror = start_mirror(&config, "ctl-mirror-1b");
    // The bad record is still in the topic: reported at start, not a crash loop.
    assert!(logged(&mirror, "ignored records in the control topic", 1, Duration::from_secs(10)), "{}", mirror.output());
    filled(&b.bootstrap(), "a.audit", 2, 150, Duration::from_secs(30)).expect("audit resumed after restart");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&b.bootstrap(), "a.audit", 2), 150, "re-copied or lost records after restart");
    assert!(mirror.output().contains("replication lists include ferry ctl changes"), "{}", mirror.output());

    // Two mirrors of the same flow both apply a change. (Until scale-out, two processes on one
    // flow each replicate every partition, so only the logs and arrival are checked.)
    let second = start_mirror(&config, "ctl-mirror-2");
    assert!(logged(&second, "flow starting", 1, Duration::from_secs(10)), "{}", second.output());
    std::thread::sleep(Duration::from_secs(2));
    let (code, _, err) = topics_ctl(config_str, &["--add", "payments"]);
    assert_eq!(code, 0, "{err}");
    for m in [&mirror, &second] {
        assert!(logged(m, "topics +payments", 1, Duration::from_secs(5)), "a mirror did not apply the change:\n{}", m.output());
    }
    assert!(filled(&b.bootstrap(), "a.payments", 2, 100, Duration::from_secs(5)).is_some());
}

#[test]
fn group_lists_change_live_and_status_reports_lag_heartbeats_and_checkpoints() {
    let a = Broker::start("ctlg-a").unwrap();
    let b = Broker::start("ctlg-b").unwrap();
    create_topic(&a.bootstrap(), "orders", 2).unwrap();
    produce(&a.bootstrap(), "orders", &sample_records(2, 40, 1_700_000_000_000)).unwrap();
    let text = two_clusters(&a, &b, "a->b.enabled = true\ngroups = app-1\nrefresh.groups.interval.seconds = 60\na->b.refresh.topics.interval.seconds = 60\n");
    let config = write_config("ctlg", &text);
    let config_str = config.to_str().unwrap();
    // Both groups exist before the mirror starts (groups are re-listed only every 60 s here).
    commit_offsets(&a.bootstrap(), "app-1", &[("orders", 0, 10), ("orders", 1, 11)]).unwrap();
    commit_offsets(&a.bootstrap(), "app-2", &[("orders", 0, 20), ("orders", 1, 21)]).unwrap();
    let mirror = start_mirror(&config, "ctlg-mirror");
    filled(&b.bootstrap(), "a.orders", 2, 80, Duration::from_secs(30)).expect("orders replicated");

    let export = |group: &str| ctl(&["offsets", "export", "--config", config_str, "--source", "a", "--target", "b", "--group", group]);
    wait_for(Duration::from_secs(10), || (export("app-1").0 == 0).then_some(())).expect("app-1 checkpointed");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(export("app-2").0, 1, "app-2 is not selected yet");

    let (code, _, err) = ctl(&["groups", "--config", config_str, "--source", "a", "--target", "b", "--add", "app-2"]);
    assert_eq!(code, 0, "{err}");
    let start = Instant::now();
    let checkpointed = wait_for(Duration::from_secs(5), || (export("app-2").0 == 0).then(|| start.elapsed()));
    println!("--add app-2: first checkpoint exported {checkpointed:?} after ctl returned");
    assert!(checkpointed.is_some(), "{}", mirror.output());
    assert_eq!(export("app-2").1, "a.orders,0,20\na.orders,1,21\n");

    // status: the table and the JSON agree with what the test did.
    let (code, json, err) = ctl(&["status", "--config", config_str, "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let flow = &doc["flows"][0];
    assert_eq!(flow["flow"], "a->b");
    assert_eq!(flow["groups"], serde_json::json!(["app-1", "app-2"]));
    assert_eq!(flow["replicated"][0]["remote_topic"], "a.orders");
    let positions: Vec<i64> = flow["replicated"][0]["partitions"].as_array().unwrap().iter().map(|p| p["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, [40, 40]);
    assert_eq!(flow["lag"], 0);
    assert!(flow["heartbeat_age_ms"].as_i64().unwrap() < 10_000, "{json}");
    let groups: Vec<&str> = flow["checkpoints"].as_array().unwrap().iter().map(|g| g["group"].as_str().unwrap()).collect();
    assert_eq!(groups, ["app-1", "app-2"]);
    assert!(flow["checkpoints"].as_array().unwrap().iter().all(|g| g["selected"] == true && g["partitions"] == 2), "{json}");
    assert_eq!(flow["errors"], serde_json::json!([]));
    let (code, table, err) = ctl(&["status", "--config", config_str]);
    assert_eq!(code, 0, "{err}");
    println!("{table}");
    assert!(table.contains("flow a->b: a (") && table.contains("lag 0 record(s) over 1 topic(s)"), "{table}");
    // Columns: topic, remote topic, partition, position, end, lag, owner (the mirror process,
    // host:pid:start, from its metrics reports).
    assert!(table.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() == 7 && cols[..6] == ["orders", "a.orders", "1", "40", "40", "0"] && cols[6].contains(':')
    }), "{table}");

    // A group removed from the list is no longer checkpointed; status says so.
    let (code, _, err) = ctl(&["groups", "--config", config_str, "--source", "a", "--target", "b", "--remove", "app-2"]);
    assert_eq!(code, 0, "{err}");
    assert!(logged(&mirror, "groups -app-2", 1, Duration::from_secs(5)), "{}", mirror.output());
    let (_, json, _) = ctl(&["status", "--config", config_str, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["flows"][0]["checkpoints"][1]["selected"], false, "{json}");
}

#[test]
fn unknown_flows_and_unreachable_clusters_are_named() {
    // Nothing listens on these ports.
    let (pa, pb) = (free_port(), free_port());
    let text = format!("clusters = a, b, c\na.bootstrap.servers = 127.0.0.1:{pa}\nb.bootstrap.servers = 127.0.0.1:{pb}\nc.bootstrap.servers = 127.0.0.1:{pb}\na->b.enabled = true\n");
    let config = write_config("ctl-errors", &text);
    let config_str = config.to_str().unwrap();

    let (code, _, err) = ctl(&["topics", "--config", config_str, "--source", "a", "--target", "x", "--add", "t"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown cluster alias 'x'") && err.contains("clusters = a, b, c"), "{err}");
    let (code, _, err) = ctl(&["topics", "--config", config_str, "--source", "a", "--target", "c", "--add", "t"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs flow a->c, which") && err.contains("a->c.enabled = true"), "{err}");

    let (code, _, err) = ctl(&["topics", "--config", config_str, "--source", "a", "--target", "b", "--add", "t"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cluster 'b' (127.0.0.1:{pb})")), "{err}");
    let (code, out, _) = ctl(&["status", "--config", config_str]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("ERROR cluster 'b' (127.0.0.1:{pb})")) && out.contains(&format!("ERROR cluster 'a' (127.0.0.1:{pa})")), "{out}");
    // Missing permissions: the test brokers run without an authorizer, so the hint for an
    // authorization error is covered by ferry-kafka's unit test
    // `permission_errors_carry_a_hint_naming_the_cluster_properties`.
}
