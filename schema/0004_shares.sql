-- Vellum metadata store, schema 4: shares (SPEC §9).
-- DO NOT CHANGE a migration once released: add a new numbered file instead.

-- The share log: every change to every share, append-only like the event log. `body` is
-- the entry's JSON ({"share", "tstamp", "kind", "by", "state": the share after it}).
-- `tstamp` comes from the store's clock, so entries and events share one order.
CREATE TABLE share_log (
    tstamp INTEGER PRIMARY KEY,
    share  INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    body   TEXT    NOT NULL
);
CREATE INDEX share_log_by_share ON share_log (share, tstamp);

CREATE TRIGGER share_log_is_append_only_update
BEFORE UPDATE ON share_log
BEGIN
    SELECT RAISE(ABORT, 'the share log is append-only: UPDATE refused');
END;

CREATE TRIGGER share_log_is_append_only_delete
BEFORE DELETE ON share_log
BEGIN
    SELECT RAISE(ABORT, 'the share log is append-only: DELETE refused');
END;

-- Each share's latest state (the last log entry's), kept in the same transaction as the
-- log, with the columns lookups need. `body` is the share's JSON.
CREATE TABLE shares (
    id             INTEGER PRIMARY KEY,
    oid            INTEGER NOT NULL,
    tstamp         INTEGER NOT NULL,
    audience_claim TEXT,              -- NULL for a link share
    audience_value TEXT,
    link_hash      TEXT,              -- a link share's secret, SHA-256 hex (never the secret)
    sharer         TEXT    NOT NULL,  -- the sharer's label
    parent         INTEGER,
    body           TEXT    NOT NULL
);
-- By object, then audience value: a decision looks up the caller's shares on one chain.
CREATE INDEX shares_by_oid ON shares (oid, audience_value);
-- Looked up by the caller's claim values (all of them in one query), then matched on the
-- claim's name.
CREATE INDEX shares_by_audience ON shares (audience_value, audience_claim);
CREATE INDEX shares_by_sharer ON shares (sharer);
CREATE INDEX shares_by_parent ON shares (parent) WHERE parent IS NOT NULL;
CREATE UNIQUE INDEX shares_by_link ON shares (link_hash) WHERE link_hash IS NOT NULL;
