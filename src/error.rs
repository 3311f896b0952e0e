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
    /// Was there, and is no more (a link share revoked, expired or used up).
    Gone,
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

/// Every machine-readable error code the service answers with: a closed set, listed in the
/// OpenAPI document (a test keeps the two equal). DO NOT CHANGE a code's text: clients
/// match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    AmbiguousPart,
    BadBody,
    BadContentType,
    BadField,
    BadLastEventId,
    BadMultipart,
    BadName,
    BadParentoid,
    BadPath,
    BadPolicy,
    BadQuery,
    BadReference,
    BadShare,
    Blob,
    BlobDamaged,
    BlobStore,
    BodyTimeout,
    CrossOriginCookieWrite,
    Cycle,
    Deleted,
    DuplicateName,
    EmptyMetadata,
    Encode,
    FileTooLarge,
    InsufficientStorage,
    IsfileMismatch,
    LinkGone,
    List,
    MalformedEvent,
    MalformedMetadata,
    MetadataTooLarge,
    MethodNotAllowed,
    MissingAction,
    MissingContent,
    MissingName,
    MissingOid,
    MissingParentoid,
    MultipartPreambleTooLarge,
    NoContent,
    NoRoute,
    NotEmpty,
    NotFound,
    ParentIsFile,
    PartCount,
    PartHeaderTooLarge,
    PermissionDenied,
    PolicyBudgetExceeded,
    PolicyTooLarge,
    Protected,
    RangeNotSatisfiable,
    Readonly,
    ReferenceOutOfRange,
    RequestAbandoned,
    RnameMismatch,
    Route,
    Sha256Mismatch,
    ShareClosed,
    StaleTstamp,
    Store,
    TaskNotFailed,
    TooDeep,
    TooManyConnections,
    TooManyEvents,
    TooManyFeeds,
    TooManyRedemptions,
    Unauthorized,
    UnknownAction,
    UploadInterrupted,
    WouldLockOut,
    Write,
}

impl Code {
    /// Every code, in the order of their text.
    pub const ALL: &'static [Code] = &[
        Code::AmbiguousPart,
        Code::BadBody,
        Code::BadContentType,
        Code::BadField,
        Code::BadLastEventId,
        Code::BadMultipart,
        Code::BadName,
        Code::BadParentoid,
        Code::BadPath,
        Code::BadPolicy,
        Code::BadQuery,
        Code::BadReference,
        Code::BadShare,
        Code::Blob,
        Code::BlobDamaged,
        Code::BlobStore,
        Code::BodyTimeout,
        Code::CrossOriginCookieWrite,
        Code::Cycle,
        Code::Deleted,
        Code::DuplicateName,
        Code::EmptyMetadata,
        Code::Encode,
        Code::FileTooLarge,
        Code::InsufficientStorage,
        Code::IsfileMismatch,
        Code::LinkGone,
        Code::List,
        Code::MalformedEvent,
        Code::MalformedMetadata,
        Code::MetadataTooLarge,
        Code::MethodNotAllowed,
        Code::MissingAction,
        Code::MissingContent,
        Code::MissingName,
        Code::MissingOid,
        Code::MissingParentoid,
        Code::MultipartPreambleTooLarge,
        Code::NoContent,
        Code::NoRoute,
        Code::NotEmpty,
        Code::NotFound,
        Code::ParentIsFile,
        Code::PartCount,
        Code::PartHeaderTooLarge,
        Code::PermissionDenied,
        Code::PolicyBudgetExceeded,
        Code::PolicyTooLarge,
        Code::Protected,
        Code::RangeNotSatisfiable,
        Code::Readonly,
        Code::ReferenceOutOfRange,
        Code::RequestAbandoned,
        Code::RnameMismatch,
        Code::Route,
        Code::Sha256Mismatch,
        Code::ShareClosed,
        Code::StaleTstamp,
        Code::Store,
        Code::TaskNotFailed,
        Code::TooDeep,
        Code::TooManyConnections,
        Code::TooManyEvents,
        Code::TooManyFeeds,
        Code::TooManyRedemptions,
        Code::Unauthorized,
        Code::UnknownAction,
        Code::UploadInterrupted,
        Code::WouldLockOut,
        Code::Write,
    ];

    /// The code as it appears in `{"error": {"code": ...}}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AmbiguousPart => "ambiguous_part",
            Code::BadBody => "bad_body",
            Code::BadContentType => "bad_content_type",
            Code::BadField => "bad_field",
            Code::BadLastEventId => "bad_last_event_id",
            Code::BadMultipart => "bad_multipart",
            Code::BadName => "bad_name",
            Code::BadParentoid => "bad_parentoid",
            Code::BadPath => "bad_path",
            Code::BadPolicy => "bad_policy",
            Code::BadQuery => "bad_query",
            Code::BadReference => "bad_reference",
            Code::BadShare => "bad_share",
            Code::Blob => "blob",
            Code::BlobDamaged => "blob_damaged",
            Code::BlobStore => "blob_store",
            Code::BodyTimeout => "body_timeout",
            Code::CrossOriginCookieWrite => "cross_origin_cookie_write",
            Code::Cycle => "cycle",
            Code::Deleted => "deleted",
            Code::DuplicateName => "duplicate_name",
            Code::EmptyMetadata => "empty_metadata",
            Code::Encode => "encode",
            Code::FileTooLarge => "file_too_large",
            Code::InsufficientStorage => "insufficient_storage",
            Code::IsfileMismatch => "isfile_mismatch",
            Code::LinkGone => "link_gone",
            Code::List => "list",
            Code::MalformedEvent => "malformed_event",
            Code::MalformedMetadata => "malformed_metadata",
            Code::MetadataTooLarge => "metadata_too_large",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::MissingAction => "missing_action",
            Code::MissingContent => "missing_content",
            Code::MissingName => "missing_name",
            Code::MissingOid => "missing_oid",
            Code::MissingParentoid => "missing_parentoid",
            Code::MultipartPreambleTooLarge => "multipart_preamble_too_large",
            Code::NoContent => "no_content",
            Code::NoRoute => "no_route",
            Code::NotEmpty => "not_empty",
            Code::NotFound => "not_found",
            Code::ParentIsFile => "parent_is_file",
            Code::PartCount => "part_count",
            Code::PartHeaderTooLarge => "part_header_too_large",
            Code::PermissionDenied => "permission_denied",
            Code::PolicyBudgetExceeded => "policy_budget_exceeded",
            Code::PolicyTooLarge => "policy_too_large",
            Code::Protected => "protected",
            Code::RangeNotSatisfiable => "range_not_satisfiable",
            Code::Readonly => "readonly",
            Code::ReferenceOutOfRange => "reference_out_of_range",
            Code::RequestAbandoned => "request_abandoned",
            Code::RnameMismatch => "rname_mismatch",
            Code::Route => "route",
            Code::Sha256Mismatch => "sha256_mismatch",
            Code::ShareClosed => "share_closed",
            Code::StaleTstamp => "stale_tstamp",
            Code::Store => "store",
            Code::TaskNotFailed => "task_not_failed",
            Code::TooDeep => "too_deep",
            Code::TooManyConnections => "too_many_connections",
            Code::TooManyEvents => "too_many_events",
            Code::TooManyFeeds => "too_many_feeds",
            Code::TooManyRedemptions => "too_many_redemptions",
            Code::Unauthorized => "unauthorized",
            Code::UnknownAction => "unknown_action",
            Code::UploadInterrupted => "upload_interrupted",
            Code::WouldLockOut => "would_lock_out",
            Code::Write => "write",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    /// A stable machine-readable code, e.g. `stale_tstamp`.
    pub code: Code,
    pub message: String,
    /// The index of the failing event within a write transaction.
    pub index: Option<usize>,
}

