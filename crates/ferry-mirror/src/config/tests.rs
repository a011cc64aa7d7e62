use super::*;

fn parse(text: &str) -> Result<MirrorConfig, ConfigError> {
    MirrorConfig::parse("mm2.properties", text)
}

fn problems(text: &str) -> Vec<String> {
    parse(text).unwrap_err().problems.iter().map(|p| p.to_string()).collect()
}

const BASE: &str = "clusters = a, b\na.bootstrap.servers = 127.0.0.1:9092\nb.bootstrap.servers = 127.0.0.1:9093\na->b.enabled = true\n";

#[test]
fn minimal_file_gets_mm2_and_ferry_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.clusters.len(), 2);
    assert_eq!(c.cluster("a").bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(c.flows.len(), 1);
    let f = &c.flows[0];
    assert_eq!(f.name(), "a->b");
    assert!(f.topics.is_match("orders"));
    assert!(f.topics_exclude.is_match("x.internal") && f.topics_exclude.is_match("__x") && f.topics_exclude.is_match("t.replica"));
    assert!(!f.topics_exclude.is_match("orders"));
    assert!(f.config_properties_exclude.is_match("min.insync.replicas"));
    assert!(!f.config_properties_exclude.is_match("retention.ms"));
    assert_eq!(f.policy, ReplicationPolicy::default());
    assert_eq!(f.refresh_topics_interval, Duration::from_secs(5));
    assert_eq!(f.replication_factor, -1);
    assert!(f.emit_heartbeats_enabled && f.sync_topic_configs_enabled);
    assert_eq!(f.emit_heartbeats_interval, Duration::from_secs(1));
    assert_eq!(f.tasks_max, 1);
    assert_eq!(f.offset_flush_interval, Duration::from_millis(1000));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn flow_settings_override_global_ones() {
    let c = parse(&format!("{BASE}b->a.enabled=true\ntopics = orders.*, pay\na->b.topics = x\ntopics.exclude=\nreplication.policy.separator=_\nb->a.replication.policy.class=org.apache.kafka.connect.mirror.IdentityReplicationPolicy\ntasks.max=3\nrefresh.topics.interval.seconds=2\nreplication.factor=3\n")).unwrap();
    let ab = c.flows.iter().find(|f| f.name() == "a->b").unwrap();
    let ba = c.flows.iter().find(|f| f.name() == "b->a").unwrap();
    assert!(ab.topics.is_match("x") && !ab.topics.is_match("orders1"));
    assert!(ba.topics.is_match("orders1") && ba.topics.is_match("pay") && !ba.topics.is_match("payments"));
    assert!(!ba.topics_exclude.is_match("__x"), "an empty topics.exclude excludes nothing");
    assert_eq!(ab.policy.separator, "_");
    assert_eq!(ab.policy.kind, PolicyKind::Default);
    assert_eq!(ba.policy.kind, PolicyKind::Identity);
    assert_eq!(ba.tasks_max, 3);
    assert_eq!(ab.refresh_topics_interval, Duration::from_secs(2));
    assert_eq!(ab.replication_factor, 3);
}

#[test]
fn client_properties_pass_through_by_role() {
    let c = parse(&format!("{BASE}a.security.protocol=SASL_SSL\na.sasl.mechanism=SCRAM-SHA-512\na.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"u\" password=\"p\";\nb.producer.linger.ms=7\nb.consumer.fetch.min.bytes=10\n")).unwrap();
    let a = c.cluster("a");
    assert!(a.common.contains(&("security.protocol".into(), "SASL_SSL".into())));
    assert!(a.common.contains(&("sasl.username".into(), "u".into())));
    assert!(a.common.contains(&("sasl.password".into(), "p".into())));
    let b = c.cluster("b");
    assert_eq!(b.producer, vec![("linger.ms".to_string(), "7".to_string())]);
    assert_eq!(b.consumer, vec![("fetch.min.bytes".to_string(), "10".to_string())]);
}

#[test]
fn exactly_once_is_a_flow_setting() {
    let c = parse(&format!("{BASE}exactly.once.support = enabled\n")).unwrap();
    assert!(c.flows.iter().all(|f| f.exactly_once), "global `enabled` applies to every flow");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = parse(&format!("{BASE}a->b.exactly.once.support = Enabled\n")).unwrap();
    assert!(c.flows.iter().any(|f| f.exactly_once));
    let c = parse(BASE).unwrap();
    assert!(c.flows.iter().all(|f| !f.exactly_once), "disabled by default, as in MM2");
    let e = parse(&format!("{BASE}exactly.once.support = maybe\n")).unwrap_err().to_string();
    assert!(e.contains("mm2.properties:5: exactly.once.support: expected enabled, preparing or disabled, got 'maybe'"), "{e}");
    let c = parse(&format!("{BASE}exactly.once.support = disabled\n")).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A transactional id of the user's would be shared by every producer of every process.
    let c = parse(&format!("{BASE}b.producer.transactional.id = mine\nexactly.once.support = enabled\n")).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("mm2.properties:5: b.producer.transactional.id: ignored: Ferry sets its own")), "{:?}", c.warnings);
    assert!(c.cluster("b").producer.iter().all(|(k, _)| k != "transactional.id"));
}

