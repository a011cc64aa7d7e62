use std::fmt;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;
use rdkafka::ClientConfig;

/// Which kind of client a configuration is built for. MM2 files scope properties to a role
/// with `<alias>.consumer.*`, `<alias>.producer.*` and `<alias>.admin.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    Consumer,
    Producer,
    Admin,
}

impl ClientRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Consumer => "consumer",
            ClientRole::Producer => "producer",
            ClientRole::Admin => "admin",
        }
    }
}

/// How to reach one Kafka cluster: its alias, bootstrap servers and the client properties
/// passed through to librdkafka (common ones and per-role overrides).
#[derive(Clone, Default)]
pub struct ClusterClient {
    pub alias: String,
    pub bootstrap_servers: String,
    /// Properties for every client of this cluster (`<alias>.<property>`).
    pub common: Vec<(String, String)>,
    pub consumer: Vec<(String, String)>,
    pub producer: Vec<(String, String)>,
    pub admin: Vec<(String, String)>,
    /// The cluster-wide keys the file set for this cluster (`<alias>.<key>`), which win over
    /// the same key set at the top level.
    pub set_common: Vec<String>,
}

/// A client property librdkafka refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyProblem {
    pub key: String,
    pub kind: PropertyProblemKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyProblemKind {
    /// librdkafka has no such property (often a Java-client-only setting).
    Unknown,
    /// The property exists but the value is not accepted.
    Invalid,
}

impl ClusterClient {
    pub fn new(alias: impl Into<String>, bootstrap_servers: impl Into<String>) -> Self {
        ClusterClient {
            alias: alias.into(),
            bootstrap_servers: bootstrap_servers.into(),
            ..Default::default()
        }
    }

    /// The librdkafka configuration for a client of `role`: bootstrap servers, a client id
    /// naming Ferry and the cluster, the common properties, then the role's overrides.
    pub fn client_config(&self, role: ClientRole) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("client.id", format!("ferry-{}-{}", self.alias, role.as_str()));
        for (key, value) in self.common.iter().chain(self.role_properties(role)) {
            config.set(key, value);
        }
        config
    }

    /// Like [`client_config`](Self::client_config), with Ferry's `defaults` underneath: any
    /// property the user set for this cluster or role wins over a default.
    pub fn client_config_with_defaults(&self, role: ClientRole, defaults: &[(&str, &str)]) -> ClientConfig {
        // Built from the properties themselves: rdkafka's `config_map()` is a sanitized view
        // (passwords replaced), so copying a built config would send a placeholder password.
        let mut config = ClientConfig::new();
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("client.id", format!("ferry-{}-{}", self.alias, role.as_str()));
        for (key, value) in self.common.iter().chain(self.role_properties(role)) {
            config.set(key, value);
        }
        config
    }

    /// Whether the file set `key` for this cluster itself. A JAAS config and the credentials it
    /// translates to count as one setting.
    pub fn sets_common(&self, key: &str) -> bool {
        let credentials = ["sasl.jaas.config", "sasl.username", "sasl.password"];
        self.set_common.iter().any(|k| k == key || (credentials.contains(&key) && credentials.contains(&k.as_str())))
    }

    fn role_properties(&self, role: ClientRole) -> &[(String, String)] {
        match role {
            ClientRole::Consumer => &self.consumer,
            ClientRole::Producer => &self.producer,
            ClientRole::Admin => &self.admin,
        }
    }

    /// Checks one property against librdkafka without creating a client or touching the
    /// network. `Ok(None)` when accepted.
    pub fn check_property(key: &str, value: &str) -> Option<PropertyProblem> {
        let mut config = ClientConfig::new();
        config.set(key, value);
        match config.create_native_config() {
            Ok(_) => None,
            Err(KafkaError::ClientConfig(res, reason, _, _)) => Some(PropertyProblem {
                key: key.to_string(),
                kind: if res == RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN {
                    PropertyProblemKind::Unknown
                } else {
                    PropertyProblemKind::Invalid
                },
                reason,
            }),
            Err(other) => Some(PropertyProblem {
                key: key.to_string(),
                kind: PropertyProblemKind::Invalid,
                reason: other.to_string(),
            }),
        }
    }

    /// Translates the Java client's `sasl.jaas.config` (PLAIN and SCRAM login modules) into
    /// librdkafka's `sasl.username` / `sasl.password`, so MM2 files work unchanged.
    ///
    /// The syntax is Java's JAAS entry: `<LoginModule class> <flag> [name=value ...];`, values
    /// quoted with `"` (a backslash escapes the next character) or bare tokens.
    pub fn translate_jaas(value: &str) -> Option<Vec<(String, String)>> {
        let options = parse_jaas(value)?;
        let module = options.module.rsplit('.').next().unwrap_or_default();
        if !["PlainLoginModule", "ScramLoginModule"].contains(&module) {
            return None;
        }
        let get = |name: &str| options.options.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        Some(vec![("sasl.username".to_string(), get("username")?), ("sasl.password".to_string(), get("password")?)])
    }
}

/// One JAAS login module entry.
struct JaasEntry {
    module: String,
    options: Vec<(String, String)>,
}

