//! The OpenAPI 3.1 document of the registry's API, served at `/openapi.json`: Confluent's
//! routes as `api` serves them, with their bodies and Confluent's error body. Built from one
//! table here; the integration test calls every route it lists and validates the document.

use serde_json::{json, Map, Value};

/// (method, path, summary, query parameters, request body schema, answer schema).
type Route = (&'static str, &'static str, &'static str, &'static [&'static str], Option<&'static str>, &'static str);

const ROUTES: &[Route] = &[
    ("get", "/", "An empty object: the registry answers", &[], None, "Empty"),
    ("get", "/schemas", "Every schema with its subject and version", &["subjectPrefix", "deleted", "latestOnly", "offset", "limit"], None, "VersionList"),
    ("get", "/schemas/types", "The schema types supported", &[], None, "Strings"),
    ("get", "/schemas/ids/{id}", "A schema by its global id (format=serialized: a Protobuf schema compiled, base64)", &["format"], None, "SchemaById"),
    ("get", "/schemas/ids/{id}/schema", "A schema's text by id", &[], None, "Raw"),
    ("get", "/schemas/ids/{id}/subjects", "The subjects that use a schema id", &["deleted"], None, "Strings"),
    ("get", "/schemas/ids/{id}/versions", "The subject versions that use a schema id", &["deleted"], None, "SubjectVersions"),
    ("get", "/subjects", "Subjects", &["subjectPrefix", "deleted", "deletedOnly"], None, "Strings"),
    ("post", "/subjects/{subject}", "Whether a schema is registered under the subject (lookup)", &["deleted", "normalize"], Some("SchemaBody"), "Version"),
    ("delete", "/subjects/{subject}", "Deletes a subject (soft; permanent=true after a soft delete)", &["permanent"], None, "Integers"),
    ("get", "/subjects/{subject}/versions", "A subject's versions", &["deleted", "deletedOnly"], None, "Integers"),
    ("post", "/subjects/{subject}/versions", "Registers a schema under the subject (its existing id if registered anywhere)", &["normalize"], Some("SchemaBody"), "Id"),
    ("get", "/subjects/{subject}/versions/{version}", "A version (a number, latest or -1)", &["deleted", "format"], None, "Version"),
    ("delete", "/subjects/{subject}/versions/{version}", "Deletes a version (soft; permanent=true after a soft delete)", &["permanent"], None, "Integer"),
    ("get", "/subjects/{subject}/versions/{version}/schema", "A version's schema text", &["deleted"], None, "Raw"),
    ("get", "/subjects/{subject}/versions/{version}/referencedby", "Ids of the schemas that reference this version", &[], None, "Integers"),
    ("post", "/compatibility/subjects/{subject}/versions", "Whether a schema may follow the versions its level checks", &["verbose", "normalize"], Some("SchemaBody"), "Verdict"),
    ("post", "/compatibility/subjects/{subject}/versions/{version}", "Whether a schema may follow one version", &["verbose", "normalize"], Some("SchemaBody"), "Verdict"),
    ("get", "/config", "The global compatibility level", &[], None, "Config"),
    ("put", "/config", "Sets the global compatibility level", &[], Some("ConfigBody"), "ConfigBody"),
    ("delete", "/config", "Resets the global compatibility level to the configured default", &[], None, "Config"),
    ("get", "/config/{subject}", "A subject's compatibility level", &["defaultToGlobal"], None, "Config"),
    ("put", "/config/{subject}", "Sets a subject's compatibility level", &[], Some("ConfigBody"), "ConfigBody"),
    ("delete", "/config/{subject}", "Removes a subject's level (the global one applies)", &[], None, "Config"),
    ("get", "/mode", "The global mode", &[], None, "Mode"),
    ("put", "/mode", "Sets the global mode (READWRITE, READONLY, IMPORT)", &[], Some("Mode"), "Mode"),
    ("get", "/mode/{subject}", "A subject's mode", &["defaultToGlobal"], None, "Mode"),
    ("put", "/mode/{subject}", "Sets a subject's mode", &[], Some("Mode"), "Mode"),
    ("delete", "/mode/{subject}", "Removes a subject's mode", &[], None, "Mode"),
    ("get", "/contexts", "Contexts (the default one)", &[], None, "Strings"),
    ("get", "/metrics", "Prometheus text: requests, latency, schemas, subjects, leader", &[], None, "Raw"),
    ("get", "/openapi.json", "This document", &[], None, "Empty"),
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, query, body, answer) in ROUTES {
        let mut parameters: Vec<Value> = Vec::new();
        for name in ["subject", "version", "id"] {
            if path.contains(&format!("{{{name}}}")) {
                let schema = if name == "id" { json!({"type": "integer"}) } else { json!({"type": "string"}) };
                parameters.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
            }
        }
        for q in *query {
            parameters.push(json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}));
        }
        let content = |schema: &str| {
            if schema == "Raw" {
                json!({"text/plain": {"schema": {"type": "string"}}})
            } else {
                json!({"application/vnd.schemaregistry.v1+json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
            }
        };
        let error = json!({"description": "Confluent's error body (error_code names the cause)", "content": content("Error")});
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{method}{}", path.replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters,
            "responses": {"200": {"description": "OK", "content": content(answer)}, "401": error.clone(), "404": error.clone(), "409": error.clone(), "422": error.clone(), "500": error},
        });
        if let Some(b) = body {
            op["requestBody"] = json!({"required": true, "content": content(b)});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    let reference = json!({"type": "object", "required": ["name", "subject", "version"], "properties": {"name": {"type": "string"}, "subject": {"type": "string"}, "version": {"type": "integer"}}});
    let schema_type = json!({"type": "string", "enum": ["AVRO", "JSON", "PROTOBUF"]});
    let level = json!({"type": "string", "enum": ["NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"]});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ferry registry", "version": env!("CARGO_PKG_VERSION"), "description": "Confluent Schema Registry's REST API, served by ferry registry; state in a compacted Kafka topic in Confluent's format."},
        "paths": paths,
        "components": {"schemas": {
            "Empty": {"type": "object"},
            "Strings": {"type": "array", "items": {"type": "string"}},
            "Integers": {"type": "array", "items": {"type": "integer"}},
            "Integer": {"type": "integer"},
            "Id": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
            "Reference": reference,
            "SchemaBody": {"type": "object", "required": ["schema"], "properties": {
                "schema": {"type": "string"}, "schemaType": schema_type, "references": {"type": "array", "items": {"$ref": "#/components/schemas/Reference"}},
                "id": {"type": "integer", "description": "IMPORT mode only"}, "version": {"type": "integer", "description": "IMPORT mode only"}}},
            "SchemaById": {"type": "object", "required": ["schema"], "properties": {"schema": {"type": "string"}, "schemaType": schema_type, "references": {"type": "array", "items": {"$ref": "#/components/schemas/Reference"}}}},
            "Version": {"type": "object", "required": ["subject", "version", "id", "schema"], "properties": {
                "subject": {"type": "string"}, "version": {"type": "integer"}, "id": {"type": "integer"}, "schema": {"type": "string"}, "schemaType": schema_type,
                "references": {"type": "array", "items": {"$ref": "#/components/schemas/Reference"}}}},
            "VersionList": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}},
            "SubjectVersions": {"type": "array", "items": {"type": "object", "properties": {"subject": {"type": "string"}, "version": {"type": "integer"}}}},
            "Verdict": {"type": "object", "required": ["is_compatible"], "properties": {"is_compatible": {"type": "boolean"}, "messages": {"type": "array", "items": {"type": "string"}}}},
            "Config": {"type": "object", "properties": {"compatibilityLevel": level.clone()}},
            "ConfigBody": {"type": "object", "required": ["compatibility"], "properties": {"compatibility": level}},
            "Mode": {"type": "object", "required": ["mode"], "properties": {"mode": {"type": "string", "enum": ["READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT"]}}},
            "Error": {"type": "object", "required": ["error_code", "message"], "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}}},
        }},
    })
}

/// The routes the document lists, for tests: (method, path template).
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().map(|r| (r.0, r.1))
}