#[test]
fn unknown_and_unsupported_keys_are_warned_with_their_line() {
    let c = parse(&format!("{BASE}frobnicate = 1\nexactly.once.support = preparing\na.metric.reporters=x\nkey.converter=x\noffset.lag.max = 10\n")).unwrap();
    let w = c.warnings.join("\n");
    assert!(w.contains("mm2.properties:5: frobnicate: unknown key"), "{w}");
    assert!(w.contains("mm2.properties:6: exactly.once.support: `preparing` is a Kafka Connect worker's rolling-upgrade step and has no effect in Ferry"), "{w}");
    assert!(w.contains("mm2.properties:9: offset.lag.max: not needed: Ferry translates offsets exactly"), "{w}");
    assert!(w.contains("mm2.properties:7: a.metric.reporters: not a librdkafka client property"), "{w}");
    assert!(w.contains("mm2.properties:8: key.converter: Kafka Connect framework setting"), "{w}");
}

#[test]
fn every_error_names_file_line_key_and_reason() {
    let p = problems(&format!("{BASE}a->b.topics = ok, (unclosed\nreplication.factor = 0\na->c.enabled = true\nemit.heartbeats.enabled = yes\na.security.protocol = carrier-pigeon\nc.bootstrap.servers = h:1\ntasks.max = -2\nreplication.policy.class = com.example.Mine\n"));
    let all = p.join("\n");
    assert!(all.contains("mm2.properties:5: a->b.topics: invalid regex '(unclosed'"), "{all}");
    assert!(all.contains("mm2.properties:6: replication.factor: expected a replication factor >= 1, or -1"), "{all}");
    assert!(all.contains("mm2.properties:7: a->c.enabled: unknown cluster alias 'c' (clusters = a, b)"), "{all}");
    assert!(all.contains("mm2.properties:8: emit.heartbeats.enabled: expected true or false, got 'yes'"), "{all}");
    assert!(all.contains("mm2.properties:9: a.security.protocol: invalid value 'carrier-pigeon'"), "{all}");
    assert!(all.contains("mm2.properties:10: c.bootstrap.servers: unknown cluster alias 'c'"), "{all}");
    assert!(all.contains("mm2.properties:11: tasks.max: expected a positive whole number, got '-2'"), "{all}");
    assert!(all.contains("mm2.properties:12: replication.policy.class: unsupported replication policy 'com.example.Mine'"), "{all}");
    assert_eq!(p.len(), 8, "{all}");
}

#[test]
fn list_entries_are_validated_as_they_are_matched() {
    // Each compiles alone; anchored as `^(?:entry)$` the first comments out `)$`, the second
    // escapes the `)`.
    let p = problems(&format!("{BASE}a->b.topics = (?x)orders#x\ngroups = app\\\\\n"));
    let all = p.join("\n");
    assert!(all.contains("mm2.properties:5: a->b.topics: invalid regex '(?x)orders#x'"), "{all}");
    assert!(all.contains("mm2.properties:6: groups: invalid regex 'app\\'"), "{all}");
}

#[test]
fn structural_errors() {
    assert_eq!(problems("a.bootstrap.servers=h:1\n"), vec!["mm2.properties: clusters: missing: list the cluster aliases, e.g. `clusters = a, b`"]);
    let p = problems("clusters = a, b\na.bootstrap.servers=h:1\nb.bootstrap.servers=h:2\n");
    assert!(p[0].contains("no replication flow is enabled: add e.g. `a->b.enabled = true`"), "{p:?}");
    let p = problems("clusters = a, b\na.bootstrap.servers=h:1\na->b.enabled=true\n");
    assert_eq!(p, vec!["mm2.properties:1: b.bootstrap.servers: flow a->b needs `b.bootstrap.servers`"]);
    let p = problems("clusters = a, a.b, a\n");
    assert!(p.iter().any(|x| x.contains("invalid cluster alias 'a.b'")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("cluster alias 'a' listed twice")), "{p:?}");
    let p = problems("clusters=a,b\na.bootstrap.servers=nohost\nb.bootstrap.servers=h:99999\na->b.enabled=true\n");
    assert!(p.iter().any(|x| x.contains("mm2.properties:2: a.bootstrap.servers: 'nohost' is not host:port")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("mm2.properties:3: b.bootstrap.servers: 'h:99999' is not host:port")), "{p:?}");
    let p = problems("clusters=a,b\na->a.enabled=true\n");
    assert!(p.iter().any(|x| x.contains("a flow needs two different clusters")), "{p:?}");
}

