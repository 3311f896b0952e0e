-- Vellum metadata store, schema 5: the task queue (SPEC §9.6), fresh keys, expiring shares.
-- DO NOT CHANGE a migration once released: add a new numbered file instead.

-- Deferred work. Unlike the logs, a task row changes as it runs: it is the queue's state,
-- not a record (the share log records what a task did: `rotated`). Times are wall-clock
-- milliseconds since the epoch: leases and backoff are about real time.
CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY,           -- from the oid clock
    kind        TEXT    NOT NULL,              -- rotate_share, rotate_blob, expiry_sweep, webhook
    target      TEXT    NOT NULL,              -- a share id, an rname, `shares`, `<share>/<tstamp>`
    oid         INTEGER,                       -- the object it concerns
    share       INTEGER,                       -- the share it concerns
    actor       TEXT,                          -- the label of who caused it
    sharer      TEXT,                          -- the sharer of its share
    state       TEXT    NOT NULL CHECK (state IN ('todo', 'in_progress', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,    -- runs begun
    report      TEXT,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL,
    run_after   INTEGER NOT NULL,              -- not run before (backoff, next sweep)
    lease_owner TEXT,                          -- the node running it
    lease_until INTEGER,                       -- and until when, unless it renews
    after       INTEGER,                       -- rotate_blob: the latest revocation it serves
    waiting     INTEGER NOT NULL DEFAULT 0,    -- a parent waiting for its children
    open_children INTEGER NOT NULL DEFAULT 0   -- a parent: linked children still to run
);
-- One open task per kind and target: a second revocation touching a blob whose rotation
-- is queued joins that task instead of rotating the blob twice.
CREATE UNIQUE INDEX tasks_open ON tasks (kind, target) WHERE state IN ('todo', 'in_progress');
CREATE INDEX tasks_runnable ON tasks (state, run_after);
CREATE INDEX tasks_by_target ON tasks (target);
CREATE INDEX tasks_by_share ON tasks (share, kind, id) WHERE share IS NOT NULL;
CREATE INDEX tasks_by_actor ON tasks (actor, id);
CREATE INDEX tasks_by_sharer ON tasks (sharer, id);
CREATE INDEX tasks_by_oid ON tasks (oid, id) WHERE oid IS NOT NULL;

-- A parent task (a share's rotation) and the tasks it waits for (its blobs' rotations); a
-- blob rotation may serve several parents.
CREATE TABLE task_links (
    parent INTEGER NOT NULL,
    child  INTEGER NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX task_links_by_child ON task_links (child, parent);

-- The tstamp of the transaction that switched a blob to its current data key (NULL: the
-- key it was stored with, at `created`). A rotation serving a revocation at T skips a
-- blob whose key was switched after T: nobody who lost access at T ever held that key.
ALTER TABLE blobs ADD COLUMN keyed_at INTEGER;

-- Open shares by expiry, for the sweep that records `expired`.
ALTER TABLE shares ADD COLUMN expires INTEGER;   -- seconds since the epoch
ALTER TABLE shares ADD COLUMN closed INTEGER NOT NULL DEFAULT 0;
UPDATE shares SET
    expires = unixepoch(json_extract(body, '$.expires')),
    closed = json_extract(body, '$.state') IN ('declined', 'revoked', 'expired');
CREATE INDEX shares_expiring ON shares (expires) WHERE closed = 0 AND expires IS NOT NULL;
