//! Metadata storage: the append-only event log and the current-state index.
//!
//! The write path (`crate::write`) and the read path (`crate::read`) are written against
//! the narrow traits [`MetaRead`] and [`MetaWrite`] only, so that another backend
//! (PostgreSQL, for deployments that outgrow one machine) can follow. `sqlite` is the
//! embedded default; `postgres` serves several nodes; `writer` is group commit for both.
//! Nothing here knows about HTTP or policies.

pub mod clock;
pub mod postgres;
pub mod sqlite;
mod writer;

use std::future::Future;
use std::path::Path;

use crate::crypto::{BlobAlgorithm, Wrapped};
use crate::model::task::QueueStats;
use crate::model::{
    Event, NewTask, Oid, Share, ShareEntry, ShareId, Task, TaskCounts, TaskId, TaskQuery,
    TaskUpdate, Tstamp, UserPolicy,
};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// What the metadata store can fail with. Backend-neutral: each backend maps its driver's
/// errors into these at its edge, deciding there whether a failure is the store's (the
/// whole batch is refused) or the job's own (only the job is).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not do its part (I/O error, corruption, a lock, an interrupt):
    /// never the job's own doing.
    #[error("metadata store: {0}")]
    Backend(String),
    /// A constraint the job's own change broke (other than a live-name clash).
    #[error("constraint: {0}")]
    Constraint(String),
    /// A row that is not there, or a value that does not convert: the job's own account.
    #[error("row: {0}")]
    Row(String),
    /// The disk holding the metadata store is full; nothing of the transaction was kept.
    #[error("the disk is full: {0}")]
    Full(String),
    #[error("a live object with this name already exists in the folder")]
    UniqueName,
    #[error("stored event {0} does not decode: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("the writer is gone")]
    WriterGone,
    /// The database cannot be reached (a server of its own, PostgreSQL): try again later;
    /// nothing of the job was kept.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    /// The batch the job ran in was rolled back (its COMMIT failed, or the backend rolled
    /// the transaction back under a batch-mate); nothing of the job was kept.
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

impl StoreError {
    /// Whether this says the disk is full (the backend's own code, or ENOSPC from the OS).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Full(_) => true,
            StoreError::Io(e) => crate::blob::is_storage_full(e),
            _ => false,
        }
    }

    /// Whether the store, not the job, failed: such an error refuses the job's whole batch
    /// even if the job went on and returned Ok.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Backend(_)
                | StoreError::Unavailable(_)
                | StoreError::Full(_)
                | StoreError::NotCommitted(_)
                | StoreError::Io(_)
        )
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

/// Where an object whose current version is `e` lies now: its parent's fulldir as the
/// index has it (a move of an ancestor rewrites the index, never a stored version), then
/// the parent. For re-pointing the index at an older version after a purge: the fulldir
/// stored with that version may predate a move.
pub(crate) fn live_fulldir<S: MetaRead + ?Sized>(s: &S, e: &Event) -> Result<String, StoreError> {
    if e.parentoid == e.oid {
        return Ok(e.fulldir.clone());
    }
    Ok(match s.current(e.parentoid)? {
        Some(p) => format!("{}{}/", p.event.fulldir, p.event.oid),
        None => e.fulldir.clone(),
    })
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
    /// The object the blob lies in when that is not `rname` (after a re-encryption);
    /// `None`: at `rname`.
    pub location: Option<String>,
    /// The tstamp since which its data key is in use: `created`, or that of the
    /// transaction that switched it to a fresh one. Not written by `put_blob`.
    pub keyed: Tstamp,
}

impl BlobRow {
    /// The object in the blob store holding this blob's bytes.
    pub fn location(&self) -> &str {
        self.location.as_deref().unwrap_or(&self.rname)
    }
}

