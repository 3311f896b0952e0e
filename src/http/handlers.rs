//! Endpoint handlers: thin adapters between HTTP and the service layer.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, Body};
use super::error::response as error_response;
use super::router::{self, Endpoint, ListQuery, Requirement};
use crate::access::Access;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::identity::Credentials;
use crate::model::ObjPath;
use crate::read;
use crate::write::{self, Planner};

/// Routes and runs one request; returns the route's name (for logs) and the response.
pub async fn dispatch(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (&'static str, Response<Body>) {
    let path = req.uri().path().to_string();
    let path = match &state.config.client_prefix {
        Some(p) if path.starts_with(&format!("{p}/")) || path == *p => path[p.len()..].to_string(),
        _ => path,
    };
    let ep = match router::route(req.method(), &path, req.uri().query()) {
        Ok(ep) => ep,
        Err(e) => return ("unrouted", error_response(&e)),
    };
    let name = ep.name();
    let resp = match run(state, ep, req, peer).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    (name, resp)
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

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn authenticate(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<Access> {
    let bearer = header_str(headers, "authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(str::trim)
    });
    let creds = Credentials {
        userpolicy_header: header_str(headers, "userpolicy"),
        userpolicy_cookie: cookie(headers, "userpolicy").filter(|s| !s.is_empty()),
        bearer,
        user_dn: header_str(headers, "user_dn").or_else(|| header_str(headers, "user-dn")),
        peer: peer.ip(),
    };
    let identity = state.auth.authenticate(&creds).map_err(Error::from)?;
    Ok(Access::new(state.policy.clone(), identity))
}

async fn run(
    state: &Arc<AppState>,
    ep: Endpoint,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>> {
    let access = match ep.requirement() {
        Requirement::Nothing => None,
        Requirement::Identity => Some(authenticate(state, req.headers(), peer)?),
        Requirement::Writer => {
            let a = authenticate(state, req.headers(), peer)?;
            if a.is_readonly() {
                return Err(Error::forbidden(
                    "readonly",
                    "a readonly identity may not write",
                ));
            }
            Some(a)
        }
    };
    match (ep, access) {
        (Endpoint::Healthz, _) => healthz(state).await,
        (Endpoint::Config, _) => Ok(body::json(StatusCode::OK, &state.public_config())),
        (Endpoint::SelfClaims, Some(a)) => Ok(body::json(StatusCode::OK, a.identity.claims.raw())),
        (Endpoint::Write, Some(a)) => write_txn(state, a, req).await,
        (Endpoint::Props(p), Some(a)) => {
            let e = state.store.read(move |s| read::props(s, &a, &p)).await?;
            Ok(body::json(StatusCode::OK, &e))
        }
        (Endpoint::History(p), Some(a)) => {
            let v = state.store.read(move |s| read::history(s, &a, &p)).await?;
            Ok(body::json(StatusCode::OK, &v))
        }
        (Endpoint::Derived(oid), Some(a)) => {
            let v = state.store.read(move |s| read::derived(s, &a, oid)).await?;
            Ok(body::json(StatusCode::OK, &v))
        }
        (Endpoint::List(p, q), Some(a)) => list(state, a, p, q).await,
        (Endpoint::Stream(_), Some(_)) | (Endpoint::Show(_), Some(_)) => {
            Err(Error::not_implemented(
                "blobs_not_yet",
                "file contents (/stream, /show) arrive with the blob store",
            ))
        }
        (_, None) => Err(Error::internal("route", "route without identity")),
    }
}

async fn healthz(state: &Arc<AppState>) -> Result<Response<Body>> {
    state
        .store
        .read(|s| {
            use crate::store::MetaRead;
            s.current(crate::model::Oid::ROOT).map(|_| ())
        })
        .await
        .map_err(Error::from)?;
    Ok(body::json(
        StatusCode::OK,
        &serde_json::json!({"status": "ok"}),
    ))
}

/// Reads the request body up to `limit` bytes.
async fn collect_limited(body: Incoming, limit: usize) -> Result<Bytes> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::too_large(
            "metadata_too_large",
            format!("the metadata is over the {limit}-byte limit"),
        )),
        Err(e) => Err(Error::bad_request(
            "bad_body",
            format!("reading the body: {e}"),
        )),
    }
}

fn multer_error(e: multer::Error) -> Error {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            Error::too_large("metadata_too_large", e.to_string())
        }
        other => Error::bad_request("bad_multipart", format!("multipart body: {other}")),
    }
}

/// The metadata part, and how many file parts followed it.
struct WriteBody {
    metadata: Bytes,
    file_parts: usize,
}

