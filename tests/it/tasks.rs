//! The task queue (SPEC §9.5, §9.6): a revocation's key rotation, the expiry sweep, the
//! task endpoints and webhooks, against the real server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vellum::blob::BlobStore;
use vellum::store::BlobRow;

use crate::common::extra::*;
use crate::common::process::{run, vellum, Server};
use crate::common::rng::Rng;
use crate::common::{open_store, spawn_app, TestApp};
use crate::shares::{call, email, janes_docs, share, status};

/// The blob store of a test server's data folder (same development master key).
pub(crate) fn blob_store(data_dir: &Path) -> BlobStore {
    use clap::Parser;
    let args = ["vellum", "--data-dir", &data_dir.display().to_string()].map(str::to_string);
    let serve = vellum::cli::Cli::try_parse_from(args).unwrap().serve;
    let config = vellum::config::Config::from_args(serve).unwrap();
    vellum::app::open_blobs(&config).unwrap()
}

/// Every blob row of the store, by rname.
pub(crate) async fn blob_rows(data_dir: &Path) -> HashMap<String, BlobRow> {
    let store = open_store(data_dir);
    let rows = store
        .read(|s| s.blobs_after(None, 1_000_000))
        .await
        .unwrap();
    rows.into_iter().map(|r| (r.rname.clone(), r)).collect()
}

/// Whether `key` opens the content `row` holds now (its location, or its inline bytes).
pub(crate) async fn key_opens(
    blobs: &BlobStore,
    row: &BlobRow,
    key: &vellum::crypto::Wrapped,
) -> bool {
    let Ok(reader) = blobs
        .open_recorded(
            &row.rname,
            row.location(),
            row.algorithm,
            Some(key),
            row.inline.clone(),
        )
        .await
    else {
        return false;
    };
    BlobStore::hash_all(reader).await.is_ok()
}

/// Polls `GET /tasks/{id}` until it is done or failed (or `limit` passes).
pub(crate) async fn wait_task(app: &TestApp, token: &str, id: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (s, t) = call(app, "GET", &format!("/tasks/{id}"), Some(token), None).await;
        assert_eq!(s, 200, "{t}");
        if t["state"] == "done" || t["state"] == "failed" {
            return t;
        }
        assert!(start.elapsed() < limit, "task still {t} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one rotation task of share `share_id`, as `token` sees it.
pub(crate) async fn rotation_of(app: &TestApp, token: &str, share_id: &str) -> Value {
    let (s, list) = call(app, "GET", "/tasks?kind=rotate_share", Some(token), None).await;
    assert_eq!(s, 200, "{list}");
    let found: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["share"] == share_id)
        .collect();
    assert_eq!(found.len(), 1, "{list}");
    found[0].clone()
}

/// Share `share_id`'s rotation once it has ended (done or failed), as `token` sees it.
pub(crate) async fn rotation_ended(
    app: &TestApp,
    token: &str,
    share_id: &str,
    limit: Duration,
) -> Value {
    let task = rotation_of(app, token, share_id).await;
    wait_task(app, token, task["id"].as_str().unwrap(), limit).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_a_folder_share_refuses_at_once_and_rotates_every_version_it_reached() {
    let app = spawn_app().await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, note) = janes_docs(&app).await;
    // 200 files: most inline (up to 60 KiB), every tenth 5 MiB in the blob store; two
    // versions of one of them.
    let mut want: HashMap<String, Vec<u8>> = HashMap::new();
    want.insert(note.clone(), b"for your eyes".to_vec());
    let mut rng = Rng(7);
    for batch in 0..20 {
        let mut meta = Vec::new();
        let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..10 {
            let n = batch * 10 + i;
            let size = if i == 0 {
                5 << 20
            } else {
                1 + (n * 317) % (60 << 10)
            };
            let name = format!("f{n:03}");
            meta.push(
                json!({"action": "C", "parentoid": folder, "name": name, "isfile": true,
                             "objectpolicy": owner_only(JANE)}),
            );
            parts.push((name, rng.bytes(size)));
        }
        let refs: Vec<(&str, &[u8])> = parts
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let (s, v) = status_json(write_parts(&app, Some(&jane), &json!(meta), &refs).await).await;
        assert_eq!(s, 200, "{v}");
        for (e, (_, bytes)) in v.as_array().unwrap().iter().zip(parts) {
            want.insert(oid_of(e), bytes);
        }
    }
    let made = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(status(&app, &format!("/stream/{note}"), &bob).await, 200);
    let before = blob_rows(&app.data_dir).await;
    assert_eq!(before.len(), 201);

    let (s, _) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    // Refused at once, whatever the rotation has done so far.
    for path in [
        format!("/list/{folder}"),
        format!("/stream/{note}"),
        format!("/props/{note}"),
    ] {
        assert_eq!(status(&app, &path, &bob).await, 404, "{path}");
    }
    let task = rotation_ended(&app, &jane, &id, Duration::from_secs(300)).await;
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["progress"]["done"], 201, "{task}");
    // Bob never sees Jane's rotation tasks.
    let (s, none) = call(&app, "GET", "/tasks", Some(&bob), None).await;
    assert_eq!((s, none), (200, json!([])));
    let (s, _) = call(
        &app,
        "GET",
        &format!("/tasks/{}", task["id"].as_str().unwrap()),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(s, 404);

    // Every version reads byte-identical for the owner.
    for (oid, bytes) in &want {
        let r = app.get(&format!("/stream/{oid}"), Some(&jane)).await;
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap()[..] == bytes[..], "{oid}");
    }
    // Each one's wrapped key changed, and a stored one's location; no old key opens any
    // content stored now.
    let after = blob_rows(&app.data_dir).await;
    let blobs = blob_store(&app.data_dir);
    assert_eq!(after.len(), 201);
    for (rname, old) in &before {
        let new = &after[rname];
        assert_ne!(new.wrapped, old.wrapped, "{rname}: key unchanged");
        assert!(new.keyed > old.keyed);
        if old.inline.is_some() {
            assert_ne!(
                new.inline, old.inline,
                "{rname}: inline bytes not re-sealed"
            );
        } else {
            assert_ne!(new.location(), old.location(), "{rname}: same object");
            // Deleted right after the switch's commit, by the rotation, off its batch.
            let path = app.data_dir.join("blobs").join(old.location());
            let gone_by = Instant::now() + Duration::from_secs(10);
            while path.exists() && Instant::now() < gone_by {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!path.exists(), "old object left");
        }
    }
    for old in before.values() {
        let old_key = old.wrapped.as_ref().unwrap();
        for new in after.values() {
            assert!(
                !key_opens(&blobs, new, old_key).await,
                "an old key opens {}",
                new.rname
            );
        }
    }
    // The share's log says when.
    let (_, log) = call(&app, "GET", &format!("/shares/{id}/log"), Some(&jane), None).await;
    let kinds: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["offered", "revoked", "rotated"]);
    // fsck is clean and gc finds nothing left over.
    let store = open_store(&app.data_dir);
    let fsck = vellum::ops::fsck(&store, &blobs).await.unwrap();
    assert!(fsck.findings.is_empty(), "{:?}", fsck.findings);
    let gc = vellum::ops::gc(&store, &blobs, Duration::ZERO, true)
        .await
        .unwrap();
    assert!(gc.removed.is_empty(), "{:?}", gc.removed);
}

