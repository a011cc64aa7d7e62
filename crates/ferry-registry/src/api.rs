//! Confluent Schema Registry's REST API at the root of the listener. Reads answer from the
//! state; writes are decided against it under the store's write lock and answered once read
//! back. Request bodies are JSON whatever their content type (Confluent accepts its own media
//! types, `application/json` and `application/octet-stream`); answers are
//! `application/vnd.schemaregistry.v1+json`; errors are Confluent's `{error_code, message}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::compat;
use crate::error::ApiError;
use crate::records::Reference;
use crate::schema::{self, Compatibility, Mode, SchemaType};
use crate::state::{Deleted, State};
use crate::store::Store;

pub struct App {
    pub store: Arc<Store>,
    /// The level when neither the subject nor the global config sets one.
    pub default_compatibility: Compatibility,
    pub mode_mutability: bool,
    /// Earlier versions parsed once, for compatibility checks.
    pub parsed: compat::ParsedCache,
}

type Shared = AxumState<Arc<App>>;
type Params = Query<HashMap<String, String>>;

const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The largest request body taken (a schema with its references inline is far smaller); a
/// larger one is refused with 413 before it is read whole.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// A JSON answer in Confluent's media type.
struct Answer(Value);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut r = (StatusCode::OK, self.0.to_string()).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
        r
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, serde_json::to_string(&self).unwrap_or_default()).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
        r
    }
}

