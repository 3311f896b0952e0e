use super::*;
use crate::model::{Action, SCHEMA_VERSION};
use crate::model::{Event, UserPolicy};
use crate::model::{Oid, Tstamp};
use crate::store::{MetaRead, MetaWrite};
use reads::CURRENT_SELECT;
use rusqlite::OptionalExtension;

fn event(oid: Oid, parent: Oid, name: &str, tstamp: Tstamp) -> Event {
    serde_json::from_value(serde_json::json!({
        "tstamp": tstamp, "userpolicy": {"label": "t"}, "jwthash": "", "schemaversion": SCHEMA_VERSION,
        "name": name, "action": "C", "oid": oid, "parentoid": parent,
        "expiration": Tstamp::FOREVER, "checkedtstamp": "0000000000000000",
        "fulldir": format!("/{parent}/"),
    }))
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn count_events(store: &SqliteStore) -> i64 {
    let conn = Connection::open(store.db_path()).unwrap();
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_job_that_panics_is_answered_with_an_error_and_leaves_nothing_while_its_batch_mates_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap());
    let answers = rt().block_on(async {
        let mut handles = Vec::new();
        for i in 0..6u64 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                store
                    .write(move |ctx| -> Result<(), StoreError> {
                        let t = ctx.next_tstamp();
                        ctx.append(&event(Oid(100 + i), Oid::ROOT, &format!("n{i}"), t))?;
                        assert!(i != 3, "job 3 panics after writing, on purpose");
                        Ok(())
                    })
                    .await
            }));
        }
        let mut answers = Vec::new();
        for h in handles {
            answers.push(h.await.unwrap());
        }
        answers
    });
    for (i, a) in answers.iter().enumerate() {
        match a {
            Err(StoreError::JobPanicked) => assert_eq!(i, 3),
            other => assert!(other.is_ok() && i != 3, "job {i}: {other:?}"),
        }
    }
    assert_eq!(count_events(&store), 5);
    // The writer is still there.
    rt().block_on(store.write(|ctx| -> Result<(), StoreError> {
        let t = ctx.next_tstamp();
        ctx.append(&event(Oid(200), Oid::ROOT, "after", t))
    }))
    .unwrap();
}

#[test]
fn a_batch_whose_begin_fails_answers_its_jobs_with_an_error_and_the_next_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    // Statement 1 is the first batch's BEGIN IMMEDIATE.
    let faults = FaultInjector::fail_statement(1);
    let store =
        SqliteStore::open_with(dir.path(), &SqliteConfig::NORMAL, Some(faults.clone())).unwrap();
    let write = |oid: u64| {
        store.write(move |ctx| -> Result<(), StoreError> {
            let t = ctx.next_tstamp();
            ctx.append(&event(Oid(oid), Oid::ROOT, &format!("n{oid}"), t))
        })
    };
    let first = rt().block_on(write(10));
    assert_eq!(faults.target_sql().as_deref(), Some("BEGIN IMMEDIATE"));
    assert!(
        matches!(&first, Err(StoreError::NotCommitted(m)) if m.contains("BEGIN")),
        "{first:?}"
    );
    rt().block_on(write(11)).unwrap();
    assert_eq!(count_events(&store), 1);
}

#[test]
fn a_full_database_is_a_disk_full_error_that_answers_507() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap());
    let pages: i64 = Connection::open(dir.path().join("vellum.db"))
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let store = SqliteStore::open_with(
        dir.path(),
        &SqliteConfig::NORMAL,
        Some(FaultInjector::max_page_count(pages as u64)),
    )
    .unwrap();
    let big = "x".repeat(64 << 10);
    let e = rt()
        .block_on(store.write(move |ctx| -> Result<(), StoreError> {
            let t = ctx.next_tstamp();
            ctx.append(&event(Oid(10), Oid::ROOT, &big, t))
        }))
        .unwrap_err();
    assert!(matches!(e, StoreError::Full(_)), "{e:?}");
    let e = crate::error::Error::from(e);
    assert_eq!(
        (e.kind, e.code.as_str()),
        (
            crate::error::Kind::InsufficientStorage,
            "insufficient_storage"
        )
    );
    assert_eq!(count_events(&store), 0);
}

