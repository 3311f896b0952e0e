//! The writer thread: the only read-write connection, the clock, and group commit.
//!
//! Group commit: concurrent write jobs queue on a channel; the writer takes every job
//! waiting, runs each inside its own SAVEPOINT of one `BEGIN IMMEDIATE` transaction, and
//! commits once. A job that fails on its own account (a conflict, a refusal) is rolled back
//! to its savepoint alone. Any other failure rolls the whole batch back and every job of it
//! is refused: a statement SQLite could not run (disk full, I/O error, out of memory,
//! interrupt), even one the job went on after; a failed SAVEPOINT, RELEASE, ROLLBACK TO or
//! COMMIT; a transaction SQLite has already rolled back by itself (which is why
//! autocommit is checked after every job: a SAVEPOINT outside a transaction would open a
//! new one that its RELEASE commits). Callers hear back only once the batch's fate is
//! known, and Ok only if its COMMIT succeeded, so with `synchronous=FULL` an Ok means the
//! job's events are on disk, and one fsync is shared by the whole batch. A commit hook
//! refuses every commit but the batch's own COMMIT, so nothing can autocommit on the side.
//! After a COMMIT that kept something the writer bumps the commit signal, so whatever a
//! job wrote wakes the feeds.
//!
//! Background jobs (the task queue's) get a small share of the writer while requests keep
//! it busy: the writer is the store's bottleneck under load (busy 89-93% of the time under
//! 16 connections of one-event writes), so each millisecond it gave a rotation was one
//! requests lost; while 1,000 versions rotated, writes fell to 0.25-0.5x. Filling only the
//! moments when no request waited was not enough: clients send their next write right
//! after the answer, and a background job begun in the gap held them up (30% of the
//! writer's time went to the rotation). So while requests came within [`RECENT`], a
//! background job runs only once the writer has worked [`BACKGROUND_SHARE`] - 1 times as
//! long as the last one took; a store with no requests runs them back to back.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::store::clock::Clock;
use crate::store::StoreError;

/// Most jobs one commit carries. Bounds the latency a batch adds to its first job.
const MAX_BATCH_JOBS: usize = 512;
/// While requests keep the writer busy, background jobs get at most 1 part in this many of
/// its time (4%).
const BACKGROUND_SHARE: u32 = 25;
/// How recent a request's job must be for the writer to count as busy with requests.
const RECENT: Duration = Duration::from_millis(100);

/// A job as queued for the writer.
pub(super) struct Queued {
    pub(super) job: Box<dyn Job>,
    /// The task queue's: it waits while requests' jobs do (see the module's docs).
    pub(super) background: bool,
}

/// A job for the writer.
pub(super) trait Job: Send {
    /// Runs inside the job's savepoint; returns whether to keep its changes.
    fn run(&mut self, ctx: &mut WriteCtx<'_>) -> bool;
    /// Delivers the result once the batch's fate is known: `refused` says why the batch
    /// was not committed (`None`: it was).
    fn answer(self: Box<Self>, refused: Option<&Failure>);
}

/// A caller's closure and the channel its result goes back on.
pub(super) struct Submitted<F, R, E> {
    f: Option<F>,
    result: Option<Result<R, E>>,
    reply: tokio::sync::oneshot::Sender<Result<R, E>>,
    /// A rehearsal: always rolled back.
    dry: bool,
}

impl<F, R, E> Submitted<F, R, E> {
    pub(super) fn new(f: F, reply: tokio::sync::oneshot::Sender<Result<R, E>>, dry: bool) -> Self {
        Submitted {
            f: Some(f),
            result: None,
            reply,
            dry,
        }
    }
}

impl<F, R, E> Job for Submitted<F, R, E>
where
    F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send,
    R: Send,
    E: From<StoreError> + Send,
{
    fn run(&mut self, ctx: &mut WriteCtx<'_>) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = f(ctx);
        let keep = result.is_ok() && !self.dry;
        self.result = Some(result);
        keep
    }

    fn answer(self: Box<Self>, refused: Option<&Failure>) {
        let out = match (self.result, refused) {
            // Refused on its own account (a conflict, a permission): that stays the
            // answer whatever became of the batch; nothing of it was kept either way.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(r)), None) => Ok(r),
            (_, Some(failure)) => Err(E::from(failure.error())),
            // It never returned: it panicked, and was rolled back.
            (None, None) => Err(E::from(StoreError::JobPanicked)),
        };
        let _ = self.reply.send(out);
    }
}

/// Why a batch was not committed; every job of the batch is told.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    /// The disk is full (the answer is then a 507, not a 500).
    full: bool,
    message: String,
}

impl Failure {
    fn of(e: &StoreError, during: &str) -> Failure {
        Failure {
            full: e.is_disk_full(),
            message: format!("{during}: {e}"),
        }
    }

    /// SQLite rolled the transaction back by itself, and no statement said why.
    fn lost(before: &str) -> Failure {
        Failure {
            full: false,
            message: format!("the transaction was rolled back before {before}"),
        }
    }

