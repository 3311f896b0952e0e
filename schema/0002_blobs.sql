-- Vellum metadata store, schema 2: file contents.
-- DO NOT CHANGE a migration once released: add a new numbered file instead.

-- One row per stored blob (file content), keyed by its rname. The wrapped data key lives
-- here, beside the append-only log and not inside it, so `vellum rekey` can re-wrap it
-- under a new master key without touching an event or the blob itself.
-- `inline` holds the stored (sealed) bytes of a small blob kept in the database, so that
-- one commit makes the event and its content durable; NULL when the blob is an object in
-- the blob store.
CREATE TABLE blobs (
    rname          TEXT    PRIMARY KEY,
    algorithm      TEXT    NOT NULL CHECK (algorithm IN ('chunked', 'none')),
    key_id         TEXT,              -- NULL for algorithm 'none'
    encrypteddata  TEXT,
    encryptednonce TEXT,
    size           INTEGER NOT NULL,  -- plaintext bytes
    sha256plain    TEXT    NOT NULL,
    inline         BLOB,
    created        INTEGER NOT NULL   -- tstamp of the event that first stored it
) WITHOUT ROWID;

-- Which event versions use which blob: kept with the log (rows go only when their event is
-- purged), so a purge can tell which blobs no remaining version uses.
CREATE TABLE event_blobs (
    oid    INTEGER NOT NULL,
    tstamp INTEGER NOT NULL,
    rname  TEXT    NOT NULL,
    PRIMARY KEY (oid, tstamp)
) WITHOUT ROWID;
CREATE INDEX event_blobs_by_rname ON event_blobs (rname);
