//! The task queue in SQL (schema/0005_tasks.sql).

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::task::QueueStats;
use crate::model::{
    NewTask, Oid, Task, TaskCounts, TaskId, TaskKind, TaskQuery, TaskState, TaskUpdate, Tstamp,
};
use crate::store::StoreError;

/// A task row's columns, in `from_row`'s order.
macro_rules! columns {
    () => {
        "id, kind, target, oid, share, actor, sharer, state, attempts, report, created, updated,
         run_after, lease_owner, lease_until, after, waiting, open_children"
    };
}
const SELECT: &str = concat!("SELECT ", columns!(), " FROM tasks");

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    let bad = |i: usize, what: &str, v: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("{what} {v:?}").into(),
        )
    };
    let kind: String = r.get(1)?;
    let state: String = r.get(7)?;
    Ok(Task {
        id: Oid::from_i64(r.get(0)?),
        kind: TaskKind::parse(&kind).ok_or_else(|| bad(1, "task kind", kind.clone()))?,
        target: r.get(2)?,
        oid: r.get::<_, Option<i64>>(3)?.map(Oid::from_i64),
        share: r.get::<_, Option<i64>>(4)?.map(Oid::from_i64),
        actor: r.get(5)?,
        sharer: r.get(6)?,
        state: TaskState::parse(&state).ok_or_else(|| bad(7, "task state", state.clone()))?,
        attempts: r.get::<_, i64>(8)?.clamp(0, u32::MAX as i64) as u32,
        report: r.get(9)?,
        created_ms: r.get::<_, i64>(10)?.max(0) as u64,
        updated_ms: r.get::<_, i64>(11)?.max(0) as u64,
        run_after_ms: r.get::<_, i64>(12)?.max(0) as u64,
        lease_owner: r.get(13)?,
        lease_until_ms: r.get::<_, Option<i64>>(14)?.map(|v| v.max(0) as u64),
        after: r.get::<_, Option<i64>>(15)?.map(Tstamp::from_i64),
        waiting: r.get(16)?,
        open_children: r.get::<_, i64>(17)?.max(0) as u64,
    })
}

pub(super) fn task(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("{SELECT} WHERE id = ?1"))?
        .query_row([id.as_i64()], from_row)
        .optional()?)
}

pub(super) fn tasks(conn: &Connection, q: &TaskQuery) -> Result<Vec<Task>, StoreError> {
    let mut clauses = vec!["id < ?1".to_string()];
    let mut args: Vec<rusqlite::types::Value> = vec![q.before.map_or(i64::MAX, Oid::as_i64).into()];
    if let Some(label) = &q.label {
        args.push(label.clone().into());
        clauses.push(format!("(actor = ?{n} OR sharer = ?{n})", n = args.len()));
    }
    if let Some(oid) = q.oid {
        args.push(oid.as_i64().into());
        clauses.push(format!("oid = ?{}", args.len()));
    }
    if let Some(state) = q.state {
        args.push(state.as_str().to_string().into());
        clauses.push(format!("state = ?{}", args.len()));
    }
    if let Some(kind) = q.kind {
        args.push(kind.as_str().to_string().into());
        clauses.push(format!("kind = ?{}", args.len()));
    }
    args.push(i64::try_from(q.limit).unwrap_or(i64::MAX).into());
    let sql = format!(
        "{SELECT} WHERE {} ORDER BY id DESC LIMIT ?{}",
        clauses.join(" AND "),
        args.len()
    );
    let mut st = conn.prepare_cached(&sql)?;
    let rows = st.query_map(rusqlite::params_from_iter(args), from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn children(conn: &Connection, parent: TaskId) -> Result<TaskCounts, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT t.state, count(*) FROM task_links l JOIN tasks t ON t.id = l.child
         WHERE l.parent = ?1 GROUP BY t.state",
    )?;
    let rows = st.query_map([parent.as_i64()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut counts = TaskCounts::default();
    for row in rows {
        let (state, n) = row?;
        if let Some(s) = TaskState::parse(&state) {
            counts.add(s, n.max(0) as u64);
        }
    }
    Ok(counts)
}

pub(super) fn parents(conn: &Connection, child: TaskId) -> Result<Vec<TaskId>, StoreError> {
    let mut st = conn.prepare_cached("SELECT parent FROM task_links WHERE child = ?1")?;
    let rows = st.query_map([child.as_i64()], |r| r.get::<_, i64>(0))?;
    Ok(rows
        .map(|r| r.map(Oid::from_i64))
        .collect::<Result<_, _>>()?)
}

pub(super) fn failed_children(
    conn: &Connection,
    parent: TaskId,
) -> Result<Vec<TaskId>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT t.id FROM task_links l JOIN tasks t ON t.id = l.child
         WHERE l.parent = ?1 AND t.state = 'failed'",
    )?;
    let rows = st.query_map([parent.as_i64()], |r| r.get::<_, i64>(0))?;
    Ok(rows
        .map(|r| r.map(Oid::from_i64))
        .collect::<Result<_, _>>()?)
}

