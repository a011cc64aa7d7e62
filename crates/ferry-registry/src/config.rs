//! Confluent Schema Registry's `schema-registry.properties`, read as Confluent reads it: the
//! listeners, the `kafkastore.*` store settings (every `kafkastore.<client property>` goes to the
//! store's Kafka clients), the default compatibility level and the instance's role. Unknown keys
//! are warned about with file:line; an invalid value stops start-up with every problem named.

use std::fmt;
use std::net::SocketAddr;

use ferry_kafka::properties::{self, Entry};
use ferry_kafka::{ClusterClient, PropertyProblemKind};

use std::collections::BTreeSet;

use crate::auth::AuthConfig;
use crate::schema::{Compatibility, Mode};

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Where the REST API listens (`listeners`; `http://` only for now).
    pub listeners: Vec<SocketAddr>,
    /// The store cluster and its client settings (`kafkastore.*`).
    pub store: ClusterClient,
    /// `kafkastore.topic`.
    pub topic: String,
    pub replication_factor: i32,
    /// `kafkastore.timeout.ms`: how long a write waits to be read back.
    pub timeout: std::time::Duration,
    /// `kafkastore.init.timeout.ms`: how long start-up waits for the store.
    pub init_timeout: std::time::Duration,
    pub compatibility: Compatibility,
    pub mode_mutability: bool,
    pub leader_eligibility: bool,
    /// `host.name`: the host other instances reach this one at (see [`RegistryConfig::advertised_url`]).
    pub host_name: Option<String>,
    /// `schema.registry.group.id`: the group the instances elect their leader in.
    pub group_id: String,
    /// `authentication.*`: who may call the API ([`crate::auth`]).
    pub auth: AuthConfig,
}

impl RegistryConfig {
    /// The URL other instances forward writes to: `host.name` (or the first listener's address
    /// when that is a specific one, else the machine's host name) and the first listener's port.
    pub fn advertised_url(&self) -> String {
        let listener = self.listeners.first().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081)));
        let host = match &self.host_name {
            Some(h) => h.clone(),
            None if !listener.ip().is_unspecified() && listener.is_ipv6() => format!("[{}]", listener.ip()),
            None if !listener.ip().is_unspecified() => listener.ip().to_string(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into()),
        };
        format!("http://{host}:{}", listener.port())
    }
}

/// A key the file sets that this registry does not use: (line, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub line: usize,
    pub key: String,
}

/// Every problem of a file, each with file:line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// Confluent settings this registry reads or knowingly accepts without a use yet (warned
/// about would be noise): they change nothing a single-cluster registry does.
const ACCEPTED: &[&str] = &[
    "debug",
    "kafkastore.group.id",
    "kafkastore.write.max.retries",
    "kafkastore.checkpoint.dir",
    "schema.registry.resource.extension.class",
    "metrics.jmx.prefix",
    "response.mediatype.default",
    "response.mediatype.preferred",
];