async fn read_write_body(state: &AppState, req: Request<Incoming>) -> Result<WriteBody> {
    let max = state.config.limits.max_metadata_bytes;
    let ctype = header_str(req.headers(), "content-type")
        .unwrap_or("")
        .to_string();
    if ctype.starts_with("application/json") {
        let metadata = collect_limited(req.into_body(), max).await?;
        return Ok(WriteBody {
            metadata,
            file_parts: 0,
        });
    }
    let boundary = multer::parse_boundary(&ctype).map_err(|_| {
        Error::bad_request(
            "bad_content_type",
            "POST /write takes multipart/form-data (metadata first, then file parts) or application/json",
        )
    })?;
    let stream = req.into_body().into_data_stream();
    let mut mp = multer::Multipart::new(stream, boundary);
    // SPEC §5: the first part is the metadata whatever its name.
    let mut first = mp
        .next_field()
        .await
        .map_err(multer_error)?
        .ok_or_else(|| Error::bad_request("empty_metadata", "the multipart body has no parts"))?;
    let mut metadata = Vec::new();
    while let Some(chunk) = first.chunk().await.map_err(multer_error)? {
        if metadata.len() + chunk.len() > max {
            return Err(Error::too_large(
                "metadata_too_large",
                format!("the metadata part is over the {max}-byte limit"),
            ));
        }
        metadata.extend_from_slice(&chunk);
    }
    drop(first);
    let mut file_parts = 0;
    while let Some(mut f) = mp.next_field().await.map_err(multer_error)? {
        file_parts += 1;
        // No blob store yet: drain the part so the count rule can be applied.
        while f.chunk().await.map_err(multer_error)?.is_some() {}
    }
    Ok(WriteBody {
        metadata: metadata.into(),
        file_parts,
    })
}

async fn write_txn(
    state: &Arc<AppState>,
    access: Access,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let started = std::time::Instant::now();
    let body = read_write_body(state, req).await?;
    let received = started.elapsed();
    let events = write::parse_metadata(
        &body.metadata,
        &state.policy,
        state.config.limits.max_events_per_write,
    )?;
    // SPEC §5's counting rule: as many parts as isfile events, or as many as the isfile
    // events without an rname.
    let files = events.iter().filter(|e| e.isfile == Some(true)).count();
    let new_files = events
        .iter()
        .filter(|e| e.isfile == Some(true) && e.rname.is_none())
        .count();
    if body.file_parts != files && body.file_parts != new_files {
        return Err(Error::bad_request(
            "part_count",
            format!(
                "{} file part(s) for {files} isfile event(s) ({new_files} without rname)",
                body.file_parts
            ),
        ));
    }
    if body.file_parts > 0 {
        return Err(Error::not_implemented(
            "files_not_yet",
            "file contents are not supported yet; only folders and metadata",
        ));
    }
    let n = events.len();
    let ns = state.namespace.clone();
    let who = access.identity.claims.label().to_string();
    let parsed = started.elapsed();
    let applied = state
        .store
        .write(move |ctx| Planner::new(ctx, &access, &ns).apply_all(events))
        .await?;
    let committed = started.elapsed();
    let resp = body::json(StatusCode::OK, &applied.events);
    tracing::info!(
        events = n,
        user = %who,
        receive_ms = received.as_secs_f64() * 1e3,
        parse_ms = (parsed - received).as_secs_f64() * 1e3,
        commit_ms = (committed - parsed).as_secs_f64() * 1e3,
        encode_ms = (started.elapsed() - committed).as_secs_f64() * 1e3,
        "transaction committed"
    );
    Ok(resp)
}

/// Rows fetched from the store per step of a listing.
const LIST_SCAN: usize = 1000;
/// Bytes buffered before a chunk is sent.
const LIST_CHUNK: usize = 64 << 10;

/// GET /list: streamed as a JSON array, one event per line, so the first bytes leave
/// before the last child has been read.
async fn list(
    state: &Arc<AppState>,
    access: Access,
    path: ObjPath,
    q: ListQuery,
) -> Result<Response<Body>> {
    let pool = state.store.reader();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut ready = Some(ready_tx);
        let out = pool.with_snapshot(|s| -> Result<()> {
            let dir = match read::listable(s, &access, &path) {
                Ok(d) => d,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                    }
                    return Ok(());
                }
            };
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
            let mut buf: Vec<u8> = b"[".to_vec();
            let mut first = true;
            let mut remaining = q.limit.unwrap_or(usize::MAX);
            let mut after = q.after;
            while remaining > 0 {
                let (events, last) = read::list_page(s, &access, dir.event.oid, after, LIST_SCAN)?;
                for e in events.into_iter().take(remaining) {
                    buf.extend_from_slice(if first { b"\n" } else { b",\n" });
                    first = false;
                    serde_json::to_writer(&mut buf, &e)
                        .map_err(|e| Error::internal("encode", e.to_string()))?;
                    remaining -= 1;
                    if buf.len() >= LIST_CHUNK {
                        let chunk = Bytes::from(std::mem::take(&mut buf));
                        if tx.blocking_send(Ok(chunk)).is_err() {
                            return Ok(()); // client went away
                        }
                    }
                }
                match last {
                    Some(l) => after = Some(l),
                    None => break,
                }
            }
            buf.extend_from_slice(b"\n]\n");
            let _ = tx.blocking_send(Ok(Bytes::from(buf)));
            Ok(())
        });
        if let Err(e) = out {
            tracing::error!(error = %e, "listing failed mid-stream");
            if let Some(r) = ready.take() {
                let _ = r.send(Err(e));
            } else {
                let _ = tx.blocking_send(Err(std::io::Error::other("listing failed")));
            }
        }
    });
    ready_rx
        .await
        .map_err(|_| Error::internal("list", "listing task ended early"))??;
    let mut resp = Response::new(body::channel(rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
