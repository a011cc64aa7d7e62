//! A client of Apache Flink's SQL Gateway REST API, for `ferry sql run --engine flink`: the API
//! version is negotiated (`GET /api_versions`), a session runs the job file's statements one by
//! one, and an operation's result (rows, the Flink job id of an INSERT) is read to its end.
//! Blocking (reqwest's blocking client): call it off an async runtime's threads.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The gateway's REST API versions Ferry speaks: the paths it uses are V1's, the row format of
/// results V2's (`rowFormat=JSON`); V3 and V4 add materialized tables and scripts.
const KNOWN_VERSIONS: [&str; 4] = ["V1", "V2", "V3", "V4"];

/// Why the gateway did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot reach the SQL Gateway at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the SQL Gateway at {url} answered {what}: {message}")]
    Refused { url: String, what: String, message: String },
    /// Flink refused a statement: its own words (the root cause first).
    #[error("{0}")]
    Statement(String),
    /// The JobManager's REST API (the jobs' metrics) could not be read.
    #[error("cannot read Flink's JobManager at {url}: {message}")]
    JobManager { url: String, message: String },
    #[error("{what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
}

/// A SQL Gateway, at its negotiated API version.
pub struct Gateway {
    url: String,
    /// The path prefix, `/v1` … `/v4`.
    version: String,
    client: reqwest::blocking::Client,
}

/// What a statement gave: its columns and rows (each row's change kind, then its fields), and
/// the id of the Flink job it started, if any.
#[derive(Debug, Clone, Default)]
pub struct StatementResult {
    pub job_id: Option<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl StatementResult {
    /// Row `row`'s field named `column` (as text).
    pub fn field(&self, row: usize, column: &str) -> Option<String> {
        let at = self.columns.iter().position(|c| c.eq_ignore_ascii_case(column))?;
        self.rows.get(row)?.get(at).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    }
}

impl Gateway {
    /// Connects to the gateway at `url` (`http://HOST:PORT`) and picks the newest API version
    /// both sides know.
    pub fn connect(url: &str) -> Result<Gateway, GatewayError> {
        let url = url.trim_end_matches('/').to_string();
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| GatewayError::Unreachable { url: url.clone(), message: e.to_string() })?;
        let mut gateway = Gateway { url, version: String::new(), client };
        let versions = gateway.request(reqwest::Method::GET, "/api_versions", None)?;
        let offered: Vec<String> = versions["versions"].as_array().map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_ascii_uppercase)).collect()).unwrap_or_default();
        let version = negotiate(&offered).ok_or_else(|| GatewayError::Refused { url: gateway.url.clone(), what: "GET /api_versions".into(), message: format!("no API version Ferry speaks (it offers {offered:?}; Ferry speaks {KNOWN_VERSIONS:?})") })?;
        gateway.version = format!("/{}", version.to_ascii_lowercase());
        Ok(gateway)
    }

    /// The negotiated API version (`v2`).
    pub fn version(&self) -> &str {
        self.version.trim_start_matches('/')
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, GatewayError> {
        let what = format!("{method} {path}");
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_string());
        }
        let response = request.send().map_err(|e| GatewayError::Unreachable { url: self.url.clone(), message: e.without_url().to_string() })?;
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(match errors(&value) {
                Some(m) => GatewayError::Statement(m),
                None => GatewayError::Refused { url: self.url.clone(), what, message: format!("HTTP {status}: {}", text.chars().take(500).collect::<String>()) },
            });
        }
        Ok(value)
    }

    /// Opens a session named `name` with `properties` (Flink configuration for its statements).
    pub fn open_session(&self, name: &str, properties: &[(String, String)]) -> Result<Session<'_>, GatewayError> {
        let properties: serde_json::Map<String, Value> = properties.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let answer = self.request(reqwest::Method::POST, &format!("{}/sessions", self.version), Some(&json!({"sessionName": name, "properties": properties})))?;
        let handle = answer["sessionHandle"].as_str().ok_or_else(|| GatewayError::Refused { url: self.url.clone(), what: "POST /sessions".into(), message: format!("no sessionHandle in {answer}") })?;
        Ok(Session { gateway: self, handle: handle.to_string() })
    }
}

/// The newest version in `offered` that Ferry knows.
fn negotiate(offered: &[String]) -> Option<&'static str> {
    KNOWN_VERSIONS.iter().rev().find(|v| offered.iter().any(|o| o == *v)).copied()
}