impl RegistryConfig {
    /// Parses the file's text; `file` names it in every problem. Returns the config and the
    /// keys it does not know (for the caller to warn about).
    pub fn parse(file: &str, text: &str) -> Result<(RegistryConfig, Vec<Unknown>), ConfigError> {
        let entries = properties::parse(text).map_err(|(line, e)| ConfigError { problems: vec![format!("{file}:{line}: {e}")] })?;
        let mut problems = Vec::new();
        let mut unknown = Vec::new();
        let get = |key: &str| entries.iter().rev().find(|e| e.key == key);
        let problem = |e: &Entry, reason: String| format!("{file}:{}: {}: {reason}", e.line, e.key);

        let listeners = match get("listeners") {
            Some(e) => {
                let mut out = Vec::new();
                for url in e.value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                    match parse_listener(url) {
                        Ok(addr) => out.push(addr),
                        Err(reason) => problems.push(problem(e, reason)),
                    }
                }
                if out.is_empty() {
                    problems.push(problem(e, "no listener".into()));
                }
                out
            }
            None => vec![SocketAddr::from(([0, 0, 0, 0], 8081))],
        };
        let bootstrap = match get("kafkastore.bootstrap.servers") {
            Some(e) => {
                // Confluent accepts `PLAINTEXT://host:port` endpoints; librdkafka wants host:port.
                let servers: Vec<&str> = e.value.split(',').map(|s| s.trim().rsplit("://").next().unwrap_or("")).filter(|s| !s.is_empty()).collect();
                if servers.is_empty() {
                    problems.push(problem(e, "no bootstrap server".into()));
                }
                servers.join(",")
            }
            None => {
                problems.push(format!("{file}: kafkastore.bootstrap.servers is required (the Kafka cluster that keeps the schemas)"));
                String::new()
            }
        };
        let mut store = ClusterClient::new("kafkastore", bootstrap);
        let mut int = |key: &str, default: i64, min: i64| -> i64 {
            match get(key) {
                Some(e) => match e.value.trim().parse::<i64>() {
                    Ok(v) if v >= min => v,
                    _ => {
                        problems.push(problem(e, format!("'{}' is not a whole number of at least {min}", e.value)));
                        default
                    }
                },
                None => default,
            }
        };
        let replication_factor = int("kafkastore.topic.replication.factor", 3, 1) as i32;
        let timeout = std::time::Duration::from_millis(int("kafkastore.timeout.ms", 500, 1) as u64);
        let init_timeout = std::time::Duration::from_millis(int("kafkastore.init.timeout.ms", 60_000, 1) as u64);
        let mut flag = |key: &str, default: bool| -> bool {
            match get(key) {
                Some(e) => match e.value.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        problems.push(problem(e, format!("'{other}' is not true or false")));
                        default
                    }
                },
                None => default,
            }
        };
        let mode_mutability = flag("mode.mutability", true);
        let leader_eligibility = flag("leader.eligibility", true) && flag("master.eligibility", true);
        let compatibility = match get("schema.compatibility.level").or_else(|| get("avro.compatibility.level")) {
            Some(e) => Compatibility::parse(e.value.trim()).unwrap_or_else(|_| {
                problems.push(problem(e, format!("'{}' is not one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE", e.value)));
                Compatibility::Backward
            }),
            None => Compatibility::Backward,
        };
        let topic = get("kafkastore.topic").map_or("_schemas".to_string(), |e| e.value.trim().to_string());
        if topic.is_empty() {
            problems.push(format!("{file}: kafkastore.topic is empty"));
        }
        let host_name = get("host.name").map(|e| e.value.trim().to_string()).filter(|h| !h.is_empty());
        let group_id = get("schema.registry.group.id").map_or_else(|| "schema-registry".to_string(), |e| e.value.trim().to_string());
        let list = |key: &str, default: &str| -> BTreeSet<String> { get(key).map_or(default, |e| e.value.as_str()).split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect() };
        let mut auth = AuthConfig {
            realm: get("authentication.realm").map_or_else(|| "SchemaRegistry".to_string(), |e| e.value.trim().to_string()),
            users_file: get("authentication.basic.users.file").map(|e| e.value.trim().to_string()),
            tokens_file: get("authentication.bearer.tokens.file").map(|e| e.value.trim().to_string()),
            roles: list("authentication.roles", "*"),
            readonly_roles: list("authentication.readonly.roles", "readonly"),
            skip_paths: list("authentication.skip.paths", "").into_iter().collect(),
            ..AuthConfig::default()
        };
        if let Some(e) = get("authentication.method") {
            for method in e.value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                match method.to_ascii_uppercase().as_str() {
                    "NONE" => {}
                    "BASIC" => auth.basic = true,
                    "BEARER" => auth.bearer = true,
                    _ => problems.push(problem(e, format!("'{method}' is not one of NONE, BASIC, BEARER"))),
                }
            }
            if auth.basic && auth.users_file.is_none() {
                problems.push(problem(e, "BASIC needs authentication.basic.users.file (lines 'user: password[,role…]')".into()));
            }
            if auth.bearer && auth.tokens_file.is_none() {
                problems.push(problem(e, "BEARER needs authentication.bearer.tokens.file (lines 'name: token[,role…]')".into()));
            }
        }

        const OWN: &[&str] = &[
            "listeners", "kafkastore.bootstrap.servers", "kafkastore.topic", "kafkastore.topic.replication.factor", "kafkastore.timeout.ms",
            "kafkastore.init.timeout.ms", "mode.mutability", "leader.eligibility", "master.eligibility", "schema.compatibility.level",
            "avro.compatibility.level", "host.name", "schema.registry.group.id", "authentication.method", "authentication.realm", "authentication.roles",
            "authentication.readonly.roles", "authentication.skip.paths", "authentication.basic.users.file", "authentication.bearer.tokens.file",
        ];
        for e in &entries {
            if OWN.contains(&e.key.as_str()) || ACCEPTED.contains(&e.key.as_str()) {
                continue;
            }
            // Every other `kafkastore.<property>` is a client property of the store's clients.
            if let Some(property) = e.key.strip_prefix("kafkastore.") {
                if property == "sasl.jaas.config" {
                    match ClusterClient::translate_jaas(&e.value) {
                        Some(pairs) => store.common.extend(pairs),
                        None => problems.push(problem(e, "only the PLAIN and SCRAM login modules can be translated for librdkafka".into())),
                    }
                    continue;
                }
                match ClusterClient::check_property(property, &e.value) {
                    None => store.common.push((property.to_string(), e.value.clone())),
                    Some(p) if p.kind == PropertyProblemKind::Unknown => unknown.push(Unknown { line: e.line, key: e.key.clone() }),
                    Some(p) => {
                        let shown = if ferry_kafka::is_sensitive_key(property) { "(hidden)".to_string() } else { format!("'{}'", e.value) };
                        problems.push(problem(e, format!("{shown} refused by the Kafka client: {}", p.reason)));
                    }
                }
                continue;
            }
            unknown.push(Unknown { line: e.line, key: e.key.clone() });
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let config = RegistryConfig {
            listeners,
            store,
            topic,
            replication_factor,
            timeout,
            init_timeout,
            compatibility,
            mode_mutability,
            leader_eligibility,
            host_name,
            group_id,
            auth,
        };
        Ok((config, unknown))
    }

    /// The mode a fresh registry starts in.
    pub fn default_mode(&self) -> Mode {
        Mode::ReadWrite
    }
}