type Result<T> = std::result::Result<T, ApiError>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Answer(json!({})) }))
        .route("/schemas", get(list_schemas))
        .route("/schemas/types", get(|| async { Answer(json!(["JSON", "PROTOBUF", "AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(raw_version))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/compatibility/subjects/{subject}/versions", post(check_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check_one))
        .route("/config", get(get_global_config).put(put_global_config).delete(delete_global_config))
        .route("/config/{subject}", get(get_config).put(put_config).delete(delete_config))
        .route("/mode", get(get_global_mode).put(put_global_mode))
        .route("/mode/{subject}", get(get_mode).put(put_mode).delete(delete_mode))
        .route("/contexts", get(|| async { Answer(json!([":.:"])) }))
        .fallback(|| async { ApiError::new(40400, "HTTP 404 Not Found") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn deleted_param(params: &HashMap<String, String>) -> Deleted {
    if flag(params, "deletedOnly") {
        Deleted::Only
    } else if flag(params, "deleted") {
        Deleted::Include
    } else {
        Deleted::Exclude
    }
}

fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::new(400, format!("invalid request body: {e}")))
}

fn subject_name(subject: &str) -> Result<&str> {
    if subject.is_empty() || subject.chars().any(char::is_control) {
        return Err(ApiError::invalid_subject(subject));
    }
    Ok(subject)
}

fn id_param(id: &str) -> Result<i64> {
    id.parse().map_err(|_| ApiError::new(40403, format!("Schema {id} not found")))
}

/// How a schema is shown: `schema`, plus `schemaType` unless Avro, plus `references` if any.
fn schema_json(state: &State, id: i64, mut out: serde_json::Map<String, Value>, format: Option<&str>) -> Result<Value> {
    let s = state.schema(id).ok_or_else(|| ApiError::schema_not_found(&id.to_string()))?;
    if let Some(t) = s.schema_type.stored_name() {
        out.insert("schemaType".into(), json!(t));
    }
    if !s.references.is_empty() {
        out.insert("references".into(), json!(s.references));
    }
    out.insert("schema".into(), json!(formatted(state, s, format)?));
    Ok(Value::Object(out))
}

/// A schema's text in the `format` asked for: Protobuf's `serialized` is the compiled file as
/// base64 (what Confluent's deserializers load); otherwise, and for other types, as stored.
fn formatted<'a>(state: &State, s: &'a crate::state::Schema, format: Option<&str>) -> Result<std::borrow::Cow<'a, str>> {
    match (s.schema_type, format) {
        (SchemaType::Protobuf, Some("serialized")) => {
            let resolve = |r: &Reference| state.referenced(r);
            let references = compat::referenced(&s.references, &resolve)?;
            crate::protobuf::serialized(&s.schema, &references).map(std::borrow::Cow::Owned).map_err(|e| ApiError::store(&e))
        }
        _ => Ok(std::borrow::Cow::Borrowed(&s.schema)),
    }
}

fn version_json(state: &State, subject: &str, version: i32, id: i64, format: Option<&str>) -> Result<Value> {
    let mut m = serde_json::Map::new();
    m.insert("subject".into(), json!(subject));
    m.insert("version".into(), json!(version));
    m.insert("id".into(), json!(id));
    schema_json(state, id, m, format)
}

/// `GET /schemas/ids/{id}`: the hottest route (every deserializer asks it), so its answer is
/// serialized straight from the state, with no intermediate JSON value.
async fn schema_by_id(s: Shared, Path(id): Path<String>, Query(p): Params) -> Result<Response> {
    #[derive(serde::Serialize)]
    struct ById<'a> {
        #[serde(rename = "schemaType", skip_serializing_if = "Option::is_none")]
        schema_type: Option<&'a str>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        references: &'a [Reference],
        schema: &'a str,
    }
    let state = s.store.state.read().unwrap();
    let id = id_param(&id)?;
    let found = state.schema(id).ok_or_else(|| ApiError::schema_not_found(&id.to_string()))?;
    let text = formatted(&state, found, p.get("format").map(String::as_str))?;
    let body = serde_json::to_string(&ById { schema_type: found.schema_type.stored_name(), references: &found.references, schema: &text }).map_err(|e| ApiError::store(&e.to_string()))?;
    drop(state);
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    Ok(r)
}

async fn raw_schema_by_id(s: Shared, Path(id): Path<String>) -> Result<Response> {
    let state = s.store.state.read().unwrap();
    let id = id_param(&id)?;
    let schema = state.schema(id).ok_or_else(|| ApiError::schema_not_found(&id.to_string()))?;
    Ok(schema.schema.clone().into_response())
}

async fn subjects_of_id(s: Shared, Path(id): Path<String>, Query(p): Params) -> Result<Answer> {
    let state = s.store.state.read().unwrap();
    let id = id_param(&id)?;
    state.schema(id).ok_or_else(|| ApiError::schema_not_found(&id.to_string()))?;
    let mut subjects: Vec<&str> = state.uses_of(id, flag(&p, "deleted")).into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    Ok(Answer(json!(subjects)))
}

async fn versions_of_id(s: Shared, Path(id): Path<String>, Query(p): Params) -> Result<Answer> {
    let state = s.store.state.read().unwrap();
    let id = id_param(&id)?;
    state.schema(id).ok_or_else(|| ApiError::schema_not_found(&id.to_string()))?;
    let uses: Vec<Value> = state.uses_of(id, flag(&p, "deleted")).into_iter().map(|(s, v)| json!({"subject": s, "version": v})).collect();
    Ok(Answer(json!(uses)))
}

async fn list_schemas(s: Shared, Query(p): Params) -> Result<Answer> {
    let state = s.store.state.read().unwrap();
    let prefix = p.get("subjectPrefix").map_or("", String::as_str);
    let deleted = if flag(&p, "deleted") { Deleted::Include } else { Deleted::Exclude };
    let mut out = Vec::new();
    for subject in state.subjects(prefix, deleted) {
        let mut versions = state.versions(subject, deleted)?;
        if flag(&p, "latestOnly") {
            versions = versions.split_off(versions.len().saturating_sub(1));
        }
        for (n, v) in versions {
            out.push(version_json(&state, subject, n, v.id, None)?);
        }
    }
    let offset: usize = p.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let limit: usize = p.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    Ok(Answer(json!(out.into_iter().skip(offset).take(limit).collect::<Vec<_>>())))
}

async fn list_subjects(s: Shared, Query(p): Params) -> Answer {
    let state = s.store.state.read().unwrap();
    let prefix = p.get("subjectPrefix").map_or("", String::as_str);
    Answer(json!(state.subjects(prefix, deleted_param(&p))))
}

async fn list_versions(s: Shared, Path(subject): Path<String>, Query(p): Params) -> Result<Answer> {
    let state = s.store.state.read().unwrap();
    let versions: Vec<i32> = state.versions(&subject, deleted_param(&p))?.into_iter().map(|(n, _)| n).collect();
    Ok(Answer(json!(versions)))
}

async fn get_version(s: Shared, Path((subject, version)): Path<(String, String)>, Query(p): Params) -> Result<Answer> {
    let state = s.store.state.read().unwrap();
    let (n, v) = state.version(&subject, &version, flag(&p, "deleted"))?;
    Ok(Answer(version_json(&state, &subject, n, v.id, p.get("format").map(String::as_str))?))
}

async fn raw_version(s: Shared, Path((subject, version)): Path<(String, String)>, Query(p): Params) -> Result<Response> {
    let state = s.store.state.read().unwrap();
    let (_, v) = state.version(&subject, &version, flag(&p, "deleted"))?;
    let schema = state.schema(v.id).ok_or_else(|| ApiError::schema_not_found(&v.id.to_string()))?;
    Ok(schema.schema.clone().into_response())
}

async fn referenced_by(s: Shared, Path((subject, version)): Path<(String, String)>) -> Result<Answer> {
    let state = s.store.state.read().unwrap();
    let (n, _) = state.version(&subject, &version, false)?;
    Ok(Answer(json!(state.referenced_by(&subject, n))))
}

/// A registration or lookup body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
    /// IMPORT mode: the id (and version) the schema must get.
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    version: Option<i32>,
    /// Data contracts (Confluent 7.4+): refused rather than dropped, as they are not kept yet.
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default, rename = "ruleSet")]
    rule_set: Option<Value>,
}

