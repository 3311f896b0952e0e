//! The share log and the shares' latest states, in SQL (schema/0004_shares.sql).

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::share::Audience;
use crate::model::share::ShareState;
use crate::model::{Oid, Share, ShareEntry, ShareId, Tstamp};
use crate::store::StoreError;

fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    id: i64,
    body: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("{what} {}", Oid::from_i64(id)), e))
}

/// Runs `sql`, which selects (key, JSON body) rows, and decodes each body as a `what`.
fn decoded<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    what: &str,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(args, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, body) = row?;
        out.push(decode(what, key, &body)?);
    }
    Ok(out)
}

fn shares_where(
    conn: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Share>, StoreError> {
    decoded(
        conn,
        "share",
        &format!("SELECT id, body FROM shares WHERE {clause} ORDER BY id"),
        args,
    )
}

pub(super) fn share(conn: &Connection, id: ShareId) -> Result<Option<Share>, StoreError> {
    let mut st = conn.prepare_cached("SELECT body FROM shares WHERE id = ?1")?;
    let body: Option<String> = st.query_row([id.as_i64()], |r| r.get(0)).optional()?;
    body.map(|b| decode("share", id.as_i64(), &b)).transpose()
}

pub(super) fn shares_on(conn: &Connection, oids: &[Oid]) -> Result<Vec<Share>, StoreError> {
    let mut out = Vec::new();
    for oid in oids {
        out.extend(shares_where(conn, "oid = ?1", [oid.as_i64()])?);
    }
    Ok(out)
}

/// Values looked up per statement (SQLite allows 32,766 parameters; a cached statement
/// per count up to this many).
const VALUES_PER_QUERY: usize = 64;

pub(super) fn shares_to(
    conn: &Connection,
    pairs: &[(String, String)],
) -> Result<Vec<Share>, StoreError> {
    let mut values: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
    values.sort_unstable();
    values.dedup();
    let mut out = Vec::new();
    for chunk in values.chunks(VALUES_PER_QUERY) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let found = shares_where(
            conn,
            &format!("audience_value IN ({marks}) AND audience_claim IS NOT NULL"),
            rusqlite::params_from_iter(chunk),
        )?;
        // The value matched; the claim must too.
        out.extend(found.into_iter().filter(|sh| match &sh.audience {
            Audience::Claim { claim, value } => pairs.iter().any(|(c, v)| c == claim && v == value),
            Audience::Link { .. } => false,
        }));
    }
    Ok(out)
}

pub(super) fn shares_to_on(
    conn: &Connection,
    pairs: &[(String, String)],
    oids: &[Oid],
) -> Result<Vec<Share>, StoreError> {
    let mut values: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
    values.sort_unstable();
    values.dedup();
    let mut out = Vec::new();
    for oid in oids {
        for chunk in values.chunks(VALUES_PER_QUERY) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("?{}", i + 2)).collect();
            let mut args: Vec<rusqlite::types::Value> = vec![oid.as_i64().into()];
            args.extend(
                chunk
                    .iter()
                    .map(|v| rusqlite::types::Value::from(v.to_string())),
            );
            let found = shares_where(
                conn,
                &format!(
                    "oid = ?1 AND audience_value IN ({}) AND audience_claim IS NOT NULL",
                    marks.join(", ")
                ),
                rusqlite::params_from_iter(args),
            )?;
            out.extend(found.into_iter().filter(|sh| match &sh.audience {
                Audience::Claim { claim, value } => {
                    pairs.iter().any(|(c, v)| c == claim && v == value)
                }
                Audience::Link { .. } => false,
            }));
        }
    }
    Ok(out)
}

pub(super) fn shares_by(conn: &Connection, label: &str) -> Result<Vec<Share>, StoreError> {
    shares_where(conn, "sharer = ?1", [label])
}

pub(super) fn shares_through(conn: &Connection, id: ShareId) -> Result<Vec<Share>, StoreError> {
    shares_where(conn, "parent = ?1", [id.as_i64()])
}

pub(super) fn link_share(conn: &Connection, hash: &str) -> Result<Option<Share>, StoreError> {
    let mut st = conn.prepare_cached("SELECT id, body FROM shares WHERE link_hash = ?1")?;
    let row: Option<(i64, String)> = st
        .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(id, body)| decode("share", id, &body)).transpose()
}

pub(super) fn bind_link(conn: &Connection, id: ShareId, hash: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE shares SET link_hash = ?2 WHERE id = ?1 AND link_hash IS NULL")?
        .execute(params![id.as_i64(), hash])?;
    Ok(())
}

pub(super) fn share_log(conn: &Connection, id: ShareId) -> Result<Vec<ShareEntry>, StoreError> {
    decoded(
        conn,
        "share log entry",
        "SELECT tstamp, body FROM share_log WHERE share = ?1 ORDER BY tstamp",
        [id.as_i64()],
    )
}

pub(super) fn share_log_since(
    conn: &Connection,
    after: Tstamp,
    limit: usize,
) -> Result<Vec<ShareEntry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    decoded(
        conn,
        "share log entry",
        "SELECT tstamp, body FROM share_log WHERE tstamp > ?1 ORDER BY tstamp LIMIT ?2",
        params![after.as_i64(), limit],
    )
}

pub(super) fn log_share(conn: &Connection, entry: &ShareEntry) -> Result<(), StoreError> {
    let encode = |e| StoreError::Corrupt("encode share".into(), e);
    let body = serde_json::to_string(entry).map_err(encode)?;
    let kind = serde_json::to_value(entry.kind).map_err(encode)?;
    conn.prepare_cached(
        "INSERT INTO share_log (tstamp, share, kind, body) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        entry.tstamp.as_i64(),
        entry.share.as_i64(),
        kind.as_str().unwrap_or(""),
        body
    ])?;
    let s = &entry.state;
    let (claim, value) = match &s.audience {
        Audience::Claim { claim, value } => (Some(claim.as_str()), Some(value.as_str())),
        Audience::Link { .. } => (None, None),
    };
    let state = serde_json::to_string(s).map_err(encode)?;
    conn.prepare_cached(
        "INSERT INTO shares (id, oid, tstamp, audience_claim, audience_value, sharer, parent, body,
                expires, closed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET tstamp = excluded.tstamp, body = excluded.body,
                expires = excluded.expires, closed = excluded.closed",
    )?
    .execute(params![
        s.id.as_i64(),
        s.oid.as_i64(),
        s.tstamp.as_i64(),
        claim,
        value,
        s.sharer.label,
        s.parent.map(|p| p.as_i64()),
        state,
        s.expires.map(|e| i64::try_from(e.0).unwrap_or(i64::MAX)),
        !matches!(s.state, ShareState::Pending | ShareState::Accepted),
    ])?;
    Ok(())
}

/// Open shares whose `expires` is at or before `now` (seconds), at most `limit`.
pub(super) fn shares_expired(
    conn: &Connection,
    now: u64,
    limit: usize,
) -> Result<Vec<Share>, StoreError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    decoded(
        conn,
        "share",
        "SELECT id, body FROM shares WHERE closed = 0 AND expires IS NOT NULL AND expires <= ?1
         ORDER BY expires LIMIT ?2",
        params![now, limit],
    )
}
