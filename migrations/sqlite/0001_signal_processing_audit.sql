-- The PostgreSQL schema's equivalent: JSON as TEXT, timestamps as fixed-width RFC 3339 text
-- (microseconds, UTC) so they sort and compare as strings. Rows are immutable.

CREATE TABLE signal_processing_audit (
    id                   TEXT    NOT NULL PRIMARY KEY,
    remediation_id       TEXT    NOT NULL,
    signal_fingerprint   TEXT    NOT NULL,
    processing_phases    TEXT    NOT NULL,
    enrichment_quality   REAL,
    enrichment_sources   TEXT,
    context_size_bytes   INTEGER,
    environment          TEXT,
    confidence           REAL,
    business_criticality TEXT,
    sla_requirement      TEXT,
    priority             TEXT,
    priority_score       INTEGER,
    routed_to_service    TEXT,
    routing_priority     INTEGER,
    completed_at         TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    error_message        TEXT,
    namespace            TEXT,
    name                 TEXT,
    uid                  TEXT,
    trigger              TEXT,
    deleted_at           TEXT,
    record               TEXT    NOT NULL,
    stored_at            TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX signal_processing_audit_completed_idx ON signal_processing_audit (completed_at DESC, id DESC);
CREATE INDEX signal_processing_audit_fingerprint_idx ON signal_processing_audit (signal_fingerprint, completed_at DESC);
CREATE INDEX signal_processing_audit_remediation_idx ON signal_processing_audit (remediation_id, completed_at DESC);
CREATE INDEX signal_processing_audit_env_idx ON signal_processing_audit (environment, completed_at DESC);
CREATE INDEX signal_processing_audit_priority_idx ON signal_processing_audit (priority, completed_at DESC);
CREATE INDEX signal_processing_audit_status_idx ON signal_processing_audit (status, completed_at DESC);

CREATE TRIGGER signal_processing_audit_no_update BEFORE UPDATE ON signal_processing_audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable: UPDATE refused');
END;
CREATE TRIGGER signal_processing_audit_no_delete BEFORE DELETE ON signal_processing_audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable: DELETE refused');
END;
