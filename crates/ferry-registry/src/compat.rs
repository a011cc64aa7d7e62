//! Whether a new schema may follow earlier ones under a compatibility level. A different schema
//! type is never compatible, and the same canonical schema always is. Avro is judged with the
//! Java library's rules ([`crate::avro`]): BACKWARD reads old data with the new schema, FORWARD
//! new data with the old one, FULL both. Protobuf and JSON Schema (Confluent's diff rules) are not
//! judged yet: two different such schemas answer 50001 naming the gap, so nothing incompatible
//! is ever accepted silently; a subject at NONE registers anything.

use crate::avro;
use crate::error::ApiError;
use crate::records::Reference;
use crate::schema::{canonical, Compatibility, SchemaType};
use crate::state::Schema;

/// Finds the text of a referenced schema (subject and version).
pub type Resolve<'a> = &'a dyn Fn(&Reference) -> Option<String>;

/// Parses an Avro schema with its references resolved; 42201 with the reason if it is invalid.
pub fn parse_avro(schema: &str, references: &[Reference], resolve: Resolve<'_>) -> Result<avro::Schema, ApiError> {
    let texts: Vec<String> = references
        .iter()
        .map(|r| resolve(r).ok_or_else(|| ApiError::invalid_schema(&format!("reference '{}' names {} version {}, which does not exist", r.name, r.subject, r.version))))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    avro::Schema::parse(schema, &refs).map_err(|e| ApiError::invalid_schema(&e))
}

/// The incompatibilities of `schema` against `against` (newest first), empty when compatible.
pub fn check(level: Compatibility, schema_type: SchemaType, schema: &str, references: &[Reference], against: &[(i32, &Schema)], resolve: Resolve<'_>) -> Result<Vec<String>, ApiError> {
    if level == Compatibility::None {
        return Ok(Vec::new());
    }
    let new = canonical(schema_type, schema);
    let parsed = if schema_type == SchemaType::Avro { Some(parse_avro(schema, references, resolve)?) } else { None };
    let backward = matches!(level, Compatibility::Backward | Compatibility::BackwardTransitive | Compatibility::Full | Compatibility::FullTransitive);
    let forward = matches!(level, Compatibility::Forward | Compatibility::ForwardTransitive | Compatibility::Full | Compatibility::FullTransitive);
    let mut messages = Vec::new();
    for (version, old) in against {
        if old.schema_type != schema_type {
            messages.push(format!("Incompatible because of different schema type: version {version} is {}, the new schema is {}", old.schema_type.name(), schema_type.name()));
        } else if canonical(old.schema_type, &old.schema) == new && old.references == references {
            continue;
        } else if let Some(new) = &parsed {
            let old_parsed = parse_avro(&old.schema, &old.references, resolve).map_err(|e| ApiError::store(&format!("version {version} cannot be parsed: {}", e.message)))?;
            if backward {
                messages.extend(avro::can_read(new, &old_parsed).into_iter().map(|m| format!("version {version}, reading old data with the new schema: {m}")));
            }
            if forward {
                messages.extend(avro::can_read(&old_parsed, new).into_iter().map(|m| format!("version {version}, reading new data with the old schema: {m}")));
            }
        } else {
            return Err(ApiError::new(
                50001,
                format!("judging {} compatibility ({}) between different schemas is not implemented in ferry registry yet; set the subject's compatibility to NONE to register it", schema_type.name(), level.name()),
            ));
        }
    }
    Ok(messages)
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
        assert!(check(Compatibility::None, SchemaType::Json, "{}", &[], &[(1, &old)], &none).unwrap().is_empty());
        assert_eq!(check(Compatibility::Backward, SchemaType::Json, "{}", &[], &[(1, &old)], &none).unwrap().len(), 1);
        assert!(check(Compatibility::FullTransitive, SchemaType::Avro, r#" "string" "#, &[], &[(1, &old)], &none).unwrap().is_empty());
        assert!(check(Compatibility::Backward, SchemaType::Avro, r#""int""#, &[], &[], &none).unwrap().is_empty(), "a first version needs no check");
        let json = schema(SchemaType::Json, r#"{"type":"object"}"#);
        assert_eq!(check(Compatibility::Backward, SchemaType::Json, r#"{"type":"string"}"#, &[], &[(1, &json)], &none).unwrap_err().error_code, 50001, "not judged yet: said, never accepted");
    }

    #[test]
    fn avro_levels_read_in_the_right_direction() {
        let none = |_: &Reference| None;
        let int = schema(SchemaType::Avro, r#""int""#);
        // long reads int (new reads old: BACKWARD), int does not read long (FORWARD fails).
        assert!(check(Compatibility::Backward, SchemaType::Avro, r#""long""#, &[], &[(1, &int)], &none).unwrap().is_empty());
        let forward = check(Compatibility::Forward, SchemaType::Avro, r#""long""#, &[], &[(1, &int)], &none).unwrap();
        assert_eq!(forward.len(), 1, "{forward:?}");
        assert!(forward[0].contains("reading new data with the old schema: TYPE_MISMATCH"), "{forward:?}");
        assert_eq!(check(Compatibility::Full, SchemaType::Avro, r#""long""#, &[], &[(1, &int)], &none).unwrap().len(), 1);
        assert_eq!(check(Compatibility::Backward, SchemaType::Avro, r#"{"type":"#, &[], &[(1, &int)], &none).unwrap_err().error_code, 42201);
    }
}
