-- The PostgreSQL schema's 0008 in SQLite: unconfirmed break-glass claims, append-only.

CREATE TABLE break_glass_claims (
    id        TEXT NOT NULL PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups    TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    uid       TEXT NOT NULL,
    at        TEXT NOT NULL,
    claim     TEXT NOT NULL,
    stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX break_glass_claims_uid_idx ON break_glass_claims (uid);
CREATE INDEX break_glass_claims_at_idx ON break_glass_claims (at DESC, id DESC);

CREATE TRIGGER break_glass_claims_no_update BEFORE UPDATE ON break_glass_claims
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable: UPDATE refused');
END;
CREATE TRIGGER break_glass_claims_no_delete BEFORE DELETE ON break_glass_claims
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable: DELETE refused');
END;
