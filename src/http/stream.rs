//! GET/HEAD /stream: decrypted content, single byte ranges, conditional requests.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::body::{self, Body};
use super::request::header_str;
use super::AppState;
use crate::access::Access;
use crate::blob::BlobReader;
use crate::error::{Code, Error, Result};
use crate::model::{ObjPath, Tstamp};
use crate::read;
use crate::store::BlobRow;

/// Decrypted pieces queued between the blob reader and the connection.
const BODY_QUEUE: usize = 4;

/// What a `Range` header asks for, given the content's size.
#[derive(Debug, PartialEq, Eq)]
enum Ranged {
    /// No usable single range: the whole content (a multi-range or malformed header is
    /// ignored, as RFC 9110 allows).
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

fn parse_range(header: &str, size: u64) -> Ranged {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => Ranged::Unsatisfiable,
            Some(n) if size == 0 => {
                let _ = n;
                Ranged::Unsatisfiable
            }
            Some(n) => Ranged::Part(size.saturating_sub(n)..size),
            None => Ranged::Whole,
        },
        // bytes=a-: from a to the end.
        (false, true) => match num(a) {
            Some(a) if a < size => Ranged::Part(a..size),
            Some(_) => Ranged::Unsatisfiable,
            None => Ranged::Whole,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b => {
                if a < size {
                    Ranged::Part(a..b.saturating_add(1).min(size))
                } else {
                    Ranged::Unsatisfiable
                }
            }
            _ => Ranged::Whole,
        },
        (true, true) => Ranged::Whole,
    }
}

fn set(resp: &mut Response<Body>, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Opens a recorded blob, inline or in the blob store.
pub(super) async fn open_blob(state: &AppState, row: &BlobRow) -> Result<BlobReader> {
    let r = state
        .blobs
        .open_recorded(
            &row.rname,
            row.location(),
            row.algorithm,
            row.wrapped.as_ref(),
            row.inline.clone(),
        )
        .await;
    Ok(r.inspect_err(|e| state.metrics.blob_error(e))?)
}

pub async fn stream(
    state: &Arc<AppState>,
    access: Access,
    path: ObjPath,
    tstamp: Option<Tstamp>,
    req: &Request<super::RequestBody>,
) -> Result<Response<Body>> {
    let (event, row) = state
        .store
        .read(move |s| read::stream_target(s, &access, &path, tstamp))
        .await?;
    let etag = format!("\"{}\"", row.sha256plain);
    let last_modified =
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_nanos(event.tstamp.get()));
    let mimetype = event
        .mimetype
        .clone()
        .filter(|m| HeaderValue::from_str(m).is_ok())
        .unwrap_or_else(|| "application/octet-stream".into());
    let headers = req.headers();
    let common = |resp: &mut Response<Body>| {
        set(resp, header::ETAG, &etag);
        set(resp, header::LAST_MODIFIED, &last_modified);
        set(resp, header::ACCEPT_RANGES, "bytes");
        // Content is whatever users uploaded: never let a browser guess a more dangerous
        // type, and run uploaded HTML in a sandbox (an opaque origin), so a page in a
        // folder cannot act with the reader's cookie.
        set(resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(
            resp,
            header::CONTENT_SECURITY_POLICY,
            "sandbox allow-scripts allow-forms allow-popups allow-downloads",
        );
    };
    if let Some(inm) = header_str(headers, "if-none-match") {
        let hit = inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag);
        if hit {
            let mut resp = Response::new(body::full(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            common(&mut resp);
            return Ok(resp);
        }
    }

    let reader = open_blob(state, &row).await?;
    let size = reader.size();
    if size != row.size {
        tracing::error!(rname = %row.rname, stored = size, recorded = row.size, "blob has the wrong length");
        return Err(Error::internal(
            Code::BlobDamaged,
            "the stored content failed its integrity check; see the server log",
        ));
    }
    // If-Range: a range only applies to the version the client has.
    let if_range_ok = header_str(headers, "if-range").is_none_or(|v| v == etag);
    let ranged = match header_str(headers, "range") {
        Some(r) if if_range_ok => parse_range(r, size),
        _ => Ranged::Whole,
    };
    let (status, range) = match ranged {
        Ranged::Whole => (StatusCode::OK, 0..size),
        Ranged::Part(r) => (StatusCode::PARTIAL_CONTENT, r),
        Ranged::Unsatisfiable => {
            let mut resp = super::error::response(&Error::range_not_satisfiable(
                Code::RangeNotSatisfiable,
                format!("the content is {size} bytes"),
            ));
            set(&mut resp, header::CONTENT_RANGE, &format!("bytes */{size}"));
            common(&mut resp);
            return Ok(resp);
        }
    };
    let len = range.end - range.start;
    let body = if req.method() == Method::HEAD || len == 0 {
        body::full(Bytes::new())
    } else {
        let mut pieces = Box::pin(reader.read_range(range.clone()));
        // The first piece decides the status: a blob damaged at its start is a 500, not a
        // 200 followed by an aborted transfer.
        let first = match pieces.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                state.metrics.blob_error(&e);
                return Err(e.into());
            }
            None => Bytes::new(),
        };
        crate::metrics::Metrics::add(&state.metrics.bytes_out, len);
        let (tx, rx) = tokio::sync::mpsc::channel(BODY_QUEUE);
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            while let Some(piece) = pieces.next().await {
                let item = piece.map_err(|e| {
                    tracing::error!(error = %e, "aborting a download: damaged blob");
                    std::io::Error::other(e.to_string())
                });
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        body::channel(rx)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    common(&mut resp);
    set(&mut resp, header::CONTENT_TYPE, &mimetype);
    set(&mut resp, header::CONTENT_LENGTH, &len.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut resp,
            header::CONTENT_RANGE,
            &format!("bytes {}-{}/{size}", range.start, range.end - 1),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-0", 10), Ranged::Part(0..1));
        assert_eq!(parse_range("bytes=2-", 10), Ranged::Part(2..10));
        assert_eq!(parse_range("bytes=-3", 10), Ranged::Part(7..10));
        assert_eq!(parse_range("bytes=-30", 10), Ranged::Part(0..10));
        assert_eq!(parse_range("bytes=5-100", 10), Ranged::Part(5..10));
        assert_eq!(parse_range("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=10-12", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Ranged::Unsatisfiable);
        // Ignored: served whole.
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Ranged::Whole);
        assert_eq!(parse_range("bytes=5-2", 10), Ranged::Whole);
        assert_eq!(parse_range("items=0-1", 10), Ranged::Whole);
        assert_eq!(parse_range("bytes=x-1", 10), Ranged::Whole);
    }
}
