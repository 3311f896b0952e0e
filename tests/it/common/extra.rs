//! Extra helpers for the integration tests, next to the shared harness (`common/mod.rs`):
//! `use crate::common::extra::*;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::common::TestApp;

pub const JANE: &str = "jane.doe@deciphernow.com";
pub const BOB: &str = "bob.smith@deciphernow.com";
pub const JANE_DN: &str = "CN=jane.doe,OU=People,O=Decipher Technology Studios,C=US";
pub const BOB_DN: &str = "CN=bob.smith,OU=People,O=Decipher Technology Studios,C=US";
pub const ALL_LETTERS: [&str; 6] = ["C", "R", "U", "D", "X", "P"];

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A tstamp-formatted value (16 lower-case hex digits).
pub fn hex16(v: u64) -> String {
    format!("{v:016x}")
}

// ---------------------------------------------------------------------------------------
// Policies (the gm-data Lisp language as JSON, and Rego)
// ---------------------------------------------------------------------------------------

/// `owner-full-ro-all email <owner>`: the owner has every letter, everyone else R and X.
pub fn owner_full_ro_all(email: &str) -> Value {
    json!({
        "label": format!("owner-full-ro-all {email}"),
        "requirements": {"f": "owner-full-ro-all", "a": [{"v": "email"}, {"v": email}]}
    })
}

/// Only the owner (every letter); nobody else anything.
pub fn owner_only(email: &str) -> Value {
    json!({
        "label": format!("owner only {email}"),
        "requirements": {"f": "if", "a": [
            {"f": "contains", "a": [{"v": "email"}, {"v": email}]},
            {"f": "yield-all", "a": []}
        ]}
    })
}

/// Everyone (anonymous included) gets exactly `letters`.
pub fn everyone(letters: &[&str]) -> Value {
    let a: Vec<Value> = letters.iter().map(|l| json!({"v": l})).collect();
    json!({
        "label": format!("everyone {}", letters.join("")),
        "requirements": {"f": "yield", "a": a}
    })
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// Status and body (JSON if it parses, else the text as a JSON string).
pub async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// Asserts the SPEC §5 error shape `{"error": {"code", "message", "index"}}`; returns the
/// inner object.
pub fn assert_error_shape(body: &Value, status: u16, want_index: Option<usize>) -> Value {
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("status {status}: body has no \"error\" object: {body}"));
    let code = err["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error.code is not a string: {body}"));
    assert!(!code.is_empty(), "error.code is empty: {body}");
    assert!(
        err["message"].is_string(),
        "error.message is not a string: {body}"
    );
    if let Some(i) = want_index {
        assert_eq!(
            err["index"],
            json!(i),
            "error.index should name event {i}: {body}"
        );
    }
    err.clone()
}

/// Awaits a request (futures are lazy: nothing is sent before the "before" fingerprint is
/// taken), asserts its status and error shape, and that the store is unchanged. Returns
/// the inner error object.
pub async fn refused(
    app: &TestApp,
    status: u16,
    index: Option<usize>,
    request: impl std::future::Future<Output = reqwest::Response>,
) -> Value {
    let before = app.fingerprint();
    let (s, body) = status_json(request.await).await;
    assert_eq!(s, status, "unexpected status; body: {body}");
    let err = assert_error_shape(&body, status, index);
    assert_eq!(
        before,
        app.fingerprint(),
        "a refused request changed the store: {body}"
    );
    err
}

// ---------------------------------------------------------------------------------------
// Requests beyond the harness's
// ---------------------------------------------------------------------------------------

/// POST /write with the metadata part followed by file parts.
pub async fn write_parts(
    app: &TestApp,
    token: Option<&str>,
    metadata: &Value,
    files: &[(&str, &[u8])],
) -> reqwest::Response {
    let mut form = Form::new().part(
        "metadata",
        Part::text(metadata.to_string()).file_name("metadata.json"),
    );
    for (name, bytes) in files {
        form = form.part(
            "file",
            Part::bytes(bytes.to_vec())
                .file_name(name.to_string())
                .mime_str("application/octet-stream")
                .unwrap(),
        );
    }
    let mut req = app
        .client
        .post(format!("{}/write", app.base))
        .multipart(form);
    if let Some(t) = token {
        req = req.header("userpolicy", t);
    }
    req.send().await.unwrap()
}

