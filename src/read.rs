//! The read path (SPEC §6), independent of HTTP: resolving addresses and filtering what
//! the caller may see. Anything the caller may not read is reported as absent.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::access::Access;
use crate::crypto::MasterKeys;
use crate::error::{Code, Error, Result};
use crate::model::{Event, EventView, Letter, ObjPath, Oid, Perms, ShareEntry, Tstamp};
use crate::store::{BlobRow, Current, MetaRead};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn expired(e: &Event) -> bool {
    e.expiration.get() <= now_ns()
}

fn absent(path: &ObjPath) -> Error {
    Error::not_found(Code::NotFound, format!("{path} not found"))
}

/// A "no" that may only be the request's policy budget running out: said as such (503), never
/// passed off as absent.
fn denied(access: &Access, path: &ObjPath) -> Error {
    access.budget_error().unwrap_or_else(|| absent(path))
}

/// Finds the object `path` names. Walking through a folder needs X on it. With
/// `allow_deleted`, the last step may name a deleted object (for history).
pub fn resolve<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    path: &ObjPath,
    allow_deleted: bool,
) -> Result<Current> {
    let mut cur = s.current(path.start)?.ok_or_else(|| absent(path))?;
    for name in &path.names {
        if !cur.live || cur.event.isfile || expired(&cur.event) {
            return Err(absent(path));
        }
        if !access.may(s, &cur.event, Letter::X, &cur.event) {
            return Err(denied(access, path));
        }
        let oid = s
            .child_by_name(cur.event.oid, name)?
            .ok_or_else(|| absent(path))?;
        cur = s.current(oid)?.ok_or_else(|| absent(path))?;
    }
    if (!cur.live && !allow_deleted) || expired(&cur.event) {
        return Err(absent(path));
    }
    Ok(cur)
}

/// A current version as the caller is shown it (its end is FOREVER).
pub fn present(e: Event, letters: Perms) -> EventView {
    let mut v = EventView::new(e, Some(Tstamp::FOREVER));
    v.policy = Some(letters);
    v
}

/// Adds the wrapped data key of a file version's blob (`encrypteddata`/`encryptednonce`,
/// kept beside the log) and, for a caller with the `blobkey` privilege, the data key itself.
pub fn attach_keys<S: MetaRead + ?Sized>(
    s: &S,
    keys: Option<&MasterKeys>,
    e: &mut EventView,
) -> Result<()> {
    let Some(rname) = e.event.rname_str() else {
        return Ok(());
    };
    let Some(row) = s.blob(rname)? else {
        return Ok(());
    };
    attach_row(keys, &row, e);
    Ok(())
}

/// [`attach_keys`] from the blob's row, already read.
fn attach_row(keys: Option<&MasterKeys>, row: &crate::store::BlobRow, e: &mut EventView) {
    if let Some(w) = &row.wrapped {
        let (data, nonce) = w.to_json();
        e.encrypteddata = Some(data);
        e.encryptednonce = Some(nonce);
        if let Some(keys) = keys {
            match keys.unwrap(
                &w.key_id,
                &w.encrypteddata,
                &w.encryptednonce,
                row.rname.as_bytes(),
            ) {
                Ok(dek) => e.blobkey = Some(dek.expose_base64()),
                Err(err) => {
                    tracing::warn!(rname = %row.rname, error = %err, "cannot unwrap a data key")
                }
            }
        }
    }
}

/// GET /props: the current version, if the caller may R it.
pub fn props<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    keys: Option<&MasterKeys>,
    path: &ObjPath,
) -> Result<EventView> {
    let cur = resolve(s, access, path, false)?;
    let letters = access.letters(s, &cur.event);
    if !letters.contains(Perms::R) {
        return Err(denied(access, path));
    }
    let mut e = present(cur.event, letters);
    attach_keys(s, keys, &mut e)?;
    Ok(e)
}

/// GET /history: every version the caller may R under that version's own policy.
pub fn history<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    keys: Option<&MasterKeys>,
    path: &ObjPath,
) -> Result<Vec<EventView>> {
    let cur = resolve(s, access, path, true)?;
    let versions = s.history(cur.event.oid)?;
    let ends: Vec<Tstamp> = versions
        .iter()
        .skip(1)
        .map(|e| e.tstamp)
        .chain(std::iter::once(Tstamp::FOREVER))
        .collect();
    let mut out = Vec::new();
    for (e, end) in versions.into_iter().zip(ends) {
        let letters = access.letters(s, &e);
        if letters.contains(Perms::R) {
            let mut v = EventView::new(e, Some(end));
            v.policy = Some(letters);
            attach_keys(s, keys, &mut v)?;
            out.push(v);
        }
    }
    // Versions hidden because the budget ran out would make the history lie.
    if let Some(e) = access.budget_error() {
        return Err(e);
    }
    if out.is_empty() {
        return Err(absent(path));
    }
    Ok(out)
}

