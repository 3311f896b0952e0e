//! The embedded SQLite backend: WAL, one writer thread with group commit, a pool of
//! read-only connections.
//!
//! - `mod.rs`: opening (pragmas, migrations, the commit hook), the [`Backend`] impl, and
//!   the one place a `rusqlite::Error` becomes a [`StoreError`];
//! - `writer.rs`: the writer thread, its batches and their savepoints;
//! - `readers.rs`: the pool of read-only connections and their snapshots;
//! - `reads.rs` / `writes.rs`: [`MetaRead`] and [`MetaWrite`] in SQL;
//! - `faults.rs`: a test hook that makes the writer's Nth statement (or its disk) fail.

mod faults;
mod readers;
mod reads;
mod shares;
mod tasks;
mod writer;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::{Connection, ErrorCode};

use super::clock::Clock;
use super::{Backend, EventCheck, StoreError};
use crate::config::{SqliteConfig, Synchronous};

#[doc(hidden)]
pub use faults::FaultInjector;
pub use readers::ReadSnapshot;
pub use writer::WriteCtx;

use super::writer::Queued;
use readers::ReaderPool;
use writer::Writer;

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
/// DO NOT CHANGE or reorder released entries: append.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../schema/0001_init.sql"),
    include_str!("../../../schema/0002_blobs.sql"),
    include_str!("../../../schema/0003_blob_locations.sql"),
    include_str!("../../../schema/0004_shares.sql"),
    include_str!("../../../schema/0005_tasks.sql"),
];

/// How many migrations this version knows (a store at another schema is not copied).
pub(crate) const MIGRATIONS_KNOWN: usize = MIGRATIONS.len();

/// The largest tstamp or oid in the store: where its clock starts.
pub(crate) const HIGH_WATER_SQL: &str = "SELECT max(coalesce((SELECT max(tstamp) FROM events), 0),
                coalesce((SELECT max(oid) FROM objects), 0),
                coalesce((SELECT max(tstamp) FROM purges), 0),
                coalesce((SELECT max(tstamp) FROM share_log), 0),
                coalesce((SELECT max(id) FROM shares), 0),
                coalesce((SELECT max(id) FROM tasks), 0),
                coalesce((SELECT max(keyed_at) FROM blobs), 0))";

/// Bytes the WAL file is cut back to when SQLite restarts it after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// The database file inside the data folder. DO NOT CHANGE: existing stores live there.
const DB_FILE: &str = "vellum.db";

/// Every `rusqlite::Error` becomes a [`StoreError`] here, by SQLite's result codes (never
/// by the text of its messages): whether the store failed or the job broke a rule of its
/// own decides whether the job's batch-mates are refused too.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error() {
            Some(f) if f.code == ErrorCode::DiskFull => StoreError::Full(e.to_string()),
            // The commit hook's refusal is the store's (an autocommit on the side, or an
            // injected fault), not a rule the job broke.
            Some(f)
                if f.code == ErrorCode::ConstraintViolation
                    && f.extended_code != rusqlite::ffi::SQLITE_CONSTRAINT_COMMITHOOK =>
            {
                StoreError::Constraint(e.to_string())
            }
            Some(_) => StoreError::Backend(e.to_string()),
            // Not SQLite's: a row that is not there, a value that does not convert.
            None => StoreError::Row(e.to_string()),
        }
    }
}

