//! Builds the audit record from a SignalProcessing of either shape (Kubernaut's CRD today,
//! or the design document's). Only what the CR carries is mapped; the rest stays null.
//! Values the schema cannot hold (out of range, negative, end before start, a time outside
//! the window Data Storage accepts) are stored as null and listed in `anomalies` with the raw
//! value: every record is storable, so no CR status can hold a deletion forever.
//! A status time outside the object's own life — before its `creationTimestamp`, or after its
//! deletion (`deletionTimestamp`, or the build time while it is not deleted) — is such a value
//! too: whoever may write the status cannot move a record's times where the object never was.
//! The mapping is documented in docs/audit-mapping.md.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    Anomaly, AuditStatus, CategorizationPhaseResults, ClassificationPhaseResults, EnrichmentPhaseResults, ProcessingPhase,
    SignalProcessingAudit, Trigger, TIME_WINDOW_FUTURE, TIME_WINDOW_PAST,
};
use crate::crd::{SignalProcessing, SignalProcessingStatus};
use crate::duration::GoDuration;

/// How a record is built from a CR (the webhook takes it as a parameter, for tests).
pub type RecordBuilder = fn(&SignalProcessing, Trigger, DateTime<Utc>) -> SignalProcessingAudit;

/// How far a status time may lie outside the object's life before it is an anomaly: the API
/// server's timestamps have whole seconds (a deletion at 10:00:05.8 reads 10:00:05), and the
/// controller's clock is not the API server's.
pub const LIFETIME_SLACK: std::time::Duration = std::time::Duration::from_secs(60);

/// The span a status time of `sp` may claim when built at `now`: the window Data Storage
/// accepts around `now`, narrowed to the object's life (from its `creationTimestamp` to its
/// `deletionTimestamp`, or to `now` while it is not deleted), each end widened by
/// [`LIFETIME_SLACK`].
pub fn status_time_bounds(
    created: Option<DateTime<Utc>>,
    deleted: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let (earliest, latest) = window(now);
    let slack = span(LIFETIME_SLACK);
    let earliest = created.map_or(earliest, |c| earliest.max(c - slack));
    let latest = latest.min(deleted.unwrap_or(now) + slack);
    (earliest, latest)
}

fn span(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
}

/// The window Data Storage accepts around `now`.
fn window(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (now - span(TIME_WINDOW_PAST), now + span(TIME_WINDOW_FUTURE))
}

/// Keeps values inside the schema's ranges; whatever it refuses is listed as an anomaly.
struct Sanitizer {
    /// The window Data Storage accepts (for the API server's own deletion time).
    window: (DateTime<Utc>, DateTime<Utc>),
    /// Where the status's times may lie (see [`status_time_bounds`]).
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    anomalies: Vec<Anomaly>,
}

impl Sanitizer {
    fn new(sp: &SignalProcessing, now: DateTime<Utc>) -> Self {
        let meta = &sp.metadata;
        let (earliest, latest) = status_time_bounds(
            meta.creation_timestamp.as_ref().map(|t| t.0),
            meta.deletion_timestamp.as_ref().map(|t| t.0),
            now,
        );
        Self {
            window: window(now),
            earliest,
            latest,
            anomalies: Vec::new(),
        }
    }

    fn refuse(&mut self, field: &str, raw: impl Serialize) {
        // Every raw value here is a number, a time or a duration: it always serialises.
        let value = serde_json::to_value(raw).unwrap_or(serde_json::Value::Null);
        if !self.anomalies.iter().any(|a| a.field == field) {
            self.anomalies.push(Anomaly {
                field: field.to_string(),
                value,
            });
        }
    }

    fn keep_if<T: Serialize + Copy>(&mut self, field: &str, value: Option<T>, ok: impl Fn(T) -> bool) -> Option<T> {
        match value {
            Some(v) if !ok(v) => {
                self.refuse(field, v);
                None
            }
            other => other,
        }
    }

    /// A fraction in [0, 1] (confidence, quality).
    fn fraction(&mut self, field: &str, value: Option<f64>) -> Option<f64> {
        self.keep_if(field, value, |v| (0.0..=1.0).contains(&v))
    }

    fn non_negative(&mut self, field: &str, value: Option<i64>) -> Option<i64> {
        self.keep_if(field, value, |v| v >= 0)
    }

    fn duration(&mut self, field: &str, value: Option<GoDuration>) -> Option<GoDuration> {
        self.keep_if(field, value, |d| d.nanos >= 0)
    }

