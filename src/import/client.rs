//! The HTTP side of `vellum import`: a thin client over the public API (SPEC §5, §6).
//! It knows nothing of the server's internals; only the wire format.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::Value;

use crate::model::{Oid, Tstamp};

/// Everything but RFC 3986's unreserved characters is escaped in a path segment, so names
/// with spaces, `#`, `?`, `%` or non-ASCII letters reach the server as one segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Who the importer is to the server.
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    /// A JWT, sent in the `userpolicy` header.
    Token(String),
    /// A distinguished name, sent as `USER_DN` (believed only from a trusted proxy).
    UserDn(String),
}

/// A failed request.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// No answer: connection refused or reset, timeout, or the request body failed.
    Transport(String),
    /// An answer with an error status and the server's `{"error": {...}}` body.
    Status {
        status: u16,
        code: String,
        message: String,
        index: Option<usize>,
    },
}

impl ApiError {
    pub fn is_auth(&self) -> bool {
        matches!(self, ApiError::Status { status: 401, .. })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Transport(m) => write!(f, "{m}"),
            ApiError::Status {
                status,
                code,
                message,
                ..
            } => {
                if code.is_empty() {
                    write!(f, "HTTP {status}: {message}")
                } else {
                    write!(f, "HTTP {status} {code}: {message}")
                }
            }
        }
    }
}

/// A child as GET /list shows it: only the fields the importer needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Child {
    pub name: String,
    pub oid: Oid,
    #[serde(default)]
    pub tstamp: Option<Tstamp>,
    #[serde(default)]
    pub isfile: bool,
    #[serde(default)]
    pub sha256plain: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

/// The limits GET /config reports (SPEC §5: "configurable and reported"); absent ones
/// keep conservative defaults.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_events_per_write: usize,
    pub max_metadata_bytes: usize,
    pub inline_max_bytes: u64,
    pub max_file_bytes: u64,
}

impl ServerLimits {
    fn from_config(cfg: &Value) -> ServerLimits {
        let l = &cfg["limits"];
        let num = |k: &str, d: u64| l[k].as_u64().unwrap_or(d);
        ServerLimits {
            max_events_per_write: num("max_events_per_write", 1000) as usize,
            max_metadata_bytes: num("max_metadata_bytes", 1 << 20) as usize,
            inline_max_bytes: num("inline_max_bytes", 0),
            max_file_bytes: num("max_file_bytes", u64::MAX),
        }
    }
}

pub struct Api {
    client: reqwest::Client,
    base: String,
    auth: Auth,
}

fn transport(e: reqwest::Error) -> ApiError {
    // reqwest's Display is terse ("error sending request"); its sources say why.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    ApiError::Transport(msg)
}

/// Turns an error response into an `ApiError`, reading the server's JSON error body.
async fn status_error(resp: reqwest::Response) -> ApiError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let e = &v["error"];
    let message = e["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().chars().take(300).collect());
    ApiError::Status {
        status,
        code: e["code"].as_str().unwrap_or("").to_string(),
        message,
        index: e["index"].as_u64().map(|i| i as usize),
    }
}

impl Api {
    pub fn new(base: &str, auth: Auth) -> Result<Api, String> {
        let base = base.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base).map_err(|e| format!("--url {base:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("--url {base:?}: use http:// or https://"));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A stalled server is reported, never waited on forever; an upload that is
            // making progress is never cut short (this bounds each read, not the request).
            .read_timeout(Duration::from_secs(300))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Api { client, base, auth })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn with_auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::Anonymous => rb,
            Auth::Token(t) => rb.header("userpolicy", t),
            Auth::UserDn(dn) => rb.header("USER_DN", dn),
        }
    }

    async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes, ApiError> {
        let rb = self.client.get(format!("{}{path}", self.base));
        let resp = self.with_auth(rb).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        resp.bytes().await.map_err(transport)
    }

    async fn get_json(&self, path: &str) -> Result<Value, ApiError> {
        let body = self.get_bytes(path).await?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::Transport(format!("GET {path}: the answer is not JSON ({e})")))
    }

    /// GET /config: the server's limits (no identity needed).
    pub async fn limits(&self) -> Result<ServerLimits, ApiError> {
        Ok(ServerLimits::from_config(&self.get_json("/config").await?))
    }

    /// GET /self: the caller's claims (checks the credentials once, before any work).
    pub async fn whoami(&self) -> Result<Value, ApiError> {
        self.get_json("/self").await
    }

    /// GET /props of a path given as an oid followed by names.
    pub async fn props(&self, start: Oid, names: &[String]) -> Result<Value, ApiError> {
        let mut p = format!("/props/{start}");
        for n in names {
            p.push('/');
            p.push_str(&encode_segment(n));
        }
        self.get_json(&p).await
    }

    /// GET /list/{oid}: every live child the caller may read.
    pub async fn list(&self, dir: Oid) -> Result<Vec<Child>, ApiError> {
        let path = format!("/list/{dir}");
        let body = self.get_bytes(&path).await?;
        serde_json::from_slice(&body).map_err(|e| {
            // A listing that fails mid-stream ends as truncated JSON.
            ApiError::Transport(format!("GET {path}: incomplete or malformed listing ({e})"))
        })
    }

    /// POST /write: one transaction. Returns the stored events, request order first.
    pub async fn write(&self, form: reqwest::multipart::Form) -> Result<Vec<Value>, ApiError> {
        let rb = self
            .client
            .post(format!("{}/write", self.base))
            .multipart(form);
        let resp = self.with_auth(rb).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let body = resp.bytes().await.map_err(transport)?;
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::Transport(format!("POST /write: the answer is not a JSON array ({e})"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped_whole() {
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_segment("jane@x.com"), "jane%40x.com");
        assert_eq!(encode_segment("café.txt"), "caf%C3%A9.txt");
        assert_eq!(encode_segment("100%#?"), "100%25%23%3F");
    }

    #[test]
    fn limits_default_when_absent() {
        let l = ServerLimits::from_config(&serde_json::json!({}));
        assert_eq!(l.max_events_per_write, 1000);
        let l = ServerLimits::from_config(
            &serde_json::json!({"limits": {"max_events_per_write": 7, "inline_max_bytes": 65536}}),
        );
        assert_eq!(l.max_events_per_write, 7);
        assert_eq!(l.inline_max_bytes, 65536);
    }
}