/// The gateway's error list as one message: Flink's root cause, without stack traces.
fn errors(body: &Value) -> Option<String> {
    let list = body["errors"].as_array()?;
    let mut causes: Vec<String> = Vec::new();
    for e in list.iter().filter_map(Value::as_str) {
        for line in e.lines() {
            let line = line.trim();
            // Exceptions' own lines ("Caused by: X: message" and the first), not their frames.
            if line.starts_with("at ") || line.starts_with("...") || line.starts_with('<') || line.starts_with("End of exception") || line.is_empty() || line == "Internal server error." {
                continue;
            }
            let line = line.strip_prefix("Caused by: ").unwrap_or(line);
            if !causes.iter().any(|c| c == line) {
                causes.push(line.to_string());
            }
        }
    }
    // The deepest cause says what is wrong.
    causes.pop()
}

/// A Flink job as `SHOW JOBS` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlinkJob {
    pub id: String,
    pub name: String,
    /// Flink's state: RUNNING, FINISHED, FAILED, CANCELED, …
    pub status: String,
}

/// The jobs of a `SHOW JOBS` result.
pub fn jobs_of(result: &StatementResult) -> Vec<FlinkJob> {
    (0..result.rows.len())
        .map(|r| FlinkJob { id: result.field(r, "job id").unwrap_or_default(), name: result.field(r, "job name").unwrap_or_default(), status: result.field(r, "status").unwrap_or_default() })
        .collect()
}

/// Whether a Flink job status is final.
pub fn terminal(status: &str) -> bool {
    matches!(status, "FINISHED" | "FAILED" | "CANCELED" | "SUSPENDED")
}

impl Gateway {
    /// The jobs the cluster behind the gateway knows.
    pub fn jobs(&self) -> Result<Vec<FlinkJob>, GatewayError> {
        let session = self.open_session("ferry-jobs", &[])?;
        let result = session.execute("SHOW JOBS", std::time::Duration::from_secs(60));
        session.close();
        Ok(jobs_of(&result?))
    }

    /// The REST address of the JobManager behind the gateway (`rest.address` and `rest.port` of
    /// the configuration a session gets), for the jobs' metrics.
    pub fn jobmanager_url(&self) -> Result<String, GatewayError> {
        let session = self.open_session("ferry-config", &[])?;
        let answer = self.request(reqwest::Method::GET, &format!("{}/sessions/{}", self.version, session.handle), None);
        session.close();
        let answer = answer?;
        let property = |k: &str| answer["properties"][k].as_str().map(str::to_string);
        match (property("rest.address"), property("rest.port")) {
            (Some(host), Some(port)) => Ok(format!("http://{host}:{port}")),
            _ => Err(GatewayError::Refused { url: self.url.clone(), what: "GET /sessions/{handle}".into(), message: "its configuration has no rest.address and rest.port: the JobManager's REST API is unknown".into() }),
        }
    }

    /// Stops job `id` with a savepoint (`drain`: event time runs to its end first); the
    /// savepoint's path.
    pub fn stop_with_savepoint(&self, id: &str, drain: bool) -> Result<String, GatewayError> {
        let session = self.open_session("ferry-stop", &[])?;
        let statement = format!("STOP JOB '{}' WITH SAVEPOINT{}", id.replace('\'', "''"), if drain { " WITH DRAIN" } else { "" });
        let result = session.execute(&statement, std::time::Duration::from_secs(300));
        session.close();
        Ok(result?.field(0, "savepoint path").unwrap_or_default())
    }
}

/// A statement that started a Flink job, with what starts it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub job_id: String,
    /// Its line in the job file.
    pub line: u64,
    /// The statements before it that start no job (CREATE, SET, …), then it.
    pub statements: Vec<String>,
}

/// Why a submission stopped: the line of the statement, and what went wrong.
#[derive(Debug)]
pub struct SubmitError {
    pub line: u64,
    pub error: GatewayError,
}

impl Gateway {
    /// Runs `statements` (each with its line) in one session configured with `properties`, in
    /// order; each that starts a Flink job is told with what starts it again. Stops at the first
    /// statement the gateway or Flink refuses (the jobs before it run on).
    pub fn submit(&self, session: &str, properties: &[(String, String)], statements: &[(u64, String)], timeout: Duration) -> Result<Vec<Submitted>, SubmitError> {
        let open = self.open_session(session, properties).map_err(|error| SubmitError { line: statements.first().map_or(0, |s| s.0), error })?;
        let mut context: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for (line, text) in statements {
            match open.execute(text, timeout) {
                Ok(result) => match result.job_id {
                    Some(job_id) => out.push(Submitted { job_id, line: *line, statements: context.iter().cloned().chain([text.clone()]).collect() }),
                    None => context.push(text.clone()),
                },
                Err(error) => {
                    open.close();
                    return Err(SubmitError { line: *line, error });
                }
            }
        }
        open.close();
        Ok(out)
    }
}

