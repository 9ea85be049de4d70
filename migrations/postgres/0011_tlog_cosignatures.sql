-- Witnesses' cosignatures of the transparency log's checkpoints (C2SP tlog-cosignature): each
-- the signature line a witness answered, served after the log's own signature. Append-only.

CREATE TABLE tlog_cosignatures (
    size        BIGINT      NOT NULL REFERENCES tlog_checkpoints (size),
    witness     TEXT        NOT NULL,
    key_id      BIGINT      NOT NULL CHECK (key_id >= 0 AND key_id < 4294967296),
    -- The note signature line (`— <name> <base64>`), as the witness answered it.
    line        TEXT        NOT NULL,
    cosigned_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (size, witness, key_id)
);

CREATE TRIGGER tlog_cosignatures_no_change BEFORE UPDATE OR DELETE ON tlog_cosignatures
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER tlog_cosignatures_no_truncate BEFORE TRUNCATE ON tlog_cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();

-- Roles already granted the runtime privileges keep working across this upgrade.
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT grantee::text FROM information_schema.role_table_grants
             WHERE table_name = 'signal_processing_audit_ids' AND privilege_type = 'INSERT' AND grantee::text <> current_user
    LOOP
        EXECUTE format('GRANT SELECT, INSERT ON tlog_cosignatures TO %I', r);
    END LOOP;
END;
$$;
