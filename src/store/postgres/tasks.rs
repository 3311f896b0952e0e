//! The task queue in PostgreSQL: the SQL of `sqlite/tasks.rs`, with `waiting` a BOOLEAN.
//! Several nodes share the queue; leasing locks its candidate rows (`SKIP LOCKED`).

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::conn::{get, Conn};
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

fn count(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_row(r: &Row) -> Result<Task, StoreError> {
    let kind: String = get(r, 1)?;
    let state: String = get(r, 7)?;
    Ok(Task {
        id: Oid::from_i64(get(r, 0)?),
        kind: TaskKind::parse(&kind)
            .ok_or_else(|| StoreError::Row(format!("task kind {kind:?}")))?,
        target: get(r, 2)?,
        oid: get::<Option<i64>>(r, 3)?.map(Oid::from_i64),
        share: get::<Option<i64>>(r, 4)?.map(Oid::from_i64),
        actor: get(r, 5)?,
        sharer: get(r, 6)?,
        state: TaskState::parse(&state)
            .ok_or_else(|| StoreError::Row(format!("task state {state:?}")))?,
        attempts: get::<i64>(r, 8)?.clamp(0, u32::MAX as i64) as u32,
        report: get(r, 9)?,
        created_ms: get::<i64>(r, 10)?.max(0) as u64,
        updated_ms: get::<i64>(r, 11)?.max(0) as u64,
        run_after_ms: get::<i64>(r, 12)?.max(0) as u64,
        lease_owner: get(r, 13)?,
        lease_until_ms: get::<Option<i64>>(r, 14)?.map(|v| v.max(0) as u64),
        after: get::<Option<i64>>(r, 15)?.map(Tstamp::from_i64),
        waiting: get(r, 16)?,
        open_children: get::<i64>(r, 17)?.max(0) as u64,
    })
}

fn ids(rows: Vec<Row>) -> Result<Vec<TaskId>, StoreError> {
    rows.iter()
        .map(|r| get::<i64>(r, 0).map(Oid::from_i64))
        .collect()
}

pub(super) fn task(c: &mut Conn, id: TaskId) -> Result<Option<Task>, StoreError> {
    c.query_opt(
        concat!("SELECT ", columns!(), " FROM tasks WHERE id = $1"),
        &[&id.as_i64()],
    )?
    .map(|r| from_row(&r))
    .transpose()
}

/// The filters are fixed fragments in a fixed order, so there are at most 16 texts.
pub(super) fn tasks(c: &mut Conn, q: &TaskQuery) -> Result<Vec<Task>, StoreError> {
    let before = q.before.map_or(i64::MAX, Oid::as_i64);
    let oid = q.oid.map(Oid::as_i64);
    let state = q.state.map(TaskState::as_str);
    let kind = q.kind.map(TaskKind::as_str);
    let limit = count(q.limit);
    let mut clauses = vec!["id < $1".to_string()];
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&before];
    if let Some(label) = &q.label {
        args.push(label);
        clauses.push(format!("(actor = ${n} OR sharer = ${n})", n = args.len()));
    }
    if let Some(oid) = &oid {
        args.push(oid);
        clauses.push(format!("oid = ${}", args.len()));
    }
    if let Some(state) = &state {
        args.push(state);
        clauses.push(format!("state = ${}", args.len()));
    }
    if let Some(kind) = &kind {
        args.push(kind);
        clauses.push(format!("kind = ${}", args.len()));
    }
    args.push(&limit);
    let sql = format!(
        "{SELECT} WHERE {} ORDER BY id DESC LIMIT ${}",
        clauses.join(" AND "),
        args.len()
    );
    c.query(&sql, &args)?.iter().map(from_row).collect()
}