pub(super) fn stats(conn: &Connection) -> Result<QueueStats, StoreError> {
    let mut st = conn.prepare_cached("SELECT state, count(*) FROM tasks GROUP BY state")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = QueueStats::default();
    for row in rows {
        let (state, n) = row?;
        let n = n.max(0) as u64;
        match TaskState::parse(&state) {
            Some(TaskState::Todo) => out.todo = n,
            Some(TaskState::InProgress) => out.in_progress = n,
            Some(TaskState::Failed) => out.failed = n,
            _ => {}
        }
    }
    // The recurring sweep's row lives as long as the store: it counts from when its next
    // run is due, not from when it was first queued (else the age would be the uptime).
    out.oldest_open_ms = conn
        .prepare_cached(
            "SELECT min(CASE kind WHEN 'expiry_sweep' THEN run_after ELSE created END)
             FROM tasks WHERE state IN ('todo', 'in_progress') AND waiting = 0",
        )?
        .query_row([], |r| r.get::<_, Option<i64>>(0))?
        .map(|v| v.max(0) as u64);
    Ok(out)
}

/// Queues `t`, or joins the open task of the same kind and target (raising its `after`
/// to the later of the two). Returns the task's id and whether it is new.
pub(super) fn enqueue(
    conn: &Connection,
    id: TaskId,
    t: &NewTask,
    now_ms: u64,
) -> Result<(TaskId, bool), StoreError> {
    let open: Option<(i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, after FROM tasks
             WHERE kind = ?1 AND target = ?2 AND state IN ('todo', 'in_progress')",
        )?
        .query_row(params![t.kind.as_str(), t.target], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let Some((existing, after)) = open {
        if let Some(new) = t.after {
            if after.is_none_or(|a| a < new.as_i64()) {
                conn.prepare_cached("UPDATE tasks SET after = ?2 WHERE id = ?1")?
                    .execute(params![existing, new.as_i64()])?;
            }
        }
        return Ok((Oid::from_i64(existing), false));
    }
    conn.prepare_cached(
        "INSERT INTO tasks (id, kind, target, oid, share, actor, sharer, state, created, updated,
                run_after, after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'todo', ?8, ?8, ?9, ?10)",
    )?
    .execute(params![
        id.as_i64(),
        t.kind.as_str(),
        t.target,
        t.oid.map(Oid::as_i64),
        t.share.map(Oid::as_i64),
        t.actor,
        t.sharer,
        ms(now_ms),
        ms(t.run_after_ms),
        t.after.map(Tstamp::as_i64),
    ])?;
    Ok((id, true))
}

pub(super) fn link(conn: &Connection, parent: TaskId, child: TaskId) -> Result<(), StoreError> {
    let added = conn
        .prepare_cached("INSERT OR IGNORE INTO task_links (parent, child) VALUES (?1, ?2)")?
        .execute(params![parent.as_i64(), child.as_i64()])?;
    if added == 1 {
        conn.prepare_cached(
            "UPDATE tasks SET open_children = open_children + 1
             WHERE id = ?1 AND (SELECT state FROM tasks WHERE id = ?2) IN ('todo', 'in_progress')",
        )?
        .execute(params![parent.as_i64(), child.as_i64()])?;
    }
    Ok(())
}

fn is_open(state: &str) -> bool {
    state == "todo" || state == "in_progress"
}

