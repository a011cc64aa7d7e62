//! The records of the `_schemas` topic, byte-compatible with Confluent Schema Registry's
//! `KafkaStore`: JSON keys with the field order `keytype, subject, version, magic`, JSON values,
//! and tombstones for permanent deletes. A registry started on a `_schemas` topic that
//! Confluent wrote serves it, and what Ferry writes is what Confluent would write.

use serde::{Deserialize, Serialize};

/// A record key. Confluent writes `magic` 1 for schema keys and 0 for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Schema { subject: String, version: i32 },
    /// `None`: the global setting.
    Config { subject: Option<String> },
    Mode { subject: Option<String> },
    /// Written so a reader knows it has read up to this point.
    Noop,
    DeleteSubject { subject: String },
    ClearSubject { subject: String },
}

/// The JSON shape of every key (field order matters: it is part of the compacted key bytes).
#[derive(Serialize, Deserialize)]
struct RawKey {
    keytype: String,
    #[serde(default, skip_serializing_if = "Skip::skip")]
    subject: Skip<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i32>,
    magic: i32,
}

/// A field written only for some key types (`subject` is `null` for global configs, absent for
/// NOOP).
#[derive(Default)]
struct Skip<T>(Option<T>);

impl<T> Skip<T> {
    fn skip(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: Serialize> Serialize for Skip<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Skip<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Skip(Some(T::deserialize(d)?)))
    }
}

impl Key {
    pub fn encode(&self) -> Vec<u8> {
        let (keytype, subject, version, magic) = match self {
            Key::Schema { subject, version } => ("SCHEMA", Some(Some(subject.clone())), Some(*version), 1),
            Key::Config { subject } => ("CONFIG", Some(subject.clone()), None, 0),
            Key::Mode { subject } => ("MODE", Some(subject.clone()), None, 0),
            Key::Noop => ("NOOP", None, None, 0),
            Key::DeleteSubject { subject } => ("DELETE_SUBJECT", Some(Some(subject.clone())), None, 0),
            Key::ClearSubject { subject } => ("CLEAR_SUBJECT", Some(Some(subject.clone())), None, 0),
        };
        let raw = RawKey { keytype: keytype.to_string(), subject: Skip(subject), version, magic };
        serde_json::to_vec(&raw).expect("a key always serializes")
    }

    /// Decodes a key in any field order (Karapace once wrote another); `None` for a key type
    /// this registry does not know (skipped, as Confluent skips them).
    pub fn decode(bytes: &[u8]) -> Result<Option<Key>, String> {
        let raw: RawKey = serde_json::from_slice(bytes).map_err(|e| format!("invalid key: {e}"))?;
        let subject = raw.subject.0.flatten();
        let named = |what: &str| subject.clone().ok_or_else(|| format!("{what} key without a subject"));
        Ok(Some(match raw.keytype.as_str() {
            "SCHEMA" => Key::Schema { subject: named("schema")?, version: raw.version.ok_or("schema key without a version")? },
            "CONFIG" => Key::Config { subject },
            "MODE" => Key::Mode { subject },
            "NOOP" => Key::Noop,
            "DELETE_SUBJECT" => Key::DeleteSubject { subject: named("delete-subject")? },
            "CLEAR_SUBJECT" => Key::ClearSubject { subject: named("clear-subject")? },
            _ => return Ok(None),
        }))
    }
}

/// A schema's reference to another subject's version (by the name the schema imports it under).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// The value of a schema key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValue {
    pub subject: String,
    pub version: i32,
    pub id: i64,
    pub schema: String,
    /// Absent for Avro.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    pub compatibility_level: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    pub subject: String,
    /// The latest version deleted.
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearSubjectValue {
    pub subject: String,
}

/// A decoded record: its key and value (`None`: a tombstone, a permanent delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Schema { subject: String, version: i32, value: Option<SchemaValue> },
    Config { subject: Option<String>, value: Option<ConfigValue> },
    Mode { subject: Option<String>, value: Option<ModeValue> },
    Noop,
    DeleteSubject { subject: String, value: Option<DeleteSubjectValue> },
    ClearSubject { subject: String, value: Option<ClearSubjectValue> },
}

