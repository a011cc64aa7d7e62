//! Whether a new schema may follow earlier ones under a compatibility level. A different schema
//! type is never compatible, and the same canonical schema always is. BACKWARD reads old data
//! with the new schema, FORWARD new data with the old one, FULL both; the `_TRANSITIVE` levels
//! check every live version, the others the latest. Avro is judged with the Java library's rules
//! ([`crate::avro`]), JSON Schema and Protobuf with Confluent's diff kinds
//! ([`crate::json_schema`], [`crate::protobuf`]). References resolve transitively.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::avro;
use crate::error::ApiError;
use crate::json_schema;
use crate::protobuf;
use crate::records::Reference;
use crate::schema::{canonical, Compatibility, SchemaType};
use crate::state::Schema;

/// Finds a referenced schema (subject and version).
pub type Resolve<'a> = &'a dyn Fn(&Reference) -> Option<Schema>;

/// One change between two schemas: where, which kind (Confluent's name), and whether readers
/// survive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub path: String,
    pub kind: &'static str,
    pub compatible: bool,
}

/// How deep references may nest (a cycle is refused rather than followed).
const MAX_REFERENCE_DEPTH: usize = 32;

/// Every schema `references` name, transitively, as (reference name, text): each one after the
/// schemas it references, once. 42201 when one does not exist or they nest too deep.
pub fn referenced(references: &[Reference], resolve: Resolve<'_>) -> Result<Vec<(String, String)>, ApiError> {
    fn walk(references: &[Reference], resolve: Resolve<'_>, depth: usize, out: &mut Vec<(String, String)>) -> Result<(), ApiError> {
        if depth > MAX_REFERENCE_DEPTH {
            return Err(ApiError::invalid_schema(&format!("references nest deeper than {MAX_REFERENCE_DEPTH} (a cycle?)")));
        }
        for r in references {
            let found = resolve(r).ok_or_else(|| ApiError::invalid_schema(&format!("reference '{}' names {} version {}, which does not exist", r.name, r.subject, r.version)))?;
            walk(&found.references, resolve, depth + 1, out)?;
            if !out.iter().any(|(name, _)| *name == r.name) {
                out.push((r.name.clone(), found.schema));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(references, resolve, 0, &mut out)?;
    Ok(out)
}

/// A schema parsed for judging, references resolved.
#[derive(Debug)]
pub enum Parsed {
    Avro(avro::Schema),
    Json(json_schema::Document),
    Protobuf(Box<prost_types::FileDescriptorProto>),
}

/// Parses a schema of its type with its references; 42201 with the reason if it is invalid.
pub fn parse(schema_type: SchemaType, schema: &str, references: &[Reference], resolve: Resolve<'_>) -> Result<Parsed, ApiError> {
    let texts = referenced(references, resolve)?;
    let invalid = |e: String| ApiError::invalid_schema(&e);
    match schema_type {
        SchemaType::Avro => {
            let refs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
            avro::Schema::parse(schema, &refs).map(Parsed::Avro).map_err(invalid)
        }
        SchemaType::Json => json_schema::Document::parse(schema, &texts).map(Parsed::Json).map_err(invalid),
        SchemaType::Protobuf => protobuf::compile(schema, &texts).map_err(invalid)?.pop().map(|f| Parsed::Protobuf(Box::new(f))).ok_or_else(|| invalid("nothing compiled".into())),
    }
}

/// Earlier versions parsed once, by id: a schema id names one schema with the same references
/// for ever (ids are never reused, referenced versions cannot be deleted), so an entry never
/// goes stale. Cleared whole when it grows past [`ParsedCache::LIMIT`] entries.
#[derive(Default)]
pub struct ParsedCache {
    entries: Mutex<HashMap<i64, Arc<(String, Parsed)>>>,
}

impl ParsedCache {
    pub const LIMIT: usize = 50_000;

    /// The canonical text and parsed form of schema `id`.
    fn get(&self, id: i64, schema: &Schema, resolve: Resolve<'_>) -> Result<Arc<(String, Parsed)>, ApiError> {
        if let Some(hit) = self.entries.lock().unwrap().get(&id) {
            return Ok(hit.clone());
        }
        let parsed = parse(schema.schema_type, &schema.schema, &schema.references, resolve)?;
        let entry = Arc::new((canonical(schema.schema_type, &schema.schema), parsed));
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= ParsedCache::LIMIT {
            entries.clear();
        }
        entries.insert(id, entry.clone());
        Ok(entry)
    }
}

/// The incompatibilities of `schema` against `against` (version, id, schema; newest first),
/// empty when compatible.
pub fn check(level: Compatibility, schema_type: SchemaType, schema: &str, references: &[Reference], against: &[(i32, i64, &Schema)], resolve: Resolve<'_>, cache: &ParsedCache) -> Result<Vec<String>, ApiError> {
    if level == Compatibility::None {
        return Ok(Vec::new());
    }
    let new = canonical(schema_type, schema);
    let mut parsed = None;
    let backward = matches!(level, Compatibility::Backward | Compatibility::BackwardTransitive | Compatibility::Full | Compatibility::FullTransitive);
    let forward = matches!(level, Compatibility::Forward | Compatibility::ForwardTransitive | Compatibility::Full | Compatibility::FullTransitive);
    let mut messages = Vec::new();
    for (version, id, old) in against {
        if old.schema_type != schema_type {
            messages.push(format!("Incompatible because of different schema type: version {version} is {}, the new schema is {}", old.schema_type.name(), schema_type.name()));
            continue;
        }
        let cached = cache.get(*id, old, resolve).map_err(|e| ApiError::store(&format!("version {version} cannot be parsed: {}", e.message)))?;
        let (old_canonical, old_parsed) = (&cached.0, &cached.1);
        if *old_canonical == new && old.references == references {
            continue;
        }
        if parsed.is_none() {
            parsed = Some(parse(schema_type, schema, references, resolve)?);
        }
        let new = parsed.as_ref().expect("parsed above");
        if backward {
            messages.extend(incompatibilities(new, old_parsed).into_iter().map(|m| format!("version {version}, reading old data with the new schema: {m}")));
        }
        if forward {
            messages.extend(incompatibilities(old_parsed, new).into_iter().map(|m| format!("version {version}, reading new data with the old schema: {m}")));
        }
    }
    Ok(messages)
}

/// What keeps `reader` from reading data written with `writer`.
fn incompatibilities(reader: &Parsed, writer: &Parsed) -> Vec<String> {
    let kinds = |diffs: Vec<Difference>, path: &str| -> Vec<String> {
        diffs.into_iter().filter(|d| !d.compatible).map(|d| format!("Found incompatible change: Difference{{{path}='{}', type={}}}", d.path, d.kind)).collect()
    };
    match (reader, writer) {
        (Parsed::Avro(r), Parsed::Avro(w)) => avro::can_read(r, w),
        (Parsed::Json(r), Parsed::Json(w)) => kinds(json_schema::diff(w, r), "jsonPath"),
        (Parsed::Protobuf(r), Parsed::Protobuf(w)) => kinds(protobuf::diff(w, r), "fullPath"),
        _ => vec!["Incompatible because of different schema type".to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(t: SchemaType, text: &str) -> Schema {
        Schema { schema_type: t, schema: text.into(), references: vec![] }
    }

    #[test]
    fn none_admits_anything_a_type_change_never_and_the_same_schema_always() {
        let none = |_: &Reference| None;
        let old = schema(SchemaType::Avro, r#""string""#);
        assert!(check(Compatibility::None, SchemaType::Json, "{}", &[], &[(1, 1, &old)], &none, &ParsedCache::default()).unwrap().is_empty());
        assert_eq!(check(Compatibility::Backward, SchemaType::Json, "{}", &[], &[(1, 1, &old)], &none, &ParsedCache::default()).unwrap().len(), 1);
        assert!(check(Compatibility::FullTransitive, SchemaType::Avro, r#" "string" "#, &[], &[(1, 1, &old)], &none, &ParsedCache::default()).unwrap().is_empty());
        assert!(check(Compatibility::Backward, SchemaType::Avro, r#""int""#, &[], &[], &none, &ParsedCache::default()).unwrap().is_empty(), "a first version needs no check");
        let json = schema(SchemaType::Json, r#"{"type":"object"}"#);
        let changed = check(Compatibility::Backward, SchemaType::Json, r#"{"type":"string"}"#, &[], &[(1, 1, &json)], &none, &ParsedCache::default()).unwrap();
        assert_eq!(changed, ["version 1, reading old data with the new schema: Found incompatible change: Difference{jsonPath='#', type=TYPE_CHANGED}"]);
    }

    #[test]
    fn avro_levels_read_in_the_right_direction() {
        let none = |_: &Reference| None;
        let int = schema(SchemaType::Avro, r#""int""#);
        // long reads int (new reads old: BACKWARD), int does not read long (FORWARD fails).
        assert!(check(Compatibility::Backward, SchemaType::Avro, r#""long""#, &[], &[(1, 1, &int)], &none, &ParsedCache::default()).unwrap().is_empty());
        let forward = check(Compatibility::Forward, SchemaType::Avro, r#""long""#, &[], &[(1, 1, &int)], &none, &ParsedCache::default()).unwrap();
        assert_eq!(forward.len(), 1, "{forward:?}");
        assert!(forward[0].contains("reading new data with the old schema: TYPE_MISMATCH"), "{forward:?}");
        assert_eq!(check(Compatibility::Full, SchemaType::Avro, r#""long""#, &[], &[(1, 1, &int)], &none, &ParsedCache::default()).unwrap().len(), 1);
        assert_eq!(check(Compatibility::Backward, SchemaType::Avro, r#"{"type":"#, &[], &[(1, 1, &int)], &none, &ParsedCache::default()).unwrap_err().error_code, 42201);
    }
}
