//! The share endpoints (SPEC §9.4): JSON in and out; the rules are `crate::share`'s. Changes
//! run on the store's writer, where they are decided again against the transaction's state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};

use super::body::{self, Body};
use super::request::collect_limited;
use super::router::ShareRoute;
use super::AppState;
use super::RequestBody;
use crate::access::Access;
use crate::error::Kind;
use crate::error::{Code, Error, Result};
use crate::identity::IdentityKind;
use crate::share::{self, NewShare, Redeem, ShareChangeRequest};

/// Largest `POST /shares` body: two texts of `share::MAX_TEXT_BYTES` and the rest.
const MAX_BODY_BYTES: usize = 64 << 10;

pub(super) async fn handle(
    state: &Arc<AppState>,
    access: Access,
    route: ShareRoute,
    req: Request<RequestBody>,
) -> Result<Response<Body>> {
    if access.identity.kind == IdentityKind::Anonymous {
        return Err(Error::unauthorized(
            Code::Unauthorized,
            "shares belong to identities: sign in",
        ));
    }
    let budget = state.config.limits.transaction_budget(1);
    match route {
        ShareRoute::Create => {
            let new: NewShare = json_body(req).await?;
            let writer = access.on_writer(budget);
            let created = state
                .store
                .write(move |t| share::create(t, &writer, new))
                .await?;
            Ok(body::json(StatusCode::CREATED, &created))
        }
        ShareRoute::Redeem => {
            let who = access.identity.claims.label().to_string();
            state.redeem_failures.check(&who)?;
            let req: Redeem = json_body(req).await?;
            let writer = access.on_writer(budget);
            let r = state
                .store
                .write(move |t| share::redeem(t, &writer, req))
                .await;
            match r {
                Ok((s, true)) => Ok(body::json(StatusCode::CREATED, &s)),
                Ok((s, false)) => Ok(body::json(StatusCode::OK, &s)),
                Err(e) => {
                    if matches!(e.kind, Kind::NotFound | Kind::Gone) {
                        state.redeem_failures.failed(&who);
                    }
                    Err(e)
                }
            }
        }
        ShareRoute::Change(id) => {
            let change: ShareChangeRequest = json_body(req).await?;
            let writer = access.on_writer(budget);
            let s = state
                .store
                .write(move |t| share::change(t, &writer, id, change))
                .await?;
            Ok(body::json(StatusCode::OK, &s))
        }
        ShareRoute::Accept(id) => {
            let writer = access.on_writer(budget);
            let s = state
                .store
                .write(move |t| share::accept(t, &writer, id))
                .await?;
            Ok(body::json(StatusCode::OK, &s))
        }
        ShareRoute::Decline(id) => {
            let writer = access.on_writer(budget);
            let s = state
                .store
                .write(move |t| share::decline(t, &writer, id))
                .await?;
            Ok(body::json(StatusCode::OK, &s))
        }
        ShareRoute::Revoke(id, tstamp) => {
            let writer = access.on_writer(budget);
            let s = state
                .store
                .write(move |t| share::revoke(t, &writer, id, tstamp))
                .await?;
            Ok(body::json(StatusCode::OK, &s))
        }
        ShareRoute::One(id) => {
            let s = state
                .store
                .read(move |s| share::get(s, &access, id))
                .await?;
            Ok(body::json(StatusCode::OK, &s))
        }
        ShareRoute::Log(id) => {
            let l = state
                .store
                .read(move |s| share::log(s, &access, id))
                .await?;
            Ok(body::json(StatusCode::OK, &l))
        }
        ShareRoute::Incoming(st) => {
            let l = state
                .store
                .read(move |s| share::incoming(s, &access, st))
                .await?;
            Ok(body::json(StatusCode::OK, &l))
        }
        ShareRoute::Outgoing(st) => {
            let l = state
                .store
                .read(move |s| share::outgoing(s, &access, st))
                .await?;
            Ok(body::json(StatusCode::OK, &l))
        }
        ShareRoute::OnObject(oid) => {
            let l = state
                .store
                .read(move |s| share::on_object(s, &access, oid))
                .await?;
            Ok(body::json(StatusCode::OK, &l))
        }
    }
}