/// POST /write of `metadata` alone, with arbitrary headers (credentials other than the
/// `userpolicy` header: `authorization`, `cookie`, `USER_DN`).
pub async fn write_with(
    app: &TestApp,
    headers: &[(&str, &str)],
    metadata: &Value,
) -> reqwest::Response {
    let form = Form::new().part("metadata", Part::text(metadata.to_string()));
    let mut req = app
        .client
        .post(format!("{}/write", app.base))
        .multipart(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// POST /write with a raw body and content type.
pub async fn write_body(
    app: &TestApp,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = app.client.post(format!("{}/write", app.base)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = token {
        req = req.header("userpolicy", t);
    }
    req.send().await.unwrap()
}

/// GET with arbitrary headers.
pub async fn get_with(app_base: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("{app_base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// A folder made with one C; returns the stored event.
pub async fn mkdir(
    app: &TestApp,
    token: &str,
    parent: &str,
    name: &str,
    policy: Option<Value>,
) -> Value {
    let mut ev = json!({"action": "C", "parentoid": parent, "name": name});
    if let Some(p) = policy {
        ev["objectpolicy"] = p;
    }
    let out = app.write_ok(Some(token), &json!([ev])).await;
    out.into_iter().next().unwrap()
}

/// The caller's home folder under /world (named after their email), with no policy
/// (so it is owner-only).
pub async fn home(app: &TestApp, token: &str, email: &str) -> Value {
    let ns = app.namespace_oid().await;
    mkdir(app, token, &ns, email, None).await
}

pub fn oid_of(e: &Value) -> String {
    e["oid"]
        .as_str()
        .unwrap_or_else(|| panic!("no oid in {e}"))
        .to_string()
}

pub fn letters(e: &Value) -> Vec<String> {
    e["policy"]["policy"]
        .as_array()
        .unwrap_or_else(|| panic!("no policy.policy in {e}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Hand-built JWTs
// ---------------------------------------------------------------------------------------

/// An ES512 signer from a PKCS#8 PEM, that signs exactly the header and claims given.
pub struct Es512 {
    key: p521::ecdsa::SigningKey,
}

impl Es512 {
    pub fn from_pem(pem: &str) -> Es512 {
        use p521::pkcs8::DecodePrivateKey;
        let sk = p521::SecretKey::from_pkcs8_pem(pem).expect("a P-521 PKCS#8 PEM");
        Es512 {
            key: p521::ecdsa::SigningKey::from_bytes(&sk.to_bytes()).unwrap(),
        }
    }

    pub fn random() -> Es512 {
        let sk = p521::SecretKey::random(&mut rand_core::OsRng);
        Es512 {
            key: p521::ecdsa::SigningKey::from_bytes(&sk.to_bytes()).unwrap(),
        }
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        use p521::ecdsa::signature::Signer as _;
        let msg = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig: p521::ecdsa::Signature = self.key.sign(msg.as_bytes());
        format!("{msg}.{}", b64url(&sig.to_bytes()))
    }

    /// With the standard header `{"alg":"ES512","typ":"JWT"}`.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(&json!({"alg": "ES512", "typ": "JWT"}), claims)
    }
}

/// An unsigned token (`alg: none`), with an empty signature part.
pub fn alg_none_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// HS256 with an arbitrary secret (e.g. the server's public key PEM: algorithm confusion).
pub fn hs256_token(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// ES256 from a fresh P-256 key (a valid token of another family than the server's).
pub fn es256_token_fresh_key(claims: &Value) -> String {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let sk = p256::SecretKey::random(&mut rand_core::OsRng);
    let pem = sk.to_pkcs8_pem(LineEnding::LF).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Claims with `exp` one hour ahead (and `iat` now), for hand-built tokens.
pub fn fresh(mut claims: Value) -> Value {
    claims["exp"] = json!(now_secs() + 3600);
    claims["iat"] = json!(now_secs());
    claims
}

// ---------------------------------------------------------------------------------------
// A server whose ES512 private key the test keeps
// ---------------------------------------------------------------------------------------

/// Like `common::spawn_app_with`, but the test keeps the private key PEM, so it can sign
/// tokens byte for byte (expired, odd claim types). (The harness passes its own
/// `--jwt-pub`, and clap refuses a repeated flag, so this builds its own server.)
pub struct KeyedApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub pem: String,
    pub signer: Es512,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for KeyedApp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

pub async fn spawn_keyed_app(extra: &[&str]) -> KeyedApp {
    let st = crate::common::start_server(extra).await;
    KeyedApp {
        addr: st.addr,
        base: format!("http://{}", st.addr),
        client: reqwest::Client::new(),
        signer: Es512::from_pem(&st.pem),
        pem: st.pem,
        data_dir: st.data_dir,
        _dir: st.dir,
        shutdown: Some(st.shutdown),
    }
}

impl KeyedApp {
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("userpolicy", t);
        }
        req.send().await.unwrap()
    }

    pub async fn write(&self, token: Option<&str>, metadata: &Value) -> reqwest::Response {
        let form = Form::new().part(
            "metadata",
            Part::text(metadata.to_string()).file_name("metadata.json"),
        );
        let mut req = self
            .client
            .post(format!("{}/write", self.base))
            .multipart(form);
        if let Some(t) = token {
            req = req.header("userpolicy", t);
        }
        req.send().await.unwrap()
    }

    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.data_dir)
    }
}

pub use crate::common::fingerprint_of;

/// Creates file `name` under the root with `bytes` as its content (multipart, as a client
/// sends it); the stored event. Fails the test unless the answer is 200.
pub async fn upload_file(base: &str, token: &str, name: &str, bytes: Vec<u8>) -> Value {
    let meta = json!([{"action": "C", "parentoid": "1", "name": name, "isfile": true}]);
    let form = reqwest::multipart::Form::new()
        .part("metadata", reqwest::multipart::Part::text(meta.to_string()))
        .part(
            "data",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    let resp = reqwest::Client::new()
        .post(format!("{base}/write"))
        .header("userpolicy", token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "upload failed: {body}");
    body[0].clone()
}