#[test]
fn a_read_snapshot_whose_commit_fails_is_an_error_and_its_connection_is_not_pooled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    let pool = store.readers.clone();
    // Ending the transaction inside makes the snapshot's own COMMIT fail.
    let r = pool.with_snapshot(|s| -> Result<i64, StoreError> {
        let n = s
            .conn()
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
        s.conn().execute_batch("COMMIT")?;
        Ok(n)
    });
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
    assert_eq!(pool.idle.lock().unwrap().len(), 0);
    // A snapshot that ends well gives its connection back.
    pool.with_snapshot(|s| s.max_tstamp()).unwrap();
    assert_eq!(pool.idle.lock().unwrap().len(), 1);
}

#[cfg(unix)]
#[test]
fn the_database_and_its_wal_are_created_owner_only_in_an_owner_only_folder() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new").join("data");
    let store = SqliteStore::open(&data, &SqliteConfig::NORMAL).unwrap();
    rt().block_on(store.write(|ctx| -> Result<(), StoreError> {
        let t = ctx.next_tstamp();
        ctx.append(&event(Oid(10), Oid::ROOT, "a", t))
    }))
    .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for f in ["vellum.db", "vellum.db-wal", "vellum.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&data), 0o700);
}

#[test]
fn the_log_refuses_update_and_delete_outside_a_purge() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    rt().block_on(async {
        store
            .write(|ctx| -> Result<(), StoreError> {
                let t = ctx.next_tstamp();
                ctx.append(&event(Oid(10), Oid::ROOT, "a", t))
            })
            .await
            .unwrap();
    });
    let conn = Connection::open(store.db_path()).unwrap();
    let upd = conn.execute("UPDATE events SET body = '{}'", []);
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = conn.execute("DELETE FROM events", []);
    assert!(del.unwrap_err().to_string().contains("append-only"));
    let n: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_failed_job_leaves_nothing_while_its_batch_mates_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap());
    rt().block_on(async {
        let mut handles = Vec::new();
        for i in 0..20u64 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                store
                    .write(move |ctx| -> Result<(), StoreError> {
                        let t = ctx.next_tstamp();
                        ctx.append(&event(Oid(100 + i), Oid::ROOT, &format!("n{i}"), t))?;
                        if i % 2 == 1 {
                            // Odd jobs fail after writing: their row must vanish.
                            return Err(StoreError::WriterGone);
                        }
                        Ok(())
                    })
                    .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().is_ok(), i % 2 == 0);
        }
    });
    let conn = Connection::open(store.db_path()).unwrap();
    let oids: Vec<i64> = conn
        .prepare("SELECT oid FROM events ORDER BY oid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        oids,
        (0..20)
            .filter(|i| i % 2 == 0)
            .map(|i| 100 + i)
            .collect::<Vec<i64>>()
    );
}

#[test]
fn cached_statements_are_not_prepared_again_when_reused_with_new_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    let sql = format!("{CURRENT_SELECT} WHERE o.oid = ?1");
    let reprepared = store
        .readers
        .clone()
        .with_snapshot(|s| -> Result<i32, StoreError> {
            for oid in [1i64, 2, 12345, 1] {
                let mut st = s.conn().prepare_cached(&sql)?;
                st.query_row([oid], |_| Ok(())).optional()?;
            }
            let st = s.conn().prepare_cached(&sql)?;
            Ok(st.get_status(rusqlite::StatementStatus::RePrepare))
        })
        .unwrap();
    // Without the planner's stability guarantee this was 4: once per use after the first
    // binding was cleared.
    assert_eq!(reprepared, 0);
}

#[test]
fn live_names_are_unique_per_folder_and_free_again_after_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    rt().block_on(async {
        let dup = store
            .write(|ctx| -> Result<(), StoreError> {
                let t = ctx.next_tstamp();
                ctx.append(&event(Oid(10), Oid::ROOT, "same", t))?;
                let t = ctx.next_tstamp();
                ctx.append(&event(Oid(11), Oid::ROOT, "same", t))
            })
            .await;
        assert!(matches!(dup, Err(StoreError::UniqueName)));
        store
            .write(|ctx| -> Result<(), StoreError> {
                let t = ctx.next_tstamp();
                ctx.append(&event(Oid(10), Oid::ROOT, "same", t))?;
                let mut d = event(Oid(10), Oid::ROOT, "same", ctx.next_tstamp());
                d.action = Action::D;
                ctx.append(&d)?;
                let t = ctx.next_tstamp();
                ctx.append(&event(Oid(11), Oid::ROOT, "same", t))
            })
            .await
            .unwrap();
    });
}

