//! POST /write: turns the request into a metadata document and a sequence of file parts
//! for the write service (`crate::write::service`), and its result into a response.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::body::{self, Body};
use super::request::{collect_limited, header_str};
use super::AppState;
use super::RequestBody;
use crate::access::Access;
use crate::error::{Code, Error, Result};

fn multer_error(e: multer::Error) -> Error {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            Error::too_large(Code::MetadataTooLarge, e.to_string())
        }
        multer::Error::StreamReadFailed(e) => super::request_body::read_error(&*e),
        other => Error::bad_request(Code::BadMultipart, format!("multipart body: {other}")),
    }
}

pub async fn write_txn(
    state: &Arc<AppState>,
    access: Access,
    req: Request<RequestBody>,
) -> Result<Response<Body>> {
    let max = state.config.limits.max_metadata_bytes;
    let ctype = header_str(req.headers(), "content-type")
        .unwrap_or("")
        .to_string();
    let (metadata, mut mp) = if ctype.starts_with("application/json") {
        (
            collect_limited(&req.headers().clone(), req.into_body(), max).await?,
            None,
        )
    } else {
        let boundary = multer::parse_boundary(&ctype).map_err(|_| {
            Error::bad_request(
                Code::BadContentType,
                "POST /write takes multipart/form-data (metadata first, then file parts) or \
                 application/json",
            )
        })?;
        let limit = state.config.http.max_part_header_bytes;
        let body = super::multipart_limit::limit_part_headers(
            req.into_body().into_data_stream(),
            &boundary,
            limit,
        );
        let mut mp = multer::Multipart::new(body, boundary);
        // SPEC §5: the first part is the metadata whatever its name.
        let mut first = mp
            .next_field()
            .await
            .map_err(multer_error)?
            .ok_or_else(|| {
                Error::bad_request(Code::EmptyMetadata, "the multipart body has no parts")
            })?;
        let mut metadata = Vec::new();
        while let Some(chunk) = first.chunk().await.map_err(multer_error)? {
            if metadata.len() + chunk.len() > max {
                return Err(Error::too_large(
                    Code::MetadataTooLarge,
                    format!("the metadata part is over the {max}-byte limit"),
                ));
            }
            metadata.extend_from_slice(&chunk);
        }
        drop(first);
        (Bytes::from(metadata), Some(mp))
    };
    let mut txn = state.writes.begin(access, metadata).await?;
    if let Some(mp) = mp.as_mut() {
        loop {
            let field = match mp.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => {
                    txn.abort().await;
                    return Err(multer_error(e));
                }
            };
            if let Err(e) = txn.add_part(field.map(|r| r.map_err(multer_error))).await {
                txn.abort().await;
                return Err(e);
            }
        }
    }
    let committed = txn.commit().await?;
    Ok(body::json(StatusCode::OK, &committed.events))
}