pub(super) fn children(c: &mut Conn, parent: TaskId) -> Result<TaskCounts, StoreError> {
    let rows = c.query(
        "SELECT t.state, count(*) FROM task_links l JOIN tasks t ON t.id = l.child
         WHERE l.parent = $1 GROUP BY t.state",
        &[&parent.as_i64()],
    )?;
    let mut counts = TaskCounts::default();
    for row in &rows {
        let state: String = get(row, 0)?;
        let n: i64 = get(row, 1)?;
        if let Some(s) = TaskState::parse(&state) {
            counts.add(s, n.max(0) as u64);
        }
    }
    Ok(counts)
}

/// In parent order, as SQLite's index on (child, parent) gives them.
pub(super) fn parents(c: &mut Conn, child: TaskId) -> Result<Vec<TaskId>, StoreError> {
    ids(c.query(
        "SELECT parent FROM task_links WHERE child = $1 ORDER BY parent",
        &[&child.as_i64()],
    )?)
}

/// In id order, as SQLite's key on (parent, child) gives them.
pub(super) fn failed_children(c: &mut Conn, parent: TaskId) -> Result<Vec<TaskId>, StoreError> {
    ids(c.query(
        "SELECT t.id FROM task_links l JOIN tasks t ON t.id = l.child
         WHERE l.parent = $1 AND t.state = 'failed'
         ORDER BY t.id",
        &[&parent.as_i64()],
    )?)
}

pub(super) fn child_for(
    c: &mut Conn,
    parent: TaskId,
    target: &str,
) -> Result<Option<TaskId>, StoreError> {
    c.query_opt(
        "SELECT t.id FROM tasks t WHERE t.target = $2
           AND EXISTS (SELECT 1 FROM task_links l WHERE l.parent = $1 AND l.child = t.id)
         LIMIT 1",
        &[&parent.as_i64(), &target],
    )?
    .map(|r| get::<i64>(&r, 0).map(Oid::from_i64))
    .transpose()
}

pub(super) fn stats(c: &mut Conn) -> Result<QueueStats, StoreError> {
    let rows = c.query("SELECT state, count(*) FROM tasks GROUP BY state", &[])?;
    let mut out = QueueStats::default();
    for row in &rows {
        let state: String = get(row, 0)?;
        let n = get::<i64>(row, 1)?.max(0) as u64;
        match TaskState::parse(&state) {
            Some(TaskState::Todo) => out.todo = n,
            Some(TaskState::InProgress) => out.in_progress = n,
            Some(TaskState::Failed) => out.failed = n,
            _ => {}
        }
    }
    // The recurring sweep's row lives as long as the store: it counts from when its next
    // run is due, not from when it was first queued (else the age would be the uptime).
    let row = c.query_one(
        "SELECT min(CASE kind WHEN 'expiry_sweep' THEN run_after ELSE created END)
         FROM tasks WHERE state IN ('todo', 'in_progress') AND NOT waiting",
        &[],
    )?;
    out.oldest_open_ms = get::<Option<i64>>(&row, 0)?.map(|v| v.max(0) as u64);
    Ok(out)
}

pub(super) fn next_due(c: &mut Conn) -> Result<Option<u64>, StoreError> {
    let row = c.query_one(
        "SELECT (SELECT min(run_after) FROM tasks WHERE state = 'todo'),
                (SELECT min(lease_until) FROM tasks WHERE state = 'in_progress' AND NOT waiting)",
        &[],
    )?;
    let todo: Option<i64> = get(&row, 0)?;
    let running: Option<i64> = get(&row, 1)?;
    Ok(match (todo, running) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
    .map(|v| v.max(0) as u64))
}

/// The open task of `kind` and `target`, with its `after`.
fn open_task(c: &mut Conn, t: &NewTask) -> Result<Option<(i64, Option<i64>)>, StoreError> {
    c.query_opt(
        "SELECT id, after FROM tasks
         WHERE kind = $1 AND target = $2 AND state IN ('todo', 'in_progress')",
        &[&t.kind.as_str(), &t.target],
    )?
    .map(|r| Ok((get(&r, 0)?, get(&r, 1)?)))
    .transpose()
}