impl SchemaBody {
    /// The body, its type, and (with `normalize=true`) its schema normalized.
    fn parse(bytes: &[u8], p: &HashMap<String, String>) -> Result<(SchemaBody, SchemaType)> {
        let mut b: SchemaBody = body(bytes)?;
        if b.metadata.as_ref().is_some_and(|m| !m.is_null()) || b.rule_set.as_ref().is_some_and(|r| !r.is_null()) {
            return Err(ApiError::invalid_schema("metadata and ruleSet (data contracts) are not supported by ferry registry; register the schema without them"));
        }
        let t = SchemaType::from_name(b.schema_type.as_deref())?;
        schema::validate(t, &b.schema)?;
        if flag(p, "normalize") {
            b.schema = schema::normalize(t, &b.schema);
        }
        Ok((b, t))
    }
}

async fn lookup(s: Shared, Path(subject): Path<String>, Query(p): Params, bytes: Bytes) -> Result<Answer> {
    let (b, t) = SchemaBody::parse(&bytes, &p)?;
    let state = s.store.state.read().unwrap();
    state.versions(&subject, Deleted::Include)?;
    let canonical = schema::canonical(t, &b.schema);
    let (n, id) = state.lookup(&subject, t, &canonical, &b.references, flag(&p, "deleted")).ok_or_else(|| ApiError::schema_not_found("not found"))?;
    Ok(Answer(version_json(&state, &subject, n, id, None)?))
}