/// `http://host:port` (or `host:port`) as a socket address; `https` is refused for now.
fn parse_listener(url: &str) -> Result<SocketAddr, String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => return Err(format!("listener '{url}': only http:// is supported (not {scheme})")),
        None => url,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("listener '{url}' has no port"))?;
    let port: u16 = port.parse().map_err(|_| format!("listener '{url}': '{port}' is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "" | "0.0.0.0" => [0, 0, 0, 0].into(),
        "localhost" => [127, 0, 0, 1].into(),
        h => h.parse().map_err(|_| format!("listener '{url}': '{h}' is not an IP address or localhost"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confluents_sample_file_reads() {
        let text = "listeners=http://127.0.0.1:18081\nkafkastore.bootstrap.servers=PLAINTEXT://127.0.0.1:9092\nkafkastore.topic=_schemas\ndebug=false\n\
                    kafkastore.security.protocol=SASL_PLAINTEXT\nkafkastore.sasl.mechanism=PLAIN\n\
                    kafkastore.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"p\";\n\
                    schema.compatibility.level=full_transitive\nkafkastore.topic.replication.factor=1\n";
        let (c, unknown) = RegistryConfig::parse("sr.properties", text).unwrap();
        assert_eq!(c.listeners, vec!["127.0.0.1:18081".parse().unwrap()]);
        assert_eq!(c.store.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!((c.topic.as_str(), c.replication_factor, c.compatibility), ("_schemas", 1, Compatibility::FullTransitive));
        assert!(c.store.common.contains(&("sasl.username".into(), "u".into())));
        assert!(c.store.common.contains(&("security.protocol".into(), "SASL_PLAINTEXT".into())));
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    #[test]
    fn problems_name_file_line_and_key_and_unknown_keys_are_returned() {
        let text = "listeners=https://0.0.0.0:8081\nkafkastore.bootstrap.servers=127.0.0.1:9092\nschema.compatibility.level=SIDEWAYS\nkafkastore.timeout.ms=soon\nkafkastore.acks=maybe\n";
        let e = RegistryConfig::parse("sr.properties", text).unwrap_err();
        let all = e.to_string();
        assert!(all.contains("sr.properties:1: listeners: listener 'https://0.0.0.0:8081': only http://"), "{all}");
        assert!(all.contains("sr.properties:3: schema.compatibility.level: 'SIDEWAYS'"), "{all}");
        assert!(all.contains("sr.properties:4: kafkastore.timeout.ms"), "{all}");
        assert!(all.contains("sr.properties:5: kafkastore.acks"), "{all}");
        let (_, unknown) = RegistryConfig::parse("f", "kafkastore.bootstrap.servers=h:1\nfoo.bar=1\nkafkastore.no.such.thing=2\n").unwrap();
        assert_eq!(unknown, vec![Unknown { line: 2, key: "foo.bar".into() }, Unknown { line: 3, key: "kafkastore.no.such.thing".into() }]);
        assert!(RegistryConfig::parse("f", "listeners=http://127.0.0.1:1\n").unwrap_err().to_string().contains("kafkastore.bootstrap.servers is required"));
    }
}
