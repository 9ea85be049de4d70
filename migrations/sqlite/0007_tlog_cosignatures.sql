-- The PostgreSQL schema's 0011 in SQLite: witnesses' cosignatures of checkpoints, append-only.

CREATE TABLE tlog_cosignatures (
    size        INTEGER NOT NULL REFERENCES tlog_checkpoints (size),
    witness     TEXT    NOT NULL,
    key_id      INTEGER NOT NULL CHECK (key_id >= 0 AND key_id < 4294967296),
    line        TEXT    NOT NULL,
    cosigned_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (size, witness, key_id)
);

CREATE TRIGGER tlog_cosignatures_no_update BEFORE UPDATE ON tlog_cosignatures
BEGIN
    SELECT RAISE(ABORT, 'cosignatures are append-only: UPDATE refused');
END;
CREATE TRIGGER tlog_cosignatures_no_delete BEFORE DELETE ON tlog_cosignatures
BEGIN
    SELECT RAISE(ABORT, 'cosignatures are append-only: DELETE refused');
END;