async fn register(s: Shared, Path(subject): Path<String>, Query(p): Params, bytes: Bytes) -> Result<Answer> {
    let subject = subject_name(&subject)?.to_string();
    let (b, t) = SchemaBody::parse(&bytes, &p)?;
    let _writing = s.store.writing.lock().await;
    let record = {
        let state = s.store.state.read().unwrap();
        state.check_writable(&subject)?;
        let (mode, _) = state.mode(Some(&subject));
        let import = match (mode, b.id) {
            (Mode::Import, Some(id)) => Some((id, b.version)),
            (Mode::Import, None) => None,
            (_, Some(_)) => return Err(ApiError::not_permitted("Registering a schema with an id is allowed in IMPORT mode only")),
            (_, None) => None,
        };
        match state.plan_register(&subject, t, &b.schema, &b.references, import)? {
            Err(id) => return Ok(Answer(json!({"id": id}))),
            Ok(record) => {
                let resolve = |r: &Reference| state.referenced(r);
                compat::parse(t, &b.schema, &b.references, &resolve)?;
                if import.is_none() {
                    let (level, _) = state.compatibility(Some(&subject), s.default_compatibility);
                    let messages = compat::check(level, t, &b.schema, &b.references, &state.to_check(&subject, level.transitive()), &resolve, &s.parsed)?;
                    if !messages.is_empty() {
                        return Err(ApiError::incompatible(&messages));
                    }
                }
                record
            }
        }
    };
    let id = match &record {
        crate::records::Record::Schema { value: Some(v), .. } => v.id,
        _ => return Err(ApiError::store("a registration planned no schema")),
    };
    s.store.write(&[record]).await?;
    Ok(Answer(json!({"id": id})))
}

async fn delete_subject(s: Shared, Path(subject): Path<String>, Query(p): Params) -> Result<Answer> {
    let _writing = s.store.writing.lock().await;
    let (mut records, versions) = {
        let state = s.store.state.read().unwrap();
        state.check_writable(&subject)?;
        state.plan_delete_subject(&subject, flag(&p, "permanent"))?
    };
    if flag(&p, "permanent") {
        // The subject's own config and mode go with it (Confluent clears them too).
        records.push(State::config_record(Some(&subject), None));
        records.push(State::mode_record(Some(&subject), None));
    }
    s.store.write(&records).await?;
    Ok(Answer(json!(versions)))
}

async fn delete_version(s: Shared, Path((subject, version)): Path<(String, String)>, Query(p): Params) -> Result<Answer> {
    let _writing = s.store.writing.lock().await;
    let (record, n) = {
        let state = s.store.state.read().unwrap();
        state.check_writable(&subject)?;
        state.plan_delete_version(&subject, &version, flag(&p, "permanent"))?
    };
    s.store.write(&[record]).await?;
    Ok(Answer(json!(n)))
}

async fn check(s: &App, subject: &str, version: Option<&str>, p: &HashMap<String, String>, bytes: &[u8]) -> Result<Answer> {
    let (b, t) = SchemaBody::parse(bytes, p)?;
    let state = s.store.state.read().unwrap();
    let (level, _) = state.compatibility(Some(subject), s.default_compatibility);
    let against = match version {
        Some(v) => {
            let (n, found) = state.version(subject, v, false)?;
            vec![(n, found.id, state.schema(found.id).ok_or_else(|| ApiError::schema_not_found(&found.id.to_string()))?)]
        }
        None => state.to_check(subject, level.transitive()),
    };
    let resolve = |r: &Reference| state.referenced(r);
    let messages = compat::check(level, t, &b.schema, &b.references, &against, &resolve, &s.parsed)?;
    let mut out = json!({"is_compatible": messages.is_empty()});
    if flag(p, "verbose") {
        out["messages"] = json!(messages);
    }
    Ok(Answer(out))
}

async fn check_all(s: Shared, Path(subject): Path<String>, Query(p): Params, bytes: Bytes) -> Result<Answer> {
    check(&s, &subject, None, &p, &bytes).await
}

