//! The PostgreSQL backend's schema (issue 14) on a real PostgreSQL: migrations run once,
//! together with other nodes, refuse a newer schema, and the database itself refuses to
//! change the logs.

use crate::common::postgres::{connect, Postgres};

use vellum::store::postgres::migrate;

async fn refused(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("{sql}: not refused"),
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string()),
    }
}

#[tokio::test]
async fn the_schema_migrates_once_even_from_three_nodes_at_once_and_refuses_a_newer_one() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    // Three nodes starting together: one migrates, the others find it done.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&pg.url).await);
    }
    let ran = futures_util::future::join_all(clients.iter_mut().map(migrate)).await;
    let mut ran: Vec<usize> = ran.into_iter().map(Result::unwrap).collect();
    ran.sort();
    assert_eq!(ran, [0, 0, 1]);
    let client = &mut clients[0];
    assert_eq!(migrate(client).await.unwrap(), 0);
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "blobs",
            "clock",
            "event_blobs",
            "events",
            "meta",
            "objects",
            "purges",
            "schema_migrations",
            "share_log",
            "shares",
            "task_links",
            "tasks"
        ]
    );
    // A database a newer Vellum migrated is refused, and left as it is.
    client
        .batch_execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
        .await
        .unwrap();
    let e = migrate(client).await.unwrap_err().to_string();
    assert!(e.contains("version 99, newer than this Vellum's 1"), "{e}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn the_database_refuses_to_change_the_logs_and_deletes_events_only_inside_a_purge() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let mut client = connect(&pg.url).await;
    migrate(&mut client).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO events (oid, tstamp, body) VALUES (7, 1, '{}'), (7, 2, '{}');
             INSERT INTO share_log (tstamp, share, kind, body) VALUES (3, 9, 'offered', '{}');",
        )
        .await
        .unwrap();
    for sql in [
        "UPDATE events SET body = '{\"x\":1}' WHERE oid = 7",
        "DELETE FROM events WHERE oid = 7",
        "TRUNCATE events",
        "UPDATE share_log SET kind = 'revoked'",
        "DELETE FROM share_log",
        "TRUNCATE share_log",
    ] {
        let e = refused(&client, sql).await;
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    // Inside a purge's transaction, events may go; the share log never.
    let e = refused(
        &client,
        "BEGIN; SET LOCAL vellum.purging = 'on'; DELETE FROM share_log; COMMIT;",
    )
    .await;
    assert!(e.contains("share_log is append-only"), "{e}");
    client.batch_execute("ROLLBACK").await.unwrap();
    client
        .batch_execute(
            "BEGIN; SET LOCAL vellum.purging = 'on'; DELETE FROM events WHERE tstamp = 1; COMMIT;",
        )
        .await
        .unwrap();
    // The purge's setting ended with its transaction.
    let e = refused(&client, "DELETE FROM events").await;
    assert!(e.contains("outside a purge"), "{e}");
    let left: Vec<i64> = client
        .query("SELECT tstamp FROM events ORDER BY tstamp", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [2]);
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tstamps_from_three_nodes_are_unique_increasing_and_committed_in_their_order() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let mut admin = connect(&pg.url).await;
    migrate(&mut admin).await.unwrap();
    // A wall clock far behind (a node whose clock stepped back) still gets a later tstamp.
    let a: i64 = admin
        .query_one("SELECT vellum_next_tstamp($1)", &[&now_ns()])
        .await
        .unwrap()
        .get(0);
    let b: i64 = admin
        .query_one("SELECT vellum_next_tstamp($1)", &[&1i64])
        .await
        .unwrap()
        .get(0);
    assert_eq!(b, a + 1);

    // Three nodes, each committing 200 transactions of two tstamps, while a feed polls for
    // what was committed after the last tstamp it saw: it must never find an older one late.
    const PER_NODE: usize = 200;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let (url, done) = (pg.url.clone(), done.clone());
        nodes.push(tokio::spawn(async move {
            let mut client = connect(&url).await;
            for _ in 0..PER_NODE {
                let tx = client.transaction().await.unwrap();
                for _ in 0..2 {
                    let t: i64 = tx
                        .query_one("SELECT vellum_next_tstamp($1)", &[&now_ns()])
                        .await
                        .unwrap()
                        .get(0);
                    tx.execute(
                        "INSERT INTO events (oid, tstamp, body) VALUES ($1, $1, '{}')",
                        &[&t],
                    )
                    .await
                    .unwrap();
                    tokio::task::yield_now().await;
                }
                tx.commit().await.unwrap();
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    let feed = connect(&pg.url).await;
    let (mut last, mut seen) = (b, Vec::new());
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst) == 3;
        let late: i64 = feed
            .query_one(
                "SELECT count(*) FROM events WHERE tstamp <= $1 AND tstamp > $2",
                &[&last, &b],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            late as usize,
            seen.len(),
            "a transaction committed behind the feed"
        );
        let rows = feed
            .query(
                "SELECT tstamp FROM events WHERE tstamp > $1 ORDER BY tstamp",
                &[&last],
            )
            .await
            .unwrap();
        for r in rows {
            let t: i64 = r.get(0);
            seen.push(t);
            last = t;
        }
        if finished {
            break;
        }
    }
    for n in nodes {
        n.await.unwrap();
    }
    assert_eq!(seen.len(), 3 * PER_NODE * 2);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

/// `vellum serve` with `DATABASE_URL`: its exit status and what it printed.
fn serve_with_database(url: &str) -> std::process::Output {
    use crate::common::process::{run, vellum};
    let tmp = tempfile::tempdir().unwrap();
    let (_, jwt_pub) = crate::common::es512_keys();
    let port = crate::common::external::free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = tmp.path().join("data").display().to_string();
    let mut cmd = vellum(tmp.path());
    cmd.args(["serve", "--listen", &listen, "--data-dir", &data])
        .env("JWT_PUB", &jwt_pub)
        .env("DATABASE_URL", url);
    run(cmd, 60)
}

#[tokio::test]
async fn serve_exits_with_a_clear_message_when_the_database_cannot_be_reached() {
    let port = crate::common::external::free_port();
    let url = format!("postgres://vellum:hunter2-secret@127.0.0.1:{port}/nowhere");
    let out = tokio::task::spawn_blocking(move || serve_with_database(&url))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot connect to postgresql vellum@127.0.0.1"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn serve_names_a_wrong_password_without_printing_it() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let wrong = pg
        .url
        .replacen("postgres:postgres@", "postgres:wrong-hunter2@", 1);
    assert_ne!(wrong, pg.url, "the test cluster's URL carries a password");
    let out = tokio::task::spawn_blocking(move || serve_with_database(&wrong))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-hunter2"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_database_that_goes_away_is_a_503_keeps_nothing_half_written_and_writes_resume_when_it_returns(
) {
    use crate::common::postgres::Cluster;
    use serde_json::json;
    let Ok((cluster, server)) = tokio::task::spawn_blocking(Cluster::start_own)
        .await
        .unwrap()
        .map_err(|e| crate::common::external::skip_or_fail(&e))
    else {
        return;
    };
    let url = format!("{server}/postgres");
    let app = crate::common::spawn_app_with(&["--database-url", &url]).await;
    let root = app.token_for("root");
    let made = |name: &str| json!({"action": "C", "parentoid": "1", "name": name});
    assert_eq!(
        app.write(Some(&root), &json!([made("before")]))
            .await
            .status(),
        200
    );

    let cluster = std::sync::Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop_now())
        .await
        .unwrap()
        .unwrap();
    // A transaction of two events while the database is gone: a 503, never a 500 or a 200.
    let r = app
        .write(Some(&root), &json!([made("during"), made("during2")]))
        .await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    let (s, v) = app.get_json("/props/1", Some(&root)).await;
    assert_eq!(s, 503, "{v}");

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start_again())
        .await
        .unwrap()
        .unwrap();
    // Back: the next requests work, on connections made anew.
    let mut status = 0;
    for _ in 0..50 {
        status = app
            .write(Some(&root), &json!([made("after")]))
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200);
    for (name, want) in [
        ("before", 200),
        ("during", 404),
        ("during2", 404),
        ("after", 200),
    ] {
        let (s, v) = app.get_json(&format!("/props/1/{name}"), Some(&root)).await;
        assert_eq!(s, want, "{name}: {v}");
    }
    drop(app);
}

#[tokio::test]
async fn tls_is_used_when_the_url_asks_for_it_and_the_servers_certificate_is_verified() {
    use crate::common::postgres::Cluster;
    use serde_json::json;
    let Ok((cluster, server, cert)) = tokio::task::spawn_blocking(Cluster::start_tls)
        .await
        .unwrap()
        .map_err(|e| crate::common::external::skip_or_fail(&e))
    else {
        return;
    };
    let url = format!("{server}/postgres?sslmode=require");
    let ca = cert.display().to_string();
    // Trusting the server's certificate: the store works over TLS (the cluster refuses
    // TCP without it).
    let app = crate::common::spawn_app_with(&["--database-url", &url, "--database-ca", &ca]).await;
    let root = app.token_for("root");
    let made = json!([{"action": "C", "parentoid": "1", "name": "over-tls"}]);
    assert_eq!(app.write(Some(&root), &made).await.status(), 200);
    let (s, _) = app.get_json("/props/1/over-tls", Some(&root)).await;
    assert_eq!(s, 200);
    drop(app);

    // Not trusting it: refused at start-up, with the reason.
    let untrusted = url.clone();
    let out = tokio::task::spawn_blocking(move || serve_with_database(&untrusted))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Without TLS: the server's own refusal, named.
    let plain = format!("{server}/postgres?sslmode=disable");
    let out = tokio::task::spawn_blocking(move || serve_with_database(&plain))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no encryption") || stderr.contains("pg_hba.conf"),
        "{stderr}"
    );
    drop(cluster);
}

