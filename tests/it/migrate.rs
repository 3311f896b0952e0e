//! `vellum migrate --from DATA_DIR --to postgres://…` (issue 14): an embedded store with
//! 100,000 events, files, shares and tasks is copied into PostgreSQL, interrupted (kill -9)
//! and resumed; a server on the copy then answers every read as the original did.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::shares::{call, email, janes_docs, share};
use super::tasks::rotation_ended;
use crate::common::extra::*;
use crate::common::postgres::{connect, suite_on_postgres, Postgres};
use crate::common::process::vellum;
use crate::common::{fingerprint_of, spawn_app, spawn_app_at, TestApp};

/// What a reader sees: (path, caller) → (status, body), bodies as JSON where they are.
async fn reads(app: &TestApp, paths: &[(String, String)]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for (path, who) in paths {
        let token = app.token_for(who);
        let r = app.get(path, Some(&token)).await;
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => v.to_string(),
            Err(_) => {
                use sha2::Digest;
                format!(
                    "{} bytes, sha256 {}",
                    bytes.len(),
                    hex::encode(sha2::Sha256::digest(&bytes))
                )
            }
        };
        out.push((status, body));
    }
    out
}

#[tokio::test]
async fn a_migrated_store_answers_every_read_as_the_original_even_after_an_interrupted_copy() {
    if suite_on_postgres() {
        // The same test, copying from SQLite, runs in the `it` binary.
        return;
    }
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let mut app = spawn_app().await;
    let root = app.token_for("root");
    let jane = app.token_for("jane");

    // 100,000 events: folders in transactions of 1,000.
    let bulk = oid_of(&mkdir(&app, &root, "1", "bulk", None).await);
    for t in 0..100 {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"action": "C", "parentoid": bulk, "name": format!("d{t}x{i}")}))
            .collect();
        let r = app.write(Some(&root), &json!(events)).await;
        assert_eq!(r.status(), 200);
    }
    // Files: inline and stored, with versions; shares of every kind; tasks.
    let (folder, note) = janes_docs(&app).await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let meta = json!([{"action": "C", "parentoid": folder, "name": "big.bin", "isfile": true,
                       "objectpolicy": owner_only(JANE)}]);
    let (s, v) =
        status_json(write_parts(&app, Some(&jane), &meta, &[("big.bin", &big)]).await).await;
    assert_eq!(s, 200, "{v}");
    let big_oid = oid_of(&v[0]);
    let meta = json!([{"action": "U", "oid": note, "isfile": true}]);
    let (s, v) =
        status_json(write_parts(&app, Some(&jane), &meta, &[("note.txt", b"second")]).await).await;
    assert_eq!(s, 200, "{v}");
    let kept = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let revoked = share(
        &app,
        &jane,
        json!({"oid": big_oid, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let revoked_id = revoked["id"].as_str().unwrap().to_string();
    let (s, v) = call(
        &app,
        "DELETE",
        &format!("/shares/{revoked_id}"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let done = rotation_ended(&app, &jane, &revoked_id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}");
    let task_id = done["id"].as_str().unwrap().to_string();

    let kept_id = kept["id"].as_str().unwrap();
    let paths: Vec<(String, String)> = [
        (format!("/props/{note}"), "jane"),
        (format!("/history/{note}"), "jane"),
        (format!("/stream/{note}"), "jane"),
        (format!("/stream/{note}"), "bob"),
        (format!("/stream/{big_oid}"), "jane"),
        (format!("/stream/{big_oid}"), "bob"),
        (format!("/props/{big_oid}"), "jane"),
        (format!("/list/{folder}"), "bob"),
        (format!("/list/{bulk}"), "root"),
        (format!("/props/{bulk}/d99x999"), "root"),
        (format!("/shares/{kept_id}"), "jane"),
        (format!("/shares/{revoked_id}/log"), "jane"),
        (format!("/shares?oid={folder}"), "jane"),
        (format!("/tasks/{task_id}"), "jane"),
        ("/tasks".to_string(), "jane"),
    ]
    .into_iter()
    .map(|(p, w)| (p, w.to_string()))
    .collect();
    let before = reads(&app, &paths).await;
    assert!(
        before.iter().all(|(s, _)| *s == 200 || *s == 404),
        "{before:?}"
    );
    let fingerprint = fingerprint_of(&app.data_dir);
    let data_dir = app.data_dir.clone();
    app.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The copy, killed once it is under way, then run again to the end.
    let (data, cwd, url) = (
        data_dir.display().to_string(),
        data_dir.parent().unwrap().to_path_buf(),
        pg.url.clone(),
    );
    let migrate = move || {
        let mut cmd = vellum(&cwd);
        cmd.args(["migrate", "--from", &data, "--to", &url]);
        cmd
    };
    let mut child = migrate()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db = connect(&pg.url).await;
    let started = Instant::now();
    loop {
        let copied = db
            .query_opt(
                "SELECT copied FROM vellum_migration_progress WHERE tbl = 'events'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map_or(0, |r| r.get::<_, i64>(0));
        if copied > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before it was interrupted"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the copy never began"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let copied: i64 = db
        .query_one(
            "SELECT copied FROM vellum_migration_progress WHERE tbl = 'events'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(copied < 100_010, "interrupted after {copied} events");
    let m = migrate.clone();
    let out = tokio::task::spawn_blocking(move || crate::common::process::run(m(), 300))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("resumed an interrupted copy"), "{stdout}");
    assert!(stdout.contains("digested on both sides: equal"), "{stdout}");
    println!("{stdout}");
    // A second run finds a store there and refuses.
    let again = tokio::task::spawn_blocking(move || crate::common::process::run(migrate(), 120))
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a store"));

    // A server on the copy (same data folder: the blobs stayed there) answers as before.
    let copy = spawn_app_at(&data_dir, &["--database-url", &pg.url]).await;
    let after = reads(&copy, &paths).await;
    for ((path, who), (b, a)) in paths.iter().zip(before.iter().zip(&after)) {
        assert_eq!(b, a, "{path} as {who}");
    }
    assert_eq!(fingerprint_of(&copy.data_dir), fingerprint);
    // `vellum fsck` checks the store on PostgreSQL as it does on SQLite.
    let (data, cwd, url) = (
        data_dir.display().to_string(),
        data_dir.parent().unwrap().to_path_buf(),
        pg.url.clone(),
    );
    let fsck = tokio::task::spawn_blocking(move || {
        let mut cmd = vellum(&cwd);
        cmd.args(["fsck", "--data-dir", &data])
            .env("DATABASE_URL", &url);
        crate::common::process::run(cmd, 120)
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&fsck.stdout);
    assert!(
        fsck.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert!(said.contains("fsck: 100007 events, 3 blobs"), "{said}");
    assert!(said.contains(", 0 problems"), "{said}");
    // And it goes on from there: a write gets a tstamp past every copied one.
    let out = copy
        .write_ok(
            Some(&copy.token_for("root")),
            &json!([{"action": "C", "parentoid": bulk, "name": "after-the-copy"}]),
        )
        .await;
    let t = u64::from_str_radix(out[0]["tstamp"].as_str().unwrap(), 16).unwrap();
    let (_, hist) = copy
        .get_json(&format!("/history/{note}"), Some(&copy.token_for("jane")))
        .await;
    for v in hist.as_array().unwrap() {
        assert!(u64::from_str_radix(v["tstamp"].as_str().unwrap(), 16).unwrap() < t);
    }
}