macro_rules! ctor {
    ($fn:ident, $kind:ident) => {
        pub fn $fn(code: Code, message: impl Into<String>) -> Error {
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
    ctor!(gone, Gone);
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
                Code::DuplicateName,
                "a live object with this name already exists in the folder",
            ),
            e if e.is_disk_full() => {
                tracing::error!(error = %e, "the metadata store's disk is full");
                Error::insufficient_storage(
                    Code::InsufficientStorage,
                    "the server's disk is full; nothing of the request was kept",
                )
            }
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "the metadata store cannot be reached");
                Error::unavailable(
                    Code::Store,
                    "the metadata store cannot be reached; nothing of the request was kept; try again",
                )
            }
            other => {
                tracing::error!(error = %other, "store error");
                Error::internal(Code::Store, "the metadata store failed; see the server log")
            }
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Error {
        match e {
            BlobError::HashMismatch { .. } | BlobError::BadExpectedHash(_) => {
                Error::bad_request(Code::Sha256Mismatch, e.to_string())
            }
            BlobError::TooLarge { .. } => Error::too_large(Code::FileTooLarge, e.to_string()),
            // Reading the request body failed: the client's side.
            BlobError::Upload(_) => Error::bad_request(Code::UploadInterrupted, e.to_string()),
            BlobError::Timeout(_) => {
                tracing::error!(error = %e, "blob store timeout");
                Error::unavailable(
                    Code::BlobStore,
                    "the blob store did not answer in time; try again",
                )
            }
            BlobError::Full(_) => {
                tracing::error!(error = %e, "the blob store's disk is full");
                Error::insufficient_storage(
                    Code::InsufficientStorage,
                    "the server's disk is full; nothing of the request was kept",
                )
            }
            BlobError::Backend(_) => {
                tracing::error!(error = %e, "blob store error");
                Error::unavailable(Code::BlobStore, "the blob store failed; see the server log")
            }
            BlobError::Integrity { .. } | BlobError::NotFound { .. } => {
                tracing::error!(error = %e, "damaged or missing blob");
                Error::internal(
                    Code::BlobDamaged,
                    "the stored content failed its integrity check; see the server log",
                )
            }
            other => {
                tracing::error!(error = %other, "blob error");
                Error::internal(Code::Blob, "the blob store failed; see the server log")
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
            (upload.kind, upload.code.as_str()),
            (Kind::BadRequest, "upload_interrupted")
        );
        // A local read error or a failed helper task is the server's.
        let local = Error::from(BlobError::Io(io()));
        assert_eq!(local.kind, Kind::Internal);
        let timeout = Error::from(BlobError::Timeout(std::time::Duration::from_secs(30)));
        assert_eq!(
            (timeout.kind, timeout.code.as_str()),
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