    /// A status time inside the window Data Storage accepts around `now` and inside the
    /// object's life.
    fn time(&mut self, field: &str, value: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let (earliest, latest) = (self.earliest, self.latest);
        self.keep_if(field, value, |t| t >= earliest && t <= latest)
    }

    /// A time the API server set, inside the window Data Storage accepts around `now`.
    fn window_time(&mut self, field: &str, value: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let (earliest, latest) = self.window;
        self.keep_if(field, value, |t| t >= earliest && t <= latest)
    }

    /// A phase whose end lies before its start keeps its end (the start is the usual fallback
    /// guess, e.g. `creationTimestamp` of a CR restored from a backup) and lists the start.
    fn ordered(
        &mut self,
        phase: usize,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match (start, end) {
            (Some(s), Some(e)) if e < s => {
                self.refuse(&format!("processing_phases[{phase}].start_time"), s);
                (None, end)
            }
            _ => (start, end),
        }
    }
}

/// The record for `sp`, as of `now` (the build time: the time window is judged around it, and
/// it is `completed_at` when the CR says nothing believable about when it finished and was not
/// deleted). `completed_at` is never before `creationTimestamp`.
pub fn build_record(sp: &SignalProcessing, trigger: Trigger, now: DateTime<Utc>) -> SignalProcessingAudit {
    let default_status = SignalProcessingStatus::default();
    let st = sp.status.as_ref().unwrap_or(&default_status);
    let meta = &sp.metadata;
    let mut check = Sanitizer::new(sp, now);
    let deleted_at = check.window_time("deleted_at", meta.deletion_timestamp.as_ref().map(|t| t.0));
    let env = st.environment_classification.as_ref();
    let enrichment = st.enrichment_results.as_ref();
    let categorization = st.categorization.as_ref();

    let status = audit_status(sp, trigger);
    let error_message = (status == AuditStatus::Failed).then(|| failure_message(st)).flatten();
    let processing_phases = phases(sp, st, &mut check);
    let finished = finish_time(sp, st, &processing_phases, &mut check);

    SignalProcessingAudit {
        id: meta.uid.clone().unwrap_or_default(),
        remediation_id: remediation_id(sp),
        signal_fingerprint: sp.spec.signal.as_ref().and_then(|s| s.fingerprint.clone()).unwrap_or_default(),
        processing_phases,
        enrichment_quality: check.fraction("enrichment_quality", enrichment.and_then(|e| e.enrichment_quality)),
        enrichment_sources: enrichment.and_then(|e| e.enrichment_sources.clone()),
        context_size_bytes: check.non_negative("context_size_bytes", enrichment.and_then(|e| e.context_size_bytes)),
        environment: environment(st),
        confidence: check.fraction("confidence", env.and_then(|e| e.confidence)),
        business_criticality: business_criticality(st),
        sla_requirement: sla_requirement(st),
        priority: priority(st),
        priority_score: check.non_negative("priority_score", categorization.and_then(|c| c.priority_score)),
        // Neither CR shape carries a routing decision.
        routed_to_service: None,
        routing_priority: None,
        completed_at: not_before(
            finished.or(deleted_at).unwrap_or(now),
            meta.creation_timestamp.as_ref().map(|t| t.0),
        ),
        status,
        error_message,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        trigger: Some(trigger),
        deleted_at,
        anomalies: check.anomalies,
    }
}

/// When the CR says it finished, judged as [`build_record`] judges `completed_at`: its
/// `status.completionTime`, else (for a Completed or Failed CR) the end of its last phase.
/// None when the CR does not say, or says something outside the accepted time window around
/// `now` or outside the object's life; the record's `completed_at` then depends on when it is built, so the buffered
/// writer leaves such a record to the deletion path.
pub fn finished_at(sp: &SignalProcessing, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let default_status = SignalProcessingStatus::default();
    let st = sp.status.as_ref().unwrap_or(&default_status);
    let mut check = Sanitizer::new(sp, now);
    let phases = phases(sp, st, &mut check);
    finish_time(sp, st, &phases, &mut check)
}

fn finish_time(
    sp: &SignalProcessing,
    st: &SignalProcessingStatus,
    phases: &[ProcessingPhase],
    check: &mut Sanitizer,
) -> Option<DateTime<Utc>> {
    let completion = check.time("completed_at", st.completion_time);
    let last_phase_end = || sp.is_terminal().then(|| phases.iter().rev().find_map(|p| p.end_time)).flatten();
    completion.or_else(last_phase_end)
}

