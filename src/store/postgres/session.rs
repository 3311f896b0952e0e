//! Snapshots and write transactions on PostgreSQL connections.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::conn::Conn;
use super::COMMITS_CHANNEL;
use crate::model::Oid;
use crate::store::clock::Clock;
use crate::store::writer::{Failure, Job, Session};
use crate::store::{Current, StoreError};

/// One store operation on a snapshot's or a transaction's connection.
pub(super) trait HasConn {
    fn with<T>(&self, op: impl FnOnce(&mut Conn) -> Result<T, StoreError>)
        -> Result<T, StoreError>;
    /// Objects' current state as already read where it cannot have changed since (see
    /// [`Seen`]).
    fn seen(&self) -> &RefCell<Seen>;
}

/// Most bytes (of the objects' stored text) a [`Seen`] holds; past it, it starts again.
/// Bounds its memory whatever a caller makes a request read: one is kept per read snapshot
/// (at most `DATABASE_POOL` at once) and one by the writer.
const MAX_SEEN_BYTES: usize = 256 << 10;
/// An object larger than this is not kept.
const MAX_SEEN_OBJECT: usize = 32 << 10;

/// Objects' current state as read, kept where nothing else can change it: for a read
/// snapshot, its whole life (REPEATABLE READ); for the writer, one batch (which holds the
/// clock row, so no other node writes meanwhile), forgotten at every change that could
/// make an entry wrong. Each entry saved is a round trip: jobs of one batch often act in
/// the same folder, and the write path's checks read it twice.
#[derive(Default)]
pub(super) struct Seen {
    objects: HashMap<Oid, Current>,
    /// The stored size of what `objects` holds.
    bytes: usize,
}

impl Seen {
    pub(super) fn get(&self, oid: Oid) -> Option<Current> {
        self.objects.get(&oid).cloned()
    }

    /// Keeps `c`, read as `size` bytes.
    pub(super) fn put(&mut self, oid: Oid, c: &Current, size: usize) {
        // A few hundred bytes of hash table and struct per entry beside the text.
        let size = size + 256;
        if size > MAX_SEEN_OBJECT {
            return;
        }
        if self.bytes + size > MAX_SEEN_BYTES {
            self.clear();
        }
        if self.objects.insert(oid, c.clone()).is_none() {
            self.bytes += size;
        }
    }

    pub(super) fn clear(&mut self) {
        self.objects.clear();
        self.bytes = 0;
    }
}

/// A reader's consistent snapshot: one REPEATABLE READ, READ ONLY transaction, begun at
/// its first read (a snapshot that reads nothing costs the database nothing).
pub struct PgSnapshot<'c> {
    pub(super) conn: RefCell<&'c mut Conn>,
    pub(super) begun: Cell<bool>,
    seen: RefCell<Seen>,
}

impl<'c> PgSnapshot<'c> {
    pub(super) fn new(conn: &'c mut Conn) -> Self {
        PgSnapshot {
            conn: RefCell::new(conn),
            begun: Cell::new(false),
            seen: RefCell::default(),
        }
    }

    /// The reads of a transaction already open on `conn` (a write's own view).
    pub(super) fn within(conn: &'c mut Conn) -> Self {
        PgSnapshot {
            conn: RefCell::new(conn),
            begun: Cell::new(true),
            seen: RefCell::default(),
        }
    }
}

impl HasConn for PgSnapshot<'_> {
    fn with<T>(
        &self,
        op: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.borrow_mut();
        if !self.begun.get() {
            // Sent with the first read, in one round trip.
            conn.defer("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
            self.begun.set(true);
        }
        let out = op(&mut conn);
        if conn.forget_deferred() {
            // The operation sent nothing after all: nothing was begun.
            self.begun.set(false);
        }
        out
    }

    fn seen(&self) -> &RefCell<Seen> {
        &self.seen
    }
}

/// A job's view of its node's open write transaction, which holds the store's clock row.
pub struct PgWriteCtx<'c> {
    pub(super) conn: RefCell<&'c mut Conn>,
    pub(super) clock: &'c mut Clock,
    /// The batch's: see [`Seen`].
    pub(super) seen: &'c RefCell<Seen>,
    /// The first storage failure a statement of this job met: the batch is refused even
    /// if the job went on and returned Ok.
    pub(super) fault: Cell<Option<Failure>>,
    /// Share-log entries queue webhook deliveries.
    pub(super) outbox: bool,
    /// Whether the job changed anything (a lease that found no task changes nothing): a
    /// batch that changed nothing is rolled back, not committed, and wakes no one.
    pub(super) changed: bool,
}

impl PgWriteCtx<'_> {
    pub(super) fn mark(&mut self, changed: bool) {
        self.changed |= changed;
    }
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

    fn seen(&self) -> &RefCell<Seen> {
        self.seen
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
    /// Objects read in this batch (see [`Seen`]).
    seen: RefCell<Seen>,
    /// The clock row as the batch found it: it is written back only if the batch used it.
    clock_at_begin: u64,
    /// Whether a transaction is open on `conn`.
    open: bool,
    /// Whether the last job's savepoint is released (or there was none).
    released: bool,
    /// Whether a job of the batch changed anything.
    changed: bool,
    /// This node's name in the commit notifications (hex digits only).
    node: Arc<str>,
    outbox: Arc<AtomicBool>,
}

