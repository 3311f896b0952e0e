//! The blob store (SPEC §7): file contents at `FILE_PARTITION/<rname>`, on the local filesystem
//! (`DATA_DIR/blobs/`) or in S3, always through the `object_store` crate, encrypted with the
//! chunked AES-256-GCM format of [`crate::crypto`] (or stored as they are for
//! `blobalgorithm: "none"`).
//!
//! * [`BlobStore::put`] streams an upload through SHA-256 and the envelope into the backend:
//!   one `PUT` for a small blob, a multipart upload with a few parts in flight for a large one,
//!   so memory does not grow with the size. It returns once the blob is durable, and leaves
//!   nothing behind when it fails.
//! * [`BlobStore::open`] / [`BlobReader::read_range`] serve the plaintext of any byte range,
//!   fetching and decrypting only the chunks it covers; an integrity failure is an error item,
//!   never wrong bytes.
//! * [`BlobStore::delete`], [`BlobStore::list`], [`BlobStore::verify`] and
//!   [`BlobStore::remove_stale_uploads`] are for purge, `vellum gc` and `vellum fsck`.
//!
//! # Names
//!
//! A blob's name (`rname`) is made by [`BlobStore::new_rname`]: 16 random hex digits sharded by
//! their last three, e.g. `558/158340da6ed32558`. The rname (without `FILE_PARTITION`) is also
//! the blob id bound into the encryption (see [`crate::crypto`]), so moving the partition does
//! not orphan blobs. Other names are accepted by `put`/`open`/`delete` if they are safe relative
//! paths (see [`validate_rname`]), but [`BlobStore::list`] only reports names of the
//! `new_rname` shape, so `vellum gc` can never touch objects that Vellum did not make, even in a
//! shared bucket with an empty `FILE_PARTITION`.
//!
//! # Durability
//!
//! Local files: `object_store`'s `LocalFileSystem` is built with `with_fsync(true)` (available
//! since object_store 0.13), which writes to a staging file, `fsync`s it, renames it into place
//! and `fsync`s the parent directory (and every directory it had to create) before the write
//! returns; the `blobs/` and partition directories made at start-up are fsynced here. A local
//! multipart upload (a blob of 8 MiB or more, stored) goes through `local.rs`, which writes the
//! same staging file and gives the same guarantees, but starts putting the parts on disk
//! while the upload goes on. S3: a completed `PUT` or `CompleteMultipartUpload` is durable.

mod local;
mod open;
mod part_writer;
mod pipeline;
mod reader;
mod store;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::crypto::{CryptoError, DEFAULT_CHUNK_SIZE};

pub use crate::crypto::BlobAlgorithm;
pub use reader::BlobReader;
pub use store::{BlobStore, PendingObject, Resealed};

