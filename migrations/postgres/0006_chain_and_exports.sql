-- Tamper evidence: every record, amendment and break-glass event is a link of a keyed hash
-- chain (src/datastorage/chain.rs). A record's link lives in the ids table, which keeps every
-- id ever stored, so the chain outlives the monthly partitions retention drops; amendments
-- and events carry theirs on their own rows. Position (shard, seq) is unique per table; a
-- writer holds its shard's advisory lock while it appends. The columns are nullable only for
-- rows stored before this migration, which verification reports as unchained.

ALTER TABLE signal_processing_audit_ids
    ADD COLUMN chain_shard     INTEGER,
    ADD COLUMN chain_seq       BIGINT,
    ADD COLUMN chain_key_id    TEXT,
    ADD COLUMN chain_stored_at TIMESTAMPTZ,
    ADD COLUMN chain_digest    BYTEA,
    ADD COLUMN chain_hash      BYTEA;
CREATE UNIQUE INDEX signal_processing_audit_ids_chain_idx ON signal_processing_audit_ids (chain_shard, chain_seq);

ALTER TABLE signal_processing_audit_amendments
    ADD COLUMN chain_shard     INTEGER,
    ADD COLUMN chain_seq       BIGINT,
    ADD COLUMN chain_key_id    TEXT,
    ADD COLUMN chain_stored_at TIMESTAMPTZ,
    ADD COLUMN chain_digest    BYTEA,
    ADD COLUMN chain_hash      BYTEA;
CREATE UNIQUE INDEX signal_processing_audit_amendments_chain_idx ON signal_processing_audit_amendments (chain_shard, chain_seq);

ALTER TABLE break_glass_events
    ADD COLUMN chain_shard     INTEGER,
    ADD COLUMN chain_seq       BIGINT,
    ADD COLUMN chain_key_id    TEXT,
    ADD COLUMN chain_stored_at TIMESTAMPTZ,
    ADD COLUMN chain_digest    BYTEA,
    ADD COLUMN chain_hash      BYTEA;
CREATE UNIQUE INDEX break_glass_events_chain_idx ON break_glass_events (chain_shard, chain_seq);

-- Every signed export's manifest (what was exported, its SHA-256, the chain's heads, who
-- asked), kept append-only: the signature can be fetched again by export id from any replica,
-- and the exports themselves leave a trail.
CREATE TABLE export_manifests (
    export_id  TEXT        PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT        NOT NULL,
    -- The exact bytes that were signed.
    manifest   TEXT        NOT NULL,
    -- Base64 of the Ed25519 signature over manifest.
    signature  TEXT        NOT NULL
);
CREATE TRIGGER export_manifests_no_change
    BEFORE UPDATE OR DELETE ON export_manifests
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER export_manifests_no_truncate
    BEFORE TRUNCATE ON export_manifests
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
