-- Integrity against people: a different record under an existing id is kept as an amendment
-- linked to the original (never taken as stored); every break-glass removal of the audit
-- finalizer is kept as an event naming who did it; values a CR carried out of range are listed
-- in `anomalies` (NULL when there are none) so a compliance report can count them.

ALTER TABLE signal_processing_audit ADD COLUMN anomalies JSONB;

CREATE TABLE signal_processing_audit_amendments (
    amendment_id   TEXT        PRIMARY KEY,
    -- The ids table keeps every id ever stored, so an amendment always has its original's id.
    record_id      TEXT        NOT NULL REFERENCES signal_processing_audit_ids (id),
    -- SHA-256 of the record's content without its provenance keys: the same content is stored
    -- once per original, so a retried amendment is idempotent.
    content_sha256 TEXT        NOT NULL,
    record         JSON        NOT NULL,
    anomalies      JSONB,
    amended_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (record_id, content_sha256)
);
CREATE INDEX signal_processing_audit_amendments_record_idx
    ON signal_processing_audit_amendments (record_id, amended_at, amendment_id);

CREATE TABLE break_glass_events (
    -- The admission review's uid.
    id         TEXT        PRIMARY KEY,
    user_name  TEXT        NOT NULL,
    groups     JSONB       NOT NULL,
    namespace  TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    uid        TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    -- The event as posted (normalised), returned by the API.
    event      JSON        NOT NULL,
    stored_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX break_glass_events_at_idx ON break_glass_events (at DESC, id DESC);

-- Append-only, like the records.
CREATE TRIGGER signal_processing_audit_amendments_no_change
    BEFORE UPDATE OR DELETE ON signal_processing_audit_amendments
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER signal_processing_audit_amendments_no_truncate
    BEFORE TRUNCATE ON signal_processing_audit_amendments
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER break_glass_events_no_change
    BEFORE UPDATE OR DELETE ON break_glass_events
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER break_glass_events_no_truncate
    BEFORE TRUNCATE ON break_glass_events
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
