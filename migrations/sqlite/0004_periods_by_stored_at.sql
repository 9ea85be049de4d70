-- The PostgreSQL schema's 0007 in SQLite (which has no partitions): periods (verification,
-- export, report) select records by when Data Storage stored them, never by the completed_at
-- they claim.
CREATE INDEX signal_processing_audit_stored_idx ON signal_processing_audit (stored_at, id);
