//! The request body as handlers see it: hyper's, with a bound on how long the server waits
//! for it. Without one, a client that stops sending (or sends a byte a second) holds its
//! connection, its task and whatever the handler buffered for as long as it likes.
//!
//! The rule: while the server waits, the body must deliver [`MIN_PROGRESS`] bytes (or end)
//! within `BODY_IDLE_TIMEOUT` of waiting. Only time spent waiting counts: while a handler is
//! busy elsewhere (storing what it already got) the clock stands still, so a slow blob store
//! never makes a client look stalled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::{Code, Error};

/// Bytes a body must deliver per `BODY_IDLE_TIMEOUT` of waiting: far below any real link
/// (1 KiB in 30 s is 34 bytes/s), far above a trickle meant to hold a connection.
pub const MIN_PROGRESS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the request body sent less than {MIN_PROGRESS} bytes in {} of waiting \
         (BODY_IDLE_TIMEOUT); the request is abandoned",
        humantime::format_duration(*.0)
    )]
    Stalled(Duration),
    #[error("reading the request body: {0}")]
    Read(#[from] hyper::Error),
}

pub struct RequestBody {
    inner: Incoming,
    timeout: Duration,
    /// Waiting accrued since the body last made [`MIN_PROGRESS`].
    waited: Duration,
    /// Bytes received since then.
    progress: usize,
    /// When the current wait began; `None` while not waiting.
    waiting_since: Option<Instant>,
    /// Fires when the current wait would use up what is left of `timeout`; made once,
    /// reset per wait.
    timer: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl RequestBody {
    pub fn new(inner: Incoming, timeout: Duration) -> Self {
        RequestBody {
            inner,
            timeout,
            waited: Duration::ZERO,
            progress: 0,
            waiting_since: None,
            timer: None,
            failed: false,
        }
    }

    fn end_wait(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.end_wait();
                this.progress += frame.data_ref().map_or(0, Bytes::len);
                if this.progress >= MIN_PROGRESS {
                    this.progress = 0;
                    this.waited = Duration::ZERO;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    let now = Instant::now();
                    this.waiting_since = Some(now);
                    let deadline = now + this.timeout.saturating_sub(this.waited);
                    match &mut this.timer {
                        Some(t) => t.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let timer = this.timer.as_mut().expect("armed above");
                if timer.as_mut().poll(cx).is_ready() {
                    this.failed = true;
                    return Poll::Ready(Some(Err(BodyError::Stalled(this.timeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client-facing error for a failure while reading a request body, whichever layer
/// (the multipart parser, a size limit) wrapped it.
pub fn read_error(e: &(dyn std::error::Error + 'static)) -> Error {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BodyError>() {
            return match b {
                BodyError::Stalled(_) => Error::bad_request(Code::BodyTimeout, b.to_string()),
                BodyError::Read(_) => Error::bad_request(Code::BadBody, b.to_string()),
            };
        }
        if let Some(l) = err.downcast_ref::<super::multipart_limit::LimitError>() {
            return Error::bad_request(l.code(), l.to_string());
        }
        cur = err.source();
    }
    Error::bad_request(Code::BadBody, format!("reading the request body: {e}"))
}