/// Keeps the parents' `open_children` true when `child` goes from `was` to `now`.
fn count_for_parents(
    conn: &Connection,
    child: TaskId,
    was: &str,
    now: &str,
) -> Result<(), StoreError> {
    let delta: i64 = match (is_open(was), is_open(now)) {
        (true, false) => -1,
        (false, true) => 1,
        _ => return Ok(()),
    };
    conn.prepare_cached(
        "UPDATE tasks SET open_children = max(open_children + ?2, 0)
         WHERE id IN (SELECT parent FROM task_links WHERE child = ?1)",
    )?
    .execute(params![child.as_i64(), delta])?;
    Ok(())
}

/// Leases the next task that may run: one due, or else one whose holder's lease ran out
/// (not a parent waiting for its children). A webhook waits while an earlier one of its
/// share is not done: deliveries go out in order per share. Each step walks an index
/// (`tasks_runnable`), so finished tasks cost nothing here.
pub(super) fn lease(
    conn: &Connection,
    now_ms: u64,
    node: &str,
    until_ms: u64,
) -> Result<Option<Task>, StoreError> {
    const WEBHOOK_IN_ORDER: &str = "NOT (t.kind = 'webhook' AND EXISTS (
            SELECT 1 FROM tasks p
            WHERE p.share = t.share AND p.kind = 'webhook' AND p.id < t.id
              AND p.state != 'done'))";
    let due: Option<i64> = conn
        .prepare_cached(&format!(
            "SELECT t.id FROM tasks t
             WHERE t.state = 'todo' AND t.run_after <= ?1 AND {WEBHOOK_IN_ORDER}
             ORDER BY t.run_after, t.id LIMIT 1"
        ))?
        .query_row([ms(now_ms)], |r| r.get(0))
        .optional()?;
    let id = match due {
        Some(id) => Some(id),
        None => conn
            .prepare_cached(&format!(
                "SELECT t.id FROM tasks t
                 WHERE t.state = 'in_progress' AND t.waiting = 0 AND t.lease_until < ?1
                   AND {WEBHOOK_IN_ORDER}
                 ORDER BY t.lease_until LIMIT 1"
            ))?
            .query_row([ms(now_ms)], |r| r.get(0))
            .optional()?,
    };
    match id {
        Some(id) => take_lease(conn, id, now_ms, node, until_ms).map(Some),
        None => Ok(None),
    }
}

/// Gives task `id` to `node` until `until_ms` (a run begins: attempts + 1).
fn take_lease(
    conn: &Connection,
    id: i64,
    now_ms: u64,
    node: &str,
    until_ms: u64,
) -> Result<Task, StoreError> {
    let sql = format!(
        "UPDATE tasks SET state = 'in_progress', lease_owner = ?2, lease_until = ?3,
                attempts = attempts + 1, updated = ?1
         WHERE id = ?4
         RETURNING {}",
        columns!()
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![ms(now_ms), node, ms(until_ms), id], from_row)?)
}

pub(super) fn lease_more(
    conn: &Connection,
    kind: TaskKind,
    n: usize,
    now_ms: u64,
    node: &str,
    until_ms: u64,
) -> Result<Vec<Task>, StoreError> {
    if n == 0 || kind == TaskKind::Webhook {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM tasks WHERE state = 'todo' AND run_after <= ?1 AND kind = ?2
             ORDER BY run_after, id LIMIT ?3",
        )?
        .query_map(
            params![
                ms(now_ms),
                kind.as_str(),
                i64::try_from(n).unwrap_or(i64::MAX)
            ],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    ids.into_iter()
        .map(|id| take_lease(conn, id, now_ms, node, until_ms))
        .collect()
}

pub(super) fn renew(
    conn: &Connection,
    id: TaskId,
    node: &str,
    until_ms: u64,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE tasks SET lease_until = ?3
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'in_progress'",
        )?
        .execute(params![id.as_i64(), node, ms(until_ms)])?;
    Ok(n == 1)
}

