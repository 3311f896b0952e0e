//! What handlers read from a request beyond its route: header values and a bounded body.
//! Shared by every handler module, so none of them reaches into another for it.

use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::BodyExt;

use super::request_body::RequestBody;
use crate::error::{Code, Error, Result};

/// A header's value as text, trimmed; `None` when absent, empty or not visible ASCII.
pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Reads the request body up to `limit` bytes into one buffer, sized once from
/// `Content-Length` when the client sent it: no second copy and no doubling, so a body at
/// the limit costs the limit in memory.
pub(super) async fn collect_limited(
    headers: &HeaderMap,
    body: RequestBody,
    limit: usize,
) -> Result<Bytes> {
    let too_large = || {
        Error::too_large(
            Code::MetadataTooLarge,
            format!("the metadata is over the {limit}-byte limit"),
        )
    };
    let declared =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| super::request_body::read_error(&e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}
