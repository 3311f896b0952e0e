//! The workers: each leases the next task due from the store, runs it while renewing its
//! lease, and records the outcome (done, failed after `max_attempts`, or again after a
//! backoff) in one transaction with whatever the outcome settles (a waiting parent).
//!
//! A lease is what keeps a task from running twice at once: a worker that stops renewing
//! (its process died) loses the task `lease` later to whichever worker, on any node, asks
//! next; a worker that finds its lease gone stops the task and records nothing. A clean
//! shutdown gives its leases back, so a restart resumes at once.

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

/// The running workers of one process.
pub struct TaskRunner {
    ctx: Arc<TaskContext>,
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl TaskRunner {
    /// Starts `config.workers` workers and makes sure the expiry sweep is queued.
    pub fn start(ctx: Arc<TaskContext>) -> TaskRunner {
        let (stop, _) = tokio::sync::watch::channel(false);
        let workers = (0..ctx.config.workers)
            .map(|_| tokio::spawn(worker(ctx.clone(), stop.subscribe())))
            .collect();
        let sweep = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = ensure_sweep(&sweep.store).await {
                tracing::warn!(error = %e, "could not queue the expiry sweep");
            }
        });
        TaskRunner { ctx, stop, workers }
    }

    /// Stops the workers (a running task is abandoned where it stands: each kind is safe to
    /// stop anywhere) and gives back their leases, so the next start resumes at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.await;
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
        let now = now_ms();
        let node = ctx.node.clone();
        let until = now + ctx.lease().as_millis() as u64;
        let leased = ctx
            .store
            .write(move |t| t.lease_task(now, &node, until))
            .await;
        match leased {
            Ok(Some(task)) => {
                run(&ctx, task, &mut stop).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not lease a task"),
        }
        // Idle: until a commit (which may have queued a task), the next task's due time,
        // the next poll, or the stop.
        let due = ctx
            .store
            .read(|s| s.next_task_due())
            .await
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

/// Runs one leased task to its outcome, renewing the lease meanwhile.
async fn run(ctx: &Arc<TaskContext>, task: Task, stop: &mut tokio::sync::watch::Receiver<bool>) {
    let max = ctx.config.max_attempts;
    if task.attempts > max {
        // Its runs kept dying before they could record anything.
        let report = format!(
            "gave up after {} runs that did not finish",
            task.attempts - 1
        );
        finish(ctx, &task, Err(report), true).await;
        return;
    }
    let heartbeat = async {
        let every = ctx.lease() / 3;
        loop {
            tokio::time::sleep(every).await;
            let (id, node) = (task.id, ctx.node.clone());
            let until = now_ms() + ctx.lease().as_millis() as u64;
            match ctx
                .store
                .write(move |t| t.renew_task(id, &node, until))
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(task = %task.id, error = %e, "could not renew a lease"),
            }
        }
    };
    let outcome = tokio::select! {
        r = work(ctx, &task) => r,
        _ = heartbeat => {
            tracing::warn!(task = %task.id, "lost the lease of a running task; stopped it");
            return;
        }
        _ = stop.changed() => return,
    };
    let last = task.attempts >= max;
    finish(ctx, &task, outcome, last).await;
}

async fn work(ctx: &Arc<TaskContext>, task: &Task) -> Result<Outcome, String> {
    match task.kind {
        TaskKind::RotateShare => super::rotate::expand(ctx, task).await,
        TaskKind::RotateBlob => super::rotate::blob(ctx, task).await,
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

/// Records a run's outcome, if this node still holds the lease.
async fn finish(ctx: &Arc<TaskContext>, task: &Task, outcome: Result<Outcome, String>, last: bool) {
    let now = now_ms();
    let (update, failed) = match outcome {
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
    };
    let (id, node) = (task.id, ctx.node.clone());
    let settles = update.state == TaskState::Done
        || update.state == TaskState::Failed
        || update.waiting == Some(true);
    let recorded = ctx
        .store
        .write(move |t| -> Result<bool, crate::error::Error> {
            if !t.update_task(id, Some(&node), &update, now)? {
                return Ok(false);
            }
            if settles {
                if update.waiting == Some(true) {
                    settle_parent(t, id)?;
                }
                for parent in t.task_parents(id)? {
                    settle_parent(t, parent)?;
                }
            }
            Ok(true)
        })
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
