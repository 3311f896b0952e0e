//! Key rotation after a share stops granting (SPEC §9.5), and the expiry sweep.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{NewTask, Task, TaskKind};
use crate::ops::{self, Reencrypted};

use super::queue::now_ms;
use super::runner::{Outcome, TaskContext};

/// Blob rotations queued per transaction while a share's rotation expands.
const QUEUE_PAGE: usize = 500;
/// Shares recorded as expired per transaction.
const SWEEP_PAGE: usize = 200;
/// How long a finished task stays listed before the sweep forgets it.
const DONE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Finished tasks forgotten per transaction.
const PRUNE_PAGE: usize = 1000;
/// How long a rotation waits for downloads still reading a blob's old object before it
/// deletes it anyway (such a download then fails cleanly; it never mixes bytes).
const OLD_OBJECT_GRACE: Duration = Duration::from_secs(120);

/// A share's rotation: queues one rotation per blob of every file version the share let
/// its recipients read (joining any already queued), then waits for them. Safe to run
/// again after a crash: a blob already linked to it is skipped.
pub(super) async fn expand(ctx: &Arc<TaskContext>, task: &Task) -> Result<Outcome, String> {
    let Some(share_id) = task.share else {
        return Ok(Outcome::Done("no share named".into()));
    };
    let Some(share) = ctx
        .store
        .read(move |s| s.share(share_id))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Outcome::Done(format!("share {share_id} is gone")));
    };
    let Some(upto) = task.after else {
        return Ok(Outcome::Done("no revocation time recorded".into()));
    };
    let oid = share.oid;
    let blobs = ctx
        .store
        .read(move |s| s.blobs_beneath(oid, upto))
        .await
        .map_err(|e| e.to_string())?;
    let total = blobs.len();
    for page in blobs.chunks(QUEUE_PAGE) {
        let page = page.to_vec();
        let parent = task.clone();
        ctx.store
            .write(move |t| -> Result<(), crate::store::StoreError> {
                let now = now_ms();
                for (oid, rname) in page {
                    // Queued by an earlier run of this expansion that was cut off: done, or
                    // failed and waiting for a retry of this task, it counts once.
                    if t.task_child_for(parent.id, &rname)?.is_some() {
                        continue;
                    }
                    let (child, _) = t.enqueue_task(
                        &NewTask {
                            kind: TaskKind::RotateBlob,
                            target: rname,
                            oid: Some(oid),
                            share: parent.share,
                            actor: parent.actor.clone(),
                            sharer: parent.sharer.clone(),
                            after: Some(upto),
                            run_after_ms: now,
                        },
                        now,
                    )?;
                    t.link_task(parent.id, child)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Outcome::Waiting(format!(
        "{total} versions queued for a fresh data key"
    )))
}

/// One blob under a fresh data key, unless its key is already younger than the latest
/// revocation the task serves.
pub(super) async fn blob(ctx: &Arc<TaskContext>, task: &Task) -> Result<Outcome, String> {
    let rname = task.target.clone();
    let name = rname.clone();
    let row = ctx
        .store
        .read(move |s| s.blob(&name))
        .await
        .map_err(|e| e.to_string())?;
    let Some(row) = row else {
        return Ok(Outcome::Done("purged: nothing to rotate".into()));
    };
    if task.after.is_some_and(|after| row.keyed > after) {
        return Ok(Outcome::Done(
            "already under a data key made after the revocation".into(),
        ));
    }
    let done = ops::reencrypt(&ctx.store, &ctx.blobs, &rname, OLD_OBJECT_GRACE, &|_| {})
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(Outcome::Done(match done {
        Reencrypted::Done { location: Some(_) } => {
            format!(
                "re-encrypted under a fresh data key into a new object ({} bytes)",
                row.size
            )
        }
        Reencrypted::Done { location: None } => "re-sealed in place under a fresh data key".into(),
        Reencrypted::Skipped(why) => format!("skipped: {why}"),
    }))
}

/// Records every share whose expiry has passed as `expired` (with the shares made through
/// it), which notifies and queues rotations; then comes back after the sweep interval.
pub(super) async fn sweep(ctx: &Arc<TaskContext>) -> Result<Outcome, String> {
    let mut total = 0usize;
    loop {
        let now = now_ms() / 1000;
        let n = ctx
            .store
            .write(move |t| -> crate::error::Result<usize> {
                let due = t.shares_expired(now, SWEEP_PAGE)?;
                let n = due.len();
                for share in due {
                    // One expired earlier in this page may have closed it already.
                    if let Some(now) = t.share(share.id)? {
                        if now.is_open_as_stored() {
                            crate::share::expire(t, now)?;
                        }
                    }
                }
                Ok(n)
            })
            .await
            .map_err(|e| e.to_string())?;
        total += n;
        if n < SWEEP_PAGE {
            break;
        }
    }
    // Finished tasks are kept a week for their owners to look at, then forgotten (the
    // share log keeps what they did), so the queue does not grow without end.
    let before = now_ms().saturating_sub(DONE_RETENTION.as_millis() as u64);
    let mut pruned = 0u64;
    loop {
        let n = ctx
            .store
            .write(move |t| t.prune_tasks(before, PRUNE_PAGE))
            .await
            .map_err(|e| e.to_string())?;
        pruned += n;
        if (n as usize) < PRUNE_PAGE {
            break;
        }
    }
    Ok(Outcome::Again {
        report: format!(
            "last sweep recorded {total} expired shares and forgot {pruned} tasks finished over a week ago"
        ),
        after: ctx.config.sweep_interval,
    })
}
