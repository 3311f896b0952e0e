//! Key rotation after a share stops granting (SPEC §9.5), and the expiry sweep.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{NewTask, Task, TaskKind, TaskUpdate};
use crate::ops;

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
            .write_background(move |t| -> Result<(), crate::store::StoreError> {
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

/// What one blob of a batch comes to before the commit.
enum Plan {
    Done(String),
    Failed(String),
    Switch(Box<ops::Sealed>, u64),
}

/// A batch of blob rotations: their rows read in one snapshot; each blob not purged and
/// not already under a key younger than the revocation it serves sealed afresh (a new
/// object, or new inline bytes); then one transaction switches every key that is still the
/// one read and records every task's outcome; then the old objects are deleted once no
/// download reads them (`vellum gc` removes any a crash leaves). Stopping anywhere before
/// the commit leaves new objects that no row names (gc) and the tasks to run again.
pub(super) async fn blobs(
    ctx: &Arc<TaskContext>,
    mut tasks: Vec<Task>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    use super::runner::{gave_up, heartbeat, outcome_update, record};
    let now = now_ms();
    // Tasks whose runs kept dying are failed, not run again.
    let mut given_up = Vec::new();
    tasks.retain(|t| match gave_up(ctx, t) {
        Some(report) => {
            given_up.push((t.clone(), report));
            false
        }
        None => true,
    });
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let work = async {
        let names: Vec<String> = tasks.iter().map(|t| t.target.clone()).collect();
        let rows = ctx
            .store
            .read(move |s| {
                names
                    .iter()
                    .map(|n| s.blob(n))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => return tasks.iter().map(|_| Plan::Failed(e.to_string())).collect(),
        };
        let mut plans = Vec::with_capacity(tasks.len());
        for (task, row) in tasks.iter().zip(rows) {
            plans.push(match row {
                None => Plan::Done("purged: nothing to rotate".into()),
                Some(row) if task.after.is_some_and(|after| row.keyed > after) => {
                    Plan::Done("already under a data key made after the revocation".into())
                }
                Some(row) => match ops::seal_afresh(&ctx.blobs, &row).await {
                    Ok(None) => Plan::Done("skipped: stored unencrypted".into()),
                    Ok(Some(sealed)) => Plan::Switch(Box::new(sealed), row.size),
                    Err(e) => Plan::Failed(format!("{e:#}")),
                },
            });
        }
        // The batch's new objects made durable together (see `BlobStore::make_durable`).
        let mut waiting = Vec::new();
        let mut pending = Vec::new();
        for (k, plan) in plans.iter_mut().enumerate() {
            if let Plan::Switch(sealed, _) = plan {
                if let Some(p) = sealed.pending.take() {
                    waiting.push(k);
                    pending.push(p);
                }
            }
        }
        for (k, durable) in waiting
            .into_iter()
            .zip(ctx.blobs.make_durable(pending).await)
        {
            if let Err(e) = durable {
                // Renamed into place but its directory not synced: not the version's either.
                if let Plan::Switch(sealed, _) = &plans[k] {
                    if let Some(new) = &sealed.new_location {
                        let _ = ctx.blobs.delete(new).await;
                    }
                }
                plans[k] = Plan::Failed(format!("could not make the new object durable: {e}"));
            }
        }
        plans
    };
    let plans: Vec<Plan> = tokio::select! {
        p = work => p,
        _ = heartbeat(ctx, ids.clone()) => {
            tracing::warn!("lost the lease of a batch of blob rotations; stopped it");
            return;
        }
        _ = stop.changed() => return,
    };
    // What the commit needs: each task's id, its switch if any, and its outcome otherwise.
    let mut jobs = Vec::with_capacity(tasks.len() + given_up.len());
    let mut sealed_objects = Vec::new();
    // Per job, which sealed object it switches to (if any).
    let mut sealed_index: Vec<Option<usize>> = Vec::with_capacity(tasks.len());
    for (task, plan) in tasks.iter().zip(plans) {
        let last = task.attempts >= ctx.config.max_attempts;
        match plan {
            Plan::Done(report) => {
                sealed_index.push(None);
                jobs.push((
                    task.clone(),
                    None,
                    outcome_update(ctx, task, Ok(Outcome::Done(report)), last, now),
                ));
            }
            Plan::Failed(report) => {
                sealed_index.push(None);
                jobs.push((
                    task.clone(),
                    None,
                    outcome_update(ctx, task, Err(report), last, now),
                ));
            }
            Plan::Switch(sealed, size) => {
                let report = match &sealed.new_location {
                    Some(_) => format!(
                        "re-encrypted under a fresh data key into a new object ({size} bytes)"
                    ),
                    None => "re-sealed in place under a fresh data key".to_string(),
                };
                let done = outcome_update(ctx, task, Ok(Outcome::Done(report)), last, now);
                let switch = (
                    sealed.rname.clone(),
                    sealed.was.clone(),
                    sealed.switch.clone(),
                );
                sealed_index.push(Some(sealed_objects.len()));
                sealed_objects.push(*sealed);
                jobs.push((task.clone(), Some(switch), done));
            }
        }
    }
    for (task, report) in given_up {
        let u = outcome_update(ctx, &task, Err(report), true, now);
        sealed_index.push(None);
        jobs.push((task, None, u));
    }
    let node = ctx.node.clone();
    let committed = ctx
        .store
        .write_background(move |t| -> crate::error::Result<Vec<(bool, bool, bool)>> {
            let mut out = Vec::with_capacity(jobs.len());
            for (task, switch, (update, failed)) in jobs {
                let switched = match &switch {
                    Some((rname, was, to)) => {
                        let at = t.next_tstamp();
                        t.switch_blob(rname, was, to, at)?
                    }
                    None => false,
                };
                let update = if switch.is_some() && !switched {
                    TaskUpdate {
                        report: Some("skipped: its key changed meanwhile".into()),
                        ..update
                    }
                } else {
                    update
                };
                let recorded = record(t, task.id, &node, &update, now)?;
                out.push((switched, recorded, failed && recorded));
            }
            Ok(out)
        })
        .await;
    let results = match committed {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "could not commit a batch of blob rotations");
            // Nothing switched: the new objects are nobody's.
            for s in sealed_objects {
                if let Some(new) = &s.new_location {
                    let _ = ctx.blobs.delete(new).await;
                }
            }
            return;
        }
    };
    for (k, (switched, recorded, failed)) in results.into_iter().enumerate() {
        if failed {
            ctx.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !recorded {
            tracing::warn!("a blob rotation's lease ended before its outcome was recorded");
        }
        let Some(Some(n)) = sealed_index.get(k) else {
            continue;
        };
        let s = &sealed_objects[*n];
        if switched {
            // The old object goes once no download reads it; the next batch need not wait.
            if let Some(old) = s.old_location.clone() {
                if let Err(e) = ctx.blobs.delete_when_unread(&old, OLD_OBJECT_GRACE).await {
                    tracing::warn!(error = %e, "could not delete a rotated blob's old object; gc will");
                }
            }
        } else if let Some(new) = &s.new_location {
            let _ = ctx.blobs.delete(new).await;
        }
    }
}

/// Records every share whose expiry has passed as `expired` (with the shares made through
/// it), which notifies and queues rotations; then comes back after the sweep interval.
pub(super) async fn sweep(ctx: &Arc<TaskContext>) -> Result<Outcome, String> {
    let mut total = 0usize;
    loop {
        let now = now_ms() / 1000;
        let n = ctx
            .store
            .write_background(move |t| -> crate::error::Result<usize> {
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
            .write_background(move |t| t.prune_tasks(before, PRUNE_PAGE))
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
