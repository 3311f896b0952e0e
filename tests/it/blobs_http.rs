//! File contents over HTTP (SPEC §5–§7): uploads in every multipart shape the gm-data tutorial
//! shows (seeds/004: the curl script's two parts both named `file`, the raw `metadata` + `data`
//! parts, the bigDir transaction), GET/HEAD /stream with ranges, versions, directories and
//! permissions, what lands on disk or in the bucket (no plaintext, tamper detection), what a
//! refused transaction leaves behind (nothing), purges, and the `blobkey` privilege.
//!
//! Tests that depend on where blobs live run against both backends: the local filesystem
//! (`DATA_DIR/blobs`) and a real S3-compatible server (s3s-fs, in-process, see common/s3.rs).

use crate::common;
use crate::common::extra;
use crate::common::rng;
use crate::common::s3;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use common::TestApp;
use extra::*;
use reqwest::header::HeaderMap;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use rng::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ROOT_OID: &str = "0000000000000001";
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The blob store's chunk size (SPEC §7's "e.g. 64 KiB"), only used to aim tampering.
const CHUNK: usize = 64 * KIB;
const BUCKET: &str = "vellum-files";
const PARTITION: &str = "tenant-a/blobs";
const PREFIX: &str = "/services/gm-data/0.1";

/// The Rego v0 policy of the seed's curl script.
const SEED_REGO: &str = r#"package policy inOrg{input.claims.values.email[_]=="localuser@email.com"}C{inOrg}R{inOrg}U{inOrg}D{inOrg}X{inOrg}P{inOrg}"#;
const ROB_EMAIL: &str = "localuser@email.com";

/// The two files of the seed's raw multipart examples.
const TIMER_GO: &str = "package client\n\nimport \"time\"\n\ntype Timer struct {\n  Counter int64\n  Start   time.Time\n  Elapsed time.Duration\n}\n\nfunc NewTimer() *Timer {\n  return &Timer{Start: time.Now()}\n}\n\nfunc (t *Timer) Add(e int64) {\n  t.Counter += 3\n}\n\nfunc (t *Timer) Stop() {\n  t.Elapsed = time.Since(t.Start)\n}\n";
const TESTLOCAL: &str = "#!/bin/bash\n\n\nexport CLIENT_ADDRESS=localhost\nexport CLIENT_PORT=8181\nexport CLIENT_USE_TLS=false\nexport CLIENT_PREFIX=\nGOCACHE=off go test -v\n";

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Local,
    S3,
}

fn backends() -> [Backend; 2] {
    [Backend::Local, Backend::S3]
}

/// A server on one backend, the S3 server behind it (kept alive), and raw access to the
/// stored blob files.
struct Env {
    app: TestApp,
    backend: Backend,
    s3: Option<s3::S3Server>,
    /// A client with a timeout, so a stalled stream fails the test instead of hanging it.
    http: reqwest::Client,
}

/// Starts a server on `backend`; `inline_max` sets `--inline-max-bytes` (None: default).
async fn spawn(backend: Backend, inline_max: Option<u64>) -> Env {
    spawn_with(backend, inline_max, &[]).await
}

