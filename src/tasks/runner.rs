//! The workers: each leases the next task due from the store, runs it while renewing its
//! lease, and records the outcome (done, failed after `max_attempts`, or again after a
//! backoff) in one transaction with whatever the outcome settles (a waiting parent).
//!
//! A lease is what keeps a task from running twice at once: a worker that stops renewing
//! (its process died) loses the task `lease` later to whichever worker, on any node, asks
//! next; a worker that finds its lease gone stops the task and records nothing. A clean
//! shutdown gives its leases back, so a restart resumes at once.
//!
//! The workers run on a runtime of their own whose threads (its worker and its blocking
//! pool, where a rotation reads, seals and writes) run at the lowest CPU priority (nice 19,
//! on Linux): tasks are background work, and a server that is busy serving requests gives
//! them only what requests leave. Measured: with rotations on the server's own threads,
//! one-event writes under load fell to 0.25-0.31x while 1,000 versions rotated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::blob::BlobStore;
use crate::config::TaskConfig;
use crate::model::{NewTask, Task, TaskKind, TaskState, TaskUpdate};
use crate::store::{Store, StoreError};

use super::queue::{backoff, now_ms, settle_parent};

/// How often an idle worker looks for due tasks when no commit woke it.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Shortest pause between two looks of an idle worker: a burst of commits wakes it once.
const IDLE_SPACING: Duration = Duration::from_millis(25);
/// Blob rotations one worker leases and commits together.
const BLOB_BATCH: usize = 16;

/// What running a task came to.
pub(super) enum Outcome {
    /// Finished, with a report.
    Done(String),
    /// Its own part is done; it waits for the children it queued.
    Waiting(String),
    /// Runs again after `after` (the recurring sweep), attempts counted afresh.
    Again { report: String, after: Duration },
}

/// What the workers share.
pub struct TaskContext {
    pub store: Store,
    pub blobs: BlobStore,
    pub config: TaskConfig,
    /// This process's name in leases.
    pub node: String,
    /// Runs that ended in an error (each retried or, at the last attempt, failed).
    pub run_failures: AtomicU64,
    /// Tasks marked failed.
    pub failed: AtomicU64,
    pub(super) webhook: Option<super::webhook::Sender>,
}

impl TaskContext {
    pub fn new(store: Store, blobs: BlobStore, config: TaskConfig) -> anyhow::Result<TaskContext> {
        let webhook = config
            .webhook
            .as_ref()
            .map(super::webhook::Sender::new)
            .transpose()?;
        store.set_share_outbox(webhook.is_some());
        Ok(TaskContext {
            store,
            blobs,
            config,
            node: format!("node-{}", uuid::Uuid::new_v4().simple()),
            run_failures: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            webhook,
        })
    }

    fn lease(&self) -> Duration {
        self.config.lease
    }
}

/// Nice value of the task runtime's threads: the lowest priority, so that under full load
/// the workers get about 1.5% of a core per busy request thread (Linux's CFS weights 15
/// against 1,024), and all that is idle otherwise.
const TASK_NICE: i32 = 19;

/// The runtime the workers run on: one worker thread (the heavy work is on its blocking
/// pool) and every thread lowered to [`TASK_NICE`] as it starts.
fn background_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vellum-tasks")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
}

/// Lowers the calling thread's CPU priority (Linux's nice values are per thread;
/// elsewhere `setpriority` would lower the whole process, so it is left alone).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, TASK_NICE) {
        tracing::warn!(error = %e, "could not lower a task thread's priority");
    }
}

/// The running workers of one process.
pub struct TaskRunner {
    ctx: Arc<TaskContext>,
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// Where they run (none if it could not be built: then on the server's runtime).
    runtime: Option<tokio::runtime::Runtime>,
}

impl TaskRunner {
    /// Starts `config.workers` workers and makes sure the expiry sweep is queued.
    pub fn start(ctx: Arc<TaskContext>) -> TaskRunner {
        let (stop, _) = tokio::sync::watch::channel(false);
        let runtime = background_runtime()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no runtime of their own for tasks; they share the server's")
            })
            .ok();
        let handle = match &runtime {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        };
        // The name this node's leases carry (in the task table), for operators of several
        // nodes who want to know which one holds a task.
        tracing::info!(node = %ctx.node, workers = ctx.config.workers, "task runner started");
        let workers = (0..ctx.config.workers)
            .map(|_| handle.spawn(worker(ctx.clone(), stop.subscribe())))
            .collect();
        let sweep = ctx.clone();
        handle.spawn(async move {
            if let Err(e) = ensure_sweep(&sweep.store).await {
                tracing::warn!(error = %e, "could not queue the expiry sweep");
            }
        });
        TaskRunner {
            ctx,
            stop,
            workers,
            runtime,
        }
    }

    /// Stops the workers (a running task is abandoned where it stands: each kind is safe to
    /// stop anywhere) and gives back their leases, so the next start resumes at once.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
        if let Some(rt) = self.runtime.take() {
            // What the workers left running (a deletion waiting for its downloads) ends.
            rt.shutdown_background();
        }
        let node = self.ctx.node.clone();
        let released = self
            .ctx
            .store
            .write(move |t| t.release_tasks(&node, now_ms()))
            .await;
        match released {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "gave back the leases of running tasks"),
            Err(e) => tracing::warn!(error = %e, "could not give back task leases"),
        }
    }
}

