-- `record` is only ever returned whole: keep it as validated JSON text (cheaper to write and to
-- read back than JSONB, and byte-for-byte what was stored). processing_phases stays JSONB for queries.
ALTER TABLE signal_processing_audit ALTER COLUMN record TYPE json USING record::json;
