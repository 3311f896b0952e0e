//! Endpoint handlers: thin adapters between HTTP and the service layer.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};

use super::body::{self, Body};
use super::error::response as error_response;
use super::request::header_str;
use super::router::{self, Endpoint, ListQuery, Requirement};
use super::AppState;
use super::RequestBody;
use crate::access::Access;
use crate::crypto::MasterKeys;
use crate::error::{Code, Error, Kind, Result};
use crate::identity::Credentials;
use crate::model::ObjPath;
use crate::read;

/// Routes and runs one request; returns the route's name (for logs) and the response.
pub async fn dispatch(
    state: &Arc<AppState>,
    req: Request<RequestBody>,
    peer: SocketAddr,
) -> (&'static str, Response<Body>) {
    let path = req.uri().path().to_string();
    let path = match &state.config.client_prefix {
        Some(p) if path.starts_with(&format!("{p}/")) || path == *p => path[p.len()..].to_string(),
        _ => path,
    };
    // A person's browser asking for a /show page gets its errors as a page too; API
    // clients (no text/html in Accept) keep the JSON error.
    let html_errors = (path.starts_with("/show/") || path == "/show")
        && header_str(req.headers(), "accept").is_some_and(|a| a.contains("text/html"));
    let base = mount_base(state, req.uri().path());
    let fail = |e: &Error| {
        if html_errors {
            super::error::html_response(e, &base)
        } else {
            error_response(e)
        }
    };
    let ep = match router::route(req.method(), &path, req.uri().query()) {
        Ok(ep) => ep,
        Err(e) => return ("unrouted", fail(&e)),
    };
    let name = ep.name();
    let letter = ep.letter();
    let target = ep.target();
    let mut who = None;
    let resp = match run(state, ep, req, peer, &mut who).await {
        Ok(r) => {
            if let Some(l) = letter {
                tracing::info!(
                    target: "audit",
                    user = who.as_deref().unwrap_or("-"),
                    route = name,
                    letter = %l,
                    object = %target,
                    "allowed"
                );
            }
            r
        }
        Err(e) => {
            if matches!(
                e.kind,
                Kind::Forbidden | Kind::NotFound | Kind::Unauthorized
            ) {
                tracing::info!(
                    target: "audit",
                    user = who.as_deref().unwrap_or("-"),
                    route = name,
                    letter = %letter.unwrap_or('-'),
                    object = %target,
                    index = e.index,
                    code = e.code.as_str(),
                    "denied"
                );
            }
            fail(&e)
        }
    };
    (name, resp)
}

