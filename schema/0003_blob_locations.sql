-- Vellum metadata store, schema 3: a blob's location apart from its name.
-- DO NOT CHANGE a migration once released: add a new numbered file instead.

-- A blob's rname is its identity (in the log, and bound into its encryption as associated
-- data); `location` is the object it lies in. They are the same (location NULL) until the
-- blob is re-encrypted under a fresh data key: that writes a new object, and one metadata
-- transaction switches the wrapped key and the location together, so a crash leaves either
-- the old pair or the new one, never a mix. The old object is deleted after the switch
-- (`vellum gc` removes it if a crash came between).
ALTER TABLE blobs ADD COLUMN location TEXT;
CREATE INDEX blobs_by_location ON blobs (location) WHERE location IS NOT NULL;
