//! [`MetaRead`](crate::store::MetaRead)'s reads of the log, the index, `meta` and the blobs
//! in PostgreSQL: the SQL of `sqlite/reads.rs`, with `live` a BOOLEAN and `inline` a BYTEA.

use tokio_postgres::Row;

use super::conn::{get, Conn};
use crate::crypto::{BlobAlgorithm, Wrapped};
use crate::model::{Event, Oid, Tstamp};
use crate::store::{BlobRow, Current, StoreError};

pub(super) fn decode(oid: i64, tstamp: i64, body: &str) -> Result<Event, StoreError> {
    serde_json::from_str(body).map_err(|e| {
        StoreError::Corrupt(
            format!("{}@{}", Oid::from_i64(oid), Tstamp::from_i64(tstamp)),
            e,
        )
    })
}

/// The current state's columns, then `$tail`: one fixed text per statement, built at
/// compile time.
macro_rules! current_select {
    ($tail:literal) => {
        concat!(
            "SELECT o.oid, o.tstamp, o.live, o.fulldir, e.body
             FROM objects o JOIN events e ON e.oid = o.oid AND e.tstamp = o.tstamp ",
            $tail
        )
    };
}

fn to_current(row: &Row) -> Result<Current, StoreError> {
    let oid: i64 = get(row, 0)?;
    let tstamp: i64 = get(row, 1)?;
    let live: bool = get(row, 2)?;
    let fulldir: String = get(row, 3)?;
    let body: &str = get(row, 4)?;
    let mut event = decode(oid, tstamp, body)?;
    event.fulldir = fulldir;
    Ok(Current { event, live })
}

/// A blob row's columns, then `$tail`.
macro_rules! blob_select {
    ($tail:literal) => {
        concat!(
            "SELECT rname, algorithm, key_id, encrypteddata, encryptednonce, size,
                    sha256plain, inline, created, location, coalesce(keyed_at, created)
             FROM blobs ",
            $tail
        )
    };
}

fn to_blob(r: &Row) -> Result<BlobRow, StoreError> {
    let algorithm: &str = get(r, 1)?;
    let key_id: Option<String> = get(r, 2)?;
    let wrapped = match key_id {
        Some(key_id) => Some(Wrapped {
            key_id,
            encrypteddata: get(r, 3)?,
            encryptednonce: get(r, 4)?,
        }),
        None => None,
    };
    Ok(BlobRow {
        rname: get(r, 0)?,
        algorithm: if algorithm == "none" {
            BlobAlgorithm::None
        } else {
            BlobAlgorithm::Chunked
        },
        wrapped,
        size: get::<i64>(r, 5)? as u64,
        sha256plain: get(r, 6)?,
        inline: get::<Option<Vec<u8>>>(r, 7)?.map(bytes::Bytes::from),
        created: Tstamp::from_i64(get(r, 8)?),
        location: get(r, 9)?,
        keyed: Tstamp::from_i64(get(r, 10)?),
    })
}

