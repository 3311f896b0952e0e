//! Three `vellum serve` processes on one PostgreSQL database and one S3 bucket (SPEC §10),
//! with clients spread over them: they agree as one store does.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::shares::{call, email, janes_docs, share, status};
use super::tasks::rotation_ended;
use crate::common::extra::*;
use crate::common::postgres::Postgres;
use crate::common::process::Server;
use crate::common::s3::S3Server;
use crate::common::TestApp;

/// A node: its process and a client of it.
struct Node {
    server: Server,
    app: TestApp,
}

/// A database, a bucket and `n` nodes on them (each with a data folder in the temporary
/// one); `None` when there is no PostgreSQL to run.
async fn cluster(n: usize) -> Option<(Postgres, S3Server, tempfile::TempDir, Vec<Node>)> {
    let pg = Postgres::start().await?;
    let s3 = S3Server::start();
    s3.create_bucket("vellum");
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(n, &pg, &s3, dir.path()).await;
    Some((pg, s3, dir, nodes))
}

async fn start_nodes(n: usize, pg: &Postgres, s3: &S3Server, dir: &std::path::Path) -> Vec<Node> {
    use rand_core::RngCore;
    let (pem, jwt_pub) = crate::common::es512_keys();
    let mut key = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut key);
    let masterkey = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
    let users = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/users.json")
        .display()
        .to_string();
    let mut nodes = Vec::new();
    for i in 0..n {
        let port = crate::common::external::free_port();
        let listen = format!("127.0.0.1:{port}");
        // Each node has a data folder of its own (nothing of the store is kept there).
        let data = dir.join(format!("node{i}")).display().to_string();
        let mut envs: Vec<(&str, String)> = vec![
            ("JWT_PUB", jwt_pub.clone()),
            ("MASTERKEY", masterkey.clone()),
            ("USERS_FILE", users.clone()),
            ("DATABASE_URL", pg.url.clone()),
            // A dead node's leases run out soon.
            ("TASK_LEASE", "2s".into()),
        ];
        envs.extend(s3.env("vellum", "store"));
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let server = Server::start(
            dir,
            &["serve", "--listen", &listen, "--data-dir", &data],
            &envs,
            port,
        );
        let addr = listen.parse().unwrap();
        let signer = vellum::identity::TokenSigner::from_pem(&pem).unwrap();
        let app = TestApp::attach(addr, signer, dir.join(format!("node{i}")));
        nodes.push(Node { server, app });
    }
    for node in &mut nodes {
        node.server.wait_healthy().await;
    }
    nodes
}

fn tstamp(v: &Value) -> u64 {
    u64::from_str_radix(v["tstamp"].as_str().unwrap(), 16).unwrap()
}

/// Reads a feed's frames until `want` events have come or `limit` passes; returns the
/// events' (oid, tstamp) in the order they came.
async fn read_feed(
    mut resp: reqwest::Response,
    want: usize,
    limit: Duration,
) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < want {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await;
        let Ok(Ok(Some(chunk))) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                        if v.get("oid").is_some() && v.get("tstamp").is_some() {
                            got.push((v["oid"].as_str().unwrap().to_string(), tstamp(&v)));
                        }
                    }
                }
            }
        }
    }
    got
}

