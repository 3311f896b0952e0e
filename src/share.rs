//! Sharing (SPEC §9): who may make, see, accept, decline and revoke a share, the caps on
//! what a share may grant, and the cascade of a revocation. Every decision is made in the
//! snapshot or write transaction it is asked in (writes re-check on the writer), through
//! [`Access`]; nothing here knows about HTTP.

use serde::Deserialize;

use crate::access::{is_ancestor, Access};
use crate::error::{Code, Error, Result};
use crate::model::share::{
    Acceptance, Audience, Expiry, Role, ShareChange, ShareState, Sharer, SharingMode,
};
use crate::model::{Event, Letter, Oid, Perms, Share, ShareEntry, ShareId, Tstamp};
use crate::store::{MetaRead, MetaWrite};

/// Longest `terms` and `message` (bytes): a share's text is read by people.
pub const MAX_TEXT_BYTES: usize = 16 << 10;
/// Longest audience claim name or value (bytes).
pub const MAX_AUDIENCE_BYTES: usize = 1024;

/// `POST /shares`'s body. Unknown fields are refused: a misspelt `expires` must not make
/// a share that never expires.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewShare {
    #[serde(default)]
    pub oid: Option<Oid>,
    pub audience: Audience,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub letters: Option<Perms>,
    #[serde(default)]
    pub terms: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub acceptance: Option<Acceptance>,
    #[serde(default)]
    pub sharing_mode: Option<SharingMode>,
    #[serde(default)]
    pub expires: Option<Expiry>,
    #[serde(default)]
    pub max_redemptions: Option<u64>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::bad_request(Code::BadShare, message)
}

fn no_share(id: ShareId) -> Error {
    Error::not_found(Code::NotFound, format!("no share {id}"))
}

fn no_object(oid: Oid) -> Error {
    Error::not_found(Code::NotFound, format!("no object {oid}"))
}

fn denied(message: impl Into<String>) -> Error {
    Error::forbidden(Code::PermissionDenied, message)
}

fn closed(share: &Share) -> Error {
    Error::conflict(
        Code::ShareClosed,
        format!("share {} is {}", share.id, state_name(share.state_now())),
    )
}

fn state_name(s: ShareState) -> &'static str {
    match s {
        ShareState::Pending => "pending",
        ShareState::Accepted => "accepted",
        ShareState::Declined => "declined",
        ShareState::Revoked => "revoked",
        ShareState::Expired => "expired",
    }
}

/// Parses a `?state=` filter.
pub fn parse_state(s: &str) -> Result<ShareState> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        Error::bad_request(
            Code::BadQuery,
            format!("state {s:?} is not one of pending, accepted, declined, revoked, expired"),
        )
    })
}

