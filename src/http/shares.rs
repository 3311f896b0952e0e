//! The share endpoints (SPEC §9.4): JSON in and out; the rules are `crate::share`'s. Changes
//! run on the store's writer, where they are decided again against the transaction's state.

use std::sync::Arc;

use http::{Request, Response, StatusCode};

use super::body::{self, Body};
use super::request::collect_limited;
use super::router::ShareRoute;
use super::AppState;
use super::RequestBody;
use crate::access::Access;
use crate::error::{Code, Error, Result};
use crate::identity::IdentityKind;
use crate::share::{self, NewShare, ShareChangeRequest};

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
