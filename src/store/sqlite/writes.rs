//! [`MetaWrite`] in SQL: appends to the log, the current-state index, purges, blob rows.

use rusqlite::{params, OptionalExtension};

use super::reads::{decode, HasConn};
use super::writer::WriteCtx;
use crate::crypto::{BlobAlgorithm, Wrapped};
use crate::model::{
    Event, NewTask, Oid, ShareEntry, ShareId, Task, TaskId, TaskUpdate, Tstamp, UserPolicy,
};
use crate::store::{BlobRow, BlobSwitch, MetaRead, MetaWrite, StoreError};

/// The objects upsert resolves a clash on its primary key itself, so the one unique
/// constraint it can break is the partial index on live names.
fn map_unique(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error() {
        Some(f) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
            StoreError::UniqueName
        }
        _ => StoreError::from(e),
    }
}

const UPSERT_OBJECT: &str =
    "INSERT INTO objects (oid, tstamp, parentoid, name, live, isfile, fulldir, expiration, derived_oid)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
     ON CONFLICT (oid) DO UPDATE SET tstamp = ?2, parentoid = ?3, name = ?4, live = ?5,
        isfile = ?6, fulldir = ?7, expiration = ?8, derived_oid = ?9";

impl WriteCtx<'_> {
    fn upsert_index(&self, e: &Event) -> Result<(), StoreError> {
        self.with(|conn| {
            // A create names a new oid: there is no old row, hence no subtree to move.
            let old_fulldir: Option<String> = if e.action == crate::model::Action::C {
                None
            } else {
                conn.prepare_cached("SELECT fulldir FROM objects WHERE oid = ?1")?
                    .query_row([e.oid.as_i64()], |r| r.get(0))
                    .optional()?
            };
            conn.prepare_cached(UPSERT_OBJECT)?
                .execute(params![
                    e.oid.as_i64(),
                    e.tstamp.as_i64(),
                    e.parentoid.as_i64(),
                    e.name,
                    e.action != crate::model::Action::D,
                    e.isfile,
                    e.fulldir,
                    e.expiration.as_i64(),
                    e.derived_oid().map(Oid::as_i64),
                ])
                .map_err(map_unique)?;
            // A directory that moved takes its subtree along: rewrite descendants' fulldir.
            if let Some(old) = old_fulldir {
                if old != e.fulldir && !e.isfile {
                    let old_prefix = format!("{old}{}/", e.oid);
                    let new_prefix = format!("{}{}/", e.fulldir, e.oid);
                    conn.prepare_cached(
                        "UPDATE objects SET fulldir = ?2 || substr(fulldir, length(?1) + 1)
                             WHERE substr(fulldir, 1, length(?1)) = ?1",
                    )?
                    .execute(params![old_prefix, new_prefix])?;
                }
            }
            Ok(())
        })
    }
}

