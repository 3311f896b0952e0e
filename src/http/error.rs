//! The one place where errors become HTTP statuses.

use bytes::Bytes;
use http::{header, Response, StatusCode};

use super::body::{full, Body};
use crate::error::{Code, Error, Kind};
use crate::identity::AuthError;

pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::Gone => StatusCode::GONE,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        Kind::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Error {
        Error::unauthorized(Code::Unauthorized, e.to_string())
    }
}

/// `{"error": {"code": ..., "message": ..., "index": N}}` with the status for its kind.
pub fn response(e: &Error) -> Response<Body> {
    let mut inner = serde_json::Map::new();
    inner.insert("code".into(), e.code.as_str().into());
    inner.insert("message".into(), e.message.clone().into());
    if let Some(i) = e.index {
        inner.insert("index".into(), i.into());
    }
    let body = serde_json::json!({ "error": inner });
    let mut bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
    bytes.push(b'\n');
    let mut resp = Response::new(full(Bytes::from(bytes)));
    *resp.status_mut() = status(e.kind);
    super::body::json_headers(resp.headers_mut());
    challenge(e, resp)
}

/// The same error as a page for a person's browser (GET /show): the status for its kind,
/// the message escaped into HTML.
pub fn html_response(e: &Error, base: &str) -> Response<Body> {
    let status = status(e.kind);
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let resp = super::body::html(status, crate::show::render_error(&title, &e.message, base));
    challenge(e, resp)
}

/// A 401 says how to authenticate.
fn challenge(e: &Error, mut resp: Response<Body>) -> Response<Body> {
    if e.kind == Kind::Unauthorized {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}
