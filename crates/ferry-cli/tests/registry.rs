//! `ferry registry` against Apache Kafka: Confluent's own Python serializers (Avro, JSON Schema,
//! Protobuf with references) register and read
//! through it, its state lives in `_schemas` in Confluent's record format and survives kill -9,
//! and bad input gets Confluent's error codes.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ferry_testkit::{consume_all, free_port, unique, wait_for, Broker, Process};
use serde_json::{json, Value};

/// One HTTP/1.0 request; (status, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    try_http(addr, method, path, body).unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// [`http`], with a connection that fails (a killed server) as an error.
fn try_http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, String)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    ferry_testkit::http_request(addr, method, path, &[("Content-Type", "application/vnd.schemaregistry.v1+json")], &body)
}

fn json_of(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, text) = http(addr, method, path, body);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}")))
}

struct Registry {
    process: Process,
    addr: String,
    config: PathBuf,
}

fn start_registry(broker: &Broker, name: &str) -> Registry {
    let (addr, config) = common::registry_config(broker, name);
    restart(name, addr, config)
}

fn restart(name: &str, addr: String, config: PathBuf) -> Registry {
    let process = common::spawn_registry(name, &addr, &config);
    assert_eq!(json_of(&addr, "GET", "/", None), (200, json!({})));
    Registry { process, addr, config }
}

