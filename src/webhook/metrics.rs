//! Webhook metrics (the idiom is [`crate::metrics`]'s).

use prometheus::{HistogramVec, IntCounter, IntCounterVec};

use crate::metrics::{counter, counter_vec, declare, histogram_vec};

declare! {
    pub static REQUESTS: IntCounterVec = counter_vec("audit_guard_webhook_requests_total", "Admission requests by path, operation and outcome", &["path", "operation", "outcome"]);

    pub static LATENCY: HistogramVec = histogram_vec("audit_guard_webhook_request_duration_seconds", "Admission request latency", &["path", "operation", "outcome"], &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);

    pub static DENIALS: IntCounterVec = counter_vec("audit_guard_webhook_denials_total", "Admission denials by reason", &["reason"]);

    pub static FORCED_REMOVALS: IntCounter = counter("audit_guard_webhook_forced_finalizer_removals_total", "Break-glass removals of the audit finalizer");

    /// Break-glass removals reviewed for a peer without a client certificate (no client CA
    /// configured): stored as unconfirmed claims, not as events naming anyone.
    pub static BREAK_GLASS_CLAIMS: IntCounter = counter("audit_guard_webhook_break_glass_claims_total", "Break-glass removals claimed by a peer that did not prove it is the API server (stored as unconfirmed claims)");

    /// How the validating webhook learnt whether Data Storage holds a record the controller's
    /// identity is releasing: from this process's confirmed set, or by asking Data Storage.
    pub static RECORD_CHECKS: IntCounterVec = counter_vec("audit_guard_webhook_record_checks_total", "Checks that the record of a SignalProcessing the controller identity releases is held (by content), by source (cache|datastorage) and result (held|refused|error)", &["source", "result"]);
}

pub fn observe(path: &str, operation: &str, outcome: &str, seconds: f64) {
    REQUESTS.with_label_values(&[path, operation, outcome]).inc();
    LATENCY.with_label_values(&[path, operation, outcome]).observe(seconds);
}
