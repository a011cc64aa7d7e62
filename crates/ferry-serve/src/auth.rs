//! Optional bearer token for everything but the liveness and readiness probes. A browser
//! without the header gets the console's sign-in page (401), which stores the token in a
//! same-site cookie the middleware also accepts.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::api::error_body;
use crate::Token;

/// Paths open without a token: probes carry no credentials and answer only a status word.
const OPEN: &[&str] = &["/api/v1/health", "/api/v1/ready"];

pub(crate) const COOKIE: &str = "ferry_token";


/// The token a request presents: `Authorization: Bearer T` or the console's cookie.
fn presented(req: &Request) -> Option<String> {
    let headers = req.headers();
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok())?;
    cookies.split(';').map(str::trim).find_map(|c| c.strip_prefix(&format!("{COOKIE}=")).map(percent_decode))
}

/// The console stores the token with `encodeURIComponent`.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

pub(crate) async fn require_token(State(token): State<Token>, req: Request, next: Next) -> Response {
    let Some(expected) = &token.0 else {
        return next.run(req).await;
    };
    if OPEN.contains(&req.uri().path()) || presented(&req).is_some_and(|t| ferry_kafka::secrets_equal(t.as_bytes(), expected.as_bytes())) {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if path == "/" || path == "/index.html" || path == "/schemas" || path == "/monitor" || path == "/sql" {
        return (StatusCode::UNAUTHORIZED, Html(include_str!("signin.html"))).into_response();
    }
    let mut response = error_body(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required (Authorization: Bearer <token>)");
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(ferry_kafka::secrets_equal(b"secret", b"secret"));
        assert!(!ferry_kafka::secrets_equal(b"secret", b"secreT"));
        assert!(!ferry_kafka::secrets_equal(b"secret", b"secret2"));
        assert!(!ferry_kafka::secrets_equal(b"", b"x"));
        assert_eq!(percent_decode("a%2Bb%3D%zz"), "a+b=%zz");
    }
}
