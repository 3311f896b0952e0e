//! Response bodies: whole buffers, or streams fed from a blocking task.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde::Serialize;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body fed by a channel; an `Err` item aborts the transfer (the client sees a
/// truncated response rather than wrong data).
pub fn channel(rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    StreamBody::new(stream).boxed()
}

/// [`channel`], holding `guard` until the body is dropped (finished, or abandoned by the
/// client).
pub fn channel_with<G: Send + Sync + 'static>(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    guard: G,
) -> Body {
    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv()
            .await
            .map(|item| (item.map(Frame::data), (rx, guard)))
    });
    StreamBody::new(stream).boxed()
}

/// A pretty-printed JSON response, like gm-data's.
/// A value that cannot be serialised (a bug, never the client's doing) is a 500, not an
/// empty answer with the intended status.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec_pretty(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            (status, bytes)
        }
        Err(e) => {
            tracing::error!(error = %e, "a response could not be serialised");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                UNSERIALISABLE.as_bytes().to_vec(),
            )
        }
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    json_headers(resp.headers_mut());
    resp
}

/// The body of that 500, in the shape of every error (`http/error.rs`).
const UNSERIALISABLE: &str = "{\n  \"error\": {\n    \"code\": \"encode\",\n    \"message\": \"the response could not be serialised\"\n  }\n}\n";

/// `application/json`, and never sniffed as anything else: JSON carries names and fields
/// users wrote, which a browser guessing HTML would run.
pub fn json_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An HTML page for a person (GET /show and its errors): no scripts at all, images only
/// from here, the page's own inline styles, never framed, never sniffed as anything else.
pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut resp = Response::new(full(page));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    struct Unserialisable;
    impl Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }

    #[tokio::test]
    async fn a_response_that_cannot_be_serialised_is_a_500_with_an_error_body_not_an_empty_200() {
        let resp = json(StatusCode::OK, &Unserialisable);
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "encode");
    }
}
