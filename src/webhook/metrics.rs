//! Webhook metrics, registered once in the process-wide default Prometheus registry.

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    if let Err(e) = prometheus::default_registry().register(Box::new(c.clone())) {
        tracing::warn!(error = %e, "metric not registered");
    }
    c
}

// Metric definitions are constants of this file, so building them cannot fail at run time.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "audit_guard_webhook_requests_total",
                "Admission requests by path, operation and outcome",
            ),
            &["path", "operation", "outcome"],
        )
        .expect("valid metric"),
    )
});

pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new("audit_guard_webhook_request_duration_seconds", "Admission request latency")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["path", "operation", "outcome"],
        )
        .expect("valid metric"),
    )
});

pub static DENIALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("audit_guard_webhook_denials_total", "Admission denials by reason"),
            &["reason"],
        )
        .expect("valid metric"),
    )
});

pub static FORCED_REMOVALS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "audit_guard_webhook_forced_finalizer_removals_total",
            "Break-glass removals of the audit finalizer",
        )
        .expect("valid metric"),
    )
});

/// How the validating webhook learnt whether Data Storage holds a record the controller's
/// identity is releasing: from this process's confirmed set, or by asking Data Storage.
pub static RECORD_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "audit_guard_webhook_record_checks_total",
                "Checks that a released SignalProcessing's record is held, by source (cache|datastorage) and result (held|missing|error)",
            ),
            &["source", "result"],
        )
        .expect("valid metric"),
    )
});

pub static CERT_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("audit_guard_webhook_cert_reloads_total", "Serving certificate reloads by result"),
            &["result"],
        )
        .expect("valid metric"),
    )
});

pub fn observe(path: &str, operation: &str, outcome: &str, seconds: f64) {
    REQUESTS.with_label_values(&[path, operation, outcome]).inc();
    LATENCY.with_label_values(&[path, operation, outcome]).observe(seconds);
}