#[test]
fn confluents_python_avro_serializer_round_trips_through_ferry_registry() {
    let broker = Broker::start("registry-avro").unwrap();
    let registry = start_registry(&broker, "registry-avro");
    let topic = unique("orders");
    ferry_testkit::create_topic(&broker.bootstrap(), &topic, 1).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/registry_avro.py");
    let out = Command::new(common::venv_python()).arg(script).args([&format!("http://{}", registry.addr), &broker.bootstrap(), &topic]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client failed:\n{stdout}\n{}\nregistry:\n{}", String::from_utf8_lossy(&out.stderr), registry.process.output());
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    println!("confluent-kafka through ferry registry: {seen}");
    assert_eq!(seen["embedded_ids"], json!([seen["registered_id"]]), "every record carries the registered id");
    assert_eq!((seen["version"].clone(), seen["records"].clone()), (json!(1), json!(20)));
    assert_ne!(seen["evolved_id"], seen["registered_id"], "a field added with a default is a new, compatible version");
    assert_eq!(seen["incompatible_status"], json!(409), "a field's type changed is refused as Confluent refuses it");
    // The subject as the REST API shows it.
    let (status, first) = json_of(&registry.addr, "GET", &format!("/subjects/{topic}-value/versions/1"), None);
    assert_eq!(status, 200);
    assert_eq!(first["id"], seen["registered_id"]);
    assert!(first.get("schemaType").is_none(), "Avro has no schemaType, as Confluent answers");
    let (_, latest) = json_of(&registry.addr, "GET", &format!("/subjects/{topic}-value/versions/latest"), None);
    assert_eq!((latest["version"].clone(), latest["id"].clone()), (json!(2), seen["evolved_id"].clone()));
}

/// confluent-kafka's JSON Schema and Protobuf serializers, each with a schema referenced from
/// another subject (a `$ref`, an `import`), through real topics.
#[test]
fn confluents_python_json_schema_and_protobuf_serializers_round_trip_with_references() {
    let broker = Broker::start("registry-formats").unwrap();
    let registry = start_registry(&broker, "registry-formats");
    let (json_topic, proto_topic) = (unique("customers"), unique("orders"));
    ferry_testkit::create_topic(&broker.bootstrap(), &json_topic, 1).unwrap();
    ferry_testkit::create_topic(&broker.bootstrap(), &proto_topic, 1).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/registry_formats.py");
    let out = Command::new(common::venv_python()).arg(script).args([&format!("http://{}", registry.addr), &broker.bootstrap(), &json_topic, &proto_topic]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client failed:\n{stdout}\n{}\nregistry:\n{}", String::from_utf8_lossy(&out.stderr), registry.process.output());
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    println!("confluent-kafka JSON Schema and Protobuf through ferry registry: {seen:#}");
    for format in ["json", "protobuf"] {
        let s = &seen[format];
        assert_eq!(s["embedded_ids"], json!([s["registered_id"]]), "{format}: every record carries the registered id");
        assert_eq!(s["records"], json!(10), "{format}");
        assert!(s["evolved_id"].as_i64().is_some_and(|id| id != s["registered_id"].as_i64().unwrap()), "{format}: a compatible change is a new version: {s}");
        assert_eq!(s["incompatible_status"], json!(409), "{format}: an incompatible change is refused as Confluent refuses it");
    }
    assert_eq!(seen["json"]["references"], json!(["address.json"]));
    // The serializer registered a base64 descriptor; what is stored and served is .proto text.
    let proto = &seen["protobuf"];
    let text = proto["schema"].as_str().unwrap();
    assert!(text.starts_with("syntax = \"proto3\";\npackage shop;\n") && text.contains("import \"money.proto\";") && text.contains("  .shop.Money total = 2;"), "{text}");
    assert_eq!((proto["compiled_name"].clone(), proto["compiled_dependencies"].clone()), (json!("default"), json!(["money.proto"])));
    assert_eq!(proto["compiled_fields"], json!([["id", 1, ""], ["total", 2, ".shop.Money"], ["skus", 3, ""]]));
    // The imported file is a subject of its own, named as the client names references.
    let (status, money) = json_of(&registry.addr, "GET", "/subjects/money.proto/versions/latest", None);
    assert_eq!((status, money["schemaType"].clone()), (200, json!("PROTOBUF")), "{money}");
    let (_, referenced_by) = json_of(&registry.addr, "GET", "/subjects/money.proto/versions/1/referencedby", None);
    assert!(referenced_by.as_array().is_some_and(|ids| ids.contains(&proto["registered_id"])), "{referenced_by}");
}

/// The npm `@kafkajs/confluent-schema-registry` client: Avro, JSON Schema and Protobuf registered,
/// encoded and decoded by a fresh client (which fetches the schema by id); evolution judged.
#[test]
fn the_npm_confluent_client_round_trips_avro_json_schema_and_protobuf() {
    let broker = Broker::start("registry-npm").unwrap();
    let registry = start_registry(&broker, "registry-npm");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/registry-js");
    assert!(dir.join("node_modules/@kafkajs/confluent-schema-registry").exists(), "scripts/install-test-tools installs the npm client into {}", dir.display());
    let out = Command::new("node").arg(dir.join("registry.mjs")).arg(format!("http://{}", registry.addr)).current_dir(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the npm client failed:\n{stdout}\n{}\nregistry:\n{}", String::from_utf8_lossy(&out.stderr), registry.process.output());
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    println!("@kafkajs/confluent-schema-registry through ferry registry: {seen}");
    for format in ["avro", "json", "protobuf"] {
        let s = &seen[format];
        assert_eq!((s["magic"].clone(), s["embedded"].clone(), s["latest"].clone()), (json!(0), s["id"].clone(), s["id"].clone()), "{format}: {s}");
    }
    assert_eq!(seen["avro"]["decoded"], json!({"name": "Rex", "age": 3}));
    assert_eq!(seen["json"]["decoded"], json!({"name": "Rex", "tags": ["good"]}));
    assert_eq!(seen["protobuf"]["decoded"], json!({"name": "Rex", "age": 3}));
    assert_ne!(seen["avro"]["evolved"], seen["avro"]["id"]);
    assert_eq!(seen["avro"]["incompatible"], json!(409));
    // The client set the subject's level on its first registration.
    assert_eq!(json_of(&registry.addr, "GET", "/config/js-pet-value", None).1["compatibilityLevel"], json!("BACKWARD"));
}

/// Basic auth and bearer tokens through confluent-kafka's own client: roles decide who writes;
/// no credential appears in the log.
#[test]
fn basic_auth_and_bearer_tokens_with_a_read_only_role() {
    let broker = Broker::start("registry-auth").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = std::env::temp_dir().join(unique("registry-auth"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("users.properties"), "# Jetty's format, as Confluent's JAAS file points at\nadmin: s3cret,admin\nviewer: look,readonly\n").unwrap();
    std::fs::write(dir.join("tokens.properties"), "ci: t0ken,readonly\n").unwrap();
    let config = dir.join("schema-registry.properties");
    std::fs::write(
        &config,
        format!(
            "listeners=http://{addr}\nkafkastore.bootstrap.servers={}\nkafkastore.topic.replication.factor=1\nauthentication.method=BASIC,BEARER\nauthentication.basic.users.file=users.properties\nauthentication.bearer.tokens.file=tokens.properties\nauthentication.roles=admin,readonly\nauthentication.skip.paths=/metrics\n",
            broker.bootstrap()
        ),
    )
    .unwrap();
    let process = Process::spawn(common::ferry(), &["registry", "--config", config.to_str().unwrap()], &unique("registry-auth")).unwrap();
    wait_for(Duration::from_secs(60), || TcpStream::connect(&addr).ok().map(|_| ())).unwrap_or_else(|| panic!("the registry did not listen:\n{}", process.output()));
    assert_eq!(http(&addr, "GET", "/", None).0, 401, "credentials are required");
    assert_eq!(http(&addr, "GET", "/metrics", None).0, 200, "a skipped path needs none");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/registry_auth.py");
    let out = Command::new(common::venv_python()).arg(script).arg(format!("http://{addr}")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client failed:\n{stdout}\n{}\nregistry:\n{}", String::from_utf8_lossy(&out.stderr), process.output());
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    println!("confluent-kafka with credentials: {seen}");
    assert_eq!(seen["viewer_reads"], seen["registered"]);
    assert_eq!((seen["viewer_writes"].clone(), seen["wrong_password"].clone(), seen["anonymous"].clone()), (json!(403), json!(401), json!(401)));
    assert_eq!(seen["bearer"], json!(["auth-value"]));
    assert_eq!(seen["challenge"], json!("Basic realm=\"SchemaRegistry\""));
    let log = process.output();
    for secret in ["s3cret", "look", "t0ken"] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }
    // A users file with a hashed password is refused at start-up with file and line, exit 2.
    std::fs::write(dir.join("users.properties"), "admin: MD5:164c88b302622e17050af52c89945d44,admin\n").unwrap();
    let out = Command::new(common::ferry()).args(["registry", "--config", config.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("users.properties:1: admin: MD5:") && !err.contains("164c88"), "{:?} {err}", out.status);
}

/// A sample's value in Prometheus text (the first line starting with `name`).
fn metric(addr: &str, name: &str) -> Option<f64> {
    let (status, text) = http(addr, "GET", "/metrics", None);
    assert_eq!(status, 200, "{text}");
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// Two instances on one `_schemas`: one leads (elected in Kafka's group protocol), writes through
/// the other are forwarded to it and readable through the other at once; the leader killed
/// under a stream of registrations, the other takes over and every acknowledged registration
/// keeps its id, with no id given to two schemas.
#[test]
fn two_instances_elect_a_leader_forward_writes_and_survive_its_death() {
    let broker = Broker::start("registry-pair").unwrap();
    let mut one = start_registry(&broker, "registry-one");
    let two = start_registry(&broker, "registry-two");
    let leading = |addr: &str| metric(addr, "ferry_registry_leader") == Some(1.0);
    wait_for(Duration::from_secs(60), || (leading(&one.addr) != leading(&two.addr)).then_some(()))
        .unwrap_or_else(|| panic!("no single leader:\n{}\n{}", one.process.output(), two.process.output()));
    let one_leads = leading(&one.addr);
    let (leader, follower) = if one_leads { (&one.addr, &two.addr) } else { (&two.addr, &one.addr) };
    println!("leader {leader}, follower {follower}");

    // A write through the follower is decided by the leader and readable through the follower at once.
    let (status, id) = json_of(follower, "POST", "/subjects/pair-value/versions", Some(&json!({"schema": "\"string\""})));
    assert_eq!(status, 200, "{id}\n{}\n{}", one.process.output(), two.process.output());
    assert_eq!(json_of(follower, "GET", "/subjects/pair-value/versions/1", None).1["id"], id["id"], "read back through the follower at once");
    assert_eq!(json_of(leader, "GET", "/subjects/pair-value/versions/1", None).1["id"], id["id"]);
    assert!(metric(follower, "ferry_registry_forwarded_total").is_some_and(|n| n >= 1.0), "the follower forwarded");
    assert_eq!(json_of(follower, "PUT", "/config/pair-value", Some(&json!({"compatibility": "NONE"}))), (200, json!({"compatibility": "NONE"})));
    assert_eq!(json_of(leader, "GET", "/config/pair-value", None).1["compatibilityLevel"], json!("NONE"));

    // Registrations through both while the leader is killed.
    let (one_addr, two_addr) = (one.addr.clone(), two.addr.clone());
    let survivor = if one_leads { two_addr.clone() } else { one_addr.clone() };
    let writer = std::thread::spawn(move || {
        let mut acknowledged: Vec<(String, i64)> = Vec::new();
        let mut failures = Vec::new();
        let started = std::time::Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(40) || acknowledged.len() < 40 {
            n += 1;
            let schema = format!("{{\"type\":\"record\",\"name\":\"R{n}\",\"fields\":[]}}");
            let through = if n % 2 == 0 { &one_addr } else { &two_addr };
            let through = if std::net::TcpStream::connect(through).is_ok() { through } else { &survivor };
            let (status, body) = try_http(through, "POST", &format!("/subjects/load-{n}-value/versions"), Some(&json!({ "schema": schema }))).unwrap_or_else(|e| (0, e.to_string()));
            match serde_json::from_str::<Value>(&body).ok().and_then(|v| v["id"].as_i64()).filter(|_| status == 200) {
                Some(id) => acknowledged.push((schema, id)),
                None => failures.push((status, body)),
            }
            std::thread::sleep(Duration::from_millis(50));
            if started.elapsed() > Duration::from_secs(120) {
                break;
            }
        }
        (acknowledged, failures)
    });
    std::thread::sleep(Duration::from_secs(5));
    let killed_at = std::time::Instant::now();
    if one_leads {
        one.process.kill_9();
    } else {
        // `two` is not mutable here: kill it through its pid.
        Command::new("kill").args(["-9", &two.process.pid().to_string()]).status().unwrap();
    }
    let survivor = if one_leads { &two.addr } else { &one.addr };
    wait_for(Duration::from_secs(60), || leading(survivor).then_some(())).unwrap_or_else(|| panic!("the survivor never led:\n{}", if one_leads { two.process.output() } else { one.process.output() }));
    println!("the survivor leads {:?} after the kill", killed_at.elapsed());
    let (acknowledged, failures) = writer.join().unwrap();
    println!("{} registrations acknowledged, {} failed during the takeover: {:?}", acknowledged.len(), failures.len(), failures.iter().take(3).collect::<Vec<_>>());
    assert!(acknowledged.len() >= 40, "writes went on after the takeover");
    let mut by_id: std::collections::BTreeMap<i64, &str> = std::collections::BTreeMap::new();
    for (schema, id) in &acknowledged {
        if let Some(other) = by_id.insert(*id, schema) {
            panic!("id {id} was given to {other} and to {schema}");
        }
        let (status, stored) = json_of(survivor, "GET", &format!("/schemas/ids/{id}"), None);
        assert_eq!((status, stored["schema"].as_str()), (200, Some(schema.as_str())), "acknowledged id {id} resolves to its schema");
    }
    for (status, body) in &failures {
        // A request in flight at the killed leader loses its connection (status 0); any other
        // failure is a 5xx with Confluent's body.
        assert!(*status == 0 || (*status >= 500 && body.contains("error_code")), "a failure during the takeover: {status} {body}");
    }
}

#[test]
fn state_lives_in_schemas_in_confluents_format_and_survives_kill_9() {
    let broker = Broker::start("registry-store").unwrap();
    let mut registry = start_registry(&broker, "registry-store");
    let a = &registry.addr.clone();
    let schema = |fields: &[&str]| -> Value {
        let fields: Vec<Value> = fields.iter().map(|f| json!({"name": f, "type": "string", "default": ""})).collect();
        json!({"schema": json!({"type": "record", "name": "R", "fields": fields}).to_string()})
    };
    assert_eq!(json_of(a, "PUT", "/config/users-value", Some(&json!({"compatibility": "NONE"}))), (200, json!({"compatibility": "NONE"})));
    assert_eq!(json_of(a, "POST", "/subjects/users-value/versions", Some(&schema(&["a"]))), (200, json!({"id": 1})));
    assert_eq!(json_of(a, "POST", "/subjects/users-value/versions", Some(&schema(&["a", "b"]))), (200, json!({"id": 2})));
    assert_eq!(json_of(a, "POST", "/subjects/users-value/versions", Some(&schema(&["a"]))), (200, json!({"id": 1})), "registered again: its id");
    assert_eq!(json_of(a, "POST", "/subjects/other-value/versions", Some(&schema(&["a", "b"]))), (200, json!({"id": 2})), "ids are global");
    assert_eq!(json_of(a, "POST", "/subjects/gone-value/versions", Some(&json!({"schema": "\"int\""}))), (200, json!({"id": 3})));
    // Soft delete of a version and of a subject; a permanent delete needs the soft one first.
    assert_eq!(json_of(a, "DELETE", "/subjects/users-value/versions/1", None), (200, json!(1)));
    assert_eq!(json_of(a, "DELETE", "/subjects/other-value?permanent=true", None).1["error_code"], json!(40405));
    assert_eq!(json_of(a, "DELETE", "/subjects/gone-value", None), (200, json!([1])));
    assert_eq!(json_of(a, "DELETE", "/subjects/gone-value?permanent=true", None), (200, json!([1])));
    let listings = |a: &str| -> Vec<(u16, Value)> {
        [
            "/subjects",
            "/subjects?deleted=true",
            "/subjects/users-value/versions",
            "/subjects/users-value/versions?deleted=true",
            "/subjects/users-value/versions/1?deleted=true",
            "/schemas/ids/1",
            "/schemas/ids/2/versions",
            "/schemas/ids/3",
            "/config/users-value",
            "/schemas",
        ]
        .iter()
        .map(|p| json_of(a, "GET", p, None))
        .collect()
    };
    let before = listings(a);
    assert_eq!(before[0], (200, json!(["other-value", "users-value"])));
    assert_eq!(before[3], (200, json!([1, 2])));
    assert_eq!(before[2], (200, json!([2])));
    assert_eq!(before[5].0, 200, "a soft-deleted version's id still resolves");
    assert_eq!(before[7].0, 200, "a permanently deleted subject's schema id still resolves (Confluent keeps ids)");

    registry.process.kill_9();
    let Registry { addr, config, .. } = registry;
    registry = restart("registry-store", addr, config);
    let after = listings(&registry.addr);
    assert_eq!(after, before, "every listing is identical after kill -9 and a restart");
    assert_eq!(json_of(&registry.addr, "POST", "/subjects/new-value/versions", Some(&json!({"schema": "\"bytes\""}))), (200, json!({"id": 4})), "ids continue, none reused");

    // The topic holds Confluent's records: compacted, keys in Confluent's field order.
    let records = consume_all(&broker.bootstrap(), "_schemas", 1, 12, Duration::from_secs(10)).unwrap();
    let keys: Vec<String> = records.iter().filter_map(|r| r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned())).collect();
    assert!(keys.contains(&r#"{"keytype":"SCHEMA","subject":"users-value","version":2,"magic":1}"#.to_string()), "{keys:?}");
    assert!(keys.contains(&r#"{"keytype":"CONFIG","subject":"users-value","magic":0}"#.to_string()), "{keys:?}");
    assert!(keys.iter().all(|k| ["SCHEMA", "CONFIG", "MODE", "DELETE_SUBJECT", "CLEAR_SUBJECT", "NOOP"].iter().any(|t| k.starts_with(&format!(r#"{{"keytype":"{t}","#)))), "{keys:?}");
    let configs = ferry_testkit::topic_configs(&broker.bootstrap(), "_schemas").unwrap();
    assert_eq!(configs.get("cleanup.policy").map(String::as_str), Some("compact"));
}

#[test]
fn bad_input_gets_confluents_error_codes_and_a_bad_file_exit_2() {
    let broker = Broker::start("registry-errors").unwrap();
    let registry = start_registry(&broker, "registry-errors");
    let a = &registry.addr;
    let code = |method: &str, path: &str, body: Option<&Value>| -> (u16, Value) {
        let (status, v) = json_of(a, method, path, body);
        (status, v["error_code"].clone())
    };
    assert_eq!(code("GET", "/subjects/nope/versions", None), (404, json!(40401)));
    assert_eq!(code("GET", "/schemas/ids/99", None), (404, json!(40403)));
    assert_eq!(code("POST", "/subjects/s/versions", Some(&json!({"schema": "{\"type\": "}))), (422, json!(42201)));
    assert_eq!(code("POST", "/subjects/s/versions", Some(&json!({"schema": "\"int\"", "schemaType": "XML"}))), (422, json!(42201)));
    assert_eq!(code("PUT", "/config", Some(&json!({"compatibility": "SIDEWAYS"}))), (422, json!(42203)));
    assert_eq!(code("PUT", "/mode", Some(&json!({"mode": "SOMETIMES"}))), (422, json!(42204)));
    assert_eq!(json_of(a, "POST", "/subjects/s/versions", Some(&json!({"schema": "\"int\""}))), (200, json!({"id": 1})));
    assert_eq!(code("GET", "/subjects/s/versions/zero", None), (422, json!(42202)));
    assert_eq!(code("GET", "/subjects/s/versions/7", None), (404, json!(40402)));
    assert_eq!(code("GET", "/config/s", None), (404, json!(40408)));
    // Read-only mode refuses writes.
    assert_eq!(json_of(a, "PUT", "/mode/s", Some(&json!({"mode": "READONLY"}))), (200, json!({"mode": "READONLY"})));
    assert_eq!(code("POST", "/subjects/s/versions", Some(&json!({"schema": "\"long\""}))), (422, json!(42205)));
    // BACKWARD (the default): the new schema must read the old data. long reads int; string does not.
    assert_eq!(code("POST", "/subjects/t/versions", Some(&json!({"schema": "\"int\""}))).0, 200);
    assert_eq!(code("POST", "/subjects/t/versions", Some(&json!({"schema": "\"long\""}))).0, 200);
    assert_eq!(code("POST", "/subjects/t/versions", Some(&json!({"schema": "\"string\""}))), (409, json!(409)));
    let (status, verdict) = json_of(a, "POST", "/compatibility/subjects/t/versions/latest?verbose=true", Some(&json!({"schema": "\"string\""})));
    assert_eq!((status, verdict["is_compatible"].clone()), (200, json!(false)));
    assert!(verdict["messages"][0].as_str().unwrap().contains("TYPE_MISMATCH"), "{verdict}");
    // JSON Schema and Protobuf are judged by Confluent's diff kinds, named in verbose verdicts.
    assert_eq!(code("POST", "/subjects/j/versions", Some(&json!({"schema": "{\"type\":\"object\"}", "schemaType": "JSON"}))).0, 200);
    assert_eq!(code("POST", "/subjects/j/versions", Some(&json!({"schema": "{\"type\":\"string\"}", "schemaType": "JSON"}))), (409, json!(409)));
    let (_, verdict) = json_of(a, "POST", "/compatibility/subjects/j/versions/latest?verbose=true", Some(&json!({"schema": "{\"type\":\"string\"}", "schemaType": "JSON"})));
    assert!(verdict["messages"][0].as_str().unwrap().contains("Difference{jsonPath='#', type=TYPE_CHANGED}"), "{verdict}");
    assert_eq!(code("POST", "/subjects/p/versions", Some(&json!({"schema": "syntax = \"proto3\";\nmessage M {\n  int32 a = 1\n}", "schemaType": "PROTOBUF"}))), (422, json!(42201)));
    // The OpenAPI document is valid, and every route it lists is served (no 404 fallback, no 405).
    let (status, doc) = http(a, "GET", "/openapi.json", None);
    assert_eq!(status, 200);
    let doc_file = std::env::temp_dir().join(format!("{}.json", unique("registry-openapi")));
    std::fs::write(&doc_file, &doc).unwrap();
    let out = Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(&doc_file).output().unwrap();
    assert!(out.status.success(), "openapi-spec-validator rejected /openapi.json:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let mut routes = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            if method == "delete" {
                continue; // served (checked below), but not called here: it would delete the fixtures
            }
            let concrete = path.replace("{subject}", "s").replace("{version}", "1").replace("{id}", "1");
            let body = (method == "post" || method == "put").then(|| json!({"schema": "\"int\"", "compatibility": "BACKWARD", "mode": "READWRITE"}));
            let (status, answer) = http(a, &method.to_uppercase(), &concrete, body.as_ref());
            assert!(status != 405 && !answer.contains("40400"), "{method} {path} is documented but not served: {status} {answer}");
            routes += 1;
        }
    }
    assert!(routes >= 25, "{routes} routes documented");
    assert_eq!(http(a, "DELETE", "/config/nothing", None).0, 404, "DELETE routes are routed (40401/40408, not the fallback)");
    // Data contracts are refused, never dropped silently.
    assert_eq!(code("POST", "/subjects/dc/versions", Some(&json!({"schema": "\"int\"", "ruleSet": {"domainRules": []}}))), (422, json!(42201)));
    // normalize=true: two spellings of one schema (member order) get one id; without it, two.
    let spelled = json!({"schema": "{\"type\":\"record\",\"name\":\"N\",\"fields\":[{\"name\":\"x\",\"type\":\"int\"}]}"});
    let respelled = json!({"schema": "{\"fields\":[{\"type\":\"int\",\"name\":\"x\"}],\"name\":\"N\",\"type\":\"record\"}"});
    let first = json_of(a, "POST", "/subjects/norm/versions?normalize=true", Some(&spelled)).1;
    assert_eq!(json_of(a, "POST", "/subjects/norm/versions?normalize=true", Some(&respelled)).1, first);
    assert_eq!(json_of(a, "POST", "/subjects/norm?normalize=true", Some(&respelled)).1["id"], first["id"], "lookup normalizes too");
    assert_ne!(json_of(a, "POST", "/subjects/plain/versions", Some(&respelled)).1, first);
    let (status, body) = http(a, "POST", "/subjects/s/versions", None);
    assert_eq!(status, 400, "{body}");

    // A bad properties file: exit 2, every problem with file:line and key.
    let bad = std::env::temp_dir().join(format!("{}.properties", unique("registry-bad")));
    std::fs::write(&bad, "listeners=https://0.0.0.0:8081\nkafkastore.bootstrap.servers=127.0.0.1:1\nschema.compatibility.level=SIDEWAYS\n").unwrap();
    let out = Command::new(common::ferry()).args(["registry", "--config", bad.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(":1: listeners:") && stderr.contains(":3: schema.compatibility.level:"), "{stderr}");
}