/// The mount prefix a request came in by ("" or `CLIENT_PREFIX`): links in HTML pages
/// keep it.
fn mount_base(state: &AppState, path: &str) -> String {
    match &state.config.client_prefix {
        Some(p) if path.starts_with(&format!("{p}/")) => p.clone(),
        _ => String::new(),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The token of an `Authorization: Bearer` header. The scheme is matched without regard to
/// case and may be followed by any run of spaces (RFC 9110 §11.1); other schemes are not
/// ours and are ignored.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = header_str(headers, "authorization")?;
    let (scheme, token) = v.split_once([' ', '\t']).unwrap_or((v, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches([' ', '\t']))
}

fn authenticate(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<Access> {
    let creds = Credentials {
        userpolicy_header: header_str(headers, "userpolicy"),
        userpolicy_cookie: userpolicy_cookie(headers),
        bearer: bearer_token(headers),
        user_dn: header_str(headers, "user_dn").or_else(|| header_str(headers, "user-dn")),
        peer: peer.ip(),
    };
    let identity = state.auth.authenticate(&creds).map_err(Error::from)?;
    Ok(Access::new(
        state.policy.clone(),
        identity,
        state.config.limits.request_budget(),
    ))
}

/// The master keys, for a caller whose responses show data keys (the `blobkey` privilege).
pub(super) fn keys_for(state: &AppState, access: &Access) -> Option<Arc<MasterKeys>> {
    access.sees_blob_keys().then(|| state.blobs.keys_arc())
}

/// The `userpolicy` cookie's token, quotes and spaces removed; `None` when absent or empty
/// (a cleared cookie is "logged out").
fn userpolicy_cookie(headers: &HeaderMap) -> Option<&str> {
    let v = cookie(headers, "userpolicy")?.trim();
    Some(v).filter(|v| !v.is_empty())
}

/// A browser sends the cookie with any request to this server, including one a page on
/// another site makes it send (cross-site request forgery). Browsers say where such a request
/// comes from: every POST carries `Origin` (and `Sec-Fetch-Site`), which scripts cannot
/// forge. A cookie-authenticated write whose `Origin` is another site, or that a browser
/// marks `Sec-Fetch-Site: cross-site`, is refused. One without either comes from a client
/// that is not a browser (curl, the gm-data clients, the tutorial's raw requests, which send
/// the cookie), and no other site can make one of those send it. Writes that carry the token
/// in the `userpolicy` header or as Bearer are unaffected.
fn check_cookie_write(headers: &HeaderMap) -> Result<()> {
    // The first credential present decides (identity::Authenticator::authenticate).
    if header_str(headers, "userpolicy").is_some() || userpolicy_cookie(headers).is_none() {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(Error::forbidden(
            Code::CrossOriginCookieWrite,
            format!(
                "{why}: a write authenticated by the userpolicy cookie must come from a page of \
                 this server (same Origin); other clients send the token in the userpolicy \
                 header or as Authorization: Bearer"
            ),
        ))
    };
    if header_str(headers, "sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return refuse("the browser marked the request cross-site");
    }
    let Some(origin) = header_str(headers, "origin") else {
        // Not a browser: nothing another site could have made it send.
        return Ok(());
    };
    let Some(host) = header_str(headers, "host") else {
        return refuse("the request has no Host header");
    };
    if same_origin(origin, host) {
        Ok(())
    } else {
        refuse(&format!("Origin {origin:?} is not this server ({host})"))
    }
}

/// Whether `Origin: scheme://host[:port]` names the server the request reached as `Host`
/// (ports compared with the scheme's default filled in). The scheme itself is not checked:
/// behind a TLS proxy the server cannot tell it.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" and other opaque origins
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let split = |a: &str| -> (String, String) {
        // An IPv6 literal is bracketed: the port follows the closing bracket.
        let (name, port) = match a.rfind(':') {
            Some(i) if !a[i..].contains(']') => (&a[..i], &a[i + 1..]),
            _ => (a, default_port),
        };
        (name.to_ascii_lowercase(), port.to_string())
    };
    !authority.contains(['/', '@']) && split(authority) == split(host)
}

async fn run(
    state: &Arc<AppState>,
    ep: Endpoint,
    req: Request<RequestBody>,
    peer: SocketAddr,
    who: &mut Option<String>,
) -> Result<Response<Body>> {
    let base = mount_base(state, req.uri().path());
    let access = match ep.requirement() {
        Requirement::Nothing => None,
        Requirement::Identity => {
            let a = authenticate(state, req.headers(), peer)?;
            *who = Some(a.identity.claims.label().to_string());
            Some(a)
        }
        Requirement::Writer => {
            let a = authenticate(state, req.headers(), peer)?;
            check_cookie_write(req.headers())?;
            *who = Some(a.identity.claims.label().to_string());
            if a.is_readonly() {
                return Err(Error::forbidden(
                    Code::Readonly,
                    "a readonly identity may not write",
                ));
            }
            Some(a)
        }
    };
    // A request whose client goes away is dropped here; evaluations still running for it
    // then stop. Not for the streamed responses, which outlive this function (a listing
    // watches its own body instead; a feed's steps have budgets of their own).
    let _abandon = match (&ep, &access) {
        (Endpoint::List(..) | Endpoint::Notifications(_), _) | (_, None) => None,
        (_, Some(a)) => Some(crate::policy::budget::CancelOnDrop(a.budget.clone())),
    };
    match (ep, access) {
        (Endpoint::Healthz, _) => healthz(state).await,
        (Endpoint::Config, _) => Ok(body::json(StatusCode::OK, &state.public_config())),
        (Endpoint::Metrics, _) => {
            // The queue's gauges come from the store; if it cannot answer, the rest of the
            // metrics still do.
            let queue = match state.store.read(|s| s.queue_stats()).await {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the task queue for /metrics");
                    Default::default()
                }
            };
            let text = state.metrics.render(
                state.policy.stats(),
                crate::metrics::Held {
                    tokens: state.auth.cached_tokens(),
                    feeds: state.feeds.open_feeds(),
                    queue,
                    task_run_failures: state
                        .tasks
                        .run_failures
                        .load(std::sync::atomic::Ordering::Relaxed),
                    tasks_failed: state
                        .tasks
                        .failed
                        .load(std::sync::atomic::Ordering::Relaxed),
                },
            );
            let mut resp = Response::new(body::full(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        (Endpoint::Notifications(since), Some(a)) => {
            super::notify::notifications(state, a, since, req.headers()).await
        }
        (Endpoint::SelfClaims, Some(a)) => Ok(body::json(StatusCode::OK, a.identity.claims.raw())),
        (Endpoint::Write, Some(a)) => super::upload::write_txn(state, a, req).await,
        (Endpoint::Props(p), Some(a)) => {
            let k = keys_for(state, &a);
            let e = state
                .store
                .read(move |s| read::props(s, &a, k.as_deref(), &p))
                .await?;
            Ok(body::json(StatusCode::OK, &e))
        }
        (Endpoint::History(p), Some(a)) => {
            let k = keys_for(state, &a);
            let v = state
                .store
                .read(move |s| read::history(s, &a, k.as_deref(), &p))
                .await?;
            Ok(body::json(StatusCode::OK, &v))
        }
        (Endpoint::Derived(oid), Some(a)) => {
            let k = keys_for(state, &a);
            let v = state
                .store
                .read(move |s| read::derived(s, &a, k.as_deref(), oid))
                .await?;
            Ok(body::json(StatusCode::OK, &v))
        }
        (Endpoint::List(p, q), Some(a)) => list(state, a, p, q).await,
        (Endpoint::Stream(p, t), Some(a)) => super::stream::stream(state, a, p, t, &req).await,
        (Endpoint::Show(p, q), Some(a)) => show(state, a, p, q.after, &base).await,
        (Endpoint::Shares(r), Some(a)) => super::shares::handle(state, a, r, req).await,
        (Endpoint::Access(p, q), Some(a)) => super::shares::explain(state, a, p, q).await,
        (Endpoint::Tasks(r), Some(a)) => super::shares::tasks(state, a, r).await,
        (Endpoint::ShowShares, Some(a)) => {
            let label = a.identity.claims.label().to_string();
            let (incoming, outgoing) = state
                .store
                .read(move |s| -> Result<_> {
                    if a.identity.kind == crate::identity::IdentityKind::Anonymous {
                        return Ok((Vec::new(), Vec::new()));
                    }
                    Ok((
                        crate::share::incoming(s, &a, None)?,
                        crate::share::outgoing(s, &a, None)?,
                    ))
                })
                .await?;
            let html = crate::show::render_shares(&label, &incoming, &outgoing, &base);
            Ok(body::html(StatusCode::OK, html))
        }
        (_, None) => Err(Error::internal(Code::Route, "route without identity")),
    }
}

/// GET /show: the HTML page (crate::show), with a text preview read from the blob.
async fn show(
    state: &Arc<AppState>,
    access: Access,
    path: ObjPath,
    after: Option<crate::model::Oid>,
    base: &str,
) -> Result<Response<Body>> {
    use crate::model::Perms;
    use crate::show::{self, Preview};
    let a = access.clone();
    let page = state
        .store
        .read(move |s| show::gather(s, &a, &path, after))
        .await?;
    let e = &page.event;
    let kind = (e.isfile && page.letters.contains(Perms::X))
        .then(|| show::preview_kind(e))
        .flatten();
    let preview = match kind {
        Some(false) => Preview::Image,
        Some(true) => {
            let rname = e.rname_str().map(str::to_string);
            let row = match rname {
                Some(r) => state.store.read(move |s| s.blob(&r)).await?,
                None => None,
            };
            match row {
                Some(row) => {
                    use futures_util::StreamExt;
                    let reader = super::stream::open_blob(state, &row).await?;
                    let size = reader.size().min(show::PREVIEW_BYTES);
                    let mut pieces = Box::pin(reader.read_range(0..size));
                    let mut text = Vec::new();
                    while let Some(p) = pieces.next().await {
                        text.extend_from_slice(&p?);
                    }
                    Preview::Text(String::from_utf8_lossy(&text).into_owned())
                }
                None => Preview::None,
            }
        }
        None => Preview::None,
    };
    Ok(body::html(
        StatusCode::OK,
        show::render(&page, &preview, base),
    ))
}

async fn healthz(state: &Arc<AppState>) -> Result<Response<Body>> {
    state
        .store
        .read(|s| s.current(crate::model::Oid::ROOT).map(|_| ()))
        .await
        .map_err(Error::from)?;
    Ok(body::json(
        StatusCode::OK,
        &serde_json::json!({"status": "ok"}),
    ))
}

/// Rows fetched from the store per step of a listing.
const LIST_SCAN: usize = 1000;
/// Bytes buffered before a chunk is sent.
const LIST_CHUNK: usize = 64 << 10;

/// GET /list: streamed as a JSON array, one event per line, so the first bytes leave
/// before the last child has been read.
///
/// Each page is read in its own short snapshot on a blocking thread, and sent after the
/// snapshot ends: a slow client holds neither a read transaction (which would keep SQLite
/// from checkpointing the WAL past it) nor a blocking thread. Every page checks again that
/// the caller may list the folder, so a revocation stops a listing under way. A long
/// listing is therefore not one snapshot: children created or removed meanwhile may or
/// may not appear, but none appears twice (pages follow the oid order).
async fn list(
    state: &Arc<AppState>,
    access: Access,
    path: ObjPath,
    q: ListQuery,
) -> Result<Response<Body>> {
    let pool = state.store.clone();
    let keys = keys_for(state, &access);
    let dir = {
        let (pool, access) = (pool.clone(), access.clone());
        tokio::task::spawn_blocking(move || {
            pool.read_blocking(|s| read::listable(s, &access, &path).map(|d| d.event.oid))
        })
        .await
        .map_err(|_| Error::internal(Code::List, "listing task ended early"))??
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(8);
    // When the client goes away (the body is dropped), evaluations for it stop mid-page.
    let abandon = crate::policy::budget::CancelOnDrop(access.budget.clone());
    tokio::spawn(async move {
        let mut buf: Vec<u8> = b"[".to_vec();
        let mut first = true;
        let mut remaining = q.limit.unwrap_or(usize::MAX);
        let mut after = q.after;
        while remaining > 0 {
            let page = {
                let (pool, access, keys) = (pool.clone(), access.clone(), keys.clone());
                tokio::task::spawn_blocking(move || {
                    pool.read_blocking(|s| {
                        read::listable(s, &access, &ObjPath::oid(dir))?;
                        read::list_page(s, &access, keys.as_deref(), dir, after, LIST_SCAN)
                    })
                })
                .await
            };
            let (events, last) = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "listing ended mid-stream");
                    let _ = tx.send(Err(std::io::Error::other("listing failed"))).await;
                    return;
                }
                Err(_) => {
                    let _ = tx.send(Err(std::io::Error::other("listing failed"))).await;
                    return;
                }
            };
            for e in events.into_iter().take(remaining) {
                buf.extend_from_slice(if first { b"\n" } else { b",\n" });
                first = false;
                if let Err(e) = serde_json::to_writer(&mut buf, &e) {
                    tracing::error!(error = %e, "encoding a listed event failed");
                    let _ = tx.send(Err(std::io::Error::other("listing failed"))).await;
                    return;
                }
                remaining -= 1;
                if buf.len() >= LIST_CHUNK {
                    let chunk = Bytes::from(std::mem::take(&mut buf));
                    if tx.send(Ok(chunk)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
            match last {
                Some(l) => after = Some(l),
                None => break,
            }
        }
        buf.extend_from_slice(b"\n]\n");
        let _ = tx.send(Ok(Bytes::from(buf))).await;
    });
    let mut resp = Response::new(body::channel_with(rx, abandon));
    body::json_headers(resp.headers_mut());
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_read_in_any_case_and_spacing_and_other_schemes_are_not_ours() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            bearer_token(&h).map(str::to_string)
        };
        for v in [
            "Bearer t",
            "BEARER t",
            "bearer   t",
            "bEaReR\tt ",
            "Bearer \t t",
        ] {
            assert_eq!(with(v).as_deref(), Some("t"), "{v:?}");
        }
        assert_eq!(with("Bearer").as_deref(), Some(""));
        assert_eq!(with("Basic dTpw"), None);
        assert_eq!(with("Bearerx t"), None);
    }

    #[test]
    fn same_origin_compares_host_and_port_with_the_schemes_default() {
        for (origin, host) in [
            ("http://127.0.0.1:8181", "127.0.0.1:8181"),
            ("https://Data.Example", "data.example"),
            ("https://data.example", "data.example:443"),
            ("http://data.example:80", "data.example"),
            ("http://[::1]:8181", "[::1]:8181"),
            ("https://[::1]", "[::1]"),
        ] {
            assert!(same_origin(origin, host), "{origin} {host}");
        }
        for (origin, host) in [
            ("null", "data.example"),
            ("http://evil.example", "data.example"),
            ("http://data.example:8080", "data.example"),
            ("https://data.example", "data.example:80"),
            ("http://data.example.evil.example", "data.example"),
            ("http://user@data.example", "data.example"),
            ("ftp://data.example", "data.example"),
            ("http://[::1]:8181", "[::1]:8182"),
        ] {
            assert!(!same_origin(origin, host), "{origin} {host}");
        }
    }
}
