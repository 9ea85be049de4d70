-- Records are placed by when Data Storage stored them, not by the time they claim: the table is
-- partitioned by stored_at month, so partitions, retention and every period (reports, exports,
-- verification) follow stored_at, and a record whose completed_at claims an old month still
-- lands in the month it arrived. completed_at stays a column (the design document's queries and
-- the listing read it) and stays what the chain links.
--
-- The table is rebuilt under its own name, so the partition helpers of 0005 (which look the
-- parent up by name at call time), the runtime role's grants and the immutability triggers
-- carry over; the rows are moved, never changed.

ALTER TABLE signal_processing_audit RENAME TO signal_processing_audit_by_completion;
ALTER INDEX signal_processing_audit_pkey RENAME TO signal_processing_audit_by_completion_pkey;
ALTER INDEX signal_processing_audit_completed_idx RENAME TO signal_processing_audit_by_completion_completed_idx;
ALTER INDEX signal_processing_audit_fingerprint_idx RENAME TO signal_processing_audit_by_completion_fingerprint_idx;
ALTER INDEX signal_processing_audit_remediation_idx RENAME TO signal_processing_audit_by_completion_remediation_idx;
-- Its partitions free their names for the new table's.
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'signal_processing_audit_by_completion'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', part.name, 'old_' || part.name);
    END LOOP;
END;
$$;

-- The same columns: completed_at is what the record claims (the CR's completion time, or what
-- its builder fell back to), stored_at when Data Storage stored it, now the partition key.
CREATE TABLE signal_processing_audit (
    LIKE signal_processing_audit_by_completion INCLUDING DEFAULTS,
    PRIMARY KEY (id, stored_at)
) PARTITION BY RANGE (stored_at);

CREATE TABLE signal_processing_audit_default PARTITION OF signal_processing_audit DEFAULT;
CREATE TRIGGER signal_processing_audit_no_truncate
    BEFORE TRUNCATE ON signal_processing_audit_default
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();

-- Periods (verification, export, report) page by (stored_at, id); the listing, the statistics
-- and the post-mortem queries filter and order by completed_at.
CREATE INDEX signal_processing_audit_stored_idx ON signal_processing_audit (stored_at, id);
CREATE INDEX signal_processing_audit_completed_idx ON signal_processing_audit (completed_at DESC, id DESC);
CREATE INDEX signal_processing_audit_fingerprint_idx ON signal_processing_audit (signal_fingerprint, completed_at DESC);
CREATE INDEX signal_processing_audit_remediation_idx ON signal_processing_audit (remediation_id, completed_at DESC);

CREATE TRIGGER signal_processing_audit_no_change
    BEFORE UPDATE OR DELETE ON signal_processing_audit
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER signal_processing_audit_no_truncate
    BEFORE TRUNCATE ON signal_processing_audit
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();

-- Whoever was granted something on the table keeps it (`datastorage migrate --runtime-role`).
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT a.grantee, a.privilege_type
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'signal_processing_audit_by_completion'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON signal_processing_audit TO %s', g.privilege_type,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
    END LOOP;
END;
$$;

-- A partition for every month that holds stored rows, then the rows.
SELECT signal_processing_audit_create_partition(m)
FROM (SELECT DISTINCT date_trunc('month', stored_at AT TIME ZONE 'UTC')::date AS m FROM signal_processing_audit_by_completion) months
ORDER BY m;

INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, enrichment_quality,
    enrichment_sources, context_size_bytes, environment, confidence, business_criticality, sla_requirement, priority,
    priority_score, routed_to_service, routing_priority, completed_at, status, error_message, namespace, name, uid,
    trigger, deleted_at, record, stored_at, anomalies)
SELECT id, remediation_id, signal_fingerprint, processing_phases, enrichment_quality,
    enrichment_sources, context_size_bytes, environment, confidence, business_criticality, sla_requirement, priority,
    priority_score, routed_to_service, routing_priority, completed_at, status, error_message, namespace, name, uid,
    trigger, deleted_at, record, stored_at, anomalies
FROM signal_processing_audit_by_completion;

-- The ids table finds each record's row (and so its partition) by stored_at. NULL: the row
-- was already gone (retention dropped its completed_at month) when this migration ran; such a
-- record stays counted with the month it was partitioned by, its completed_at.
ALTER TABLE signal_processing_audit_ids ADD COLUMN stored_at TIMESTAMPTZ;
ALTER TABLE signal_processing_audit_ids DISABLE TRIGGER signal_processing_audit_ids_no_change;
UPDATE signal_processing_audit_ids i SET stored_at = a.stored_at
FROM signal_processing_audit_by_completion a
WHERE a.id = i.id AND a.completed_at = i.completed_at;
ALTER TABLE signal_processing_audit_ids ENABLE TRIGGER signal_processing_audit_ids_no_change;

DROP TABLE signal_processing_audit_by_completion;