#[test]
fn a_purge_removes_versions_and_repoints_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    rt().block_on(async {
        let (t1, t2) = store
            .write(|ctx| -> Result<(Tstamp, Tstamp), StoreError> {
                let t1 = ctx.next_tstamp();
                ctx.append(&event(Oid(10), Oid::ROOT, "v1", t1))?;
                let t2 = ctx.next_tstamp();
                ctx.append(&event(Oid(10), Oid::ROOT, "v2", t2))?;
                Ok((t1, t2))
            })
            .await
            .unwrap();
        let who = UserPolicy { label: "p".into() };
        store
            .write(move |ctx| -> Result<(), StoreError> {
                let at = ctx.next_tstamp();
                let gone = ctx.purge(Oid(10), Some(t2), at, &who, "")?;
                assert_eq!(gone.len(), 1);
                let cur = ctx.current(Oid(10))?.unwrap();
                assert_eq!((cur.event.tstamp, cur.event.name.as_str()), (t1, "v1"));
                let at = ctx.next_tstamp();
                ctx.purge(Oid(10), None, at, &who, "")?;
                assert!(ctx.current(Oid(10))?.is_none());
                assert!(ctx.history(Oid(10))?.is_empty());
                Ok(())
            })
            .await
            .unwrap();
    });
    // The guard row never outlives the purge's transaction.
    let conn = Connection::open(store.db_path()).unwrap();
    let guards: i64 = conn
        .query_row("SELECT count(*) FROM purge_guard", [], |r| r.get(0))
        .unwrap();
    assert_eq!(guards, 0);
    let purges: i64 = conn
        .query_row("SELECT count(*) FROM purges", [], |r| r.get(0))
        .unwrap();
    assert_eq!(purges, 2);
}

#[test]
fn a_reopened_store_keeps_its_clock_ahead_of_everything_stored() {
    let dir = tempfile::tempdir().unwrap();
    let future = Tstamp(u64::MAX / 4);
    {
        let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
        rt().block_on(store.write(move |ctx| -> Result<(), StoreError> {
            ctx.append(&event(Oid(10), Oid::ROOT, "x", future))
        }))
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    let next = rt()
        .block_on(store.write(|ctx| -> Result<Tstamp, StoreError> { Ok(ctx.next_tstamp()) }))
        .unwrap();
    assert!(next > future);
}

fn a_share(id: Oid, tstamp: Tstamp) -> crate::model::ShareEntry {
    use crate::model::share::*;
    let state = crate::model::Share {
        id,
        oid: Oid(10),
        name: "a".into(),
        security: None,
        audience: Audience::Claim {
            claim: "email".into(),
            value: "b@x".into(),
        },
        role: Some(Role::Reader),
        letters: Role::Reader.letters(),
        terms: None,
        message: None,
        acceptance: Acceptance::NotRequired,
        sharing_mode: SharingMode::Owner,
        expires: None,
        state: ShareState::Accepted,
        sharer: Sharer { label: "a".into() },
        parent: None,
        max_redemptions: None,
        redemptions: 0,
        tstamp,
    };
    crate::model::ShareEntry {
        share: id,
        tstamp,
        kind: ShareChange::Offered,
        by: Sharer { label: "a".into() },
        state,
    }
}

#[test]
fn the_share_log_refuses_update_and_delete_and_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    rt().block_on(store.write(|ctx| -> Result<(), StoreError> {
        let (id, t) = (ctx.next_oid(), ctx.next_tstamp());
        ctx.log_share(&a_share(id, t))?;
        let mut revoked = a_share(id, ctx.next_tstamp());
        revoked.kind = crate::model::share::ShareChange::Revoked;
        revoked.state.state = crate::model::share::ShareState::Revoked;
        ctx.log_share(&revoked)
    }))
    .unwrap();
    let conn = Connection::open(store.db_path()).unwrap();
    let upd = conn.execute("UPDATE share_log SET body = '{}'", []);
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = conn.execute("DELETE FROM share_log", []);
    assert!(del.unwrap_err().to_string().contains("append-only"));
    let (entries, shares): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM share_log), (SELECT count(*) FROM shares)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (entries, shares),
        (2, 1),
        "two entries, one share at its latest"
    );
}

