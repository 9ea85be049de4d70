-- Break-glass claims: a removal of the audit finalizer reviewed by a webhook that could not
-- tell the API server from any other client (no client CA), so the review's userInfo is only
-- what the caller says. A claim names nobody as evidence; it becomes a break-glass event (in
-- break_glass_events, chained, under the claim's id) only once the removal is observed on the
-- object. Append-only like everything else: a confirmation is a new row elsewhere, never an
-- UPDATE here.

CREATE TABLE break_glass_claims (
    -- The admission review's uid.
    id         TEXT        PRIMARY KEY,
    user_name  TEXT        NOT NULL,
    groups     JSONB       NOT NULL,
    namespace  TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    -- The SignalProcessing's uid: a confirmation looks its claims up by it.
    uid        TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    claim      JSON        NOT NULL,
    stored_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX break_glass_claims_uid_idx ON break_glass_claims (uid);
CREATE INDEX break_glass_claims_at_idx ON break_glass_claims (at DESC, id DESC);

CREATE TRIGGER break_glass_claims_no_change
    BEFORE UPDATE OR DELETE ON break_glass_claims
    FOR EACH ROW EXECUTE FUNCTION signal_processing_audit_immutable();
CREATE TRIGGER break_glass_claims_no_truncate
    BEFORE TRUNCATE ON break_glass_claims
    FOR EACH STATEMENT EXECUTE FUNCTION signal_processing_audit_immutable();