/// Queues `t`, or joins the open task of the same kind and target (raising its `after`
/// to the later of the two). Returns the task's id and whether it is new. The insert
/// skips a clash on `tasks_open` (a task queued meanwhile by another node, committed)
/// rather than failing the transaction; the task then joins that one.
pub(super) fn enqueue(
    c: &mut Conn,
    id: TaskId,
    t: &NewTask,
    now_ms: u64,
) -> Result<(TaskId, bool), StoreError> {
    let mut open = open_task(c, t)?;
    if open.is_none() {
        let added = c.execute(
            "INSERT INTO tasks (id, kind, target, oid, share, actor, sharer, state, created,
                    updated, run_after, after)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'todo', $8, $8, $9, $10)
             ON CONFLICT (kind, target) WHERE state IN ('todo', 'in_progress') DO NOTHING",
            &[
                &id.as_i64(),
                &t.kind.as_str(),
                &t.target,
                &t.oid.map(Oid::as_i64),
                &t.share.map(Oid::as_i64),
                &t.actor,
                &t.sharer,
                &ms(now_ms),
                &ms(t.run_after_ms),
                &t.after.map(Tstamp::as_i64),
            ],
        )?;
        if added == 1 {
            return Ok((id, true));
        }
        open = open_task(c, t)?;
    }
    let Some((existing, after)) = open else {
        return Err(StoreError::Backend(format!(
            "task {} {:?}: neither queued nor open",
            t.kind.as_str(),
            t.target
        )));
    };
    if let Some(new) = t.after {
        if after.is_none_or(|a| a < new.as_i64()) {
            c.execute(
                "UPDATE tasks SET after = $2 WHERE id = $1",
                &[&existing, &new.as_i64()],
            )?;
        }
    }
    Ok((Oid::from_i64(existing), false))
}

pub(super) fn link(c: &mut Conn, parent: TaskId, child: TaskId) -> Result<(), StoreError> {
    let added = c.execute(
        "INSERT INTO task_links (parent, child) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&parent.as_i64(), &child.as_i64()],
    )?;
    if added == 1 {
        c.execute(
            "UPDATE tasks SET open_children = open_children + 1
             WHERE id = $1 AND (SELECT state FROM tasks WHERE id = $2) IN ('todo', 'in_progress')",
            &[&parent.as_i64(), &child.as_i64()],
        )?;
    }
    Ok(())
}

fn is_open(state: &str) -> bool {
    state == "todo" || state == "in_progress"
}

/// Keeps the parents' `open_children` true when `child` goes from `was` to `now`.
fn count_for_parents(c: &mut Conn, child: TaskId, was: &str, now: &str) -> Result<(), StoreError> {
    let delta: i64 = match (is_open(was), is_open(now)) {
        (true, false) => -1,
        (false, true) => 1,
        _ => return Ok(()),
    };
    c.execute(
        "UPDATE tasks SET open_children = greatest(open_children + $2, 0)
         WHERE id IN (SELECT parent FROM task_links WHERE child = $1)",
        &[&child.as_i64(), &delta],
    )?;
    Ok(())
}

/// A webhook waits while an earlier one of its share is not done.
macro_rules! webhook_in_order {
    () => {
        "NOT (t.kind = 'webhook' AND EXISTS (
            SELECT 1 FROM tasks p
            WHERE p.share = t.share AND p.kind = 'webhook' AND p.id < t.id
              AND p.state != 'done'))"
    };
}

