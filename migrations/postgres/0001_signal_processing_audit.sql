-- Audit records of SignalProcessing CRs: the design document's columns plus where the record
-- came from, partitioned by completed_at month. Rows are immutable.

CREATE TABLE signal_processing_audit (
    id                   TEXT             NOT NULL,
    remediation_id       TEXT             NOT NULL,
    signal_fingerprint   TEXT             NOT NULL,
    -- Phase durations are ISO 8601 text ("PT1.5S") so `->>'duration'::interval` is exact.
    processing_phases    JSONB            NOT NULL,
    enrichment_quality   DOUBLE PRECISION,
    enrichment_sources   JSONB,
    context_size_bytes   BIGINT,
    environment          TEXT,
    confidence           DOUBLE PRECISION,
    business_criticality TEXT,
    sla_requirement      TEXT,
    priority             TEXT,
    priority_score       BIGINT,
    routed_to_service    TEXT,
    routing_priority     BIGINT,
    completed_at         TIMESTAMPTZ      NOT NULL,
    status               TEXT             NOT NULL,
    error_message        TEXT,
    namespace            TEXT,
    name                 TEXT,
    uid                  TEXT,
    trigger              TEXT,
    deleted_at           TIMESTAMPTZ,
    -- The record as posted (normalised), returned by GET.
    record               JSONB            NOT NULL,
    stored_at            TIMESTAMPTZ      NOT NULL DEFAULT now(),
    PRIMARY KEY (id, completed_at)
) PARTITION BY RANGE (completed_at);

-- Months without their own partition (yet) land here, so no record is ever refused.
CREATE TABLE signal_processing_audit_default PARTITION OF signal_processing_audit DEFAULT;

-- A partitioned table's keys must include completed_at; this table makes id unique on its own.
CREATE TABLE signal_processing_audit_ids (
    id           TEXT        PRIMARY KEY,
    completed_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX signal_processing_audit_completed_idx ON signal_processing_audit (completed_at DESC, id DESC);
CREATE INDEX signal_processing_audit_fingerprint_idx ON signal_processing_audit (signal_fingerprint, completed_at DESC);
CREATE INDEX signal_processing_audit_remediation_idx ON signal_processing_audit (remediation_id, completed_at DESC);
CREATE INDEX signal_processing_audit_env_idx ON signal_processing_audit (environment, completed_at DESC);
CREATE INDEX signal_processing_audit_priority_idx ON signal_processing_audit (priority, completed_at DESC);
CREATE INDEX signal_processing_audit_status_idx ON signal_processing_audit (status, completed_at DESC);

CREATE FUNCTION signal_processing_audit_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are immutable: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER signal_processing_audit_no_change
    BEFORE UPDATE OR DELETE ON signal_processing_audit
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER signal_processing_audit_no_truncate
    BEFORE TRUNCATE ON signal_processing_audit
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER signal_processing_audit_ids_no_change
    BEFORE UPDATE OR DELETE ON signal_processing_audit_ids
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER signal_processing_audit_ids_no_truncate
    BEFORE TRUNCATE ON signal_processing_audit_ids
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