/// `t`, or `floor` when `t` lies before it.
fn not_before(t: DateTime<Utc>, floor: Option<DateTime<Utc>>) -> DateTime<Utc> {
    floor.map_or(t, |f| t.max(f))
}
/// Completed/Failed as the CR says; a forced removal is `forced`; anything else that is
/// being recorded (deleted before it finished) is `incomplete`.
pub fn audit_status(sp: &SignalProcessing, trigger: Trigger) -> AuditStatus {
    if trigger == Trigger::Forced {
        return AuditStatus::Forced;
    }
    match sp.phase() {
        Some(p) if p.eq_ignore_ascii_case("completed") => AuditStatus::Completed,
        Some(p) if p.eq_ignore_ascii_case("failed") => AuditStatus::Failed,
        _ => AuditStatus::Incomplete,
    }
}

/// spec.remediationRequestRef.name; else the owning RemediationRequest's name (the
/// ownerReference says the same thing); else the CR's own name, because Data Storage
/// rejects an empty remediation_id and a deletion must never wait on a field nobody set.
fn remediation_id(sp: &SignalProcessing) -> String {
    let from_ref = sp
        .spec
        .remediation_request_ref
        .as_ref()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty());
    let from_owner = || {
        sp.metadata
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|o| o.kind == "RemediationRequest")
            .map(|o| o.name.clone())
    };
    from_ref
        .or_else(from_owner)
        .or_else(|| sp.metadata.name.clone())
        .unwrap_or_default()
}

fn failure_message(st: &SignalProcessingStatus) -> Option<String> {
    let from_failure = st.failure_info.as_ref().and_then(|f| f.error.clone()).filter(|e| !e.is_empty());
    from_failure.or_else(|| {
        st.conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|c| c.condition_type == "Ready")
            .and_then(|c| c.message.clone())
            .filter(|m| !m.is_empty())
    })
}

// Each classification value is read in one place, for the record's top level and for its
// phases alike, so that the two cannot drift apart. The design document's field comes first,
// Kubernaut's as it ships today second.

fn environment(st: &SignalProcessingStatus) -> Option<String> {
    lower(st.environment_classification.as_ref().and_then(|e| e.environment.as_deref()))
}

fn business_criticality(st: &SignalProcessingStatus) -> Option<String> {
    let env = st.environment_classification.as_ref();
    let business = st.business_classification.as_ref();
    lower(
        env.and_then(|e| e.business_criticality.as_deref())
            .or_else(|| business.and_then(|b| b.criticality.as_deref())),
    )
}

fn sla_requirement(st: &SignalProcessingStatus) -> Option<String> {
    let env = st.environment_classification.as_ref();
    let business = st.business_classification.as_ref();
    lower(
        env.and_then(|e| e.sla_requirement.as_deref())
            .or_else(|| business.and_then(|b| b.sla_requirement.as_deref())),
    )
}

fn priority(st: &SignalProcessingStatus) -> Option<String> {
    st.categorization
        .as_ref()
        .and_then(|c| c.priority.clone())
        .or_else(|| st.priority_assignment.as_ref().and_then(|a| a.priority.clone()))
}

fn lower(s: Option<&str>) -> Option<String> {
    s.filter(|v| !v.is_empty()).map(str::to_lowercase)
}

/// end - start when both are known, else the CR's own duration (listed when negative).
fn phase_duration(
    check: &mut Sanitizer,
    phase: usize,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    own: Option<GoDuration>,
) -> Option<GoDuration> {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => Some(GoDuration::between(s, e)),
        _ => check.duration(&format!("processing_phases[{phase}].duration"), own),
    }
}

/// A phase's start and end, each inside the time window, the start dropped if after the end.
fn bounds(
    check: &mut Sanitizer,
    phase: usize,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let start = check.time(&format!("processing_phases[{phase}].start_time"), start);
    let end = check.time(&format!("processing_phases[{phase}].end_time"), end);
    check.ordered(phase, start, end)
}

