//! The share log and the shares' latest states in PostgreSQL: the SQL of
//! `sqlite/shares.rs`. Lists of oids and values are bound as arrays, one statement each,
//! where SQLite runs one statement per oid and per chunk of values.

use tokio_postgres::Row;

use super::conn::{get, Args, Conn};
use crate::model::share::{Audience, ShareState};
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

/// Decodes a (key, JSON body) row as a `what`.
fn decode_row<T: serde::de::DeserializeOwned>(what: &str, r: &Row) -> Result<T, StoreError> {
    decode(what, get(r, 0)?, get(r, 1)?)
}

/// Runs `sql`, which selects (key, JSON body) rows, and decodes each body as a `what`.
fn decoded<T: serde::de::DeserializeOwned>(
    c: &mut Conn,
    what: &str,
    sql: &str,
    args: Args<'_>,
) -> Result<Vec<T>, StoreError> {
    c.query(sql, args)?
        .iter()
        .map(|r| decode_row(what, r))
        .collect()
}

fn shares(c: &mut Conn, sql: &str, args: Args<'_>) -> Result<Vec<Share>, StoreError> {
    decoded(c, "share", sql, args)
}

/// Whether `sh`'s audience is one of `pairs`: the SQL matched its value only.
fn claimed_by(sh: &Share, pairs: &[(String, String)]) -> bool {
    match &sh.audience {
        Audience::Claim { claim, value } => pairs.iter().any(|(c, v)| c == claim && v == value),
        Audience::Link { .. } => false,
    }
}

/// The distinct values of `pairs`.
fn values_of(pairs: &[(String, String)]) -> Vec<&str> {
    let mut values: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
    values.sort_unstable();
    values.dedup();
    values
}

fn oids_of(oids: &[Oid]) -> Vec<i64> {
    oids.iter().map(|o| o.as_i64()).collect()
}

pub(super) fn share(c: &mut Conn, id: ShareId) -> Result<Option<Share>, StoreError> {
    c.query_opt("SELECT body FROM shares WHERE id = $1", &[&id.as_i64()])?
        .map(|r| decode("share", id.as_i64(), get(&r, 0)?))
        .transpose()
}

/// In the order of `oids` (a share once per time its oid is listed), then by id: what
/// SQLite's statement per oid returns.
pub(super) fn shares_on(c: &mut Conn, oids: &[Oid]) -> Result<Vec<Share>, StoreError> {
    if oids.is_empty() {
        return Ok(Vec::new());
    }
    shares(
        c,
        "SELECT s.id, s.body
         FROM unnest($1::bigint[]) WITH ORDINALITY AS q(oid, n) JOIN shares s ON s.oid = q.oid
         ORDER BY q.n, s.id",
        &[&oids_of(oids)],
    )
}

/// By id. SQLite looks the values up 64 at a time (in byte order), each chunk by id; the
/// two orders differ only past 64 distinct values (callers sort by id anyway).
pub(super) fn shares_to(
    c: &mut Conn,
    pairs: &[(String, String)],
) -> Result<Vec<Share>, StoreError> {
    let values = values_of(pairs);
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let found = shares(
        c,
        "SELECT id, body FROM shares
         WHERE audience_value = ANY($1::text[]) AND audience_claim IS NOT NULL
         ORDER BY id",
        &[&values],
    )?;
    // The value matched; the claim must too.
    Ok(found
        .into_iter()
        .filter(|sh| claimed_by(sh, pairs))
        .collect())
}

/// In the order of `oids`, then by id (within each oid, as [`shares_to`] orders).
pub(super) fn shares_to_on(
    c: &mut Conn,
    pairs: &[(String, String)],
    oids: &[Oid],
) -> Result<Vec<Share>, StoreError> {
    let values = values_of(pairs);
    if values.is_empty() || oids.is_empty() {
        return Ok(Vec::new());
    }
    let found = shares(
        c,
        "SELECT s.id, s.body
         FROM unnest($1::bigint[]) WITH ORDINALITY AS q(oid, n) JOIN shares s ON s.oid = q.oid
         WHERE s.audience_value = ANY($2::text[]) AND s.audience_claim IS NOT NULL
         ORDER BY q.n, s.id",
        &[&oids_of(oids), &values],
    )?;
    Ok(found
        .into_iter()
        .filter(|sh| claimed_by(sh, pairs))
        .collect())
}

