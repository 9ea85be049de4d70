-- The PostgreSQL schema's 0009 in SQLite: the transparency log's pending entries, entries,
-- tile hashes and signed checkpoints; all but the pending rows append-only.

CREATE TABLE tlog_pending (
    kind      INTEGER NOT NULL,
    item_id   TEXT    NOT NULL,
    stored_at TEXT    NOT NULL,
    entry     BLOB    NOT NULL,
    PRIMARY KEY (kind, item_id)
);

CREATE TABLE tlog_entries (
    idx     INTEGER NOT NULL PRIMARY KEY CHECK (idx >= 0),
    kind    INTEGER NOT NULL,
    item_id TEXT    NOT NULL,
    entry   BLOB    NOT NULL,
    UNIQUE (kind, item_id)
);

CREATE TABLE tlog_hashes (
    level INTEGER NOT NULL CHECK (level >= 0 AND level % 8 = 0),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    hash  BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE tlog_checkpoints (
    size      INTEGER NOT NULL PRIMARY KEY CHECK (size >= 0),
    root      BLOB    NOT NULL CHECK (length(root) = 32),
    note      TEXT    NOT NULL,
    signed_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TRIGGER tlog_entries_no_update BEFORE UPDATE ON tlog_entries
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only: UPDATE refused');
END;
CREATE TRIGGER tlog_entries_no_delete BEFORE DELETE ON tlog_entries
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only: DELETE refused');
END;
CREATE TRIGGER tlog_hashes_no_update BEFORE UPDATE ON tlog_hashes
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only: UPDATE refused');
END;
CREATE TRIGGER tlog_hashes_no_delete BEFORE DELETE ON tlog_hashes
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only: DELETE refused');
END;
CREATE TRIGGER tlog_checkpoints_no_update BEFORE UPDATE ON tlog_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only: UPDATE refused');
END;
CREATE TRIGGER tlog_checkpoints_no_delete BEFORE DELETE ON tlog_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only: DELETE refused');
END;
CREATE TRIGGER tlog_pending_no_update BEFORE UPDATE ON tlog_pending
BEGIN
    SELECT RAISE(ABORT, 'pending log entries are immutable: UPDATE refused');
END;
