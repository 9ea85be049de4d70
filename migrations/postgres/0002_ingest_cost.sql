-- Ingestion cost: every index is paid on each of a mass cleanup's inserts. environment,
-- priority and status are low-cardinality filters always combined with completed_at order
-- (listing) or range (stats), which the completed_at index already serves.
DROP INDEX signal_processing_audit_env_idx;
DROP INDEX signal_processing_audit_priority_idx;
DROP INDEX signal_processing_audit_status_idx;
