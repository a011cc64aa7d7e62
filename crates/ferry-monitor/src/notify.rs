//! Notifiers: where alert events go. A webhook gets the event as JSON, a Slack-compatible webhook
//! gets `{"text": …}`, e-mail goes over SMTP (plain, STARTTLS or TLS). Each send is tried three
//! times (1 s, then 4 s apart); a notifier that still fails is reported with the event, never
//! retried forever.

use std::collections::BTreeMap;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::alerts::Event;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// No TLS (a relay on the same host or network).
    #[default]
    None,
    /// Plain connection upgraded with STARTTLS (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// A notifier as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Notifier {
    /// POSTs each event as JSON (`policy`, `state`, `entity`, `cluster`, `name`, `metric`,
    /// `value`, `condition`, `since_ms`, `at_ms`, `message`).
    Webhook {
        url: String,
        /// Extra request headers (an `Authorization` the receiver wants); values are not shown back.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): POSTs `{"text": message}`.
    Slack { url: String },
    /// E-mail over SMTP: the message as subject, the event as body.
    Email {
        /// `host:port` of the SMTP server.
        smtp: String,
        #[serde(default)]
        security: SmtpSecurity,
        from: String,
        to: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// Not shown back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
}

const REDACTED: &str = "<redacted>";

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url: '{url}' is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("url: '{url}' must be an http or https URL with a host"));
    }
    Ok(())
}

fn split_host_port(smtp: &str) -> Result<(String, u16), String> {
    let (host, port) = smtp.rsplit_once(':').ok_or_else(|| format!("smtp: '{smtp}' must be host:port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("smtp: '{port}' is not a port"))?;
    if host.is_empty() {
        return Err(format!("smtp: '{smtp}' has no host"));
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

impl Notifier {
    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Notifier::Webhook { url, headers } => {
                check_url(url)?;
                for (k, v) in headers {
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("headers: '{k}' is not a header name"))?;
                    reqwest::header::HeaderValue::from_str(v).map_err(|_| format!("headers: the value of '{k}' is not a header value"))?;
                }
                Ok(())
            }
            Notifier::Slack { url } => check_url(url),
            Notifier::Email { smtp, from, to, username, password, .. } => {
                split_host_port(smtp)?;
                from.parse::<Mailbox>().map_err(|e| format!("from: '{from}' is not an e-mail address: {e}"))?;
                if to.is_empty() {
                    return Err("to: at least one recipient".into());
                }
                for t in to {
                    t.parse::<Mailbox>().map_err(|e| format!("to: '{t}' is not an e-mail address: {e}"))?;
                }
                if username.is_some() != password.is_some() {
                    return Err("username/password: give both or neither".into());
                }
                Ok(())
            }
        }
    }

    /// As the API shows it: secrets replaced.
    pub fn redacted(&self) -> Notifier {
        let mut n = self.clone();
        match &mut n {
            Notifier::Webhook { headers, .. } => headers.values_mut().for_each(|v| *v = REDACTED.into()),
            Notifier::Email { password, .. } => {
                if let Some(p) = password.as_mut() {
                    *p = REDACTED.into();
                }
            }
            Notifier::Slack { .. } => {}
        }
        n
    }

    /// Keeps the stored secrets where an update sends the redacted placeholder back.
    pub fn keep_secrets_of(&mut self, old: &Notifier) {
        match (self, old) {
            (Notifier::Webhook { headers, .. }, Notifier::Webhook { headers: before, .. }) => {
                for (k, v) in headers.iter_mut() {
                    if v == REDACTED {
                        if let Some(b) = before.get(k) {
                            v.clone_from(b);
                        }
                    }
                }
            }
            (Notifier::Email { password: Some(p), .. }, Notifier::Email { password: Some(before), .. }) if p == REDACTED => p.clone_from(before),
            _ => {}
        }
    }
}

/// Sends events (one HTTP client for every webhook).
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
}

impl Default for Sender {
    fn default() -> Self {
        Sender::new()
    }
}

impl Sender {
    pub fn new() -> Sender {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Sender { http }
    }

    /// Sends `event` through `notifier`, three tries; the last error if none got through.
    pub async fn send(&self, notifier: &Notifier, event: &Event) -> Result<(), String> {
        let mut last = String::new();
        for (attempt, pause) in [(1, 1), (2, 4), (3, 0)] {
            match self.send_once(notifier, event).await {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("attempt {attempt}: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(pause)).await;
        }
        Err(last)
    }

    /// POSTs a JSON body; any answer but 2xx is an error naming the URL.
    async fn post(&self, url: &str, headers: &BTreeMap<String, String>, body: Vec<u8>) -> Result<(), String> {
        let mut req = self.http.post(url).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await.map_err(|e| format!("POST {url}: {e}"))?;
        resp.error_for_status().map(|_| ()).map_err(|e| format!("POST {url}: {e}"))
    }

    async fn send_once(&self, notifier: &Notifier, event: &Event) -> Result<(), String> {
        match notifier {
            Notifier::Webhook { url, headers } => self.post(url, headers, serde_json::to_vec(event).map_err(|e| e.to_string())?).await,
            Notifier::Slack { url } => self.post(url, &BTreeMap::new(), serde_json::json!({ "text": event.message }).to_string().into_bytes()).await,
            Notifier::Email { smtp, security, from, to, username, password } => {
                let (host, port) = split_host_port(smtp)?;
                let builder = match security {
                    SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
                    SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(|e| format!("smtp {smtp}: {e}"))?,
                    SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(|e| format!("smtp {smtp}: {e}"))?,
                };
                let mut builder = builder.port(port).timeout(Some(Duration::from_secs(10)));
                if let (Some(u), Some(p)) = (username, password) {
                    builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
                }
                let mut message = Message::builder().from(from.parse::<Mailbox>().map_err(|e| format!("from: {e}"))?).subject(event.message.clone());
                for t in to {
                    message = message.to(t.parse::<Mailbox>().map_err(|e| format!("to: {e}"))?);
                }
                let body = serde_json::to_string_pretty(event).map_err(|e| e.to_string())?;
                let message = message.body(format!("{}\n\n{body}\n", event.message)).map_err(|e| format!("e-mail: {e}"))?;
                builder.build().send(message).await.map(|_| ()).map_err(|e| format!("smtp {smtp}: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_secrets_never_shown() {
        let n: Notifier = serde_json::from_str(r#"{"type":"webhook","url":"http://127.0.0.1:9/hook","headers":{"Authorization":"Bearer x"}}"#).unwrap();
        n.validate().unwrap();
        assert_eq!(serde_json::to_value(n.redacted()).unwrap()["headers"]["Authorization"], REDACTED);
        let mut again = n.redacted();
        again.keep_secrets_of(&n);
        assert_eq!(again, n, "the placeholder sent back keeps the stored secret");
        let bad = |json: &str| serde_json::from_str::<Notifier>(json).unwrap().validate().unwrap_err();
        assert!(bad(r#"{"type":"slack","url":"ftp://x"}"#).starts_with("url:"));
        assert!(bad(r#"{"type":"email","smtp":"mail","from":"a@b.c","to":["d@e.f"]}"#).starts_with("smtp:"));
        assert!(bad(r#"{"type":"email","smtp":"mail:25","from":"nobody","to":["d@e.f"]}"#).starts_with("from:"));
        assert!(bad(r#"{"type":"email","smtp":"mail:25","from":"a@b.c","to":[]}"#).starts_with("to:"));
        assert!(serde_json::from_str::<Notifier>(r#"{"type":"pager","url":"http://x"}"#).is_err());
    }
}