impl Drop for TaskRunner {
    fn drop(&mut self) {
        // A runtime dropped inside another one's task would panic waiting for its threads.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn ensure_sweep(store: &Store) -> Result<(), StoreError> {
    store
        .write(|t| {
            t.enqueue_task(
                &NewTask {
                    kind: TaskKind::ExpirySweep,
                    target: "shares".into(),
                    oid: None,
                    share: None,
                    actor: Some(crate::share::SERVER_LABEL.into()),
                    sharer: None,
                    after: None,
                    run_after_ms: now_ms(),
                },
                now_ms(),
            )
        })
        .await
        .map(|_| ())
}

async fn worker(ctx: Arc<TaskContext>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut commits = ctx.store.commits();
    loop {
        if *stop.borrow() {
            return;
        }
        // A lease is attempted only when a read says a task is due: an attempt takes the
        // writer, and on PostgreSQL the store's clock row, which every node's writes then
        // wait on; woken by every commit of every node, idle workers took it hundreds of
        // times a second under load.
        let due = ctx.store.read(|s| s.next_task_due()).await;
        let now = now_ms();
        let lease_now = match &due {
            Ok(Some(ms)) => *ms <= now,
            Ok(None) => false,
            // Let the lease attempt say what is wrong.
            Err(_) => true,
        };
        let node = ctx.node.clone();
        let until = now + ctx.lease().as_millis() as u64;
        let leased = if !lease_now {
            Ok(Vec::new())
        } else {
            ctx.store
                .write_background(move |t| -> Result<Vec<Task>, crate::store::StoreError> {
                    let Some(first) = t.lease_task(now, &node, until)? else {
                        return Ok(Vec::new());
                    };
                    // Blob rotations go in batches: one lease, one read and one commit for
                    // many versions, rather than several round trips each.
                    let more = if first.kind == TaskKind::RotateBlob {
                        t.lease_more(TaskKind::RotateBlob, BLOB_BATCH - 1, now, &node, until)?
                    } else {
                        Vec::new()
                    };
                    Ok(std::iter::once(first).chain(more).collect())
                })
                .await
        };
        match leased {
            Ok(tasks) if tasks.is_empty() => {}
            Ok(mut tasks) => {
                if tasks[0].kind == TaskKind::RotateBlob {
                    super::rotate::blobs(&ctx, tasks, &mut stop).await;
                } else {
                    run(&ctx, tasks.remove(0), &mut stop).await;
                }
                continue;
            }
            Err(e) => tracing::warn!(error = %e, "could not lease a task"),
        }
        // Idle: until a commit (which may have queued a task), the next task's due time,
        // the next poll, or the stop.
        let due = due
            .ok()
            .flatten()
            .map(|ms| Duration::from_millis(ms.saturating_sub(now_ms())));
        let wait = due
            .map_or(IDLE_POLL, |d| d.min(IDLE_POLL))
            .max(IDLE_SPACING);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = commits.changed() => tokio::time::sleep(IDLE_SPACING).await,
            _ = stop.changed() => return,
        }
    }
}

/// Renews `ids`' leases every third of the lease; returns when one of them is lost.
pub(super) async fn heartbeat(ctx: &TaskContext, ids: Vec<crate::model::TaskId>) {
    let every = ctx.lease() / 3;
    loop {
        tokio::time::sleep(every).await;
        let (ids, node) = (ids.clone(), ctx.node.clone());
        let until = now_ms() + ctx.lease().as_millis() as u64;
        let renewed = ctx
            .store
            .write_background(move |t| -> Result<bool, crate::store::StoreError> {
                let mut all = true;
                for id in ids {
                    all &= t.renew_task(id, &node, until)?;
                }
                Ok(all)
            })
            .await;
        match renewed {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "could not renew a lease"),
        }
    }
}

/// Runs one leased task to its outcome, renewing the lease meanwhile.
async fn run(ctx: &Arc<TaskContext>, task: Task, stop: &mut tokio::sync::watch::Receiver<bool>) {
    if let Some(report) = gave_up(ctx, &task) {
        finish(ctx, &task, Err(report), true).await;
        return;
    }
    let outcome = tokio::select! {
        r = work(ctx, &task) => r,
        _ = heartbeat(ctx, vec![task.id]) => {
            tracing::warn!(task = %task.id, "lost the lease of a running task; stopped it");
            return;
        }
        _ = stop.changed() => return,
    };
    let last = task.attempts >= ctx.config.max_attempts;
    finish(ctx, &task, outcome, last).await;
}