    fn error(&self) -> StoreError {
        if self.full {
            StoreError::Full(self.message.clone())
        } else {
            StoreError::NotCommitted(self.message.clone())
        }
    }
}

/// The writer thread's state: the only read-write connection, and the clock.
pub(super) struct Writer {
    conn: Connection,
    clock: Clock,
    /// True only while the batch's COMMIT runs: the commit hook refuses every other commit.
    committing: Arc<AtomicBool>,
    /// Bumped after every COMMIT that kept something.
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    /// Whether share-log entries also queue a webhook delivery (see `SqliteStore`).
    outbox: Arc<AtomicBool>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        clock: Clock,
        committing: Arc<AtomicBool>,
        commits: Arc<tokio::sync::watch::Sender<u64>>,
        outbox: Arc<AtomicBool>,
    ) -> Self {
        Writer {
            conn,
            clock,
            committing,
            commits,
            outbox,
        }
    }

    pub(super) fn serve(mut self, rx: mpsc::Receiver<Queued>) {
        let mut background: VecDeque<Box<dyn Job>> = VecDeque::new();
        // When a background job may run next while requests keep the writer busy.
        let mut next_background = Instant::now();
        let mut last_request: Option<Instant> = None;
        let mut open = true;
        loop {
            let mut batch = Vec::new();
            let take = |q: Queued, batch: &mut Vec<_>, background: &mut VecDeque<_>| {
                if q.background {
                    background.push_back(q.job);
                } else {
                    batch.push(q.job);
                }
            };
            let now = Instant::now();
            let busy = last_request.is_some_and(|t| now.duration_since(t) < RECENT);
            let background_due = !background.is_empty() && (!busy || now >= next_background);
            // Wait for a job unless one is due: for anything if no background job waits,
            // else until the next one is due.
            if open && !background_due {
                let got = if background.is_empty() {
                    rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(next_background.saturating_duration_since(now))
                };
                match got {
                    Ok(q) => take(q, &mut batch, &mut background),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
                }
            }
            while open && batch.len() < MAX_BATCH_JOBS {
                match rx.try_recv() {
                    Ok(q) => take(q, &mut batch, &mut background),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            let now = Instant::now();
            let requests = !batch.is_empty();
            if requests {
                last_request = Some(now);
            }
            let busy = last_request.is_some_and(|t| now.duration_since(t) < RECENT);
            let with_background = (!busy || now >= next_background)
                .then(|| background.pop_front())
                .flatten();
            let ran_background = with_background.is_some();
            if !requests && !ran_background {
                if open || !background.is_empty() {
                    continue;
                }
                return;
            }
            let position = batch.len();
            batch.extend(with_background);
            let spent = self.run_batch(batch, position);
            if ran_background {
                next_background = Instant::now() + spent * (BACKGROUND_SHARE - 1);
            }
        }
    }

    /// Runs the jobs in one transaction and answers each: Ok only if the COMMIT succeeded.
    /// Returns the time the job at `timed` (if any) took to run.
    fn run_batch(&mut self, batch: Vec<Box<dyn Job>>, timed: usize) -> Duration {
        let mut waiting = batch.into_iter();
        let mut ran = Vec::with_capacity(waiting.len());
        let mut failure = self.begin().err();
        let mut kept = 0usize;
        let mut spent = Duration::ZERO;
        if failure.is_none() {
            for mut job in waiting.by_ref() {
                let started = (ran.len() == timed).then(Instant::now);
                let step = self.run_job(job.as_mut());
                if let Some(started) = started {
                    spent = started.elapsed();
                }
                ran.push(job);
                match step {
                    Ok(true) => kept += 1,
                    Ok(false) => {}
                    Err(f) => {
                        failure = Some(f);
                        break;
                    }
                }
            }
        }
        if failure.is_none() {
            failure = self.commit().err();
            if failure.is_none() && kept > 0 {
                self.commits.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        if let Some(f) = &failure {
            tracing::error!(
                error = %f.message,
                jobs = ran.len() + waiting.len(),
                "write batch rolled back; every job in it is refused"
            );
            self.roll_back();
        }
        for job in ran.into_iter().chain(waiting) {
            job.answer(failure.as_ref());
        }
        spent
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

    fn begin(&mut self) -> Result<(), Failure> {
        // A ROLLBACK that failed may have left the last batch's transaction open.
        self.roll_back();
        self.exec("BEGIN IMMEDIATE")
    }

    /// Runs one job in its savepoint; Ok says whether its changes were kept. An error
    /// means the batch cannot be committed.
    fn run_job(&mut self, job: &mut dyn Job) -> Result<bool, Failure> {
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

    fn commit(&mut self) -> Result<(), Failure> {
        self.ensure_open("COMMIT")?;
        self.committing.store(true, Ordering::Relaxed);
        let done = self.exec("COMMIT");
        self.committing.store(false, Ordering::Relaxed);
        done
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
