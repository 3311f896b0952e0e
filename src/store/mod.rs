//! Metadata storage: the append-only event log and the current-state index.
//!
//! The write path (`crate::write`) and the read path (`crate::read`) are written against
//! the narrow traits [`MetaRead`] and [`MetaWrite`] only, so that another backend
//! (PostgreSQL, for deployments that outgrow one machine) can follow. `sqlite` is the
//! embedded default. Nothing here knows about HTTP or policies.

pub mod clock;
mod faults;
pub mod sqlite;

use crate::crypto::{BlobAlgorithm, Wrapped};
use crate::model::{Event, Oid, Tstamp, UserPolicy};

#[doc(hidden)]
pub use faults::FaultInjector;
pub use sqlite::{SqliteStore, Synchronous};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// The disk holding the metadata store is full (`SQLITE_FULL`); nothing of the
    /// transaction was kept.
    #[error("the disk is full: {0}")]
    Full(String),
    #[error("a live object with this name already exists in the folder")]
    UniqueName,
    #[error("stored event {0} does not decode: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("the writer thread is gone")]
    WriterGone,
    /// The batch the job ran in was rolled back (its COMMIT failed, or SQLite rolled the
    /// transaction back under a batch-mate); nothing of the job was kept.
    #[error("not committed: {0}")]
    NotCommitted(String),
    /// The job panicked; its changes were rolled back.
    #[error("the write job panicked; nothing of it was kept")]
    JobPanicked,
    #[error("migration: {0}")]
    Migration(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// Whether this says the disk is full (SQLite's `SQLITE_FULL`, or ENOSPC from the OS).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Full(_) => true,
            StoreError::Io(e) => crate::blob::is_storage_full(e),
            _ => false,
        }
    }
}

/// The current state of an object, from the index.
#[derive(Debug, Clone)]
pub struct Current {
    /// The current version. Its `fulldir` is the live one from the index (a move of an
    /// ancestor changes it without a new version of this object).
    pub event: Event,
    /// False once the current version is a delete.
    pub live: bool,
}

/// One stored blob (file content) and its wrapped data key, kept beside the log.
#[derive(Debug, Clone)]
pub struct BlobRow {
    pub rname: String,
    pub algorithm: BlobAlgorithm,
    /// `None` for [`BlobAlgorithm::None`].
    pub wrapped: Option<Wrapped>,
    pub size: u64,
    pub sha256plain: String,
    /// The stored (sealed) bytes of a small blob kept in the metadata store; `None` when
    /// the blob is an object in the blob store.
    pub inline: Option<bytes::Bytes>,
    /// The tstamp of the event that first stored it.
    pub created: Tstamp,
}

/// Reads against one consistent snapshot: a reader's read transaction, or the writer's
/// open transaction (which includes the events planned so far in this batch).
pub trait MetaRead {
    fn current(&self, oid: Oid) -> Result<Option<Current>, StoreError>;
    /// The live child named `name`, if any.
    fn child_by_name(&self, parent: Oid, name: &str) -> Result<Option<Oid>, StoreError>;
    /// Whether `oid` has children: live ones only, or any not yet purged.
    fn has_children(&self, oid: Oid, live_only: bool) -> Result<bool, StoreError>;
    fn version(&self, oid: Oid, tstamp: Tstamp) -> Result<Option<Event>, StoreError>;
    /// Every version not purged, oldest first.
    fn history(&self, oid: Oid) -> Result<Vec<Event>, StoreError>;
    /// Live children ordered by oid, after `after`, at most `limit`.
    fn children(
        &self,
        parent: Oid,
        after: Option<Oid>,
        limit: usize,
    ) -> Result<Vec<Current>, StoreError>;
    /// Live objects whose current `derived.oid` is `oid`.
    fn derived_from(&self, oid: Oid) -> Result<Vec<Current>, StoreError>;
    fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Events stored after `after`, in tstamp (= commit) order, at most `limit` (the
    /// notification feed).
    fn events_since(&self, after: Tstamp, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// The newest event's tstamp (`Tstamp(0)` for an empty log).
    fn max_tstamp(&self) -> Result<Tstamp, StoreError>;
    /// The blob named `rname`, with its wrapped key (and bytes, if inline).
    fn blob(&self, rname: &str) -> Result<Option<BlobRow>, StoreError>;
    /// Whether any remaining event version uses the blob.
    fn blob_in_use(&self, rname: &str) -> Result<bool, StoreError>;
    /// Blob rows ordered by rname, after `after`, at most `limit` (for fsck and rekey).
    fn blobs_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<BlobRow>, StoreError>;
}

/// Changes; only available inside the writer's transaction.
pub trait MetaWrite: MetaRead {
    fn next_tstamp(&mut self) -> Tstamp;
    fn next_oid(&mut self) -> Oid;
    /// Appends a version and brings the index up to date (including the `fulldir` of
    /// every descendant when a directory moves).
    fn append(&mut self, event: &Event) -> Result<(), StoreError>;
    /// Removes every version of `oid` (or only `version`) and records the purge.
    /// Returns the removed events.
    fn purge(
        &mut self,
        oid: Oid,
        version: Option<Tstamp>,
        at: Tstamp,
        who: &UserPolicy,
        jwthash: &str,
    ) -> Result<Vec<Event>, StoreError>;
    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Records a newly stored blob (before the events that use it are appended).
    fn put_blob(&mut self, row: &BlobRow) -> Result<(), StoreError>;
    /// Forgets a blob no version uses any more (its object is deleted after commit).
    fn drop_blob(&mut self, rname: &str) -> Result<(), StoreError>;
    /// Replaces a blob's wrapped data key (`vellum rekey`); the blob is not touched.
    fn rewrap_blob(&mut self, rname: &str, wrapped: &Wrapped) -> Result<(), StoreError>;
}
