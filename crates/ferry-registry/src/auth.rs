//! Who may call the API: HTTP basic auth (Confluent's `authentication.method=BASIC`, users in
//! Jetty's property-file format that Confluent's JAAS setup points at: `user: password[,role…]`)
//! and bearer tokens (`name: token[,role…]`, the name shown in logs instead of the token). A
//! role in `authentication.roles` (default: any) may call the API; a role in
//! `authentication.readonly.roles` (default `readonly`) may only read, look up and check
//! compatibility. No credential or token is ever logged; secrets are compared in constant time.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::error::ApiError;
use crate::forward::is_write;

/// The `authentication.*` settings as the properties file gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub basic: bool,
    pub bearer: bool,
    pub realm: String,
    pub users_file: Option<String>,
    pub tokens_file: Option<String>,
    /// Roles allowed in; empty or `*` is any role.
    pub roles: BTreeSet<String>,
    pub readonly_roles: BTreeSet<String>,
    /// Paths answered without credentials (`authentication.skip.paths`).
    pub skip_paths: Vec<String>,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.basic || self.bearer
    }
}

#[derive(Debug, Clone)]
struct Principal {
    name: String,
    secret: String,
    roles: BTreeSet<String>,
}

/// The loaded credentials and the rules.
#[derive(Debug)]
pub struct Auth {
    config: AuthConfig,
    users: HashMap<String, Principal>,
    tokens: Vec<Principal>,
}

/// Parses a property-file of principals: `name: secret[,role…]` per line, `#` comments. Every
/// problem names file and line (never the secret).
pub fn parse_principals(file: &str, text: &str) -> Result<Vec<(String, String, BTreeSet<String>)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (name, rest) = line.split_once(':').or_else(|| line.split_once('=')).ok_or_else(|| format!("{file}:{}: expected 'name: secret[,role…]'", i + 1))?;
        let mut parts = rest.split(',').map(str::trim);
        let secret = parts.next().unwrap_or_default().to_string();
        let name = name.trim().to_string();
        if name.is_empty() || secret.is_empty() {
            return Err(format!("{file}:{}: a name and a secret are required", i + 1));
        }
        for prefix in ["MD5:", "CRYPT:", "OBF:"] {
            if secret.starts_with(prefix) {
                return Err(format!("{file}:{}: {name}: {prefix} passwords are not supported; give the password itself (keep the file readable by the registry only)", i + 1));
            }
        }
        let secret = secret.strip_prefix("PLAIN:").map(str::to_string).unwrap_or(secret);
        out.push((name, secret, parts.filter(|r| !r.is_empty()).map(String::from).collect()));
    }
    Ok(out)
}

impl Auth {
    /// Reads the users and tokens files (relative paths from `base`, the properties file's folder).
    pub fn load(config: &AuthConfig, base: &Path) -> Result<Arc<Auth>, String> {
        let read = |file: &Option<String>, what: &str| -> Result<Vec<Principal>, String> {
            let Some(file) = file else {
                return Err(format!("authentication.method {what} needs its file (authentication.{}.file)", if what == "BASIC" { "basic.users" } else { "bearer.tokens" }));
            };
            let path = base.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let parsed = parse_principals(&path.display().to_string(), &text)?;
            Ok(parsed.into_iter().map(|(name, secret, roles)| Principal { name, secret, roles }).collect())
        };
        let users = if config.basic { read(&config.users_file, "BASIC")? } else { Vec::new() };
        let tokens = if config.bearer { read(&config.tokens_file, "BEARER")? } else { Vec::new() };
        Ok(Arc::new(Auth { config: config.clone(), users: users.into_iter().map(|p| (p.name.clone(), p)).collect(), tokens }))
    }

