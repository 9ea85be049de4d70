-- Partitions are created by the owner of the tables, never by the runtime role (which can
-- only INSERT and SELECT): `audit-guard datastorage migrate` creates the months of the accepted
-- time window and the next ones; the service, running as the runtime role, may only call
-- signal_processing_audit_create_next_partitions(), which creates this month's and next
-- month's partition and nothing else.
--
-- PostgreSQL does not copy statement-level (TRUNCATE) triggers to partitions, so each partition
-- gets its own guard; against the runtime role, missing privileges already refuse TRUNCATE.

CREATE FUNCTION signal_processing_audit_create_partition(month_start date) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent regclass := 'signal_processing_audit'::regclass;
    schema_name text;
    part text := format('signal_processing_audit_y%sm%s', to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
BEGIN
    IF date_trunc('month', month_start)::date <> month_start THEN
        RAISE EXCEPTION 'partition months start on the first day: %', month_start;
    END IF;
    SELECT n.nspname INTO schema_name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
    IF to_regclass(format('%I.%I', schema_name, part)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', schema_name, part, parent,
                   month_start::timestamp AT TIME ZONE 'UTC', (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
    EXECUTE format('CREATE TRIGGER signal_processing_audit_no_truncate BEFORE TRUNCATE ON %I.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %I.signal_processing_audit_immutable()', schema_name, part, schema_name);
    RETURN part;
END;
$$;
-- The relation lookups above resolve through this search_path at call time: pin it to the
-- schema the tables live in (pg_catalog first, pg_temp last, so no caller can shadow a name).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION signal_processing_audit_create_partition(date) SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
END;
$$;
REVOKE ALL ON FUNCTION signal_processing_audit_create_partition(date) FROM PUBLIC;

-- The one thing the runtime role may create: this month's and next month's partition.
CREATE FUNCTION signal_processing_audit_create_next_partitions() RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    created text;
BEGIN
    FOR i IN 0..1 LOOP
        created := signal_processing_audit_create_partition((this_month + make_interval(months => i))::date);
        IF created IS NOT NULL THEN
            RETURN NEXT created;
        END IF;
    END LOOP;
END;
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION signal_processing_audit_create_next_partitions() SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
END;
$$;
REVOKE ALL ON FUNCTION signal_processing_audit_create_next_partitions() FROM PUBLIC;

-- Partitions created before this migration get their TRUNCATE guard too.
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.oid::regclass AS rel FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'signal_processing_audit'::regclass
    LOOP
        EXECUTE format('CREATE TRIGGER signal_processing_audit_no_truncate BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable()', part.rel);
    END LOOP;
END;
$$;