#[test]
fn secrets_never_appear_in_errors() {
    let p = problems(&format!("{BASE}a.ssl.key.password=\nb.sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required password=\"hunter2\";\n"));
    let all = p.join("\n");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn select_targets_keeps_flows_into_those_clusters() {
    let mut c = parse(&format!("{BASE}b->a.enabled=true\n")).unwrap();
    assert!(c.select_targets(&["c".into()]).unwrap_err().to_string().contains("unknown cluster alias 'c'"));
    c.select_targets(&["a".into()]).unwrap();
    assert_eq!(c.flows.iter().map(|f| f.name()).collect::<Vec<_>>(), vec!["b->a"]);
}

#[test]
fn checkpoint_settings_have_ferry_defaults_and_flow_overrides() {
    let c = parse(&format!("{BASE}groups.exclude = skip-.*\na->b.groups = orders-.*, billing\nsync.group.offsets.enabled = true\nemit.checkpoints.interval.seconds = 3\noffset-syncs.topic.location = target\n")).unwrap();
    let f = &c.flows[0];
    assert!(f.groups.is_match("orders-eu") && f.groups.is_match("billing") && !f.groups.is_match("billing2"));
    assert!(f.groups_exclude.is_match("skip-me") && !f.groups_exclude.is_match("console-consumer-1"), "a set exclude list replaces the default");
    assert!(f.sync_group_offsets_enabled);
    assert_eq!(f.emit_checkpoints_interval, std::time::Duration::from_secs(3));
    assert_eq!(f.sync_group_offsets_interval, std::time::Duration::from_secs(1));
    assert_eq!(f.offset_syncs_location, crate::config::OffsetSyncsLocation::Target);
    let d = parse(BASE).unwrap();
    let f = &d.flows[0];
    assert!(f.groups_exclude.is_match("console-consumer-42") && f.groups_exclude.is_match("ferry-mirror.a.internal"));
    assert!(f.emit_checkpoints_enabled && !f.sync_group_offsets_enabled);
    assert_eq!(f.offset_syncs_location, crate::config::OffsetSyncsLocation::Source);
    let p = problems(&format!("{BASE}offset-syncs.topic.location = moon\ngroups = (x\n"));
    let all = p.join("\n");
    assert!(all.contains("mm2.properties:5: offset-syncs.topic.location: expected source or target, got 'moon'"), "{all}");
    assert!(all.contains("mm2.properties:6: groups: invalid regex '(x'"), "{all}");
}

#[test]
fn top_level_security_settings_reach_every_cluster_unless_it_sets_its_own() {
    let jaas = |u: &str| format!("org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{u}\" password=\"p-{u}\";");
    let c = parse(&format!(
        "{BASE}security.protocol = SASL_PLAINTEXT\nsasl.mechanism = PLAIN\nsasl.jaas.config = {}\nb.sasl.jaas.config = {}\nb.security.protocol = SASL_SSL\n",
        jaas("all"), jaas("bee"))).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let get = |alias: &str, key: &str| c.cluster(alias).client_config(ClientRole::Producer).get(key).map(String::from);
    assert_eq!(get("a", "security.protocol").as_deref(), Some("SASL_PLAINTEXT"));
    assert_eq!(get("a", "sasl.mechanism").as_deref(), Some("PLAIN"));
    assert_eq!((get("a", "sasl.username").as_deref(), get("a", "sasl.password").as_deref()), (Some("all"), Some("p-all")));
    // b's own settings win over the top-level ones, whatever their order in the file.
    assert_eq!(get("b", "security.protocol").as_deref(), Some("SASL_SSL"));
    assert_eq!(get("b", "sasl.mechanism").as_deref(), Some("PLAIN"));
    assert_eq!((get("b", "sasl.username").as_deref(), get("b", "sasl.password").as_deref()), (Some("bee"), Some("p-bee")));
    // An invalid top-level value is one problem on its line, not one per cluster.
    let p = problems(&format!("{BASE}security.protocol = carrier-pigeon\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("mm2.properties:5: security.protocol: invalid value 'carrier-pigeon'"), "{p:?}");
}

#[test]
fn config_providers_resolve_in_any_value_and_name_what_is_missing() {
    let dir = std::env::temp_dir().join(format!("ferry-config-providers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secrets = dir.join("secrets.properties");
    std::fs::write(&secrets, "kafka.password = s3cr=t\nkafka.user = alice\n").unwrap();
    std::env::set_var("FERRY_TEST_CONFIG_TOPICS", "orders");
    let s = secrets.display();
    let c = parse(&format!(
        "{BASE}config.providers = file, env\nconfig.providers.file.class = org.apache.kafka.common.config.provider.FileConfigProvider\n\
         config.providers.env.class = org.apache.kafka.common.config.provider.EnvVarConfigProvider\n\
         a.sasl.jaas.config = org.apache.kafka.common.security.plain.PlainLoginModule required username=\"${{file:{s}:kafka.user}}\" password=\"${{file:{s}:kafka.password}}\";\n\
         a->b.topics = ${{env:FERRY_TEST_CONFIG_TOPICS}}\n")).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let a = c.cluster("a");
    assert!(a.common.contains(&("sasl.username".into(), "alice".into())), "{a:?}");
    assert!(a.common.contains(&("sasl.password".into(), "s3cr=t".into())));
    assert_eq!(c.flows[0].topics.patterns(), ["orders"]);

    let p = problems(&format!("{BASE}config.providers = file\nconfig.providers.file.class = org.apache.kafka.common.config.provider.FileConfigProvider\na.sasl.password = ${{file:{s}:nope}}\nb.sasl.password = ${{vault:kv/kafka:pw}}\n"));
    let all = p.join("\n");
    assert!(all.contains(&format!("mm2.properties:7: a.sasl.password: cannot resolve ${{file:{s}:nope}}: {s} has no key 'nope'")), "{all}");
    assert!(all.contains("mm2.properties:8: b.sasl.password: cannot resolve ${vault:kv/kafka:pw}: no config provider 'vault' is declared"), "{all}");
    assert!(!all.contains("s3cr"), "a secret was printed: {all}");
    let p = problems(&format!("{BASE}config.providers = vault\nconfig.providers.vault.class = com.example.Vault\n"));
    assert!(p[0].starts_with("mm2.properties:6: config.providers.vault.class: config provider class 'com.example.Vault' is Java code Ferry cannot run"), "{p:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn custom_filter_classes_are_refused_and_defaults_accepted() {
    let c = parse(&format!("{BASE}topic.filter.class = org.apache.kafka.connect.mirror.DefaultTopicFilter\na->b.group.filter.class = org.apache.kafka.connect.mirror.DefaultGroupFilter\n")).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let p = problems(&format!("{BASE}topic.filter.class = com.example.OnlyGold\na->b.group.filter.class = com.example.G\nconfig.property.filter.class = com.example.C\n"));
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].starts_with("mm2.properties:5: topic.filter.class: custom class 'com.example.OnlyGold' is Java code Ferry cannot run"), "{p:?}");
    assert!(p[1].starts_with("mm2.properties:6: a->b.group.filter.class: custom class"), "{p:?}");
    assert!(p[2].starts_with("mm2.properties:7: config.property.filter.class"), "{p:?}");
}

#[test]
fn settings_that_defeat_ferrys_guarantees_are_refused() {
    let p = problems(&format!(
        "{BASE}a.consumer.auto.offset.reset = latest\na.consumer.isolation.level = read_uncommitted\nb.producer.acks = 1\nb.enable.idempotence = false\na.auto.offset.reset = earliest\n"));
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(p[0].starts_with("mm2.properties:5: a.consumer.auto.offset.reset: Ferry sets its own"), "{p:?}");
    assert!(p[1].starts_with("mm2.properties:6: a.consumer.isolation.level: read_uncommitted would replicate records of aborted transactions"), "{p:?}");
    assert!(p[2].starts_with("mm2.properties:7: b.producer.acks: acks=1 acknowledges records"), "{p:?}");
    assert!(p[3].starts_with("mm2.properties:8: b.enable.idempotence: without idempotence"), "{p:?}");
    assert!(p[4].starts_with("mm2.properties:9: a.auto.offset.reset"), "{p:?}");
    // The values Ferry uses anyway, and role-irrelevant ones, are fine.
    parse(&format!("{BASE}b.producer.acks = all\na.consumer.isolation.level = read_committed\nb.producer.enable.idempotence = true\na.admin.acks = 1\n")).unwrap();
}

#[test]
fn sync_topic_acls_defaults_on_like_mm2() {
    let c = parse(BASE).unwrap();
    assert!(c.flows[0].sync_topic_acls_enabled);
    let c = parse(&format!("{BASE}sync.topic.acls.enabled = false\n")).unwrap();
    assert!(!c.flows[0].sync_topic_acls_enabled && c.warnings.is_empty());
}