pub(super) fn shares_by(c: &mut Conn, label: &str) -> Result<Vec<Share>, StoreError> {
    shares(
        c,
        "SELECT id, body FROM shares WHERE sharer = $1 ORDER BY id",
        &[&label],
    )
}

pub(super) fn shares_through(c: &mut Conn, id: ShareId) -> Result<Vec<Share>, StoreError> {
    shares(
        c,
        "SELECT id, body FROM shares WHERE parent = $1 ORDER BY id",
        &[&id.as_i64()],
    )
}

pub(super) fn link_share(c: &mut Conn, hash: &str) -> Result<Option<Share>, StoreError> {
    c.query_opt("SELECT id, body FROM shares WHERE link_hash = $1", &[&hash])?
        .map(|r| decode_row("share", &r))
        .transpose()
}

pub(super) fn bind_link(c: &mut Conn, id: ShareId, hash: &str) -> Result<(), StoreError> {
    c.execute(
        "UPDATE shares SET link_hash = $2 WHERE id = $1 AND link_hash IS NULL",
        &[&id.as_i64(), &hash],
    )?;
    Ok(())
}

pub(super) fn share_log(c: &mut Conn, id: ShareId) -> Result<Vec<ShareEntry>, StoreError> {
    decoded(
        c,
        "share log entry",
        "SELECT tstamp, body FROM share_log WHERE share = $1 ORDER BY tstamp",
        &[&id.as_i64()],
    )
}

pub(super) fn share_log_since(
    c: &mut Conn,
    after: Tstamp,
    limit: usize,
) -> Result<Vec<ShareEntry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    decoded(
        c,
        "share log entry",
        "SELECT tstamp, body FROM share_log WHERE tstamp > $1 ORDER BY tstamp LIMIT $2",
        &[&after.as_i64(), &limit],
    )
}

pub(super) fn log_share(c: &mut Conn, entry: &ShareEntry) -> Result<(), StoreError> {
    let encode = |e| StoreError::Corrupt("encode share".into(), e);
    let body = serde_json::to_string(entry).map_err(encode)?;
    let kind = serde_json::to_value(entry.kind).map_err(encode)?;
    c.execute(
        "INSERT INTO share_log (tstamp, share, kind, body) VALUES ($1, $2, $3, $4)",
        &[
            &entry.tstamp.as_i64(),
            &entry.share.as_i64(),
            &kind.as_str().unwrap_or(""),
            &body,
        ],
    )?;
    let s = &entry.state;
    let (claim, value) = match &s.audience {
        Audience::Claim { claim, value } => (Some(claim.as_str()), Some(value.as_str())),
        Audience::Link { .. } => (None, None),
    };
    let state = serde_json::to_string(s).map_err(encode)?;
    c.execute(
        "INSERT INTO shares (id, oid, tstamp, audience_claim, audience_value, sharer, parent, body,
                expires, closed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET tstamp = excluded.tstamp, body = excluded.body,
                expires = excluded.expires, closed = excluded.closed",
        &[
            &s.id.as_i64(),
            &s.oid.as_i64(),
            &s.tstamp.as_i64(),
            &claim,
            &value,
            &s.sharer.label,
            &s.parent.map(|p| p.as_i64()),
            &state,
            &s.expires.map(|e| i64::try_from(e.0).unwrap_or(i64::MAX)),
            &!matches!(s.state, ShareState::Pending | ShareState::Accepted),
        ],
    )?;
    Ok(())
}

/// Open shares whose `expires` is at or before `now` (seconds), at most `limit`, soonest
/// first. Ties by id: the order SQLite's index on `expires` gives them, made explicit.
pub(super) fn shares_expired(
    c: &mut Conn,
    now: u64,
    limit: usize,
) -> Result<Vec<Share>, StoreError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    shares(
        c,
        "SELECT id, body FROM shares WHERE NOT closed AND expires IS NOT NULL AND expires <= $1
         ORDER BY expires, id LIMIT $2",
        &[&now, &limit],
    )
}