/// Time allowed for the first response of a read (the body then streams without a deadline).
pub(crate) const FIRST_BYTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where and how blobs are stored (`USES3`, `FILE_BUCKET`, `FILE_PARTITION`, `AWS_*`,
/// `DATA_DIR`).
#[derive(Clone, Debug)]
pub struct BlobConfig {
    /// `USES3=true`: blobs in S3 rather than under `data_dir/blobs`.
    pub uses3: bool,
    /// `FILE_BUCKET` (required with `uses3`).
    pub bucket: Option<String>,
    /// `FILE_PARTITION`: a key prefix (may be empty; leading/trailing `/` are ignored).
    pub partition: String,
    /// `AWS_ACCESS_KEY_ID` (with the secret; without both, object_store's instance/container
    /// credentials are used).
    pub aws_access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub aws_secret_access_key: Option<String>,
    /// `AWS_REGION` (default `us-east-1`).
    pub aws_region: Option<String>,
    /// `AWS_ENDPOINT`: any S3-compatible server. `https://` anywhere; `http://` only for a
    /// loopback host (`localhost`, `127.0.0.0/8`, `::1`).
    pub aws_endpoint: Option<String>,
    /// `DATA_DIR`: local blobs live under `data_dir/blobs`.
    pub data_dir: PathBuf,
    /// Plaintext bytes per encrypted chunk for new blobs (default 64 KiB).
    pub chunk_size: u32,
}

impl Default for BlobConfig {
    /// The embedded default: local blobs under `./vellum-data/blobs`, 64 KiB chunks.
    fn default() -> Self {
        Self {
            uses3: false,
            bucket: None,
            partition: String::new(),
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_region: None,
            aws_endpoint: None,
            data_dir: PathBuf::from("./vellum-data"),
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl BlobConfig {
    /// Local blobs under `data_dir/blobs`, everything else default.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }
}

/// What a successful [`BlobStore::put`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's name (without `FILE_PARTITION`).
    pub rname: String,
    /// Plaintext length in bytes (`size`).
    pub size: u64,
    /// Lower-case hex SHA-256 of the plaintext (`sha256plain`).
    pub sha256plain: String,
    /// How the content is stored.
    pub algorithm: BlobAlgorithm,
    /// The blob's data key wrapped under the active master key (`encrypteddata` /
    /// `encryptednonce`); `None` for [`BlobAlgorithm::None`].
    pub wrapped: Option<crate::crypto::Wrapped>,
    /// For [`BlobStore::seal_inline`]: the stored (sealed) bytes of a small blob that was
    /// not written to the backend, for the caller to keep in its metadata store.
    pub inline: Option<bytes::Bytes>,
}

/// Errors of the blob store. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object under this name.
    #[error("blob {rname:?} not found")]
    NotFound { rname: String },
    /// The stored object is not what was written: tampered, truncated, replaced, or read with
    /// another blob's key. Never returned together with wrong bytes.
    #[error("blob {rname:?} failed its integrity check: {source}")]
    Integrity {
        rname: String,
        #[source]
        source: CryptoError,
    },
    /// The uploaded content's SHA-256 is not the expected one; nothing was stored.
    #[error("sha256 of the uploaded content is {actual}, but {expected} was expected")]
    HashMismatch { expected: String, actual: String },
    /// The expected SHA-256 given to `put` is not 64 hex digits.
    #[error("expected sha256 {0:?} is not 64 hex digits")]
    BadExpectedHash(String),
    /// The upload is larger than the limit; nothing was stored.
    #[error("upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// A blob name that is not a safe relative path (see [`validate_rname`]).
    #[error("invalid blob name {0:?}")]
    InvalidName(String),
    /// The configuration cannot be used.
    #[error("blob store configuration: {0}")]
    Config(String),
    /// An encrypted blob was opened without its wrapped data key.
    #[error("blob {rname:?} is encrypted but no wrapped data key was given")]
    MissingKey { rname: String },
    /// The data key could not be unwrapped (unknown master key id, wrong master key, malformed
    /// or tampered wrapped key), or the envelope could not be set up.
    #[error("blob data key: {0}")]
    Crypto(#[source] CryptoError),
    /// Reading the upload's body failed: the client went away, or sent too slowly. The
    /// client's side; nothing was stored.
    #[error("reading the upload failed: {0}")]
    Upload(#[source] std::io::Error),
    /// A local read or a helper task failed: the server's side.
    #[error("blob I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The blob store did not answer within its first-byte timeout.
    #[error("no response from the blob store within {0:?}")]
    Timeout(std::time::Duration),
    /// The storage backend failed.
    #[error("blob storage: {0}")]
    Backend(#[source] object_store::Error),
    /// The disk (or quota) holding the blobs is full; nothing was stored.
    #[error("blob storage is full: {0}")]
    Full(#[source] object_store::Error),
}

impl BlobError {
    /// Whether this is [`BlobError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether this is [`BlobError::Integrity`] (a damaged blob, a 5xx / aborted transfer).
    pub fn is_integrity(&self) -> bool {
        matches!(self, Self::Integrity { .. })
    }

    pub(crate) fn integrity(rname: &str, source: CryptoError) -> Self {
        Self::Integrity {
            rname: rname.to_string(),
            source,
        }
    }

    pub(crate) fn backend(rname: &str, e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound {
                rname: rname.to_string(),
            },
            e if storage_full_in(&e) => Self::Full(e),
            e => Self::Backend(e),
        }
    }
}

/// Whether an I/O error says the disk (or the caller's quota) is full.
pub fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Whether `e` or any error it wraps is an I/O error saying the disk is full
/// (object_store's local store wraps the `io::Error` of the write, rename or fsync).
fn storage_full_in(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(is_storage_full)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Longest accepted blob name, in bytes.
pub const MAX_RNAME_LEN: usize = 256;

/// Checks that `name` is a safe relative object name: 1..=[`MAX_RNAME_LEN`] bytes, segments
/// separated by single `/`, each made of `A-Z a-z 0-9 . _ -` and not `.` or `..`. Every name
/// made by [`BlobStore::new_rname`] passes. (Also used for `FILE_PARTITION`.)
pub fn validate_rname(name: &str) -> Result<(), BlobError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_RNAME_LEN
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(BlobError::InvalidName(name.chars().take(80).collect()))
    }
}

/// Whether `name` has the shape [`BlobStore::new_rname`] makes: `xyz/` + 16 lower-case hex
/// digits ending in `xyz`.
pub fn is_generated_rname(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 20
        && b[3] == b'/'
        && b[..3] == b[17..]
        && b[4..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}