#[test]
fn a_reopened_store_keeps_its_clock_ahead_of_the_share_log_too() {
    let dir = tempfile::tempdir().unwrap();
    let (late_id, late_t) = (Oid(u64::MAX / 4), Tstamp(u64::MAX / 4 + 7));
    {
        let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
        rt().block_on(store.write(move |ctx| -> Result<(), StoreError> {
            ctx.log_share(&a_share(late_id, late_t))
        }))
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    let (t, oid) = rt()
        .block_on(store.write(|ctx| -> Result<(Tstamp, Oid), StoreError> {
            Ok((ctx.next_tstamp(), ctx.next_oid()))
        }))
        .unwrap();
    assert!(t > late_t && oid.0 > late_id.0, "{t} {oid}");
    let max = store.readers.with_snapshot(|s| s.max_tstamp()).unwrap();
    assert_eq!(
        max, late_t,
        "the feed's high-water mark counts share entries"
    );
}

fn new_task(
    kind: crate::model::TaskKind,
    target: &str,
    share: Option<u64>,
) -> crate::model::NewTask {
    crate::model::NewTask {
        kind,
        target: target.into(),
        oid: None,
        share: share.map(Oid),
        actor: Some("a".into()),
        sharer: None,
        after: Some(Tstamp(5)),
        run_after_ms: 0,
    }
}

fn done(state: crate::model::TaskState) -> crate::model::TaskUpdate {
    crate::model::TaskUpdate {
        state,
        report: None,
        run_after_ms: None,
        waiting: None,
        attempts: None,
    }
}

#[test]
fn a_task_is_leased_to_one_node_at_a_time_until_its_lease_runs_out() {
    use crate::model::{TaskKind, TaskState};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    rt().block_on(async {
        let (id, new) = store
            .write(|t| t.enqueue_task(&new_task(TaskKind::RotateBlob, "r1", None), 10))
            .await
            .unwrap();
        assert!(new);
        // Queueing the same work again joins it, raising its `after`.
        let mut again = new_task(TaskKind::RotateBlob, "r1", None);
        again.after = Some(Tstamp(9));
        let (same, new) = store
            .write(move |t| t.enqueue_task(&again, 11))
            .await
            .unwrap();
        assert_eq!((same, new), (id, false));
        let a = store
            .write(|t| t.lease_task(100, "a", 200))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((a.id, a.attempts, a.after), (id, 1, Some(Tstamp(9))));
        // Held: nobody else gets it, until the lease has run out.
        assert!(store
            .write(|t| t.lease_task(150, "b", 250))
            .await
            .unwrap()
            .is_none());
        assert!(!store
            .write(move |t| t.renew_task(id, "b", 300))
            .await
            .unwrap());
        let b = store
            .write(|t| t.lease_task(201, "b", 400))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (b.id, b.attempts, b.lease_owner.as_deref()),
            (id, 2, Some("b"))
        );
        // The first holder can no longer record an outcome; the second can.
        let up = done(TaskState::Done);
        let u2 = up.clone();
        assert!(!store
            .write(move |t| t.update_task(id, Some("a"), &up, 300))
            .await
            .unwrap());
        assert!(store
            .write(move |t| t.update_task(id, Some("b"), &u2, 300))
            .await
            .unwrap());
        assert!(store
            .write(|t| t.lease_task(1000, "a", 2000))
            .await
            .unwrap()
            .is_none());
        // Done, the same work may be queued anew.
        let (next, new) = store
            .write(|t| t.enqueue_task(&new_task(TaskKind::RotateBlob, "r1", None), 12))
            .await
            .unwrap();
        assert!(new && next != id);
    });
}

