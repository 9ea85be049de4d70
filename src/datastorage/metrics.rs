//! Data Storage metrics (the idiom is [`crate::metrics`]'s).

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};

pub use crate::metrics::render;
use crate::metrics::{counter, counter_vec, declare, gauge, histogram_vec};

/// Request and database latency buckets: from a cached read to a slow batch insert.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

declare! {
    pub static REQUESTS: IntCounterVec = counter_vec("datastorage_http_requests_total", "HTTP requests by route, method and status", &["route", "method", "status"]);

    pub static REQUEST_SECONDS: HistogramVec = histogram_vec("datastorage_http_request_duration_seconds", "HTTP request latency by route and status", &["route", "status"], LATENCY_BUCKETS);

    pub static STORE_SECONDS: HistogramVec = histogram_vec("datastorage_store_duration_seconds", "Database operation latency by operation", &["op"], LATENCY_BUCKETS);

    pub static ROWS_WRITTEN: IntCounter = counter("datastorage_rows_written_total", "Audit records newly stored");

    /// Records newly stored, by the record's status (completed, failed, incomplete, forced).
    pub static RECORDS_STORED: IntCounterVec = counter_vec("datastorage_records_stored_total", "Audit records newly stored, by record status", &["status"]), zero [["completed"], ["failed"], ["incomplete"], ["forced"]];

    pub static ERRORS: IntCounterVec = counter_vec("datastorage_errors_total", "Errors by kind (database, auth_backend)", &["kind"]), zero [["database"], ["auth_backend"]];

    /// Different records posted under a stored id (refused; the poster should amend).
    pub static CONFLICTS: IntCounter = counter("datastorage_record_conflicts_total", "Records posted under a stored id with different content (not stored)");

    /// Records refused because their id is held by an id row with no stored record and no log
    /// entry: written outside Data Storage; the record cannot be stored until an operator acts.
    pub static BLOCKED_IDS: IntCounter = counter("datastorage_blocked_ids_total", "Records refused because their id is held by an id row with neither a stored record nor a log entry (written outside Data Storage)");

    /// Seconds the oldest stored item has waited for its log index (0: none waits). Items get
    /// one within a sequencing interval; growth means sequencing fails.
    pub static LOG_OLDEST_PENDING_SECONDS: IntGauge = gauge("datastorage_log_oldest_pending_seconds", "Seconds the oldest stored item has waited for its transparency-log index (0 when none waits)");

    /// Seconds since the newest checkpoint was signed, while items wait (0 when none waits).
    pub static LOG_CHECKPOINT_AGE_SECONDS: IntGauge = gauge("datastorage_log_checkpoint_age_seconds", "Seconds since the newest transparency-log checkpoint was signed, while items wait for the log (0 when none waits)");

    /// Checkpoints pushed to the policy's witnesses, by result (ok: cosigned; conflict: the
    /// witness knew another size, retried from it; refused: any other answer; error: no
    /// answer). Data Storage's log names the witness of each failure.
    pub static WITNESS_PUSHES: IntCounterVec = counter_vec("datastorage_log_witness_pushes_total", "Checkpoints pushed to witnesses, by result (ok: cosigned; conflict: 409, retried from the witness's size; refused: another answer; error: unreachable)", &["result"]), zero [["ok"], ["conflict"], ["refused"], ["error"]];

    /// Seconds the newest checkpoint has waited for the slowest witness's cosignature (0 when
    /// every witness cosigned it, or none is configured).
    pub static WITNESS_UNCOSIGNED_SECONDS: IntGauge = gauge("datastorage_log_witness_uncosigned_seconds", "Seconds since the newest transparency-log checkpoint was signed while some witness of the policy has not cosigned it (0 when all have, or there is none)");

    pub static AMENDMENTS: IntCounter = counter("datastorage_amendments_total", "Amendments stored beside an original");

    pub static BREAK_GLASS_EVENTS: IntCounter = counter("datastorage_break_glass_events_total", "Break-glass events stored");

    /// Break-glass claims (reviews from a peer not proven to be the API server) by what became
    /// of them: stored (unconfirmed), confirmed (the removal was observed: an event now names
    /// the user), ambiguous (several claims on the removed object: none confirmed), no_claim.
    pub static BREAK_GLASS_CLAIMS: IntCounterVec = counter_vec("datastorage_break_glass_claims_total", "Break-glass claims by outcome (stored: unconfirmed; confirmed: became a break-glass event; ambiguous: several claims on one removed object, none confirmed; no_claim: a removal with no claim)", &["outcome"]), zero [["stored"], ["confirmed"], ["ambiguous"], ["no_claim"]];

    pub static FORBIDDEN: IntCounterVec = counter_vec("datastorage_forbidden_total", "Authenticated calls refused for want of the right (403), by verb", &["verb"]), zero [["create"], ["get"], ["list"]];

    pub static SHED: IntCounterVec = counter_vec("datastorage_shed_requests_total", "Requests answered 503 by a bound: lane (read, write, audit), reason (busy: no permit in time; timeout: over --request-timeout)", &["lane", "reason"]), zero [["read", "busy"], ["read", "timeout"], ["write", "busy"], ["write", "timeout"], ["audit", "busy"], ["audit", "timeout"]];

    /// TokenReview outcomes: reviewed (accepted, refused), refused again from the cache of
    /// refusals (cached_refusal), or shed without a review because too many unknown tokens
    /// arrived (rate_limited: answered 429).
    pub static TOKEN_REVIEWS: IntCounterVec = counter_vec("datastorage_token_reviews_total", "Bearer tokens judged in TokenReview mode, by outcome (accepted, refused, cached_refusal, rate_limited: answered 429 without a review)", &["outcome"]), zero [["accepted"], ["refused"], ["cached_refusal"], ["rate_limited"]];

    /// DDL attempts (partition upkeep, migrations, retention) that gave up waiting for a lock
    /// held by another session, so as not to queue every INSERT behind them; they are retried.
    pub static DDL_GAVE_UP: IntCounterVec = counter_vec("datastorage_ddl_lock_waits_given_up_total", "DDL attempts that gave up waiting for a lock after --ddl-lock-timeout, or (partition upkeep) were not made because a transaction had held a lock on the audit table for 500 ms or more, by what (retried with backoff)", &["what"]), zero [["create_next_partitions"], ["create_partition"], ["drop_partition"]];

    /// 0 while the tokens file (tokens-file mode) is unreadable or invalid and every token is
    /// refused; else 1 (so it starts at 1: only a tokens file in use and broken makes it 0).
    pub static TOKENS_FILE_VALID: IntGauge = gauge("datastorage_tokens_file_valid", "0 while the tokens file is unreadable or invalid (every token is refused until it is fixed); 1 otherwise"), start 1;
}

/// Counts one newly stored record under its status.
pub fn stored(rec: &crate::audit::SignalProcessingAudit) {
    ROWS_WRITTEN.inc();
    RECORDS_STORED.with_label_values(&[rec.status.as_str()]).inc();
}