/// A session of the gateway: its statements share their tables and settings.
pub struct Session<'a> {
    gateway: &'a Gateway,
    handle: String,
}

impl Session<'_> {
    /// Runs `statement` and reads its whole result (an INSERT's is the job id once Flink has
    /// taken the job; a query's rows until the end, which a streaming query never reaches:
    /// use it for statements that end).
    pub fn execute(&self, statement: &str, timeout: Duration) -> Result<StatementResult, GatewayError> {
        let g = self.gateway;
        let base = format!("{}/sessions/{}", g.version, self.handle);
        let answer = g.request(reqwest::Method::POST, &format!("{base}/statements"), Some(&json!({"statement": statement})))?;
        let operation = answer["operationHandle"].as_str().ok_or_else(|| GatewayError::Refused { url: g.url.clone(), what: "POST statements".into(), message: format!("no operationHandle in {answer}") })?.to_string();
        let started = Instant::now();
        let row_format = if g.version == "/v1" { "" } else { "?rowFormat=JSON" };
        let mut next = Some(format!("{base}/operations/{operation}/result/0{row_format}"));
        let mut result = StatementResult::default();
        while let Some(path) = next.take() {
            let page = g.request(reqwest::Method::GET, &path, None)?;
            match page["resultType"].as_str() {
                Some("NOT_READY") => {
                    if started.elapsed() > timeout {
                        let _ = g.request(reqwest::Method::POST, &format!("{base}/operations/{operation}/cancel"), None);
                        return Err(GatewayError::Timeout { what: format!("the statement {}", first_line(statement)), timeout });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    next = Some(path);
                    continue;
                }
                _ => {
                    // PAYLOAD, or EOS (which may hold the last rows too).
                    let results = &page["results"];
                    if result.columns.is_empty() {
                        result.columns = results["columns"].as_array().map(|c| c.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()).unwrap_or_default();
                    }
                    for row in results["data"].as_array().into_iter().flatten() {
                        result.rows.push(row["fields"].as_array().cloned().unwrap_or_default());
                    }
                    next = page["nextResultUri"].as_str().map(str::to_string);
                }
            }
            if let Some(id) = page["jobID"].as_str() {
                result.job_id = Some(id.to_string());
            }
        }
        let _ = g.request(reqwest::Method::DELETE, &format!("{base}/operations/{operation}/close"), None);
        // V1 results carry an INSERT's job id as its one row's field.
        if result.job_id.is_none() && result.columns.iter().any(|c| c.eq_ignore_ascii_case("job id")) {
            result.job_id = result.field(0, "job id");
        }
        Ok(result)
    }

    /// Closes the session (its tables and settings go).
    pub fn close(self) {
        let _ = self.gateway.request(reqwest::Method::DELETE, &format!("{}/sessions/{}", self.gateway.version, self.handle), None);
    }
}

fn first_line(statement: &str) -> String {
    let line = statement.lines().next().unwrap_or_default();
    if line.len() > 80 {
        format!("{}…", line.chars().take(80).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_version_both_know_is_taken() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(negotiate(&offered(&["V1", "V2"])), Some("V2"));
        assert_eq!(negotiate(&offered(&["V1", "V2", "V3", "V4", "V9"])), Some("V4"));
        assert_eq!(negotiate(&offered(&["V9"])), None);
    }

    #[test]
    fn flinks_errors_are_told_by_their_root_cause_without_frames() {
        let body = json!({"errors": ["Internal server error.", "<Exception on server side:\norg.apache.flink.table.gateway.api.utils.SqlGatewayException: Failed to fetchResults.\n\tat org.apache.flink.X.y(X.java:1)\nCaused by: org.apache.flink.table.api.ValidationException: Object 'nope' not found\n\tat org.apache.flink.Z.z(Z.java:2)\n\t... 3 more\n\nEnd of exception on server side>"]});
        let m = errors(&body).unwrap();
        assert!(m.starts_with("org.apache.flink.table.api.ValidationException: Object 'nope' not found"), "{m}");
        assert!(!m.contains("X.java"), "{m}");
        assert_eq!(errors(&json!({"x": 1})), None);
    }
}