/// Checks that the caller may list (X) a folder: 404 if it may not even see it.
pub fn listable<S: MetaRead + ?Sized>(s: &S, access: &Access, path: &ObjPath) -> Result<Current> {
    let cur = resolve(s, access, path, false)?;
    let letters = access.letters(s, &cur.event);
    if !letters.contains(Perms::X) {
        if letters.contains(Perms::R) {
            return Err(Error::forbidden(
                Code::PermissionDenied,
                format!("X permission on {} is required to list it", cur.event.oid),
            ));
        }
        return Err(denied(access, path));
    }
    Ok(cur)
}

/// One page of a listing: up to `want` readable children after `after`, scanning at
/// most `scan` rows. Returns the visible events and the last oid scanned (None at end).
pub fn list_page<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    keys: Option<&MasterKeys>,
    dir: Oid,
    after: Option<Oid>,
    scan: usize,
) -> Result<(Vec<EventView>, Option<Oid>)> {
    let rows = s.children(dir, after, scan)?;
    let last = if rows.len() == scan {
        rows.last().map(|c| c.event.oid)
    } else {
        None
    };
    let events: Vec<&Event> = rows.iter().map(|c| &c.event).collect();
    let letters = access.letters_all(s, &events);
    // Children hidden because the budget ran out (or the client left) would make the
    // listing lie: it ends with an error instead.
    if let Some(e) = access.budget_error() {
        return Err(e);
    }
    let mut out = Vec::with_capacity(rows.len());
    for (c, letters) in rows.into_iter().zip(letters) {
        if !expired(&c.event) && letters.contains(Perms::R) {
            let mut e = present(c.event, letters);
            attach_keys(s, keys, &mut e)?;
            out.push(e);
        }
    }
    Ok((out, last))
}

/// GET /derived: live objects derived from `oid` that the caller may read.
pub fn derived<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    keys: Option<&MasterKeys>,
    oid: Oid,
) -> Result<Vec<EventView>> {
    let mut out = Vec::new();
    for c in s.derived_from(oid)? {
        if expired(&c.event) {
            continue;
        }
        let letters = access.letters(s, &c.event);
        if letters.contains(Perms::R) {
            let mut e = present(c.event, letters);
            attach_keys(s, keys, &mut e)?;
            out.push(e);
        }
    }
    if let Some(e) = access.budget_error() {
        return Err(e);
    }
    Ok(out)
}

/// GET /stream: the file version to stream and its blob. A directory streams its
/// `defaultfile` (default `index.html`); `tstamp` names an older version, judged by that
/// version's own policy. Streaming needs X; without R as well the object stays invisible.
pub fn stream_target<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    path: &ObjPath,
    tstamp: Option<Tstamp>,
) -> Result<(Event, crate::store::BlobRow)> {
    let mut cur = resolve(s, access, path, tstamp.is_some())?;
    if !cur.event.isfile {
        let dir = &cur.event;
        if !access.may(s, dir, Letter::X, dir) {
            return Err(denied(access, path));
        }
        let name = dir.defaultfile().to_string();
        let oid = s
            .child_by_name(dir.oid, &name)?
            .ok_or_else(|| Error::not_found(Code::NotFound, format!("{path} has no {name}")))?;
        cur = s.current(oid)?.ok_or_else(|| absent(path))?;
        if !cur.live || expired(&cur.event) || !cur.event.isfile {
            return Err(Error::not_found(
                Code::NotFound,
                format!("{path} has no {name}"),
            ));
        }
    }
    let event = match tstamp {
        None => cur.event,
        Some(t) => match s.version(cur.event.oid, t)? {
            Some(e) if e.action != crate::model::Action::D => e,
            _ => {
                return Err(Error::not_found(
                    Code::NotFound,
                    format!("{path} has no version {t} with content"),
                ))
            }
        },
    };
    let letters = access.letters(s, &event);
    if !letters.contains(Perms::X) {
        if letters.contains(Perms::R) {
            return Err(Error::forbidden(
                Code::PermissionDenied,
                format!("X permission on {} is required to stream it", event.oid),
            ));
        }
        return Err(denied(access, path));
    }
    let row = match event.rname_str() {
        Some(r) => s.blob(r)?,
        None => None,
    };
    let row = row.ok_or_else(|| {
        Error::not_found(
            Code::NoContent,
            format!("{} has no stored content", event.oid),
        )
    })?;
    Ok((event, row))
}

/// What the notification feed sends: a version the caller may read, or a change to a share
/// that concerns them.
pub enum FeedItem {
    Event(Box<EventView>),
    Share(Box<ShareEntry>),
}

