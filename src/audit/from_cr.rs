//! Builds the audit record from a SignalProcessing of either shape (Kubernaut's CRD today,
//! or the design document's). Only what the CR carries is mapped; the rest stays null.
//! The mapping is documented in docs/audit-mapping.md.

use chrono::{DateTime, Utc};

use super::{
    AuditStatus, CategorizationPhaseResults, ClassificationPhaseResults, EnrichmentPhaseResults, ProcessingPhase, SignalProcessingAudit,
    Trigger,
};
use crate::crd::{SignalProcessing, SignalProcessingStatus};
use crate::duration::GoDuration;

/// How a record is built from a CR (the webhook takes it as a parameter, for tests).
pub type RecordBuilder = fn(&SignalProcessing, Trigger, DateTime<Utc>) -> SignalProcessingAudit;

/// The record for `sp`, as of `now` (used as completed_at when the CR never completed).
pub fn build_record(sp: &SignalProcessing, trigger: Trigger, now: DateTime<Utc>) -> SignalProcessingAudit {
    let default_status = SignalProcessingStatus::default();
    let st = sp.status.as_ref().unwrap_or(&default_status);
    let meta = &sp.metadata;
    let uid = meta.uid.clone().unwrap_or_default();
    let deleted_at = meta.deletion_timestamp.as_ref().map(|t| t.0);
    let env = st.environment_classification.as_ref();
    let business = st.business_classification.as_ref();
    let enrichment = st.enrichment_results.as_ref();
    let categorization = st.categorization.as_ref();
    let assignment = st.priority_assignment.as_ref();

    let status = audit_status(sp, trigger);
    let error_message = (status == AuditStatus::Failed).then(|| failure_message(st)).flatten();

    SignalProcessingAudit {
        id: uid.clone(),
        remediation_id: remediation_id(sp),
        signal_fingerprint: sp.spec.signal.as_ref().and_then(|s| s.fingerprint.clone()).unwrap_or_default(),
        processing_phases: phases(sp, st),
        enrichment_quality: enrichment.and_then(|e| e.enrichment_quality),
        enrichment_sources: enrichment.and_then(|e| e.enrichment_sources.clone()),
        context_size_bytes: enrichment.and_then(|e| e.context_size_bytes),
        environment: lower(env.and_then(|e| e.environment.as_deref())),
        confidence: env.and_then(|e| e.confidence),
        business_criticality: lower(
            env.and_then(|e| e.business_criticality.as_deref())
                .or_else(|| business.and_then(|b| b.criticality.as_deref())),
        ),
        sla_requirement: lower(
            env.and_then(|e| e.sla_requirement.as_deref())
                .or_else(|| business.and_then(|b| b.sla_requirement.as_deref())),
        ),
        priority: categorization
            .and_then(|c| c.priority.clone())
            .or_else(|| assignment.and_then(|a| a.priority.clone())),
        priority_score: categorization.and_then(|c| c.priority_score),
        // Neither CR shape carries a routing decision.
        routed_to_service: None,
        routing_priority: None,
        completed_at: st.completion_time.or(deleted_at).unwrap_or(now),
        status,
        error_message,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        trigger: Some(trigger),
        deleted_at,
        anomalies: Vec::new(),
    }
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

/// Whether the CR reached a terminal phase (its record can be written ahead of deletion).
pub fn is_terminal(sp: &SignalProcessing) -> bool {
    matches!(audit_status(sp, Trigger::Completion), AuditStatus::Completed | AuditStatus::Failed)
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

fn lower(s: Option<&str>) -> Option<String> {
    s.filter(|v| !v.is_empty()).map(str::to_lowercase)
}

/// A start after the end means the start was a fallback guess (e.g. creationTimestamp of a CR
/// re-created from a backup): it is dropped rather than stored as an impossible phase.
fn consistent(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    match (start, end) {
        (Some(s), Some(e)) if e < s => (None, end),
        _ => (start, end),
    }
}

/// end - start when both are known, else the CR's own duration.
fn phase_duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>, own: Option<GoDuration>) -> Option<GoDuration> {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => Some(GoDuration::between(s, e)),
        _ => own,
    }
}