/// Why a task is given up before it runs: its runs kept dying before they could record
/// anything.
pub(super) fn gave_up(ctx: &TaskContext, task: &Task) -> Option<String> {
    (task.attempts > ctx.config.max_attempts).then(|| {
        format!(
            "gave up after {} runs that did not finish",
            task.attempts - 1
        )
    })
}

async fn work(ctx: &Arc<TaskContext>, task: &Task) -> Result<Outcome, String> {
    match task.kind {
        TaskKind::RotateShare => super::rotate::expand(ctx, task).await,
        TaskKind::RotateBlob => Err("blob rotations run in batches".into()),
        TaskKind::ExpirySweep => super::rotate::sweep(ctx).await,
        TaskKind::Webhook => match &ctx.webhook {
            Some(w) => w.deliver(&ctx.store, task).await,
            // Queued while a webhook was configured; it is not any more.
            None => Ok(Outcome::Done(
                "not sent: SHARE_WEBHOOK_URL is not set".into(),
            )),
        },
    }
}

/// What a run's outcome makes of its task, and whether that fails it.
pub(super) fn outcome_update(
    ctx: &TaskContext,
    task: &Task,
    outcome: Result<Outcome, String>,
    last: bool,
    now: u64,
) -> (TaskUpdate, bool) {
    match outcome {
        Ok(Outcome::Done(report)) => (plain(TaskState::Done, report), false),
        Ok(Outcome::Waiting(report)) => (
            TaskUpdate {
                waiting: Some(true),
                ..plain(TaskState::InProgress, report)
            },
            false,
        ),
        Ok(Outcome::Again { report, after }) => (
            TaskUpdate {
                run_after_ms: Some(now + after.as_millis() as u64),
                attempts: Some(0),
                ..plain(TaskState::Todo, report)
            },
            false,
        ),
        Err(report) => {
            ctx.run_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(task = %task.id, kind = task.kind.as_str(), attempt = task.attempts, error = %report, "a task failed");
            if last && task.kind != TaskKind::ExpirySweep {
                (plain(TaskState::Failed, report), true)
            } else {
                let wait = backoff(ctx.config.backoff, ctx.config.backoff_max, task.attempts);
                (
                    TaskUpdate {
                        run_after_ms: Some(now + wait.as_millis() as u64),
                        ..plain(TaskState::Todo, report)
                    },
                    false,
                )
            }
        }
    }
}

/// Records `update` for task `id` inside a write transaction, if `node` still holds its
/// lease, and settles what it settles (a waiting parent). Returns whether it applied.
pub(super) fn record(
    t: &mut dyn crate::store::MetaWrite,
    id: crate::model::TaskId,
    node: &str,
    update: &TaskUpdate,
    now: u64,
) -> Result<bool, crate::error::Error> {
    if !t.update_task(id, Some(node), update, now)? {
        return Ok(false);
    }
    let settles = update.state == TaskState::Done
        || update.state == TaskState::Failed
        || update.waiting == Some(true);
    if settles {
        if update.waiting == Some(true) {
            settle_parent(t, id)?;
        }
        for parent in t.task_parents(id)? {
            settle_parent(t, parent)?;
        }
    }
    Ok(true)
}

/// Records a run's outcome, if this node still holds the lease.
async fn finish(ctx: &Arc<TaskContext>, task: &Task, outcome: Result<Outcome, String>, last: bool) {
    let now = now_ms();
    let (update, failed) = outcome_update(ctx, task, outcome, last, now);
    let (id, node) = (task.id, ctx.node.clone());
    let recorded = ctx
        .store
        .write_background(move |t| record(t, id, &node, &update, now))
        .await;
    match recorded {
        Ok(true) if failed => {
            ctx.failed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(task = %task.id, "a task's lease ended before its outcome was recorded")
        }
        Err(e) => tracing::warn!(task = %task.id, error = %e, "could not record a task's outcome"),
    }
}

fn plain(state: TaskState, report: String) -> TaskUpdate {
    TaskUpdate {
        state,
        report: Some(report),
        run_after_ms: None,
        waiting: None,
        attempts: None,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_task_runtimes_threads_and_its_blocking_pool_run_at_the_lowest_priority() {
        let rt = background_runtime().unwrap();
        let nice = || rustix::process::getpriority_process(None).unwrap();
        let (worker, blocking) = rt.block_on(async move {
            let worker = tokio::spawn(async move { nice() }).await.unwrap();
            let blocking = tokio::task::spawn_blocking(nice).await.unwrap();
            (worker, blocking)
        });
        assert_eq!((worker, blocking), (TASK_NICE, TASK_NICE));
        // The thread that built it is left as it was.
        assert_ne!(nice(), TASK_NICE);
    }
}
