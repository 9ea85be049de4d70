//! Prometheus metrics, all in `prometheus::default_registry()` so one /metrics endpoint serves
//! every area's. The idiom: each area (this file for the controller side, `webhook::metrics`,
//! `datastorage::metrics`, `certs::metrics`) lists its metrics once in [`declare!`], built with
//! the constructors below; the same list gives the area's `init()`.

use prometheus::core::Collector;
use prometheus::{GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

/// Declares an area's metrics as `LazyLock` statics and, from the same list, its `init()`, which
/// registers them all up front (a vector with each label set listed after `zero`, a gauge at
/// its `start` value) so /metrics shows them at zero before the first event. One list, so no
/// metric can be declared and then forgotten at start-up. One metric a line: a search for a
/// metric's name (from an alert or a dashboard) finds its type, help text and labels at once.
macro_rules! declare {
    ($(
        $(#[$attr:meta])*
        $vis:vis static $name:ident: $ty:ty = $make:expr $(, zero [$($labels:expr),* $(,)?])? $(, start $start:expr)?;
    )*) => {
        $(
            $(#[$attr])*
            $vis static $name: ::std::sync::LazyLock<$ty> = ::std::sync::LazyLock::new(|| $make);
        )*

        /// Registers every metric of this area, so /metrics lists them before the first event.
        pub fn init() {
            $(
                ::std::sync::LazyLock::force(&$name);
                $($( $name.with_label_values(&$labels); )*)?
                $( $name.set($start); )?
            )*
        }
    };
}
pub(crate) use declare;

/// Adds `c` to the default registry. A name registered twice keeps the first collector
/// exported; the second still counts, so it is worth a warning, not a crash.
fn register<C: Collector + Clone + 'static>(c: C) -> C {
    if let Err(e) = prometheus::default_registry().register(Box::new(c.clone())) {
        tracing::warn!(error = %e, "metric not registered");
    }
    c
}

/// Metric names, help texts, labels and buckets are constants of the declaring file; only a
/// typo in them can fail, and it fails at the first start.
fn built<T>(name: &str, made: prometheus::Result<T>) -> T {
    made.unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"))
}

pub fn counter(name: &str, help: &str) -> IntCounter {
    register(built(name, IntCounter::new(name, help)))
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    register(built(name, IntGauge::new(name, help)))
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(built(name, IntCounterVec::new(Opts::new(name, help), labels)))
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
    register(built(name, prometheus::IntGaugeVec::new(Opts::new(name, help), labels)))
}

pub fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(built(name, GaugeVec::new(Opts::new(name, help), labels)))
}

pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(built(
        name,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
    ))
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    register(built(
        name,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels),
    ))
}

/// The text exposition of the default registry (every area's metrics).
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::default_registry().gather(), &mut buf) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Records one storage attempt in the design document's two metrics.
pub fn observe_attempt(ok: bool, seconds: f64) {
    STORAGE_ATTEMPTS.with_label_values(&[if ok { "success" } else { "error" }]).inc();
    STORAGE_DURATION.observe(seconds);
}

