-- Vellum metadata store on PostgreSQL (SPEC §10), schema 1: the tables of the SQLite
-- migrations schema/0001-0005 as they stand, in PostgreSQL's types.
-- DO NOT CHANGE a migration once released: add a new numbered file instead.
-- Ids and tstamps are BIGINT (u64 values below 2^63, see model::ids).

-- Key/value facts about this store (namespace oid, schema facts).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The append-only event log: one immutable row per version of an object. `body` is the
-- event's canonical JSON without the fields computed at read time (tstampend, policy).
CREATE TABLE events (
    oid    BIGINT NOT NULL,
    tstamp BIGINT NOT NULL,
    body   TEXT   NOT NULL,
    PRIMARY KEY (oid, tstamp)
);
CREATE UNIQUE INDEX events_by_tstamp ON events (tstamp);

-- Current-state index, kept in the same transaction as the log (mutable: moves rewrite
-- descendants' fulldir; the log never changes).
CREATE TABLE objects (
    oid         BIGINT  PRIMARY KEY,
    tstamp      BIGINT  NOT NULL,
    parentoid   BIGINT  NOT NULL,
    name        TEXT    NOT NULL,
    live        BOOLEAN NOT NULL,     -- false once the current version is a D
    isfile      BOOLEAN NOT NULL,
    fulldir     TEXT    NOT NULL,     -- "/<root>/.../<parent>/"
    expiration  BIGINT  NOT NULL,
    derived_oid BIGINT                -- derived.oid, for GET /derived
);
-- Names are unique among the live children of a directory (SPEC §5).
CREATE UNIQUE INDEX objects_live_name ON objects (parentoid, name) WHERE live;
CREATE INDEX objects_by_parent ON objects (parentoid, live, oid);
CREATE INDEX objects_by_derived ON objects (derived_oid) WHERE derived_oid IS NOT NULL;

-- Who purged what, when. Purges remove content; this keeps only the fact.
CREATE TABLE purges (
    tstamp      BIGINT PRIMARY KEY,
    oid         BIGINT NOT NULL,
    purgetstamp BIGINT,               -- NULL: every version was purged
    versions    BIGINT NOT NULL,
    label       TEXT   NOT NULL,
    jwthash     TEXT   NOT NULL
);

-- The database itself refuses to change the logs. A purge runs `SET LOCAL vellum.purging
-- = 'on'` in its transaction (it ends with it, and no other transaction sees it) before it
-- deletes events; nothing else may delete them, and nothing may update them.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_ARGV[0] = 'purgeable'
       AND current_setting('vellum.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused%', TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_ARGV[0] = 'purgeable' AND TG_OP = 'DELETE' THEN ' outside a purge' ELSE '' END
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER events_are_append_only
BEFORE UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION refuse_change('purgeable');
CREATE TRIGGER events_are_never_truncated
BEFORE TRUNCATE ON events
FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('never');

-- Blobs: a file version's content, by name (its identity, bound into its encryption) and
-- location (where its current object lies; NULL: at its name).
CREATE TABLE blobs (
    rname          TEXT   COLLATE "C" PRIMARY KEY,  -- byte order, as SQLite pages it (fsck, rekey)
    algorithm      TEXT   NOT NULL CHECK (algorithm IN ('chunked', 'none')),
    key_id         TEXT,              -- NULL for algorithm 'none'
    encrypteddata  TEXT,
    encryptednonce TEXT,
    size           BIGINT NOT NULL,   -- plaintext bytes
    sha256plain    TEXT   NOT NULL,
    inline         BYTEA,
    created        BIGINT NOT NULL,   -- tstamp of the event that first stored it
    location       TEXT,
    keyed_at       BIGINT             -- tstamp of its last key switch
);
CREATE INDEX blobs_by_location ON blobs (location) WHERE location IS NOT NULL;

CREATE TABLE event_blobs (
    oid    BIGINT NOT NULL,
    tstamp BIGINT NOT NULL,
    rname  TEXT   NOT NULL,
    PRIMARY KEY (oid, tstamp)
);
CREATE INDEX event_blobs_by_rname ON event_blobs (rname);

-- The share log (SPEC §9.1): append-only, keyed by store-wide tstamp.
CREATE TABLE share_log (
    tstamp BIGINT PRIMARY KEY,
    share  BIGINT NOT NULL,
    kind   TEXT   NOT NULL,
    body   TEXT   NOT NULL
);
CREATE INDEX share_log_by_share ON share_log (share, tstamp);
CREATE TRIGGER share_log_is_append_only
BEFORE UPDATE OR DELETE ON share_log
FOR EACH ROW EXECUTE FUNCTION refuse_change('never');
CREATE TRIGGER share_log_is_never_truncated
BEFORE TRUNCATE ON share_log
FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('never');

-- Each share's current state (the last entry of its log), for the decisions.
CREATE TABLE shares (
    id             BIGINT  PRIMARY KEY,
    oid            BIGINT  NOT NULL,
    tstamp         BIGINT  NOT NULL,
    audience_claim TEXT,              -- NULL for a link share
    audience_value TEXT,
    link_hash      TEXT,              -- a link share's secret, SHA-256 hex (never the secret)
    sharer         TEXT    NOT NULL,  -- the sharer's label
    parent         BIGINT,
    body           TEXT    NOT NULL,
    expires        BIGINT,            -- seconds since the epoch
    closed         BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX shares_by_oid ON shares (oid, audience_value);
CREATE INDEX shares_by_audience ON shares (audience_value, audience_claim);
CREATE INDEX shares_by_sharer ON shares (sharer);
CREATE INDEX shares_by_parent ON shares (parent) WHERE parent IS NOT NULL;
CREATE UNIQUE INDEX shares_by_link ON shares (link_hash) WHERE link_hash IS NOT NULL;
CREATE INDEX shares_expiring ON shares (expires) WHERE NOT closed AND expires IS NOT NULL;

-- The task queue (SPEC §9.5, §9.6): its rows change as tasks run; the queue's state, not a
-- record. Leased by one node at a time (`FOR UPDATE SKIP LOCKED`).
CREATE TABLE tasks (
    id            BIGINT  PRIMARY KEY,   -- from the oid clock
    kind          TEXT    NOT NULL,      -- rotate_share, rotate_blob, expiry_sweep, webhook
    target        TEXT    NOT NULL,      -- a share id, an rname, `shares`, `<share>/<tstamp>`
    oid           BIGINT,                -- the object it concerns
    share         BIGINT,                -- the share it concerns
    actor         TEXT,                  -- the label of who caused it
    sharer        TEXT,                  -- the sharer of its share
    state         TEXT    NOT NULL CHECK (state IN ('todo', 'in_progress', 'done', 'failed')),
    attempts      BIGINT  NOT NULL DEFAULT 0,
    report        TEXT,
    created       BIGINT  NOT NULL,
    updated       BIGINT  NOT NULL,
    run_after     BIGINT  NOT NULL,      -- not run before (backoff, next sweep)
    lease_owner   TEXT,                  -- the node running it
    lease_until   BIGINT,                -- and until when, unless it renews
    after         BIGINT,                -- rotate_blob: the latest revocation it serves
    waiting       BOOLEAN NOT NULL DEFAULT false,  -- a parent waiting for its children
    open_children BIGINT  NOT NULL DEFAULT 0       -- a parent: linked children still to run
);
CREATE UNIQUE INDEX tasks_open ON tasks (kind, target) WHERE state IN ('todo', 'in_progress');
CREATE INDEX tasks_runnable ON tasks (state, run_after);
CREATE INDEX tasks_by_target ON tasks (target);
CREATE INDEX tasks_by_share ON tasks (share, kind, id) WHERE share IS NOT NULL;
CREATE INDEX tasks_by_actor ON tasks (actor, id);
CREATE INDEX tasks_by_sharer ON tasks (sharer, id);
CREATE INDEX tasks_by_oid ON tasks (oid, id) WHERE oid IS NOT NULL;

CREATE TABLE task_links (
    parent BIGINT NOT NULL,
    child  BIGINT NOT NULL,
    PRIMARY KEY (parent, child)
);
CREATE INDEX task_links_by_child ON task_links (child, parent);

-- The store's one clock (SPEC §10): tstamps and oids are nanosecond timestamps, unique and
-- strictly increasing store-wide however many nodes write. A write transaction takes each
-- of its tstamps from `vellum_next_tstamp(<its node's wall clock, ns>)`, which advances the
-- one row below and keeps it locked until the transaction ends: another transaction that
-- wants a tstamp waits for that commit (or rollback), so commit order is tstamp order, which
-- the feed relies on. The cost: writes serialise from their first tstamp to their commit,
-- as under SQLite's one writer; reads and the rest of a write before it do not.
CREATE TABLE clock (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    last BIGINT  NOT NULL
);
INSERT INTO clock (last) VALUES (0);

CREATE FUNCTION vellum_next_tstamp(now_ns BIGINT) RETURNS BIGINT LANGUAGE sql AS $$
    UPDATE clock SET last = greatest(last + 1, now_ns) RETURNING last;
$$;