impl PgWriter {
    pub(super) fn new(
        connect: Box<dyn Fn() -> Result<Conn, StoreError> + Send>,
        outbox: Arc<AtomicBool>,
        node: Arc<str>,
    ) -> PgWriter {
        PgWriter {
            conn: None,
            connect,
            clock: Clock::new(0),
            seen: RefCell::default(),
            clock_at_begin: 0,
            open: false,
            released: true,
            changed: false,
            node,
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
        // One round trip: BEGIN and the clock row, locked to the end of the transaction.
        self.open = true;
        let last = self
            .conn()?
            .simple_value("BEGIN; SELECT last FROM clock FOR UPDATE")
            .map_err(|e| Failure::of(&e, "locking the clock"))?;
        let last: u64 = last
            .parse()
            .map_err(|_| Failure::of(&StoreError::Row(last), "reading the clock"))?;
        self.clock_at_begin = last;
        self.clock = Clock::new(last);
        // Other nodes may have written since the last batch.
        self.seen.borrow_mut().clear();
        self.released = true;
        self.changed = false;
        Ok(())
    }

    fn run_job(&mut self, job: &mut dyn Job<Self>) -> Result<bool, Failure> {
        // The last job's RELEASE goes with this one's SAVEPOINT, both with the job's first
        // statement (one round trip); the RELEASE fails if that job left the transaction
        // aborted, and that error is then the statement's, which refuses the batch.
        let savepoint = if self.released {
            "SAVEPOINT job"
        } else {
            "RELEASE job; SAVEPOINT job"
        };
        self.conn()?.defer(savepoint);
        self.released = false;
        let outbox = self.outbox.load(Ordering::Relaxed);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::lost("SAVEPOINT"));
        };
        let mut ctx = PgWriteCtx {
            conn: RefCell::new(conn),
            clock: &mut self.clock,
            seen: &self.seen,
            fault: Cell::new(None),
            outbox,
            changed: false,
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&mut ctx)));
        let changed = ctx.changed;
        if let Some(f) = ctx.fault.take() {
            // A statement failed for a reason that is not the job's, and the job may have
            // gone on without it.
            return Err(f);
        }
        match outcome {
            // Released with the next job's SAVEPOINT, or before the COMMIT.
            Ok(true) => {
                self.changed |= changed;
                Ok(true)
            }
            Ok(false) => {
                // What the job read of its own changes is undone with them.
                self.seen.borrow_mut().clear();
                self.released = true;
                self.exec("ROLLBACK TO job; RELEASE job").map(|()| false)
            }
            Err(_) => {
                tracing::error!("a write job panicked; its changes are rolled back");
                self.seen.borrow_mut().clear();
                self.released = true;
                self.exec("ROLLBACK TO job; RELEASE job").map(|()| false)
            }
        }
    }

    fn commit(&mut self, kept: usize) -> Result<bool, Failure> {
        if kept == 0 || !self.changed {
            // Nothing to keep (refusals, rehearsals, a lease that found no task): no
            // durable commit is needed, and no one needs waking. The last job's RELEASE
            // still tells whether it left the transaction aborted.
            let released = if self.released {
                Ok(())
            } else {
                self.exec("RELEASE job")
            };
            self.roll_back();
            return released.map(|()| false);
        }
        // One round trip: the last job's RELEASE (which fails, and stops the rest, if it
        // left the transaction aborted: a COMMIT would then roll back and still "succeed"),
        // the clock advanced, the notification (delivered at the commit, to every node's
        // listener), the COMMIT.
        let mut sql = String::new();
        if !self.released {
            sql.push_str("RELEASE job; ");
        }
        let last = self.clock.last();
        if last != self.clock_at_begin {
            // An integer of ours, never a caller's text.
            sql.push_str(&format!("UPDATE clock SET last = {}; ", last as i64));
        }
        // The payload names this node, whose listener then ignores it: the writer has
        // already woken this node's feeds.
        sql.push_str(&format!(
            "NOTIFY {COMMITS_CHANNEL}, '{}'; COMMIT",
            self.node
        ));
        let done = self.exec(&sql);
        self.open = false;
        done.map(|()| true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Tstamp};

    fn current(oid: i64) -> Current {
        let mut event = Event::folder(
            Oid::from_i64(oid),
            Oid::ROOT,
            &format!("n{oid}"),
            "/".into(),
        );
        event.tstamp = Tstamp::from_i64(oid);
        Current { event, live: true }
    }

    #[test]
    fn seen_stays_within_its_bytes_and_keeps_no_large_object() {
        let mut seen = Seen::default();
        seen.put(Oid::from_i64(1), &current(1), MAX_SEEN_OBJECT);
        assert!(seen.get(Oid::from_i64(1)).is_none(), "too large to keep");
        for i in 2..10_000 {
            seen.put(Oid::from_i64(i), &current(i), 1_000);
            assert!(seen.bytes <= MAX_SEEN_BYTES, "{} bytes at {i}", seen.bytes);
        }
        // The newest is kept; the count stayed bounded by the bytes.
        assert_eq!(seen.get(Oid::from_i64(9_999)).unwrap().event.name, "n9999");
        assert!(seen.objects.len() <= MAX_SEEN_BYTES / 1_256);
        seen.clear();
        assert!(seen.get(Oid::from_i64(9_999)).is_none());
        assert_eq!(seen.bytes, 0);
    }
}