/// `GET /access/{ref}` (SPEC §9.7): the caller's own access, or (with U on the object)
/// that of `?claims=` (a claims document) or `?user=` (a DN from the users file).
pub(super) async fn explain(
    state: &Arc<AppState>,
    access: Access,
    path: crate::model::ObjPath,
    q: super::router::AccessQuery,
) -> Result<Response<Body>> {
    let budget = state.config.limits.request_budget();
    let bad = |m: String| Error::bad_request(Code::BadQuery, m);
    let subject = match (&q.claims, &q.user) {
        (Some(_), Some(_)) => return Err(bad("give claims or user, not both".into())),
        (Some(c), None) => {
            let v: serde_json::Value =
                serde_json::from_str(c).map_err(|e| bad(format!("claims is not JSON: {e}")))?;
            if !v.is_object() {
                return Err(bad(
                    "claims is a JSON object: {\"label\", \"values\": {...}}".into(),
                ));
            }
            Some(crate::model::Claims::new(v))
        }
        (None, Some(dn)) => Some(state.auth.claims_for_dn(dn).ok_or_else(|| {
            bad(format!(
                "user {:?} is not in the users file",
                dn.chars().take(256).collect::<String>()
            ))
        })?),
        (None, None) => None,
    };
    let about_self = subject.is_none();
    let subject = match subject {
        Some(claims) => Access::new(
            access.engine.clone(),
            crate::identity::Identity {
                claims,
                jwthash: String::new(),
                kind: IdentityKind::Jwt,
                expires: None,
            },
            budget,
        ),
        None => access.clone(),
    };
    let e = state
        .store
        .read(move |s| crate::explain::explain(s, &access, &subject, about_self, &path, q.at))
        .await?;
    Ok(body::json(StatusCode::OK, &e))
}

/// A share request's JSON body, at most [`MAX_BODY_BYTES`].
async fn json_body<T: serde::de::DeserializeOwned>(req: Request<RequestBody>) -> Result<T> {
    let headers = req.headers().clone();
    let bytes = collect_limited(&headers, req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|e| match e.code {
            Code::MetadataTooLarge => Error::too_large(
                Code::BadShare,
                format!("a share's JSON is at most {MAX_BODY_BYTES} bytes"),
            ),
            _ => e,
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_request(Code::BadShare, format!("a share's JSON: {e}")))
}

/// Failed redemptions (an unknown secret, or a link gone) an identity may make per
/// [`REDEEM_WINDOW`] before the next attempts are refused with 429: guessing a 256-bit
/// secret is hopeless anyway; this keeps the attempts from costing the writer.
pub const REDEEM_FAILURES: u32 = 10;
pub const REDEEM_WINDOW: Duration = Duration::from_secs(60);
/// Identities tracked at once; past this, windows that ended are forgotten first, then all.
const REDEEM_TRACKED: usize = 10_000;

/// Failed redemption attempts per identity, for [`REDEEM_FAILURES`].
#[derive(Default)]
pub struct RedeemFailures {
    seen: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RedeemFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u32)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self, who: &str) -> Result<()> {
        let seen = self.lock();
        match seen.get(who) {
            Some((since, n)) if *n >= REDEEM_FAILURES && since.elapsed() < REDEEM_WINDOW => {
                Err(Error::too_many_requests(
                    Code::TooManyRedemptions,
                    format!(
                        "{REDEEM_FAILURES} failed redemptions within {} s; try again later",
                        REDEEM_WINDOW.as_secs()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, who: &str) {
        let mut seen = self.lock();
        if seen.len() >= REDEEM_TRACKED && !seen.contains_key(who) {
            seen.retain(|_, (since, _)| since.elapsed() < REDEEM_WINDOW);
            if seen.len() >= REDEEM_TRACKED {
                seen.clear();
            }
        }
        let entry = seen.entry(who.to_string()).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= REDEEM_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The task endpoints (SPEC §9.6): the caller's tasks; 401 for anonymous callers.
pub(super) async fn tasks(
    state: &Arc<AppState>,
    access: Access,
    route: super::router::TaskRoute,
) -> Result<Response<Body>> {
    use super::router::TaskRoute;
    if access.identity.kind == IdentityKind::Anonymous {
        return Err(Error::unauthorized(
            Code::Unauthorized,
            "tasks belong to identities: sign in",
        ));
    }
    match route {
        TaskRoute::List(q) => {
            let l = state
                .store
                .read(move |s| crate::tasks::list(s, &access, q))
                .await?;
            Ok(body::json(StatusCode::OK, &l))
        }
        TaskRoute::One(id) => {
            let t = state
                .store
                .read(move |s| crate::tasks::get(s, &access, id))
                .await?;
            Ok(body::json(StatusCode::OK, &t))
        }
        TaskRoute::Retry(id) => {
            let writer = access.on_writer(state.config.limits.transaction_budget(1));
            let t = state
                .store
                .write(move |t| crate::tasks::retry(t, &writer, id))
                .await?;
            Ok(body::json(StatusCode::OK, &t))
        }
    }
}
