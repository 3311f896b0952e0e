//! Test harness: a real server on an ephemeral port with a fresh data folder, and a
//! client that speaks HTTP to it. Tokens are ES512, like gm-data's.
#![allow(dead_code)]

pub mod external;
pub mod extra;
pub mod postgres;
pub mod process;
pub mod rng;
pub mod s3;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::Parser;
use p521::pkcs8::{EncodePrivateKey, LineEnding};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::sync::oneshot;
use vellum::config::Config;
use vellum::identity::TokenSigner;

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub signer: TokenSigner,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// A fresh P-521 key pair: (private PKCS#8 PEM, JWT_PUB as gm-data takes it: base64 of
/// the public PEM).
pub fn es512_keys() -> (String, String) {
    let sk = p521::SecretKey::random(&mut rand_core::OsRng);
    let pem = sk.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let signer = TokenSigner::from_pem(&pem).unwrap();
    let public = signer.public_pem().unwrap();
    (
        pem,
        base64::engine::general_purpose::STANDARD.encode(public),
    )
}

pub fn claims(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/claims/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

pub fn seed(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/seed/{name}"));
    std::fs::read_to_string(p).unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A server started in-process on port 0 with a fresh data folder, an ES512 key pair and
/// the fixture users file, plus extra `serve` flags; it stops when `shutdown` is sent or
/// dropped.
pub struct Started {
    pub addr: std::net::SocketAddr,
    /// The private key PEM that signs its tokens.
    pub pem: String,
    pub data_dir: PathBuf,
    pub dir: tempfile::TempDir,
    pub shutdown: oneshot::Sender<()>,
}

pub async fn start_server(extra: &[&str]) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    start_server_in(dir, data_dir, extra).await
}

/// [`spawn_app_with`] on an existing data folder (a store another server left).
pub async fn spawn_app_at(data_dir: &Path, extra: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    TestApp::started(start_server_in(dir, data_dir.to_path_buf(), extra).await)
}

async fn start_server_in(dir: tempfile::TempDir, data_dir: PathBuf, extra: &[&str]) -> Started {
    let (pem, jwt_pub) = es512_keys();
    let mut args = vec![
        "vellum".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--jwt-pub".into(),
        jwt_pub,
        "--users-file".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/users.json")
            .display()
            .to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    // Without PostgreSQL, `Postgres::start` says SKIPPED (or fails in CI) and the test runs
    // on SQLite.
    if postgres::suite_on_postgres() && !extra.contains(&"--database-url") {
        if let Some(pg) = postgres::Postgres::start().await {
            remember_database(&data_dir, &pg.url);
            args.extend(["--database-url".to_string(), pg.url]);
        }
    }
    let serve = vellum::cli::Cli::try_parse_from(args).unwrap().serve;
    let config = Config::from_args(serve).unwrap();
    let app = vellum::app::Application::build(config).await.unwrap();
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    Started {
        addr,
        pem,
        data_dir,
        dir,
        shutdown: tx,
    }
}

/// Starts the server with extra `serve` flags (e.g. `["--trusted-proxies", "10.0.0.0/8"]`).
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    TestApp::started(start_server(extra).await)
}

impl TestApp {
    /// A client of a server [`start_server`] started, which stops when this is dropped.
    fn started(st: Started) -> TestApp {
        TestApp {
            addr: st.addr,
            base: format!("http://{}", st.addr),
            client: reqwest::Client::new(),
            signer: TokenSigner::from_pem(&st.pem).unwrap(),
            data_dir: st.data_dir,
            _dir: st.dir,
            shutdown: Some(st.shutdown),
        }
    }

    /// A client of a server the test started itself (on `addr`, signing tokens with
    /// `signer`, storing in `data_dir`), which the test also stops.
    pub fn attach(addr: SocketAddr, signer: TokenSigner, data_dir: PathBuf) -> TestApp {
        TestApp {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            signer,
            data_dir,
            _dir: tempfile::tempdir().unwrap(),
            shutdown: None,
        }
    }

    /// Signals the server to shut down (as SIGTERM would), keeping the data folder.
    pub fn stop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }

    pub fn token(&self, claims: &Value) -> String {
        self.signer
            .sign(claims, std::time::Duration::from_secs(3600))
            .unwrap()
    }

    pub fn token_for(&self, fixture: &str) -> String {
        self.token(&claims(fixture))
    }

    /// POST /write with the metadata as the first part (named like the tutorial's raw
    /// bytes: `metadata`).
    pub async fn write_raw(&self, token: Option<&str>, metadata: String) -> reqwest::Response {
        let form = Form::new().part("metadata", Part::text(metadata).file_name("metadata.json"));
        let mut req = self
            .client
            .post(format!("{}/write", self.base))
            .multipart(form);
        if let Some(t) = token {
            req = req.header("userpolicy", t);
        }
        req.send().await.unwrap()
    }

    pub async fn write(&self, token: Option<&str>, metadata: &Value) -> reqwest::Response {
        self.write_raw(token, metadata.to_string()).await
    }

    /// Writes and expects 200; returns the stored events.
    pub async fn write_ok(&self, token: Option<&str>, metadata: &Value) -> Vec<Value> {
        let resp = self.write(token, metadata).await;
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 200, "write failed: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// POST /write of a single event; asserts 200 and returns the stored event.
    pub async fn write_one(&self, token: Option<&str>, event: Value) -> Value {
        self.write_ok(token, &Value::Array(vec![event]))
            .await
            .remove(0)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("userpolicy", t);
        }
        req.send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let resp = self.get(path, token).await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// The namespace folder's oid, from GET /config.
    pub async fn namespace_oid(&self) -> String {
        let (_, cfg) = self.get_json("/config", None).await;
        cfg["GMDATA_NAMESPACE_OID"].as_str().unwrap().to_string()
    }

    /// A digest of everything stored (see [`fingerprint_of`]).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.data_dir)
    }

    pub fn event_count(&self) -> i64 {
        let store = open_store(&self.data_dir);
        off_runtime(|| {
            store
                .read_blocking(|s| s.events_since(vellum::model::Tstamp(0), usize::MAX))
                .map(|e: Vec<_>| e.len() as i64)
                .unwrap()
        })
    }
}