async fn check_one(s: Shared, Path((subject, version)): Path<(String, String)>, Query(p): Params, bytes: Bytes) -> Result<Answer> {
    check(&s, &subject, Some(&version), &p, &bytes).await
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

async fn get_global_config(s: Shared) -> Answer {
    let state = s.store.state.read().unwrap();
    Answer(json!({"compatibilityLevel": state.compatibility(None, s.default_compatibility).0.name()}))
}

async fn put_global_config(s: Shared, bytes: Bytes) -> Result<Answer> {
    let level = Compatibility::parse(&body::<ConfigBody>(&bytes)?.compatibility)?;
    let _writing = s.store.writing.lock().await;
    s.store.write(&[State::config_record(None, Some(level))]).await?;
    Ok(Answer(json!({"compatibility": level.name()})))
}

async fn delete_global_config(s: Shared) -> Result<Answer> {
    let _writing = s.store.writing.lock().await;
    let old = s.store.state.read().unwrap().compatibility(None, s.default_compatibility).0;
    s.store.write(&[State::config_record(None, None)]).await?;
    Ok(Answer(json!({"compatibilityLevel": old.name()})))
}

async fn get_config(s: Shared, Path(subject): Path<String>, Query(p): Params) -> Result<Answer> {
    let state = s.store.state.read().unwrap();
    let (level, own) = state.compatibility(Some(&subject), s.default_compatibility);
    if !own && !flag(&p, "defaultToGlobal") {
        return Err(ApiError::subject_config_not_found(&subject));
    }
    Ok(Answer(json!({"compatibilityLevel": level.name()})))
}

async fn put_config(s: Shared, Path(subject): Path<String>, bytes: Bytes) -> Result<Answer> {
    let subject = subject_name(&subject)?.to_string();
    let level = Compatibility::parse(&body::<ConfigBody>(&bytes)?.compatibility)?;
    let _writing = s.store.writing.lock().await;
    s.store.write(&[State::config_record(Some(&subject), Some(level))]).await?;
    Ok(Answer(json!({"compatibility": level.name()})))
}

async fn delete_config(s: Shared, Path(subject): Path<String>) -> Result<Answer> {
    let _writing = s.store.writing.lock().await;
    let (level, own) = s.store.state.read().unwrap().compatibility(Some(&subject), s.default_compatibility);
    if !own {
        return Err(ApiError::subject_config_not_found(&subject));
    }
    s.store.write(&[State::config_record(Some(&subject), None)]).await?;
    Ok(Answer(json!({"compatibilityLevel": level.name()})))
}

async fn get_global_mode(s: Shared) -> Answer {
    Answer(json!({"mode": s.store.state.read().unwrap().mode(None).0.name()}))
}

async fn put_global_mode(s: Shared, bytes: Bytes) -> Result<Answer> {
    set_mode(&s, None, &bytes).await
}

async fn get_mode(s: Shared, Path(subject): Path<String>, Query(p): Params) -> Result<Answer> {
    let (mode, own) = s.store.state.read().unwrap().mode(Some(&subject));
    if !own && !flag(&p, "defaultToGlobal") {
        return Err(ApiError::subject_mode_not_found(&subject));
    }
    Ok(Answer(json!({"mode": mode.name()})))
}

async fn put_mode(s: Shared, Path(subject): Path<String>, bytes: Bytes) -> Result<Answer> {
    let subject = subject_name(&subject)?.to_string();
    set_mode(&s, Some(&subject), &bytes).await
}

async fn set_mode(s: &App, subject: Option<&str>, bytes: &[u8]) -> Result<Answer> {
    if !s.mode_mutability {
        return Err(ApiError::not_permitted("Mode changes are not allowed (mode.mutability = false)"));
    }
    let mode = Mode::parse(&body::<ModeBody>(bytes)?.mode)?;
    let _writing = s.store.writing.lock().await;
    s.store.write(&[State::mode_record(subject, Some(mode))]).await?;
    Ok(Answer(json!({"mode": mode.name()})))
}

async fn delete_mode(s: Shared, Path(subject): Path<String>) -> Result<Answer> {
    let _writing = s.store.writing.lock().await;
    let (mode, own) = s.store.state.read().unwrap().mode(Some(&subject));
    if !own {
        return Err(ApiError::subject_mode_not_found(&subject));
    }
    s.store.write(&[State::mode_record(Some(&subject), None)]).await?;
    Ok(Answer(json!({"mode": mode.name()})))
}
