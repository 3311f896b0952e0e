//! The task queue (SPEC §9.5, §9.6): a revocation's key rotation, the expiry sweep, the
//! task endpoints and webhooks, against the real server.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vellum::blob::BlobStore;
use vellum::store::BlobRow;

use crate::common::extra::*;
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
    let task = rotation_of(&app, &jane, &id).await;
    let task = wait_task(
        &app,
        &jane,
        task["id"].as_str().unwrap(),
        Duration::from_secs(300),
    )
    .await;
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
            assert!(
                !app.data_dir.join("blobs").join(old.location()).exists(),
                "old object left"
            );
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
