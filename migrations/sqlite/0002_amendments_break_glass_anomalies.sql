-- The PostgreSQL schema's 0004 in SQLite: anomalies, amendments linked to their original,
-- break-glass events; all append-only.

ALTER TABLE signal_processing_audit ADD COLUMN anomalies TEXT;

CREATE TABLE signal_processing_audit_amendments (
    amendment_id   TEXT NOT NULL PRIMARY KEY,
    record_id      TEXT NOT NULL REFERENCES signal_processing_audit (id),
    content_sha256 TEXT NOT NULL,
    record         TEXT NOT NULL,
    anomalies      TEXT,
    amended_at     TEXT NOT NULL,
    UNIQUE (record_id, content_sha256)
);
CREATE INDEX signal_processing_audit_amendments_record_idx
    ON signal_processing_audit_amendments (record_id, amended_at, amendment_id);

CREATE TABLE break_glass_events (
    id        TEXT NOT NULL PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups    TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    uid       TEXT NOT NULL,
    at        TEXT NOT NULL,
    event     TEXT NOT NULL,
    stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX break_glass_events_at_idx ON break_glass_events (at DESC, id DESC);

CREATE TRIGGER signal_processing_audit_amendments_no_update BEFORE UPDATE ON signal_processing_audit_amendments
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable: UPDATE refused');
END;
CREATE TRIGGER signal_processing_audit_amendments_no_delete BEFORE DELETE ON signal_processing_audit_amendments
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable: DELETE refused');
END;
CREATE TRIGGER break_glass_events_no_update BEFORE UPDATE ON break_glass_events
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable: UPDATE refused');
END;
CREATE TRIGGER break_glass_events_no_delete BEFORE DELETE ON break_glass_events
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable: DELETE refused');
END;
