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
