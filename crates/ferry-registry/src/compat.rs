//! Whether a new schema may follow earlier ones under a compatibility level. A different schema
//! type is never compatible, and the same canonical schema always is. Judging two different
//! schemas of a type as Confluent does (Avro with the Java library's rules, Protobuf and JSON
//! Schema with Confluent's diff rules) is not implemented yet: such a check answers 50001 naming
//! the gap, so nothing incompatible is ever accepted silently; a subject at NONE registers
//! anything.

use crate::error::ApiError;
use crate::schema::{canonical, Compatibility, SchemaType};
use crate::state::Schema;

/// The incompatibilities of `schema` against `against` (newest first), empty when compatible.
pub fn check(level: Compatibility, schema_type: SchemaType, schema: &str, against: &[(i32, &Schema)]) -> Result<Vec<String>, ApiError> {
    if level == Compatibility::None {
        return Ok(Vec::new());
    }
    let new = canonical(schema_type, schema);
    let mut messages = Vec::new();
    for (version, old) in against {
        if old.schema_type != schema_type {
            messages.push(format!("Incompatible because of different schema type: version {version} is {}, the new schema is {}", old.schema_type.name(), schema_type.name()));
        } else if canonical(old.schema_type, &old.schema) != new {
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
        let old = schema(SchemaType::Avro, r#""string""#);
        assert!(check(Compatibility::None, SchemaType::Json, "{}", &[(1, &old)]).unwrap().is_empty());
        assert_eq!(check(Compatibility::Backward, SchemaType::Json, "{}", &[(1, &old)]).unwrap().len(), 1);
        assert!(check(Compatibility::FullTransitive, SchemaType::Avro, r#" "string" "#, &[(1, &old)]).unwrap().is_empty());
        assert_eq!(check(Compatibility::Backward, SchemaType::Avro, r#""int""#, &[(1, &old)]).unwrap_err().error_code, 50001, "not judged yet: said, never accepted");
        assert!(check(Compatibility::Backward, SchemaType::Avro, r#""int""#, &[]).unwrap().is_empty(), "a first version needs no check");
    }
}