/// The embedded backend. Cheap to clone: the writer's queue and the reader pool are shared.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Queued<Writer>>,
    readers: Arc<ReaderPool>,
    db_path: PathBuf,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    /// Set when `SHARE_WEBHOOK_URL` is: every share-log entry queues its delivery in the
    /// same transaction (the outbox).
    outbox: Arc<AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/vellum.db`, runs migrations, starts the writer.
    pub fn open(dir: &Path, cfg: &SqliteConfig) -> Result<SqliteStore, StoreError> {
        Self::open_with(dir, cfg, None)
    }

    /// Whether `dir` holds a database.
    pub fn exists(dir: &Path) -> bool {
        Self::db_file(dir).exists()
    }

    /// The database file of a store in `dir`.
    pub fn db_file(dir: &Path) -> PathBuf {
        dir.join(DB_FILE)
    }

    /// [`SqliteStore::open`] with a fault injector on the writer's connection, for tests.
    #[doc(hidden)]
    pub fn open_with(
        dir: &Path,
        cfg: &SqliteConfig,
        faults: Option<Arc<FaultInjector>>,
    ) -> Result<SqliteStore, StoreError> {
        crate::files::create_private_dir(dir)?;
        let db_path = dir.join(DB_FILE);
        crate::files::create_private_file(&db_path)?;
        let mut conn = Connection::open(&db_path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match cfg.synchronous {
                Synchronous::Full => "FULL",
                Synchronous::Normal => "NORMAL",
            },
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // A large transaction grows the WAL far past its usual few MiB (SQLite checkpoints
        // every 1,000 pages); without a limit the file keeps that size for good.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        stable_plans(&conn)?;
        migrate(&conn)?;
        let high_water: i64 = conn.query_row(HIGH_WATER_SQL, [], |r| r.get(0))?;
        let committing = Arc::new(AtomicBool::new(false));
        let gate = committing.clone();
        let injected = faults.clone();
        // Returning true turns the commit into a rollback.
        conn.commit_hook(Some(move || {
            !gate.load(Ordering::Relaxed) || injected.as_ref().is_some_and(|f| f.fail_commit())
        }))?;
        if let Some(f) = &faults {
            f.install(&mut conn, committing.clone())?;
        }
        let commits = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let outbox = Arc::new(AtomicBool::new(false));
        let writer = Writer::new(
            conn,
            Clock::new(high_water as u64),
            committing,
            outbox.clone(),
        );
        let (tx, rx) = mpsc::channel::<Queued<Writer>>();
        let signal = commits.clone();
        std::thread::Builder::new()
            .name("vellum-writer".into())
            .spawn(move || super::writer::serve(writer, rx, signal))?;
        Ok(SqliteStore {
            jobs: tx,
            readers: Arc::new(ReaderPool::new(db_path.clone())),
            db_path,
            commits,
            outbox,
        })
    }

    /// Makes every share-log entry from now on queue a webhook delivery.
    pub fn set_share_outbox(&self, on: bool) {
        self.outbox.store(on, Ordering::Relaxed);
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    async fn submit<R, E, F>(&self, f: F, dry: bool, background: bool) -> Result<R, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        super::writer::submit(&self.jobs, f, dry, background).await
    }

    /// Runs `f` on a pooled read-only connection on the blocking pool.
    pub async fn read<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&ReadSnapshot<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with_snapshot(f))
            .await
            .map_err(|_| E::from(StoreError::Backend("a read task failed".into())))?
    }
}

impl Backend for SqliteStore {
    type Snapshot<'s> = ReadSnapshot<'s>;
    type Txn<'t> = WriteCtx<'t>;

    fn write<R, E, F>(&self, f: F) -> impl std::future::Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(f, false, false)
    }

    fn write_background<R, E, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(f, false, true)
    }

    fn dry_run<R, E, F>(&self, f: F) -> impl std::future::Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(f, true, false)
    }

    fn read_blocking<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&ReadSnapshot<'_>) -> Result<R, E>,
        E: From<StoreError>,
    {
        self.readers.with_snapshot(f)
    }

    async fn check_events(&self) -> Result<EventCheck, StoreError> {
        self.read(|s| -> Result<_, StoreError> {
            let conn = s.conn();
            let mut check = EventCheck::default();
            let mut st =
                conn.prepare("SELECT oid, tstamp, body FROM events ORDER BY oid, tstamp")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let (oid, t, body): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                check.event(reads::decode(oid, t, &body), oid, t);
            }
            let mut st = conn.prepare(
                "SELECT eb.oid, eb.tstamp, eb.rname FROM event_blobs eb
                 LEFT JOIN blobs b ON b.rname = eb.rname WHERE b.rname IS NULL",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let (oid, t, rname): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                check.unrecorded_blob(oid, t, rname);
            }
            Ok(check)
        })
        .await
    }

    fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.db_path.display())
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let done: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let done = done as usize;
    if done > MIGRATIONS.len() {
        return Err(StoreError::Migration(format!(
            "the database is at schema {done}, newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Migration(format!("migration {}: {e}", i + 1)))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Plans that never depend on bound values. Without this SQLite marks statements with a
/// term like `oid = ?1` for re-preparing whenever their bindings are cleared, which
/// rusqlite's statement cache does on every reuse: a quarter of the CPU of small writes
/// went to re-parsing SQL. Our queries have no plan a bound value could improve.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod writer_faults;