/// A re-encrypted blob's new data key and bytes: what [`MetaWrite::switch_blob`] switches
/// to in one transaction.
#[derive(Debug, Clone)]
pub enum BlobSwitch {
    /// A new object at `location`.
    Stored { location: String, wrapped: Wrapped },
    /// New sealed bytes of an inline blob, re-sealed in place.
    Inline {
        stored: bytes::Bytes,
        wrapped: Wrapped,
    },
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
    /// The newest tstamp in the event log or the share log (`Tstamp(0)` when both are empty).
    fn max_tstamp(&self) -> Result<Tstamp, StoreError>;
    /// The blob named `rname`, with its wrapped key (and bytes, if inline).
    fn blob(&self, rname: &str) -> Result<Option<BlobRow>, StoreError>;
    /// The blob rows of those of `rnames` that are recorded, in no order: one read where a
    /// read is a round trip (a feed step names a blob for each file version it scans).
    fn blobs_named(&self, rnames: &[&str]) -> Result<Vec<BlobRow>, StoreError> {
        let mut rows = Vec::new();
        for rname in rnames {
            rows.extend(self.blob(rname)?);
        }
        Ok(rows)
    }
    /// Whether any remaining event version uses the blob.
    fn blob_in_use(&self, rname: &str) -> Result<bool, StoreError>;
    /// Blob rows ordered by rname, after `after`, at most `limit` (for fsck and rekey).
    fn blobs_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<BlobRow>, StoreError>;
    /// Whether some blob row's bytes lie in the object `location` (for gc).
    fn location_in_use(&self, location: &str) -> Result<bool, StoreError>;
    /// The share `id` (its latest state), if any.
    fn share(&self, id: ShareId) -> Result<Option<Share>, StoreError>;
    /// Every share on one of `oids`, in any state.
    fn shares_on(&self, oids: &[Oid]) -> Result<Vec<Share>, StoreError>;
    /// Every share whose audience is one of the (claim, value) `pairs`, in any state: a
    /// caller's incoming shares, read in one go for every decision about them.
    fn shares_to(&self, pairs: &[(String, String)]) -> Result<Vec<Share>, StoreError>;
    /// The shares on one of `oids` whose audience is one of `pairs`, in any state: what one
    /// decision needs, whatever else is shared with the caller or on the object.
    fn shares_to_on(
        &self,
        pairs: &[(String, String)],
        oids: &[Oid],
    ) -> Result<Vec<Share>, StoreError>;
    /// Every share made by the identity labelled `label`, in any state.
    fn shares_by(&self, label: &str) -> Result<Vec<Share>, StoreError>;
    /// The shares made through share `id`.
    fn shares_through(&self, id: ShareId) -> Result<Vec<Share>, StoreError>;
    /// The link share whose secret hashes to `hash` (SHA-256 hex), if any.
    fn link_share(&self, hash: &str) -> Result<Option<Share>, StoreError>;
    /// Share `id`'s log, oldest first.
    fn share_log(&self, id: ShareId) -> Result<Vec<ShareEntry>, StoreError>;
    /// Share log entries after `after`, in tstamp (= commit) order, at most `limit` (the
    /// notification feed, beside `events_since`).
    fn share_log_since(&self, after: Tstamp, limit: usize) -> Result<Vec<ShareEntry>, StoreError>;
    /// Open shares whose expiry is at or before `now` (seconds since the epoch), at most
    /// `limit`, soonest first: what the expiry sweep records as `expired`.
    fn shares_expired(&self, now: u64, limit: usize) -> Result<Vec<Share>, StoreError>;
    /// The blobs of the file versions at or before `upto` of `oid` and of everything beneath
    /// it (live or deleted), as (object, rname), one row per distinct pair: what a share of
    /// `oid` let its recipients read.
    fn blobs_beneath(&self, oid: Oid, upto: Tstamp) -> Result<Vec<(Oid, String)>, StoreError>;
    fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError>;
    /// Tasks as `q` selects them, newest first.
    fn tasks(&self, q: &TaskQuery) -> Result<Vec<Task>, StoreError>;
    /// How many of `parent`'s children are in each state.
    fn task_children(&self, parent: TaskId) -> Result<TaskCounts, StoreError>;
    /// The failed children of `parent`.
    fn failed_children(&self, parent: TaskId) -> Result<Vec<TaskId>, StoreError>;
    /// The child of `parent` with this target, if one is linked (in any state).
    fn task_child_for(&self, parent: TaskId, target: &str) -> Result<Option<TaskId>, StoreError>;
    /// The parents `child` is linked to.
    fn task_parents(&self, child: TaskId) -> Result<Vec<TaskId>, StoreError>;
    fn queue_stats(&self) -> Result<QueueStats, StoreError>;
    /// When the next task falls due (ms since the epoch): the earliest `run_after` of a
    /// task to run, or lease end of a running one; `None` when there is none.
    fn next_task_due(&self) -> Result<Option<u64>, StoreError>;
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
    /// Records a change to a share: appends `entry` to the share log and makes its
    /// `state` the share's latest.
    fn log_share(&mut self, entry: &ShareEntry) -> Result<(), StoreError>;
    /// Binds a new link share to the hash of its secret (the secret itself is never stored).
    fn bind_link(&mut self, id: ShareId, hash: &str) -> Result<(), StoreError>;
    /// Forgets a blob no version uses any more (its object is deleted after commit).
    fn drop_blob(&mut self, rname: &str) -> Result<(), StoreError>;
    /// Replaces a blob's wrapped data key (`vellum rekey`) if it is still `was`; the blob
    /// is not touched. Returns whether it did.
    fn rewrap_blob(
        &mut self,
        rname: &str,
        was: &Wrapped,
        wrapped: &Wrapped,
    ) -> Result<bool, StoreError>;
    /// Switches a re-encrypted blob to its new data key and its new bytes, if its key is
    /// still `was` (each wrapping of each data key is distinct). Returns whether it did:
    /// false when the blob is gone (purged) or its key changed meanwhile (another
    /// re-encryption, or `vellum rekey`).
    /// `at` is the switch's tstamp (the blob's `keyed` from then on).
    fn switch_blob(
        &mut self,
        rname: &str,
        was: &Wrapped,
        to: &BlobSwitch,
        at: Tstamp,
    ) -> Result<bool, StoreError>;
    /// Whether share-log entries queue webhook deliveries (the outbox is on).
    fn share_outbox(&self) -> bool;
    /// Queues `t` (its id from the oid clock), or joins the open task of the same kind and
    /// target, raising its `after`. Returns the id and whether the task is new.
    fn enqueue_task(&mut self, t: &NewTask, now_ms: u64) -> Result<(TaskId, bool), StoreError>;
    /// Makes `parent` wait for `child` too.
    fn link_task(&mut self, parent: TaskId, child: TaskId) -> Result<(), StoreError>;
    /// Leases the next task due (or whose lease ran out) to `node` until `until_ms`,
    /// counting an attempt. Webhooks of one share are leased in order, one at a time.
    fn lease_task(
        &mut self,
        now_ms: u64,
        node: &str,
        until_ms: u64,
    ) -> Result<Option<Task>, StoreError>;
    /// Leases up to `n` more due tasks of `kind` (never webhooks' order-bound ones) to
    /// `node`, as [`MetaWrite::lease_task`] does one: a worker runs like tasks in a batch.
    fn lease_more(
        &mut self,
        kind: crate::model::TaskKind,
        n: usize,
        now_ms: u64,
        node: &str,
        until_ms: u64,
    ) -> Result<Vec<Task>, StoreError>;
    /// Extends `node`'s lease of task `id`; false when it no longer holds it.
    fn renew_task(&mut self, id: TaskId, node: &str, until_ms: u64) -> Result<bool, StoreError>;
    /// Applies `u` to task `id` and clears its lease; with `node`, only if that node still
    /// holds the lease. Returns whether it applied.
    fn update_task(
        &mut self,
        id: TaskId,
        node: Option<&str>,
        u: &TaskUpdate,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Gives back every lease `node` holds (a clean shutdown); returns how many.
    fn release_tasks(&mut self, node: &str, now_ms: u64) -> Result<u64, StoreError>;
    /// Forgets at most `limit` tasks done before `before_ms` (with their links), keeping
    /// any that a parent not yet done still counts. Returns how many.
    fn prune_tasks(&mut self, before_ms: u64, limit: usize) -> Result<u64, StoreError>;
}

/// What `vellum fsck` finds in the log itself: how many events there are, and each
/// problem as (what, problem).
#[derive(Debug, Default)]
pub struct EventCheck {
    pub events: u64,
    pub problems: Vec<(String, String)>,
}

impl EventCheck {
    /// Counts a stored event, and notes it if its body does not decode.
    pub(crate) fn event(&mut self, decoded: Result<Event, StoreError>, oid: i64, tstamp: i64) {
        self.events += 1;
        if let Err(e) = decoded {
            self.problems.push((
                format!("event {}@{}", Oid::from_i64(oid), Tstamp::from_i64(tstamp)),
                e.to_string(),
            ));
        }
    }

