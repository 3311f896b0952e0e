-- Vellum metadata store, schema 1.
-- DO NOT CHANGE a migration once released: add a new numbered file instead.
-- Ids and tstamps are stored as INTEGER (u64 values below 2^63, see model::ids).

-- Key/value facts about this store (namespace oid, schema facts).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The append-only event log: one immutable row per version of an object.
-- `body` is the event's canonical JSON without the fields computed at read time
-- (tstampend, policy).
CREATE TABLE events (
    oid    INTEGER NOT NULL,
    tstamp INTEGER NOT NULL,
    body   TEXT    NOT NULL,
    PRIMARY KEY (oid, tstamp)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_tstamp ON events (tstamp);

-- Current-state index, kept in the same transaction as the log. One row per object
-- that has not been purged; `tstamp` names its current version in `events`.
-- This table is mutable (moves rewrite descendants' fulldir); the log never is.
CREATE TABLE objects (
    oid         INTEGER PRIMARY KEY,
    tstamp      INTEGER NOT NULL,
    parentoid   INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    live        INTEGER NOT NULL CHECK (live IN (0, 1)),   -- 0 once the current version is a D
    isfile      INTEGER NOT NULL CHECK (isfile IN (0, 1)),
    fulldir     TEXT    NOT NULL,                          -- "/<root>/.../<parent>/"
    expiration  INTEGER NOT NULL,
    derived_oid INTEGER                                    -- derived.oid, for GET /derived
);
-- Names are unique among the live children of a directory (SPEC §5).
CREATE UNIQUE INDEX objects_live_name ON objects (parentoid, name) WHERE live = 1;
CREATE INDEX objects_by_parent ON objects (parentoid, live, oid);
CREATE INDEX objects_by_derived ON objects (derived_oid) WHERE derived_oid IS NOT NULL;

-- Who purged what, when. Purges remove content; this keeps only the fact.
CREATE TABLE purges (
    tstamp      INTEGER PRIMARY KEY,
    oid         INTEGER NOT NULL,
    purgetstamp INTEGER,               -- NULL: every version was purged
    versions    INTEGER NOT NULL,
    label       TEXT    NOT NULL,
    jwthash     TEXT    NOT NULL
);

-- The database itself refuses to change the log. A purge inserts a row here, deletes,
-- and removes the row again, all inside one transaction; nothing else may delete.
CREATE TABLE purge_guard (
    active INTEGER PRIMARY KEY CHECK (active = 1)
);

CREATE TRIGGER events_are_append_only_update
BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;

CREATE TRIGGER events_are_append_only_delete
BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM purge_guard)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE refused outside a purge');
END;
