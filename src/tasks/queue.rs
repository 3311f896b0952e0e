//! Queueing tasks inside the transaction that calls for them, and settling a parent once
//! its children are through. Used by `crate::share` (below the runner): nothing here runs
//! a task.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::share::{ShareChange, Sharer};
use crate::model::{NewTask, Share, ShareEntry, TaskId, TaskKind, TaskState, TaskUpdate};
use crate::store::{MetaWrite, StoreError};

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Queues the key rotation of every file version `share` let its recipients read. The
/// versions are those at or before the share's latest tstamp (the change that ended its
/// reading): later ones were never readable through it. The task is the sharer's (and
/// visible to the object's owners), whoever ended the share: a recipient who leaves does
/// not get to watch the content they left being rotated.
pub fn rotation(t: &mut dyn MetaWrite, share: &Share) -> Result<TaskId, StoreError> {
    let actor = share.sharer.label.as_str();
    let (id, _) = t.enqueue_task(
        &NewTask {
            kind: TaskKind::RotateShare,
            target: share.id.to_string(),
            oid: Some(share.oid),
            share: Some(share.id),
            actor: Some(actor.to_string()),
            sharer: Some(share.sharer.label.clone()),
            after: Some(share.tstamp),
            run_after_ms: now_ms(),
        },
        now_ms(),
    )?;
    Ok(id)
}

/// What a share-log entry sets off in its own transaction: its webhook delivery, when the
/// outbox is on (SHARE_WEBHOOK_URL). Deliveries of one share go out in the order of their
/// task ids, which is the order of the entries.
pub fn after_entry(t: &mut dyn MetaWrite, entry: &ShareEntry) -> Result<(), StoreError> {
    if !t.share_outbox() {
        return Ok(());
    }
    t.enqueue_task(
        &NewTask {
            kind: TaskKind::Webhook,
            target: format!("{}/{}", entry.share, entry.tstamp),
            oid: Some(entry.state.oid),
            share: Some(entry.share),
            actor: Some(entry.by.label.clone()),
            sharer: Some(entry.state.sharer.label.clone()),
            after: Some(entry.tstamp),
            run_after_ms: now_ms(),
        },
        now_ms(),
    )?;
    Ok(())
}

/// Settles a waiting parent once none of its children is still to run: failed if any
/// failed, else done. A share's rotation that is done is recorded in the share's log
/// (`rotated`). Call after a child changed state, in the same transaction. (The store keeps
/// the open-children count; the full tally is taken once, here at the end, and on reads.)
pub fn settle_parent(t: &mut dyn MetaWrite, parent: TaskId) -> Result<(), StoreError> {
    let Some(task) = t.task(parent)? else {
        return Ok(());
    };
    if !task.waiting || task.open_children > 0 || !task.state.is_open() {
        return Ok(());
    }
    let counts = t.task_children(parent)?;
    let total = counts.total();
    let (state, report) = if counts.failed > 0 {
        (
            TaskState::Failed,
            format!(
                "{} of {total} versions failed (retry this task to retry them)",
                counts.failed
            ),
        )
    } else {
        (
            TaskState::Done,
            format!("every version ({total}) is under a fresh data key"),
        )
    };
    t.update_task(
        parent,
        None,
        &TaskUpdate {
            state,
            report: Some(report),
            run_after_ms: None,
            waiting: None,
            attempts: None,
        },
        now_ms(),
    )?;
    if state == TaskState::Done && task.kind == TaskKind::RotateShare {
        if let Some(share) = task.share.map(|s| t.share(s)).transpose()?.flatten() {
            // The share itself did not change (its tstamp, a client's precondition, stays):
            // the entry records what was done about it.
            let entry = ShareEntry {
                share: share.id,
                tstamp: t.next_tstamp(),
                kind: ShareChange::Rotated,
                by: Sharer {
                    label: crate::share::SERVER_LABEL.to_string(),
                },
                state: share,
            };
            t.log_share(&entry)?;
            after_entry(t, &entry)?;
        }
    }
    Ok(())
}

/// The delay before run `attempts + 1` of a task that failed: `base` doubled per attempt,
/// at most `max`, times a random factor in [0.5, 1] (so that many tasks failing at once
/// do not all come back at once).
pub fn backoff(
    base: std::time::Duration,
    max: std::time::Duration,
    attempts: u32,
) -> std::time::Duration {
    let doubled = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = doubled.min(max);
    let mut b = [0u8; 2];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    let factor = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
    capped.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_per_attempt_with_jitter_and_stops_at_the_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for attempts in 1..=12u32 {
            let full = Duration::from_secs(1 << (attempts - 1)).min(max);
            for _ in 0..50 {
                let d = backoff(base, max, attempts);
                assert!(
                    d >= full / 2 && d <= full,
                    "{attempts}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
        assert!(backoff(base, max, u32::MAX) <= max);
    }
}
