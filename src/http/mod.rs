//! HTTP: the only layer that knows about requests and responses. It parses a request
//! into an `Endpoint`, establishes the caller's identity, calls the service layer
//! (`write`, `read`) and maps the outcome to a response.

mod body;
pub mod error;
mod handlers;
mod multipart_limit;
mod notify;
mod request;
mod request_body;
pub mod router;
pub(crate) mod shares;
mod state;
mod stream;
mod upload;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

pub use body::Body;
pub use notify::FeedCounts;
pub(crate) use request_body::RequestBody;

use crate::error::{Code, Error};
pub use state::AppState;

/// How long in-flight requests (an upload, a download) may take to finish after a
/// shutdown signal before their connections are dropped.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Connections accepted beyond `MAX_CONNECTIONS` to answer GET /healthz (anything else gets
/// a 503): a liveness probe still passes while the server is full. When the reserve is
/// taken too, a new connection closes the oldest reserve one, so a crowd of idle
/// connections cannot keep a probe out.
pub const RESERVE_CONNECTIONS: usize = 16;
/// How long a reserve connection may take to send its head: probes send theirs at once.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The "server is full" warning is logged at most this often.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` resolves, then stops accepting, lets requests in
/// flight finish (idle keep-alive connections close at once; notification feeds end) for up
/// to [`SHUTDOWN_GRACE`], and returns.
///
/// At most `MAX_CONNECTIONS` are served at once; each must send a request head within
/// `HEADER_READ_TIMEOUT` (which also closes idle keep-alive connections) and keep its
/// request body moving (`BODY_IDLE_TIMEOUT`, see `request_body`).
///
/// hyper-util's [`GracefulShutdown`] watches every connection: at shutdown it tells each one
/// to finish its request in flight and close, and waits for them all. It has no deadline, so
/// the grace period is ours: when it runs out, `serve` drops `hard_stop`, which ends every
/// connection still open (as it does if `serve` itself is dropped).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let graceful = GracefulShutdown::new();
    let (hard_stop, _) = watch::channel(());
    let slots = Arc::new(Semaphore::new(state.config.http.max_connections));
    // Open reserve connections, oldest first; dropping a sender closes its connection.
    let mut reserve: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = match slots.clone().try_acquire_owned() {
            Ok(permit) => Slot::Normal(permit),
            Err(_) => {
                reserve.retain(|tx| !tx.is_closed());
                if reserve.len() >= RESERVE_CONNECTIONS {
                    reserve.pop_front();
                }
                let (tx, rx) = oneshot::channel();
                reserve.push_back(tx);
                if warned.is_none_or(|t| t.elapsed() >= FULL_WARNING_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = state.config.http.max_connections,
                        "every connection slot is taken: new connections get only /healthz"
                    );
                }
                Slot::Reserve(rx)
            }
        };
        // The watcher is made here, before the task runs, so that no connection accepted
        // before the shutdown signal can miss it.
        tokio::spawn(connection(
            state.clone(),
            stream,
            peer,
            slot,
            graceful.watcher(),
            hard_stop.subscribe(),
        ));
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: finishing requests in flight"
    );
    state.shutdown.send_replace(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = hard_stop.receiver_count(),
            "requests still running after the shutdown grace period; dropping them"
        );
    }
    drop(hard_stop);
    drop(reserve);
    Ok(())
}

/// What a connection holds: one of the `MAX_CONNECTIONS` slots (released when it ends), or
/// a place in the reserve (ended early when the accept loop closes the receiver's sender).
enum Slot {
    Normal(OwnedSemaphorePermit),
    Reserve(oneshot::Receiver<()>),
}

async fn connection(
    state: Arc<AppState>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    watcher: Watcher,
    mut hard_stop: watch::Receiver<()>,
) {
    let _counted = crate::metrics::ConnectionGauge::open(&state.metrics);
    let limits = &state.config.http;
    let reserved = matches!(slot, Slot::Reserve(_));
    let svc = {
        let state = state.clone();
        service_fn(move |req| {
            let state = state.clone();
            async move {
                Ok::<_, Infallible>(if reserved {
                    reserved_request(state, req, peer).await
                } else {
                    handle(state, req, peer).await
                })
            }
        })
    };
    let mut builder = http1::Builder::new();
    // hyper only enforces the head timeout with a timer. It starts the clock whenever it
    // waits for a head, so the same timeout closes idle keep-alive connections.
    builder.timer(TokioTimer::new());
    // Bounds the request head and the size of each read (see `HttpLimits::max_header_bytes`).
    builder.max_buf_size(limits.max_header_bytes);
    if reserved {
        builder
            .keep_alive(false)
            .header_read_timeout(limits.header_read_timeout.min(RESERVE_HEADER_TIMEOUT));
    } else {
        builder
            .keep_alive(true)
            .header_read_timeout(limits.header_read_timeout);
    }
    // At shutdown the watcher starts hyper's graceful shutdown of the connection (finish the
    // request in flight, then close) and holds `serve` until the connection has ended.
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), svc));
    // The permit is held until the task ends, the end of a graceful shutdown included.
    let (_permit, evict) = match slot {
        Slot::Normal(permit) => (Some(permit), None),
        Slot::Reserve(rx) => (None, Some(rx)),
    };
    let evicted = async move {
        match evict {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = conn => r,
        // Dropping the connection closes it.
        _ = evicted => return,
        // The grace period is over (or `serve` is gone).
        _ = hard_stop.changed() => return,
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A request on a reserve connection: /healthz is answered, anything else is told to come
/// back later on a connection of its own.
async fn reserved_request(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path();
    let healthz = path == "/healthz"
        || state
            .config
            .client_prefix
            .as_deref()
            .and_then(|p| path.strip_prefix(p))
            .is_some_and(|rest| rest == "/healthz");
    if healthz {
        return handle(state, req, peer).await;
    }
    let started = Instant::now();
    let mut resp = error::response(&Error::unavailable(
        Code::TooManyConnections,
        format!(
            "the server is serving its maximum of {} connections; try again shortly",
            state.config.http.max_connections
        ),
    ));
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    state
        .metrics
        .request("overloaded", resp.status().as_u16(), started.elapsed());
    resp
}

fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

async fn handle(state: Arc<AppState>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let rid = request_id(&req);
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %rid, %method);

    let req = req.map(|b| RequestBody::new(b, state.config.http.body_idle_timeout));
    let (route_name, mut resp) = handlers::dispatch(&state, req, peer)
        .instrument(span.clone())
        .await;

    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-request-id", v);
    }
    h.insert(
        "x-schema-version",
        HeaderValue::from(crate::model::SCHEMA_VERSION),
    );
    let took = started.elapsed();
    state
        .metrics
        .request(route_name, resp.status().as_u16(), took);
    tracing::info!(
        parent: &span,
        route = route_name,
        status = resp.status().as_u16(),
        ms = took.as_secs_f64() * 1e3,
        "served"
    );
    resp
}
