//! A new user's MM2 file, unedited: both clusters behind SASL (PLAIN) set once at the top level
//! as MM2 allows, the password read by Kafka's FileConfigProvider. Apache Kafka brokers on
//! loopback; Ferry is given only their SASL listeners, which refuse a plaintext client.

mod common;

use std::time::Duration;

use common::{all_arrived, start_mirror, write_config};
use ferry_testkit::{create_topic, sample_records, unique, Broker, BrokerOptions, RecordProducer};

#[test]
fn an_mm2_file_with_top_level_sasl_and_a_file_provider_password_replicates_over_sasl() {
    let options = || BrokerOptions::default().with_sasl_user("alice", "alice-s3cret");
    let a = Broker::start_with("sasl-a", options()).unwrap();
    let b = Broker::start_with("sasl-b", options()).unwrap();
    let topic = unique("orders");
    create_topic(&a.bootstrap(), &topic, 2).unwrap();
    let records = sample_records(2, 50, 1_700_000_000_000);
    RecordProducer::new(&a.bootstrap()).unwrap().send_all(&topic, &records).unwrap();

    let secrets = std::env::temp_dir().join(format!("{}.properties", unique("kafka-secrets")));
    std::fs::write(&secrets, "kafka.password = alice-s3cret\n").unwrap();
    let file = |password_ref: &str| {
        format!(
            "clusters = a, b\n\
             a.bootstrap.servers = {}\n\
             b.bootstrap.servers = {}\n\
             a->b.enabled = true\n\
             a->b.topics = {topic}\n\
             config.providers = file\n\
             config.providers.file.class = org.apache.kafka.common.config.provider.FileConfigProvider\n\
             security.protocol = SASL_PLAINTEXT\n\
             sasl.mechanism = PLAIN\n\
             sasl.jaas.config = org.apache.kafka.common.security.plain.PlainLoginModule required \\\n    username=\"alice\" password=\"{password_ref}\";\n",
            a.sasl_bootstrap(),
            b.sasl_bootstrap()
        )
    };
    let config = write_config("sasl", &file(&format!("${{file:{}:kafka.password}}", secrets.display())));
    let mirror = start_mirror(&config, "sasl-mirror");
    all_arrived(&b.bootstrap(), &format!("a.{topic}"), 2, &records, records.len(), Duration::from_secs(60), &[&mirror]);
    let out = mirror.output();
    assert!(!out.contains("alice-s3cret"), "the password was logged:\n{out}");
    assert!(!out.contains("unknown key"), "a key of the file was not understood:\n{out}");

    // The same file with a password the brokers refuse: Ferry reports the failed login naming
    // the cluster, and replicates nothing (so the run above did authenticate).
    std::fs::write(&secrets, "kafka.password = wrong\n").unwrap();
    let topic2 = unique("refused");
    create_topic(&a.bootstrap(), &topic2, 1).unwrap();
    let refused = write_config("sasl-bad", &file(&format!("${{file:{}:kafka.password}}", secrets.display())).replace(&topic, &topic2));
    let bad = start_mirror(&refused, "sasl-bad-mirror");
    // A refused login is not retried forever: the flow stops, naming the cluster, and the
    // process exits non-zero (a supervisor shows it; a fixed file restarts it).
    let mut bad = bad;
    let exited = ferry_testkit::wait_for(Duration::from_secs(45), || (!bad.is_running()).then_some(()));
    let out = bad.output();
    assert!(exited.is_some(), "still running after a refused login:\n{out}");
    let last = out.lines().rev().find(|l| l.contains("ferry mirror failed")).unwrap_or_else(|| panic!("no final error:\n{out}"));
    assert!(last.contains("cluster '") && last.contains("Authentication failed"), "{last}");
    // Reported, not flooded: librdkafka repeats its lines every reconnect (about twice a
    // second per client); Ferry lets one of each kind through per 30 s.
    let librdkafka_lines = out.lines().filter(|l| l.contains("librdkafka")).count();
    println!("{librdkafka_lines} librdkafka lines before the refused login stopped the mirror:\n{out}");
    assert!(librdkafka_lines <= 12, "{librdkafka_lines} librdkafka lines:\n{out}");
    assert!(!ferry_testkit::list_topics(&b.bootstrap()).unwrap().iter().any(|(t, _)| *t == format!("a.{topic2}")));
    std::fs::remove_file(&secrets).unwrap();
}

