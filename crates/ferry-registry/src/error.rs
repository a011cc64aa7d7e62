//! Confluent's error bodies and codes: `{"error_code": N, "message": "…"}` with the HTTP status
//! its first three digits name (409 for an incompatible schema, as clients expect).

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub error_code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(error_code: u32, message: impl Into<String>) -> ApiError {
        ApiError { error_code, message: message.into() }
    }

    /// The HTTP status: the code's first three digits (409 stays 409).
    pub fn status(&self) -> u16 {
        let code = if self.error_code >= 10_000 { self.error_code / 100 } else { self.error_code };
        u16::try_from(code).unwrap_or(500)
    }

    pub fn subject_not_found(subject: &str) -> ApiError {
        ApiError::new(40401, format!("Subject '{subject}' not found."))
    }
    pub fn version_not_found(version: i32) -> ApiError {
        ApiError::new(40402, format!("Version {version} not found."))
    }
    pub fn schema_not_found(what: &str) -> ApiError {
        ApiError::new(40403, format!("Schema {what} not found"))
    }
    pub fn subject_soft_deleted(subject: &str) -> ApiError {
        ApiError::new(40404, format!("Subject '{subject}' was soft deleted.Set permanent=true to delete permanently"))
    }
    pub fn subject_not_soft_deleted(subject: &str) -> ApiError {
        ApiError::new(40405, format!("Subject '{subject}' was not deleted first before being permanently deleted"))
    }
    pub fn version_soft_deleted(subject: &str, version: i32) -> ApiError {
        ApiError::new(40406, format!("Subject '{subject}' Version {version} was soft deleted.Set permanent=true to delete permanently"))
    }
    pub fn version_not_soft_deleted(subject: &str, version: i32) -> ApiError {
        ApiError::new(40407, format!("Subject '{subject}' Version {version} was not deleted first before being permanently deleted"))
    }
    pub fn subject_config_not_found(subject: &str) -> ApiError {
        ApiError::new(40408, format!("Subject '{subject}' does not have subject-level compatibility configured"))
    }
    pub fn subject_mode_not_found(subject: &str) -> ApiError {
        ApiError::new(40409, format!("Subject '{subject}' does not have subject-level mode configured"))
    }
    pub fn incompatible(messages: &[String]) -> ApiError {
        ApiError::new(409, format!("Schema being registered is incompatible with an earlier schema for subject; {}", messages.join("; ")))
    }
    pub fn invalid_schema(reason: &str) -> ApiError {
        ApiError::new(42201, format!("Invalid schema: {reason}"))
    }
    pub fn invalid_version(version: &str) -> ApiError {
        ApiError::new(42202, format!("The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""))
    }
    pub fn invalid_compatibility(level: &str) -> ApiError {
        ApiError::new(42203, format!("Invalid compatibility level '{level}'. Valid values are NONE, BACKWARD, FORWARD, FULL, BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE, and FULL_TRANSITIVE"))
    }
    pub fn invalid_mode(mode: &str) -> ApiError {
        ApiError::new(42204, format!("Invalid mode '{mode}'. Valid values are READWRITE, READONLY, READONLY_OVERRIDE and IMPORT"))
    }
    pub fn not_permitted(reason: &str) -> ApiError {
        ApiError::new(42205, reason.to_string())
    }
    pub fn reference_exists(subject: &str, version: i32, id: i64) -> ApiError {
        ApiError::new(42206, format!("One or more references exist to the schema {{subject={subject},version={version},id={id}}}"))
    }
    pub fn id_mismatch(id: i64) -> ApiError {
        ApiError::new(42207, format!("Schema id {id} is already registered with a different schema"))
    }
    pub fn invalid_subject(subject: &str) -> ApiError {
        ApiError::new(42208, format!("Invalid subject '{subject}'"))
    }
    pub fn store(reason: &str) -> ApiError {
        ApiError::new(50001, format!("Error in the backend data store: {reason}"))
    }
    pub fn timeout(reason: &str) -> ApiError {
        ApiError::new(50002, format!("Operation timed out: {reason}"))
    }
    pub fn forwarding(reason: &str) -> ApiError {
        ApiError::new(50003, format!("Error while forwarding the request to the leader: {reason}"))
    }
    pub fn unknown_leader(reason: &str) -> ApiError {
        ApiError::new(50004, format!("Unknown leader: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_the_codes_first_three_digits() {
        assert_eq!(ApiError::subject_not_found("s").status(), 404);
        assert_eq!(ApiError::incompatible(&[]).status(), 409);
        assert_eq!(ApiError::invalid_schema("x").status(), 422);
        assert_eq!(ApiError::store("x").status(), 500);
        assert_eq!(serde_json::to_string(&ApiError::new(40401, "m")).unwrap(), r#"{"error_code":40401,"message":"m"}"#);
    }
}
