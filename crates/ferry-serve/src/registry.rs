//! The console's Schemas page reads a schema registry (`ferry registry`, or any registry with
//! Confluent's API) through `ferry serve`: `GET /api/v1/registry/<path>` is sent to
//! `<registry URL>/<path>` with the registry's credentials, so the browser needs no second
//! origin, no CORS and no registry password. Read-only: GET only, and only under `subjects`,
//! `schemas`, `config` and `mode`.

use std::time::Duration;

use base64::Engine as _;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::api::error_body;
use crate::AppState;

/// The prefix the console calls.
pub(crate) const PREFIX: &str = "/api/v1/registry/";
const ALLOWED: &[&str] = &["subjects", "schemas", "config", "mode"];
const TIMEOUT: Duration = Duration::from_secs(10);

/// A registry to read: its URL and the `Authorization` header to send, if any.
pub struct Registry {
    url: String,
    authorization: Option<HeaderValue>,
    client: Client<HttpConnector, Body>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({}, credentials: {})", self.url, if self.authorization.is_some() { "<redacted>" } else { "none" })
    }
}

impl Registry {
    /// `url` is `http://host:port` (https is not supported yet); `credentials` is `user:password`
    /// (basic) or `Bearer <token>`.
    pub fn new(url: &str, credentials: Option<&str>) -> Result<Registry, String> {
        let url = url.trim_end_matches('/').to_string();
        if !url.starts_with("http://") {
            return Err(format!("registry URL '{url}': only http:// is supported"));
        }
        url.parse::<axum::http::Uri>().map_err(|e| format!("registry URL '{url}': {e}"))?;
        let authorization = match credentials.map(str::trim) {
            None | Some("") => None,
            Some(c) if c.starts_with("Bearer ") => Some(c.to_string()),
            Some(c) if c.contains(':') => Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(c))),
            Some(_) => return Err("registry credentials must be 'user:password' or 'Bearer <token>'".into()),
        };
        let authorization = authorization.map(|a| HeaderValue::from_str(&a).map_err(|_| "registry credentials hold characters a header cannot".to_string())).transpose()?;
        Ok(Registry { url, authorization, client: Client::builder(TokioExecutor::new()).build_http() })
    }
}

impl Registry {
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The JSON the registry answers at `path` (`/subjects`), or why not (unreachable, or its
    /// status and message).
    pub(crate) async fn get_json(&self, path: &str) -> Result<serde_json::Value, String> {
        let uri = format!("{}{path}", self.url).parse::<axum::http::Uri>().map_err(|e| format!("not a registry path {path}: {e}"))?;
        let mut request = axum::http::Request::get(uri).header(header::ACCEPT, "application/vnd.schemaregistry.v1+json");
        if let Some(a) = &self.authorization {
            request = request.header(header::AUTHORIZATION, a.clone());
        }
        let request = request.body(Body::empty()).map_err(|e| e.to_string())?;
        let answer = match tokio::time::timeout(TIMEOUT, self.client.request(request)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(format!("schema registry {}: {e}", self.url)),
            Err(_) => return Err(format!("schema registry {} did not answer within {TIMEOUT:?}", self.url)),
        };
        let status = answer.status();
        let bytes = axum::body::to_bytes(Body::new(answer.into_body()), 16 << 20).await.map_err(|e| format!("schema registry {}: {e}", self.url))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("schema registry {} answered GET {path} with {status} and no JSON: {e}", self.url))?;
        if !status.is_success() {
            return Err(format!("schema registry {} answered GET {path} with {status}: {}", self.url, body["message"].as_str().unwrap_or("")));
        }
        Ok(body)
    }
}

/// `GET /api/v1/registry/{*path}`.
pub(crate) async fn proxy(State(state): State<AppState>, request: Request) -> Response {
    let Some(registry) = &state.registry else {
        return error_body(StatusCode::NOT_FOUND, "no_registry", "no schema registry is configured (ferry serve --registry URL)");
    };
    let rest = request.uri().path_and_query().map_or("", |p| p.as_str()).strip_prefix(PREFIX).unwrap_or("");
    let first = rest.split(['/', '?']).next().unwrap_or("");
    if !ALLOWED.contains(&first) {
        return error_body(StatusCode::NOT_FOUND, "not_found", &format!("only {} of the registry are readable here", ALLOWED.join(", ")));
    }
    let uri = match format!("{}/{rest}", registry.url).parse::<axum::http::Uri>() {
        Ok(u) => u,
        Err(e) => return error_body(StatusCode::BAD_REQUEST, "bad_request", &format!("not a registry path: {e}")),
    };
    let mut outgoing = axum::http::Request::get(uri).header(header::ACCEPT, "application/vnd.schemaregistry.v1+json");
    if let Some(a) = &registry.authorization {
        outgoing = outgoing.header(header::AUTHORIZATION, a.clone());
    }
    let outgoing = match outgoing.body(Body::empty()) {
        Ok(r) => r,
        Err(e) => return error_body(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    match tokio::time::timeout(TIMEOUT, registry.client.request(outgoing)).await {
        Ok(Ok(answer)) => {
            let (parts, body) = answer.into_parts();
            let mut r = Response::new(Body::new(body));
            *r.status_mut() = parts.status;
            if let Some(t) = parts.headers.get(header::CONTENT_TYPE) {
                r.headers_mut().insert(header::CONTENT_TYPE, t.clone());
            }
            r
        }
        Ok(Err(e)) => error_body(StatusCode::BAD_GATEWAY, "registry_unreachable", &format!("schema registry {}: {e}", registry.url)),
        Err(_) => error_body(StatusCode::GATEWAY_TIMEOUT, "registry_unreachable", &format!("schema registry {} did not answer within {TIMEOUT:?}", registry.url)),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_one_header_and_urls_are_checked() {
        let r = Registry::new("http://127.0.0.1:8081/", Some("admin:s3cret")).unwrap();
        assert_eq!(r.url, "http://127.0.0.1:8081");
        assert_eq!(r.authorization.unwrap(), "Basic YWRtaW46czNjcmV0");
        assert!(format!("{:?}", Registry::new("http://h:1", Some("Bearer t")).unwrap()).contains("<redacted>"));
        assert!(Registry::new("https://h:1", None).is_err());
        assert!(Registry::new("http://h:1", Some("nocolon")).is_err());
    }
}