/// Asserts that a value is 16 lower-case hex digits.
pub fn assert_hex16(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(
        s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{what} = {s:?} is not 16 lower-case hex digits"
    );
}

/// A digest of everything stored in a data folder: every event row, index row and purge
/// record. Equal before and after a refused request means the request changed nothing.
pub fn fingerprint_of(data_dir: &Path) -> String {
    fingerprint_without(data_dir, "")
}

/// [`fingerprint_of`], leaving out what the claims label `label` wrote (a bystander writing
/// while a refused request runs); `""` leaves out nothing.
pub fn fingerprint_without(data_dir: &Path, label: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::collections::BTreeSet;
    let store = open_store(data_dir);
    let mut h = Sha256::new();
    let (events, index) = off_runtime(|| {
        store
            .read_blocking(|s| -> Result<_, vellum::store::StoreError> {
                let all = s.events_since(vellum::model::Tstamp(0), usize::MAX)?;
                let theirs: BTreeSet<_> = all
                    .iter()
                    .filter(|e| !label.is_empty() && e.userpolicy.label == label)
                    .map(|e| e.oid)
                    .collect();
                let mut events = Vec::new();
                let mut oids = BTreeSet::new();
                for e in all {
                    if label.is_empty() || e.userpolicy.label != label {
                        events.push(format!(
                            "{}:{}:{}",
                            e.oid,
                            e.tstamp,
                            serde_json::to_string(&e).unwrap()
                        ));
                    }
                    if !theirs.contains(&e.oid) {
                        oids.insert(e.oid);
                    }
                }
                events.sort();
                let mut index = Vec::new();
                for oid in oids {
                    if let Some(c) = s.current(oid)? {
                        let e = &c.event;
                        index.push(format!(
                            "{oid}:{}:{}:{}:{}:{}",
                            e.tstamp, e.parentoid, e.name, c.live, e.fulldir
                        ));
                    }
                }
                Ok((events, index))
            })
            .unwrap()
    });
    for row in events.iter().chain(&index) {
        h.update(row.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The PostgreSQL database of each data folder whose server keeps its metadata there.
static DATABASES: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// Records that the server of `data_dir` keeps its metadata in the database at `url`.
pub fn remember_database(data_dir: &Path, url: &str) {
    DATABASES
        .lock()
        .unwrap()
        .push((data_dir.to_path_buf(), url.to_string()));
}

/// The database the server of `data_dir` keeps its metadata in, if it is PostgreSQL.
pub fn database_of(data_dir: &Path) -> Option<vellum::config::PostgresConfig> {
    let dbs = DATABASES.lock().unwrap();
    dbs.iter()
        .rev()
        .find(|(d, _)| d == data_dir)
        .map(|(_, url)| vellum::config::PostgresConfig::new(url.clone(), 4))
}

/// The data folder's metadata store, opened through the backend-neutral façade (alongside a
/// running server, which is fine: this one only reads). Opened on a thread of its own,
/// outside any async runtime, as PostgreSQL's synchronous client needs.
/// PostgreSQL stores opened by [`open_store`], kept for the test's next call (each holds
/// connections; a test may fingerprint hundreds of times).
static PG_STORES: std::sync::Mutex<Vec<(PathBuf, vellum::store::Store)>> =
    std::sync::Mutex::new(Vec::new());

pub fn open_store(data_dir: &Path) -> vellum::store::Store {
    let pg = database_of(data_dir);
    if pg.is_some() {
        let stores = PG_STORES.lock().unwrap();
        if let Some((_, s)) = stores.iter().find(|(d, _)| d == data_dir) {
            return s.clone();
        }
    }
    let store = std::thread::scope(|s| {
        s.spawn(|| {
            vellum::store::Store::open(data_dir, &vellum::config::SqliteConfig::NORMAL, pg.as_ref())
                .unwrap()
        })
        .join()
        .unwrap()
    });
    if pg.is_some() {
        PG_STORES
            .lock()
            .unwrap()
            .push((data_dir.to_path_buf(), store.clone()));
    }
    store
}

/// Runs `f` on a thread outside any async runtime: the store's blocking calls may be made
/// there whatever the backend (PostgreSQL's synchronous client refuses a runtime's thread).
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}
