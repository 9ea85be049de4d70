//! Data Storage metrics, registered once in the prometheus default registry.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, HistogramVec, IntCounter, IntCounterVec,
    IntGauge,
};

// The names and labels are constants registered exactly once, so registration cannot fail.
const ONCE: &str = "constant metric registered once";

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "datastorage_http_requests_total",
        "HTTP requests by route, method and status",
        &["route", "method", "status"]
    )
    .expect(ONCE)
});

pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "datastorage_http_request_duration_seconds",
        "HTTP request latency by route and status",
        &["route", "status"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    )
    .expect(ONCE)
});

pub static STORE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "datastorage_store_duration_seconds",
        "Database operation latency by operation",
        &["op"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    )
    .expect(ONCE)
});

pub static ROWS_WRITTEN: LazyLock<IntCounter> =
    LazyLock::new(|| register_int_counter!("datastorage_rows_written_total", "Audit records newly stored").expect(ONCE));

/// Records newly stored, by the record's status (completed, failed, incomplete, forced).
pub static RECORDS_STORED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "datastorage_records_stored_total",
        "Audit records newly stored, by record status",
        &["status"]
    )
    .expect(ONCE)
});

/// Counts one newly stored record under its status.
pub fn stored(rec: &crate::audit::SignalProcessingAudit) {
    ROWS_WRITTEN.inc();
    RECORDS_STORED.with_label_values(&[rec.status.as_str()]).inc();
}

pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("datastorage_errors_total", "Errors by kind (database, auth_backend)", &["kind"]).expect(ONCE)
});

/// Different records posted under a stored id (refused; the poster should amend).
pub static CONFLICTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "datastorage_record_conflicts_total",
        "Records posted under a stored id with different content (not stored)"
    )
    .expect(ONCE)
});

pub static AMENDMENTS: LazyLock<IntCounter> =
    LazyLock::new(|| register_int_counter!("datastorage_amendments_total", "Amendments stored beside an original").expect(ONCE));

pub static BREAK_GLASS_EVENTS: LazyLock<IntCounter> =
    LazyLock::new(|| register_int_counter!("datastorage_break_glass_events_total", "Break-glass events stored").expect(ONCE));

pub static FORBIDDEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "datastorage_forbidden_total",
        "Authenticated calls refused for want of the right (403), by verb",
        &["verb"]
    )
    .expect(ONCE)
});

pub static SHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "datastorage_shed_requests_total",
        "Requests answered 503 by a bound: lane (read, write, audit), reason (busy: no permit in time; timeout: over --request-timeout)",
        &["lane", "reason"]
    )
    .expect(ONCE)
});

/// 0 while the tokens file (tokens-file mode) is unreadable or invalid and every token is refused; else 1.
pub static TOKENS_FILE_VALID: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "datastorage_tokens_file_valid",
        "0 while the tokens file is unreadable or invalid (every token is refused until it is fixed); 1 otherwise"
    )
    .expect(ONCE)
});

/// Registers every metric up front so /metrics lists them before the first request.
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&STORE_SECONDS);
    LazyLock::force(&ROWS_WRITTEN);
    LazyLock::force(&CONFLICTS);
    LazyLock::force(&AMENDMENTS);
    LazyLock::force(&BREAK_GLASS_EVENTS);
    // 0 only while a tokens file is in use and broken.
    TOKENS_FILE_VALID.set(1);
    // Every label value up front, so dashboards and alerts see zeros rather than nothing.
    for status in ["completed", "failed", "incomplete", "forced"] {
        RECORDS_STORED.with_label_values(&[status]);
    }
    for kind in ["database", "auth_backend"] {
        ERRORS.with_label_values(&[kind]);
    }
    for verb in ["create", "get", "list"] {
        FORBIDDEN.with_label_values(&[verb]);
    }
    for lane in ["read", "write", "audit"] {
        for reason in ["busy", "timeout"] {
            SHED.with_label_values(&[lane, reason]);
        }
    }
}

pub fn render() -> String {
    let families = prometheus::default_registry().gather();
    prometheus::TextEncoder::new().encode_to_string(&families).unwrap_or_default()
}
