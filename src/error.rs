//! The service layer's error: what went wrong, in terms a client can act on.
//!
//! `write` and `read` return this; `http::error` maps `Kind` to a status code, and is the
//! only place that does.

use crate::blob::BlobError;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Malformed input.
    BadRequest,
    /// Identity could not be established.
    Unauthorized,
    /// The caller lacks a permission.
    Forbidden,
    /// Absent, deleted, expired, or not readable by the caller.
    NotFound,
    /// Conflicts with the store's state (stale tstamp, duplicate name, non-empty folder).
    Conflict,
    /// Over a configured limit.
    TooLarge,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// Not built yet.
    NotImplemented,
    /// A byte range outside the content.
    RangeNotSatisfiable,
    /// The store could not do its part; not the client's fault.
    Internal,
    /// A backend (the blob store) is unreachable or failing; try again later.
    Unavailable,
    /// The disk (metadata or blobs) is full: nothing of the request was kept.
    InsufficientStorage,
    /// A per-caller or server-wide limit on concurrent use (connections, feeds) is reached.
    TooManyRequests,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    /// A stable machine-readable code, e.g. `stale_tstamp`.
    pub code: &'static str,
    pub message: String,
    /// The index of the failing event within a write transaction.
    pub index: Option<usize>,
}

macro_rules! ctor {
    ($fn:ident, $kind:ident) => {
        pub fn $fn(code: &'static str, message: impl Into<String>) -> Error {
            Error {
                kind: Kind::$kind,
                code,
                message: message.into(),
                index: None,
            }
        }
    };
}

impl Error {
    ctor!(bad_request, BadRequest);
    ctor!(unauthorized, Unauthorized);
    ctor!(forbidden, Forbidden);
    ctor!(not_found, NotFound);
    ctor!(conflict, Conflict);
    ctor!(too_large, TooLarge);
    ctor!(method_not_allowed, MethodNotAllowed);
    ctor!(not_implemented, NotImplemented);
    ctor!(internal, Internal);
    ctor!(unavailable, Unavailable);
    ctor!(range_not_satisfiable, RangeNotSatisfiable);
    ctor!(insufficient_storage, InsufficientStorage);
    ctor!(too_many_requests, TooManyRequests);

    /// Names the failing event, unless an inner step already did.
    pub fn at(mut self, index: usize) -> Error {
        self.index.get_or_insert(index);
        self
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::UniqueName => Error::conflict(
                "duplicate_name",
                "a live object with this name already exists in the folder",
            ),
            e if e.is_disk_full() => {
                tracing::error!(error = %e, "the metadata store's disk is full");
                Error::insufficient_storage(
                    "insufficient_storage",
                    "the server's disk is full; nothing of the request was kept",
                )
            }
            other => {
                tracing::error!(error = %other, "store error");
                Error::internal("store", "the metadata store failed; see the server log")
            }
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Error {
        match e {
            BlobError::HashMismatch { .. } | BlobError::BadExpectedHash(_) => {
                Error::bad_request("sha256_mismatch", e.to_string())
            }
            BlobError::TooLarge { .. } => Error::too_large("file_too_large", e.to_string()),
            // Reading the request body failed: the client's side.
            BlobError::Upload(_) => Error::bad_request("upload_interrupted", e.to_string()),
            BlobError::Timeout(_) => {
                tracing::error!(error = %e, "blob store timeout");
                Error::unavailable(
                    "blob_store",
                    "the blob store did not answer in time; try again",
                )
            }
            BlobError::Full(_) => {
                tracing::error!(error = %e, "the blob store's disk is full");
                Error::insufficient_storage(
                    "insufficient_storage",
                    "the server's disk is full; nothing of the request was kept",
                )
            }
            BlobError::Backend(_) => {
                tracing::error!(error = %e, "blob store error");
                Error::unavailable("blob_store", "the blob store failed; see the server log")
            }
            BlobError::Integrity { .. } | BlobError::NotFound { .. } => {
                tracing::error!(error = %e, "damaged or missing blob");
                Error::internal(
                    "blob_damaged",
                    "the stored content failed its integrity check; see the server log",
                )
            }
            other => {
                tracing::error!(error = %other, "blob error");
                Error::internal("blob", "the blob store failed; see the server log")
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_failures_are_the_clients_only_when_its_upload_broke_off() {
        let io = || std::io::Error::other("x");
        let upload = Error::from(BlobError::Upload(io()));
        assert_eq!(
            (upload.kind, upload.code),
            (Kind::BadRequest, "upload_interrupted")
        );
        // A local read error or a failed helper task is the server's.
        let local = Error::from(BlobError::Io(io()));
        assert_eq!(local.kind, Kind::Internal);
        let timeout = Error::from(BlobError::Timeout(std::time::Duration::from_secs(30)));
        assert_eq!(
            (timeout.kind, timeout.code),
            (Kind::Unavailable, "blob_store")
        );
    }

    #[test]
    fn server_side_blob_failures_are_counted_and_the_clients_are_not() {
        let m = crate::metrics::Metrics::default();
        let count = || m.blob_errors.load(std::sync::atomic::Ordering::Relaxed);
        m.blob_error(&BlobError::Upload(std::io::Error::other("x")));
        assert_eq!(count(), 0);
        m.blob_error(&BlobError::Io(std::io::Error::other("x")));
        m.blob_error(&BlobError::Timeout(std::time::Duration::from_secs(1)));
        assert_eq!(count(), 2);
    }
}