#[test]
fn webhooks_of_one_share_are_leased_in_order_and_a_parent_counts_its_open_children() {
    use crate::model::{TaskKind, TaskState};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
    rt().block_on(async {
        let ids = store
            .write(|t| -> Result<Vec<Oid>, StoreError> {
                let mut ids = Vec::new();
                for (target, share) in [("s1/1", 1), ("s1/2", 1), ("s2/1", 2)] {
                    ids.push(
                        t.enqueue_task(&new_task(TaskKind::Webhook, target, Some(share)), 1)?
                            .0,
                    );
                }
                Ok(ids)
            })
            .await
            .unwrap();
        let first = store
            .write(|t| t.lease_task(10, "n", 100))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.id, ids[0]);
        // s1's second entry waits for its first; s2's does not.
        let next = store
            .write(|t| t.lease_task(10, "n", 100))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.id, ids[2]);
        assert!(store
            .write(|t| t.lease_task(10, "n", 100))
            .await
            .unwrap()
            .is_none());
        let failed = done(TaskState::Failed);
        let id0 = ids[0];
        store
            .write(move |t| t.update_task(id0, Some("n"), &failed, 20))
            .await
            .unwrap();
        assert!(
            store
                .write(|t| t.lease_task(30, "n", 100))
                .await
                .unwrap()
                .is_none(),
            "a failed delivery holds back the later ones of its share"
        );

        // A parent and three children: the count follows their states.
        let (parent, kids) = store
            .write(|t| -> Result<(Oid, Vec<Oid>), StoreError> {
                let (p, _) = t.enqueue_task(&new_task(TaskKind::RotateShare, "s9", Some(9)), 1)?;
                let mut kids = Vec::new();
                for r in ["x", "y", "z"] {
                    let (c, _) = t.enqueue_task(&new_task(TaskKind::RotateBlob, r, Some(9)), 1)?;
                    t.link_task(p, c)?;
                    t.link_task(p, c)?; // twice changes nothing
                    kids.push(c);
                }
                Ok((p, kids))
            })
            .await
            .unwrap();
        let open = |store: &SqliteStore| {
            store
                .read_blocking(|s| s.task(parent))
                .unwrap()
                .unwrap()
                .open_children
        };
        assert_eq!(open(&store), 3);
        for (i, kid) in kids.iter().enumerate() {
            let kid = *kid;
            let state = if i == 0 {
                TaskState::Failed
            } else {
                TaskState::Done
            };
            let u = done(state);
            store
                .write(move |t| t.update_task(kid, None, &u, 40))
                .await
                .unwrap();
        }
        assert_eq!(open(&store), 0);
        let counts = store.read_blocking(|s| s.task_children(parent)).unwrap();
        assert_eq!((counts.done, counts.failed, counts.total()), (2, 1, 3));
        // A retried child is open again.
        let k0 = kids[0];
        let u = done(TaskState::Todo);
        store
            .write(move |t| t.update_task(k0, None, &u, 50))
            .await
            .unwrap();
        assert_eq!(open(&store), 1);
    });
}

#[test]
fn background_writes_commit_on_an_idle_store_and_are_not_starved_by_a_stream_of_requests() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let write = |store: Arc<SqliteStore>, oid: u64, background: bool| async move {
        let f = move |ctx: &mut WriteCtx<'_>| -> Result<(), StoreError> {
            let t = ctx.next_tstamp();
            ctx.append(&event(Oid(oid), Oid::ROOT, &format!("n{oid}"), t))
        };
        if background {
            store.write_background(f).await
        } else {
            store.write(f).await
        }
    };
    rt.block_on(async {
        // Nothing else running: it commits like any write.
        write(store.clone(), 10, true).await.unwrap();
        assert_eq!(count_events(&store), 1);
        // Requests without pause from 8 clients, and 20 background writes one after another.
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for c in 0..8u64 {
            let (store, stop, requests) = (store.clone(), stop.clone(), requests.clone());
            clients.push(tokio::spawn(async move {
                let mut oid = 1_000_000 * (c + 1);
                while !stop.load(Ordering::Relaxed) {
                    oid += 1;
                    write(store.clone(), oid, false).await.unwrap();
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // The stream is flowing before the background writes begin.
        while requests.load(Ordering::Relaxed) < 50 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        for k in 0..20u64 {
            write(store.clone(), 100 + k, true).await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        let requests = requests.load(Ordering::Relaxed);
        assert!(requests > 0);
        assert_eq!(count_events(&store), 1 + 20 + requests as i64);
    });
}
