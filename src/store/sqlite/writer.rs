//! SQLite's side of group commit (`store::writer`): the only read-write connection and
//! the clock. Batches run in `BEGIN IMMEDIATE`; because SQLite may roll a transaction back
//! by itself (disk full, I/O error, out of memory), autocommit is checked after every job:
//! a SAVEPOINT outside a transaction would open a new one that its RELEASE commits. With
//! `synchronous=FULL` an Ok means the job's events are on disk. A commit hook refuses
//! every commit but the batch's own COMMIT, so nothing can autocommit on the side.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rusqlite::Connection;

use crate::store::clock::Clock;
use crate::store::writer::{Failure, Job, Session};
use crate::store::StoreError;

/// The writer thread's state: the only read-write connection, and the clock.
pub(super) struct Writer {
    conn: Connection,
    clock: Clock,
    /// True only while the batch's COMMIT runs: the commit hook refuses every other commit.
    committing: Arc<AtomicBool>,
    /// Whether share-log entries also queue a webhook delivery (see `SqliteStore`).
    outbox: Arc<AtomicBool>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        clock: Clock,
        committing: Arc<AtomicBool>,
        outbox: Arc<AtomicBool>,
    ) -> Self {
        Writer {
            conn,
            clock,
            committing,
            outbox,
        }
    }

    fn exec(&self, sql: &str) -> Result<(), Failure> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| Failure::of(&StoreError::from(e), sql))
    }

    fn ensure_open(&self, before: &str) -> Result<(), Failure> {
        if self.conn.is_autocommit() {
            Err(Failure::lost(before))
        } else {
            Ok(())
        }
    }
}

impl Session for Writer {
    type Ctx<'a> = WriteCtx<'a>;

    fn begin(&mut self) -> Result<(), Failure> {
        // A ROLLBACK that failed may have left the last batch's transaction open.
        self.roll_back();
        self.exec("BEGIN IMMEDIATE")
    }

    /// Runs one job in its savepoint; Ok says whether its changes were kept. An error
    /// means the batch cannot be committed.
    fn run_job(&mut self, job: &mut dyn Job<Self>) -> Result<bool, Failure> {
        // Outside a transaction, SAVEPOINT would open a new one that RELEASE commits.
        self.ensure_open("SAVEPOINT")?;
        self.exec("SAVEPOINT job")?;
        let mut ctx = WriteCtx {
            conn: &self.conn,
            clock: &mut self.clock,
            fault: Cell::new(None),
            outbox: self.outbox.load(Ordering::Relaxed),
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&mut ctx)));
        let fault = ctx.fault.take();
        if self.conn.is_autocommit() {
            // SQLite rolled the whole transaction back, jobs released before this one too.
            return Err(fault.unwrap_or_else(|| Failure::lost("RELEASE")));
        }
        if let Some(f) = fault {
            // SQLite kept the transaction but a statement failed for a reason that is not
            // the job's, and the job may have gone on without it.
            return Err(f);
        }
        match outcome {
            Ok(true) => self.exec("RELEASE job").map(|()| true),
            Ok(false) => {
                self.exec("ROLLBACK TO job")?;
                self.exec("RELEASE job").map(|()| false)
            }
            Err(_) => {
                tracing::error!("a write job panicked; its changes are rolled back");
                self.exec("ROLLBACK TO job")?;
                self.exec("RELEASE job").map(|()| false)
            }
        }
    }

    fn commit(&mut self, kept: usize) -> Result<bool, Failure> {
        self.ensure_open("COMMIT")?;
        self.committing.store(true, Ordering::Relaxed);
        let done = self.exec("COMMIT");
        self.committing.store(false, Ordering::Relaxed);
        done.map(|()| kept > 0)
    }

    /// Rolls back the open transaction, if any. Should that fail, the next batch tries
    /// again before its BEGIN (which would fail inside a transaction).
    fn roll_back(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "ROLLBACK failed");
            }
        }
    }
}

/// The writer's view: its open transaction and the clock.
pub struct WriteCtx<'c> {
    pub(super) conn: &'c Connection,
    pub(super) clock: &'c mut Clock,
    /// The first storage failure a statement of this job met: the batch is refused even
    /// if the job went on and returned Ok.
    pub(super) fault: Cell<Option<Failure>>,
    /// Share-log entries queue webhook deliveries.
    pub(super) outbox: bool,
}

impl WriteCtx<'_> {
    pub(super) fn note(&self, e: StoreError) -> StoreError {
        if e.is_storage_failure() {
            let first = self.fault.take();
            self.fault.set(Some(
                first.unwrap_or_else(|| Failure::of(&e, "a statement failed")),
            ));
        }
        e
    }
}
