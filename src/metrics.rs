//! Prometheus metrics of the controller side, all in `prometheus::default_registry()` so
//! one /metrics endpoint serves them together with the webhook's.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // A second registration (several test servers in one process) is harmless: the
    // collector still counts, it is just exported once.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name)))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name)))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric(name)))
}

/// Metric names and help texts are constants of this file; only a typo in them can fail.
fn unreachable_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

/// Design document: every attempt to store a record, by outcome.
pub static STORAGE_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "kubernaut_signal_processing_audit_storage_attempts_total",
        "Attempts to store a SignalProcessing audit record in Data Storage, by status (success|error).",
        &["status"],
    )
});

/// Design document: how long an attempt took.
pub static STORAGE_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "kubernaut_signal_processing_audit_storage_duration_seconds",
        "Duration of one attempt to store audit records in Data Storage.",
    )
    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0]);
    register(Histogram::with_opts(opts).unwrap_or_else(|_| unreachable_metric("storage_duration")))
});

pub static WRITTEN: LazyLock<IntCounter> =
    LazyLock::new(|| counter("audit_events_written_total", "Audit records the buffered writer stored."));
pub static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "audit_events_dropped_total",
        "Audit records the buffered writer dropped (buffer full, rejected, or unflushed at shutdown); the deletion path stores them later.",
    )
});
pub static BATCHES_FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "audit_batches_failed_total",
        "Batch writes that failed (each failed attempt counts).",
    )
});
pub static BUFFER_SIZE: LazyLock<IntGauge> = LazyLock::new(|| gauge("audit_buffer_size", "Audit records waiting in the buffered writer."));

/// Reconcile outcomes of the finalizer controller.
pub static RECONCILES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "audit_guard_reconcile_total",
        "Finalizer controller reconciles, by outcome.",
        &["outcome"],
    )
});
pub static WAITING_DELETIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "audit_guard_deletions_waiting_on_audit",
        "SignalProcessings being deleted whose audit record is not stored yet.",
    )
});
pub static OLDEST_WAITING_SECONDS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "audit_guard_oldest_waiting_deletion_seconds",
        "Age of the oldest deletion waiting on its audit record, in seconds (0 when none).",
    )
});
pub static RETENTION_DELETES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "audit_guard_retention_deletions_total",
        "SignalProcessings the retention cleaner deleted.",
    )
});
/// Records found under an existing id with different content: never taken as stored.
pub static RECORD_CONFLICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "audit_guard_record_conflicts_total",
        "Audit records Data Storage refused because a different record already holds the CR's uid, by the path that met it \
         (deletion: stored as an amendment, then released; writer: left to the deletion path; webhook: an unguarded DELETE, amended).",
        &["path"],
    )
});

/// Data Storage refused audit-guard's token (401): every write and read waits until fixed.
pub static DS_UNAUTHENTICATED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "audit_guard_datastorage_unauthenticated_total",
        "Answers 401 from Data Storage: it does not accept audit-guard's token (its audience, expiry or issuer).",
    )
});
/// Data Storage accepted the token but forbids the request (403): an RBAC binding is missing.
pub static DS_FORBIDDEN: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "audit_guard_datastorage_forbidden_total",
        "Answers 403 from Data Storage: audit-guard's identity lacks the permission its access check wants.",
    )
});
/// Data Storage refused a record for good (400/413/422); the deletion still waits.
pub static DS_REJECTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "audit_guard_datastorage_rejected_total",
        "Answers 400, 413 or 422 from Data Storage: a record or event it refuses as it is (the deletion waits).",
    )
});
/// Events mode: Data Storage queued an event in its dead-letter queue (202).
pub static EVENTS_QUEUED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "audit_guard_events_queued_total",
        "Events Kubernaut's Data Storage answered 202 for (queued in its dead-letter queue, not stored yet); audit-guard polls for them.",
    )
});

pub static IS_LEADER: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("audit_guard_leader", "1 while this replica holds the controller Lease."));

/// Records one storage attempt in the design document's two metrics.
pub fn observe_attempt(ok: bool, seconds: f64) {
    STORAGE_ATTEMPTS.with_label_values(&[if ok { "success" } else { "error" }]).inc();
    STORAGE_DURATION.observe(seconds);
}

/// The text exposition of the default registry.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::default_registry().gather(), &mut buf) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Registers every metric up front, so /metrics shows them (at zero) before the first event.
pub fn init() {
    for status in ["success", "error"] {
        STORAGE_ATTEMPTS.with_label_values(&[status]);
    }
    LazyLock::force(&STORAGE_DURATION);
    for c in [
        &WRITTEN,
        &DROPPED,
        &BATCHES_FAILED,
        &RETENTION_DELETES,
        &DS_UNAUTHENTICATED,
        &DS_FORBIDDEN,
        &DS_REJECTED,
        &EVENTS_QUEUED,
    ] {
        LazyLock::force(c);
    }
    for g in [&BUFFER_SIZE, &WAITING_DELETIONS, &OLDEST_WAITING_SECONDS, &IS_LEADER] {
        LazyLock::force(g);
    }
    LazyLock::force(&RECONCILES);
    for path in ["deletion", "writer", "webhook"] {
        RECORD_CONFLICTS.with_label_values(&[path]);
    }
}