/// Leases the next task that may run: one due, or else one whose holder's lease ran out
/// (not a parent waiting for its children). Webhooks go out in order per share. The
/// candidate row is locked (`SKIP LOCKED`: another node's pick is passed over, not waited
/// for).
pub(super) fn lease(
    c: &mut Conn,
    now_ms: u64,
    node: &str,
    until_ms: u64,
) -> Result<Option<Task>, StoreError> {
    let due = c.query_opt(
        concat!(
            "SELECT t.id FROM tasks t
             WHERE t.state = 'todo' AND t.run_after <= $1 AND ",
            webhook_in_order!(),
            "
             ORDER BY t.run_after, t.id LIMIT 1
             FOR UPDATE OF t SKIP LOCKED"
        ),
        &[&ms(now_ms)],
    )?;
    let row = match due {
        Some(row) => Some(row),
        None => c.query_opt(
            concat!(
                "SELECT t.id FROM tasks t
                 WHERE t.state = 'in_progress' AND NOT t.waiting AND t.lease_until < $1
                   AND ",
                webhook_in_order!(),
                "
                 ORDER BY t.lease_until LIMIT 1
                 FOR UPDATE OF t SKIP LOCKED"
            ),
            &[&ms(now_ms)],
        )?,
    };
    match row {
        Some(row) => {
            let id: i64 = get(&row, 0)?;
            take_lease(c, id, now_ms, node, until_ms).map(Some)
        }
        None => Ok(None),
    }
}

/// Gives task `id` to `node` until `until_ms` (a run begins: attempts + 1).
fn take_lease(
    c: &mut Conn,
    id: i64,
    now_ms: u64,
    node: &str,
    until_ms: u64,
) -> Result<Task, StoreError> {
    let row = c.query_one(
        concat!(
            "UPDATE tasks SET state = 'in_progress', lease_owner = $2, lease_until = $3,
                    attempts = attempts + 1, updated = $1
             WHERE id = $4
             RETURNING ",
            columns!()
        ),
        &[&ms(now_ms), &node, &ms(until_ms), &id],
    )?;
    from_row(&row)
}

pub(super) fn lease_more(
    c: &mut Conn,
    kind: TaskKind,
    n: usize,
    now_ms: u64,
    node: &str,
    until_ms: u64,
) -> Result<Vec<Task>, StoreError> {
    if n == 0 || kind == TaskKind::Webhook {
        return Ok(Vec::new());
    }
    let rows = c.query(
        "SELECT id FROM tasks WHERE state = 'todo' AND run_after <= $1 AND kind = $2
         ORDER BY run_after, id LIMIT $3
         FOR UPDATE SKIP LOCKED",
        &[&ms(now_ms), &kind.as_str(), &count(n)],
    )?;
    let ids: Vec<i64> = rows.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
    ids.into_iter()
        .map(|id| take_lease(c, id, now_ms, node, until_ms))
        .collect()
}

pub(super) fn renew(
    c: &mut Conn,
    id: TaskId,
    node: &str,
    until_ms: u64,
) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE tasks SET lease_until = $3
         WHERE id = $1 AND lease_owner = $2 AND state = 'in_progress'",
        &[&id.as_i64(), &node, &ms(until_ms)],
    )?;
    Ok(n == 1)
}

