//! [`MetaRead`] in SQL, for the writer's open transaction and for readers' snapshots alike.

use rusqlite::{params, Connection, OptionalExtension};

use super::readers::ReadSnapshot;
use super::writer::WriteCtx;
use super::{shares, tasks};
use crate::crypto::{BlobAlgorithm, Wrapped};
use crate::model::task::QueueStats;
use crate::model::{
    Event, Oid, Share, ShareEntry, ShareId, Task, TaskCounts, TaskId, TaskQuery, Tstamp,
};
use crate::store::{BlobRow, Current, MetaRead, StoreError};

/// One store operation on a snapshot's connection.
pub(super) trait HasConn {
    fn with<T>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
}
impl HasConn for WriteCtx<'_> {
    fn with<T>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.conn.is_autocommit() {
            // SQLite rolled the transaction back: each statement would now commit alone.
            return Err(self.note(StoreError::NotCommitted(
                "the transaction was rolled back".into(),
            )));
        }
        op(self.conn).map_err(|e| self.note(e))
    }
}
impl HasConn for ReadSnapshot<'_> {
    fn with<T>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        op(self.conn())
    }
}

pub(super) fn decode(oid: i64, tstamp: i64, body: &str) -> Result<Event, StoreError> {
    serde_json::from_str(body).map_err(|e| {
        StoreError::Corrupt(
            format!("{}@{}", Oid::from_i64(oid), Tstamp::from_i64(tstamp)),
            e,
        )
    })
}

pub(super) const CURRENT_SELECT: &str = "SELECT o.oid, o.tstamp, o.live, o.fulldir, e.body
     FROM objects o JOIN events e ON e.oid = o.oid AND e.tstamp = o.tstamp";

fn current_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, bool, String, String)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn to_current(
    (oid, tstamp, live, fulldir, body): (i64, i64, bool, String, String),
) -> Result<Current, StoreError> {
    let mut event = decode(oid, tstamp, &body)?;
    event.fulldir = fulldir;
    Ok(Current { event, live })
}

const BLOB_SELECT: &str = "SELECT rname, algorithm, key_id, encrypteddata, encryptednonce, size,
        sha256plain, inline, created, location, coalesce(keyed_at, created) FROM blobs";

fn blob_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlobRow> {
    let algorithm: String = r.get(1)?;
    let key_id: Option<String> = r.get(2)?;
    let wrapped = match key_id {
        Some(key_id) => Some(Wrapped {
            key_id,
            encrypteddata: r.get(3)?,
            encryptednonce: r.get(4)?,
        }),
        None => None,
    };
    Ok(BlobRow {
        rname: r.get(0)?,
        algorithm: if algorithm == "none" {
            BlobAlgorithm::None
        } else {
            BlobAlgorithm::Chunked
        },
        wrapped,
        size: r.get::<_, i64>(5)? as u64,
        sha256plain: r.get(6)?,
        inline: r.get::<_, Option<Vec<u8>>>(7)?.map(bytes::Bytes::from),
        created: Tstamp::from_i64(r.get(8)?),
        location: r.get(9)?,
        keyed: Tstamp::from_i64(r.get(10)?),
    })
}

