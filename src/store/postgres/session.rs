//! Snapshots and write transactions on PostgreSQL connections.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::conn::{get, Conn};
use crate::store::clock::Clock;
use crate::store::writer::{Failure, Job, Session};
use crate::store::StoreError;

/// One store operation on a snapshot's or a transaction's connection.
pub(super) trait HasConn {
    fn with<T>(&self, op: impl FnOnce(&mut Conn) -> Result<T, StoreError>)
        -> Result<T, StoreError>;
}

/// A reader's consistent snapshot: one REPEATABLE READ, READ ONLY transaction.
pub struct PgSnapshot<'c> {
    pub(super) conn: RefCell<&'c mut Conn>,
}

impl HasConn for PgSnapshot<'_> {
    fn with<T>(
        &self,
        op: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        op(&mut self.conn.borrow_mut())
    }
}

/// A job's view of its node's open write transaction, which holds the store's clock row.
pub struct PgWriteCtx<'c> {
    pub(super) conn: RefCell<&'c mut Conn>,
    pub(super) clock: &'c mut Clock,
    /// The first storage failure a statement of this job met: the batch is refused even
    /// if the job went on and returned Ok.
    pub(super) fault: Cell<Option<Failure>>,
    /// Share-log entries queue webhook deliveries.
    pub(super) outbox: bool,
}

impl HasConn for PgWriteCtx<'_> {
    fn with<T>(
        &self,
        op: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        op(&mut self.conn.borrow_mut()).inspect_err(|e| {
            if e.is_storage_failure() {
                let first = self.fault.take();
                self.fault.set(Some(
                    first.unwrap_or_else(|| Failure::of(e, "a statement failed")),
                ));
            }
        })
    }
}

/// The writer thread's state on PostgreSQL: its node's one write connection. Each batch's
/// transaction begins by locking the store's one clock row and ends by advancing it, so
/// batches of all nodes are serialised from BEGIN to COMMIT and commit order is tstamp
/// order across nodes (the feed depends on it, SPEC §10). Within the batch the clock is
/// this writer's alone, so tstamps are handed out without a round trip.
pub(super) struct PgWriter {
    conn: Option<Conn>,
    connect: Box<dyn Fn() -> Result<Conn, StoreError> + Send>,
    clock: Clock,
    /// The clock row as the batch found it: it is written back only if the batch used it.
    clock_at_begin: u64,
    /// Whether a transaction is open on `conn`.
    open: bool,
    outbox: Arc<AtomicBool>,
}

impl PgWriter {
    pub(super) fn new(
        connect: Box<dyn Fn() -> Result<Conn, StoreError> + Send>,
        outbox: Arc<AtomicBool>,
    ) -> PgWriter {
        PgWriter {
            conn: None,
            connect,
            clock: Clock::new(0),
            clock_at_begin: 0,
            open: false,
            outbox,
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, Failure> {
        match &mut self.conn {
            Some(c) => Ok(c),
            None => Err(Failure::lost("the connection was lost")),
        }
    }

    fn exec(&mut self, sql: &str) -> Result<(), Failure> {
        self.conn()?.batch(sql).map_err(|e| Failure::of(&e, sql))
    }
}

impl Session for PgWriter {
    type Ctx<'a> = PgWriteCtx<'a>;

    fn begin(&mut self) -> Result<(), Failure> {
        self.roll_back();
        // A connection that broke (the database restarted, the network failed) is
        // replaced here, so writes recover once the database is back.
        if self.conn.as_ref().is_none_or(Conn::is_closed) {
            self.conn = None;
            self.conn = Some((self.connect)().map_err(|e| Failure::of(&e, "connecting"))?);
        }
        self.exec("BEGIN")?;
        self.open = true;
        let row = self
            .conn()?
            .query_one("SELECT last FROM clock FOR UPDATE", &[])
            .map_err(|e| Failure::of(&e, "locking the clock"))?;
        let last: i64 = get(&row, 0).map_err(|e| Failure::of(&e, "reading the clock"))?;
        self.clock_at_begin = last as u64;
        self.clock = Clock::new(last as u64);
        Ok(())
    }

    fn run_job(&mut self, job: &mut dyn Job<Self>) -> Result<bool, Failure> {
        self.exec("SAVEPOINT job")?;
        let outbox = self.outbox.load(Ordering::Relaxed);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::lost("SAVEPOINT"));
        };
        let mut ctx = PgWriteCtx {
            conn: RefCell::new(conn),
            clock: &mut self.clock,
            fault: Cell::new(None),
            outbox,
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&mut ctx)));
        if let Some(f) = ctx.fault.take() {
            // A statement failed for a reason that is not the job's, and the job may have
            // gone on without it.
            return Err(f);
        }
        match outcome {
            Ok(true) => self.exec("RELEASE job").map(|()| true),
            Ok(false) => self.exec("ROLLBACK TO job; RELEASE job").map(|()| false),
            Err(_) => {
                tracing::error!("a write job panicked; its changes are rolled back");
                self.exec("ROLLBACK TO job; RELEASE job").map(|()| false)
            }
        }
    }

    fn commit(&mut self, kept: usize) -> Result<(), Failure> {
        if kept == 0 {
            // Nothing to keep (refusals, rehearsals): no durable commit is needed.
            self.roll_back();
            return Ok(());
        }
        let last = self.clock.last();
        if last != self.clock_at_begin {
            let last = last as i64;
            self.conn()?
                .execute("UPDATE clock SET last = $1", &[&last])
                .map_err(|e| Failure::of(&e, "advancing the clock"))?;
        }
        // Delivered at the commit, to every node's listener (the feeds).
        self.exec("NOTIFY vellum_commits")?;
        let done = self.exec("COMMIT");
        self.open = false;
        done
    }

    fn roll_back(&mut self) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        if let Some(c) = &mut self.conn {
            if let Err(e) = c.batch("ROLLBACK") {
                tracing::error!(error = %e, "ROLLBACK failed; the connection is replaced");
                self.conn = None;
            }
        }
    }
}
