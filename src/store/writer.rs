//! Group commit, for every backend: a node's write jobs queue on a channel for one writer
//! thread, which takes every job waiting, runs each inside its own savepoint of one
//! transaction, and commits once. A job that fails on its own account (a conflict, a
//! refusal) is rolled back to its savepoint alone. Any other failure (a statement the
//! backend could not run, even one the job went on after; a failed SAVEPOINT, RELEASE,
//! ROLLBACK TO or COMMIT; a transaction the backend rolled back by itself) rolls the whole
//! batch back, and every job of it is refused. Callers hear back only once the batch's
//! fate is known, and Ok only if its COMMIT succeeded: one durable commit is shared by the
//! whole batch. After a COMMIT that kept something the writer bumps the commit signal, so
//! whatever a job wrote wakes the feeds. A backend supplies a [`Session`]: its connection's
//! side of this (BEGIN, a job in its savepoint, COMMIT, ROLLBACK).
//!
//! Background jobs (the task queue's) get a small share of the writer while requests keep
//! it busy: the writer is the store's bottleneck under load (busy 89-93% of the time under
//! 16 connections of one-event writes on SQLite), so each millisecond it gave a rotation
//! was one requests lost; while 1,000 versions rotated, writes fell to 0.25-0.5x. Filling
//! only the moments when no request waited was not enough: clients send their next write
//! right after the answer, and a background job begun in the gap held them up (30% of the
//! writer's time went to the rotation). So while requests came within [`RECENT`], a
//! background job runs only once the writer has worked [`BACKGROUND_SHARE`] - 1 times as
//! long as the last one took; a store with no requests runs them back to back.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// Most jobs one commit carries. Bounds the latency a batch adds to its first job.
const MAX_BATCH_JOBS: usize = 512;
/// While requests keep the writer busy, background jobs get at most 1 part in this many of
/// its time (4%).
const BACKGROUND_SHARE: u32 = 25;
/// How recent a request's job must be for the writer to count as busy with requests.
const RECENT: Duration = Duration::from_millis(100);

/// A backend's write connection, as the writer thread drives it.
pub(crate) trait Session {
    /// A job's view of the open transaction.
    type Ctx<'a>;
    /// Opens the batch's transaction.
    fn begin(&mut self) -> Result<(), Failure>;
    /// Runs one job in its savepoint; Ok says whether its changes were kept. An error
    /// means the batch cannot be committed.
    fn run_job(&mut self, job: &mut dyn Job<Self>) -> Result<bool, Failure>;
    /// Commits the batch, of which `kept` jobs kept changes; returns whether it committed
    /// anything that others should hear of (the commit signal is then bumped).
    fn commit(&mut self, kept: usize) -> Result<bool, Failure>;
    /// Rolls back the open transaction, if any.
    fn roll_back(&mut self);
}

/// A job as queued for the writer.
pub(crate) struct Queued<S: Session + ?Sized> {
    pub(crate) job: Box<dyn Job<S>>,
    /// The task queue's: it waits while requests' jobs do (see the module's docs).
    pub(crate) background: bool,
}