    /// Notes an event that names a blob no row records.
    pub(crate) fn unrecorded_blob(&mut self, oid: i64, tstamp: i64, rname: String) {
        self.problems.push((
            rname,
            format!(
                "event {}@{} names this blob, which is not recorded",
                Oid::from_i64(oid),
                Tstamp::from_i64(tstamp)
            ),
        ));
    }
}

/// A metadata backend: read snapshots, write transactions with a savepoint per job, dry
/// runs, blocking reads for streamed responses, and a signal of every commit.
///
/// **The clock's contract**, which every backend keeps however many processes write:
/// tstamps and oids handed out by [`MetaWrite::next_tstamp`] and [`MetaWrite::next_oid`]
/// are unique and strictly increasing store-wide (never reused, even after a restart or a
/// step back of the wall clock), and the order of commits equals the order of the tstamps
/// they carry: once a reader sees an event at tstamp T, no event with a tstamp below T can
/// still commit. The notification feed (`events_since`) depends on this: resuming after T
/// misses nothing. SQLite meets it with a single writer that owns the clock; PostgreSQL with
/// one clock row that each batch's transaction locks from its BEGIN to its COMMIT.
///
/// **Transactions**: a job passed to [`Backend::write`] runs inside its own savepoint of a
/// transaction shared with other jobs (group commit); its changes are kept only if it
/// returns Ok, and its result arrives only once that transaction is durably committed. A
/// failure of the store itself (not of the job) refuses every job of the transaction.
pub trait Backend: Send + Sync + 'static {
    /// A consistent read snapshot.
    type Snapshot<'s>: MetaRead;
    /// A job's view of the open write transaction.
    type Txn<'t>: MetaWrite;

