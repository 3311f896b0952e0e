//! A nearly full disk (issue 10, item 1): the real server on a small tmpfs, 12 clients
//! sending 3-event transactions while one sends 1,500-event transactions until the disk is
//! full. After a restart on the same folder, every transaction answered 200 is there and
//! every other one is absent; a full disk is a 507 `insufficient_storage` for metadata and
//! for blobs alike, keeps nothing, and the server writes again once space is freed.
//! (Every failure position of the writer is covered in `src/store/sqlite/writer_faults.rs`.)

use crate::common::external::{find_program, skip_or_fail};
use crate::common::extra::*;
use crate::common::{claims, es512_keys, fingerprint_of};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use vellum::config::Config;
use vellum::identity::TokenSigner;

const MIB: usize = 1 << 20;
const SMALL_CLIENTS: usize = 12;
const BIG_EVENTS: usize = 1_500;

/// A tmpfs of a given size, mounted for the test's lifetime (lazily unmounted on drop).
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: usize) -> Result<Tmpfs, String> {
        let mount = find_program("mount").ok_or("no `mount` program")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new(mount)
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m,mode=0700"))
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = find_program("umount").unwrap_or_else(|| "umount".into());
        let _ = Command::new(umount).arg("-l").arg(&self.path).status();
    }
}

/// Fills `path` with `len` bytes of a file that takes real space.
fn ballast(path: &Path, len: usize) {
    std::fs::write(path, vec![0x5au8; len]).unwrap();
}

/// A server on a given data folder (the harness makes its own folder, and clap refuses a
/// second `--data-dir`), with the key pair the test signs its tokens with.
struct Server {
    base: String,
    shutdown: Option<oneshot::Sender<()>>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn serve(data_dir: &Path, jwt_pub: &str) -> Server {
    let args = [
        "vellum",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--jwt-pub",
        jwt_pub,
    ];
    let serve = vellum::cli::Cli::try_parse_from(args).unwrap().serve;
    let app = vellum::app::Application::build(Config::from_args(serve).unwrap())
        .await
        .unwrap();
    let addr: SocketAddr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    Server {
        base: format!("http://{addr}"),
        shutdown: Some(tx),
        running,
    }
}

impl Server {
    /// Shuts down and waits until the server (and with it the store) is gone.
    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        (&mut self.running).await.unwrap().unwrap();
    }
}

async fn post(client: &reqwest::Client, base: &str, token: &str, form: Form) -> (u16, Value) {
    let resp = client
        .post(format!("{base}/write"))
        .header("userpolicy", token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    status_json(resp).await
}

fn meta(events: &Value) -> Form {
    Form::new().part(
        "metadata",
        Part::text(events.to_string()).file_name("metadata.json"),
    )
}

/// `n` creates in `parent`, named `{prefix}-{k}`, each with a description of
/// `description` bytes.
fn creates_sized(parent: &str, prefix: &str, n: usize, description: usize) -> Value {
    let description = "d".repeat(description);
    Value::Array(
        (0..n)
            .map(|k| {
                json!({"action": "C", "parentoid": parent, "name": format!("{prefix}-{k}"),
                       "description": description})
            })
            .collect(),
    )
}

/// `n` creates. Those of a big transaction carry a description, so that the transaction
/// (2.7 MB) outgrows SQLite's page cache (2 MB) and spills to the WAL before its COMMIT:
/// the disk then fills in the middle of a batch.
fn creates(parent: &str, prefix: &str, n: usize) -> Value {
    creates_sized(parent, prefix, n, if n > 3 { 1_500 } else { 0 })
}

/// Asserts a 507 with the `insufficient_storage` code.
fn assert_insufficient_storage(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 507, "{what}: {body}");
    assert_eq!(
        assert_error_shape(body, status, None)["code"],
        "insufficient_storage",
        "{what}"
    );
}