/// A job for the writer.
pub(crate) trait Job<S: Session + ?Sized>: Send {
    /// Runs inside the job's savepoint; returns whether to keep its changes.
    fn run(&mut self, ctx: &mut S::Ctx<'_>) -> bool;
    /// Delivers the result once the batch's fate is known: `refused` says why the batch
    /// was not committed (`None`: it was).
    fn answer(self: Box<Self>, refused: Option<&Failure>);
}

/// A caller's closure and the channel its result goes back on.
pub(crate) struct Submitted<F, R, E> {
    f: Option<F>,
    result: Option<Result<R, E>>,
    reply: tokio::sync::oneshot::Sender<Result<R, E>>,
    /// A rehearsal: always rolled back.
    dry: bool,
}

impl<F, R, E> Submitted<F, R, E> {
    pub(crate) fn new(f: F, reply: tokio::sync::oneshot::Sender<Result<R, E>>, dry: bool) -> Self {
        Submitted {
            f: Some(f),
            result: None,
            reply,
            dry,
        }
    }
}

impl<S, F, R, E> Job<S> for Submitted<F, R, E>
where
    S: Session + ?Sized,
    F: FnOnce(&mut S::Ctx<'_>) -> Result<R, E> + Send,
    R: Send,
    E: From<StoreError> + Send,
{
    fn run(&mut self, ctx: &mut S::Ctx<'_>) -> bool {
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

/// Submits `f` to a writer and waits for its answer.
pub(crate) async fn submit<S, F, R, E>(
    jobs: &mpsc::Sender<Queued<S>>,
    f: F,
    dry: bool,
    background: bool,
) -> Result<R, E>
where
    S: Session + ?Sized + 'static,
    F: FnOnce(&mut S::Ctx<'_>) -> Result<R, E> + Send + 'static,
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (reply, rx) = tokio::sync::oneshot::channel::<Result<R, E>>();
    let job: Box<dyn Job<S>> = Box::new(Submitted::new(f, reply, dry));
    jobs.send(Queued { job, background })
        .map_err(|_| E::from(StoreError::WriterGone))?;
    rx.await.map_err(|_| E::from(StoreError::WriterGone))?
}

/// Why a batch was not committed; every job of the batch is told.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The disk is full (the answer is then a 507, not a 500).
    full: bool,
    /// The database could not be reached (the answer is then a 503).
    unreachable: bool,
    message: String,
}

impl Failure {
    pub(crate) fn of(e: &StoreError, during: &str) -> Failure {
        Failure {
            full: e.is_disk_full(),
            unreachable: matches!(e, StoreError::Unavailable(_)),
            message: format!("{during}: {e}"),
        }
    }

    /// The backend rolled the transaction back by itself, and no statement said why.
    pub(crate) fn lost(before: &str) -> Failure {
        Failure {
            full: false,
            unreachable: false,
            message: format!("the transaction was rolled back before {before}"),
        }
    }

    fn error(&self) -> StoreError {
        if self.full {
            StoreError::Full(self.message.clone())
        } else if self.unreachable {
            StoreError::Unavailable(self.message.clone())
        } else {
            StoreError::NotCommitted(self.message.clone())
        }
    }
}

/// The writer thread's loop: serves jobs until every sender is gone and no background job
/// waits.
pub(crate) fn serve<S: Session>(
    mut session: S,
    rx: mpsc::Receiver<Queued<S>>,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
) {
    let mut background: VecDeque<Box<dyn Job<S>>> = VecDeque::new();
    // When a background job may run next while requests keep the writer busy.
    let mut next_background = Instant::now();
    let mut last_request: Option<Instant> = None;
    let mut open = true;
    loop {
        let mut batch = Vec::new();
        let take = |q: Queued<S>, batch: &mut Vec<_>, background: &mut VecDeque<_>| {
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
        // Requests that came while the batch's transaction was being opened (on
        // PostgreSQL, while another node's batch held the clock row) join it.
        let mut more = || {
            while open {
                match rx.try_recv() {
                    Ok(q) if q.background => background.push_back(q.job),
                    Ok(q) => {
                        last_request = Some(Instant::now());
                        return Some(q.job);
                    }
                    Err(mpsc::TryRecvError::Empty) => return None,
                    Err(mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            None
        };
        let spent = run_batch(&mut session, &commits, batch, position, &mut more);
        if ran_background {
            next_background = Instant::now() + spent * (BACKGROUND_SHARE - 1);
        }
    }
}

/// Runs the jobs in one transaction and answers each: Ok only if the COMMIT succeeded.
/// Returns the time the job at `timed` (if any) took to run.
fn run_batch<S: Session>(
    session: &mut S,
    commits: &tokio::sync::watch::Sender<u64>,
    mut batch: Vec<Box<dyn Job<S>>>,
    timed: usize,
    more: &mut dyn FnMut() -> Option<Box<dyn Job<S>>>,
) -> Duration {
    let mut failure = session.begin().err();
    if failure.is_none() {
        while batch.len() < MAX_BATCH_JOBS {
            let Some(job) = more() else { break };
            batch.push(job);
        }
    }
    let mut waiting = batch.into_iter();
    let mut ran = Vec::with_capacity(waiting.len());
    let mut kept = 0usize;
    let mut spent = Duration::ZERO;
    if failure.is_none() {
        for mut job in waiting.by_ref() {
            let started = (ran.len() == timed).then(Instant::now);
            let step = session.run_job(job.as_mut());
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
        match session.commit(kept) {
            Ok(true) => commits.send_modify(|n| *n = n.wrapping_add(1)),
            Ok(false) => {}
            Err(f) => failure = Some(f),
        }
    }
    if let Some(f) = &failure {
        tracing::error!(
            error = %f.message,
            jobs = ran.len() + waiting.len(),
            "write batch rolled back; every job in it is refused"
        );
        session.roll_back();
    }
    for job in ran.into_iter().chain(waiting) {
        job.answer(failure.as_ref());
    }
    spent
}
