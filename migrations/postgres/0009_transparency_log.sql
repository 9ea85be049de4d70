-- The transparency log (docs/transparency-log.md). A writer stores an item and, in the same
-- transaction, its log entry as a pending row; one sequencer at a time (under an advisory lock)
-- gives pending entries the next contiguous indexes, stores them with the tile hashes that
-- proofs and tiles are read from, signs a checkpoint, and clears what it sequenced. Items stored
-- before this migration are not in the log (the hash chain covers them).

CREATE TABLE tlog_pending (
    kind      SMALLINT    NOT NULL,
    item_id   TEXT        NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL,
    -- The entry's bytes (src/evidence/entry.rs), computed by the writer.
    entry     BYTEA       NOT NULL,
    PRIMARY KEY (kind, item_id)
);

CREATE TABLE tlog_entries (
    idx     BIGINT   PRIMARY KEY CHECK (idx >= 0),
    kind    SMALLINT NOT NULL,
    item_id TEXT     NOT NULL,
    entry   BYTEA    NOT NULL,
    -- One entry per stored item.
    UNIQUE (kind, item_id)
);

-- The stored hashes of the tile levels (tree levels 0, 8, 16, ...): exactly the content of
-- the tiles; every other stored hash is computed from them.
CREATE TABLE tlog_hashes (
    level SMALLINT NOT NULL CHECK (level >= 0 AND level % 8 = 0),
    idx   BIGINT   NOT NULL CHECK (idx >= 0),
    hash  BYTEA    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE tlog_checkpoints (
    size      BIGINT      PRIMARY KEY CHECK (size >= 0),
    root      BYTEA       NOT NULL CHECK (octet_length(root) = 32),
    -- The signed note, as served.
    note      TEXT        NOT NULL,
    signed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TRIGGER tlog_entries_no_change BEFORE UPDATE OR DELETE ON tlog_entries
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER tlog_entries_no_truncate BEFORE TRUNCATE ON tlog_entries
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER tlog_hashes_no_change BEFORE UPDATE OR DELETE ON tlog_hashes
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER tlog_hashes_no_truncate BEFORE TRUNCATE ON tlog_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER tlog_checkpoints_no_change BEFORE UPDATE OR DELETE ON tlog_checkpoints
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER tlog_checkpoints_no_truncate BEFORE TRUNCATE ON tlog_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER tlog_pending_no_update BEFORE UPDATE ON tlog_pending
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();

-- The runtime role holds no DELETE: it may only clear pending rows whose entry is already in
-- the log, through this function.
CREATE FUNCTION tlog_clear_sequenced() RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cleared bigint;
BEGIN
    DELETE FROM tlog_pending p USING tlog_entries e WHERE e.kind = p.kind AND e.item_id = p.item_id;
    GET DIAGNOSTICS cleared = ROW_COUNT;
    RETURN cleared;
END;
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION tlog_clear_sequenced() SET search_path = pg_catalog, %I, pg_temp', current_schema());
END;
$$;
REVOKE ALL ON FUNCTION tlog_clear_sequenced() FROM PUBLIC;

-- Roles already granted the runtime privileges keep working across this upgrade.
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT grantee::text FROM information_schema.role_table_grants
             WHERE table_name = 'signal_processing_audit_ids' AND privilege_type = 'INSERT' AND grantee::text <> current_user
    LOOP
        EXECUTE format('GRANT SELECT, INSERT ON tlog_pending, tlog_entries, tlog_hashes, tlog_checkpoints TO %I', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION tlog_clear_sequenced() TO %I', r);
    END LOOP;
END;
$$;