fn phases(sp: &SignalProcessing, st: &SignalProcessingStatus, check: &mut Sanitizer) -> Vec<ProcessingPhase> {
    let env = st.environment_classification.as_ref();
    let enrichment = st.enrichment_results.as_ref();
    let categorization = st.categorization.as_ref();
    let assignment = st.priority_assignment.as_ref();
    let degraded = st
        .kubernetes_context
        .as_ref()
        .and_then(|k| k.get("degradedMode"))
        .and_then(|v| v.as_bool());

    let enrich_start = st.start_time.or_else(|| sp.metadata.creation_timestamp.as_ref().map(|t| t.0));
    // Kubernaut today has no end-of-enrichment stamp; environment classification follows it.
    let enrich_end = enrichment
        .and_then(|e| e.completed_at)
        .or_else(|| env.and_then(|e| e.classified_at));
    let (enrich_start, enrich_end) = bounds(check, 0, enrich_start, enrich_end);
    let quality = check.fraction(
        "processing_phases[0].enrichmentResults.contextQuality",
        enrichment.and_then(|e| e.enrichment_quality),
    );
    let enriching = ProcessingPhase {
        phase: "enriching".into(),
        start_time: enrich_start,
        end_time: enrich_end,
        duration: phase_duration(check, 0, enrich_start, enrich_end, enrichment.and_then(|e| e.duration)),
        enrichment_results: Some(EnrichmentPhaseResults {
            context_quality: quality,
            context_size_bytes: check.non_negative(
                "processing_phases[0].enrichmentResults.contextSizeBytes",
                enrichment.and_then(|e| e.context_size_bytes),
            ),
            context_sources: sp
                .spec
                .enrichment_config
                .as_ref()
                .and_then(|c| c.context_source_count())
                .map(|n| n as i64),
            degraded_mode: degraded.or_else(|| quality.map(|q| q < 0.8)),
        }),
        classification_results: None,
        categorization_results: None,
    };

    // Kubernaut today stamps only classifiedAt, so classification has an end but no known start.
    let class_start = st.classification_start_time.or(enrichment.and_then(|e| e.completed_at));
    let class_end = st.classification_end_time.or_else(|| env.and_then(|e| e.classified_at));
    let (class_start, class_end) = bounds(check, 1, class_start, class_end);
    let classifying = ProcessingPhase {
        phase: "classifying".into(),
        start_time: class_start,
        end_time: class_end,
        duration: phase_duration(check, 1, class_start, class_end, st.classification_duration),
        enrichment_results: None,
        classification_results: Some(ClassificationPhaseResults {
            environment: environment(st),
            confidence: check.fraction(
                "processing_phases[1].classificationResults.confidence",
                env.and_then(|e| e.confidence),
            ),
            business_criticality: business_criticality(st),
            classification_method: env.and_then(|e| e.source.clone()),
        }),
        categorization_results: None,
    };

    let cat_start = st.categorization_start_time.or(class_end);
    let cat_end = st.categorization_end_time.or_else(|| assignment.and_then(|a| a.assigned_at));
    let (cat_start, cat_end) = bounds(check, 2, cat_start, cat_end);
    let categorizing = ProcessingPhase {
        phase: "categorizing".into(),
        start_time: cat_start,
        end_time: cat_end,
        duration: phase_duration(check, 2, cat_start, cat_end, st.categorization_duration),
        enrichment_results: None,
        classification_results: None,
        categorization_results: Some(CategorizationPhaseResults {
            priority: priority(st),
            priority_score: check.non_negative(
                "processing_phases[2].categorizationResults.priorityScore",
                categorization.and_then(|c| c.priority_score),
            ),
            source: categorization
                .and_then(|c| c.categorization_source.clone())
                .or_else(|| assignment.and_then(|a| a.source.clone())),
        }),
    };
    vec![enriching, classifying, categorizing]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn cr(mut v: Value) -> SignalProcessing {
        v["metadata"]["uid"] = json!("0b7e6f1a-1111-4000-8000-000000000042");
        v["metadata"]["namespace"] = json!("prod");
        v["metadata"]["creationTimestamp"] = json!("2025-11-27T10:00:00Z");
        serde_json::from_value(v).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn now() -> DateTime<Utc> {
        t("2025-11-28T00:00:00Z")
    }

    #[test]
    fn kubernaut_today_completed() {
        let rec = build_record(&cr(fixture("kubernaut-today.json")), Trigger::Completion, now());
        assert_eq!(rec.id, "0b7e6f1a-1111-4000-8000-000000000042");
        assert_eq!(rec.remediation_id, "rr-mem-pressure-1");
        assert_eq!(rec.signal_fingerprint.len(), 64);
        assert_eq!(rec.status, AuditStatus::Completed);
        assert_eq!(rec.environment.as_deref(), Some("production"));
        assert_eq!(rec.business_criticality.as_deref(), Some("critical"));
        assert_eq!(rec.sla_requirement.as_deref(), Some("platinum"));
        assert_eq!(rec.priority.as_deref(), Some("P0"));
        assert_eq!(rec.confidence, None);
        assert_eq!(rec.priority_score, None);
        assert_eq!(rec.enrichment_quality, None);
        assert_eq!(rec.completed_at, t("2025-11-27T10:00:05Z"));
        assert_eq!(rec.error_message, None);
        let [e, c, g] = &rec.processing_phases[..] else {
            panic!("three phases")
        };
        assert_eq!(
            (e.start_time, e.end_time),
            (Some(t("2025-11-27T10:00:01Z")), Some(t("2025-11-27T10:00:03Z")))
        );
        assert_eq!(e.duration, Some(GoDuration::from_nanos(2_000_000_000)));
        assert_eq!(e.enrichment_results.as_ref().unwrap().degraded_mode, Some(false));
        assert_eq!(
            (c.start_time, c.end_time, c.duration),
            (None, Some(t("2025-11-27T10:00:03Z")), None)
        );
        assert_eq!(
            c.classification_results.as_ref().unwrap().classification_method.as_deref(),
            Some("namespace-labels")
        );
        assert_eq!(g.duration, Some(GoDuration::from_nanos(1_000_000_000)));
        assert_eq!(g.categorization_results.as_ref().unwrap().source.as_deref(), Some("rego-policy"));
        assert!(rec.validate().is_ok());
    }

    #[test]
    fn design_doc_shape() {
        let rec = build_record(&cr(fixture("design-doc.json")), Trigger::Deletion, now());
        assert_eq!(rec.remediation_id, "rr-design-1");
        assert_eq!(rec.enrichment_quality, Some(0.75));
        assert_eq!(rec.enrichment_sources, Some(vec!["kubernetes".to_string(), "metrics".to_string()]));
        assert_eq!(rec.context_size_bytes, Some(4096));
        assert_eq!(rec.environment.as_deref(), Some("staging"));
        assert_eq!(rec.confidence, Some(0.92));
        assert_eq!(rec.business_criticality.as_deref(), Some("high"));
        assert_eq!(rec.sla_requirement.as_deref(), Some("gold"));
        assert_eq!((rec.priority.as_deref(), rec.priority_score), (Some("P1"), Some(82)));
        assert_eq!(rec.status, AuditStatus::Completed);
        let [e, c, g] = &rec.processing_phases[..] else {
            panic!("three phases")
        };
        // No startTime: enrichment starts at creation, and ends at completedAt.
        assert_eq!(e.start_time, Some(t("2025-11-27T10:00:00Z")));
        assert_eq!(e.duration, Some(GoDuration::from_nanos(1_500_000_000)));
        let er = e.enrichment_results.as_ref().unwrap();
        assert_eq!(
            (er.context_sources, er.degraded_mode, er.context_quality),
            (Some(3), Some(true), Some(0.75))
        );
        assert_eq!(c.duration, Some(GoDuration::from_nanos(500_000_000)));
        assert_eq!(g.duration, Some(GoDuration::from_nanos(250_000_000)));
        assert_eq!(g.categorization_results.as_ref().unwrap().priority_score, Some(82));
        assert!(rec.validate().is_ok());
    }

    #[test]
    fn own_duration_used_when_a_boundary_is_missing() {
        let mut v = fixture("design-doc.json");
        v["status"].as_object_mut().unwrap().remove("classificationEndTime");
        let rec = build_record(&cr(v), Trigger::Completion, now());
        assert_eq!(rec.processing_phases[1].end_time, None);
        assert_eq!(rec.processing_phases[1].duration, Some(GoDuration::from_nanos(500_000_000)));
    }

    #[test]
    fn failed_takes_the_error_from_failure_info_or_the_ready_condition() {
        let mut v = fixture("kubernaut-today.json");
        v["status"]["phase"] = json!("Failed");
        v["status"]["failureInfo"]["error"] = json!("rego evaluation failed");
        let rec = build_record(&cr(v.clone()), Trigger::Completion, now());
        assert_eq!(rec.status, AuditStatus::Failed);
        assert_eq!(rec.error_message.as_deref(), Some("rego evaluation failed"));

        v["status"]["failureInfo"]["error"] = json!("");
        v["status"]["conditions"][0]["status"] = json!("False");
        v["status"]["conditions"][0]["message"] = json!("enrichment timed out");
        let rec = build_record(&cr(v), Trigger::Completion, now());
        assert_eq!(rec.error_message.as_deref(), Some("enrichment timed out"));
    }

    #[test]
    fn deleted_before_completion_is_incomplete_and_completed_at_is_the_deletion() {
        let mut v = fixture("kubernaut-today.json");
        v["status"] = json!({ "phase": "Classifying", "startTime": "2025-11-27T10:00:01Z" });
        v["metadata"]["deletionTimestamp"] = json!("2025-11-27T11:00:00Z");
        let rec = build_record(&cr(v), Trigger::Deletion, now());
        assert_eq!(rec.status, AuditStatus::Incomplete);
        assert_eq!(rec.completed_at, t("2025-11-27T11:00:00Z"));
        assert_eq!(rec.deleted_at, Some(t("2025-11-27T11:00:00Z")));
        assert_eq!(rec.environment, None);
        assert_eq!(rec.processing_phases[0].end_time, None);
        assert_eq!(rec.processing_phases[0].duration, None);
        assert_eq!(rec.error_message, None);
    }

    #[test]
    fn no_status_at_all_still_yields_a_valid_record() {
        let v = json!({ "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": { "name": "bare" }, "spec": {} });
        let rec = build_record(&cr(v), Trigger::Deletion, now());
        assert_eq!(rec.status, AuditStatus::Incomplete);
        assert_eq!(rec.completed_at, now());
        assert_eq!(rec.remediation_id, "bare");
        assert!(rec.validate().is_ok());
        let json = serde_json::to_value(&rec).unwrap();
        assert!(json["environment"].is_null() && json.get("error_message").is_none());
    }

    #[test]
    fn a_fallback_start_after_the_end_is_dropped_and_listed() {
        let mut sp = cr(fixture("design-doc.json"));
        // Created half a second after enrichment ended (the controller's clock is not the API
        // server's): the end is inside the slack, the start taken from the creation is not.
        sp.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t("2025-11-27T10:00:02Z")));
        let rec = build_record(&sp, Trigger::Deletion, now());
        let e = &rec.processing_phases[0];
        assert_eq!((e.start_time, e.end_time), (None, Some(t("2025-11-27T10:00:01.5Z"))));
        assert_eq!(e.duration, Some(GoDuration::from_nanos(1_500_000_000)));
        assert_eq!(
            rec.anomalies,
            vec![Anomaly {
                field: "processing_phases[0].start_time".into(),
                value: json!("2025-11-27T10:00:02Z")
            }]
        );
        assert!(rec.validate().is_ok());
    }

    /// A status patched with values the schema cannot hold: each is null in the record and
    /// listed with its raw value, and the record still passes Data Storage's validation.
    #[test]
    fn out_of_range_values_are_stored_as_null_and_listed() {
        type Case = (&'static str, fn(&mut Value), Vec<(&'static str, Value)>);
        let cases: Vec<Case> = vec![
            (
                "confidence 5",
                |v| v["status"]["environmentClassification"]["confidence"] = json!(5.0),
                vec![
                    ("processing_phases[1].classificationResults.confidence", json!(5.0)),
                    ("confidence", json!(5.0)),
                ],
            ),
            (
                "negative confidence",
                |v| v["status"]["environmentClassification"]["confidence"] = json!(-0.1),
                vec![
                    ("processing_phases[1].classificationResults.confidence", json!(-0.1)),
                    ("confidence", json!(-0.1)),
                ],
            ),
            (
                "quality 1.5",
                |v| v["status"]["enrichmentResults"]["enrichmentQuality"] = json!(1.5),
                vec![
                    ("processing_phases[0].enrichmentResults.contextQuality", json!(1.5)),
                    ("enrichment_quality", json!(1.5)),
                ],
            ),
            (
                "negative priority score",
                |v| v["status"]["categorization"]["priorityScore"] = json!(-3),
                vec![
                    ("processing_phases[2].categorizationResults.priorityScore", json!(-3)),
                    ("priority_score", json!(-3)),
                ],
            ),
            (
                "negative context size",
                |v| v["status"]["enrichmentResults"]["contextSizeBytes"] = json!(-1),
                vec![
                    ("processing_phases[0].enrichmentResults.contextSizeBytes", json!(-1)),
                    ("context_size_bytes", json!(-1)),
                ],
            ),
            (
                "negative own duration",
                |v| {
                    v["status"].as_object_mut().unwrap().remove("classificationEndTime");
                    v["status"]["classificationDuration"] = json!("-2s");
                },
                vec![("processing_phases[1].duration", json!("-2s"))],
            ),
            (
                "end before start",
                |v| v["status"]["categorizationStartTime"] = json!("2025-11-27T10:00:03Z"),
                vec![("processing_phases[2].start_time", json!("2025-11-27T10:00:03Z"))],
            ),
            (
                "completion in the year 9999",
                |v| v["status"]["completionTime"] = json!("9999-01-01T00:00:00Z"),
                vec![("completed_at", json!("9999-01-01T00:00:00Z"))],
            ),
            (
                "a phase end in the year 1",
                |v| v["status"]["classificationEndTime"] = json!("0001-01-01T00:00:00Z"),
                vec![("processing_phases[1].end_time", json!("0001-01-01T00:00:00Z"))],
            ),
            (
                "a phase start 6 minutes ahead",
                |v| v["status"]["categorizationStartTime"] = json!("2025-11-28T00:06:00Z"),
                vec![("processing_phases[2].start_time", json!("2025-11-28T00:06:00Z"))],
            ),
        ];
        for (name, change, listed) in &cases {
            let mut v = fixture("design-doc.json");
            change(&mut v);
            let rec = build_record(&cr(v), Trigger::Deletion, now());
            let mut got: Vec<(String, Value)> = rec.anomalies.iter().map(|a| (a.field.clone(), a.value.clone())).collect();
            let mut want: Vec<(String, Value)> = listed.iter().map(|(f, v)| (f.to_string(), v.clone())).collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "{name}");
            assert!(rec.validate().is_ok(), "{name}: {:?}", rec.validate());
            let json = serde_json::to_value(&rec).unwrap();
            for (field, raw) in listed {
                // completed_at is required: it falls back (see the next test) instead of null.
                let kept = pointer(&json, field);
                assert!(
                    kept.is_null() || (*field == "completed_at" && kept != raw),
                    "{name}: {field} kept in {json}"
                );
            }
        }
        // In range, nothing is listed and the key is absent.
        let rec = build_record(&cr(fixture("design-doc.json")), Trigger::Deletion, now());
        assert!(rec.anomalies.is_empty());
        assert!(serde_json::to_value(&rec).unwrap().get("anomalies").is_none());
    }

    /// `processing_phases[1].classificationResults.confidence` → the JSON value there.
    fn pointer<'a>(v: &'a Value, path: &str) -> &'a Value {
        let ptr: String = path
            .replace('[', ".")
            .replace(']', "")
            .split('.')
            .map(|s| format!("/{s}"))
            .collect();
        v.pointer(&ptr).unwrap_or(&Value::Null)
    }

    #[test]
    fn an_out_of_window_completion_falls_back_to_what_the_cr_says_and_never_to_a_guess() {
        let mut v = fixture("design-doc.json");
        v["status"]["completionTime"] = json!("9999-01-01T00:00:00Z");
        let rec = build_record(&cr(v), Trigger::Deletion, now());
        // The end of the last phase.
        assert_eq!(rec.completed_at, t("2025-11-27T10:00:02.25Z"));
    }

    /// The writer's record (at completion) and the controller's (at deletion, later) of an
    /// unchanged CR carry the same completed_at, so Data Storage finds them identical.
    #[test]
    fn completed_at_of_a_finished_cr_does_not_depend_on_when_the_record_is_built() {
        let later = t("2025-11-29T08:00:00Z");
        let mut without_completion = fixture("kubernaut-today.json");
        without_completion["status"].as_object_mut().unwrap().remove("completionTime");
        for (name, v, want) in [
            ("completionTime", fixture("kubernaut-today.json"), t("2025-11-27T10:00:05Z")),
            ("last phase end", without_completion, t("2025-11-27T10:00:04Z")),
        ] {
            let sp = cr(v);
            let at_completion = build_record(&sp, Trigger::Completion, now());
            let mut deleting = sp.clone();
            deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(later));
            let at_deletion = build_record(&deleting, Trigger::Deletion, later);
            assert_eq!(at_completion.completed_at, want, "{name}");
            assert_eq!(at_deletion.completed_at, want, "{name}");
            assert_eq!(finished_at(&sp, now()), Some(want), "{name}");
        }
        // A finished CR that says nothing about when: the writer leaves it to the deletion path.
        let mut silent = fixture("kubernaut-today.json");
        silent["status"] = json!({ "phase": "Completed" });
        assert_eq!(finished_at(&cr(silent), now()), None);
        // An unfinished one never takes a phase end as its completion.
        let mut running = fixture("kubernaut-today.json");
        running["status"]["phase"] = json!("Categorizing");
        running["status"].as_object_mut().unwrap().remove("completionTime");
        assert_eq!(finished_at(&cr(running), now()), None);
    }

    fn time(s: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(s))
    }

    fn fields(rec: &SignalProcessingAudit) -> Vec<(&str, &Value)> {
        let mut out: Vec<(&str, &Value)> = rec.anomalies.iter().map(|a| (a.field.as_str(), &a.value)).collect();
        out.sort_by_key(|(f, _)| *f);
        out
    }

    #[test]
    fn status_times_may_lie_only_in_the_objects_life() {
        let now = t("2026-01-10T00:00:00Z");
        let minute = chrono::Duration::seconds(60);
        let created = t("2026-01-01T00:00:00Z");
        let deleted = t("2026-01-05T00:00:00Z");
        assert_eq!(
            status_time_bounds(Some(created), Some(deleted), now),
            (created - minute, deleted + minute)
        );
        assert_eq!(status_time_bounds(Some(created), None, now), (created - minute, now + minute));
        // Without a creation time, the accepted window is the bound.
        let (earliest, latest) = status_time_bounds(None, None, now);
        assert_eq!((now - earliest).num_days(), 400);
        assert_eq!(latest, now + minute);
        // A creation older than the window does not widen it.
        assert_eq!(status_time_bounds(Some(t("2020-01-01T00:00:00Z")), None, now).0, earliest);
    }

    /// A status writer sets `completionTime` to 399 days ago on a CR created yesterday: the
    /// claim is kept as an anomaly, and `completed_at` is what the object proves.
    #[test]
    fn a_back_dated_completion_is_an_anomaly_and_never_the_records_time() {
        let now = t("2026-06-15T12:00:00Z");
        let claimed = now - chrono::Duration::days(399);
        let mut sp = cr(fixture("kubernaut-today.json"));
        sp.metadata.creation_timestamp = Some(time("2026-06-14T12:00:00Z"));
        let status = sp.status.as_mut().unwrap();
        status.completion_time = Some(claimed);
        status.start_time = Some(t("2026-06-14T12:00:01Z"));
        // The other phase times of the fixture (2025-11-27) lie before the creation too.
        let at_completion = build_record(&sp, Trigger::Completion, now);
        let claimed_json = json!(claimed);
        assert!(
            fields(&at_completion).contains(&("completed_at", &claimed_json)),
            "{:?}",
            at_completion.anomalies
        );
        assert_eq!(at_completion.completed_at, now, "not deleted: the build time");
        assert!(at_completion.validate().is_ok());
        assert_eq!(finished_at(&sp, now), None, "the writer leaves it to the deletion path");

        sp.metadata.deletion_timestamp = Some(time("2026-06-15T11:00:00Z"));
        let at_deletion = build_record(&sp, Trigger::Deletion, now);
        assert!(fields(&at_deletion).contains(&("completed_at", &claimed_json)));
        assert_eq!(at_deletion.completed_at, t("2026-06-15T11:00:00Z"), "the deletion");
        assert_eq!(at_deletion.deleted_at, Some(t("2026-06-15T11:00:00Z")));
        let phases: Vec<&str> = fields(&at_deletion)
            .into_iter()
            .map(|(f, _)| f)
            .filter(|f| f.starts_with("processing_phases"))
            .collect();
        assert!(phases.contains(&"processing_phases[0].end_time"), "{phases:?}");
        assert_eq!(at_deletion.processing_phases[0].start_time, Some(t("2026-06-14T12:00:01Z")));
    }

    #[test]
    fn a_status_time_after_the_deletion_is_an_anomaly() {
        let mut v = fixture("design-doc.json");
        v["metadata"]["deletionTimestamp"] = json!("2025-11-27T10:00:02Z");
        v["status"]["completionTime"] = json!("2025-11-27T18:00:00Z");
        v["status"]["categorizationEndTime"] = json!("2025-11-27T17:00:00Z");
        let rec = build_record(&cr(v), Trigger::Deletion, now());
        assert_eq!(
            fields(&rec),
            [
                ("completed_at", &json!("2025-11-27T18:00:00Z")),
                ("processing_phases[2].end_time", &json!("2025-11-27T17:00:00Z")),
            ]
        );
        // The last phase with a believable end: classification's.
        assert_eq!(rec.completed_at, t("2025-11-27T10:00:02Z"));
        // Within the slack, nothing is listed.
        let mut v = fixture("design-doc.json");
        v["metadata"]["deletionTimestamp"] = json!("2025-11-27T10:00:02Z");
        let rec = build_record(&cr(v), Trigger::Deletion, now());
        assert_eq!(fields(&rec), []);
        assert_eq!(rec.completed_at, t("2025-11-27T10:00:02.25Z"));
    }

    #[test]
    fn completed_at_is_never_before_the_creation() {
        // A status without any time, created after the (skewed) build time.
        let mut v = fixture("kubernaut-today.json");
        v["status"] = json!({ "phase": "Completed" });
        let mut sp = cr(v);
        sp.metadata.creation_timestamp = Some(time("2025-11-28T00:00:30Z"));
        assert_eq!(build_record(&sp, Trigger::Deletion, now()).completed_at, t("2025-11-28T00:00:30Z"));
    }

    #[test]
    fn forced_trigger_wins() {
        let rec = build_record(&cr(fixture("kubernaut-today.json")), Trigger::Forced, now());
        assert_eq!(rec.status, AuditStatus::Forced);
        assert_eq!(rec.trigger, Some(Trigger::Forced));
    }
}