/// Applies `u` to task `id`; with `node`, only while that node holds its lease. The lease
/// is given up. Returns whether it applied.
pub(super) fn update(
    conn: &Connection,
    id: TaskId,
    node: Option<&str>,
    u: &TaskUpdate,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let was: Option<String> = conn
        .prepare_cached("SELECT state FROM tasks WHERE id = ?1")?
        .query_row([id.as_i64()], |r| r.get(0))
        .optional()?;
    let Some(was) = was else {
        return Ok(false);
    };
    let n = conn
        .prepare_cached(
            "UPDATE tasks SET state = ?3, report = coalesce(?4, report),
                run_after = coalesce(?5, run_after), waiting = coalesce(?6, waiting),
                attempts = coalesce(?7, attempts), updated = ?8,
                lease_owner = NULL, lease_until = NULL
             WHERE id = ?1 AND (?2 IS NULL OR (lease_owner = ?2 AND state = 'in_progress'))",
        )?
        .execute(params![
            id.as_i64(),
            node,
            u.state.as_str(),
            u.report,
            u.run_after_ms.map(ms),
            u.waiting,
            u.attempts,
            ms(now_ms)
        ])
        .map_err(|e| match e.sqlite_error() {
            // Back to todo while another task of the same kind and target is open (a retry
            // of a failed rotation that a new revocation queued again).
            Some(f) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
                StoreError::Constraint(format!("task {id}: another task with its target is open"))
            }
            _ => StoreError::from(e),
        })?;
    if n == 1 {
        count_for_parents(conn, id, &was, u.state.as_str())?;
    }
    Ok(n == 1)
}

/// Gives up every lease `node` holds (at a clean shutdown): its tasks run again at once.
pub(super) fn release(conn: &Connection, node: &str, now_ms: u64) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE tasks SET state = 'todo', lease_owner = NULL, lease_until = NULL,
                attempts = max(attempts - 1, 0), run_after = ?2, updated = ?2
             WHERE lease_owner = ?1 AND state = 'in_progress'",
        )?
        .execute(params![node, ms(now_ms)])?;
    Ok(n as u64)
}

/// The blobs of file versions at or before `upto` of `oid` and of everything beneath it
/// (live or deleted; purged versions are gone), as (object, rname).
pub(super) fn blobs_beneath(
    conn: &Connection,
    oid: Oid,
    upto: Tstamp,
) -> Result<Vec<(Oid, String)>, StoreError> {
    let fulldir: Option<String> = conn
        .prepare_cached("SELECT fulldir FROM objects WHERE oid = ?1")?
        .query_row([oid.as_i64()], |r| r.get(0))
        .optional()?;
    let Some(fulldir) = fulldir else {
        return Ok(Vec::new());
    };
    let prefix = format!("{fulldir}{oid}/");
    let mut st = conn.prepare_cached(
        "SELECT DISTINCT eb.oid, eb.rname FROM objects o JOIN event_blobs eb ON eb.oid = o.oid
         WHERE (o.oid = ?1 OR substr(o.fulldir, 1, length(?2)) = ?2) AND eb.tstamp <= ?3
         ORDER BY eb.rname",
    )?;
    let rows = st.query_map(params![oid.as_i64(), prefix, upto.as_i64()], |r| {
        Ok((Oid::from_i64(r.get(0)?), r.get::<_, String>(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn next_due(conn: &Connection) -> Result<Option<u64>, StoreError> {
    let todo: Option<i64> = conn
        .prepare_cached("SELECT min(run_after) FROM tasks WHERE state = 'todo'")?
        .query_row([], |r| r.get(0))?;
    let running: Option<i64> = conn
        .prepare_cached(
            "SELECT min(lease_until) FROM tasks WHERE state = 'in_progress' AND waiting = 0",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(match (todo, running) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
    .map(|v| v.max(0) as u64))
}

pub(super) fn prune(conn: &Connection, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT t.id FROM tasks t
         WHERE t.state = 'done' AND t.updated < ?1
           AND NOT EXISTS (SELECT 1 FROM task_links l JOIN tasks p ON p.id = l.parent
                           WHERE l.child = t.id AND p.state != 'done')
         LIMIT ?2",
    )?;
    let ids: Vec<i64> = st
        .query_map(
            params![ms(before_ms), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        conn.prepare_cached("DELETE FROM task_links WHERE parent = ?1 OR child = ?1")?
            .execute([id])?;
        conn.prepare_cached("DELETE FROM tasks WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(ids.len() as u64)
}

pub(super) fn child_for(
    conn: &Connection,
    parent: TaskId,
    target: &str,
) -> Result<Option<TaskId>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT t.id FROM tasks t WHERE t.target = ?2
               AND EXISTS (SELECT 1 FROM task_links l WHERE l.parent = ?1 AND l.child = t.id)
             LIMIT 1",
        )?
        .query_row(params![parent.as_i64(), target], |r| r.get::<_, i64>(0))
        .optional()?
        .map(Oid::from_i64))
}