#[tokio::test]
async fn three_nodes_on_one_database_and_one_bucket_agree_and_survive_a_kill() {
    let Some((_pg, _s3, _dir, mut nodes)) = cluster(3).await else {
        return;
    };
    let root = nodes[0].app.token_for("root");

    // A feed on node A, opened before anything is written.
    let feed = nodes[0]
        .app
        .client
        .get(format!("{}/notifications", nodes[0].app.base))
        .header("userpolicy", &root)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);

    // Every 200 from any node is visible at once on the others; tstamps increase across
    // all of them.
    let mut written = Vec::new();
    for i in 0..30 {
        let (a, b, c) = (i % 3, (i + 1) % 3, (i + 2) % 3);
        let out = nodes[a]
            .app
            .write_ok(
                Some(&root),
                &json!([{"action": "C", "parentoid": "1", "name": format!("seq{i}")}]),
            )
            .await;
        let oid = out[0]["oid"].as_str().unwrap().to_string();
        for other in [b, c] {
            let (s, v) = nodes[other]
                .app
                .get_json(&format!("/props/{oid}"), Some(&root))
                .await;
            assert_eq!(s, 200, "written on node {a}, read on node {other}: {v}");
        }
        written.push((oid, tstamp(&out[0])));
    }
    assert!(
        written.windows(2).all(|w| w[0].1 < w[1].1),
        "tstamps of writes made one after another on three nodes increase: {written:?}"
    );

    // Node A's feed carries the writes made on B and C, in commit (= tstamp) order.
    let got = read_feed(feed, 30, Duration::from_secs(30)).await;
    let ours: Vec<&(String, u64)> = got
        .iter()
        .filter(|(oid, _)| written.iter().any(|(o, _)| o == oid))
        .collect();
    assert_eq!(ours.len(), 30, "the feed on A got {got:?}");
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{got:?}");

    // A client that saw the first ten on A resumes on B by Last-Event-ID: the other twenty,
    // in order, none twice.
    let seen = ours[9].1;
    let resumed = nodes[1]
        .app
        .client
        .get(format!("{}/notifications", nodes[1].app.base))
        .header("userpolicy", &root)
        .header("last-event-id", format!("{seen:016x}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let rest = read_feed(resumed, 20, Duration::from_secs(30)).await;
    let want: Vec<(String, u64)> = ours[10..].iter().map(|x| (*x).clone()).collect();
    assert_eq!(rest, want, "resumed on B after {seen:x}");

    // Concurrent transactions of two events each, from all three nodes at once: tstamps
    // unique store-wide.
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for k in 0..20 {
            let app_base = node.app.base.clone();
            let token = root.clone();
            tasks.push(tokio::spawn(async move {
                let body = json!([
                    {"action": "C", "parentoid": "1", "name": format!("n{n}k{k}a")},
                    {"action": "C", "parentoid": "1", "name": format!("n{n}k{k}b")}
                ]);
                let form = reqwest::multipart::Form::new().text("meta", body.to_string());
                let r = reqwest::Client::new()
                    .post(format!("{app_base}/write"))
                    .header("userpolicy", token)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                v.as_array().unwrap().iter().map(tstamp).collect::<Vec<_>>()
            }));
        }
    }
    let mut all = HashSet::new();
    for t in tasks {
        for ts in t.await.unwrap() {
            assert!(all.insert(ts), "tstamp {ts:x} handed out twice");
        }
    }
    assert_eq!(all.len(), 120);

    // A share revoked on A stops granting on C at the next request; its rotation runs
    // on some node, and finishes even when node C is killed right after the revocation.
    let (jane, bob) = (
        nodes[0].app.token_for("jane"),
        nodes[0].app.token_for("bob"),
    );
    let (folder, file) = janes_docs(&nodes[0].app).await;
    let made = share(
        &nodes[0].app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(
        status(&nodes[2].app, &format!("/stream/{file}"), &bob).await,
        200
    );
    let (s, v) = call(
        &nodes[0].app,
        "DELETE",
        &format!("/shares/{id}"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        status(&nodes[2].app, &format!("/stream/{file}"), &bob).await,
        404
    );
    assert_eq!(
        status(&nodes[2].app, &format!("/props/{file}"), &bob).await,
        404
    );

    // kill -9 node C while writes go to it and to B.
    let b_base = nodes[1].app.base.clone();
    let c_base = nodes[2].app.base.clone();
    let mut writers = Vec::new();
    for (n, base) in [b_base, c_base].into_iter().enumerate() {
        let token = root.clone();
        writers.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            for k in 0..40 {
                let body = json!([
                    {"action": "C", "parentoid": "1", "name": format!("kill{n}x{k}a")},
                    {"action": "C", "parentoid": "1", "name": format!("kill{n}x{k}b")}
                ]);
                let form = reqwest::multipart::Form::new().text("meta", body.to_string());
                let r = reqwest::Client::new()
                    .post(format!("{base}/write"))
                    .header("userpolicy", &token)
                    .multipart(form)
                    .send()
                    .await;
                if let Ok(r) = r {
                    if r.status() == 200 {
                        answered.push(format!("kill{n}x{k}"));
                    }
                }
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    nodes[2].server.stop();
    let mut answered = Vec::new();
    for w in writers {
        answered.extend(w.await.unwrap());
    }
    // Every 200 is there, and every transaction is there whole or not at all.
    let a = &nodes[0].app;
    for n in 0..2 {
        for k in 0..40 {
            let name = format!("kill{n}x{k}");
            let (sa, _) = a.get_json(&format!("/props/1/{name}a"), Some(&root)).await;
            let (sb, _) = a.get_json(&format!("/props/1/{name}b"), Some(&root)).await;
            assert_eq!(
                sa, sb,
                "{name}: one event of a transaction without the other"
            );
            if answered.contains(&name) {
                assert_eq!(sa, 200, "{name} was answered 200 and is gone");
            }
        }
    }
    assert!(
        answered.iter().any(|n| n.starts_with("kill0")),
        "node B kept writing"
    );

    // The rotation finishes on a node still alive.
    let done = rotation_ended(a, &jane, &id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}");
}

#[tokio::test]
async fn a_rotation_whose_node_is_killed_mid_run_finishes_on_another_node() {
    let Some((pg, _s3, _dir, mut nodes)) = cluster(2).await else {
        return;
    };
    let (jane, bob) = (
        nodes[0].app.token_for("jane"),
        nodes[0].app.token_for("bob"),
    );
    let (folder, _) = janes_docs(&nodes[0].app).await;
    // Enough versions that the rotation runs for a while: 96 files of 1 MiB.
    let body: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    for batch in 0..4 {
        let names: Vec<String> = (0..24).map(|i| format!("f{batch}-{i}.bin")).collect();
        let meta: Vec<Value> = names
            .iter()
            .map(|n| {
                json!({"action": "C", "parentoid": folder, "name": n, "isfile": true,
                            "objectpolicy": owner_only(JANE)})
            })
            .collect();
        let parts: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &body[..])).collect();
        let (s, v) =
            status_json(write_parts(&nodes[0].app, Some(&jane), &json!(meta), &parts).await).await;
        assert_eq!(s, 200, "{v}");
    }
    let made = share(
        &nodes[0].app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    let db = crate::common::postgres::connect(&pg.url).await;
    let (s, v) = call(
        &nodes[0].app,
        "DELETE",
        &format!("/shares/{id}"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The node that leases a part of the rotation is killed while it holds the lease.
    let started = std::time::Instant::now();
    let owner = loop {
        let row = db
            .query_opt(
                "SELECT lease_owner FROM tasks
                 WHERE kind IN ('rotate_share', 'rotate_blob') AND state = 'in_progress'
                   AND lease_owner IS NOT NULL LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            break row.get::<_, String>(0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no lease was ever taken"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let holder = nodes
        .iter()
        .position(|n| n.server.log_text().contains(owner.as_str()))
        .unwrap_or_else(|| panic!("no node's log names {owner}"));
    nodes[holder].server.stop();
    let other = &nodes[1 - holder].app;
    // Refused at once, whatever the rotation has done.
    assert_eq!(status(other, &format!("/list/{folder}"), &bob).await, 404);
    let done = rotation_ended(other, &jane, &id, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["progress"]["done"], 97, "{done}");
    // The survivor finished it: no lease is left with the dead node, every version reads.
    let (s, v) = other
        .get_json(&format!("/list/{folder}"), Some(&jane))
        .await;
    assert_eq!(s, 200, "{v}");
    for e in v.as_array().unwrap() {
        let path = format!("/stream/{}", e["oid"].as_str().unwrap());
        assert_eq!(status(other, &path, &jane).await, 200, "{path}");
    }
}
