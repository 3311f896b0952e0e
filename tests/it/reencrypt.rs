//! Re-encrypting a file version under a fresh data key (a blob's name apart from its
//! location): downloads under way finish on the old object, a crash at any step leaves the
//! version readable under exactly one key, and gc removes what a crash leaves behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use vellum::app::AppState;
use vellum::config::Config;
use vellum::identity::TokenSigner;
use vellum::ops::{ReencryptStep, Reencrypted};
use vellum::store::BlobRow;

use crate::common::extra::upload_file;
use crate::common::rng::Rng;
use crate::common::{claims, es512_keys};

const SIZE: usize = 100 << 20;

/// A server in this process on `data_dir`, verifying tokens of `jwt_pub`.
struct Server {
    base: String,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(data_dir: &Path, jwt_pub: &str) -> Server {
        let config = config(data_dir, jwt_pub);
        let app = vellum::app::Application::build(config).await.unwrap();
        let base = format!("http://{}", app.local_addr());
        let state = app.state();
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Server {
            base,
            state,
            stop: Some(tx),
            done,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        drop(self.state);
        let _ = self.done.await;
    }
}

fn config(data_dir: &Path, jwt_pub: &str) -> Config {
    let args = [
        "vellum",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir.display().to_string(),
        "--jwt-pub",
        jwt_pub,
    ]
    .map(str::to_string);
    let serve = vellum::cli::Cli::try_parse_from(args).unwrap().serve;
    Config::from_args(serve).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn download(base: &str, token: &str, oid: &str) -> Vec<u8> {
    let resp = reqwest::Client::new()
        .get(format!("{base}/stream/{oid}"))
        .header("userpolicy", token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

async fn row(state: &AppState, rname: &str) -> BlobRow {
    let r = rname.to_string();
    state
        .store
        .read(move |s| s.blob(&r))
        .await
        .unwrap()
        .unwrap()
}

fn object_path(data_dir: &Path, location: &str) -> PathBuf {
    data_dir.join("blobs").join(location)
}

/// Every object file under the blob folder, by location.
fn objects(data_dir: &Path) -> Vec<String> {
    let root = data_dir.join("blobs");
    let mut out = Vec::new();
    for shard in std::fs::read_dir(&root).unwrap() {
        let shard = shard.unwrap().path();
        if !shard.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&shard).unwrap() {
            let f = f.unwrap().path();
            let rel = f.strip_prefix(&root).unwrap().display().to_string();
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Whether `wrapped` (a data key) opens the object at `location` as blob `rname`.
async fn key_opens(
    state: &AppState,
    row: &BlobRow,
    location: &str,
    wrapped: &vellum::crypto::Wrapped,
) -> bool {
    let Ok(reader) = state
        .blobs
        .open_recorded(&row.rname, location, row.algorithm, Some(wrapped), None)
        .await
    else {
        return false;
    };
    vellum::blob::BlobStore::hash_all(reader).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_reencrypted_while_four_downloads_run_serves_each_whole_and_then_only_the_new_key(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (pem, jwt_pub) = es512_keys();
    let token = TokenSigner::from_pem(&pem)
        .unwrap()
        .sign(&claims("root"), Duration::from_secs(3600))
        .unwrap();
    let server = Server::start(&data, &jwt_pub).await;
    let bytes = Rng(11).bytes(SIZE);
    let want = sha(&bytes);
    let ev = upload_file(&server.base, &token, "big.bin", bytes).await;
    let oid = ev["oid"].as_str().unwrap().to_string();
    let rname = ev["rname"]["S3"].as_str().unwrap().to_string();
    let before = row(&server.state, &rname).await;
    assert_eq!(before.location(), rname, "a new blob lies at its name");
    let old_key = before.wrapped.clone().unwrap();

    // Four downloads: each reads its first MiB, says so, and waits to be let go.
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(4);
    let (go_tx, go_rx) = watch::channel(false);
    let mut downloads = Vec::new();
    for _ in 0..4 {
        let (base, token, oid) = (server.base.clone(), token.clone(), oid.clone());
        let (ready, mut go) = (ready_tx.clone(), go_rx.clone());
        downloads.push(tokio::spawn(async move {
            let mut resp = reqwest::Client::new()
                .get(format!("{base}/stream/{oid}"))
                .header("userpolicy", &token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let mut h = Sha256::new();
            let mut n = 0usize;
            let mut told = false;
            while let Some(chunk) = resp.chunk().await.unwrap() {
                h.update(&chunk);
                n += chunk.len();
                if !told && n >= 1 << 20 {
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

    let (step_tx, mut step_rx) = mpsc::unbounded_channel::<ReencryptStep>();
    let rotation = {
        let (state, rname) = (server.state.clone(), rname.clone());
        tokio::spawn(async move {
            vellum::ops::reencrypt(
                &state.store,
                &state.blobs,
                &rname,
                Duration::from_secs(300),
                &move |s| {
                    let _ = step_tx.send(s);
                },
            )
            .await
            .unwrap()
        })
    };
    assert_eq!(step_rx.recv().await, Some(ReencryptStep::Sealed));
    assert_eq!(step_rx.recv().await, Some(ReencryptStep::Switched));
    // Switched: new readers get the new key and object; the old object stays for the four.
    let switched = row(&server.state, &rname).await;
    let new_location = switched.location().to_string();
    assert_ne!(new_location, rname);
    assert_ne!(switched.wrapped.as_ref(), Some(&old_key));
    assert_eq!(switched.sha256plain, before.sha256plain);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        object_path(&data, &rname).exists(),
        "the old object is kept while downloads read it"
    );
    assert!(
        !rotation.is_finished(),
        "the rotation waits for the downloads"
    );
    assert_eq!(
        download(&server.base, &token, &oid).await.len(),
        SIZE,
        "a download that starts now reads the new object"
    );

    go_tx.send(true).unwrap();
    for d in downloads {
        let (n, got) = d.await.unwrap();
        assert_eq!(n, SIZE);
        assert_eq!(got, want, "each download is whole and correct");
    }
    let done = rotation.await.unwrap();
    assert_eq!(
        done,
        Reencrypted::Done {
            location: Some(new_location.clone())
        }
    );
    assert_eq!(step_rx.recv().await, Some(ReencryptStep::OldDeleted));
    assert!(
        !object_path(&data, &rname).exists(),
        "the old object is gone"
    );
    assert_eq!(objects(&data), vec![new_location.clone()]);

    // The version reads byte-identical; only the new key opens what is stored.
    assert_eq!(sha(&download(&server.base, &token, &oid).await), want);
    let after = row(&server.state, &rname).await;
    assert!(
        key_opens(
            &server.state,
            &after,
            &new_location,
            after.wrapped.as_ref().unwrap()
        )
        .await
    );
    assert!(!key_opens(&server.state, &after, &new_location, &old_key).await);
    let fsck = vellum::ops::fsck(&server.state.store, &server.state.blobs)
        .await
        .unwrap();
    assert!(fsck.findings.is_empty(), "{:?}", fsck.findings);
    server.stop().await;
}

/// Where the child process running a re-encryption is killed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KillAt {
    /// While the new object is being written.
    Sealing,
    After(ReencryptStep),
}

/// Not a test on its own: the process the next test kills. It re-encrypts one blob of the
/// data folder in `VELLUM_REENCRYPT_CHILD` (`data_dir|jwt_pub|rname|step`), printing each
/// step, and stops to wait (for its kill) after the step named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_reencryption_killed_at_any_step_leaves_the_version_readable_under_one_key"]
async fn reencrypt_child_process() {
    let spec = std::env::var("VELLUM_REENCRYPT_CHILD").expect("run by the killing test");
    let parts: Vec<&str> = spec.split('|').collect();
    let (data, jwt_pub, rname, stop_at) = (Path::new(parts[0]), parts[1], parts[2], parts[3]);
    let config = config(data, jwt_pub);
    let store =
        vellum::store::Store::open(&config.data_dir, &config.sqlite, config.postgres.as_ref())
            .unwrap();
    let blobs = vellum::app::open_blobs(&config).unwrap();
    println!("started");
    let stop_at = stop_at.to_string();
    vellum::ops::reencrypt(&store, &blobs, rname, Duration::from_secs(5), &move |s| {
        println!("step {s:?}");
        if format!("{s:?}") == stop_at {
            // Wait to be killed.
            std::thread::sleep(Duration::from_secs(600));
        }
    })
    .await
    .unwrap();
    println!("finished");
    std::thread::sleep(Duration::from_secs(600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reencryption_killed_at_any_step_leaves_the_version_readable_under_one_key() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let (pem, jwt_pub) = es512_keys();
    let token = TokenSigner::from_pem(&pem)
        .unwrap()
        .sign(&claims("root"), Duration::from_secs(3600))
        .unwrap();
    // The steps do not depend on the size (the first test re-encrypts 100 MiB); 24 MiB is
    // three multipart parts, so the first kill lands mid-upload.
    let bytes = Rng(12).bytes(24 << 20);
    let want = sha(&bytes);
    for kill_at in [
        KillAt::Sealing,
        KillAt::After(ReencryptStep::Sealed),
        KillAt::After(ReencryptStep::Switched),
        KillAt::After(ReencryptStep::OldDeleted),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start(&data, &jwt_pub).await;
        let ev = upload_file(&server.base, &token, "big.bin", bytes.clone()).await;
        let oid = ev["oid"].as_str().unwrap().to_string();
        let rname = ev["rname"]["S3"].as_str().unwrap().to_string();
        let old_key = row(&server.state, &rname).await.wrapped.unwrap();
        server.stop().await;

        let stop_at = match kill_at {
            KillAt::Sealing => "never".to_string(),
            KillAt::After(s) => format!("{s:?}"),
        };
        // The test's name without the crate's: `reencrypt::…`, or `it::reencrypt::…` in
        // the suite's second binary (tests/it_postgres.rs).
        let module = module_path!().split_once("::").map_or("", |(_, m)| m);
        let child_test = format!("{module}::reencrypt_child_process");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                child_test.as_str(),
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "VELLUM_REENCRYPT_CHILD",
                format!("{}|{jwt_pub}|{rname}|{stop_at}", data.display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wait_for = |lines: &mut std::io::Lines<BufReader<std::process::ChildStdout>>,
                        want: &str| {
            for line in lines.by_ref() {
                // libtest prints "test <name> ... " before the test's own first line.
                if line.unwrap().trim_end().ends_with(want) {
                    return;
                }
            }
            panic!("the child ended before printing {want:?}");
        };
        match kill_at {
            KillAt::Sealing => {
                wait_for(&mut lines, "started");
                // Killed while the new object is a part-written upload (a staging file).
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                while !objects(&data).iter().any(|o| o.contains('#')) {
                    assert!(std::time::Instant::now() < deadline, "no upload seen");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            KillAt::After(s) => wait_for(&mut lines, &format!("step {s:?}")),
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Whatever step it died at: the version reads byte-identical, under one key...
        let server = Server::start(&data, &jwt_pub).await;
        assert_eq!(
            sha(&download(&server.base, &token, &oid).await),
            want,
            "{kill_at:?}"
        );
        let now = row(&server.state, &rname).await;
        let key = now.wrapped.clone().unwrap();
        let switched = matches!(
            kill_at,
            KillAt::After(ReencryptStep::Switched | ReencryptStep::OldDeleted)
        );
        assert_eq!(key != old_key, switched, "{kill_at:?}");
        assert_eq!(now.location() != rname, switched, "{kill_at:?}");
        // ...which alone opens what is stored, and fsck finds nothing wrong.
        assert!(key_opens(&server.state, &now, now.location(), &key).await);
        assert_eq!(
            key_opens(&server.state, &now, now.location(), &old_key).await,
            !switched,
            "{kill_at:?}"
        );
        let fsck = vellum::ops::fsck(&server.state.store, &server.state.blobs)
            .await
            .unwrap();
        assert!(fsck.findings.is_empty(), "{kill_at:?}: {:?}", fsck.findings);
        // gc removes what the crash left (the new object before the switch, the old one
        // after it), and nothing else: one object remains, the one the row names.
        let gc = vellum::ops::gc(
            &server.state.store,
            &server.state.blobs,
            Duration::ZERO,
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            objects(&data),
            vec![now.location().to_string()],
            "{kill_at:?}: {gc:?}"
        );
        assert_eq!(
            sha(&download(&server.base, &token, &oid).await),
            want,
            "{kill_at:?}, after gc"
        );
        server.stop().await;
    }
}