impl MetaWrite for WriteCtx<'_> {
    fn next_tstamp(&mut self) -> Tstamp {
        self.clock.tstamp()
    }

    fn next_oid(&mut self) -> Oid {
        self.clock.oid()
    }

    fn append(&mut self, event: &Event) -> Result<(), StoreError> {
        self.with(|conn| {
            if let Some(rname) = event.rname_str() {
                conn.prepare_cached(
                    "INSERT INTO event_blobs (oid, tstamp, rname) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    event.oid.as_i64(),
                    event.tstamp.as_i64(),
                    rname
                ])?;
            }
            let body = serde_json::to_string(event)
                .map_err(|e| StoreError::Corrupt("encode".into(), e))?;
            conn.prepare_cached("INSERT INTO events (oid, tstamp, body) VALUES (?1, ?2, ?3)")?
                .execute(params![event.oid.as_i64(), event.tstamp.as_i64(), body])?;
            self.upsert_index(event)
        })
    }

    fn purge(
        &mut self,
        oid: Oid,
        version: Option<Tstamp>,
        at: Tstamp,
        who: &UserPolicy,
        jwthash: &str,
    ) -> Result<Vec<Event>, StoreError> {
        self.with(|conn| {
            let removed: Vec<Event> = match version {
                None => self.history(oid)?,
                Some(t) => self.version(oid, t)?.into_iter().collect(),
            };
            conn.execute("INSERT INTO purge_guard (active) VALUES (1)", [])?;
            let deleted = match version {
                None => conn.execute("DELETE FROM events WHERE oid = ?1", [oid.as_i64()])?,
                Some(t) => conn.execute(
                    "DELETE FROM events WHERE oid = ?1 AND tstamp = ?2",
                    params![oid.as_i64(), t.as_i64()],
                )?,
            };
            conn.execute("DELETE FROM purge_guard", [])?;
            match version {
                None => conn.execute("DELETE FROM event_blobs WHERE oid = ?1", [oid.as_i64()])?,
                Some(t) => conn.execute(
                    "DELETE FROM event_blobs WHERE oid = ?1 AND tstamp = ?2",
                    params![oid.as_i64(), t.as_i64()],
                )?,
            };
            // Re-point the index at the newest version left, or drop the object.
            let newest: Option<(i64, String)> = conn
                .query_row(
                    "SELECT tstamp, body FROM events WHERE oid = ?1 ORDER BY tstamp DESC LIMIT 1",
                    [oid.as_i64()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match newest {
                None => {
                    conn.execute("DELETE FROM objects WHERE oid = ?1", [oid.as_i64()])?;
                }
                Some((t, body)) => {
                    let current: i64 = conn.query_row(
                        "SELECT tstamp FROM objects WHERE oid = ?1",
                        [oid.as_i64()],
                        |r| r.get(0),
                    )?;
                    if current != t {
                        let mut e = decode(oid.as_i64(), t, &body)?;
                        e.fulldir = crate::store::live_fulldir(self, &e)?;
                        self.upsert_index(&e)?;
                    }
                }
            }
            conn.execute(
                "INSERT INTO purges (tstamp, oid, purgetstamp, versions, label, jwthash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    at.as_i64(),
                    oid.as_i64(),
                    version.map(Tstamp::as_i64),
                    deleted as i64,
                    who.label,
                    jwthash
                ],
            )?;
            Ok(removed)
        })
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = ?2",
                params![key, value],
            )?;
            Ok(())
        })
    }

    fn log_share(&mut self, entry: &ShareEntry) -> Result<(), StoreError> {
        self.with(|conn| super::shares::log_share(conn, entry))
    }

    fn bind_link(&mut self, id: ShareId, hash: &str) -> Result<(), StoreError> {
        self.with(|conn| super::shares::bind_link(conn, id, hash))
    }

    fn put_blob(&mut self, row: &BlobRow) -> Result<(), StoreError> {
        self.with(|conn| {
            let w = row.wrapped.as_ref();
            conn.prepare_cached(
                "INSERT INTO blobs (rname, algorithm, key_id, encrypteddata, encryptednonce, size,
                        sha256plain, inline, created, location)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                row.rname,
                match row.algorithm {
                    BlobAlgorithm::None => "none",
                    BlobAlgorithm::Chunked => "chunked",
                },
                w.map(|w| w.key_id.as_str()),
                w.map(|w| w.encrypteddata.as_str()),
                w.map(|w| w.encryptednonce.as_str()),
                row.size as i64,
                row.sha256plain,
                row.inline.as_deref(),
                row.created.as_i64(),
                row.location,
            ])?;
            Ok(())
        })
    }

    fn drop_blob(&mut self, rname: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached("DELETE FROM blobs WHERE rname = ?1")?
                .execute([rname])?;
            Ok(())
        })
    }

    fn switch_blob(
        &mut self,
        rname: &str,
        was: &Wrapped,
        to: &BlobSwitch,
        at: Tstamp,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            let (location, inline, w) = match to {
                BlobSwitch::Stored { location, wrapped } => {
                    (Some(location.as_str()), None, wrapped)
                }
                BlobSwitch::Inline { stored, wrapped } => (None, Some(stored.as_ref()), wrapped),
            };
            let n = conn
                .prepare_cached(
                    "UPDATE blobs SET location = ?2, inline = ?3, key_id = ?4, encrypteddata = ?5,
                            encryptednonce = ?6, keyed_at = ?10
                     WHERE rname = ?1 AND key_id = ?7 AND encrypteddata = ?8
                       AND encryptednonce = ?9",
                )?
                .execute(params![
                    rname,
                    location,
                    inline,
                    w.key_id,
                    w.encrypteddata,
                    w.encryptednonce,
                    was.key_id,
                    was.encrypteddata,
                    was.encryptednonce,
                    at.as_i64()
                ])?;
            Ok(n == 1)
        })
    }

    fn rewrap_blob(
        &mut self,
        rname: &str,
        was: &Wrapped,
        wrapped: &Wrapped,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE blobs SET key_id = ?2, encrypteddata = ?3, encryptednonce = ?4
                     WHERE rname = ?1 AND key_id = ?5 AND encrypteddata = ?6
                       AND encryptednonce = ?7",
                )?
                .execute(params![
                    rname,
                    wrapped.key_id,
                    wrapped.encrypteddata,
                    wrapped.encryptednonce,
                    was.key_id,
                    was.encrypteddata,
                    was.encryptednonce
                ])?;
            Ok(n == 1)
        })
    }

    fn share_outbox(&self) -> bool {
        self.outbox
    }

    fn enqueue_task(&mut self, t: &NewTask, now_ms: u64) -> Result<(TaskId, bool), StoreError> {
        let id = self.next_oid();
        self.with(|conn| super::tasks::enqueue(conn, id, t, now_ms))
    }

    fn link_task(&mut self, parent: TaskId, child: TaskId) -> Result<(), StoreError> {
        self.with(|conn| super::tasks::link(conn, parent, child))
    }

    fn lease_task(
        &mut self,
        now_ms: u64,
        node: &str,
        until_ms: u64,
    ) -> Result<Option<Task>, StoreError> {
        self.with(|conn| super::tasks::lease(conn, now_ms, node, until_ms))
    }

    fn renew_task(&mut self, id: TaskId, node: &str, until_ms: u64) -> Result<bool, StoreError> {
        self.with(|conn| super::tasks::renew(conn, id, node, until_ms))
    }

    fn update_task(
        &mut self,
        id: TaskId,
        node: Option<&str>,
        u: &TaskUpdate,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.with(|conn| super::tasks::update(conn, id, node, u, now_ms))
    }

    fn release_tasks(&mut self, node: &str, now_ms: u64) -> Result<u64, StoreError> {
        self.with(|conn| super::tasks::release(conn, node, now_ms))
    }

    fn prune_tasks(&mut self, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        self.with(|conn| super::tasks::prune(conn, before_ms, limit))
    }

    fn lease_more(
        &mut self,
        kind: crate::model::TaskKind,
        n: usize,
        now_ms: u64,
        node: &str,
        until_ms: u64,
    ) -> Result<Vec<Task>, StoreError> {
        self.with(|conn| super::tasks::lease_more(conn, kind, n, now_ms, node, until_ms))
    }
}
