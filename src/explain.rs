//! `GET /access` (SPEC §9.7): the letters an identity held on an object at a moment, and
//! why: what the policy of the version then current granted, and each share then live whose
//! audience the identity was in, with the chain it was made through. Every version keeps its
//! policy and every share change is logged, so any past moment can be answered.

use serde::Serialize;

use crate::access::{is_ancestor, Access};
use crate::error::{Code, Error, Result};
use crate::model::share::{Acceptance, ShareState};
use crate::model::{Event, Letter, ObjPath, Oid, Perms, Share, ShareId, Tstamp};
use crate::store::MetaRead;

/// Shares made through shares followed when explaining (as many as decisions follow).
const MAX_CHAIN: usize = 32;

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub oid: Oid,
    /// The moment asked about.
    pub at: Tstamp,
    /// The version current at that moment.
    pub tstamp: Tstamp,
    /// Every letter held: the policy's and the shares', privileges applied.
    pub letters: Perms,
    /// What the version's policy granted alone (privileges applied).
    pub policy: Perms,
    /// The shares that added letters.
    pub shares: Vec<Granted>,
}

#[derive(Debug, Serialize)]
pub struct Granted {
    pub id: ShareId,
    pub letters: Perms,
    /// The share, then the share it was made through, and so on.
    pub chain: Vec<ShareId>,
}

fn absent(path: &ObjPath) -> Error {
    Error::not_found(Code::NotFound, format!("no object at {path}"))
}

/// A share as it stood at `at`, from its log (`None` if it did not exist yet).
fn share_at<S: MetaRead + ?Sized>(s: &S, id: ShareId, at: Tstamp) -> Result<Option<Share>> {
    Ok(s.share_log(id)?
        .into_iter()
        .take_while(|e| e.tstamp <= at)
        .last()
        .map(|e| e.state))
}

/// Whether `share` (as it stood at `at`) granted at that moment.
fn granted_at(share: &Share, at: Tstamp) -> bool {
    let live = match share.state {
        ShareState::Accepted => true,
        ShareState::Pending => share.acceptance == Acceptance::NotRequired,
        _ => false,
    };
    // tstamps are nanoseconds since the epoch; expiry is in seconds.
    live && share.expires.is_none_or(|e| e.0 > at.0 / 1_000_000_000)
}

/// Explains `subject`'s letters on the object at `path` at `at` (now when `None`), for
/// `asker`: themselves, or anyone when the asker holds U on the object. An object the asker
/// cannot read, or that did not exist at `at`, is a 404.
pub fn explain<S: MetaRead + ?Sized>(
    s: &S,
    asker: &Access,
    subject: &Access,
    about_self: bool,
    path: &ObjPath,
    at: Option<Tstamp>,
) -> Result<Explanation> {
    let cur = crate::read::resolve(s, asker, path, true)?;
    if !asker.may(s, &cur.event, Letter::R, &cur.event) {
        return Err(absent(path));
    }
    if !about_self && !asker.may(s, &cur.event, Letter::U, &cur.event) {
        return Err(Error::forbidden(
            Code::PermissionDenied,
            "explaining another identity's access needs U on the object",
        ));
    }
    let at = at.unwrap_or(Tstamp::FOREVER);
    let version: Event = s
        .history(cur.event.oid)?
        .into_iter()
        .take_while(|e| e.tstamp <= at)
        .last()
        .ok_or_else(|| absent(path))?;
    let policy = subject.by_policy_only(&version, Letter::R);
    let mut oids: Vec<Oid> = version
        .fulldir
        .split('/')
        .filter_map(|seg| seg.parse().ok())
        .collect();
    oids.push(version.oid);
    let claims = &subject.identity.claims;
    let mut shares = Vec::new();
    let mut from_shares = Perms::NONE;
    for current in s.shares_on(&oids)? {
        let Some(then) = share_at(s, current.id, at)? else {
            continue;
        };
        if !granted_at(&then, at) || !then.audience.matches(claims) {
            continue;
        }
        if !(then.oid == version.oid || is_ancestor(then.oid, &version)) {
            continue;
        }
        // Every share above it must have granted then too.
        let mut chain = vec![then.id];
        let mut next = then.parent;
        let mut whole = true;
        while let Some(id) = next {
            match share_at(s, id, at)? {
                Some(p) if granted_at(&p, at) && chain.len() < MAX_CHAIN => {
                    chain.push(p.id);
                    next = p.parent;
                }
                _ => {
                    whole = false;
                    break;
                }
            }
        }
        if whole {
            from_shares |= then.letters;
            shares.push(Granted {
                id: then.id,
                letters: then.letters,
                chain,
            });
        }
    }
    let letters = if subject.is_root() {
        policy
    } else {
        subject.mask(policy | from_shares)
    };
    Ok(Explanation {
        oid: version.oid,
        at,
        tstamp: version.tstamp,
        letters,
        policy,
        shares,
    })
}
