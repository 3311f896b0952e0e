//! GET /notifications: a Server-Sent Events feed of stored events the caller may read, for
//! clients that mirror a folder. Each message's `id` is the event's tstamp, so a client that
//! reconnects with `Last-Event-ID` (or `?since=`) resumes exactly after what it saw.
//!
//! A token's feed ends when the token expires (the token is checked once, when the request
//! arrives); the client reconnects with a fresh one and resumes by `Last-Event-ID`.
//!
//! The feed reads the log itself (`events_since`), woken by a counter the write path bumps
//! after each commit: tstamps increase in commit order, so "after the last id sent" never
//! skips an event, however commits and wake-ups interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use super::body::{self, Body};
use super::request::header_str;
use super::AppState;
use crate::access::Access;
use crate::error::{Code, Error, Result};
use crate::model::Tstamp;
use crate::read;

/// A comment line this often keeps proxies from closing an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Log rows read per step.
const SCAN: usize = 500;

/// Feeds open per identity (claims label; anonymous callers share one count). A feed holds
/// a connection for as long as its client likes, so one caller may hold only
/// `MAX_FEEDS_PER_IDENTITY` of them.
#[derive(Default)]
pub struct FeedCounts(Arc<Mutex<HashMap<String, usize>>>);

/// One open feed; dropping it gives the slot back.
struct FeedSlot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    label: String,
}

impl FeedCounts {
    /// Feeds open, all identities together.
    pub fn open_feeds(&self) -> u64 {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.values().map(|n| *n as u64).sum()
    }

    fn open(&self, label: &str, max: usize) -> Result<FeedSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(label.to_string()).or_default();
        if *n >= max {
            let n = *n;
            if n == 0 {
                // Nothing open (MAX_FEEDS_PER_IDENTITY=0): keep no entry for the label.
                counts.remove(label);
            }
            return Err(Error::too_many_requests(
                Code::TooManyFeeds,
                format!(
                    "{label:?} already has {n} notification feeds open (MAX_FEEDS_PER_IDENTITY); \
                     close one first"
                ),
            ));
        }
        *n += 1;
        Ok(FeedSlot {
            counts: self.0.clone(),
            label: label.to_string(),
        })
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.label) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.label);
            }
        }
    }
}

pub async fn notifications(
    state: &Arc<AppState>,
    access: Access,
    since: Option<Tstamp>,
    headers: &HeaderMap,
) -> Result<Response<Body>> {
    let resume = match header_str(headers, "last-event-id") {
        Some(id) => Some(id.parse::<Tstamp>().map_err(|_| {
            Error::bad_request(Code::BadLastEventId, "Last-Event-ID is not a tstamp")
        })?),
        None => since,
    };
    let slot = state.feeds.open(
        access.identity.claims.label(),
        state.config.http.max_feeds_per_identity,
    )?;
    // Subscribe before reading the high-water mark: nothing committed in between is lost.
    let mut commits = state.store.commits();
    let mut shutdown = state.shutdown.subscribe();
    let mut last = match resume {
        Some(t) => t,
        None => state.store.read(|s| s.max_tstamp()).await?,
    };
    // `None` when there is no expiry, or none the monotonic clock can represent.
    let expires = access.identity.expires.and_then(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::Instant::now().checked_add(left)
    });
    let expired = move || expires.is_some_and(|at| tokio::time::Instant::now() >= at);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(16);
    let state = state.clone();
    tokio::spawn(async move {
        // Held for as long as the feed runs.
        let _slot = slot;
        let expiry = async move {
            match expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        if tx
            .send(Ok(Bytes::from_static(b"retry: 2000\n\n")))
            .await
            .is_err()
        {
            return;
        }
        loop {
            loop {
                if expired() {
                    let _ = tx
                        .send(Ok(Bytes::from_static(b": token expired\n\n")))
                        .await;
                    return;
                }
                // Each step has its own policy budget: a feed lives long.
                let a = access.renewed(state.config.limits.request_budget());
                let k = super::handlers::keys_for(&state, &a);
                let after = last;
                // One snapshot reads the step's rows; the policies are judged after it.
                let page = match state
                    .store
                    .read(move |s| read::feed_rows(s, &a, after, SCAN).map(|r| (r, a)))
                    .await
                {
                    Ok((rows, a)) => {
                        let scanned = rows.last;
                        tokio::task::spawn_blocking(move || {
                            rows.judge(&a, k.as_deref()).map(|items| (items, scanned))
                        })
                        .await
                        .unwrap_or_else(|_| {
                            Err(crate::error::Error::internal(
                                crate::error::Code::List,
                                "judging a feed step failed",
                            ))
                        })
                    }
                    Err(e) => Err(e),
                };
                let (events, scanned) = match page {
                    Ok(p) => p,
                    Err(e) if e.code == "policy_budget_exceeded" => {
                        // Nothing is skipped: the client resumes from the last id it got.
                        let _ = tx
                            .send(Ok(Bytes::from_static(b": policy budget exceeded\n\n")))
                            .await;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "notification feed failed");
                        return;
                    }
                };
                for item in events {
                    let (json, kind) = match &item {
                        read::FeedItem::Event(e) => (
                            serde_json::to_string(e),
                            e.event.action.letter().to_string(),
                        ),
                        read::FeedItem::Share(entry) => {
                            (serde_json::to_string(entry), "share".to_string())
                        }
                    };
                    let Ok(json) = json else {
                        continue;
                    };
                    let frame = format!("id: {}\nevent: {kind}\ndata: {json}\n\n", item.tstamp());
                    if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                        return;
                    }
                }
                match scanned {
                    Some(t) => last = t,
                    None => break,
                }
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
                // The client went away: give its slot back now, not at the next keep-alive.
                _ = tx.closed() => return,
                // Loops back to the check above, which ends the feed.
                _ = &mut expiry => {}
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    if tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut resp = Response::new(body::channel(rx));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