fn phases(sp: &SignalProcessing, st: &SignalProcessingStatus) -> Vec<ProcessingPhase> {
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
    let (enrich_start, enrich_end) = consistent(enrich_start, enrich_end);
    let enriching = ProcessingPhase {
        phase: "enriching".into(),
        start_time: enrich_start,
        end_time: enrich_end,
        duration: phase_duration(enrich_start, enrich_end, enrichment.and_then(|e| e.duration)),
        enrichment_results: Some(EnrichmentPhaseResults {
            context_quality: enrichment.and_then(|e| e.enrichment_quality),
            context_size_bytes: enrichment.and_then(|e| e.context_size_bytes),
            context_sources: sp
                .spec
                .enrichment_config
                .as_ref()
                .and_then(|c| c.context_sources.as_ref())
                .map(|s| s.len() as i64),
            degraded_mode: degraded.or_else(|| enrichment.and_then(|e| e.enrichment_quality).map(|q| q < 0.8)),
        }),
        classification_results: None,
        categorization_results: None,
    };

    // Kubernaut today stamps only classifiedAt, so classification has an end but no known start.
    let class_start = st.classification_start_time.or(enrichment.and_then(|e| e.completed_at));
    let class_end = st.classification_end_time.or_else(|| env.and_then(|e| e.classified_at));
    let (class_start, class_end) = consistent(class_start, class_end);
    let classifying = ProcessingPhase {
        phase: "classifying".into(),
        start_time: class_start,
        end_time: class_end,
        duration: phase_duration(class_start, class_end, st.classification_duration),
        enrichment_results: None,
        classification_results: Some(ClassificationPhaseResults {
            environment: lower(env.and_then(|e| e.environment.as_deref())),
            confidence: env.and_then(|e| e.confidence),
            business_criticality: lower(
                env.and_then(|e| e.business_criticality.as_deref())
                    .or_else(|| st.business_classification.as_ref().and_then(|b| b.criticality.as_deref())),
            ),
            classification_method: env.and_then(|e| e.source.clone()),
        }),
        categorization_results: None,
    };

    let cat_start = st.categorization_start_time.or(class_end);
    let cat_end = st.categorization_end_time.or_else(|| assignment.and_then(|a| a.assigned_at));
    let (cat_start, cat_end) = consistent(cat_start, cat_end);
    let categorizing = ProcessingPhase {
        phase: "categorizing".into(),
        start_time: cat_start,
        end_time: cat_end,
        duration: phase_duration(cat_start, cat_end, st.categorization_duration),
        enrichment_results: None,
        classification_results: None,
        categorization_results: Some(CategorizationPhaseResults {
            priority: categorization
                .and_then(|c| c.priority.clone())
                .or_else(|| assignment.and_then(|a| a.priority.clone())),
            priority_score: categorization.and_then(|c| c.priority_score),
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
    fn a_fallback_start_after_the_end_is_dropped() {
        let mut sp = cr(fixture("design-doc.json"));
        sp.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t("2026-01-01T00:00:00Z")));
        let rec = build_record(&sp, Trigger::Deletion, now());
        let e = &rec.processing_phases[0];
        assert_eq!((e.start_time, e.end_time), (None, Some(t("2025-11-27T10:00:01.5Z"))));
        assert_eq!(e.duration, Some(GoDuration::from_nanos(1_500_000_000)));
        assert!(rec.validate().is_ok());
    }

    #[test]
    fn forced_trigger_wins() {
        let rec = build_record(&cr(fixture("kubernaut-today.json")), Trigger::Forced, now());
        assert_eq!(rec.status, AuditStatus::Forced);
        assert_eq!(rec.trigger, Some(Trigger::Forced));
    }
}