/// The names of the live children of `folder`, through the API.
async fn listed(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    folder: &str,
) -> BTreeSet<String> {
    let resp = client
        .get(format!("{base}/list/{folder}"))
        .header("userpolicy", token)
        .send()
        .await
        .unwrap();
    let (s, body) = status_json(resp).await;
    assert_eq!(s, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// Files (not folders) under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// One transaction of the workload and what it was answered.
struct Sent {
    prefix: String,
    events: usize,
    status: u16,
    body: Value,
}

/// Sends transactions of `events` creates until `stop`, until three in a row were refused,
/// or `most` were sent.
async fn client_loop(
    base: String,
    token: String,
    parent: String,
    name: String,
    events: usize,
    most: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    let mut refused_in_a_row = 0;
    for i in 0..most {
        if stop.load(Ordering::Relaxed) || refused_in_a_row == 3 {
            break;
        }
        let prefix = format!("{name}-{i}");
        let (status, body) = post(
            &client,
            &base,
            &token,
            meta(&creates(&parent, &prefix, events)),
        )
        .await;
        refused_in_a_row = if status == 200 {
            0
        } else {
            refused_in_a_row + 1
        };
        sent.push(Sent {
            prefix,
            events,
            status,
            body,
        });
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_full_disk_every_write_answered_200_is_kept_every_other_is_absent_and_507_is_answered()
{
    let fs = match Tmpfs::mount(48) {
        Ok(fs) => fs,
        Err(e) => {
            return skip_or_fail(&format!(
                "cannot mount a tmpfs for the full-disk test ({e}); it needs root"
            ))
        }
    };
    let data = fs.path.join("data");
    let (pem, jwt_pub) = es512_keys();
    let root = TokenSigner::from_pem(&pem)
        .unwrap()
        .sign(&claims("root"), std::time::Duration::from_secs(3600))
        .unwrap();
    let client = reqwest::Client::new();

    let server = serve(&data, &jwt_pub).await;
    let base = server.base.clone();
    let (s, out) = post(&client, &base, &root, meta(&creates("1", "load", 1))).await;
    assert_eq!(s, 200, "{out}");
    let load = oid_of(&out[0]);
    // Leave about 3.5 MiB free, as in the issue; two files, to free space in two steps.
    ballast(&fs.path.join("ballast-a"), 36 * MIB);
    ballast(&fs.path.join("ballast-b"), 8 * MIB);

    // 12 clients with 3-event transactions, one with 1,500-event transactions, and a
    // watcher that keeps asking for /healthz and the folder's props meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..=SMALL_CLIENTS {
        // Bounds, should the disk never fill: 3 MiB hold a few big transactions.
        let (name, events, most) = if c == SMALL_CLIENTS {
            ("big".to_string(), BIG_EVENTS, 40)
        } else {
            (format!("c{c:02}"), 3, 5_000)
        };
        clients.push(tokio::spawn(client_loop(
            base.clone(),
            root.clone(),
            load.clone(),
            name,
            events,
            most,
            stop.clone(),
        )));
    }
    let watcher = {
        let (base, root, load, stop) = (base.clone(), root.clone(), load.clone(), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered: BTreeMap<(&str, u16), usize> = BTreeMap::new();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let h = client.get(format!("{base}/healthz")).send().await.unwrap();
                *answered
                    .entry(("healthz", h.status().as_u16()))
                    .or_default() += 1;
                let p = client
                    .get(format!("{base}/props/{load}"))
                    .header("userpolicy", &root)
                    .send()
                    .await
                    .unwrap();
                *answered.entry(("props", p.status().as_u16())).or_default() += 1;
            }
            answered
        })
    };
    // The small clients stop once the big one is done: the disk refused it three times.
    let big = clients.pop().unwrap().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut sent: Vec<Sent> = big;
    for c in clients {
        sent.extend(c.await.unwrap());
    }
    let watched = watcher.await.unwrap();

    let ok = sent.iter().filter(|t| t.status == 200).count();
    let full = sent.iter().filter(|t| t.status == 507).count();
    let by_status: BTreeMap<u16, usize> = sent.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.status).or_default() += 1;
        m
    });
    eprintln!(
        "full-disk workload: {} transactions, by status {by_status:?}; big ones: {:?}; \
         watcher: {watched:?}",
        sent.len(),
        sent.iter()
            .filter(|t| t.events == BIG_EVENTS)
            .map(|t| t.status)
            .collect::<Vec<_>>()
    );

    // A restart on the same folder: what was acknowledged is there, nothing else is.
    server.stop().await;
    let server = serve(&data, &jwt_pub).await;
    let base = server.base.clone();
    let names = listed(&client, &base, &root, &load).await;
    let mut expected = BTreeSet::new();
    let mut lies = Vec::new();
    for t in &sent {
        let mine: BTreeSet<String> = (0..t.events).map(|k| format!("{}-{k}", t.prefix)).collect();
        let present = mine.intersection(&names).count();
        if t.status == 200 {
            expected.extend(mine);
        }
        if (t.status == 200 && present != t.events) || (t.status != 200 && present != 0) {
            lies.push(format!(
                "{} answered {} has {present} of its {} events",
                t.prefix, t.status, t.events
            ));
        }
    }
    assert!(lies.is_empty(), "{} lies:\n{}", lies.len(), lies.join("\n"));
    assert_eq!(names, expected);
    assert!(ok > 0 && full > 0, "{by_status:?}");
    for t in sent.iter().filter(|t| t.status != 200) {
        assert_insufficient_storage(t.status, &t.body, &t.prefix);
    }
    assert!(
        watched.keys().all(|&(_, s)| s == 200) && watched.len() == 2,
        "other callers were not served: {watched:?}"
    );

    // Still full: a 9 MB metadata write (more than was ever free) is refused with a 507
    // and changes nothing.
    let huge = |prefix: &str| meta(&creates_sized(&load, prefix, BIG_EVENTS, 6_000));
    let before = fingerprint_of(&data);
    let (s, body) = post(&client, &base, &root, huge("after-restart")).await;
    assert_insufficient_storage(s, &body, "a 9 MB write on the full disk");
    assert_eq!(fingerprint_of(&data), before);

    // 8 to 11.5 MiB free: room for metadata, not for a 16 MiB file (a multipart upload):
    // the blob store's disk is full.
    std::fs::remove_file(fs.path.join("ballast-b")).unwrap();
    let file = vec![0xa5u8; 16 * MIB];
    let upload = |name: &str| {
        meta(&json!([{"action": "C", "parentoid": load, "name": name, "isfile": true}]))
            .part("file", Part::bytes(file.clone()).file_name("big.bin"))
    };
    // The server answers while the client is still sending the body, then closes; the
    // client sometimes loses that race and sees the connection reset instead of the answer
    // (one run in a few dozen). Each attempt is refused the same way; one must be heard.
    let mut heard = None;
    for _ in 0..5 {
        let sent = client
            .post(format!("{base}/write"))
            .header("userpolicy", &root)
            .multipart(upload("big.bin"))
            .send()
            .await;
        if let Ok(resp) = sent {
            heard = Some(status_json(resp).await);
            break;
        }
    }
    let (s, body) = heard.expect("no answer to a 16 MiB upload in 5 attempts");
    assert_insufficient_storage(s, &body, "a 16 MiB upload");
    assert_eq!(fingerprint_of(&data), before);
    assert_eq!(files_under(&data.join("blobs")), Vec::<PathBuf>::new());
    let h = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);

    // Space freed: the server writes again, metadata and blobs.
    std::fs::remove_file(fs.path.join("ballast-a")).unwrap();
    let (s, body) = post(&client, &base, &root, upload("big.bin")).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = post(&client, &base, &root, huge("after-freeing")).await;
    assert_eq!(s, 200, "{body}");
    let names = listed(&client, &base, &root, &load).await;
    assert!(names.contains("big.bin") && names.contains("after-freeing-1499"));
    server.stop().await;
}