async fn spawn_with(backend: Backend, inline_max: Option<u64>, extra_flags: &[&str]) -> Env {
    let mut flags: Vec<String> = Vec::new();
    let s3 = match backend {
        Backend::Local => None,
        Backend::S3 => {
            let server = s3::S3Server::start();
            server.create_bucket(BUCKET);
            // USES3 -> --uses3, FILE_BUCKET -> --file-bucket, ...
            for (var, value) in server.env(BUCKET, PARTITION) {
                flags.push(format!("--{}", var.to_ascii_lowercase().replace('_', "-")));
                flags.push(value);
            }
            Some(server)
        }
    };
    if let Some(n) = inline_max {
        flags.push("--inline-max-bytes".into());
        flags.push(n.to_string());
    }
    flags.extend(extra_flags.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = common::spawn_app_with(&refs).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    Env {
        app,
        backend,
        s3,
        http,
    }
}

impl Env {
    /// The folder the backend keeps blob objects in: `DATA_DIR/blobs`, or the bucket.
    fn blob_root(&self) -> PathBuf {
        match &self.s3 {
            None => self.app.data_dir.join("blobs"),
            Some(s) => s.bucket_dir(BUCKET),
        }
    }

    /// Where the blob `rname` is stored: `FILE_PARTITION/<rname>` (SPEC §7).
    fn object_path(&self, rname: &str) -> PathBuf {
        match self.backend {
            Backend::Local => self.blob_root().join(rname),
            Backend::S3 => self.blob_root().join(PARTITION).join(rname),
        }
    }

    /// Every file in the blob store (objects, and any staging file), relative, sorted.
    fn objects(&self) -> Vec<String> {
        let root = self.blob_root();
        let mut out: Vec<String> = all_files(&root)
            .into_iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        out.sort();
        out
    }

    /// s3s-fs keeps multipart uploads in progress as `.upload*` files in its root.
    fn s3_uploads_in_progress(&self) -> Vec<PathBuf> {
        match &self.s3 {
            None => Vec::new(),
            Some(s) => std::fs::read_dir(s.root_dir())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".upload")
                })
                .collect(),
        }
    }

    /// Every folder holding bytes this server wrote: the data folder and s3s-fs's root.
    fn scan_roots(&self) -> Vec<PathBuf> {
        let mut v = vec![self.app.data_dir.clone()];
        if let Some(s) = &self.s3 {
            v.push(s.root_dir().to_path_buf());
        }
        v
    }

    fn what(&self) -> String {
        format!("{:?}", self.backend)
    }

    async fn upload(&self, token: &str, meta: &Value, files: &[(&str, &[u8])]) -> (u16, Value) {
        status_json(write_parts(&self.app, Some(token), meta, files).await).await
    }

    async fn upload_ok(&self, token: &str, meta: &Value, files: &[(&str, &[u8])]) -> Vec<Value> {
        let (s, body) = self.upload(token, meta, files).await;
        assert_eq!(s, 200, "{}: write failed: {body}", self.what());
        body.as_array().unwrap().clone()
    }

    /// Creates files under `parent`, (name, content) each, in one transaction; their events.
    async fn create_files(&self, token: &str, parent: &str, files: &[(&str, &[u8])]) -> Vec<Value> {
        let events: Vec<Value> = files.iter().map(|(n, _)| file_event(parent, n)).collect();
        self.upload_ok(token, &Value::Array(events), files).await
    }

    /// Creates file `name` under `parent` with `content`; its event.
    async fn create_file(&self, token: &str, parent: &str, name: &str, content: &[u8]) -> Value {
        self.create_files(token, parent, &[(name, content)])
            .await
            .remove(0)
    }

    /// A new version of file `oid` with `content` (sent as part `part`); its event.
    async fn update_content(&self, token: &str, oid: &str, part: &str, content: &[u8]) -> Value {
        let meta = json!([{"action": "U", "oid": oid, "isfile": true}]);
        self.upload_ok(token, &meta, &[(part, content)])
            .await
            .remove(0)
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.app.base, path));
        if let Some(t) = token {
            req = req.header("userpolicy", t);
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("{}: request {path}: {e}", self.what()))
    }

    /// GET: status, headers, and the body (or the error that cut it short).
    async fn fetch(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
    ) -> (u16, HeaderMap, Result<Vec<u8>, reqwest::Error>) {
        let resp = self.request(Method::GET, path, token, headers).await;
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let body = resp.bytes().await.map(|b| b.to_vec());
        (status, h, body)
    }

    /// GET that must be 200; returns the body.
    async fn stream_ok(&self, path: &str, token: Option<&str>) -> Vec<u8> {
        let (s, _, body) = self.fetch(path, token, &[]).await;
        let body = body.unwrap_or_else(|e| panic!("{}: GET {path}: body error {e}", self.what()));
        assert_eq!(
            s,
            200,
            "{}: GET {path}: {}",
            self.what(),
            String::from_utf8_lossy(&body)
        );
        body
    }

    async fn status_of(&self, path: &str, token: Option<&str>) -> u16 {
        let (s, _, _) = self.fetch(path, token, &[]).await;
        s
    }
}

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.filter_map(|e| e.ok()) {
            let p = entry.path();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// Waits (up to `secs`) for `cond`; returns whether it came true.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Data and checks
// ---------------------------------------------------------------------------------------

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `xyz/` + 16 lower-case hex digits ending in `xyz` (the seed's `558/158340da6ed32558`).
fn is_rname(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
    b.len() == 20
        && b[3] == b'/'
        && b[..3].iter().all(hex)
        && b[4..].iter().all(hex)
        && b[..3] == b[17..]
}

fn rname_of(ev: &Value) -> String {
    ev["rname"]["S3"]
        .as_str()
        .unwrap_or_else(|| panic!("no rname.S3 in {ev}"))
        .to_string()
}

fn tstamp_of(ev: &Value) -> String {
    ev["tstamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no tstamp in {ev}"))
        .to_string()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{s:?} is not base64: {e}"))
}

/// The server-set fields of a stored file version (SPEC §2, §7): rname, size, sha256plain,
/// mimetype, and the wrapped data key with its nonce under one master key id. Returns the
/// rname.
fn assert_blob_fields(ev: &Value, content: &[u8], what: &str) -> String {
    let rname = ev["rname"]["S3"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: rname is not {{\"S3\": ...}}: {ev}"));
    assert!(
        is_rname(rname),
        "{what}: rname {rname:?} is not xyz/<16 hex>xyz"
    );
    assert_eq!(ev["isfile"], json!(true), "{what}: {ev}");
    assert_eq!(ev["size"], json!(content.len()), "{what}: size: {ev}");
    assert_eq!(
        ev["sha256plain"],
        json!(sha_hex(content)),
        "{what}: sha256plain must be the sha256 of the plaintext: {ev}"
    );
    assert!(
        ev["mimetype"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: mimetype: {ev}"
    );
    let data = ev["encrypteddata"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: encrypteddata is not an object: {ev}"));
    let nonce = ev["encryptednonce"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: encryptednonce is not an object: {ev}"));
    assert_eq!(data.len(), 1, "{what}: one master key id: {ev}");
    let (kid, wrapped) = data.iter().next().unwrap();
    assert!(!kid.is_empty(), "{what}: empty key id");
    assert!(
        b64(wrapped.as_str().unwrap()).len() >= 32,
        "{what}: the wrapped key is shorter than a 256-bit key: {ev}"
    );
    assert!(
        !b64(nonce
            .get(kid)
            .unwrap_or_else(|| panic!("{what}: encryptednonce has no {kid:?}: {ev}"))
            .as_str()
            .unwrap())
        .is_empty(),
        "{what}: empty nonce"
    );
    assert!(
        ev.get("blobkey").is_none(),
        "{what}: blobkey shown to a caller without the privilege: {ev}"
    );
    rname.to_string()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
        .to_str()
        .unwrap()
}

/// The headers of a whole-file 200 (SPEC §6).
fn assert_stream_headers(h: &HeaderMap, size: usize, sha: &str, mimetype: &str, what: &str) {
    assert_eq!(header(h, "content-length"), size.to_string(), "{what}");
    assert_eq!(header(h, "content-type"), mimetype, "{what}");
    assert_eq!(header(h, "etag"), format!("\"{sha}\""), "{what}");
    assert_eq!(header(h, "accept-ranges"), "bytes", "{what}");
    let lm = header(h, "last-modified");
    assert!(
        lm.len() == 29 && lm.ends_with(" GMT"),
        "{what}: Last-Modified {lm:?} is not an HTTP date"
    );
}

/// A home folder for the fixture's email, with the tutorial's policy (owner all letters,
/// everyone else R X).
fn tutorial_policy(email: &str, label: &str) -> Value {
    json!({
        "label": label,
        "requirements": {"f": "owner-full-ro-all", "a": [{"v": "email"}, {"v": email}]}
    })
}

fn tutorial_security(email: &str) -> Value {
    json!({
        "label": format!("anonymousread ownedby {email}"),
        "foreground": "#FFFFFF",
        "background": "#000000"
    })
}

/// Jane's owner-only home under /world; returns its oid.
async fn janes_home(env: &Env) -> (String, String) {
    let jane = env.app.token_for("jane");
    let h = oid_of(&home(&env.app, &jane, JANE).await);
    (jane, h)
}

fn file_event(parent: &str, name: &str) -> Value {
    json!({"action": "C", "parentoid": parent, "name": name, "isfile": true})
}

/// A multipart body built byte for byte, like the seed's "Full Bytes Of Calls".
fn raw_multipart(boundary: &str, parts: &[(String, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (head, body) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n{head}\r\n\r\n").as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn data_part(filename: &str) -> String {
    format!(
        "Content-Disposition: form-data; name=\"data\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream"
    )
}

const META_PART: &str = "Content-Disposition: form-data; name=\"metadata\"";

// ---------------------------------------------------------------------------------------
// 1. The seed's uploads
// ---------------------------------------------------------------------------------------

/// The curl script: `-F file=@metadata.json -F file=@timer.go` (two parts, both named
/// `file`), an upsert (U without oid) into `1/world/localuser@email.com/pics`, whose
/// folders do not exist yet, with the seed's Rego v0 policy. Run twice, like the script.
#[tokio::test]
async fn the_seed_curl_script_upserts_into_new_folders_and_the_file_streams_back_by_path() {
    let env = spawn(Backend::Local, None).await;
    let app = &env.app;
    let rob = app.token_for("rob");
    let dir = format!("1/world/{ROB_EMAIL}/pics");
    let metadata = |label: &str| {
        json!([{
            "action": "U",
            "parentoid": dir,
            "name": "timer.go",
            "isfile": true,
            "security": {"label": label, "foreground": "white", "background": "purple"},
            "objectpolicy": {"rego": SEED_REGO}
        }])
    };
    let curl = |meta: Value, content: Vec<u8>| {
        let form = Form::new()
            .part(
                "file",
                Part::bytes(meta.to_string().into_bytes())
                    .file_name("metadata.json")
                    .mime_str("application/octet-stream")
                    .unwrap(),
            )
            .part(
                "file",
                Part::bytes(content)
                    .file_name("timer.go")
                    .mime_str("application/octet-stream")
                    .unwrap(),
            );
        app.client
            .post(format!("{}/write", app.base))
            .header("userpolicy", rob.clone())
            .multipart(form)
            .send()
    };

    let (s, out) = status_json(curl(metadata("SECRET"), TIMER_GO.into()).await.unwrap()).await;
    assert_eq!(s, 200, "{out}");
    let out = out.as_array().unwrap();
    let file = out
        .iter()
        .find(|e| e["name"] == "timer.go")
        .unwrap_or_else(|| panic!("no timer.go event in {out:?}"));
    let rname1 = assert_blob_fields(file, TIMER_GO.as_bytes(), "curl upload");
    assert_eq!(file["security"]["label"], "SECRET");
    assert_eq!(file["objectpolicy"]["rego"], SEED_REGO);
    let oid = oid_of(file);

    // The folders on the path were made in the same transaction.
    for p in [
        format!("/props/1/world/{ROB_EMAIL}"),
        format!("/props/{dir}"),
    ] {
        let (s, ev) = app.get_json(&p, Some(&rob)).await;
        assert_eq!(s, 200, "{p}: {ev}");
        assert_ne!(ev["isfile"], json!(true), "{p} is a folder");
    }
    assert_eq!(
        file["parentoid"],
        app.get_json(&format!("/props/{dir}"), Some(&rob)).await.1["oid"]
    );

    let path = format!("/stream/{dir}/timer.go");
    assert_eq!(env.stream_ok(&path, Some(&rob)).await, TIMER_GO.as_bytes());
    assert_eq!(
        env.stream_ok(&format!("/stream/{oid}"), Some(&rob)).await,
        TIMER_GO.as_bytes()
    );

    // The script again with new content: the same object, a new version and blob.
    let v2 = format!("{TIMER_GO}// second upload\n");
    let (s, out) = status_json(
        curl(metadata("SECRET v2"), v2.clone().into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    let file2 = out
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "timer.go")
        .unwrap()
        .clone();
    assert_eq!(oid_of(&file2), oid, "an upsert by name updates the object");
    let rname2 = assert_blob_fields(&file2, v2.as_bytes(), "second curl upload");
    assert_ne!(rname1, rname2, "new content gets a new rname");
    assert_eq!(env.stream_ok(&path, Some(&rob)).await, v2.as_bytes());
    assert_eq!(
        env.stream_ok(&format!("{path}?tstamp={}", tstamp_of(file)), Some(&rob))
            .await,
        TIMER_GO.as_bytes(),
        "the first version stays readable"
    );

    // The Rego policy grants nothing to anybody else.
    let jane = app.token_for("jane");
    let s = env.status_of(&format!("/stream/{oid}"), Some(&jane)).await;
    assert!(s == 403 || s == 404, "jane streams rob's file: {s}");
    assert_eq!(env.status_of(&format!("/stream/{oid}"), None).await, 404);
}

/// The tutorial's own requests: root makes `jane` at the root, jane uploads timer.go with the
/// raw bytes shown in "Full Bytes Of Calls" (parts `metadata` and `data`, the JWT in the
/// `userpolicy` cookie, under the `/services/gm-data/0.1` prefix). Every field the tutorial's
/// response shows for a file is there, and reads show the same.
#[tokio::test]
async fn the_tutorial_raw_upload_returns_every_blob_field_and_reads_agree() {
    let env = spawn_with(Backend::Local, None, &["--client-prefix", PREFIX]).await;
    let app = &env.app;
    let root = app.token_for("root");
    let jane = app.token_for("jane");
    let folder = app
        .write_one(
            Some(&root),
            json!({
                "name": "jane", "action": "C", "parentoid": ROOT_OID,
                "objectpolicy": tutorial_policy(JANE, "forAnonReadjaneFull"),
                "derived": {}, "security": tutorial_security("jane.doe@gmail.com"),
                "fulldir": "/0000000000000001/"
            }),
        )
        .await;
    let folder_oid = oid_of(&folder);

    let meta = json!([{
        "name": "timer.go", "action": "C", "parentoid": folder_oid,
        "objectpolicy": tutorial_policy(JANE, "forAnonReadjaneFull"),
        "mimetype": "text/plain", "derived": {}, "isfile": true,
        "security": tutorial_security("jane.doe@gmail.com"),
        "fulldir": "/0000000000000001/"
    }]);
    let boundary = "6cddace98d2f6eb0440f7f21adbd6623ed50b1b2fc8f6a1d17a8c890394a";
    let body = raw_multipart(
        boundary,
        &[
            (
                META_PART.to_string(),
                serde_json::to_vec_pretty(&meta).unwrap().as_slice(),
            ),
            (data_part("timer.go"), TIMER_GO.as_bytes()),
        ],
    );
    let resp = app
        .client
        .post(format!("{}{PREFIX}/write", app.base))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("cookie", format!("userpolicy={jane}"))
        .header("x-envoy-upstream-rq-timeout-ms", "300000")
        .body(body)
        .send()
        .await
        .unwrap();
    let (s, out) = status_json(resp).await;
    assert_eq!(s, 200, "{out}");
    let out = out.as_array().unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    let ev = &out[0];
    let rname = assert_blob_fields(ev, TIMER_GO.as_bytes(), "tutorial upload");
    assert_eq!(ev["name"], "timer.go");
    assert_eq!(ev["action"], "C");
    assert_eq!(ev["parentoid"], folder_oid.as_str());
    assert_eq!(
        ev["mimetype"], "text/plain",
        "the client's mimetype is kept"
    );
    assert_eq!(ev["userpolicy"]["label"], "asjane");
    assert_eq!(ev["checkedtstamp"], folder["tstamp"]);
    assert_eq!(ev["tstampend"], "7fffffffffffffff");
    assert_eq!(ev["derived"], json!({}));
    assert_eq!(ev["security"], tutorial_security("jane.doe@gmail.com"));
    assert_eq!(ev["fulldir"], format!("/{ROOT_OID}/{folder_oid}/"));
    let oid = oid_of(ev);

    // props, list and history carry the same blob fields.
    let blob_fields = [
        "rname",
        "size",
        "sha256plain",
        "mimetype",
        "encrypteddata",
        "encryptednonce",
    ];
    let (s, props) = app
        .get_json(&format!("{PREFIX}/props/{oid}"), Some(&jane))
        .await;
    assert_eq!(s, 200, "{props}");
    let (s, list) = app
        .get_json(&format!("/list/{folder_oid}"), Some(&jane))
        .await;
    assert_eq!(s, 200, "{list}");
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["oid"] == oid.as_str())
        .unwrap()
        .clone();
    let (s, hist) = app.get_json(&format!("/history/{oid}"), Some(&jane)).await;
    assert_eq!(s, 200, "{hist}");
    for (what, got) in [("props", &props), ("list", &listed), ("history", &hist[0])] {
        for f in blob_fields {
            assert_eq!(got[f], ev[f], "{what}: {f}");
        }
    }
    assert_eq!(rname_of(&props), rname);

    // The bytes come back, under the prefix and the cookie too; bob (R X) can stream it.
    let (s, h, body) = env
        .fetch(
            &format!("{PREFIX}/stream/1/jane/timer.go"),
            None,
            &[("cookie", format!("userpolicy={jane}"))],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body.unwrap(), TIMER_GO.as_bytes());
    assert_stream_headers(
        &h,
        TIMER_GO.len(),
        &sha_hex(TIMER_GO.as_bytes()),
        "text/plain",
        "tutorial",
    );
    let bob = app.token_for("bob");
    assert_eq!(
        env.stream_ok(&format!("/stream/{oid}"), Some(&bob)).await,
        TIMER_GO.as_bytes()
    );
    assert_eq!(
        env.stream_ok(&format!("/stream/{oid}"), None).await,
        TIMER_GO.as_bytes(),
        "owner-full-ro-all gives anonymous R X too"
    );
}

/// "Write Entire Directories In One Call": a folder and two files in one transaction, the
/// files' parentoid filled from the folder by `references` (-1 and -2), two `data` parts.
/// Then "Update Metadata On An Existing Object Without Editing File": a rename that sends the
/// rname back and no part keeps the content.
#[tokio::test]
async fn the_tutorial_big_dir_transaction_stores_both_files_and_a_metadata_update_keeps_content() {
    let env = spawn(Backend::Local, None).await;
    let app = &env.app;
    let root = app.token_for("root");
    let jane = app.token_for("jane");
    let folder = app
        .write_one(
            Some(&root),
            json!({
                "name": "jane", "action": "C", "parentoid": ROOT_OID,
                "objectpolicy": tutorial_policy(JANE, "forAnonReadjaneFull"),
                "derived": {}, "security": tutorial_security("jane.doe@gmail.com")
            }),
        )
        .await;
    let policy = tutorial_policy(JANE, "forAnonReadjaneFull");
    let security = tutorial_security(JANE);
    let meta = json!([
        {"name": "bigDir", "action": "C", "parentoid": oid_of(&folder),
         "objectpolicy": policy, "derived": {}, "security": security,
         "fulldir": "/0000000000000001/"},
        {"name": "timer.go", "action": "C", "objectpolicy": policy, "mimetype": "text/plain",
         "derived": {}, "isfile": true, "security": security, "fulldir": "/0000000000000001/",
         "references": [{"address": -1, "from": "oid", "to": "parentoid"}]},
        {"name": "testlocal", "action": "C", "objectpolicy": policy, "mimetype": "text/plain",
         "derived": {}, "isfile": true, "security": security, "fulldir": "/0000000000000001/",
         "references": [{"address": -2, "from": "oid", "to": "parentoid"}]}
    ]);
    let boundary = "cca271771aef2def01a939540697b8e28d7649bab739f3e7dec658bdd249";
    let body = raw_multipart(
        boundary,
        &[
            (META_PART.to_string(), meta.to_string().as_bytes()),
            (data_part("timer.go"), TIMER_GO.as_bytes()),
            (data_part("testlocal"), TESTLOCAL.as_bytes()),
        ],
    );
    let (s, out) = status_json(
        write_body(
            app,
            Some(&jane),
            Some(&format!("multipart/form-data; boundary={boundary}")),
            body,
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{out}");
    let out = out.as_array().unwrap();
    assert_eq!(out.len(), 3);
    let dir = oid_of(&out[0]);
    assert_eq!(out[1]["parentoid"], dir.as_str());
    assert_eq!(out[2]["parentoid"], dir.as_str());
    assert!(
        out[0].get("rname").is_none(),
        "a folder has no blob: {}",
        out[0]
    );
    let r1 = assert_blob_fields(&out[1], TIMER_GO.as_bytes(), "bigDir timer.go");
    let r2 = assert_blob_fields(&out[2], TESTLOCAL.as_bytes(), "bigDir testlocal");
    assert_ne!(r1, r2);

    assert_eq!(
        env.stream_ok(&format!("/stream/{dir}/timer.go"), Some(&jane))
            .await,
        TIMER_GO.as_bytes()
    );
    assert_eq!(
        env.stream_ok("/stream/1/jane/bigDir/testlocal", Some(&jane))
            .await,
        TESTLOCAL.as_bytes()
    );

    // The tutorial's metadata update: everything restated, rname included, no part.
    let timer = oid_of(&out[1]);
    let upd = app
        .write_one(
            Some(&jane),
            json!({
                "name": "timer-renamed.go", "action": "U", "oid": timer, "parentoid": dir,
                "objectpolicy": policy, "mimetype": "text/plain",
                "rname": {"S3": r1}, "derived": {}, "isfile": true, "security": security
            }),
        )
        .await;
    assert_eq!(rname_of(&upd), r1, "no part: the content is kept");
    assert_eq!(upd["size"], json!(TIMER_GO.len()));
    assert_eq!(upd["sha256plain"], out[1]["sha256plain"]);
    assert_eq!(upd["encrypteddata"], out[1]["encrypteddata"]);
    assert_eq!(
        env.stream_ok("/stream/1/jane/bigDir/timer-renamed.go", Some(&jane))
            .await,
        TIMER_GO.as_bytes()
    );
    assert_eq!(
        env.status_of("/stream/1/jane/bigDir/timer.go", Some(&jane))
            .await,
        404,
        "the old name is gone"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Round trips and ranges
// ---------------------------------------------------------------------------------------

/// (Range header, first byte, last byte) cases for a file of `size` > 0 bytes: random
/// closed ranges of all lengths, chunk edges, a last-byte-pos past the end (clamped), suffix
/// and open-ended forms.
fn range_cases(size: usize, rng: &mut Rng) -> Vec<(String, usize, usize)> {
    let mut v = Vec::new();
    for i in 0..32 {
        let a = rng.below(size);
        let len = match i % 4 {
            0 => 1 + rng.below(16),
            1 => 1 + rng.below(4 * KIB),
            2 => 1 + rng.below(3 * CHUNK),
            _ => 1 + rng.below(size - a),
        };
        let b = (a + len - 1).min(size - 1);
        v.push((format!("bytes={a}-{b}"), a, b));
    }
    let last = size - 1;
    v.push(("bytes=0-0".into(), 0, 0));
    v.push((format!("bytes={last}-{last}"), last, last));
    if size > CHUNK {
        v.push((format!("bytes={}-{}", CHUNK - 1, CHUNK), CHUNK - 1, CHUNK));
        v.push((
            format!("bytes={CHUNK}-{}", (2 * CHUNK - 1).min(last)),
            CHUNK,
            (2 * CHUNK - 1).min(last),
        ));
    }
    let a = rng.below(size);
    v.push((format!("bytes={a}-{}", size + 1000), a, last));
    for n in [1, 1 + rng.below(size), size, size + 7] {
        v.push((format!("bytes=-{n}"), size - n.min(size), last));
    }
    for a in [0, rng.below(size), last] {
        v.push((format!("bytes={a}-"), a, last));
    }
    v
}

#[tokio::test]
async fn content_round_trips_whole_and_by_range_for_edge_sizes_on_both_backends() {
    let sizes = [0usize, 1, 65535, 65536, 65537, 3 * MIB + 17];
    for backend in backends() {
        for inline in [None, Some(0u64)] {
            let env = spawn(backend, inline).await;
            let (jane, home_oid) = janes_home(&env).await;
            let mut rng = Rng(0xB10B + inline.unwrap_or(7));
            let datas: Vec<Vec<u8>> = sizes.iter().map(|&n| rng.bytes(n)).collect();
            // One transaction, six parts: each event must get its own part's bytes.
            let meta: Vec<Value> = sizes
                .iter()
                .map(|n| file_event(&home_oid, &format!("blob-{n}.zzqx")))
                .collect();
            let names: Vec<String> = sizes.iter().map(|n| format!("blob-{n}.zzqx")).collect();
            let files: Vec<(&str, &[u8])> = names
                .iter()
                .zip(&datas)
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect();
            let out = env.upload_ok(&jane, &json!(meta), &files).await;
            assert_eq!(out.len(), sizes.len());
            for ((ev, data), &size) in out.iter().zip(&datas).zip(&sizes) {
                let what = format!("{backend:?} inline={inline:?} size={size}");
                let rname = assert_blob_fields(ev, data, &what);
                assert_eq!(
                    ev["mimetype"], "application/octet-stream",
                    "{what}: unknown extension"
                );
                // Where the content went: inline up to the limit, else an object at
                // FILE_PARTITION/<rname> holding more than the plaintext (header, tags).
                let limit = inline.map(|n| n as usize).unwrap_or(64 * KIB);
                let stored = env.object_path(&rname);
                assert_eq!(
                    stored.is_file(),
                    size > limit,
                    "{what}: object at {} exists? objects: {:?}",
                    stored.display(),
                    env.objects()
                );
                if size > limit {
                    assert!(
                        std::fs::metadata(&stored).unwrap().len() > size as u64,
                        "{what}: the stored object is not larger than the plaintext"
                    );
                }

                let path = format!("/stream/{}", oid_of(ev));
                let (s, h, body) = env.fetch(&path, Some(&jane), &[]).await;
                assert_eq!(s, 200, "{what}");
                let body = body.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(
                    body == *data,
                    "{what}: whole GET differs ({} bytes back)",
                    body.len()
                );
                assert_stream_headers(&h, size, &sha_hex(data), "application/octet-stream", &what);

                let (s, h, _) = env
                    .fetch(&path, Some(&jane), &[("range", format!("bytes={size}-"))])
                    .await;
                assert_eq!(s, 416, "{what}: bytes={size}-");
                assert_eq!(
                    header(&h, "content-range"),
                    format!("bytes */{size}"),
                    "{what}"
                );
                if size == 0 {
                    continue;
                }
                for (spec, a, b) in range_cases(size, &mut rng) {
                    let (s, h, body) = env
                        .fetch(&path, Some(&jane), &[("range", spec.clone())])
                        .await;
                    assert_eq!(s, 206, "{what}: {spec}");
                    assert_eq!(
                        header(&h, "content-range"),
                        format!("bytes {a}-{b}/{size}"),
                        "{what}: {spec}"
                    );
                    assert_eq!(
                        header(&h, "content-length"),
                        (b - a + 1).to_string(),
                        "{what}: {spec}"
                    );
                    let body = body.unwrap_or_else(|e| panic!("{what}: {spec}: {e}"));
                    assert!(body == data[a..=b], "{what}: {spec}: wrong bytes");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. No plaintext at rest
// ---------------------------------------------------------------------------------------

const MARKER: &[u8] = b"VELLUM-PLAINTEXT-MARKER-1234";

fn marked(n: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(n).collect()
}

/// Files under the roots whose bytes contain the marker.
fn files_with_marker(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for root in roots {
        for f in all_files(root) {
            if let Ok(bytes) = std::fs::read(&f) {
                if contains(&bytes, MARKER) {
                    hits.push(f);
                }
            }
        }
    }
    hits
}

#[tokio::test]
async fn no_plaintext_reaches_disk_or_bucket_unless_blobalgorithm_is_none() {
    for backend in backends() {
        let env = spawn(backend, None).await;
        let what = env.what();
        let (jane, home_oid) = janes_home(&env).await;
        let big = marked(200 * KIB);
        let small = marked(3 * KIB);
        let out = env
            .create_files(
                &jane,
                &home_oid,
                &[("big.dat", &big[..]), ("small.dat", &small[..])],
            )
            .await;
        assert_eq!(
            env.stream_ok(&format!("/stream/{}", oid_of(&out[0])), Some(&jane))
                .await,
            big
        );
        assert_eq!(
            env.stream_ok(&format!("/stream/{}", oid_of(&out[1])), Some(&jane))
                .await,
            small
        );
        // An update too, so old and new versions are both at rest.
        env.upload_ok(
            &jane,
            &json!([{"action": "U", "oid": oid_of(&out[0]), "isfile": true}]),
            &[("big.dat", &marked(150 * KIB))],
        )
        .await;
        let roots = env.scan_roots();
        let scanned: usize = roots.iter().map(|r| all_files(r).len()).sum();
        assert!(scanned > 0);
        // The metadata store holds small files inline: its file is scanned, or, on
        // PostgreSQL, every row of its tables.
        match crate::common::database_of(&env.app.data_dir) {
            Some(pg) => assert!(
                !contains(
                    &crate::common::postgres::database_bytes(pg.url()).await,
                    MARKER
                ),
                "{what}: plaintext found at rest in the PostgreSQL database"
            ),
            None => assert!(
                all_files(&env.app.data_dir)
                    .iter()
                    .any(|p| p.ends_with("vellum.db")),
                "the scan covers the SQLite file"
            ),
        }
        let hits = files_with_marker(&roots);
        assert!(
            hits.is_empty(),
            "{what}: plaintext found at rest in {hits:?}"
        );

        // Sanity check of the scanner: blobalgorithm "none" keeps the plaintext.
        let plain = env
            .upload_ok(
                &jane,
                &json!([{"action": "C", "parentoid": home_oid, "name": "plain.dat",
                         "isfile": true, "blobalgorithm": "none"}]),
                &[("plain.dat", &big[..])],
            )
            .await
            .remove(0);
        assert_eq!(plain["size"], json!(big.len()));
        assert_eq!(plain["sha256plain"], json!(sha_hex(&big)));
        assert!(
            plain.get("encrypteddata").is_none_or(|v| v.is_null()),
            "{what}: no data key for blobalgorithm none: {plain}"
        );
        assert_eq!(
            env.stream_ok(&format!("/stream/{}", oid_of(&plain)), Some(&jane))
                .await,
            big
        );
        let hits = files_with_marker(&roots);
        let object = env.object_path(&rname_of(&plain));
        assert!(
            hits.contains(&object),
            "{what}: the plaintext object {} should hold the marker; hits: {hits:?}",
            object.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Integrity
// ---------------------------------------------------------------------------------------

/// A GET of the whole file after tampering must fail: a 5xx, or a transfer that breaks off.
async fn assert_fails(env: &Env, path: &str, token: &str, what: &str) {
    let (s, _, body) = env.fetch(path, Some(token), &[]).await;
    match (s, body) {
        (500..=599, _) => {}
        (200, Err(_)) => {}
        (200, Ok(b)) => panic!(
            "{}: {what}: 200 with a complete body of {} bytes from a damaged blob",
            env.what(),
            b.len()
        ),
        (s, b) => panic!("{}: {what}: unexpected status {s}: {b:?}", env.what()),
    }
}

/// A ranged GET after tampering may succeed only with the right bytes (it may not need the
/// damaged chunk); anything else must fail.
async fn assert_never_wrong(
    env: &Env,
    path: &str,
    token: &str,
    range: (usize, usize),
    want: &[u8],
    what: &str,
) {
    let (a, b) = range;
    let (s, _, body) = env
        .fetch(path, Some(token), &[("range", format!("bytes={a}-{b}"))])
        .await;
    match (s, body) {
        (500..=599, _) => {}
        (200 | 206, Err(_)) => {}
        (200 | 206, Ok(got)) => assert!(
            got == want[a..=b],
            "{}: {what}: {s} with wrong bytes for {a}-{b}",
            env.what()
        ),
        (s, b) => panic!("{}: {what}: unexpected status {s}: {b:?}", env.what()),
    }
}

#[tokio::test]
async fn a_tampered_truncated_swapped_or_replaced_blob_is_an_error_never_wrong_bytes() {
    for backend in backends() {
        let env = spawn(backend, Some(0)).await;
        let (jane, home_oid) = janes_home(&env).await;
        let mut rng = Rng(0x7A3);
        let data = rng.bytes(200 * KIB);
        let other = rng.bytes(200 * KIB);
        let out = env
            .create_files(
                &jane,
                &home_oid,
                &[("victim.bin", &data[..]), ("other.bin", &other[..])],
            )
            .await;
        let path = format!("/stream/{}", oid_of(&out[0]));
        let object = env.object_path(&rname_of(&out[0]));
        let original = std::fs::read(&object)
            .unwrap_or_else(|e| panic!("{:?}: object {}: {e}", backend, object.display()));
        let restore = || std::fs::write(&object, &original).unwrap();
        assert_eq!(env.stream_ok(&path, Some(&jane)).await, data, "control");

        // One byte flipped in the middle.
        let mut bad = original.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        std::fs::write(&object, &bad).unwrap();
        assert_fails(&env, &path, &jane, "a flipped byte").await;
        assert_never_wrong(
            &env,
            &path,
            &jane,
            (CHUNK, 2 * CHUNK - 1),
            &data,
            "flipped byte, its chunk",
        )
        .await;
        assert_never_wrong(
            &env,
            &path,
            &jane,
            (100 * KIB, 100 * KIB + 99),
            &data,
            "flipped byte, mid range",
        )
        .await;
        restore();
        assert_eq!(env.stream_ok(&path, Some(&jane)).await, data, "restored");

        // A flipped byte in the first bytes (header or first chunk).
        let mut bad = original.clone();
        bad[5] ^= 0x80;
        std::fs::write(&object, &bad).unwrap();
        assert_fails(&env, &path, &jane, "a flipped early byte").await;
        assert_never_wrong(
            &env,
            &path,
            &jane,
            (0, 99),
            &data,
            "flipped early byte, first bytes",
        )
        .await;
        restore();

        // Truncated by 1000 bytes.
        std::fs::write(&object, &original[..original.len() - 1000]).unwrap();
        assert_fails(&env, &path, &jane, "truncated by 1000 bytes").await;
        assert_never_wrong(
            &env,
            &path,
            &jane,
            (data.len() - 100, data.len() - 1),
            &data,
            "truncated, tail",
        )
        .await;
        restore();

        // Cut where the last chunk would start (if chunks are 64 KiB + a 16-byte tag, after
        // a header): a valid-looking prefix must still fail (the last-chunk flag).
        let overhead = original.len() - data.len();
        let per_chunk_tag = 16;
        let chunks = data.len().div_ceil(CHUNK);
        let header_len = overhead.saturating_sub(chunks * per_chunk_tag);
        let cut = header_len + (chunks - 1) * (CHUNK + per_chunk_tag);
        assert!(cut < original.len());
        std::fs::write(&object, &original[..cut]).unwrap();
        assert_fails(&env, &path, &jane, "cut at the last chunk").await;
        restore();

        // Chunks 1 and 2 swapped (reordering).
        let c = CHUNK + per_chunk_tag;
        let (s1, s2) = (header_len + c, header_len + 2 * c);
        let mut bad = original.clone();
        bad[s1..s1 + c].copy_from_slice(&original[s2..s2 + c]);
        bad[s2..s2 + c].copy_from_slice(&original[s1..s1 + c]);
        std::fs::write(&object, &bad).unwrap();
        assert_fails(&env, &path, &jane, "chunks swapped").await;
        restore();

        // Another blob's object put in its place: the blob's identity is bound in.
        let other_bytes = std::fs::read(env.object_path(&rname_of(&out[1]))).unwrap();
        std::fs::write(&object, &other_bytes).unwrap();
        assert_fails(&env, &path, &jane, "another blob's object").await;
        assert_never_wrong(
            &env,
            &path,
            &jane,
            (0, 99),
            &data,
            "another blob's object, first bytes",
        )
        .await;
        restore();
        assert_eq!(
            env.stream_ok(&path, Some(&jane)).await,
            data,
            "restored at the end"
        );

        // The object removed altogether: an error (any status but a 2xx, or a broken
        // transfer), not an empty or partial 200.
        std::fs::remove_file(&object).unwrap();
        let (s, _, body) = env.fetch(&path, Some(&jane), &[]).await;
        assert!(
            !(200..300).contains(&s) || body.is_err(),
            "{backend:?}: {s} with a complete body for a missing object"
        );
        restore();
    }
}

/// Inline content (kept in SQLite) is sealed too: a flipped byte there is an error. Reaches
/// into the `blobs.inline` column of schema/0002_blobs.sql; skipped if that column is absent.
#[tokio::test]
async fn tampered_inline_content_is_an_error_never_wrong_bytes() {
    let env = spawn(Backend::Local, None).await;
    let (jane, home_oid) = janes_home(&env).await;
    let data = Rng(0x1A1).bytes(1000);
    let ev = env
        .create_file(&jane, &home_oid, "tiny.bin", &data[..])
        .await;
    let path = format!("/stream/{}", oid_of(&ev));
    assert_eq!(env.stream_ok(&path, Some(&jane)).await, data);
    let rname = rname_of(&ev);
    assert!(!env.object_path(&rname).exists(), "1000 bytes are inline");

    let conn = rusqlite::Connection::open(env.app.data_dir.join("vellum.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let has_inline: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('blobs') WHERE name = 'inline'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if has_inline == 0 {
        eprintln!("no blobs.inline column: skipping the inline tamper check");
        return;
    }
    let stored: Vec<u8> = conn
        .query_row("SELECT inline FROM blobs WHERE rname = ?1", [&rname], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        !contains(&stored, &data[..32]),
        "inline bytes are not the plaintext"
    );
    let mut bad = stored.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x04;
    conn.execute(
        "UPDATE blobs SET inline = ?1 WHERE rname = ?2",
        rusqlite::params![bad, rname],
    )
    .unwrap();
    assert_fails(&env, &path, &jane, "inline byte flipped").await;
    conn.execute(
        "UPDATE blobs SET inline = ?1 WHERE rname = ?2",
        rusqlite::params![stored, rname],
    )
    .unwrap();
    assert_eq!(env.stream_ok(&path, Some(&jane)).await, data, "restored");
}

// ---------------------------------------------------------------------------------------
// 5. Atomicity: a refused transaction stores nothing
// ---------------------------------------------------------------------------------------

/// Asserts the blob store holds exactly `before` (allowing a moment for clean-up), and no S3
/// upload is left in progress.
async fn assert_objects_unchanged(env: &Env, before: &[String], what: &str) {
    let ok = eventually(3, || env.objects() == before).await;
    assert!(
        ok,
        "{}: {what}: the blob store changed: before {before:?}, after {:?}",
        env.what(),
        env.objects()
    );
    let uploads = env.s3_uploads_in_progress();
    assert!(
        uploads.is_empty(),
        "{}: {what}: uploads left: {uploads:?}",
        env.what()
    );
}

#[tokio::test]
async fn a_refused_transaction_stores_no_event_and_no_blob() {
    for backend in backends() {
        let env = spawn(backend, Some(0)).await;
        let app = &env.app;
        let (jane, home_oid) = janes_home(&env).await;
        let bob = app.token_for("bob");
        let ns = app.namespace_oid().await;
        // Bob's home: jane may read and list it, but not create in it.
        let bobs = oid_of(&mkdir(app, &bob, &ns, BOB, Some(owner_full_ro_all(BOB))).await);
        let mut rng = Rng(0xA70);
        let a = rng.bytes(200 * KIB);
        let b = rng.bytes(100 * KIB);
        // Something stored already, so "unchanged" is not "empty".
        env.upload_ok(
            &jane,
            &json!([file_event(&home_oid, "existing.bin")]),
            &[("existing.bin", &a[..])],
        )
        .await;
        let before = env.objects();
        assert_eq!(before.len(), 1, "{:?}", before);

        // The second file's parent denies C.
        let meta = json!([
            file_event(&home_oid, "mine.bin"),
            file_event(&bobs, "intruder.bin")
        ]);
        let err = refused(
            app,
            403,
            Some(1),
            write_parts(
                app,
                Some(&jane),
                &meta,
                &[("mine.bin", &a[..]), ("intruder.bin", &b[..])],
            ),
        )
        .await;
        assert!(!err["code"].as_str().unwrap().is_empty());
        assert_objects_unchanged(&env, &before, "403").await;
        assert_eq!(
            env.status_of(&format!("/props/1/world/{JANE}/mine.bin"), Some(&jane))
                .await,
            404
        );

        // Part counts that match neither rule.
        let two = json!([
            file_event(&home_oid, "one.bin"),
            file_event(&home_oid, "two.bin")
        ]);
        for (what, meta, parts) in [
            (
                "2 files, 1 part",
                two.clone(),
                vec![("one.bin", a.as_slice())],
            ),
            (
                "2 files, 3 parts",
                two.clone(),
                vec![
                    ("one.bin", &a[..]),
                    ("two.bin", &b[..]),
                    ("three.bin", &b[..]),
                ],
            ),
            (
                "a folder and 1 part",
                json!([{"action": "C", "parentoid": home_oid, "name": "folder"}]),
                vec![("x.bin", &a[..])],
            ),
            (
                "1 file, no part",
                json!([file_event(&home_oid, "nopart.bin")]),
                vec![],
            ),
        ] {
            let err = refused(app, 400, None, write_parts(app, Some(&jane), &meta, &parts)).await;
            assert_eq!(err["code"], "part_count", "{what}: {err}");
            assert_objects_unchanged(&env, &before, what).await;
        }

        // A sha256plain that does not match the part: in the only file, and in the second
        // file (after the first file's bytes have been received).
        let mut wrong = file_event(&home_oid, "wrong.bin");
        wrong["sha256plain"] = json!(sha_hex(&b));
        let err = refused(
            app,
            400,
            Some(0),
            write_parts(
                app,
                Some(&jane),
                &json!([wrong.clone()]),
                &[("wrong.bin", &a[..])],
            ),
        )
        .await;
        assert_eq!(err["code"], "sha256_mismatch", "{err}");
        assert_objects_unchanged(&env, &before, "sha256 mismatch").await;
        let meta = json!([file_event(&home_oid, "fine.bin"), wrong]);
        let err = refused(
            app,
            400,
            Some(1),
            write_parts(
                app,
                Some(&jane),
                &meta,
                &[("fine.bin", &b[..]), ("wrong.bin", &a[..])],
            ),
        )
        .await;
        assert_eq!(err["code"], "sha256_mismatch", "{err}");
        assert_objects_unchanged(&env, &before, "sha256 mismatch in the second file").await;

        // A name conflict in the second file (409), after the first file's bytes.
        let meta = json!([
            file_event(&home_oid, "new.bin"),
            file_event(&home_oid, "existing.bin")
        ]);
        refused(
            app,
            409,
            Some(1),
            write_parts(
                app,
                Some(&jane),
                &meta,
                &[("new.bin", &a[..]), ("existing.bin", &b[..])],
            ),
        )
        .await;
        assert_objects_unchanged(&env, &before, "409").await;

        // A correct sha256plain is accepted.
        let mut right = file_event(&home_oid, "right.bin");
        right["sha256plain"] = json!(sha_hex(&b));
        let ev = env
            .upload_ok(&jane, &json!([right]), &[("right.bin", &b[..])])
            .await
            .remove(0);
        assert_blob_fields(&ev, &b, "matching sha256plain");
        assert_eq!(env.objects().len(), 2);
    }
}

// ---------------------------------------------------------------------------------------
// 6. Updates and versions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn updates_keep_or_replace_content_and_every_version_stays_readable_by_tstamp() {
    for backend in backends() {
        let env = spawn(backend, Some(0)).await;
        let what = env.what();
        let (jane, home_oid) = janes_home(&env).await;
        let mut rng = Rng(0x0D);
        let a = rng.bytes(70 * KIB);
        let b = rng.bytes(10 * KIB);
        let c = rng.bytes(130 * KIB);

        let v1 = env.create_file(&jane, &home_oid, "notes.txt", &a[..]).await;
        assert_eq!(v1["mimetype"], "text/plain", "guessed from .txt");
        let oid = oid_of(&v1);
        let r1 = assert_blob_fields(&v1, &a, "v1");
        let stream = format!("/stream/{oid}");

        // Metadata only, the rname sent back, no part: the same content.
        let v2 = env
            .upload_ok(
                &jane,
                &json!([{"action": "U", "oid": oid, "isfile": true, "rname": {"S3": r1},
                         "description": "metadata only"}]),
                &[],
            )
            .await
            .remove(0);
        assert_eq!(rname_of(&v2), r1, "{what}");
        assert_eq!(v2["size"], v1["size"]);
        assert_eq!(v2["sha256plain"], v1["sha256plain"]);
        assert_eq!(v2["description"], "metadata only");
        assert_eq!(env.stream_ok(&stream, Some(&jane)).await, a);

        // Props sent back whole, rname and the old sha256plain included, with a new part
        // (the Python client's way): the echoed sha256plain is the old version's, not a
        // claim about the new part, and the other echoed server fields are ignored.
        let (_, mut props) = env
            .app
            .get_json(&format!("/props/{oid}"), Some(&jane))
            .await;
        let obj = props.as_object_mut().unwrap();
        assert_eq!(obj["sha256plain"], json!(sha_hex(&a)));
        obj.insert("action".into(), json!("U"));
        let v3 = env
            .upload_ok(&jane, &json!([props]), &[("notes.txt", &b[..])])
            .await
            .remove(0);
        let r3 = assert_blob_fields(&v3, &b, "v3");
        assert_ne!(r3, r1, "{what}: new content, new rname");
        assert_ne!(
            v3["encrypteddata"], v1["encrypteddata"],
            "{what}: a new data key"
        );
        assert_eq!(env.stream_ok(&stream, Some(&jane)).await, b);
        assert!(
            env.object_path(&r1).is_file(),
            "{what}: v1's blob is kept for history"
        );

        // No rname, a part.
        let v4 = env.update_content(&jane, &oid, "notes.txt", &c[..]).await;
        let r4 = assert_blob_fields(&v4, &c, "v4");
        assert!(r4 != r1 && r4 != r3);
        assert_eq!(env.stream_ok(&stream, Some(&jane)).await, c);

        for (v, want) in [(&v1, &a), (&v2, &a), (&v3, &b), (&v4, &c)] {
            let p = format!("{stream}?tstamp={}", tstamp_of(v));
            let (s, h, body) = env.fetch(&p, Some(&jane), &[]).await;
            assert_eq!(s, 200, "{what}: {p}");
            assert!(body.unwrap() == *want, "{what}: {p}: wrong version");
            assert_eq!(
                header(&h, "etag"),
                format!("\"{}\"", sha_hex(want)),
                "{what}: {p}"
            );
            let (s, h, body) = env
                .fetch(&p, Some(&jane), &[("range", "bytes=10-19".to_string())])
                .await;
            assert_eq!(s, 206, "{what}: {p} ranged");
            assert_eq!(
                header(&h, "content-range"),
                format!("bytes 10-19/{}", want.len())
            );
            assert!(body.unwrap() == want[10..20]);
        }

        let (s, hist) = env
            .app
            .get_json(&format!("/history/{oid}"), Some(&jane))
            .await;
        assert_eq!(s, 200, "{hist}");
        let hist = hist.as_array().unwrap();
        let rnames: Vec<String> = hist.iter().map(rname_of).collect();
        assert_eq!(
            rnames,
            [r1.clone(), r1.clone(), r3.clone(), r4.clone()],
            "{what}"
        );
        let shas: Vec<&Value> = hist.iter().map(|e| &e["sha256plain"]).collect();
        assert_eq!(
            shas,
            [
                &json!(sha_hex(&a)),
                &json!(sha_hex(&a)),
                &json!(sha_hex(&b)),
                &json!(sha_hex(&c))
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------
// 7. Purges
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_purge_removes_the_blobs_no_version_uses_and_keeps_shared_ones() {
    for backend in backends() {
        let env = spawn(backend, Some(0)).await;
        let what = env.what();
        let (jane, home_oid) = janes_home(&env).await;
        let mut rng = Rng(0x9E);
        let (a, b, c, d, e) = (
            rng.bytes(80 * KIB),
            rng.bytes(90 * KIB),
            rng.bytes(100 * KIB),
            rng.bytes(110 * KIB),
            rng.bytes(120 * KIB),
        );

        // A whole purge: both versions' blobs go.
        let f1v1 = env.create_file(&jane, &home_oid, "f1", &a[..]).await;
        let f1 = oid_of(&f1v1);
        let f1v2 = env.update_content(&jane, &f1, "f1", &b[..]).await;
        let (ra, rb) = (
            env.object_path(&rname_of(&f1v1)),
            env.object_path(&rname_of(&f1v2)),
        );
        assert!(ra.is_file() && rb.is_file(), "{what}");
        env.app
            .write_ok(Some(&jane), &json!([{"action": "P", "oid": f1}]))
            .await;
        assert!(
            eventually(5, || !ra.exists() && !rb.exists()).await,
            "{what}: purged blobs still stored: {:?}",
            env.objects()
        );
        assert_eq!(
            env.status_of(&format!("/stream/{f1}"), Some(&jane)).await,
            404
        );

        // v1 with content, v2 metadata-only (same rname): purging v1 keeps the blob.
        let f2v1 = env.create_file(&jane, &home_oid, "f2", &c[..]).await;
        let f2 = oid_of(&f2v1);
        let rc = rname_of(&f2v1);
        let f2v2 = env
            .upload_ok(
                &jane,
                &json!([{"action": "U", "oid": f2, "isfile": true, "rname": {"S3": rc},
                         "description": "v2"}]),
                &[],
            )
            .await
            .remove(0);
        assert_eq!(rname_of(&f2v2), rc);
        env.app
            .write_ok(
                Some(&jane),
                &json!([{"action": "P", "oid": f2, "purgetstamp": f2v1["tstamp"]}]),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            env.object_path(&rc).is_file(),
            "{what}: a blob v2 still uses was removed"
        );
        assert_eq!(
            env.stream_ok(&format!("/stream/{f2}"), Some(&jane)).await,
            c
        );
        let (s, hist) = env
            .app
            .get_json(&format!("/history/{f2}"), Some(&jane))
            .await;
        assert_eq!(s, 200);
        assert_eq!(hist.as_array().unwrap().len(), 1, "{hist}");
        env.app
            .write_ok(Some(&jane), &json!([{"action": "P", "oid": f2}]))
            .await;
        assert!(
            eventually(5, || !env.object_path(&rc).exists()).await,
            "{what}: the last user of a blob purged, the blob stays"
        );

        // v1 and v2 with their own content: purging v1 removes only v1's blob.
        let f3v1 = env.create_file(&jane, &home_oid, "f3", &d[..]).await;
        let f3 = oid_of(&f3v1);
        let f3v2 = env.update_content(&jane, &f3, "f3", &e[..]).await;
        let (rd, re) = (
            env.object_path(&rname_of(&f3v1)),
            env.object_path(&rname_of(&f3v2)),
        );
        env.app
            .write_ok(
                Some(&jane),
                &json!([{"action": "P", "oid": f3, "purgetstamp": f3v1["tstamp"]}]),
            )
            .await;
        assert!(
            eventually(5, || !rd.exists()).await,
            "{what}: v1's own blob outlived its purge"
        );
        assert!(re.is_file(), "{what}: v2's blob was removed");
        assert_eq!(
            env.stream_ok(&format!("/stream/{f3}"), Some(&jane)).await,
            e
        );
        assert_eq!(
            env.status_of(
                &format!("/stream/{f3}?tstamp={}", tstamp_of(&f3v1)),
                Some(&jane)
            )
            .await,
            404,
            "{what}: a purged version does not stream"
        );
        assert_eq!(env.objects().len(), 1, "{what}: {:?}", env.objects());
    }
}

// ---------------------------------------------------------------------------------------
// 8. Folders stream their defaultfile
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_folder_streams_its_defaultfile_and_relative_paths_resolve() {
    let env = spawn(Backend::Local, None).await;
    let (jane, home_oid) = janes_home(&env).await;
    let index = b"<html><body>index <a href=\"sub/page.html\">page</a></body></html>".to_vec();
    let page = b"<html><body>the sub page</body></html>".to_vec();
    let css = b"body { color: purple }".to_vec();
    let homepage = b"<html>home.htm, not index.html</html>".to_vec();
    let refp = |n: i64| json!([{"address": n, "from": "oid", "to": "parentoid"}]);
    let out = env
        .upload_ok(
            &jane,
            &json!([
                {"action": "C", "parentoid": home_oid, "name": "site"},
                {"action": "C", "name": "index.html", "isfile": true, "references": refp(-1)},
                {"action": "C", "name": "style.css", "isfile": true, "references": refp(-2)},
                {"action": "C", "name": "sub", "references": refp(-3)},
                {"action": "C", "name": "page.html", "isfile": true, "references": refp(-1)},
                {"action": "C", "parentoid": home_oid, "name": "site2", "defaultfile": "home.htm"},
                {"action": "C", "name": "home.htm", "isfile": true, "references": refp(-1)},
                {"action": "C", "name": "index.html", "isfile": true, "references": refp(-2)},
                {"action": "C", "parentoid": home_oid, "name": "plain"},
                {"action": "C", "name": "readme.txt", "isfile": true, "references": refp(-1)}
            ]),
            &[
                ("index.html", &index[..]),
                ("style.css", &css[..]),
                ("page.html", &page[..]),
                ("home.htm", &homepage[..]),
                ("index.html", &index[..]),
                ("readme.txt", &b"not an index"[..]),
            ],
        )
        .await;
    let site = oid_of(&out[0]);
    let site2 = oid_of(&out[5]);
    let plain = oid_of(&out[8]);
    assert_eq!(out[1]["mimetype"], "text/html");
    assert_eq!(out[2]["mimetype"], "text/css");
    assert_eq!(out[6]["mimetype"], "text/html");
    assert_eq!(out[9]["mimetype"], "text/plain");

    for p in [
        format!("/stream/{site}"),
        format!("/stream/1/world/{JANE}/site"),
    ] {
        let (s, h, body) = env.fetch(&p, Some(&jane), &[]).await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(body.unwrap(), index, "{p}");
        assert_eq!(header(&h, "content-type"), "text/html", "{p}");
        assert_eq!(header(&h, "etag"), format!("\"{}\"", sha_hex(&index)));
    }
    assert_eq!(
        env.stream_ok(&format!("/stream/{site}/sub/page.html"), Some(&jane))
            .await,
        page
    );
    assert_eq!(
        env.stream_ok(&format!("/stream/{site}/style.css"), Some(&jane))
            .await,
        css
    );
    let (s, h, body) = env
        .fetch(&format!("/stream/{site2}"), Some(&jane), &[])
        .await;
    assert_eq!(s, 200);
    assert_eq!(body.unwrap(), homepage, "defaultfile names home.htm");
    assert_eq!(header(&h, "content-type"), "text/html");
    assert_eq!(
        env.status_of(&format!("/stream/{plain}"), Some(&jane))
            .await,
        404,
        "no index.html"
    );
    assert_eq!(
        env.status_of(&format!("/stream/{site}/sub"), Some(&jane))
            .await,
        404,
        "no index.html in sub"
    );
    assert_eq!(
        env.status_of(&format!("/stream/{site}/nothing.html"), Some(&jane))
            .await,
        404
    );
    // Setting defaultfile later works too.
    env.app
        .write_ok(
            Some(&jane),
            &json!([{"action": "U", "oid": plain, "defaultfile": "readme.txt"}]),
        )
        .await;
    assert_eq!(
        env.stream_ok(&format!("/stream/{plain}"), Some(&jane))
            .await,
        b"not an index"
    );
}

// ---------------------------------------------------------------------------------------
// 9. HEAD, conditional GET, permissions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn head_and_if_none_match_and_stream_needs_x() {
    let env = spawn(Backend::Local, None).await;
    let app = &env.app;
    let (jane, home_oid) = janes_home(&env).await;
    let bob = app.token_for("bob");
    let data = Rng(0x4EAD).bytes(100 * KIB);
    let sha = sha_hex(&data);
    // Others get R only on `peek.bin`, and R X on `public.bin`.
    let r_only = json!({"label": "jane all, others R", "requirements": {"f": "if", "a": [
        {"f": "contains", "a": [{"v": "email"}, {"v": JANE}]},
        {"f": "yield-all", "a": []},
        {"f": "yield", "a": [{"v": "R"}]}
    ]}});
    let mut peek = file_event(&home_oid, "peek.bin");
    peek["objectpolicy"] = r_only;
    let mut public = file_event(&home_oid, "public.bin");
    public["objectpolicy"] = owner_full_ro_all(JANE);
    let out = env
        .upload_ok(
            &jane,
            &json!([file_event(&home_oid, "private.bin"), peek, public]),
            &[
                ("private.bin", &data[..]),
                ("peek.bin", &data[..]),
                ("public.bin", &data[..]),
            ],
        )
        .await;
    let (private, peek, public) = (oid_of(&out[0]), oid_of(&out[1]), oid_of(&out[2]));
    let p = format!("/stream/{private}");

    // HEAD: the headers of a GET, no body.
    let resp = env.request(Method::HEAD, &p, Some(&jane), &[]).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_stream_headers(&h, data.len(), &sha, "application/octet-stream", "HEAD");
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
    let (_, gh, _) = env.fetch(&p, Some(&jane), &[]).await;
    assert_eq!(header(&gh, "last-modified"), header(&h, "last-modified"));

    // If-None-Match.
    let (s, h304, body) = env
        .fetch(&p, Some(&jane), &[("if-none-match", format!("\"{sha}\""))])
        .await;
    assert_eq!(s, 304);
    assert!(body.unwrap().is_empty());
    assert_eq!(header(&h304, "etag"), format!("\"{sha}\""));
    let (s, _, _) = env
        .fetch(
            &p,
            Some(&jane),
            &[("if-none-match", format!("\"nope\", \"{sha}\""))],
        )
        .await;
    assert_eq!(s, 304, "a list of entity tags");
    let (s, _, body) = env
        .fetch(
            &p,
            Some(&jane),
            &[("if-none-match", format!("\"{}\"", sha_hex(b"other")))],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body.unwrap(), data);

    // Permissions: X is needed; a caller who cannot see the object gets 404.
    let s = env.status_of(&p, Some(&bob)).await;
    assert!(s == 404 || s == 403, "bob on jane's private file: {s}");
    assert_eq!(
        env.status_of(&p, None).await,
        404,
        "anonymous on a private file"
    );
    let resp = env.request(Method::HEAD, &p, None, &[]).await;
    assert_eq!(resp.status(), 404, "HEAD by anonymous");
    let (s, _) = app.get_json(&format!("/props/{peek}"), Some(&bob)).await;
    assert_eq!(s, 200, "bob may read peek.bin's props");
    let (s, _, body) = env.fetch(&format!("/stream/{peek}"), Some(&bob), &[]).await;
    assert!(s == 403 || s == 404, "R without X streams: {s}");
    assert!(
        !contains(&body.unwrap(), &data[..64]),
        "no content in the refusal"
    );
    let s = env
        .fetch(
            &format!("/stream/{peek}"),
            Some(&bob),
            &[("range", "bytes=0-9".into())],
        )
        .await
        .0;
    assert!(s == 403 || s == 404, "R without X, ranged: {s}");
    assert_eq!(
        env.stream_ok(&format!("/stream/{peek}"), Some(&jane)).await,
        data
    );
    assert_eq!(
        env.stream_ok(&format!("/stream/{public}"), Some(&bob))
            .await,
        data
    );
    assert_eq!(
        env.stream_ok(&format!("/stream/{public}"), None).await,
        data
    );
}

// ---------------------------------------------------------------------------------------
// 10. The blobkey privilege
// ---------------------------------------------------------------------------------------

fn assert_no_blobkey(v: &Value, what: &str) {
    match v {
        Value::Array(a) => a.iter().for_each(|e| assert_no_blobkey(e, what)),
        Value::Object(o) => assert!(!o.contains_key("blobkey"), "{what}: blobkey shown: {v}"),
        _ => {}
    }
}

/// The unwrapped data key: base64 of 32 bytes.
fn blobkey_of(ev: &Value, what: &str) -> Vec<u8> {
    let k = ev["blobkey"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no blobkey: {ev}"));
    let raw = b64(k);
    assert_eq!(raw.len(), 32, "{what}: blobkey is not 32 bytes");
    raw
}

#[tokio::test]
async fn the_blobkey_privilege_shows_each_data_key_and_nobody_else_sees_it() {
    // No fixture in fixtures/claims has the blobkey privilege: the token is minted here.
    let env = spawn(Backend::Local, None).await;
    let app = &env.app;
    let (jane, home_oid) = janes_home(&env).await;
    let keyed = app.token(&json!({
        "label": "jane with blobkey",
        "values": {"email": [JANE], "privilege": ["blobkey"]}
    }));
    let root = app.token_for("root");
    let mut rng = Rng(0xB1);
    let big = rng.bytes(100 * KIB);
    let small = rng.bytes(100);

    // An ordinary caller never sees it, even when sending one.
    let mut ev = file_event(&home_oid, "big.bin");
    ev["blobkey"] = json!("AAAA");
    let out = env
        .upload_ok(
            &jane,
            &json!([ev, file_event(&home_oid, "small.bin")]),
            &[("big.bin", &big[..]), ("small.bin", &small[..])],
        )
        .await;
    assert_no_blobkey(&json!(out), "write by jane");
    let (b1, s1) = (oid_of(&out[0]), oid_of(&out[1]));
    for p in [
        format!("/props/{b1}"),
        format!("/list/{home_oid}"),
        format!("/history/{b1}"),
        format!("/history/{s1}"),
    ] {
        for (who, t) in [("jane", &jane), ("root", &root)] {
            let (s, v) = app.get_json(&p, Some(t)).await;
            assert_eq!(s, 200, "{who} {p}: {v}");
            assert_no_blobkey(&v, &format!("{who} {p}"));
        }
    }

    // With the privilege: props, list and history show it, one key per blob.
    let (_, props_big) = app.get_json(&format!("/props/{b1}"), Some(&keyed)).await;
    let (_, props_small) = app.get_json(&format!("/props/{s1}"), Some(&keyed)).await;
    let k_big = blobkey_of(&props_big, "props big");
    let k_small = blobkey_of(&props_small, "props small (inline)");
    assert_ne!(k_big, k_small, "each blob has its own data key");
    let (_, again) = app.get_json(&format!("/props/{b1}"), Some(&keyed)).await;
    assert_eq!(blobkey_of(&again, "props again"), k_big, "stable");
    let (s, list) = app
        .get_json(&format!("/list/{home_oid}"), Some(&keyed))
        .await;
    assert_eq!(s, 200);
    for e in list.as_array().unwrap() {
        let want = if e["oid"] == b1.as_str() {
            &k_big
        } else {
            &k_small
        };
        assert_eq!(&blobkey_of(e, "list"), want);
    }
    let (_, hist) = app.get_json(&format!("/history/{b1}"), Some(&keyed)).await;
    assert_eq!(blobkey_of(&hist[0], "history"), k_big);
    // The feed too (its blob rows are read in one query per step): the same key, and to
    // jane the same wrapped key as props shows, without the data key.
    let (_, home) = app
        .get_json(&format!("/props/{home_oid}"), Some(&jane))
        .await;
    let since = format!("?since={}", home["tstamp"].as_str().unwrap());
    let (_, props_plain) = app.get_json(&format!("/props/{b1}"), Some(&jane)).await;
    let (_, small_plain) = app.get_json(&format!("/props/{s1}"), Some(&jane)).await;
    assert!(props_plain["encrypteddata"].is_object(), "{props_plain}");
    assert!(small_plain["encrypteddata"].is_object(), "{small_plain}");
    for (who, t) in [("keyed", &keyed), ("jane", &jane)] {
        let fed = crate::operator_views::sse_events(
            crate::operator_views::feed(app, t, &[], &since).await,
            2,
        )
        .await;
        let by_oid = |oid: &str| {
            fed.iter()
                .map(|(_, _, e)| e)
                .find(|e| e["oid"] == oid)
                .unwrap_or_else(|| panic!("{who}: {oid} not in the feed: {fed:?}"))
                .clone()
        };
        let (fb, fs) = (by_oid(&b1), by_oid(&s1));
        assert_eq!(
            fb["encrypteddata"], props_plain["encrypteddata"],
            "{who}: feed big"
        );
        assert_eq!(
            fb["encryptednonce"], props_plain["encryptednonce"],
            "{who}: feed big"
        );
        assert_eq!(
            fs["encrypteddata"], small_plain["encrypteddata"],
            "{who}: feed small"
        );
        if who == "keyed" {
            assert_eq!(blobkey_of(&fb, "feed big"), k_big);
            assert_eq!(blobkey_of(&fs, "feed small"), k_small);
        } else {
            assert_no_blobkey(&fb, "jane's feed");
            assert_no_blobkey(&fs, "jane's feed");
        }
    }

    // A metadata-only update keeps the blob, so the key; new content, a new key; the
    // privileged writer sees it in the write response.
    let v2 = app
        .write_one(
            Some(&keyed),
            json!({"action": "U", "oid": b1, "description": "v2"}),
        )
        .await;
    assert_eq!(blobkey_of(&v2, "metadata-only update"), k_big);
    let v3 = env.update_content(&keyed, &b1, "big.bin", &small[..]).await;
    let k3 = blobkey_of(&v3, "content update");
    assert_ne!(k3, k_big);
    let (_, hist) = app.get_json(&format!("/history/{b1}"), Some(&keyed)).await;
    let keys: Vec<Vec<u8>> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|e| blobkey_of(e, "history"))
        .collect();
    assert_eq!(keys, [k_big.clone(), k_big.clone(), k3]);
    // Folders have no blob, so no key.
    let (_, folder) = app
        .get_json(&format!("/props/{home_oid}"), Some(&keyed))
        .await;
    assert!(folder.get("blobkey").is_none(), "{folder}");
    // And jane still does not see it.
    let (_, p) = app.get_json(&format!("/props/{b1}"), Some(&jane)).await;
    assert_no_blobkey(&p, "jane after the privileged writes");
}

// ---------------------------------------------------------------------------------------
// 11. An rname names this object's content only
// ---------------------------------------------------------------------------------------

/// gm-data trusted a client's `rname`; here a create or update that names another object's
/// blob, without a part, must not give the writer that blob's content: refused (4xx), or the
/// content is not served.
#[tokio::test]
async fn an_rname_of_someone_elses_blob_does_not_give_access_to_its_content() {
    let env = spawn(Backend::Local, None).await;
    let app = &env.app;
    let (jane, home_oid) = janes_home(&env).await;
    let bob = app.token_for("bob");
    let bobs_home = oid_of(&home(app, &bob, BOB).await);
    let secret = b"bob's secret: the launch code is 0000".to_vec();
    let bobs = env
        .create_file(&bob, &bobs_home, "secret.txt", &secret[..])
        .await;
    let s = env
        .status_of(&format!("/stream/{}", oid_of(&bobs)), Some(&jane))
        .await;
    assert!(s == 403 || s == 404);
    let bob_rname = rname_of(&bobs);

    // A create naming bob's blob.
    let mut borrow = file_event(&home_oid, "borrowed.txt");
    borrow["rname"] = json!({"S3": bob_rname});
    let (s, out) = env.upload(&jane, &json!([borrow]), &[]).await;
    if s == 200 {
        let oid = oid_of(&out[0]);
        let (s, _, body) = env.fetch(&format!("/stream/{oid}"), Some(&jane), &[]).await;
        assert!(
            !(s == 200 && body.as_deref().is_ok_and(|b| b == secret.as_slice())),
            "jane read bob's file through a create that names its rname: {out}"
        );
    } else {
        assert!((400..500).contains(&s), "{s}: {out}");
    }

    // An update of her own file naming bob's blob.
    let mine = env
        .create_file(&jane, &home_oid, "mine.txt", &b"jane's"[..])
        .await;
    let (s, out) = env
        .upload(
            &jane,
            &json!([{"action": "U", "oid": oid_of(&mine), "isfile": true, "rname": {"S3": bob_rname}}]),
            &[],
        )
        .await;
    if s == 200 {
        let (s, _, body) = env
            .fetch(&format!("/stream/{}", oid_of(&mine)), Some(&jane), &[])
            .await;
        assert!(
            !(s == 200 && body.as_deref().is_ok_and(|b| b == secret.as_slice())),
            "jane read bob's file through an update that names its rname: {out}"
        );
    } else {
        assert!((400..500).contains(&s), "{s}: {out}");
    }
    assert_eq!(
        env.stream_ok(&format!("/stream/{}", oid_of(&bobs)), Some(&bob))
            .await,
        secret
    );
}
