-- The PostgreSQL schema's 0006 in SQLite: every record, amendment and break-glass event is a
-- link of the keyed hash chain (src/datastorage/chain.rs), on its own row (SQLite has no
-- partitions to outlive); signed export manifests are kept append-only.

ALTER TABLE signal_processing_audit ADD COLUMN chain_shard INTEGER;
ALTER TABLE signal_processing_audit ADD COLUMN chain_seq INTEGER;
ALTER TABLE signal_processing_audit ADD COLUMN chain_key_id TEXT;
ALTER TABLE signal_processing_audit ADD COLUMN chain_stored_at TEXT;
ALTER TABLE signal_processing_audit ADD COLUMN chain_digest BLOB;
ALTER TABLE signal_processing_audit ADD COLUMN chain_hash BLOB;
CREATE UNIQUE INDEX signal_processing_audit_chain_idx ON signal_processing_audit (chain_shard, chain_seq);

ALTER TABLE signal_processing_audit_amendments ADD COLUMN chain_shard INTEGER;
ALTER TABLE signal_processing_audit_amendments ADD COLUMN chain_seq INTEGER;
ALTER TABLE signal_processing_audit_amendments ADD COLUMN chain_key_id TEXT;
ALTER TABLE signal_processing_audit_amendments ADD COLUMN chain_stored_at TEXT;
ALTER TABLE signal_processing_audit_amendments ADD COLUMN chain_digest BLOB;
ALTER TABLE signal_processing_audit_amendments ADD COLUMN chain_hash BLOB;
CREATE UNIQUE INDEX signal_processing_audit_amendments_chain_idx ON signal_processing_audit_amendments (chain_shard, chain_seq);

ALTER TABLE break_glass_events ADD COLUMN chain_shard INTEGER;
ALTER TABLE break_glass_events ADD COLUMN chain_seq INTEGER;
ALTER TABLE break_glass_events ADD COLUMN chain_key_id TEXT;
ALTER TABLE break_glass_events ADD COLUMN chain_stored_at TEXT;
ALTER TABLE break_glass_events ADD COLUMN chain_digest BLOB;
ALTER TABLE break_glass_events ADD COLUMN chain_hash BLOB;
CREATE UNIQUE INDEX break_glass_events_chain_idx ON break_glass_events (chain_shard, chain_seq);

CREATE TABLE export_manifests (
    export_id  TEXT NOT NULL PRIMARY KEY,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    signature  TEXT NOT NULL
);
CREATE TRIGGER export_manifests_no_update BEFORE UPDATE ON export_manifests
BEGIN
    SELECT RAISE(ABORT, 'export manifests are immutable: UPDATE refused');
END;
CREATE TRIGGER export_manifests_no_delete BEFORE DELETE ON export_manifests
BEGIN
    SELECT RAISE(ABORT, 'export manifests are immutable: DELETE refused');
END;