impl<T: HasConn> MetaRead for T {
    fn current(&self, oid: Oid) -> Result<Option<Current>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(&format!("{CURRENT_SELECT} WHERE o.oid = ?1"))?;
            let row = st.query_row([oid.as_i64()], current_from_row).optional()?;
            row.map(to_current).transpose()
        })
    }

    fn child_by_name(&self, parent: Oid, name: &str) -> Result<Option<Oid>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT oid FROM objects WHERE parentoid = ?1 AND name = ?2 AND live = 1",
            )?;
            Ok(st
                .query_row(params![parent.as_i64(), name], |r| r.get::<_, i64>(0))
                .optional()?
                .map(Oid::from_i64))
        })
    }

    fn has_children(&self, oid: Oid, live_only: bool) -> Result<bool, StoreError> {
        self.with(|conn| {
            let sql = if live_only {
                "SELECT EXISTS (SELECT 1 FROM objects WHERE parentoid = ?1 AND live = 1 AND oid != ?1)"
            } else {
                "SELECT EXISTS (SELECT 1 FROM objects WHERE parentoid = ?1 AND oid != ?1)"
            };
            let mut st = conn.prepare_cached(sql)?;
            Ok(st.query_row([oid.as_i64()], |r| r.get(0))?)
        })
    }

    fn version(&self, oid: Oid, tstamp: Tstamp) -> Result<Option<Event>, StoreError> {
        self.with(|conn| {
            let mut st =
                conn.prepare_cached("SELECT body FROM events WHERE oid = ?1 AND tstamp = ?2")?;
            let body: Option<String> = st
                .query_row(params![oid.as_i64(), tstamp.as_i64()], |r| r.get(0))
                .optional()?;
            body.map(|b| decode(oid.as_i64(), tstamp.as_i64(), &b))
                .transpose()
        })
    }

    fn history(&self, oid: Oid) -> Result<Vec<Event>, StoreError> {
        self.with(|conn| {
            let mut st = conn
                .prepare_cached("SELECT tstamp, body FROM events WHERE oid = ?1 ORDER BY tstamp")?;
            let rows = st.query_map([oid.as_i64()], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (t, body) = row?;
                out.push(decode(oid.as_i64(), t, &body)?);
            }
            Ok(out)
        })
    }

    fn children(
        &self,
        parent: Oid,
        after: Option<Oid>,
        limit: usize,
    ) -> Result<Vec<Current>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(&format!(
                "{CURRENT_SELECT} WHERE o.parentoid = ?1 AND o.live = 1 AND o.oid > ?2 AND o.oid != ?1
                 ORDER BY o.oid LIMIT ?3"
            ))?;
            let rows = st.query_map(
                params![
                    parent.as_i64(),
                    after.map(Oid::as_i64).unwrap_or(-1),
                    limit.min(i64::MAX as usize) as i64
                ],
                current_from_row,
            )?;
            let mut out = Vec::new();
            for row in rows {
                out.push(to_current(row?)?);
            }
            Ok(out)
        })
    }

    fn derived_from(&self, oid: Oid) -> Result<Vec<Current>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(&format!(
                "{CURRENT_SELECT} WHERE o.derived_oid = ?1 AND o.live = 1 ORDER BY o.oid"
            ))?;
            let rows = st.query_map([oid.as_i64()], current_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(to_current(row?)?);
            }
            Ok(out)
        })
    }

    fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
            Ok(st.query_row([key], |r| r.get(0)).optional()?)
        })
    }

    fn events_since(&self, after: Tstamp, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT oid, tstamp, body FROM events WHERE tstamp > ?1 ORDER BY tstamp LIMIT ?2",
            )?;
            let rows = st.query_map(
                params![after.as_i64(), limit.min(i64::MAX as usize) as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (oid, t, body) = row?;
                out.push(decode(oid, t, &body)?);
            }
            Ok(out)
        })
    }

    fn max_tstamp(&self) -> Result<Tstamp, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT max(coalesce((SELECT max(tstamp) FROM events), 0),
                            coalesce((SELECT max(tstamp) FROM share_log), 0))",
            )?;
            Ok(Tstamp::from_i64(st.query_row([], |r| r.get(0))?))
        })
    }

    fn blob(&self, rname: &str) -> Result<Option<BlobRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(&format!("{BLOB_SELECT} WHERE rname = ?1"))?;
            Ok(st.query_row([rname], blob_from_row).optional()?)
        })
    }

    fn blob_in_use(&self, rname: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            let mut st =
                conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM event_blobs WHERE rname = ?1)")?;
            Ok(st.query_row([rname], |r| r.get(0))?)
        })
    }

    fn location_in_use(&self, location: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM blobs WHERE location = ?1)
                     OR EXISTS (SELECT 1 FROM blobs WHERE rname = ?1 AND location IS NULL
                                                     AND inline IS NULL)",
            )?;
            Ok(st.query_row([location], |r| r.get(0))?)
        })
    }

    fn blobs_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<BlobRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(&format!(
                "{BLOB_SELECT} WHERE rname > ?1 ORDER BY rname LIMIT ?2"
            ))?;
            let rows = st.query_map(
                params![after.unwrap_or(""), limit.min(i64::MAX as usize) as i64],
                blob_from_row,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn share(&self, id: ShareId) -> Result<Option<Share>, StoreError> {
        self.with(|conn| shares::share(conn, id))
    }

    fn shares_on(&self, oids: &[Oid]) -> Result<Vec<Share>, StoreError> {
        self.with(|conn| shares::shares_on(conn, oids))
    }

    fn shares_to(&self, pairs: &[(String, String)]) -> Result<Vec<Share>, StoreError> {
        self.with(|conn| shares::shares_to(conn, pairs))
    }

    fn shares_to_on(
        &self,
        pairs: &[(String, String)],
        oids: &[Oid],
    ) -> Result<Vec<Share>, StoreError> {
        self.with(|conn| shares::shares_to_on(conn, pairs, oids))
    }

    fn shares_by(&self, label: &str) -> Result<Vec<Share>, StoreError> {
        self.with(|conn| shares::shares_by(conn, label))
    }

    fn shares_through(&self, id: ShareId) -> Result<Vec<Share>, StoreError> {
        self.with(|conn| shares::shares_through(conn, id))
    }

    fn link_share(&self, hash: &str) -> Result<Option<Share>, StoreError> {
        self.with(|conn| shares::link_share(conn, hash))
    }

    fn share_log(&self, id: ShareId) -> Result<Vec<ShareEntry>, StoreError> {
        self.with(|conn| shares::share_log(conn, id))
    }

    fn share_log_since(&self, after: Tstamp, limit: usize) -> Result<Vec<ShareEntry>, StoreError> {
        self.with(|conn| shares::share_log_since(conn, after, limit))
    }

    fn shares_expired(&self, now: u64, limit: usize) -> Result<Vec<Share>, StoreError> {
        self.with(|conn| shares::shares_expired(conn, now, limit))
    }

    fn blobs_beneath(&self, oid: Oid, upto: Tstamp) -> Result<Vec<(Oid, String)>, StoreError> {
        self.with(|conn| tasks::blobs_beneath(conn, oid, upto))
    }

    fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.with(|conn| tasks::task(conn, id))
    }

    fn tasks(&self, q: &TaskQuery) -> Result<Vec<Task>, StoreError> {
        self.with(|conn| tasks::tasks(conn, q))
    }

    fn task_children(&self, parent: TaskId) -> Result<TaskCounts, StoreError> {
        self.with(|conn| tasks::children(conn, parent))
    }

    fn failed_children(&self, parent: TaskId) -> Result<Vec<TaskId>, StoreError> {
        self.with(|conn| tasks::failed_children(conn, parent))
    }

    fn task_parents(&self, child: TaskId) -> Result<Vec<TaskId>, StoreError> {
        self.with(|conn| tasks::parents(conn, child))
    }

    fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.with(tasks::stats)
    }

    fn next_task_due(&self) -> Result<Option<u64>, StoreError> {
        self.with(tasks::next_due)
    }

    fn task_child_for(&self, parent: TaskId, target: &str) -> Result<Option<TaskId>, StoreError> {
        self.with(|conn| tasks::child_for(conn, parent, target))
    }
}