impl FeedItem {
    pub fn tstamp(&self) -> Tstamp {
        match self {
            FeedItem::Event(v) => v.event.tstamp,
            FeedItem::Share(e) => e.tstamp,
        }
    }
}

/// Whether a share log entry goes to the caller's feed (SPEC §9.6): its recipients hear of
/// offers, changes, revocations and expiry; its sharer of acceptance and declining.
fn share_news(access: &Access, e: &ShareEntry) -> bool {
    use crate::model::share::ShareChange as K;
    let claims = &access.identity.claims;
    match e.kind {
        K::Offered | K::Changed | K::Revoked | K::Expired => e.state.audience.matches(claims),
        K::Accepted | K::Declined => e.state.sharer.label == claims.label(),
        K::Redeemed | K::Rotated => false,
    }
}

/// A row of the merged logs: a version (with its blob's row, if it has one) or a share-log
/// entry.
type FeedRow = (
    Tstamp,
    Option<(Event, Option<crate::store::BlobRow>)>,
    Option<ShareEntry>,
);

/// One step of the notification feed as read in a snapshot: the first `scan` rows after
/// `after` of the two logs merged in tstamp order, the caller's shares and the blob rows
/// of the file versions, all from the same snapshot. [`FeedRows::judge`] then keeps the
/// events the caller may read (each judged by its own version's policy and those shares)
/// and the share-log entries that concern them, after the snapshot has ended. `last` (the
/// last tstamp scanned, `None` when nothing newer is stored) moves the feed past what the
/// caller may not see.
pub struct FeedRows {
    rows: Vec<FeedRow>,
    incoming: Vec<crate::model::Share>,
    /// The tstamp of the last row read, to resume after.
    pub last: Option<Tstamp>,
}

pub fn feed_rows<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    after: Tstamp,
    scan: usize,
) -> Result<FeedRows> {
    let events = s.events_since(after, scan)?;
    let entries = s.share_log_since(after, scan)?;
    // The first `scan` rows of the two logs merged: a row of one log past the other's last
    // one fetched waits for the next step, so nothing is skipped.
    let mut merged: Vec<(Tstamp, Option<Event>, Option<ShareEntry>)> = events
        .into_iter()
        .map(|e| (e.tstamp, Some(e), None))
        .chain(entries.into_iter().map(|e| (e.tstamp, None, Some(e))))
        .collect();
    merged.sort_by_key(|r| r.0);
    merged.truncate(scan);
    let last = merged.last().map(|r| r.0);
    // The blob rows of the file versions, in one read.
    let rnames: Vec<&str> = merged
        .iter()
        .filter_map(|r| r.1.as_ref().and_then(Event::rname_str))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let blobs: HashMap<String, BlobRow> = s
        .blobs_named(&rnames)?
        .into_iter()
        .map(|b| (b.rname.clone(), b))
        .collect();
    let mut rows = Vec::with_capacity(merged.len());
    for (t, e, entry) in merged {
        let e = e.map(|e| {
            let blob = e.rname_str().and_then(|r| blobs.get(r).cloned());
            (e, blob)
        });
        rows.push((t, e, entry));
    }
    let incoming = if access.is_root() {
        Vec::new()
    } else {
        access.incoming(s)
    };
    Ok(FeedRows {
        rows,
        incoming,
        last,
    })
}

impl FeedRows {
    /// What the caller may see of the rows: policies are evaluated here, outside any
    /// snapshot, so a slow policy holds no database connection or read transaction while
    /// it runs or waits for the policy gate (a hundred feeds cannot starve other requests
    /// of them). Blocking (policy evaluation): call it from a blocking thread.
    pub fn judge(self, access: &Access, keys: Option<&MasterKeys>) -> Result<Vec<FeedItem>> {
        let mut out = Vec::new();
        for row in self.rows {
            match row {
                (_, Some((e, blob)), _) => {
                    let letters = access.letters_given(&self.incoming, &e);
                    if letters.contains(Perms::R) {
                        // The feed shows no tstampend: a version's end may not be known yet.
                        let mut v = EventView::new(e, None);
                        v.policy = Some(letters);
                        if let Some(row) = &blob {
                            attach_row(keys, row, &mut v);
                        }
                        out.push(FeedItem::Event(Box::new(v)));
                    }
                }
                (_, None, Some(entry)) if share_news(access, &entry) => {
                    out.push(FeedItem::Share(Box::new(entry)))
                }
                _ => {}
            }
        }
        // A feed must not skip events it could not judge: it ends, and the client resumes.
        if let Some(e) = access.budget_error() {
            return Err(e);
        }
        Ok(out)
    }
}
