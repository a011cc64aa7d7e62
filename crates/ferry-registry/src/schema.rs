//! Schema types, compatibility levels and modes as Confluent names them, and the canonical text
//! that decides whether two registrations are the same schema.

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaType {
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    /// `schemaType` as a request or a stored value gives it (absent: Avro).
    pub fn from_name(name: Option<&str>) -> Result<SchemaType, ApiError> {
        match name.map(str::to_ascii_uppercase).as_deref() {
            None | Some("AVRO") => Ok(SchemaType::Avro),
            Some("JSON") => Ok(SchemaType::Json),
            Some("PROTOBUF") => Ok(SchemaType::Protobuf),
            Some(other) => Err(ApiError::invalid_schema(&format!("unknown schema type '{other}'"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }

    /// As stored in `_schemas` and answered by the API: absent for Avro.
    pub fn stored_name(self) -> Option<&'static str> {
        (self != SchemaType::Avro).then(|| self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compatibility {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    pub const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    pub fn parse(name: &str) -> Result<Compatibility, ApiError> {
        Compatibility::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name)).ok_or_else(|| ApiError::invalid_compatibility(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn transitive(self) -> bool {
        matches!(self, Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
    ReadOnlyOverride,
    Import,
}

impl Mode {
    pub fn parse(name: &str) -> Result<Mode, ApiError> {
        [Mode::ReadWrite, Mode::ReadOnly, Mode::ReadOnlyOverride, Mode::Import].into_iter().find(|m| m.name().eq_ignore_ascii_case(name)).ok_or_else(|| ApiError::invalid_mode(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::ReadWrite => "READWRITE",
            Mode::ReadOnly => "READONLY",
            Mode::ReadOnlyOverride => "READONLY_OVERRIDE",
            Mode::Import => "IMPORT",
        }
    }
}

/// The text two registrations are compared by. Avro and JSON Schema: the JSON without
/// insignificant whitespace, members in their given order (as Avro's Java `Schema.toString`
/// and Jackson print them). Protobuf: the parsed file printed ([`crate::protobuf::canonical`];
/// a base64 descriptor becomes text too), or, for text that does not parse (refused on
/// registration), its lines trimmed.
pub fn canonical(schema_type: SchemaType, text: &str) -> String {
    match schema_type {
        SchemaType::Avro | SchemaType::Json => compact_json(text),
        SchemaType::Protobuf => crate::protobuf::canonical(text).unwrap_or_else(|| text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")),
    }
}

/// `normalize=true`: Avro and JSON Schema with every object's members in name order (arrays,
/// such as record fields, keep theirs), so two spellings of one schema get one id; Protobuf is
/// printed canonically anyway. Text that is not JSON is left as it is (validation refuses it).
pub fn normalize(schema_type: SchemaType, text: &str) -> String {
    match schema_type {
        SchemaType::Avro | SchemaType::Json => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => sorted(v).to_string(),
            Err(_) => text.to_string(),
        },
        SchemaType::Protobuf => crate::protobuf::canonical(text).unwrap_or_else(|| text.to_string()),
    }
}

/// Members inserted in name order, whichever order the map keeps (serde_json's `preserve_order`
/// keeps insertion order).
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut members: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(members.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// JSON text without whitespace outside strings (order and escapes kept as written).
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Checks that a schema is well-formed for its type on its own: 42201 with the parser's reason
/// if not. Avro and JSON Schema must be JSON; Protobuf must parse. (Parsing with references
/// resolved is [`crate::compat::parse`].)
pub fn validate(schema_type: SchemaType, text: &str) -> Result<(), ApiError> {
    match schema_type {
        SchemaType::Avro | SchemaType::Json => serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map(|_| ())
            .map_err(|e| ApiError::invalid_schema(&format!("invalid {} schema: {e}", schema_type.name()))),
        SchemaType::Protobuf => crate::protobuf::parse(text).map(|_| ()).map_err(|e| ApiError::invalid_schema(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_drops_whitespace_outside_strings_only() {
        let a = "{ \"type\" : \"record\",\n \"name\": \"a b\", \"doc\": \"x\\\" y\" }";
        assert_eq!(canonical(SchemaType::Avro, a), r#"{"type":"record","name":"a b","doc":"x\" y"}"#);
        assert_ne!(canonical(SchemaType::Avro, r#"{"a":1,"b":2}"#), canonical(SchemaType::Avro, r#"{"b":2,"a":1}"#));
    }

    #[test]
    fn normalize_orders_members_and_keeps_arrays() {
        let a = r#"{"type":"record","name":"A","fields":[{"type":"int","name":"b"},{"name":"a","type":"long"}]}"#;
        let b = r#"{ "name": "A", "fields": [{"name":"b","type":"int"},{"name":"a","type":"long"}], "type": "record" }"#;
        assert_eq!(normalize(SchemaType::Avro, a), normalize(SchemaType::Avro, b));
        assert_eq!(normalize(SchemaType::Avro, a), r#"{"fields":[{"name":"b","type":"int"},{"name":"a","type":"long"}],"name":"A","type":"record"}"#);
        assert_eq!(normalize(SchemaType::Json, "{"), "{", "not JSON: left for validation to refuse");
    }

    #[test]
    fn names_parse_as_confluent_spells_them() {
        assert_eq!(Compatibility::parse("backward_transitive").unwrap(), Compatibility::BackwardTransitive);
        assert_eq!(Compatibility::parse("SIDEWAYS").unwrap_err().error_code, 42203);
        assert_eq!(Mode::parse("IMPORT").unwrap(), Mode::Import);
        assert_eq!(Mode::parse("x").unwrap_err().error_code, 42204);
        assert_eq!(SchemaType::from_name(None).unwrap(), SchemaType::Avro);
        assert_eq!(SchemaType::from_name(Some("XML")).unwrap_err().error_code, 42201);
        assert!(validate(SchemaType::Avro, "{\"type\": ").is_err());
        assert!(validate(SchemaType::Json, r#"{"type":"object"}"#).is_ok());
    }
}