impl Record {
    /// Decodes a `_schemas` record; `Ok(None)` for a key type this registry does not know.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Record>, String> {
        fn parse<'a, T: Deserialize<'a>>(value: Option<&'a [u8]>, what: &str) -> Result<Option<T>, String> {
            value.map(|v| serde_json::from_slice(v).map_err(|e| format!("invalid {what} value: {e}"))).transpose()
        }
        let Some(key) = Key::decode(key)? else { return Ok(None) };
        Ok(Some(match key {
            Key::Schema { subject, version } => {
                let value: Option<SchemaValue> = parse(value, "schema")?;
                if let Some(v) = &value {
                    if v.subject != subject || v.version != version {
                        return Err(format!("schema value for {}/{} under the key {subject}/{version}", v.subject, v.version));
                    }
                }
                Record::Schema { subject, version, value }
            }
            Key::Config { subject } => Record::Config { subject, value: parse(value, "config")? },
            Key::Mode { subject } => Record::Mode { subject, value: parse(value, "mode")? },
            Key::Noop => Record::Noop,
            Key::DeleteSubject { subject } => Record::DeleteSubject { subject, value: parse(value, "delete-subject")? },
            Key::ClearSubject { subject } => Record::ClearSubject { subject, value: parse(value, "clear-subject")? },
        }))
    }

    pub fn key(&self) -> Key {
        match self {
            Record::Schema { subject, version, .. } => Key::Schema { subject: subject.clone(), version: *version },
            Record::Config { subject, .. } => Key::Config { subject: subject.clone() },
            Record::Mode { subject, .. } => Key::Mode { subject: subject.clone() },
            Record::Noop => Key::Noop,
            Record::DeleteSubject { subject, .. } => Key::DeleteSubject { subject: subject.clone() },
            Record::ClearSubject { subject, .. } => Key::ClearSubject { subject: subject.clone() },
        }
    }

    /// The record's key and value bytes (`None`: a tombstone).
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        fn json<T: Serialize>(v: &Option<T>) -> Option<Vec<u8>> {
            v.as_ref().map(|v| serde_json::to_vec(v).expect("a value always serializes"))
        }
        let value = match self {
            Record::Schema { value, .. } => json(value),
            Record::Config { value, .. } => json(value),
            Record::Mode { value, .. } => json(value),
            Record::Noop => None,
            Record::DeleteSubject { value, .. } => json(value),
            Record::ClearSubject { value, .. } => json(value),
        };
        (self.key().encode(), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Byte strings as Confluent's KafkaStore writes them (SchemaRegistryKey subclasses with
    // @JsonPropertyOrder({"keytype", "subject", "version", "magic"})).
    #[test]
    fn keys_are_byte_for_byte_confluents() {
        assert_eq!(Key::Schema { subject: "orders-value".into(), version: 3 }.encode(), br#"{"keytype":"SCHEMA","subject":"orders-value","version":3,"magic":1}"#);
        assert_eq!(Key::Config { subject: None }.encode(), br#"{"keytype":"CONFIG","subject":null,"magic":0}"#);
        assert_eq!(Key::Config { subject: Some("s".into()) }.encode(), br#"{"keytype":"CONFIG","subject":"s","magic":0}"#);
        assert_eq!(Key::Mode { subject: None }.encode(), br#"{"keytype":"MODE","subject":null,"magic":0}"#);
        assert_eq!(Key::Noop.encode(), br#"{"keytype":"NOOP","magic":0}"#);
        assert_eq!(Key::DeleteSubject { subject: "s".into() }.encode(), br#"{"keytype":"DELETE_SUBJECT","subject":"s","magic":0}"#);
        assert_eq!(Key::ClearSubject { subject: "s".into() }.encode(), br#"{"keytype":"CLEAR_SUBJECT","subject":"s","magic":0}"#);
    }

    #[test]
    fn keys_decode_in_any_field_order_and_unknown_types_are_skipped() {
        let k = Key::decode(br#"{"magic":1,"version":2,"subject":"s","keytype":"SCHEMA"}"#).unwrap();
        assert_eq!(k, Some(Key::Schema { subject: "s".into(), version: 2 }));
        assert_eq!(Key::decode(br#"{"keytype":"CONTEXT","tenant":"x","magic":0}"#).unwrap(), None);
        assert!(Key::decode(br#"{"keytype":"SCHEMA","subject":"s","magic":1}"#).is_err(), "no version");
        assert!(Key::decode(b"not json").is_err());
    }

    #[test]
    fn schema_values_are_confluents_and_round_trip() {
        let avro = SchemaValue { subject: "s".into(), version: 1, id: 7, schema: r#""string""#.into(), schema_type: None, references: vec![], deleted: false };
        let (key, value) = Record::Schema { subject: "s".into(), version: 1, value: Some(avro.clone()) }.encode();
        assert_eq!(value.as_deref(), Some(&br#"{"subject":"s","version":1,"id":7,"schema":"\"string\"","deleted":false}"#[..]));
        assert_eq!(Record::decode(&key, value.as_deref()).unwrap(), Some(Record::Schema { subject: "s".into(), version: 1, value: Some(avro) }));
        let proto = SchemaValue {
            schema_type: Some("PROTOBUF".into()),
            references: vec![Reference { name: "other.proto".into(), subject: "other".into(), version: 2 }],
            ..SchemaValue { subject: "p".into(), version: 4, id: 9, schema: "syntax = \"proto3\";".into(), schema_type: None, references: vec![], deleted: true }
        };
        let v = serde_json::to_string(&proto).unwrap();
        assert_eq!(v, r#"{"subject":"p","version":4,"id":9,"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF","references":[{"name":"other.proto","subject":"other","version":2}],"deleted":true}"#);
        // A tombstone is a permanent delete.
        assert_eq!(Record::decode(&key, None).unwrap(), Some(Record::Schema { subject: "s".into(), version: 1, value: None }));
    }

    #[test]
    fn a_value_that_contradicts_its_key_is_refused() {
        let key = Key::Schema { subject: "a".into(), version: 1 }.encode();
        assert!(Record::decode(&key, Some(br#"{"subject":"b","version":1,"id":1,"schema":"\"int\""}"#)).is_err());
        assert!(Record::decode(&key, Some(b"{}")).is_err());
    }

    #[test]
    fn config_mode_and_subject_records() {
        let (k, v) = Record::Config { subject: None, value: Some(ConfigValue { compatibility_level: "FULL".into() }) }.encode();
        assert_eq!(v.as_deref(), Some(&br#"{"compatibilityLevel":"FULL"}"#[..]));
        assert!(matches!(Record::decode(&k, v.as_deref()).unwrap(), Some(Record::Config { subject: None, value: Some(_) })));
        let (_, v) = Record::Mode { subject: Some("s".into()), value: Some(ModeValue { mode: "READONLY".into() }) }.encode();
        assert_eq!(v.as_deref(), Some(&br#"{"mode":"READONLY"}"#[..]));
        let (_, v) = Record::DeleteSubject { subject: "s".into(), value: Some(DeleteSubjectValue { subject: "s".into(), version: 3 }) }.encode();
        assert_eq!(v.as_deref(), Some(&br#"{"subject":"s","version":3}"#[..]));
        assert_eq!(Record::Noop.encode(), (br#"{"keytype":"NOOP","magic":0}"#.to_vec(), None));
    }
}
