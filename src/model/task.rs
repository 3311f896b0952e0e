//! Deferred work (SPEC §9.6): the plain types of the durable task queue.

use serde::{Deserialize, Serialize};

use super::{Oid, Tstamp};

/// A task's id: from the store's oid clock, so unique store-wide like every other id.
pub type TaskId = Oid;

/// What a task does. DO NOT CHANGE the names: they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// After a share stopped granting reading: queue a re-encryption of every file version
    /// it let its recipients read, then wait for them (target: the share id).
    RotateShare,
    /// Re-encrypt one blob under a fresh data key (target: its rname).
    RotateBlob,
    /// Record the shares whose expiry has passed (target: `shares`; one recurring task).
    ExpirySweep,
    /// POST one share-log entry to `SHARE_WEBHOOK_URL` (target: `<share>/<tstamp>`).
    Webhook,
}

impl TaskKind {
    pub const ALL: [TaskKind; 4] = [
        TaskKind::RotateShare,
        TaskKind::RotateBlob,
        TaskKind::ExpirySweep,
        TaskKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::RotateShare => "rotate_share",
            TaskKind::RotateBlob => "rotate_blob",
            TaskKind::ExpirySweep => "expiry_sweep",
            TaskKind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// DO NOT CHANGE the names: they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Todo,
    InProgress,
    Done,
    Failed,
}

impl TaskState {
    pub const ALL: [TaskState; 4] = [
        TaskState::Todo,
        TaskState::InProgress,
        TaskState::Done,
        TaskState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Todo => "todo",
            TaskState::InProgress => "in_progress",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Still to run or running.
    pub fn is_open(self) -> bool {
        matches!(self, TaskState::Todo | TaskState::InProgress)
    }
}

/// One task as stored. Times are milliseconds since the Unix epoch (wall clock: leases and
/// backoff are about real time, not the store's tstamps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub kind: TaskKind,
    pub target: String,
    /// The object it concerns (whoever holds U on it may see the task).
    pub oid: Option<Oid>,
    /// The share it concerns.
    pub share: Option<Oid>,
    /// Who caused it (the label of the identity whose request queued it).
    pub actor: Option<String>,
    /// The sharer of the share it concerns.
    pub sharer: Option<String>,
    pub state: TaskState,
    /// Runs begun (a run that was cut off counts).
    pub attempts: u32,
    pub report: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Not run before this (backoff, or the next sweep).
    pub run_after_ms: u64,
    /// The node holding it while it runs, and until when.
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<u64>,
    /// A blob rotation: the latest revocation it serves; a key switched after it is fresh.
    pub after: Option<Tstamp>,
    /// A parent whose own part is done and which waits for its children.
    pub waiting: bool,
    /// A parent: how many of its children are still to run or running (kept by the store
    /// as children are linked and change state).
    pub open_children: u64,
}

/// A task to queue.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub kind: TaskKind,
    pub target: String,
    pub oid: Option<Oid>,
    pub share: Option<Oid>,
    pub actor: Option<String>,
    pub sharer: Option<String>,
    pub after: Option<Tstamp>,
    pub run_after_ms: u64,
}

/// How many of a parent's children are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    pub todo: u64,
    pub in_progress: u64,
    pub done: u64,
    pub failed: u64,
}

impl TaskCounts {
    pub fn total(&self) -> u64 {
        self.todo + self.in_progress + self.done + self.failed
    }

    pub fn open(&self) -> u64 {
        self.todo + self.in_progress
    }

    pub fn add(&mut self, state: TaskState, n: u64) {
        match state {
            TaskState::Todo => self.todo += n,
            TaskState::InProgress => self.in_progress += n,
            TaskState::Done => self.done += n,
            TaskState::Failed => self.failed += n,
        }
    }
}

/// A change to a task's state, made by its runner (or by a retry).
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    pub state: TaskState,
    pub report: Option<String>,
    pub run_after_ms: Option<u64>,
    pub waiting: Option<bool>,
    /// Sets the attempts (a retry starts again at 0).
    pub attempts: Option<u32>,
}

/// The queue at a glance, for /metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    pub todo: u64,
    pub in_progress: u64,
    pub failed: u64,
    /// Creation time of the oldest task still to run or running.
    pub oldest_open_ms: Option<u64>,
}

/// What `GET /tasks` selects.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Only tasks whose actor or sharer is this label (`None`: all, for root).
    pub label: Option<String>,
    /// Only tasks on this object.
    pub oid: Option<Oid>,
    pub state: Option<TaskState>,
    pub kind: Option<TaskKind>,
    /// Ids below this (pages go newest first).
    pub before: Option<TaskId>,
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_round_trip_through_their_stored_names() {
        for k in TaskKind::ALL {
            assert_eq!(TaskKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(TaskKind::parse("rotate"), None);
    }
}