/// Kafka's AclCommand against `bootstrap` (the test's PLAINTEXT listener; its ANONYMOUS
/// principal is a super user on these brokers).
fn acls(bootstrap: &str, args: &[&str]) -> String {
    let mut all = vec!["--bootstrap-server", bootstrap];
    all.extend_from_slice(args);
    ferry_testkit::kafka_tool("org.apache.kafka.tools.AclCommand", &all).unwrap()
}

#[test]
fn topic_acls_follow_to_remote_topics_by_mm2s_rules() {
    let options = || {
        BrokerOptions::default()
            .with("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer")
            .with("super.users", "User:ANONYMOUS")
    };
    let a = Broker::start_with("acl-a", options()).unwrap();
    let b = Broker::start_with("acl-b", options()).unwrap();
    let topic = unique("orders");
    create_topic(&a.bootstrap(), &topic, 1).unwrap();
    let add = |args: &[&str]| {
        let mut all = vec!["--add", "--force"];
        all.extend_from_slice(args);
        acls(&a.bootstrap(), &all);
    };
    add(&["--allow-principal", "User:reader", "--operation", "Read", "--topic", &topic]);
    add(&["--allow-principal", "User:writer", "--operation", "Write", "--topic", &topic]);
    add(&["--allow-principal", "User:owner", "--operation", "All", "--topic", &topic]);
    add(&["--deny-principal", "User:mallory", "--operation", "Describe", "--topic", &topic]);
    add(&["--allow-principal", "User:other", "--operation", "Read", "--topic", "not-replicated"]);

    // No sync.topic.acls.* line: on by default, as in MM2 (interval shortened for the test).
    let config = write_config("acl", &common::two_clusters(&a, &b, &format!("a->b.enabled = true\na->b.topics = {topic}\nsync.topic.acls.interval.seconds = 1\n")));
    let mirror = start_mirror(&config, "acl-mirror");
    let remote = format!("a.{topic}");
    let listed = ferry_testkit::wait_for(Duration::from_secs(30), || {
        let out = acls(&b.bootstrap(), &["--list", "--topic", &remote]);
        (out.matches("(principal=").count() >= 3).then_some(out)
    })
    .unwrap_or_else(|| panic!("ACLs not synced:\n{}\n{}", acls(&b.bootstrap(), &["--list"]), mirror.output()));
    println!("{listed}");
    let entries: Vec<&str> = listed.lines().filter(|l| l.contains("(principal=")).map(str::trim).collect();
    let has = |principal: &str, operation: &str, permission: &str| {
        entries.iter().any(|l| l.contains(&format!("principal={principal},")) && l.contains(&format!("operation={operation},")) && l.contains(&format!("permissionType={permission})")))
    };
    assert!(has("User:reader", "READ", "ALLOW"), "{listed}");
    assert!(has("User:owner", "READ", "ALLOW"), "ALL is downgraded to READ: {listed}");
    assert!(has("User:mallory", "DESCRIBE", "DENY"), "{listed}");
    assert_eq!(entries.len(), 3, "WRITE is never copied: {listed}");
    let everything = acls(&b.bootstrap(), &["--list"]);
    assert!(!everything.contains("User:other"), "an ACL of a topic that is not replicated was copied:\n{everything}");
    assert!(mirror.output().contains("topic ACL synced"), "{}", mirror.output());

    // A target without an authorizer refuses every ACL: each is reported once (not every
    // interval), and replication goes on. (A source without one reads as "no ACLs": librdkafka
    // drops DescribeAcls' SECURITY_DISABLED error, so Ferry cannot tell the two apart.)
    drop(mirror);
    let plain = Broker::start("acl-plain").unwrap();
    let config = write_config("acl-none", &common::two_clusters(&a, &plain, &format!("a->b.enabled = true\na->b.topics = {topic}\nsync.topic.acls.interval.seconds = 1\n")));
    let mirror = start_mirror(&config, "acl-none-mirror");
    let records = sample_records(1, 20, 1_700_000_000_000);
    RecordProducer::new(&a.bootstrap()).unwrap().send_all(&topic, &records).unwrap();
    all_arrived(&plain.bootstrap(), &remote, 1, &records, records.len(), Duration::from_secs(60), &[&mirror]);
    std::thread::sleep(Duration::from_secs(4));
    let out = mirror.output();
    assert_eq!(out.matches("topic ACL not synced").count(), 3, "{out}");
    assert!(out.contains("reason=No Authorizer is configured"), "{out}");
}