/// The root folder as an event (a store opened without the server has none stored): a
/// template for the first folders.
fn root_folder() -> vellum::model::Event {
    vellum::model::Event::folder(
        vellum::model::Oid::ROOT,
        vellum::model::Oid::ROOT,
        "",
        "/".into(),
    )
}

/// A child of `parent` (a folder), as the planner would make it.
fn folder_under(
    parent: &vellum::model::Event,
    name: &str,
    t: &mut dyn vellum::store::MetaWrite,
) -> vellum::model::Event {
    let mut e = vellum::model::Event::folder(
        t.next_oid(),
        parent.oid,
        name,
        format!("{}{}/", parent.fulldir, parent.oid),
    );
    e.tstamp = t.next_tstamp();
    e
}

/// The writer keeps what its batch read of objects (a round trip saved each time jobs act
/// in the same folder): a job rolled back, or a change to an object that existed (a moved
/// folder moves its subtree), must make it read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_never_answers_from_what_it_read_before_a_rollback_or_a_move_in_its_batch() {
    use vellum::model::{Action, Oid};
    use vellum::store::{MetaWrite, Store, StoreError};
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let url = pg.url.clone();
    let store = tokio::task::spawn_blocking(move || {
        let cfg = vellum::config::PostgresConfig::new(url, 4);
        Store::open(&path, &vellum::config::SqliteConfig::NORMAL, Some(&cfg)).unwrap()
    })
    .await
    .unwrap();
    // /a/b and /d.
    let (a, b, d) = store
        .write(|t: &mut dyn MetaWrite| -> Result<_, StoreError> {
            let root = root_folder();
            let a = folder_under(&root, "a", t);
            t.append(&a)?;
            let b = folder_under(&a, "b", t);
            t.append(&b)?;
            let d = folder_under(&root, "d", t);
            t.append(&d)?;
            Ok((a, b.oid, d))
        })
        .await
        .unwrap();
    // A job holds the writer while three more queue, so the three make one batch.
    let blocker = store.write(|_t: &mut dyn MetaWrite| -> Result<(), StoreError> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(())
    });
    let later = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // 1. Reads b, creates x and reads it, then is refused: rolled back. The jobs of a
        // batch run one after another on the writer's thread: the next reads `made`.
        let made = std::sync::Arc::new(std::sync::Mutex::new(None));
        let made2 = made.clone();
        let refused = store.write(move |t: &mut dyn MetaWrite| -> Result<Oid, StoreError> {
            t.current(b)?.unwrap();
            let x = folder_under(&root_folder(), "x", t);
            t.append(&x)?;
            assert!(t.current(x.oid)?.is_some());
            *made2.lock().unwrap() = Some(x.oid);
            Err(StoreError::Backend(format!(
                "refused after creating {}",
                x.oid
            )))
        });
        // 2. Looks for x, reads b, moves a under d, reads b again.
        let a2 = a.clone();
        let d2 = d.clone();
        let moved = store.write(move |t: &mut dyn MetaWrite| -> Result<_, StoreError> {
            let x = made.lock().unwrap().expect("the first job ran before");
            assert!(
                t.current(x)?.is_none(),
                "the next job of the batch finds no x"
            );
            let before = t.current(b)?.unwrap().event.fulldir;
            let mut m = a2.clone();
            m.checkedtstamp = a2.tstamp;
            m.tstamp = t.next_tstamp();
            m.action = Action::U;
            m.parentoid = d2.oid;
            m.fulldir = format!("{}{}/", d2.fulldir, d2.oid);
            t.append(&m)?;
            let after = t.current(b)?.unwrap().event.fulldir;
            Ok((before, after))
        });
        // 3. Reads b after both.
        let third = store.write(move |t: &mut dyn MetaWrite| -> Result<_, StoreError> {
            Ok(t.current(b)?.unwrap().event.fulldir)
        });
        futures_util::future::join3(refused, moved, third).await
    };
    let ((), (refused, moved, third)) =
        futures_util::future::join(async { blocker.await.unwrap() }, later).await;
    let refused = refused.unwrap_err().to_string();
    let x: Oid = refused.rsplit(' ').next().unwrap().parse().unwrap();
    let (before, after) = moved.unwrap();
    let under_d = format!("{}{}/{}/", d.fulldir, d.oid, a.oid);
    assert_eq!(
        before,
        format!("/{}/{}/", Oid::ROOT, a.oid),
        "b before the move"
    );
    assert_eq!(after, under_d, "b read again in the job that moved a");
    assert_eq!(
        third.unwrap(),
        under_d,
        "b read by the next job of the batch"
    );
    // x was rolled back: no job after it finds it.
    let found = store
        .write(move |t: &mut dyn MetaWrite| -> Result<_, StoreError> {
            Ok(t.current(x)?.is_some())
        })
        .await
        .unwrap();
    assert!(!found, "a rolled-back create is gone");
}