/// A `usize` limit as the BIGINT `LIMIT` takes.
fn limit_arg(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// An object's current state, with the size of what was read (its stored text), to bound
/// a cache of it.
pub(super) fn current_sized(
    c: &mut Conn,
    oid: Oid,
) -> Result<Option<(Current, usize)>, StoreError> {
    let Some(row) = c.query_opt(current_select!("WHERE o.oid = $1"), &[&oid.as_i64()])? else {
        return Ok(None);
    };
    let size = get::<&str>(&row, 3)?.len() + get::<&str>(&row, 4)?.len();
    Ok(Some((to_current(&row)?, size)))
}

pub(super) fn child_by_name(
    c: &mut Conn,
    parent: Oid,
    name: &str,
) -> Result<Option<Oid>, StoreError> {
    c.query_opt(
        "SELECT oid FROM objects WHERE parentoid = $1 AND name = $2 AND live",
        &[&parent.as_i64(), &name],
    )?
    .map(|r| get::<i64>(&r, 0).map(Oid::from_i64))
    .transpose()
}

pub(super) fn has_children(c: &mut Conn, oid: Oid, live_only: bool) -> Result<bool, StoreError> {
    let sql = if live_only {
        "SELECT EXISTS (SELECT 1 FROM objects WHERE parentoid = $1 AND live AND oid <> $1)"
    } else {
        "SELECT EXISTS (SELECT 1 FROM objects WHERE parentoid = $1 AND oid <> $1)"
    };
    get(&c.query_one(sql, &[&oid.as_i64()])?, 0)
}

pub(super) fn version(c: &mut Conn, oid: Oid, tstamp: Tstamp) -> Result<Option<Event>, StoreError> {
    let row = c.query_opt(
        "SELECT body FROM events WHERE oid = $1 AND tstamp = $2",
        &[&oid.as_i64(), &tstamp.as_i64()],
    )?;
    row.map(|r| decode(oid.as_i64(), tstamp.as_i64(), get(&r, 0)?))
        .transpose()
}

pub(super) fn history(c: &mut Conn, oid: Oid) -> Result<Vec<Event>, StoreError> {
    c.query(
        "SELECT tstamp, body FROM events WHERE oid = $1 ORDER BY tstamp",
        &[&oid.as_i64()],
    )?
    .iter()
    .map(|r| decode(oid.as_i64(), get(r, 0)?, get(r, 1)?))
    .collect()
}

pub(super) fn children(
    c: &mut Conn,
    parent: Oid,
    after: Option<Oid>,
    limit: usize,
) -> Result<Vec<Current>, StoreError> {
    // The page is cut from `objects` before the join: a prepared statement's generic plan
    // otherwise hash-joins every child after `$2` with the log before sorting (35-46 ms a
    // page of 1,000 among 100,000, against 1-2 ms this way).
    c.query(
        "SELECT o.oid, o.tstamp, o.live, o.fulldir, e.body
         FROM (SELECT oid, tstamp, live, fulldir FROM objects
               WHERE parentoid = $1 AND live AND oid > $2 AND oid <> $1
               ORDER BY oid LIMIT $3) o
         JOIN events e ON e.oid = o.oid AND e.tstamp = o.tstamp
         ORDER BY o.oid",
        &[
            &parent.as_i64(),
            &after.map(Oid::as_i64).unwrap_or(-1),
            &limit_arg(limit),
        ],
    )?
    .iter()
    .map(to_current)
    .collect()
}

pub(super) fn derived_from(c: &mut Conn, oid: Oid) -> Result<Vec<Current>, StoreError> {
    c.query(
        current_select!("WHERE o.derived_oid = $1 AND o.live ORDER BY o.oid"),
        &[&oid.as_i64()],
    )?
    .iter()
    .map(to_current)
    .collect()
}

pub(super) fn meta_get(c: &mut Conn, key: &str) -> Result<Option<String>, StoreError> {
    c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
        .map(|r| get(&r, 0))
        .transpose()
}

pub(super) fn events_since(
    c: &mut Conn,
    after: Tstamp,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    c.query(
        "SELECT oid, tstamp, body FROM events WHERE tstamp > $1 ORDER BY tstamp LIMIT $2",
        &[&after.as_i64(), &limit_arg(limit)],
    )?
    .iter()
    .map(|r| decode(get(r, 0)?, get(r, 1)?, get(r, 2)?))
    .collect()
}

/// `greatest` is PostgreSQL's two-argument `max` of SQLite.
pub(super) fn max_tstamp(c: &mut Conn) -> Result<Tstamp, StoreError> {
    let row = c.query_one(
        "SELECT greatest(coalesce((SELECT max(tstamp) FROM events), 0),
                         coalesce((SELECT max(tstamp) FROM share_log), 0))",
        &[],
    )?;
    Ok(Tstamp::from_i64(get(&row, 0)?))
}

pub(super) fn blob(c: &mut Conn, rname: &str) -> Result<Option<BlobRow>, StoreError> {
    c.query_opt(blob_select!("WHERE rname = $1"), &[&rname])?
        .as_ref()
        .map(to_blob)
        .transpose()
}

pub(super) fn blobs_named(c: &mut Conn, rnames: &[&str]) -> Result<Vec<BlobRow>, StoreError> {
    if rnames.is_empty() {
        return Ok(Vec::new());
    }
    c.query(blob_select!("WHERE rname = ANY($1)"), &[&rnames])?
        .iter()
        .map(to_blob)
        .collect()
}

pub(super) fn blob_in_use(c: &mut Conn, rname: &str) -> Result<bool, StoreError> {
    let row = c.query_one(
        "SELECT EXISTS (SELECT 1 FROM event_blobs WHERE rname = $1)",
        &[&rname],
    )?;
    get(&row, 0)
}

/// In byte order (`COLLATE "C"`), as SQLite's BINARY collation orders them: the
/// database's default collation may order text otherwise.
pub(super) fn blobs_after(
    c: &mut Conn,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<BlobRow>, StoreError> {
    c.query(
        blob_select!(r#"WHERE rname COLLATE "C" > $1 ORDER BY rname COLLATE "C" LIMIT $2"#),
        &[&after.unwrap_or(""), &limit_arg(limit)],
    )?
    .iter()
    .map(to_blob)
    .collect()
}

pub(super) fn location_in_use(c: &mut Conn, location: &str) -> Result<bool, StoreError> {
    let row = c.query_one(
        "SELECT EXISTS (SELECT 1 FROM blobs WHERE location = $1)
             OR EXISTS (SELECT 1 FROM blobs WHERE rname = $1 AND location IS NULL
                                             AND inline IS NULL)",
        &[&location],
    )?;
    get(&row, 0)
}
