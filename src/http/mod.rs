//! HTTP: the only layer that knows about requests and responses. It parses a request
//! into an `Endpoint`, establishes the caller's identity, calls the service layer
//! (`write`, `read`) and maps the outcome to a response.

mod body;
pub mod error;
mod handlers;
mod notify;
pub mod router;
mod stream;
mod upload;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::Instrument;

pub use body::Body;

use crate::app::AppState;

/// How long in-flight requests (an upload, a download) may take to finish after a
/// shutdown signal before their connections are dropped.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Accepts connections until `shutdown` resolves, then stops accepting, lets requests in
/// flight finish (idle keep-alive connections close at once; notification feeds end) for up
/// to [`SHUTDOWN_GRACE`], and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
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
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        conns.spawn(async move {
            let mut stop = state.shutdown.subscribe();
            let svc = {
                let state = state.clone();
                service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req, peer).await) }
                })
            };
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = conns.len();
    tracing::info!(
        connections = open,
        "shutting down: finishing requests in flight"
    );
    state.shutdown.send_replace(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "requests still running after the shutdown grace period; dropping them"
        );
        conns.shutdown().await;
    }
    Ok(())
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