    /// The principal a request's `Authorization` header proves, if any.
    fn authenticate(&self, header: Option<&str>) -> Option<&Principal> {
        let header = header?;
        let (scheme, value) = header.split_once(' ')?;
        if self.config.basic && scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, password) = decoded.split_once(':')?;
            let found = self.users.get(user)?;
            return ferry_kafka::secrets_equal(found.secret.as_bytes(), password.as_bytes()).then_some(found);
        }
        if self.config.bearer && scheme.eq_ignore_ascii_case("bearer") {
            let token = value.trim().as_bytes();
            // Every token is compared, so the time taken does not say which one nearly matched.
            return self.tokens.iter().fold(None, |hit, p| if ferry_kafka::secrets_equal(p.secret.as_bytes(), token) { Some(p) } else { hit });
        }
        None
    }

    fn allowed(&self, p: &Principal) -> bool {
        self.config.roles.is_empty() || self.config.roles.contains("*") || p.roles.iter().any(|r| self.config.roles.contains(r) || self.config.readonly_roles.contains(r))
    }

    /// A principal may write unless every role it has is read-only.
    fn may_write(&self, p: &Principal) -> bool {
        p.roles.is_empty() || p.roles.iter().any(|r| !self.config.readonly_roles.contains(r))
    }

    fn challenge(&self) -> Response {
        let mut r = ApiError::new(401, "Unauthorized").into_response();
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        let scheme = if self.config.basic { format!("Basic realm=\"{}\"", self.config.realm) } else { format!("Bearer realm=\"{}\"", self.config.realm) };
        if let Ok(v) = HeaderValue::from_str(&scheme) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

/// The middleware: 401 without valid credentials, 403 (40301) for a role not allowed or a
/// read-only role writing.
pub async fn check(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    if auth.config.skip_paths.iter().any(|p| p == request.uri().path()) {
        return next.run(request).await;
    }
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(principal) = auth.authenticate(header) else {
        return auth.challenge();
    };
    if !auth.allowed(principal) {
        return ApiError::new(40301, format!("User {} is not allowed to access the registry (no role in authentication.roles)", principal.name)).into_response();
    }
    if is_write(request.method(), request.uri().path()) && !auth.may_write(principal) {
        return ApiError::new(40301, format!("User {} has a read-only role and cannot change the registry", principal.name)).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str, readonly: &[&str]) -> Auth {
        let config = AuthConfig { basic: true, bearer: true, realm: "SchemaRegistry".into(), readonly_roles: readonly.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        let ps: Vec<Principal> = parse_principals("users", text).unwrap().into_iter().map(|(name, secret, roles)| Principal { name, secret, roles }).collect();
        Auth { config, users: ps.iter().map(|p| (p.name.clone(), p.clone())).collect(), tokens: ps }
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn basic_and_bearer_prove_a_principal_and_roles_decide_writes() {
        let a = auth("# users\nadmin: s3cret,admin\nviewer: look, readonly\n", &["readonly"]);
        assert_eq!(a.authenticate(Some(&basic("admin", "s3cret"))).map(|p| p.name.as_str()), Some("admin"));
        assert!(a.authenticate(Some(&basic("admin", "wrong"))).is_none());
        assert!(a.authenticate(Some(&basic("nobody", "s3cret"))).is_none());
        assert!(a.authenticate(Some("Basic !!!")).is_none());
        assert!(a.authenticate(None).is_none());
        assert_eq!(a.authenticate(Some("Bearer look")).map(|p| p.name.as_str()), Some("viewer"));
        let viewer = a.authenticate(Some(&basic("viewer", "look"))).unwrap();
        assert!(!a.may_write(viewer) && a.allowed(viewer));
        assert!(a.may_write(a.authenticate(Some(&basic("admin", "s3cret"))).unwrap()));
    }

    #[test]
    fn bad_lines_name_file_and_line_and_never_the_secret() {
        let e = parse_principals("users.properties", "ok: pw\nbroken line\n").unwrap_err();
        assert_eq!(e, "users.properties:2: expected 'name: secret[,role…]'");
        let e = parse_principals("users.properties", "bob: MD5:164c88b302622e17050af52c89945d44,admin\n").unwrap_err();
        assert!(e.starts_with("users.properties:1: bob: MD5:") && !e.contains("164c88"), "{e}");
        assert_eq!(parse_principals("u", "a: PLAIN:x,r1,r2").unwrap(), vec![("a".into(), "x".into(), ["r1".to_string(), "r2".to_string()].into())]);
    }
}