impl NewShare {
    /// Checks what needs no store: the requested letters, and the fields' shapes.
    fn letters(&self) -> Result<(Option<Role>, Perms)> {
        let letters = match (self.role, self.letters) {
            (Some(_), Some(_)) => return Err(bad("give either role or letters, not both")),
            (None, None) => {
                return Err(bad(
                    "a share needs a role (reader, writer, full) or letters",
                ))
            }
            (Some(role), None) => role.letters(),
            (None, Some(l)) => l,
        };
        if letters.is_empty() {
            return Err(bad("a share must grant at least one letter"));
        }
        match &self.audience {
            Audience::Claim { claim, value } => {
                if claim.trim().is_empty() || value.is_empty() {
                    return Err(bad("an audience needs a claim and a value, neither empty"));
                }
                if claim.len() > MAX_AUDIENCE_BYTES || value.len() > MAX_AUDIENCE_BYTES {
                    return Err(bad(format!(
                        "an audience's claim and value are at most {MAX_AUDIENCE_BYTES} bytes"
                    )));
                }
            }
            Audience::Link { link: true } => {}
            Audience::Link { link: false } => {
                return Err(bad(r#"a link audience is {"link": true}"#));
            }
        }
        for (name, text) in [("terms", &self.terms), ("message", &self.message)] {
            if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
                return Err(bad(format!("{name} is over {MAX_TEXT_BYTES} bytes")));
            }
        }
        if self.expires.is_some_and(Expiry::has_passed) {
            return Err(bad("expires is in the past"));
        }
        match (&self.audience, self.max_redemptions) {
            (Audience::Claim { .. }, Some(_)) => {
                return Err(bad("max_redemptions is for link shares"))
            }
            (_, Some(0)) => return Err(bad("max_redemptions must be at least 1")),
            _ => {}
        }
        Ok((self.role, letters))
    }
}

/// The live object `oid`, if the caller may read it; otherwise the same 404 as for no object.
fn readable<S: MetaRead + ?Sized>(s: &S, access: &Access, oid: Oid) -> Result<Event> {
    let cur = s.current(oid)?.ok_or_else(|| no_object(oid))?;
    if !cur.live
        || crate::read::expired(&cur.event)
        || !access.may(s, &cur.event, Letter::R, &cur.event)
    {
        return Err(no_object(oid));
    }
    Ok(cur.event)
}

/// Whether the caller owns `event` in the sense of SPEC §9.2: U by its policy.
fn owns(access: &Access, event: &Event) -> bool {
    access.by_policy_only(event, Letter::U).contains(Perms::U)
}

fn is_sharer(access: &Access, share: &Share) -> bool {
    share.sharer.label == access.identity.claims.label()
}

fn is_recipient(access: &Access, share: &Share) -> bool {
    share.audience.matches(&access.identity.claims)
}

/// Whether the caller may see `share`: its sharer, a recipient, or an owner of its object.
fn may_see<S: MetaRead + ?Sized>(s: &S, access: &Access, share: &Share) -> Result<bool> {
    if access.is_root() || is_sharer(access, share) || is_recipient(access, share) {
        return Ok(true);
    }
    Ok(match s.current(share.oid)? {
        Some(cur) => owns(access, &cur.event),
        None => false,
    })
}

/// A new share, and a link share's secret (shown this once).
#[derive(Debug, serde::Serialize)]
pub struct Created {
    #[serde(flatten)]
    pub share: Share,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Creates a share (`POST /shares`), deciding in the writer's transaction `t`.
pub fn create(t: &mut dyn MetaWrite, access: &Access, req: NewShare) -> Result<Created> {
    if access.identity.kind == crate::identity::IdentityKind::Anonymous {
        return Err(Error::unauthorized(
            Code::Unauthorized,
            "sharing needs an identity",
        ));
    }
    let (role, letters) = req.letters()?;
    let oid = req
        .oid
        .ok_or_else(|| bad("a share needs the oid of the object to share"))?;
    let object = readable(&*t, access, oid)?;
    let mut expires = req.expires;
    let mut sharing_mode = req.sharing_mode.unwrap_or(SharingMode::Owner);
    let parent = if owns(access, &object) || access.is_root() {
        let held = access.letters(&*t, &object);
        if !held.contains(letters) {
            return Err(denied(format!(
                "a share may grant only letters you hold: you hold {held} on {oid}, asked for {letters}"
            )));
        }
        None
    } else {
        // Through a share: a live, accepted one with sharing_mode anyone, on the object or
        // a folder above it, whose caps the new share keeps.
        let through: Vec<Share> = access
            .incoming(&*t)
            .into_iter()
            .filter(|sh| {
                sh.state_now() == ShareState::Accepted
                    && sh.sharing_mode == SharingMode::Anyone
                    && (sh.oid == object.oid || is_ancestor(sh.oid, &object))
            })
            .collect();
        if through.is_empty() {
            return Err(denied(format!(
                "you may not share {oid}: you neither own it nor hold a share on it that may be shared on"
            )));
        }
        let fits = |p: &Share| {
            p.letters.contains(letters)
                && match (expires, p.expires) {
                    (_, None) => true,
                    (None, Some(_)) => true, // takes the parent's
                    (Some(e), Some(pe)) => e <= pe,
                }
                && sharing_mode <= p.sharing_mode
        };
        let Some(p) = through.into_iter().find(fits) else {
            return Err(denied(
                "a share made through a share may not grant more letters, last longer or be \
                 shared on more widely than it",
            ));
        };
        if expires.is_none() {
            expires = p.expires;
        }
        sharing_mode = sharing_mode.min(p.sharing_mode);
        Some(p.id)
    };
    let is_link = matches!(req.audience, Audience::Link { .. });
    // A link is accepted by whoever redeems it; the link share itself reaches no one.
    let acceptance = match (is_link, req.acceptance) {
        (true, _) => Acceptance::NotRequired,
        (false, Some(a)) => a,
        (false, None) if req.terms.is_some() => Acceptance::Required,
        (false, None) => Acceptance::NotRequired,
    };
    let shape = ShareShape {
        audience: &req.audience,
        letters,
        terms: req.terms.as_deref(),
        sharing_mode,
        expires,
    };
    check_share_rule(access, &object, &shape)?;
    let tstamp = t.next_tstamp();
    let share = Share {
        id: t.next_oid(),
        oid,
        name: object.name.clone(),
        security: object.security.clone(),
        audience: req.audience,
        role,
        letters,
        terms: req.terms,
        message: req.message,
        acceptance,
        sharing_mode,
        expires,
        state: match acceptance {
            Acceptance::Required => ShareState::Pending,
            Acceptance::NotRequired => ShareState::Accepted,
        },
        sharer: Sharer {
            label: access.identity.claims.label().to_string(),
        },
        parent,
        max_redemptions: req.max_redemptions,
        redemptions: 0,
        tstamp,
    };
    record(t, access, &share, ShareChange::Offered)?;
    let secret = if is_link {
        let secret = new_secret();
        t.bind_link(share.id, &secret_hash(&secret))?;
        Some(secret)
    } else {
        None
    };
    Ok(Created { share, secret })
}

/// A link's secret: 256 random bits, base64url.
fn new_secret() -> String {
    use base64::Engine as _;
    use rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored of a link's secret.
fn secret_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /shares/redeem`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    pub secret: String,
}

fn gone(message: impl Into<String>) -> Error {
    Error::gone(Code::LinkGone, message)
}

/// Redeems a link share's secret: an accepted share to the caller, made through the link
/// (its caps and its revocation apply), or the one the caller already holds through it.
/// Returns the share and whether it is new. An unknown secret is a 404; a link revoked,
/// expired or used up is a 410.
pub fn redeem(t: &mut dyn MetaWrite, access: &Access, req: Redeem) -> Result<(Share, bool)> {
    let unknown = || Error::not_found(Code::NotFound, "no link share has this secret");
    if req.secret.is_empty() || req.secret.len() > 128 {
        return Err(unknown());
    }
    let hash = secret_hash(&req.secret);
    let link = t.link_share(&hash)?.ok_or_else(unknown)?;
    // The lookup found it by its hash; compare again without an early exit.
    if !same_bytes(secret_hash(&req.secret).as_bytes(), hash.as_bytes()) {
        return Err(unknown());
    }
    if !link.is_open() {
        return Err(gone(format!(
            "the link was {}",
            state_name(link.state_now())
        )));
    }
    let label = access.identity.claims.label().to_string();
    let audience = match access.identity.claims.values("email").into_iter().next() {
        Some(email) => Audience::Claim {
            claim: "email".into(),
            value: email,
        },
        None => Audience::Claim {
            claim: crate::model::share::LABEL_CLAIM.into(),
            value: label.clone(),
        },
    };
    if let Some(held) = t
        .shares_through(link.id)?
        .into_iter()
        .find(|sh| sh.is_open() && sh.audience == audience)
    {
        return Ok((held.shown(), false));
    }
    if link
        .max_redemptions
        .is_some_and(|max| link.redemptions >= max)
    {
        return Err(gone("the link was used up"));
    }
    let used = Share {
        redemptions: link.redemptions + 1,
        tstamp: t.next_tstamp(),
        ..link.clone()
    };
    record(t, access, &used, ShareChange::Redeemed)?;
    let share = Share {
        id: t.next_oid(),
        oid: link.oid,
        name: link.name.clone(),
        security: link.security.clone(),
        audience,
        role: link.role,
        letters: link.letters,
        terms: link.terms.clone(),
        message: link.message.clone(),
        acceptance: Acceptance::NotRequired,
        sharing_mode: link.sharing_mode,
        expires: link.expires,
        state: ShareState::Accepted,
        sharer: link.sharer.clone(),
        parent: Some(link.id),
        max_redemptions: None,
        redemptions: 0,
        tstamp: t.next_tstamp(),
    };
    record(t, access, &share, ShareChange::Redeemed)?;
    Ok((share, true))
}

/// What an object's `share` rule sees as `input.share`.
#[derive(serde::Serialize)]
struct ShareShape<'a> {
    audience: &'a Audience,
    letters: Perms,
    #[serde(skip_serializing_if = "Option::is_none")]
    terms: Option<&'a str>,
    sharing_mode: SharingMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<Expiry>,
}

/// SPEC §9.2: where the object's Rego policy defines `share`, a share is made (or changed)
/// only where it is literally `true` for `input.share`, the sharer's `input.claims` and
/// `input.object`.
fn check_share_rule(access: &Access, object: &Event, shape: &ShareShape) -> Result<()> {
    let Some(policy) = object.objectpolicy.as_ref() else {
        return Ok(());
    };
    if access.is_root() {
        return Ok(());
    }
    let share = serde_json::to_value(shape).unwrap_or_default();
    let allowed = access.engine.allows_share(
        policy,
        &access.identity.claims,
        &share,
        &object.policy_view(),
        access.meter(),
    );
    if allowed {
        return Ok(());
    }
    if let Some(e) = access.budget_error() {
        return Err(e);
    }
    Err(denied(
        "the object's policy does not allow this share (its share rule is not true for it)",
    ))
}

fn record(t: &mut dyn MetaWrite, access: &Access, share: &Share, kind: ShareChange) -> Result<()> {
    record_by(t, access.identity.claims.label(), share, kind)
}

/// The label the server signs its own share-log entries with (expiry, rotation).
pub const SERVER_LABEL: &str = "vellum";

/// Appends a share-log entry made by `by`, and, in the same transaction, queues what it
/// sets off: its webhook delivery when the outbox is on.
pub fn record_by(t: &mut dyn MetaWrite, by: &str, share: &Share, kind: ShareChange) -> Result<()> {
    let entry = ShareEntry {
        share: share.id,
        tstamp: share.tstamp,
        kind,
        by: Sharer {
            label: by.to_string(),
        },
        state: share.clone(),
    };
    t.log_share(&entry)?;
    crate::tasks::queue::after_entry(t, &entry)?;
    Ok(())
}

/// One share, if the caller may see it (else 404: a stranger learns nothing).
pub fn get<S: MetaRead + ?Sized>(s: &S, access: &Access, id: ShareId) -> Result<Share> {
    let share = s.share(id)?.ok_or_else(|| no_share(id))?;
    if !may_see(s, access, &share)? {
        return Err(no_share(id));
    }
    Ok(share.shown())
}

/// A share's log, if the caller may see the share.
pub fn log<S: MetaRead + ?Sized>(s: &S, access: &Access, id: ShareId) -> Result<Vec<ShareEntry>> {
    get(s, access, id)?;
    Ok(s.share_log(id)?)
}

fn filtered(shares: Vec<Share>, state: Option<ShareState>) -> Vec<Share> {
    let mut out: Vec<Share> = shares
        .into_iter()
        .map(|sh| sh.shown())
        .filter(|sh| state.is_none_or(|st| sh.state == st))
        .collect();
    out.sort_by_key(|sh| sh.id);
    out.dedup_by_key(|sh| sh.id);
    out
}

/// The shares on `oid` the caller may see (its sharers, recipients, or an owner: all), for
/// /show.
pub fn visible_on<S: MetaRead + ?Sized>(s: &S, access: &Access, oid: Oid) -> Result<Vec<Share>> {
    let mut out = Vec::new();
    for sh in s.shares_on(&[oid])? {
        if may_see(s, access, &sh)? {
            out.push(sh.shown());
        }
    }
    Ok(out)
}

/// Shares whose audience the caller is in (`GET /shares/incoming`).
pub fn incoming<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    state: Option<ShareState>,
) -> Result<Vec<Share>> {
    let all = s.shares_to(&crate::model::share::audience_pairs(
        &access.identity.claims,
    ))?;
    Ok(filtered(all, state))
}

/// Shares the caller made (`GET /shares/outgoing`).
pub fn outgoing<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    state: Option<ShareState>,
) -> Result<Vec<Share>> {
    Ok(filtered(
        s.shares_by(access.identity.claims.label())?,
        state,
    ))
}

/// Every share on `oid` and on the folders above it (`GET /shares?oid=`), for a caller
/// holding U on it.
pub fn on_object<S: MetaRead + ?Sized>(s: &S, access: &Access, oid: Oid) -> Result<Vec<Share>> {
    let object = readable(s, access, oid)?;
    if !access.may(s, &object, Letter::U, &object) {
        return Err(denied(format!("listing the shares on {oid} needs U on it")));
    }
    let mut oids: Vec<Oid> = object
        .fulldir
        .split('/')
        .filter_map(|seg| seg.parse().ok())
        .collect();
    oids.push(oid);
    Ok(filtered(s.shares_on(&oids)?, None))
}

/// The recipient accepts a pending share.
pub fn accept(t: &mut dyn MetaWrite, access: &Access, id: ShareId) -> Result<Share> {
    respond(t, access, id, ShareState::Accepted, ShareChange::Accepted)
}

/// The recipient declines a pending share.
pub fn decline(t: &mut dyn MetaWrite, access: &Access, id: ShareId) -> Result<Share> {
    respond(t, access, id, ShareState::Declined, ShareChange::Declined)
}

fn respond(
    t: &mut dyn MetaWrite,
    access: &Access,
    id: ShareId,
    to: ShareState,
    kind: ShareChange,
) -> Result<Share> {
    let share = t.share(id)?.ok_or_else(|| no_share(id))?;
    if !is_recipient(access, &share) {
        return Err(if may_see(&*t, access, &share)? {
            denied("only a recipient may accept or decline a share")
        } else {
            no_share(id)
        });
    }
    match share.state_now() {
        ShareState::Pending => {}
        // Accepting twice, or declining twice, changes nothing.
        s if s == to => return Ok(share.shown()),
        _ => return Err(closed(&share)),
    }
    let changed = Share {
        state: to,
        tstamp: t.next_tstamp(),
        ..share
    };
    record(t, access, &changed, kind)?;
    Ok(changed)
}

/// `PATCH /shares/{id}`'s body: what to change, and the `tstamp` last seen.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareChangeRequest {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub letters: Option<Perms>,
    #[serde(default)]
    pub expires: Option<Expiry>,
    #[serde(default)]
    pub terms: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub tstamp: Option<Tstamp>,
}

fn check_precondition(share: &Share, seen: Option<Tstamp>) -> Result<()> {
    match seen {
        Some(seen) if seen != share.tstamp => Err(Error::conflict(
            Code::StaleTstamp,
            format!(
                "share {} changed at {} after the tstamp {seen} given",
                share.id, share.tstamp
            ),
        )),
        _ => Ok(()),
    }
}

/// Changes a share's letters, expiry or terms (`PATCH /shares/{id}`): its sharer or an
/// owner of its object, within the same caps as a new share. Narrowing (fewer letters, an
/// earlier expiry) narrows every share made through it, in the same transaction; one left
/// with no letter is revoked. Changed terms ask for acceptance again.
pub fn change(
    t: &mut dyn MetaWrite,
    access: &Access,
    id: ShareId,
    req: ShareChangeRequest,
) -> Result<Share> {
    let share = t.share(id)?.ok_or_else(|| no_share(id))?;
    if !may_see(&*t, access, &share)? {
        return Err(no_share(id));
    }
    let object = t.current(share.oid)?.map(|c| c.event);
    let owner = access.is_root() || object.as_ref().is_some_and(|o| owns(access, o));
    if !is_sharer(access, &share) && !owner {
        return Err(denied(
            "only the sharer or an owner of the object may change a share",
        ));
    }
    check_precondition(&share, req.tstamp)?;
    if !share.is_open() {
        return Err(closed(&share));
    }
    let (role, letters) = match (req.role, req.letters) {
        (Some(_), Some(_)) => return Err(bad("give either role or letters, not both")),
        (Some(r), None) => (Some(r), r.letters()),
        (None, Some(l)) => (None, l),
        (None, None) => (share.role, share.letters),
    };
    if letters.is_empty() {
        return Err(bad(
            "a share must grant at least one letter; revoke it instead",
        ));
    }
    for (name, text) in [("terms", &req.terms), ("message", &req.message)] {
        if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(bad(format!("{name} is over {MAX_TEXT_BYTES} bytes")));
        }
    }
    if req.expires.is_some_and(Expiry::has_passed) {
        return Err(bad("expires is in the past"));
    }
    if req.role.is_none()
        && req.letters.is_none()
        && req.expires.is_none()
        && req.terms.is_none()
        && req.message.is_none()
    {
        return Err(bad(
            "nothing to change: give role or letters, expires, terms or message",
        ));
    }
    let expires = req.expires.or(share.expires);
    // The caps: what the share is made through, or what its maker holds.
    match share.parent.map(|p| t.share(p)).transpose()?.flatten() {
        Some(parent) => {
            let later = match (expires, parent.expires) {
                (Some(e), Some(pe)) => e > pe,
                (None, Some(_)) => true,
                _ => false,
            };
            if !parent.letters.contains(letters) || later {
                return Err(denied(
                    "a share made through a share may not grant more letters or last longer than it",
                ));
            }
        }
        None => {
            let held = match &object {
                Some(o) => access.letters(&*t, o),
                None => Perms::NONE,
            };
            if !held.contains(letters) && !access.is_root() {
                return Err(denied(format!(
                    "a share may grant only letters you hold: you hold {held}, asked for {letters}"
                )));
            }
        }
    }
    if let Some(o) = &object {
        let terms = req.terms.as_deref().or(share.terms.as_deref());
        check_share_rule(
            access,
            o,
            &ShareShape {
                audience: &share.audience,
                letters,
                terms,
                sharing_mode: share.sharing_mode,
                expires,
            },
        )?;
    }
    let terms_changed = req.terms.is_some() && req.terms != share.terms;
    let (acceptance, state) = if terms_changed {
        (Acceptance::Required, ShareState::Pending)
    } else {
        (share.acceptance, share.state)
    };
    let narrowed = !letters.contains(share.letters)
        || matches!((expires, share.expires), (Some(e), Some(old)) if e < old)
        || (expires.is_some() && share.expires.is_none());
    let stops_reading = share.granted_reading() && !reads(letters);
    let changed = Share {
        role,
        letters,
        expires,
        terms: req.terms.or(share.terms.clone()),
        message: req.message.or(share.message.clone()),
        acceptance,
        state,
        tstamp: t.next_tstamp(),
        ..share
    };
    record(t, access, &changed, ShareChange::Changed)?;
    if stops_reading {
        crate::tasks::queue::rotation(t, &changed)?;
    }
    if narrowed {
        narrow_through(t, access, &changed)?;
    }
    Ok(changed)
}

/// Whether `letters` let their holder read content (R for props, X for streams).
fn reads(letters: Perms) -> bool {
    letters.contains(Perms::R) || letters.contains(Perms::X)
}

/// Narrows every open share made through `parent` (and through those) to its letters and
/// expiry; one left with no letter is revoked.
fn narrow_through(t: &mut dyn MetaWrite, access: &Access, parent: &Share) -> Result<()> {
    let mut todo = vec![(parent.id, parent.letters, parent.expires)];
    while let Some((id, letters, expires)) = todo.pop() {
        for child in t.shares_through(id)? {
            if !child.is_open() {
                continue;
            }
            let keep = Perms::from_bits(child.letters.bits() & letters.bits());
            let until = match (child.expires, expires) {
                (Some(c), Some(p)) => Some(c.min(p)),
                (c, p) => c.or(p),
            };
            if keep == child.letters && until == child.expires {
                continue;
            }
            if keep.is_empty() {
                let revoked = close(t, access, child)?;
                // Its own children go with it.
                todo.push((revoked.id, Perms::NONE, until));
                continue;
            }
            let stops_reading = child.granted_reading() && !reads(keep);
            let narrowed = Share {
                letters: keep,
                role: if keep == child.letters {
                    child.role
                } else {
                    None
                },
                expires: until,
                tstamp: t.next_tstamp(),
                ..child
            };
            record(t, access, &narrowed, ShareChange::Changed)?;
            if stops_reading {
                crate::tasks::queue::rotation(t, &narrowed)?;
            }
            todo.push((narrowed.id, keep, until));
        }
    }
    Ok(())
}

/// Revokes a share and every share made through it (`DELETE /shares/{id}`): its sharer, an
/// owner of its object, or a recipient leaving. `precondition`: the share's `tstamp` the
/// caller last saw (409 when it changed since).
pub fn revoke(
    t: &mut dyn MetaWrite,
    access: &Access,
    id: ShareId,
    precondition: Option<Tstamp>,
) -> Result<Share> {
    let share = t.share(id)?.ok_or_else(|| no_share(id))?;
    if !may_see(&*t, access, &share)? {
        return Err(no_share(id));
    }
    check_precondition(&share, precondition)?;
    if !share.is_open() {
        return Err(closed(&share));
    }
    let revoked = close(t, access, share)?;
    // Everything made through it, however deep, goes with it.
    let mut todo = vec![revoked.id];
    while let Some(parent) = todo.pop() {
        for child in t.shares_through(parent)? {
            todo.push(child.id);
            if child.is_open() {
                close(t, access, child)?;
            }
        }
    }
    Ok(revoked)
}

fn close(t: &mut dyn MetaWrite, access: &Access, share: Share) -> Result<Share> {
    close_by(
        t,
        access.identity.claims.label(),
        share,
        ShareState::Revoked,
    )
}

/// Closes a share as revoked or expired; if it let anyone read, every file version it
/// reached is queued for a fresh data key (SPEC §9.5), in the same transaction.
fn close_by(t: &mut dyn MetaWrite, by: &str, share: Share, to: ShareState) -> Result<Share> {
    let granted = share.granted_reading();
    let closed = Share {
        state: to,
        tstamp: t.next_tstamp(),
        ..share
    };
    let kind = if to == ShareState::Expired {
        ShareChange::Expired
    } else {
        ShareChange::Revoked
    };
    record_by(t, by, &closed, kind)?;
    if granted {
        crate::tasks::queue::rotation(t, &closed)?;
    }
    Ok(closed)
}

/// Records that `share`'s expiry has passed (the sweep, SPEC §9.6): `expired` in its log,
/// every open share made through it closed with it, and their rotation queued. Requests
/// refused it from the moment it expired; this makes the log and the keys say so too.
pub fn expire(t: &mut dyn MetaWrite, share: Share) -> Result<Share> {
    let expired = close_by(t, SERVER_LABEL, share, ShareState::Expired)?;
    let mut todo = vec![expired.id];
    while let Some(parent) = todo.pop() {
        for child in t.shares_through(parent)? {
            todo.push(child.id);
            if child.is_open_as_stored() {
                close_by(t, SERVER_LABEL, child, ShareState::Expired)?;
            }
        }
    }
    Ok(expired)
}