/// Applies `u` to task `id`; with `node`, only while that node holds its lease. The lease
/// is given up. Returns whether it applied. A task going back to an open state while
/// another of its kind and target is open would break `tasks_open`: that is checked
/// first (a failed statement would abort the whole transaction, batch-mates included).
pub(super) fn update(
    c: &mut Conn,
    id: TaskId,
    node: Option<&str>,
    u: &TaskUpdate,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let Some(row) = c.query_opt(
        "SELECT state FROM tasks WHERE id = $1 FOR UPDATE",
        &[&id.as_i64()],
    )?
    else {
        return Ok(false);
    };
    let was: String = get(&row, 0)?;
    // With `node`, a task that is not open is not leased: the update would not apply.
    if node.is_none() && u.state.is_open() && !is_open(&was) {
        let clash = c.query_opt(
            "SELECT 1 FROM tasks o JOIN tasks me ON o.kind = me.kind AND o.target = me.target
             WHERE me.id = $1 AND o.id != me.id AND o.state IN ('todo', 'in_progress')
             LIMIT 1",
            &[&id.as_i64()],
        )?;
        if clash.is_some() {
            // Back to todo while another task of the same kind and target is open (a retry
            // of a failed rotation that a new revocation queued again).
            return Err(StoreError::Constraint(format!(
                "task {id}: another task with its target is open"
            )));
        }
    }
    let n = c.execute(
        "UPDATE tasks SET state = $3, report = coalesce($4::text, report),
            run_after = coalesce($5::bigint, run_after), waiting = coalesce($6::boolean, waiting),
            attempts = coalesce($7::bigint, attempts), updated = $8,
            lease_owner = NULL, lease_until = NULL
         WHERE id = $1 AND ($2::text IS NULL OR (lease_owner = $2 AND state = 'in_progress'))",
        &[
            &id.as_i64(),
            &node,
            &u.state.as_str(),
            &u.report,
            &u.run_after_ms.map(ms),
            &u.waiting,
            &u.attempts.map(i64::from),
            &ms(now_ms),
        ],
    )?;
    if n == 1 {
        count_for_parents(c, id, &was, u.state.as_str())?;
    }
    Ok(n == 1)
}

/// Gives up every lease `node` holds (at a clean shutdown): its tasks run again at once.
pub(super) fn release(c: &mut Conn, node: &str, now_ms: u64) -> Result<u64, StoreError> {
    c.execute(
        "UPDATE tasks SET state = 'todo', lease_owner = NULL, lease_until = NULL,
            attempts = greatest(attempts - 1, 0), run_after = $2, updated = $2
         WHERE lease_owner = $1 AND state = 'in_progress'",
        &[&node, &ms(now_ms)],
    )
}

/// Forgets at most `limit` tasks done before `before_ms`, with their links, keeping any
/// that a parent not yet done still counts. The ids are bound as one array.
pub(super) fn prune(c: &mut Conn, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
    let rows = c.query(
        "SELECT t.id FROM tasks t
         WHERE t.state = 'done' AND t.updated < $1
           AND NOT EXISTS (SELECT 1 FROM task_links l JOIN tasks p ON p.id = l.parent
                           WHERE l.child = t.id AND p.state != 'done')
         LIMIT $2",
        &[&ms(before_ms), &count(limit)],
    )?;
    let ids: Vec<i64> = rows.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    c.execute(
        "DELETE FROM task_links WHERE parent = ANY($1) OR child = ANY($1)",
        &[&ids],
    )?;
    c.execute("DELETE FROM tasks WHERE id = ANY($1)", &[&ids])?;
    Ok(ids.len() as u64)
}

/// The blobs of file versions at or before `upto` of `oid` and of everything beneath it
/// (live or deleted; purged versions are gone), as (object, rname), in rname order. The
/// order is by bytes (`COLLATE "C"`), as SQLite's, whatever the database's collation.
pub(super) fn blobs_beneath(
    c: &mut Conn,
    oid: Oid,
    upto: Tstamp,
) -> Result<Vec<(Oid, String)>, StoreError> {
    let Some(row) = c.query_opt(
        "SELECT fulldir FROM objects WHERE oid = $1",
        &[&oid.as_i64()],
    )?
    else {
        return Ok(Vec::new());
    };
    let fulldir: String = get(&row, 0)?;
    let prefix = format!("{fulldir}{oid}/");
    let rows = c.query(
        "SELECT DISTINCT eb.oid, eb.rname COLLATE \"C\"
         FROM objects o JOIN event_blobs eb ON eb.oid = o.oid
         WHERE (o.oid = $1 OR starts_with(o.fulldir, $2)) AND eb.tstamp <= $3
         ORDER BY 2",
        &[&oid.as_i64(), &prefix, &upto.as_i64()],
    )?;
    rows.iter()
        .map(|r| Ok((Oid::from_i64(get(r, 0)?), get(r, 1)?)))
        .collect()
}