// ---------------------------------------------------------------------------------------
// Helpers for the tests below: the real binary, a restartable in-process server, a webhook
// receiver, /metrics.
// ---------------------------------------------------------------------------------------

/// `vellum serve` on `data` at `port`, verifying tokens of `jwt_pub`, logging to
/// `log_dir` (one log per port, kept across restarts).
fn serve(data: &Path, port: u16, jwt_pub: &str, extra: &[&str], log_dir: &Path) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let data_s = data.display().to_string();
    let mut args = vec!["serve", "--listen", &listen, "--data-dir", &data_s];
    args.extend_from_slice(extra);
    Server::start_logging_to(log_dir, log_dir, &args, &[("JWT_PUB", jwt_pub)], port)
}

/// A server in this process on `data_dir` with extra `serve` flags, restartable on the
/// same folder (the same JWT key); `app` talks to it.
struct InProc {
    app: TestApp,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProc {
    async fn start(data_dir: &Path, pem: &str, jwt_pub: &str, extra: &[&str]) -> InProc {
        use clap::Parser;
        let mut args = vec![
            "vellum".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--jwt-pub".into(),
            jwt_pub.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let serve = vellum::cli::Cli::try_parse_from(args).unwrap().serve;
        let config = vellum::config::Config::from_args(serve).unwrap();
        let built = vellum::app::Application::build(config).await.unwrap();
        let addr = built.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(built.run_until(async {
            let _ = rx.await;
        }));
        let signer = vellum::identity::TokenSigner::from_pem(pem).unwrap();
        InProc {
            app: TestApp::attach(addr, signer, data_dir.to_path_buf()),
            stop: Some(tx),
            done: Some(done),
        }
    }

    /// A clean shutdown (as SIGTERM): the running tasks give their leases back.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every file under `DATA/blobs`, as paths relative to it (staging files included).
fn files_under(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The entries of share `id`'s log, as `token` sees them.
async fn share_log(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let (s, log) = call(app, "GET", &format!("/shares/{id}/log"), Some(token), None).await;
    assert_eq!(s, 200, "{log}");
    log.as_array().unwrap().clone()
}

fn kinds_of(log: &[Value]) -> Vec<String> {
    log.iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Arrival {
    path: String,
    id: String,
    signature: String,
    timestamp: String,
    content_type: String,
    body: bytes::Bytes,
    /// What the receiver answered.
    status: u16,
}

/// How the receiver answers.
const ANSWER_OK: u8 = 0;
const ANSWER_500: u8 = 1;
/// 500 to every third request (counting all), 200 otherwise.
const ANSWER_FLAKY: u8 = 2;
/// 500, after holding the request for two seconds.
const ANSWER_SLOW_500: u8 = 3;

/// A webhook receiver on 127.0.0.1:`port` (HTTP/1.1, hyper) that starts listening after
/// `delay` and records every request.
struct Receiver {
    port: u16,
    answer: Arc<AtomicU8>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(delay: Duration, answer: u8) -> Receiver {
        let port = crate::common::external::free_port();
        let answer = Arc::new(AtomicU8::new(answer));
        let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
        let (a, log) = (answer.clone(), arrivals.clone());
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let _ = bound_tx.send(());
            let count = Arc::new(AtomicU64::new(0));
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (a, log, count) = (a.clone(), log.clone(), count.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (a, log, count) = (a.clone(), log.clone(), count.clone());
                            async move {
                                use http_body_util::BodyExt;
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await?.to_bytes();
                                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                                let status = match a.load(Ordering::SeqCst) {
                                    ANSWER_OK => 200,
                                    ANSWER_FLAKY if n % 3 == 0 => 500,
                                    ANSWER_FLAKY => 200,
                                    ANSWER_SLOW_500 => {
                                        tokio::time::sleep(Duration::from_secs(2)).await;
                                        500
                                    }
                                    _ => 500,
                                };
                                let h = |name: &str| {
                                    parts
                                        .headers
                                        .get(name)
                                        .map(|v| v.to_str().unwrap().to_string())
                                        .unwrap_or_default()
                                };
                                log.lock().unwrap().push(Arrival {
                                    path: parts.uri.path().to_string(),
                                    id: h("x-vellum-id"),
                                    signature: h("x-vellum-signature"),
                                    timestamp: h("x-vellum-timestamp"),
                                    content_type: h("content-type"),
                                    body,
                                    status,
                                });
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        if delay.is_zero() {
            bound_rx.await.unwrap();
        }
        Receiver {
            port,
            answer,
            arrivals,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    fn answer(&self, a: u8) {
        self.answer.store(a, Ordering::SeqCst);
    }

    /// The ids answered 200, in the order of those answers.
    fn delivered(&self) -> Vec<String> {
        self.arrivals()
            .into_iter()
            .filter(|a| a.status == 200)
            .map(|a| a.id)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const WEBHOOK_SECRET: &str = "a shared secret, not a password";

/// A server that posts every share-log entry to `url` (signed with [`WEBHOOK_SECRET`]),
/// with `more` flags.
async fn app_with_webhook(url: &str, more: &[&str]) -> TestApp {
    let mut flags = vec![
        "--share-webhook-url",
        url,
        "--share-webhook-secret",
        WEBHOOK_SECRET,
    ];
    flags.extend_from_slice(more);
    crate::common::spawn_app_with(&flags).await
}

/// Checks one arrival against the log entry it carries: the signature, the id header, the
/// body (the entry, as `GET /shares/{id}/log` shows it).
fn check_arrival(a: &Arrival, entry: &Value, sent_after: u64) {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, WEBHOOK_SECRET.as_bytes());
    let hexsig = a
        .signature
        .strip_prefix("sha256=")
        .unwrap_or_else(|| panic!("signature {:?} lacks sha256=", a.signature));
    let tag = hex::decode(hexsig).unwrap();
    assert!(
        aws_lc_rs::hmac::verify(&key, &a.body, &tag).is_ok(),
        "a bad signature on {}",
        a.id
    );
    assert_eq!(a.path, "/hook");
    assert_eq!(a.content_type, "application/json");
    let body: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(&body, entry, "the body is the log entry");
    assert_eq!(a.id, entry["tstamp"].as_str().unwrap());
    let sent: u64 = a.timestamp.parse().unwrap();
    assert!(
        sent + 1 >= sent_after && sent <= now_secs() + 1,
        "X-Vellum-Timestamp {sent} is not now"
    );
}

/// The samples of /metrics, by name (labels included in the name).
async fn metrics(app: &TestApp) -> HashMap<String, f64> {
    let r = app.get("/metrics", None).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Polls /metrics until `ok` holds of it (or fails after `limit`); returns it.
async fn metrics_until(
    app: &TestApp,
    limit: Duration,
    what: &str,
    ok: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let start = Instant::now();
    loop {
        let m = metrics(app).await;
        if ok(&m) {
            return m;
        }
        let tasks: Vec<_> = m.iter().filter(|(k, _)| k.contains("task")).collect();
        assert!(start.elapsed() < limit, "{what}: never; last {tasks:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tasks `token` sees, filtered by a query string.
async fn tasks_where(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (s, list) = call(app, "GET", &format!("/tasks?{query}"), Some(token), None).await;
    assert_eq!(s, 200, "{list}");
    list.as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------------------
// 1. A rotation survives being killed again and again.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_of_1000_versions_killed_50_times_finishes_with_every_version_intact() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path();
    let (pem, jwt_pub) = crate::common::es512_keys();
    let port = crate::common::external::free_port();
    // A killed worker's task is taken over a second after its last renewal.
    let flags = ["--task-lease", "2s"];
    let mut proc = serve(&data, port, &jwt_pub, &flags, log);
    proc.wait_healthy().await;
    let signer = || vellum::identity::TokenSigner::from_pem(&pem).unwrap();
    let app = TestApp::attach(proc_addr(port), signer(), data.clone());
    let (root, jane, bob) = (
        app.token_for("root"),
        app.token_for("jane"),
        app.token_for("bob"),
    );
    let folder = oid_of(&mkdir(&app, &root, "1", "docs", Some(owner_only(JANE))).await);

    // 1,000 versions: 250 files of four versions each; every 10th version 2 MiB (an object
    // in the blob store, long enough to re-encrypt that kills land inside), the others up
    // to 4 KiB (inline).
    let mut rng = Rng(1000);
    let mut want: Vec<(String, String, String)> = Vec::new(); // (oid, tstamp, sha256)
    let mut oids: Vec<String> = Vec::new();
    let mut v = 0usize;
    for round in 0..4 {
        for batch in 0..5 {
            let mut meta = Vec::new();
            let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
            for i in 0..50 {
                let n = batch * 50 + i;
                let size = if v % 10 == 7 {
                    2 << 20
                } else {
                    1 + rng.below(4096usize)
                };
                v += 1;
                let name = format!("f{n:03}");
                meta.push(if round == 0 {
                    json!({"action": "C", "parentoid": folder, "name": name, "isfile": true,
                           "objectpolicy": owner_only(JANE)})
                } else {
                    json!({"action": "U", "oid": oids[n], "isfile": true})
                });
                parts.push((name, rng.bytes(size)));
            }
            let refs: Vec<(&str, &[u8])> = parts
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect();
            let (s, out) =
                status_json(write_parts(&app, Some(&jane), &json!(meta), &refs).await).await;
            assert_eq!(s, 200, "{out}");
            for (e, (_, bytes)) in out.as_array().unwrap().iter().zip(&parts) {
                if round == 0 {
                    oids.push(oid_of(e));
                }
                want.push((
                    oid_of(e),
                    e["tstamp"].as_str().unwrap().to_string(),
                    sha_hex(bytes),
                ));
            }
        }
    }
    assert_eq!(want.len(), 1000);
    let made = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(
        status(&app, &format!("/stream/{}", want[999].0), &bob).await,
        200
    );
    let before = blob_rows(&data).await;
    assert_eq!(before.len(), 1000);
    assert_eq!(before.values().filter(|r| r.inline.is_none()).count(), 100);
    let uploaded = started.elapsed();

    let (s, v) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200, "{v}");
    let task_id = rotation_of(&app, &jane, &id).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Fifty times: let it run a random 5–80 ms, SIGKILL it, start it again (versions
    // rotate 16 to a commit, so longer runs would leave most kills after the end).
    let kills_started = Instant::now();
    let mut open_at_kill = 0;
    let mut seen: Vec<String> = Vec::new();
    let mut rng = Rng(50);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(5 + rng.below(76u64))).await;
        let app = TestApp::attach(proc_addr(port), signer(), data.clone());
        let (s, t) = call(&app, "GET", &format!("/tasks/{task_id}"), Some(&jane), None).await;
        assert_eq!(s, 200, "{t}");
        if t["state"] != "done" {
            open_at_kill += 1;
        }
        seen.push(format!("{}:{}", t["state"], t["progress"]["done"]));
        proc.stop();
        drop(proc);
        proc = serve(&data, port, &jwt_pub, &flags, log);
        proc.wait_healthy().await;
    }
    let kills = kills_started.elapsed();

    let app = TestApp::attach(proc_addr(port), signer(), data.clone());
    let task = wait_task(&app, &jane, &task_id, Duration::from_secs(300)).await;
    let rotated = kills_started.elapsed();
    assert_eq!(task["state"], "done", "{task}");
    eprintln!(
        "1000 versions: upload {uploaded:?}, 50 kills {kills:?}, rotation done after \
         {rotated:?}; {open_at_kill} kills while it was open; at each kill (state:done) \
         {seen:?}; {task}"
    );
    assert!(
        open_at_kill >= 10,
        "the kills should land while the rotation runs: {seen:?}"
    );
    let (_, log_entries) = call(&app, "GET", &format!("/shares/{id}/log"), Some(&jane), None).await;
    assert_eq!(
        kinds_of(log_entries.as_array().unwrap()),
        ["offered", "revoked", "rotated"]
    );
    // Every version reads byte-identical.
    for (oid, tstamp, sha) in &want {
        let r = app
            .get(&format!("/stream/{oid}?tstamp={tstamp}"), Some(&jane))
            .await;
        assert_eq!(r.status(), 200, "{oid}@{tstamp}");
        assert_eq!(&sha_hex(&r.bytes().await.unwrap()), sha, "{oid}@{tstamp}");
    }
    proc.stop();

    // With the server stopped: every key changed (and every stored one's object), fsck
    // finds nothing, and after gc only objects that rows name are left.
    let after = blob_rows(&data).await;
    assert_eq!(after.len(), 1000);
    for (rname, old) in &before {
        let new = &after[rname];
        assert_ne!(new.wrapped, old.wrapped, "{rname}: key unchanged");
        assert!(new.keyed > old.keyed, "{rname}");
        assert_eq!(new.sha256plain, old.sha256plain);
        if old.inline.is_some() {
            assert_ne!(new.inline, old.inline, "{rname}: not re-sealed");
        } else {
            assert_ne!(new.location(), old.location(), "{rname}: same object");
        }
    }
    let store = open_store(&data);
    let blobs = blob_store(&data);
    let fsck = vellum::ops::fsck(&store, &blobs).await.unwrap();
    assert!(fsck.findings.is_empty(), "{:?}", fsck.findings);
    assert_eq!(fsck.blobs, 1000);
    let gc = vellum::ops::gc(&store, &blobs, Duration::ZERO, false)
        .await
        .unwrap();
    let left = files_under(&data.join("blobs"));
    let named: std::collections::BTreeSet<String> = after
        .values()
        .filter(|r| r.inline.is_none())
        .map(|r| r.location().to_string())
        .collect();
    let stray: Vec<&String> = left.iter().filter(|f| !named.contains(*f)).collect();
    assert!(stray.is_empty(), "left over after gc: {stray:?} ({gc:?})");
    assert_eq!(left.len(), named.len(), "every row's object is there");
    eprintln!(
        "gc removed {} objects and {} staging files; total {:?}",
        gc.removed.len(),
        gc.staging_removed,
        started.elapsed()
    );
}

fn proc_addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------------------
// 2. A big version rotated under running downloads.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_1_gib_version_rotated_while_four_downloads_run_serves_each_whole() {
    use futures_util::StreamExt;
    use sha2::Digest;
    const SIZE: u64 = 1 << 30;
    const CHUNK: usize = 1 << 20;
    let started = Instant::now();
    let app = spawn_app().await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, _) = janes_docs(&app).await;

    // Streamed from a seeded generator, hashed on the way: never a second copy in memory.
    let hasher = Arc::new(Mutex::new(sha2::Sha256::new()));
    let h = hasher.clone();
    let gen = futures_util::stream::unfold((Rng(1 << 30), 0u64), move |(mut rng, sent)| {
        let h = h.clone();
        async move {
            if sent == SIZE {
                return None;
            }
            let chunk = bytes::Bytes::from(rng.bytes(CHUNK));
            h.lock().unwrap().update(&chunk);
            Some((Ok::<_, std::io::Error>(chunk), (rng, sent + CHUNK as u64)))
        }
    });
    let meta = json!([{"action": "C", "parentoid": folder, "name": "big.bin", "isfile": true,
                       "objectpolicy": owner_only(JANE)}]);
    let form = reqwest::multipart::Form::new()
        .part(
            "metadata",
            reqwest::multipart::Part::text(meta.to_string()).file_name("metadata.json"),
        )
        .part(
            "file",
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(gen), SIZE)
                .file_name("big.bin"),
        );
    let (s, out) = status_json(
        app.client
            .post(format!("{}/write", app.base))
            .header("userpolicy", &jane)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    let want = hex::encode(std::mem::take(&mut *hasher.lock().unwrap()).finalize());
    let uploaded = started.elapsed();
    let oid = oid_of(&out[0]);
    let rname = out[0]["rname"]["S3"].as_str().unwrap().to_string();
    assert_eq!(out[0]["sha256plain"], want.as_str(), "{}", out[0]);
    let before = blob_rows(&app.data_dir).await[&rname].clone();
    assert_eq!(before.location(), rname);
    let old_object = app.data_dir.join("blobs").join(&rname);
    assert!(old_object.exists());

    let made = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();

    // Four downloads: each reads a first chunk, says so, waits to be let go, reads on.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(4);
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut downloads = Vec::new();
    for _ in 0..4 {
        let (url, token) = (format!("{}/stream/{oid}", app.base), jane.clone());
        let (ready, mut go) = (ready_tx.clone(), go_rx.clone());
        downloads.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .get(url)
                .header("userpolicy", &token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.bytes_stream();
            let mut h = sha2::Sha256::new();
            let mut n = 0u64;
            let mut told = false;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.expect("the download breaks off");
                h.update(&chunk);
                n += chunk.len() as u64;
                if !told && n >= CHUNK as u64 {
                    told = true;
                    ready.send(()).await.unwrap();
                    go.wait_for(|g| *g).await.unwrap();
                }
            }
            (n, hex::encode(h.finalize()))
        }));
    }
    for _ in 0..4 {
        ready_rx.recv().await.unwrap();
    }

    // Revoked while the four are part-way: the rotation re-encrypts and switches...
    let revoked_at = Instant::now();
    let (s, v) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(status(&app, &format!("/stream/{oid}"), &bob).await, 404);
    let task_id = rotation_of(&app, &jane, &id).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let switched = loop {
        let row = blob_rows(&app.data_dir).await[&rname].clone();
        if row.wrapped != before.wrapped {
            break row;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(600),
            "never switched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let switch_took = revoked_at.elapsed();
    // ...but keeps the old object while the downloads read it.
    assert_ne!(switched.location(), rname);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(old_object.exists(), "the old object went while read");

    go_tx.send(true).unwrap();
    let released = Instant::now();
    for d in downloads {
        let (n, got) = d.await.unwrap();
        assert_eq!(n, SIZE);
        assert_eq!(got, want, "a download is not whole");
    }
    let downloaded = revoked_at.elapsed();
    // (The old object was there while they read, above; it goes once the last of them
    // lets go, or after the rotation's grace of 120 s.)
    let task = wait_task(&app, &jane, &task_id, Duration::from_secs(300)).await;
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["progress"]["done"], 2, "{task}");
    let rotated = revoked_at.elapsed();

    let after = blob_rows(&app.data_dir).await[&rname].clone();
    assert_ne!(after.wrapped, before.wrapped);
    assert_ne!(after.location(), before.location());
    assert_eq!(after.location(), switched.location());
    // The old object goes once its last reader has let go (a moment after the downloads).
    let gone_by = Instant::now() + Duration::from_secs(10);
    while old_object.exists() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!old_object.exists(), "the old object is left");
    assert!(app.data_dir.join("blobs").join(after.location()).exists());
    // The new object reads (its first MiB, by Range), and only under the new key.
    let r = app
        .client
        .get(format!("{}/stream/{oid}", app.base))
        .header("userpolicy", &jane)
        .header("range", format!("bytes=0-{}", CHUNK - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap()[..] == Rng(1 << 30).bytes(CHUNK)[..]);
    let blobs = blob_store(&app.data_dir);
    assert!(!key_opens(&blobs, &after, before.wrapped.as_ref().unwrap()).await);
    eprintln!(
        "1 GiB: upload {uploaded:?}; after the revocation: switched {switch_took:?}, \
         downloads whole {downloaded:?}, {:?} after they were let go, rotation done \
         {rotated:?}; total {:?}",
        released.elapsed(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 3. Webhooks through a receiver that is down, then flaky, and a restart.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_reach_a_receiver_that_is_down_then_flaky_every_entry_signed_in_order_and_none_lost_across_a_restart(
) {
    let started = Instant::now();
    let since = now_secs();
    let receiver = Receiver::start(Duration::from_secs(30), ANSWER_FLAKY).await;
    let url = receiver.url();
    let flags = [
        "--share-webhook-url",
        url.as_str(),
        "--share-webhook-secret",
        WEBHOOK_SECRET,
        "--task-backoff",
        "200ms",
        "--task-backoff-max",
        "2s",
        "--task-max-attempts",
        "1000",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (pem, jwt_pub) = crate::common::es512_keys();
    let server = InProc::start(&data, &pem, &jwt_pub, &flags).await;
    let app = &server.app;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let (folder, note) = janes_docs(app).await;
    // Before the restart: offers, an acceptance, a change.
    let s1 = call_ok(
        app,
        "POST",
        "/shares",
        &jane,
        Some(
            json!({"oid": folder, "audience": email(BOB), "role": "reader", "terms": "no copies"}),
        ),
    )
    .await;
    let s1 = s1["id"].as_str().unwrap().to_string();
    let s2 = call_ok(
        app,
        "POST",
        "/shares",
        &jane,
        Some(json!({"oid": note, "audience": email("rob.jonhson@email.com"), "role": "reader"})),
    )
    .await;
    let s2 = s2["id"].as_str().unwrap().to_string();
    let s3 = call_ok(
        app,
        "POST",
        "/shares",
        &jane,
        Some(
            json!({"oid": folder, "audience": {"claim": "org", "value": "ieee"}, "role": "reader",
                    "terms": "members only"}),
        ),
    )
    .await;
    let s3 = s3["id"].as_str().unwrap().to_string();
    call_ok(app, "POST", &format!("/shares/{s1}/accept"), &bob, None).await;
    call_ok(
        app,
        "PATCH",
        &format!("/shares/{s1}"),
        &jane,
        Some(json!({"role": "writer"})),
    )
    .await;
    // Stopped and started again on the same data folder while the receiver is down.
    server.stop().await;
    let server = InProc::start(&data, &pem, &jwt_pub, &flags).await;
    let app = &server.app;
    call_ok(
        app,
        "PATCH",
        &format!("/shares/{s2}"),
        &jane,
        Some(json!({"message": "see the second page"})),
    )
    .await;
    call_ok(app, "POST", &format!("/shares/{s3}/decline"), &bob, None).await;
    call_ok(app, "DELETE", &format!("/shares/{s1}"), &jane, None).await;
    let s4 = call_ok(
        app,
        "POST",
        "/shares",
        &jane,
        Some(json!({"oid": note, "audience": email(BOB), "role": "reader"})),
    )
    .await;
    let s4 = s4["id"].as_str().unwrap().to_string();
    let made = started.elapsed();
    assert!(receiver.arrivals().is_empty(), "the receiver is not up yet");

    // Once deliveries flow, stopped and started again, and more entries.
    let deadline = Instant::now() + Duration::from_secs(120);
    while receiver.delivered().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "nothing delivered: {:?}",
            receiver.arrivals()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let up = started.elapsed();
    server.stop().await;
    let server = InProc::start(&data, &pem, &jwt_pub, &flags).await;
    let app = &server.app;
    call_ok(app, "DELETE", &format!("/shares/{s2}"), &rob, None).await;
    call_ok(
        app,
        "PATCH",
        &format!("/shares/{s4}"),
        &jane,
        Some(json!({"role": "writer"})),
    )
    .await;

    // The revocations' rotations finish (each logs `rotated`)...
    for id in [&s1, &s2] {
        let t = rotation_of(app, &jane, id).await;
        let t = wait_task(
            app,
            &jane,
            t["id"].as_str().unwrap(),
            Duration::from_secs(120),
        )
        .await;
        assert_eq!(t["state"], "done", "{t}");
    }
    // ...and every entry of every log arrives.
    let mut logs: Vec<(String, Vec<Value>)> = Vec::new();
    for id in [&s1, &s2, &s3, &s4] {
        logs.push((id.clone(), share_log(app, &jane, id).await));
    }
    let kinds: Vec<Vec<String>> = logs.iter().map(|(_, l)| kinds_of(l)).collect();
    assert_eq!(
        kinds,
        [
            vec!["offered", "accepted", "changed", "revoked", "rotated"],
            vec!["offered", "changed", "revoked", "rotated"],
            vec!["offered", "declined"],
            vec!["offered", "changed"],
        ]
    );
    let entries: HashMap<String, &Value> = logs
        .iter()
        .flat_map(|(_, l)| l.iter())
        .map(|e| (e["tstamp"].as_str().unwrap().to_string(), e))
        .collect();
    assert_eq!(entries.len(), 13);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let delivered: std::collections::HashSet<String> =
            receiver.delivered().into_iter().collect();
        let missing: Vec<&String> = entries.keys().filter(|k| !delivered.contains(*k)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_in = started.elapsed();

    // Each request: signed, the entry itself, its id; nothing that is not an entry.
    let arrivals = receiver.arrivals();
    for a in &arrivals {
        let entry = entries
            .get(&a.id)
            .unwrap_or_else(|| panic!("an arrival that is no entry: {a:?}"));
        check_arrival(a, entry, since);
    }
    // Per share, the first arrival of each entry in log order (a later entry is sent only
    // once the earlier one was answered 200).
    for (id, log) in &logs {
        let mut firsts: Vec<String> = Vec::new();
        for a in &arrivals {
            let is_this_share = entries[&a.id]["share"] == id.as_str();
            if is_this_share && !firsts.contains(&a.id) {
                firsts.push(a.id.clone());
            }
        }
        let want: Vec<String> = log
            .iter()
            .map(|e| e["tstamp"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(firsts, want, "share {id}: arrivals out of log order");
        // And no entry was sent before the one ahead of it was answered 200.
        for pair in want.windows(2) {
            let first_of_later = arrivals.iter().position(|a| a.id == pair[1]).unwrap();
            let ok_of_earlier = arrivals
                .iter()
                .position(|a| a.id == pair[0] && a.status == 200)
                .unwrap();
            assert!(ok_of_earlier < first_of_later, "share {id}: {pair:?}");
        }
    }
    let failed = arrivals.iter().filter(|a| a.status == 500).count();
    assert!(failed >= arrivals.len() / 3, "the receiver was flaky");
    let webhooks = tasks_where(app, &jane, "kind=webhook&limit=1000").await;
    assert!(
        webhooks.iter().all(|t| t["state"] == "done"),
        "{webhooks:?}"
    );
    eprintln!(
        "webhooks: entries made by {made:?}, receiver up and delivering by {up:?}, all 13 in \
         by {all_in:?}; {} requests ({failed} answered 500)",
        arrivals.len()
    );
    server.stop().await;
}

/// `call`, expecting 200 or 201; the body.
async fn call_ok(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let (s, v) = call(app, method, path, Some(token), body.as_ref()).await;
    assert!(s == 200 || s == 201, "{method} {path}: {s} {v}");
    v
}

// ---------------------------------------------------------------------------------------
// 4. Bad input.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_task_requests_are_refused_with_a_clear_error_and_change_nothing() {
    let app = spawn_app().await;
    let (root, jane, bob) = (
        app.token_for("root"),
        app.token_for("jane"),
        app.token_for("bob"),
    );
    let (folder, _) = janes_docs(&app).await;
    let made = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    call_ok(&app, "DELETE", &format!("/shares/{id}"), &jane, None).await;
    let rotation = rotation_of(&app, &jane, &id).await;
    let task_id = rotation["id"].as_str().unwrap().to_string();
    let done = wait_task(&app, &jane, &task_id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}");
    let sweep = tasks_where(&app, &root, "kind=expiry_sweep").await;
    assert_eq!(sweep.len(), 1, "{sweep:?}");
    let sweep_id = sweep[0]["id"].as_str().unwrap().to_string();

    let everything = || async {
        let (s, all) = call(&app, "GET", "/tasks?limit=1000", Some(&root), None).await;
        assert_eq!(s, 200);
        // The sweep's row moves with each run; everything else stands still.
        let all: Vec<Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] != "expiry_sweep")
            .cloned()
            .collect();
        (all, app.fingerprint())
    };
    let before = everything().await;
    assert_eq!(
        before.0.len(),
        2,
        "a rotation and its one blob: {:?}",
        before.0
    );

    let refused = |method: &'static str, path: String, token: Option<String>, want: u16| {
        let app = &app;
        async move {
            let (s, v) = call(app, method, &path, token.as_deref(), None).await;
            assert_eq!(s, want, "{method} {path}: {v}");
            let err = assert_error_shape(&v, s, None);
            err["code"].as_str().unwrap().to_string()
        }
    };
    let (j, b) = (Some(jane.clone()), Some(bob.clone()));
    // Only a failed task is retried.
    let retry = format!("/tasks/{task_id}/retry");
    assert_eq!(
        refused("POST", retry.clone(), j.clone(), 409).await,
        "task_not_failed"
    );
    let sweep_retry = format!("/tasks/{sweep_id}/retry");
    assert_eq!(
        refused("POST", sweep_retry, Some(root.clone()), 409).await,
        "task_not_failed"
    );
    // Another person's task is not there for them, to read or to retry.
    let one = format!("/tasks/{task_id}");
    refused("GET", one.clone(), b.clone(), 404).await;
    refused("POST", retry.clone(), b.clone(), 404).await;
    refused("GET", format!("/tasks/{sweep_id}"), j.clone(), 404).await;
    refused("GET", "/tasks/00000000000000aa".into(), j.clone(), 404).await;
    refused("POST", "/tasks/zz/retry".into(), j.clone(), 404).await;
    refused("GET", format!("/tasks?oid={folder}"), b.clone(), 404).await;
    // Tasks belong to identities.
    refused("GET", "/tasks".into(), None, 401).await;
    refused("GET", one.clone(), None, 401).await;
    refused("POST", retry.clone(), None, 401).await;
    // Query values that mean nothing.
    for q in [
        "state=bogus",
        "limit=0",
        "kind=x",
        "limit=1001",
        "limit=ten",
        "before=zz",
        "oid=zz",
    ] {
        assert_eq!(
            refused("GET", format!("/tasks?{q}"), j.clone(), 400).await,
            "bad_query",
            "{q}"
        );
    }
    // The good ones still answer (so the refusals are about the values).
    assert_eq!(
        tasks_where(&app, &jane, "state=done&kind=rotate_share&limit=1")
            .await
            .len(),
        1
    );
    assert_eq!(
        tasks_where(&app, &jane, &format!("oid={folder}"))
            .await
            .len(),
        1
    );
    let (s, v) = call(&app, "GET", &one, Some(&jane), None).await;
    assert_eq!((s, &v), (200, &done));
    assert_eq!(
        everything().await,
        before,
        "a refused request changed something"
    );
}

#[tokio::test]
async fn serve_refuses_a_bad_webhook_url_or_a_missing_secret_with_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, jwt_pub) = crate::common::es512_keys();
    // (environment, extra flags, what stderr must name)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a [&'a str]);
    let cases: [Case; 5] = [
        (
            &[
                ("SHARE_WEBHOOK_URL", "ftp://x/"),
                ("SHARE_WEBHOOK_SECRET", "s"),
            ],
            &[],
            &["SHARE_WEBHOOK_URL", "ftp"],
        ),
        (
            &[
                ("SHARE_WEBHOOK_URL", "http://example.com/hook"),
                ("SHARE_WEBHOOK_SECRET", "s"),
            ],
            &[],
            &["SHARE_WEBHOOK_URL", "https"],
        ),
        (
            &[("SHARE_WEBHOOK_URL", "http://127.0.0.1:9/hook")],
            &[],
            &["SHARE_WEBHOOK_URL", "SHARE_WEBHOOK_SECRET"],
        ),
        (
            &[
                ("SHARE_WEBHOOK_URL", "https://hooks.example.com/x"),
                ("SHARE_WEBHOOK_SECRET", ""),
            ],
            &[],
            &["SHARE_WEBHOOK_SECRET"],
        ),
        (
            &[],
            &[
                "--share-webhook-url",
                "http://10.0.0.1/hook",
                "--share-webhook-secret",
                "s",
            ],
            &["SHARE_WEBHOOK_URL", "loopback"],
        ),
    ];
    for (i, (envs, flags, says)) in cases.iter().enumerate() {
        let data = tmp.path().join(format!("data{i}"));
        let port = crate::common::external::free_port();
        let listen = format!("127.0.0.1:{port}");
        let data_s = data.display().to_string();
        let mut cmd = vellum(tmp.path());
        cmd.args(["serve", "--listen", &listen, "--data-dir", &data_s])
            .args(*flags)
            .env("JWT_PUB", &jwt_pub);
        for (k, v) in *envs {
            cmd.env(k, v);
        }
        let out = run(cmd, 30);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        for word in *says {
            assert!(
                stderr.contains(word),
                "case {i}: {word:?} not in {stderr:?}"
            );
        }
        assert!(!stderr.contains("panicked"), "case {i}: {stderr}");
        assert!(!data.exists(), "case {i}: it touched its data folder");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "case {i}: something listens"
        );
    }
    // The same server with a good URL and a secret serves.
    let data = tmp.path().join("good");
    let mut good = serve(
        &data,
        crate::common::external::free_port(),
        &jwt_pub,
        &[
            "--share-webhook-url",
            "https://hooks.example.com/x",
            "--share-webhook-secret",
            "s",
        ],
        tmp.path(),
    );
    good.wait_healthy().await;
}

// ---------------------------------------------------------------------------------------
// 5. A failed delivery holds back its share's later ones until retried.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_failed_after_its_attempts_blocks_its_share_until_retried_then_all_arrive_in_order(
) {
    let since = now_secs();
    let receiver = Receiver::start(Duration::ZERO, ANSWER_500).await;
    let url = receiver.url();
    let app = app_with_webhook(
        &url,
        &[
            "--task-max-attempts",
            "2",
            "--task-backoff",
            "100ms",
            "--task-backoff-max",
            "200ms",
        ],
    )
    .await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (_, note) = janes_docs(&app).await;
    let made = share(
        &app,
        &jane,
        json!({"oid": note, "audience": email(BOB), "role": "reader", "terms": "no copies"}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();

    // Two runs, each answered 500: failed.
    let start = Instant::now();
    let failed = loop {
        let failed = tasks_where(&app, &jane, "kind=webhook&state=failed").await;
        if !failed.is_empty() {
            break failed;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed.len(), 1, "{failed:?}");
    let first = failed[0].clone();
    let first_id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["attempts"], 2, "{first}");
    assert_eq!(first["share"], id.as_str());
    assert!(first["report"].as_str().unwrap().contains("500"), "{first}");
    assert!(first.get("run_after").is_none(), "{first}");
    let offered = made["tstamp"].as_str().unwrap().to_string();
    assert_eq!(first["target"], format!("{id}/{offered}"));
    let sent: Vec<(String, u16)> = receiver
        .arrivals()
        .into_iter()
        .map(|a| (a.id, a.status))
        .collect();
    assert_eq!(sent, [(offered.clone(), 500), (offered.clone(), 500)]);

    // Later entries of the same share wait behind it...
    call_ok(&app, "POST", &format!("/shares/{id}/accept"), &bob, None).await;
    call_ok(
        &app,
        "PATCH",
        &format!("/shares/{id}"),
        &jane,
        Some(json!({"message": "page two"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.arrivals().len(), 2, "a later entry went out");
    let log = share_log(&app, &jane, &id).await;
    assert_eq!(kinds_of(&log), ["offered", "accepted", "changed"]);
    let later: Vec<Value> = tasks_where(&app, &jane, "kind=webhook")
        .await
        .into_iter()
        .filter(|t| t["id"] != first_id.as_str())
        .collect();
    assert_eq!(later.len(), 2, "{later:?}");
    for t in &later {
        assert_eq!(t["state"], "todo", "{t}");
        assert_eq!(t["attempts"], 0, "{t}");
    }
    // ...while another share's deliveries go on (the block is per share).
    receiver.answer(ANSWER_OK);
    let other = share(
        &app,
        &jane,
        json!({"oid": note, "audience": email("rob.jonhson@email.com"), "role": "reader"}),
    )
    .await;
    let other_entry = other["tstamp"].as_str().unwrap().to_string();
    let start = Instant::now();
    while receiver.delivered() != [other_entry.clone()] {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            receiver.arrivals()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Retried (with the receiver answering 200 now): it goes out, then the others in order.
    let (s, again) = call(
        &app,
        "POST",
        &format!("/tasks/{first_id}/retry"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], first_id.as_str());
    assert!(
        again["state"] == "todo" || again["state"] == "in_progress",
        "{again}"
    );
    assert_eq!(again["attempts"], 0, "{again}");
    let want: Vec<String> = log
        .iter()
        .map(|e| e["tstamp"].as_str().unwrap().to_string())
        .collect();
    let start = Instant::now();
    loop {
        let mine: Vec<String> = receiver
            .delivered()
            .into_iter()
            .filter(|i| *i != other_entry)
            .collect();
        if mine.len() >= 3 {
            assert_eq!(mine, want, "not in log order");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            receiver.arrivals()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries: HashMap<String, Value> = log
        .iter()
        .chain(&share_log(&app, &jane, other["id"].as_str().unwrap()).await)
        .map(|e| (e["tstamp"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    for a in receiver.arrivals() {
        check_arrival(&a, &entries[&a.id], since);
    }
    let t = wait_task(&app, &jane, &first_id, Duration::from_secs(10)).await;
    assert_eq!(t["state"], "done", "{t}");
    assert_eq!(t["attempts"], 1, "{t}");
    for t in &later {
        let t = wait_task(
            &app,
            &jane,
            t["id"].as_str().unwrap(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            (&t["state"], &t["attempts"]),
            (&json!("done"), &json!(1)),
            "{t}"
        );
    }
    // Done, it is not retried again.
    let (s, v) = call(
        &app,
        "POST",
        &format!("/tasks/{first_id}/retry"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!((s, &v["error"]["code"]), (409, &json!("task_not_failed")));
}

// ---------------------------------------------------------------------------------------
// 6. The expiry sweep.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_share_past_its_expiry_is_recorded_expired_by_the_sweep_within_seconds_and_rotated() {
    let app = crate::common::spawn_app_with(&["--share-sweep-interval", "1s"]).await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, note) = janes_docs(&app).await;
    // Whole seconds (RFC 3339), two to three from now.
    let expires_at = now_secs() + 3;
    let expires =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(expires_at))
            .to_string();
    let made = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader", "expires": expires}),
    )
    .await;
    assert_eq!(made["state"], "accepted", "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(status(&app, &format!("/stream/{note}"), &bob).await, 200);

    let start = Instant::now();
    let expired = loop {
        let log = share_log(&app, &jane, &id).await;
        if let Some(e) = log.iter().find(|e| e["kind"] == "expired") {
            break e.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no `expired` entry: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Recorded by the server, after the expiry and within a sweep or two of it.
    assert_eq!(expired["by"]["label"], "vellum", "{expired}");
    assert_eq!(expired["state"]["state"], "expired", "{expired}");
    let at_ns = u64::from_str_radix(expired["tstamp"].as_str().unwrap(), 16).unwrap();
    let at_ms = at_ns / 1_000_000;
    let expires_ms = expires_at * 1000;
    assert!(
        at_ms >= expires_ms,
        "recorded {at_ms} before the expiry {expires_ms}"
    );
    assert!(
        at_ms - expires_ms < 5000,
        "recorded {} ms after the expiry",
        at_ms - expires_ms
    );
    assert_eq!(status(&app, &format!("/stream/{note}"), &bob).await, 404);
    let (_, shown) = call(&app, "GET", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(shown["state"], "expired", "{shown}");

    // Its rotation, queued by the sweep, runs to done.
    let task = rotation_of(&app, &jane, &id).await;
    assert_eq!(task["target"], id.as_str());
    let task = wait_task(
        &app,
        &jane,
        task["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["progress"]["done"], 1, "{task}");
    let log = share_log(&app, &jane, &id).await;
    assert_eq!(kinds_of(&log), ["offered", "expired", "rotated"]);
    // Recorded once, however many sweeps ran since.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(share_log(&app, &jane, &id).await.len(), 3);
    let root = app.token_for("root");
    let sweep = tasks_where(&app, &root, "kind=expiry_sweep").await;
    assert_eq!(sweep.len(), 1, "{sweep:?}");
    assert_eq!(sweep[0]["state"], "todo", "{sweep:?}");
}

// ---------------------------------------------------------------------------------------
// 7. /metrics.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_the_queue_the_running_and_the_failed_tasks() {
    // A receiver that holds each delivery two seconds, then answers 500; one attempt.
    let receiver = Receiver::start(Duration::ZERO, ANSWER_SLOW_500).await;
    let url = receiver.url();
    let app = app_with_webhook(&url, &["--task-max-attempts", "1"]).await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let names = [
        "vellum_tasks_todo",
        "vellum_tasks_in_progress",
        "vellum_tasks_failed_now",
        "vellum_task_oldest_age_seconds",
        "vellum_task_run_failures_total",
        "vellum_tasks_failed_total",
    ];
    // The sweep is queued by the task runtime just after start-up.
    let m = metrics_until(&app, Duration::from_secs(10), "an idle queue", |m| {
        m.get("vellum_tasks_in_progress") == Some(&0.0) && m.get("vellum_tasks_todo") == Some(&1.0)
    })
    .await;
    for n in names {
        assert!(m.contains_key(n), "{n} missing");
    }
    // Only the sweep waits, for its next run.
    assert_eq!(m["vellum_tasks_todo"], 1.0);
    assert_eq!(m["vellum_tasks_failed_now"], 0.0);
    assert_eq!(m["vellum_task_run_failures_total"], 0.0);
    assert_eq!(m["vellum_tasks_failed_total"], 0.0);

    let (_, note) = janes_docs(&app).await;
    let made = share(
        &app,
        &jane,
        json!({"oid": note, "audience": email(BOB), "role": "reader", "terms": "t"}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    // Its delivery runs (held by the receiver)...
    metrics_until(&app, Duration::from_secs(10), "a delivery running", |m| {
        m["vellum_tasks_in_progress"] == 1.0 && m["vellum_tasks_todo"] == 1.0
    })
    .await;
    // ...and fails at its one attempt; the next entry's waits behind it.
    call_ok(&app, "POST", &format!("/shares/{id}/accept"), &bob, None).await;
    let waited = Instant::now();
    let m = metrics_until(&app, Duration::from_secs(10), "a failed delivery", |m| {
        m["vellum_tasks_failed_now"] == 1.0
    })
    .await;
    assert_eq!(m["vellum_tasks_failed_total"], 1.0);
    assert_eq!(m["vellum_task_run_failures_total"], 1.0);
    assert_eq!(
        m["vellum_tasks_todo"], 2.0,
        "the sweep and the blocked delivery"
    );
    assert_eq!(m["vellum_tasks_in_progress"], 0.0);
    // The oldest task still to run is the blocked delivery, queued moments ago.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let m = metrics(&app).await;
    let age = m["vellum_task_oldest_age_seconds"];
    let most = waited.elapsed().as_secs_f64() + 1.0;
    assert!(
        age >= 1.0 && age <= most,
        "oldest age {age}, at most {most}"
    );

    // Retried, it fails again (the receiver still answers 500): counted again.
    let failed = tasks_where(&app, &jane, "kind=webhook&state=failed").await;
    assert_eq!(failed.len(), 1);
    let fid = failed[0]["id"].as_str().unwrap();
    call_ok(&app, "POST", &format!("/tasks/{fid}/retry"), &jane, None).await;
    let m = metrics_until(&app, Duration::from_secs(10), "a second failure", |m| {
        m["vellum_tasks_failed_total"] == 2.0
    })
    .await;
    assert_eq!(m["vellum_task_run_failures_total"], 2.0);
    assert_eq!(m["vellum_tasks_failed_now"], 1.0);

    // Retried against a receiver that answers 200: the queue empties but for the sweep.
    receiver.answer(ANSWER_OK);
    call_ok(&app, "POST", &format!("/tasks/{fid}/retry"), &jane, None).await;
    let m = metrics_until(&app, Duration::from_secs(10), "an empty queue", |m| {
        m["vellum_tasks_failed_now"] == 0.0
            && m["vellum_tasks_todo"] == 1.0
            && m["vellum_tasks_in_progress"] == 0.0
    })
    .await;
    assert_eq!(
        m["vellum_tasks_failed_total"], 2.0,
        "a counter never goes down"
    );
    assert_eq!(receiver.delivered().len(), 2);
    // Nothing but the sweep's next run is waiting: nothing is old.
    assert_eq!(m["vellum_task_oldest_age_seconds"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_leaving_and_a_change_that_takes_away_reading_both_rotate_as_the_sharers_tasks()
{
    let app = spawn_app().await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let rob = app.token_for("rob");
    let (folder, note) = janes_docs(&app).await;
    let key_of = |rows: &HashMap<String, BlobRow>| rows.values().next().unwrap().wrapped.clone();
    let k0 = key_of(&blob_rows(&app.data_dir).await);

    // Bob leaves a share he held: the content he read gets a fresh key; the task is Jane's
    // (the sharer's), not Bob's.
    let to_bob = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let id = to_bob["id"].as_str().unwrap();
    let (s, _) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&bob), None).await;
    assert_eq!(s, 200);
    let task = rotation_ended(&app, &jane, id, Duration::from_secs(60)).await;
    assert_eq!(task["state"], "done", "{task}");
    let (s, mine) = call(&app, "GET", "/tasks?kind=rotate_share", Some(&bob), None).await;
    assert_eq!(
        (s, mine),
        (200, json!([])),
        "the leaver does not watch the rotation"
    );
    let k1 = key_of(&blob_rows(&app.data_dir).await);
    assert_ne!(k1, k0);

    // A change that leaves Rob only C (no R, no X) rotates what he could read.
    let to_rob = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email("rob.jonhson@email.com"), "role": "writer"}),
    )
    .await;
    let rid = to_rob["id"].as_str().unwrap();
    assert_eq!(status(&app, &format!("/stream/{note}"), &rob).await, 200);
    let (s, v) = call(
        &app,
        "PATCH",
        &format!("/shares/{rid}"),
        Some(&jane),
        Some(&json!({"letters": ["C"]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(status(&app, &format!("/stream/{note}"), &rob).await, 404);
    let task = rotation_ended(&app, &jane, rid, Duration::from_secs(60)).await;
    assert_eq!(task["state"], "done", "{task}");
    let k2 = key_of(&blob_rows(&app.data_dir).await);
    assert_ne!(k2, k1);
    // A change that keeps reading rotates nothing.
    let to_bob = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "writer"}),
    )
    .await;
    let bid = to_bob["id"].as_str().unwrap();
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("/shares/{bid}"),
        Some(&jane),
        Some(&json!({"role": "reader"})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, list) = call(&app, "GET", "/tasks?kind=rotate_share", Some(&jane), None).await;
    assert!(
        list.as_array().unwrap().iter().all(|t| t["share"] != bid),
        "{list}"
    );
    assert_eq!(key_of(&blob_rows(&app.data_dir).await), k2);
}