/// Parses a single JAAS entry; None when it is not well formed.
fn parse_jaas(text: &str) -> Option<JaasEntry> {
    let mut chars = text.chars().peekable();
    let token = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<String> {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut out = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => return Some(out),
                    '\\' => out.push(chars.next()?),
                    c => out.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' || c == ';' || c == '"' {
                break;
            }
            out.push(c);
            chars.next();
        }
        Some(out)
    };
    let module = token(&mut chars)?;
    let flag = token(&mut chars)?;
    if module.is_empty() || !["required", "requisite", "sufficient", "optional"].contains(&flag.to_ascii_lowercase().as_str()) {
        return None;
    }
    let mut options = Vec::new();
    loop {
        let name = token(&mut chars)?;
        if name.is_empty() {
            // The entry ends with ';' (and nothing but whitespace after it).
            return (chars.next() == Some(';') && chars.all(char::is_whitespace)).then_some(JaasEntry { module, options });
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return None;
        }
        let value = token(&mut chars)?;
        options.push((name, value));
    }
}

/// Whether two secrets (tokens, passwords) are equal, in time independent of where the first
/// difference is (the length aside).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a property's value is a secret that must never be printed.
pub fn is_sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key.contains("jaas") || key.ends_with(".key.pem")
        || key.contains("token") || key.contains("oauthbearer.config")
}

impl fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted<'a>(&'a [(String, String)]);
        impl fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(k, v)| {
                        (k, if is_sensitive_key(k) { "***" } else { v.as_str() })
                    }))
                    .finish()
            }
        }
        f.debug_struct("ClusterClient")
            .field("alias", &self.alias)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("common", &Redacted(&self.common))
            .field("consumer", &Redacted(&self.consumer))
            .field("producer", &Redacted(&self.producer))
            .field("admin", &Redacted(&self.admin))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_overrides_win_over_common_properties() {
        let mut c = ClusterClient::new("a", "127.0.0.1:1");
        c.common.push(("linger.ms".into(), "5".into()));
        c.producer.push(("linger.ms".into(), "20".into()));
        let producer = c.client_config(ClientRole::Producer);
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("client.id"), Some("ferry-a-producer"));
        let consumer = c.client_config(ClientRole::Consumer);
        assert_eq!(consumer.get("linger.ms"), Some("5"));
        let with_defaults = c.client_config_with_defaults(ClientRole::Producer, &[("linger.ms", "1"), ("acks", "all")]);
        assert_eq!(with_defaults.get("linger.ms"), Some("20"), "the user's setting wins");
        assert_eq!(with_defaults.get("acks"), Some("all"), "defaults fill the rest");
        assert_eq!(consumer.get("bootstrap.servers"), Some("127.0.0.1:1"));
        // Secrets reach the client as written (rdkafka's config_map() is a sanitized view).
        c.common.push(("sasl.password".into(), "hunter2".into()));
        let secret = c.client_config_with_defaults(ClientRole::Consumer, &[("acks", "all")]);
        assert_eq!(secret.get("sasl.password"), Some("hunter2"));
    }

    #[test]
    fn librdkafka_validates_properties_without_a_cluster() {
        assert_eq!(ClusterClient::check_property("security.protocol", "SASL_SSL"), None);
        let unknown = ClusterClient::check_property("metric.reporters", "x").unwrap();
        assert_eq!(unknown.kind, PropertyProblemKind::Unknown);
        // librdkafka knows the Java truststore setting and says what to use instead.
        let jks = ClusterClient::check_property("ssl.truststore.location", "/x.jks").unwrap();
        assert_eq!(jks.kind, PropertyProblemKind::Invalid);
        assert!(jks.reason.contains("ssl.ca.location"), "{}", jks.reason);
        let invalid = ClusterClient::check_property("security.protocol", "carrier-pigeon").unwrap();
        assert_eq!(invalid.kind, PropertyProblemKind::Invalid);
        assert!(invalid.reason.contains("security.protocol"), "{}", invalid.reason);
    }

    #[test]
    fn jaas_plain_and_scram_translate_to_librdkafka_credentials() {
        let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="alice" password="s3cr=t";"#;
        let props = ClusterClient::translate_jaas(jaas).unwrap();
        assert_eq!(props[0], ("sasl.username".to_string(), "alice".to_string()));
        assert_eq!(props[1], ("sasl.password".to_string(), "s3cr=t".to_string()));
        assert!(ClusterClient::translate_jaas("com.sun.security.auth.module.Krb5LoginModule required;").is_none());
        // Java's escapes inside quotes; bare values; names that end like another.
        let jaas = r#"org.apache.kafka.common.security.scram.ScramLoginModule required
            tokenauth=false xusername="mallory" username=bob password="a\"b\\c;d";"#;
        let props = ClusterClient::translate_jaas(jaas).unwrap();
        assert_eq!(props[0].1, "bob");
        assert_eq!(props[1].1, r#"a"b\c;d"#);
        for broken in [
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p""#, // no ';'
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p;"#, // unclosed quote
            r#"org.apache.kafka.common.security.plain.PlainLoginModule username="u" password="p";"#, // no flag
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="u";"#, // no password
        ] {
            assert!(ClusterClient::translate_jaas(broken).is_none(), "{broken}");
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let mut c = ClusterClient::new("a", "h:1");
        c.common.push(("sasl.password".into(), "hunter2".into()));
        c.common.push(("sasl.username".into(), "alice".into()));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"));
        assert!(is_sensitive_key("sasl.oauthbearer.config"));
    }
}