    /// Runs `f` in a write transaction; its changes are kept if it returns Ok, and the
    /// result arrives once they are committed.
    fn write<R, E, F>(&self, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Self::Txn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;

    /// Runs `f` as [`Backend::write`] does, as background work (the task queue's): the
    /// backend may hold it back while requests' writes wait, so that background work takes
    /// only a small share of a busy store. By default, no different from `write`.
    fn write_background<R, E, F>(&self, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Self::Txn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.write(f)
    }

    /// Runs `f` exactly as [`Backend::write`] would and always rolls it back: a rehearsal
    /// that sees what a real write would (to authorise before receiving blobs).
    fn dry_run<R, E, F>(&self, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Self::Txn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;

    /// Runs `f` against one consistent snapshot. Blocking: call it from a blocking thread.
    fn read_blocking<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Self::Snapshot<'_>) -> Result<R, E>,
        E: From<StoreError>;

    /// Decodes every event and checks that each blob an event names is recorded.
    fn check_events(&self) -> impl Future<Output = Result<EventCheck, StoreError>> + Send;

    /// A value bumped after every commit that kept something: wakes the feeds.
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;

    /// A line for the start-up log.
    fn describe(&self) -> String;
}

/// The metadata store the service runs on: one of the backends, chosen at start-up.
/// Nothing above `store/` names a backend; jobs see `dyn MetaRead` / `dyn MetaWrite`.
/// Cheap to clone (handles to the backend's shared parts).
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Opens PostgreSQL when `postgres` is set, else the embedded default (SQLite in
    /// `data_dir`), creating or migrating the schema if needed.
    pub fn open(
        data_dir: &Path,
        sqlite: &crate::config::SqliteConfig,
        postgres: Option<&crate::config::PostgresConfig>,
    ) -> Result<Store, StoreError> {
        match postgres {
            Some(pg) => Ok(Store::Postgres(PgStore::open(pg)?)),
            None => Ok(Store::Sqlite(SqliteStore::open(data_dir, sqlite)?)),
        }
    }

    /// Whether a store exists at `data_dir` (the maintenance commands refuse to make one).
    /// A PostgreSQL store is the database's, and always counts as there.
    pub fn exists(data_dir: &Path, postgres: Option<&crate::config::PostgresConfig>) -> bool {
        postgres.is_some() || SqliteStore::exists(data_dir)
    }

    pub async fn write<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut dyn MetaWrite) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.write(move |t| f(t)).await,
            Store::Postgres(s) => s.write(move |t| f(t)).await,
        }
    }

    /// [`Store::write`] for background work (see [`Backend::write_background`]).
    pub async fn write_background<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut dyn MetaWrite) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.write_background(move |t| f(t)).await,
            Store::Postgres(s) => s.write_background(move |t| f(t)).await,
        }
    }

    pub async fn dry_run<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut dyn MetaWrite) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.dry_run(move |t| f(t)).await,
            Store::Postgres(s) => s.dry_run(move |t| f(t)).await,
        }
    }

    /// Runs `f` against one consistent snapshot, on the blocking pool.
    pub async fn read<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&dyn MetaRead) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.read(move |snap| f(snap)).await,
            Store::Postgres(s) => s.read(move |snap| f(snap)).await,
        }
    }

    /// [`Store::read`] from a thread that may block (streamed listings, the write path's
    /// checks, which already run on the blocking pool).
    pub fn read_blocking<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&dyn MetaRead) -> Result<R, E>,
        E: From<StoreError>,
    {
        match self {
            Store::Sqlite(s) => s.read_blocking(move |snap| f(snap)),
            Store::Postgres(s) => s.read_blocking(move |snap| f(snap)),
        }
    }

    pub async fn check_events(&self) -> Result<EventCheck, StoreError> {
        match self {
            Store::Sqlite(s) => s.check_events().await,
            Store::Postgres(s) => s.check_events().await,
        }
    }

    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Store::Sqlite(s) => s.commits(),
            Store::Postgres(s) => s.commits(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => s.describe(),
            Store::Postgres(s) => s.describe(),
        }
    }

    /// Makes every share-log entry from now on queue a webhook delivery in its own
    /// transaction (set at start-up when `SHARE_WEBHOOK_URL` is).
    pub fn set_share_outbox(&self, on: bool) {
        match self {
            Store::Sqlite(s) => s.set_share_outbox(on),
            Store::Postgres(s) => s.set_share_outbox(on),
        }
    }
}
