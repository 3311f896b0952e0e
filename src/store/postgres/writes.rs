//! [`MetaWrite`](crate::store::MetaWrite)'s changes in PostgreSQL: appends to the log, the
//! current-state index, purges, blob rows. The SQL of `sqlite/writes.rs`, with `live` and
//! `isfile` BOOLEAN, `inline` BYTEA, and the log's trigger opened by a setting, not a table.

use super::conn::{get, Conn};
use super::reads;
use super::session::PgSnapshot;
use crate::crypto::{BlobAlgorithm, Wrapped};
use crate::model::{Action, Event, Oid, Tstamp, UserPolicy};
use crate::store::{BlobRow, BlobSwitch, StoreError};

/// A clash with the partial unique index on live names (`objects_live_name`) fails the
/// statement, and conn.rs maps it to [`StoreError::UniqueName`] by its constraint name.
/// The index row's upsert, shared by an append and a purge's re-pointing; `$1`-`$9`.
macro_rules! upsert_object {
    () => {
        "INSERT INTO objects (oid, tstamp, parentoid, name, live, isfile, fulldir,
                             expiration, derived_oid)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (oid) DO UPDATE SET tstamp = EXCLUDED.tstamp,
            parentoid = EXCLUDED.parentoid, name = EXCLUDED.name, live = EXCLUDED.live,
            isfile = EXCLUDED.isfile, fulldir = EXCLUDED.fulldir,
            expiration = EXCLUDED.expiration, derived_oid = EXCLUDED.derived_oid"
    };
}

/// Brings the index row of `e.oid` to `e`; a directory that moved takes its subtree along.
/// One round trip for the whole append: the log row, the blob link (if any) and the
/// index row, with the index's fulldir as it was before (CTEs all see the snapshot from
/// before the statement), which tells whether a folder moved. The writer runs jobs one
/// statement after another, so each round trip saved is throughput.
const APPEND: &str = concat!(
    "WITH old AS (SELECT fulldir FROM objects WHERE oid = $1),
          ev AS (INSERT INTO events (oid, tstamp, body) VALUES ($1, $2, $10)),
          eb AS (INSERT INTO event_blobs (oid, tstamp, rname)
                 SELECT $1, $2, $11::text WHERE $11::text IS NOT NULL),
          up AS (",
    upsert_object!(),
    ") SELECT fulldir FROM old"
);

/// The index row alone (a purge re-pointing it), with its fulldir as it was.
const REINDEX: &str = concat!(
    "WITH old AS (SELECT fulldir FROM objects WHERE oid = $1), up AS (",
    upsert_object!(),
    ") SELECT fulldir FROM old"
);

/// Runs `sql` with `e`'s index row as `$1`-`$9` and `extra` after them; returns the
/// object's fulldir from before the statement, if it had a row.
fn with_index_row(
    c: &mut Conn,
    sql: &str,
    e: &Event,
    extra: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<String>, StoreError> {
    let (oid, tstamp, parent) = (e.oid.as_i64(), e.tstamp.as_i64(), e.parentoid.as_i64());
    let (live, expiration) = (e.action != Action::D, e.expiration.as_i64());
    let derived = e.derived_oid().map(Oid::as_i64);
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &oid,
        &tstamp,
        &parent,
        &e.name,
        &live,
        &e.isfile,
        &e.fulldir,
        &expiration,
        &derived,
    ];
    args.extend_from_slice(extra);
    c.query_opt(sql, &args)?.map(|r| get(&r, 0)).transpose()
}

/// Returns whether the object existed before.
pub(super) fn append(c: &mut Conn, e: &Event) -> Result<bool, StoreError> {
    let body = serde_json::to_string(e).map_err(|err| StoreError::Corrupt("encode".into(), err))?;
    let old_fulldir = with_index_row(c, APPEND, e, &[&body, &e.rname_str()])?;
    let existed = old_fulldir.is_some();
    move_subtree(c, old_fulldir, e)?;
    Ok(existed)
}

/// Points the index at `e` (a purge left it the newest version), as an append does.
fn reindex(c: &mut Conn, e: &Event) -> Result<(), StoreError> {
    let old_fulldir = with_index_row(c, REINDEX, e, &[])?;
    move_subtree(c, old_fulldir, e)
}

/// A directory that moved takes its subtree along: rewrite descendants' fulldir.
fn move_subtree(c: &mut Conn, old_fulldir: Option<String>, e: &Event) -> Result<(), StoreError> {
    if let Some(old) = old_fulldir {
        if old != e.fulldir && !e.isfile {
            let old_prefix = format!("{old}{}/", e.oid);
            let new_prefix = format!("{}{}/", e.fulldir, e.oid);
            c.execute(
                "UPDATE objects SET fulldir = $2::text || substr(fulldir, length($1::text) + 1)
                 WHERE starts_with(fulldir, $1::text)",
                &[&old_prefix, &new_prefix],
            )?;
        }
    }
    Ok(())
}

/// The events trigger lets a DELETE through only while `vellum.purging` is on: it is set
/// (SET LOCAL) just around the purge's own deletes, since the transaction carries other
/// jobs' work too. A job's savepoint rolled back undoes the setting with it.
pub(super) fn purge(
    c: &mut Conn,
    oid: Oid,
    version: Option<Tstamp>,
    at: Tstamp,
    who: &UserPolicy,
    jwthash: &str,
) -> Result<Vec<Event>, StoreError> {
    let removed: Vec<Event> = match version {
        None => reads::history(c, oid)?,
        Some(t) => reads::version(c, oid, t)?.into_iter().collect(),
    };
    c.batch("SET LOCAL vellum.purging = 'on'")?;
    let deleted = match version {
        None => c.execute("DELETE FROM events WHERE oid = $1", &[&oid.as_i64()])?,
        Some(t) => c.execute(
            "DELETE FROM events WHERE oid = $1 AND tstamp = $2",
            &[&oid.as_i64(), &t.as_i64()],
        )?,
    };
    c.batch("SET LOCAL vellum.purging = 'off'")?;
    match version {
        None => c.execute("DELETE FROM event_blobs WHERE oid = $1", &[&oid.as_i64()])?,
        Some(t) => c.execute(
            "DELETE FROM event_blobs WHERE oid = $1 AND tstamp = $2",
            &[&oid.as_i64(), &t.as_i64()],
        )?,
    };
    // Re-point the index at the newest version left, or drop the object.
    let newest = c.query_opt(
        "SELECT tstamp, body FROM events WHERE oid = $1 ORDER BY tstamp DESC LIMIT 1",
        &[&oid.as_i64()],
    )?;
    match newest {
        None => {
            c.execute("DELETE FROM objects WHERE oid = $1", &[&oid.as_i64()])?;
        }
        Some(row) => {
            let t: i64 = get(&row, 0)?;
            let body: String = get(&row, 1)?;
            let current = c.query_one(
                "SELECT tstamp FROM objects WHERE oid = $1",
                &[&oid.as_i64()],
            )?;
            if get::<i64>(&current, 0)? != t {
                let mut e = reads::decode(oid.as_i64(), t, &body)?;
                e.fulldir = crate::store::live_fulldir(&PgSnapshot::within(c), &e)?;
                reindex(c, &e)?;
            }
        }
    }
    c.execute(
        "INSERT INTO purges (tstamp, oid, purgetstamp, versions, label, jwthash)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &at.as_i64(),
            &oid.as_i64(),
            &version.map(Tstamp::as_i64),
            &i64::try_from(deleted).unwrap_or(i64::MAX),
            &who.label,
            &jwthash,
        ],
    )?;
    Ok(removed)
}