// The controller side's metrics (finalizer controller, buffered writer, Data Storage client).
declare! {
    /// Design document: every attempt to store a record, by outcome.
    pub static STORAGE_ATTEMPTS: IntCounterVec = counter_vec("kubernaut_signal_processing_audit_storage_attempts_total", "Attempts to store a SignalProcessing audit record in Data Storage, by status (success|error).", &["status"]), zero [["success"], ["error"]];

    /// Design document: how long an attempt took.
    pub static STORAGE_DURATION: Histogram = histogram("kubernaut_signal_processing_audit_storage_duration_seconds", "Duration of one attempt to store audit records in Data Storage.", &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0]);

    pub static WRITTEN: IntCounter = counter("audit_events_written_total", "Audit records the buffered writer stored.");
    pub static DROPPED: IntCounter = counter("audit_events_dropped_total", "Audit records the buffered writer dropped (buffer full, rejected, or unflushed at shutdown); the deletion path stores them later.");
    pub static BATCHES_FAILED: IntCounter = counter("audit_batches_failed_total", "Batch writes that failed (each failed attempt counts).");
    pub static BUFFER_SIZE: IntGauge = gauge("audit_buffer_size", "Audit records waiting in the buffered writer.");

    /// Reconcile outcomes of the finalizer controller.
    pub static RECONCILES: IntCounterVec = counter_vec("audit_guard_reconcile_total", "Finalizer controller reconciles, by outcome.", &["outcome"]);
    pub static WAITING_DELETIONS: IntGauge = gauge("audit_guard_deletions_waiting_on_audit", "SignalProcessings being deleted whose audit record is not stored yet.");
    pub static OLDEST_WAITING_SECONDS: IntGauge = gauge("audit_guard_oldest_waiting_deletion_seconds", "Age of the oldest deletion waiting on its audit record, in seconds (0 when none).");
    pub static RETENTION_DELETES: IntCounter = counter("audit_guard_retention_deletions_total", "SignalProcessings the retention cleaner deleted.");
    /// Records found under an existing id with different content: never taken as stored.
    pub static RECORD_CONFLICTS: IntCounterVec = counter_vec("audit_guard_record_conflicts_total", "Audit records Data Storage refused because a different record already holds the CR's uid, by the path that met it (deletion: stored as an amendment, then released; writer: the completion-time record, stored as an amendment; webhook: an unguarded DELETE or a release under the controller's identity, amended).", &["path"]), zero [["deletion"], ["writer"], ["webhook"]];

    /// Data Storage refused audit-guard's token (401): every write and read waits until fixed.
    pub static DS_UNAUTHENTICATED: IntCounter = counter("audit_guard_datastorage_unauthenticated_total", "Answers 401 from Data Storage: it does not accept audit-guard's token (its audience, expiry or issuer).");
    /// Data Storage accepted the token but forbids the request (403): an RBAC binding is missing.
    pub static DS_FORBIDDEN: IntCounter = counter("audit_guard_datastorage_forbidden_total", "Answers 403 from Data Storage: audit-guard's identity lacks the permission its access check wants.");
    /// Data Storage refused a record for good (400/413/422); the deletion still waits.
    pub static DS_REJECTED: IntCounter = counter("audit_guard_datastorage_rejected_total", "Answers 400, 413 or 422 from Data Storage: a record or event it refuses as it is (the deletion waits).");
    /// Events mode: Data Storage queued an event in its dead-letter queue (202).
    pub static EVENTS_QUEUED: IntCounter = counter("audit_guard_events_queued_total", "Events Kubernaut's Data Storage answered 202 for (queued in its dead-letter queue, not stored yet); audit-guard polls for them.");
    /// Events mode: a CR's queued-event annotation that cannot be true, ignored.
    pub static EVENT_MARKS_IGNORED: IntCounterVec = counter_vec("audit_guard_event_marks_ignored_total", "Events mode: readings of a SignalProcessing's audit.kubernaut.ai/event-queued-at annotation ignored as impossible, by reason (unparseable|future|before_creation).", &["reason"]), zero [["unparseable"], ["future"], ["before_creation"]];

    pub static REMOVALS_OBSERVED: IntCounterVec = counter_vec("audit_guard_finalizer_removals_observed_total", "Removals of the audit finalizer the controller's watch saw, by what Data Storage made of their break-glass claims (confirmed: one claim, now an event; ambiguous: several claims, none confirmed; no_claim: nobody claimed it; not_kept: events mode keeps no claims; error: not reported); own_release counts the controller's own releases the watch saw.", &["outcome"]), zero [["confirmed"], ["ambiguous"], ["no_claim"], ["not_kept"], ["error"], ["own_release"]];
    pub static IS_LEADER: IntGauge = gauge("audit_guard_leader", "1 while this replica holds the controller Lease.");
}
