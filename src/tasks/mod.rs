//! Deferred work (SPEC §9.5, §9.6): the durable task queue kept in the metadata store, the
//! workers that run it, and what callers may see of it.
//!
//! `queue.rs` queues tasks inside the transactions that call for them (a revocation queues
//! its key rotation; every share-log entry its webhook delivery) and is used by
//! `crate::share`; `runner.rs` leases and runs tasks; `rotate.rs`, `webhook.rs` are what
//! the kinds do. Nothing here knows about HTTP requests.

pub mod queue;
mod rotate;
pub mod runner;
mod webhook;

use serde::Serialize;

use crate::access::Access;
use crate::error::{Code, Error, Result};
use crate::model::{Perms, Task, TaskCounts, TaskId, TaskKind, TaskQuery, TaskState, TaskUpdate};
use crate::store::{MetaRead, MetaWrite, StoreError};

pub use runner::{TaskContext, TaskRunner};

/// Most tasks one `GET /tasks` page lists.
pub const MAX_PAGE: usize = 1000;

/// A task as `GET /tasks` shows it.
#[derive(Debug, Serialize)]
pub struct TaskView {
    pub id: TaskId,
    pub kind: TaskKind,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oid: Option<crate::model::Oid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<crate::model::Oid>,
    pub state: TaskState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// RFC 3339, milliseconds.
    pub created: String,
    pub updated: String,
    /// When a task still to run runs next (after a backoff, or the next sweep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_after: Option<String>,
    /// A share's rotation: its versions' rotations by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<TaskCounts>,
}

fn rfc3339_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn view<S: MetaRead + ?Sized>(s: &S, task: Task) -> Result<TaskView> {
    let progress = match task.kind {
        TaskKind::RotateShare if task.waiting => Some(s.task_children(task.id)?),
        _ => None,
    };
    Ok(TaskView {
        id: task.id,
        kind: task.kind,
        target: task.target,
        oid: task.oid,
        share: task.share,
        state: task.state,
        attempts: task.attempts,
        report: task.report,
        created: rfc3339_ms(task.created_ms),
        updated: rfc3339_ms(task.updated_ms),
        run_after: (task.state == TaskState::Todo).then(|| rfc3339_ms(task.run_after_ms)),
        progress,
    })
}

fn no_task(id: TaskId) -> Error {
    Error::not_found(Code::NotFound, format!("no task {id}"))
}

/// Whether the caller holds U on `oid` (an owner of the object).
fn owns_object<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    oid: crate::model::Oid,
) -> Result<bool> {
    Ok(match s.current(oid)? {
        Some(c) => access.letters(s, &c.event).contains(Perms::U),
        None => false,
    })
}

/// The tasks on the caller's objects and shares: root sees all; anyone else those they
/// caused or whose share they made, and (with `oid`) those on an object they hold U on.
fn visible<S: MetaRead + ?Sized>(s: &S, access: &Access, task: &Task) -> Result<bool> {
    if access.is_root() {
        return Ok(true);
    }
    let label = access.identity.claims.label();
    if task.actor.as_deref() == Some(label) || task.sharer.as_deref() == Some(label) {
        return Ok(true);
    }
    match task.oid {
        Some(oid) => owns_object(s, access, oid),
        None => Ok(false),
    }
}

/// `GET /tasks`'s selection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub oid: Option<crate::model::Oid>,
    pub state: Option<TaskState>,
    pub kind: Option<TaskKind>,
    pub before: Option<TaskId>,
    pub limit: Option<usize>,
}

/// `GET /tasks`: newest first.
pub fn list<S: MetaRead + ?Sized>(s: &S, access: &Access, q: ListQuery) -> Result<Vec<TaskView>> {
    let mut query = TaskQuery {
        label: None,
        oid: q.oid,
        state: q.state,
        kind: q.kind,
        before: q.before,
        limit: q.limit.unwrap_or(100).clamp(1, MAX_PAGE),
    };
    if !access.is_root() {
        match q.oid {
            // An owner of the object sees every task on it.
            Some(oid) if owns_object(s, access, oid)? => {}
            Some(oid) => {
                return Err(Error::not_found(
                    Code::NotFound,
                    format!("no object {oid} that you own"),
                ))
            }
            None => query.label = Some(access.identity.claims.label().to_string()),
        }
    }
    s.tasks(&query)?.into_iter().map(|t| view(s, t)).collect()
}

/// `GET /tasks/{id}`.
pub fn get<S: MetaRead + ?Sized>(s: &S, access: &Access, id: TaskId) -> Result<TaskView> {
    let task = s.task(id)?.ok_or_else(|| no_task(id))?;
    if !visible(s, access, &task)? {
        return Err(no_task(id));
    }
    view(s, task)
}

/// `POST /tasks/{id}/retry`: a failed task runs again from its first attempt; a failed
/// share rotation retries its failed versions. Any other state is a 409.
pub fn retry(t: &mut dyn MetaWrite, access: &Access, id: TaskId) -> Result<TaskView> {
    let task = t.task(id)?.ok_or_else(|| no_task(id))?;
    if !visible(&*t, access, &task)? {
        return Err(no_task(id));
    }
    if task.state != TaskState::Failed {
        return Err(Error::conflict(
            Code::TaskNotFailed,
            format!(
                "task {id} is {}: only a failed task can be retried",
                task.state.as_str()
            ),
        ));
    }
    let now = queue::now_ms();
    let again = |state| TaskUpdate {
        state,
        report: None,
        run_after_ms: Some(now),
        waiting: None,
        attempts: Some(0),
    };
    if task.waiting {
        for child in t.failed_children(id)? {
            restart(t, child, id, &again(TaskState::Todo), now)?;
        }
        t.update_task(id, None, &again(TaskState::InProgress), now)?;
        queue::settle_parent(t, id)?;
    } else {
        restart(t, id, id, &again(TaskState::Todo), now)?;
    }
    let task = t.task(id)?.ok_or_else(|| no_task(id))?;
    view(&*t, task)
}

/// Puts a failed task back in the queue. If another task with its kind and target was
/// queued meanwhile (a later revocation of the same version), that one does its work: the
/// failed one is closed as superseded and `parent` waits for the open one instead.
fn restart(
    t: &mut dyn MetaWrite,
    id: TaskId,
    parent: TaskId,
    update: &TaskUpdate,
    now: u64,
) -> Result<()> {
    match t.update_task(id, None, update, now) {
        Ok(_) => Ok(()),
        Err(StoreError::Constraint(_)) => {
            let Some(task) = t.task(id)? else {
                return Ok(());
            };
            let (open, _) = t.enqueue_task(
                &crate::model::NewTask {
                    kind: task.kind,
                    target: task.target.clone(),
                    oid: task.oid,
                    share: task.share,
                    actor: task.actor.clone(),
                    sharer: task.sharer.clone(),
                    after: task.after,
                    run_after_ms: now,
                },
                now,
            )?;
            if parent != id {
                t.link_task(parent, open)?;
            }
            t.update_task(
                id,
                None,
                &TaskUpdate {
                    state: TaskState::Done,
                    report: Some(format!("superseded by task {open}")),
                    run_after_ms: None,
                    waiting: None,
                    attempts: None,
                },
                now,
            )?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