pub(super) fn meta_set(c: &mut Conn, key: &str, value: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )?;
    Ok(())
}

pub(super) fn put_blob(c: &mut Conn, row: &BlobRow) -> Result<(), StoreError> {
    let w = row.wrapped.as_ref();
    let algorithm = match row.algorithm {
        BlobAlgorithm::None => "none",
        BlobAlgorithm::Chunked => "chunked",
    };
    c.execute(
        "INSERT INTO blobs (rname, algorithm, key_id, encrypteddata, encryptednonce, size,
                sha256plain, inline, created, location)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &row.rname,
            &algorithm,
            &w.map(|w| w.key_id.as_str()),
            &w.map(|w| w.encrypteddata.as_str()),
            &w.map(|w| w.encryptednonce.as_str()),
            &i64::try_from(row.size).unwrap_or(i64::MAX),
            &row.sha256plain,
            &row.inline.as_deref(),
            &row.created.as_i64(),
            &row.location,
        ],
    )?;
    Ok(())
}

pub(super) fn drop_blob(c: &mut Conn, rname: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM blobs WHERE rname = $1", &[&rname])?;
    Ok(())
}

pub(super) fn rewrap_blob(
    c: &mut Conn,
    rname: &str,
    was: &Wrapped,
    wrapped: &Wrapped,
) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE blobs SET key_id = $2, encrypteddata = $3, encryptednonce = $4
         WHERE rname = $1 AND key_id = $5 AND encrypteddata = $6 AND encryptednonce = $7",
        &[
            &rname,
            &wrapped.key_id,
            &wrapped.encrypteddata,
            &wrapped.encryptednonce,
            &was.key_id,
            &was.encrypteddata,
            &was.encryptednonce,
        ],
    )?;
    Ok(n == 1)
}

pub(super) fn switch_blob(
    c: &mut Conn,
    rname: &str,
    was: &Wrapped,
    to: &BlobSwitch,
    at: Tstamp,
) -> Result<bool, StoreError> {
    let (location, inline, w): (Option<&str>, Option<&[u8]>, &Wrapped) = match to {
        BlobSwitch::Stored { location, wrapped } => (Some(location.as_str()), None, wrapped),
        BlobSwitch::Inline { stored, wrapped } => (None, Some(stored.as_ref()), wrapped),
    };
    let n = c.execute(
        "UPDATE blobs SET location = $2, inline = $3, key_id = $4, encrypteddata = $5,
                encryptednonce = $6, keyed_at = $10
         WHERE rname = $1 AND key_id = $7 AND encrypteddata = $8 AND encryptednonce = $9",
        &[
            &rname,
            &location,
            &inline,
            &w.key_id,
            &w.encrypteddata,
            &w.encryptednonce,
            &was.key_id,
            &was.encrypteddata,
            &was.encryptednonce,
            &at.as_i64(),
        ],
    )?;
    Ok(n == 1)
}
