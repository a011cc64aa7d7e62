//! Writes go to the leader. Every instance answers reads from its own state; a write (register,
//! delete, config and mode changes) that reaches an instance that does not lead is forwarded to
//! the leader's URL as it came, and the leader's answer is returned once this instance has read
//! the write back too (the leader says how far in a header), so a client that writes through one
//! instance and reads through it sees its write.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::ApiError;
use crate::store::Store;

/// Set on a forwarded request: the receiver answers it itself or refuses, never forwards again.
pub const FORWARDED: &str = "x-ferry-forwarded";
/// Set by the leader on a write's answer: the offset a reader must reach to have applied it.
pub const APPLIED: &str = "x-ferry-applied";

pub struct Forwarder {
    client: Client<HttpConnector, Body>,
    store: Arc<Store>,
    /// This instance's advertised URL (a leader URL equal to it means the election is settling).
    url: String,
    /// How long a write waits for a leader, for the leader's answer, and to be read back here.
    timeout: Duration,
}

impl Forwarder {
    pub fn new(store: Arc<Store>, url: String, timeout: Duration) -> Arc<Forwarder> {
        Arc::new(Forwarder { client: Client::builder(TokioExecutor::new()).build_http(), store, url, timeout })
    }

    /// `None` when this instance leads, else the leader's URL; waits for the election to settle.
    async fn leader(&self) -> Result<Option<String>, ApiError> {
        let mut leadership = self.store.leadership.subscribe();
        let settled = tokio::time::timeout(self.timeout, leadership.wait_for(|l| l.me || l.url.as_deref().is_some_and(|u| u != self.url))).await;
        match settled {
            Ok(Ok(l)) if l.me => Ok(None),
            Ok(Ok(l)) => Ok(l.url.clone()),
            _ => Err(ApiError::unknown_leader(&format!("no instance has led within {:?}", self.timeout))),
        }
    }

    /// Sends the request to the leader; a leader that cannot be reached (it died, the election
    /// is settling) is asked again once the election names another, until the timeout.
    /// `Ok(Err(request))`: this instance leads now, so the caller runs the request here.
    async fn forward(&self, mut leader: String, request: Request) -> Result<Result<Response, Request>, ApiError> {
        let (mut parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, crate::api::MAX_BODY).await.map_err(|e| ApiError::new(413, format!("the request body cannot be read or is larger than {} bytes: {e}", crate::api::MAX_BODY)))?;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        parts.headers.remove(header::HOST);
        parts.headers.insert(FORWARDED, HeaderValue::from_static("1"));
        let deadline = tokio::time::Instant::now() + self.timeout;
        let answer = loop {
            let mut request = Request::from_parts(parts.clone(), Body::from(body.clone()));
            *request.uri_mut() = format!("{leader}{path}").parse().map_err(|e| ApiError::forwarding(&format!("leader URL '{leader}': {e}")))?;
            metrics::counter!(crate::telemetry::FORWARDED).increment(1);
            let failed = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
                Ok(Ok(answer)) => break answer,
                Ok(Err(e)) => ApiError::forwarding(&format!("{leader}: {e}")),
                Err(_) => return Err(ApiError::forwarding(&format!("{leader} did not answer within {:?}", self.timeout))),
            };
            // Wait for the election to name another leader, or this instance.
            let mut leadership = self.store.leadership.subscribe();
            let moved = tokio::time::timeout_at(deadline, leadership.wait_for(|l| l.me || l.url.as_deref().is_some_and(|u| u != leader && u != self.url))).await;
            match moved {
                Ok(Ok(l)) if l.me => {
                    parts.headers.remove(FORWARDED);
                    return Ok(Err(Request::from_parts(parts, Body::from(body))));
                }
                Ok(Ok(l)) => leader = l.url.clone().unwrap_or_default(),
                _ => return Err(failed),
            }
        };
        let applied = answer.headers().get(APPLIED).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
        if let Some(offset) = applied.filter(|_| answer.status().is_success()) {
            if !self.store.wait_applied(offset, self.timeout).await {
                return Err(ApiError::timeout(&format!("the leader wrote, but this instance did not read the write back within {:?}", self.timeout)));
            }
        }
        Ok(Ok(answer.map(Body::new)))
    }
}

/// Whether a request changes state (and so must be decided by the leader).
pub fn is_write(method: &Method, path: &str) -> bool {
    match *method {
        Method::PUT | Method::DELETE => true,
        Method::POST => {
            let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
            parts.len() == 3 && parts[0] == "subjects" && parts[2] == "versions"
        }
        _ => false,
    }
}

/// The middleware: reads pass; writes run here when this instance leads, else go to the leader.
pub async fn route(State(f): State<Arc<Forwarder>>, request: Request, next: Next) -> Response {
    if !is_write(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let forwarded = request.headers().contains_key(FORWARDED);
    let request = match f.leader().await {
        Ok(None) => request,
        Ok(Some(_)) if forwarded => return ApiError::forwarding("this instance does not lead (leadership moved while the request was forwarded); send it again").into_response(),
        Ok(Some(leader)) => match f.forward(leader, request).await {
            Ok(Ok(answer)) => return answer,
            Ok(Err(here)) => here,
            Err(e) => return e.into_response(),
        },
        Err(e) => return e.into_response(),
    };
    let mut answer = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&f.store.applied().to_string()) {
        answer.headers_mut().insert(APPLIED, v);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_deletes_and_config_changes_are_writes_and_lookups_are_not() {
        assert!(is_write(&Method::POST, "/subjects/a-value/versions"));
        assert!(!is_write(&Method::POST, "/subjects/a-value"), "lookup");
        assert!(!is_write(&Method::POST, "/compatibility/subjects/a-value/versions/latest"));
        assert!(is_write(&Method::DELETE, "/subjects/a-value/versions/1"));
        assert!(is_write(&Method::PUT, "/config/a-value"));
        assert!(is_write(&Method::PUT, "/mode"));
        assert!(!is_write(&Method::GET, "/subjects"));
    }
}
