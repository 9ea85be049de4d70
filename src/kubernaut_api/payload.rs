//! The audit record as one of Kubernaut's unified audit events: the envelope, and the record
//! mapped into the `SignalProcessingAuditPayload`'s own fields with only values its enums
//! allow. Kubernaut's decoder keeps those fields alone (unknown keys are dropped), so nothing
//! else is sent. docs/audit-mapping.md tables the mapping field by field.

use chrono::{DateTime, SecondsFormat, Utc};

use super::event::{enum_value, AuditEvent, EventCategory, Outcome, Payload, PayloadType, Phase};
use super::facts::CrFacts;
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::{AuditStatus, ProcessingPhase, SignalProcessingAudit};

/// The envelope's `event_type` (the payload's discriminator says the same, as an enum).
pub const EVENT_TYPE: &str = "signalprocessing.signal.processed";
pub const EVENT_VERSION: &str = "1.0";
/// `actor_id` of every event audit-guard writes for a CR's record (a break-glass event names its user).
pub const ACTOR_ID: &str = "audit-guard";
pub const RESOURCE_TYPE: &str = "SignalProcessing";
/// `event_action` of a break-glass event (a record's action is its status).
pub const BREAK_GLASS_ACTION: &str = "break_glass";
/// `actor_type` of an event audit-guard writes for a record, and of a break-glass event.
pub const ACTOR_SERVICE: &str = "service";
pub const ACTOR_USER: &str = "user";

/// Where the event's `phase` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseSource {
    /// The CR's own `status.phase` (one of the enum's values, in any letter case).
    Cr,
    /// The record's status (`completed` / `failed`).
    Status,
    /// The last processing phase the CR's timestamps show started.
    Timestamps,
    /// Nothing says the CR got further than its first phase.
    Initial,
}

/// The payload's `phase`: the CR's own when it is one the enum allows; else `Completed` /
/// `Failed` from the record's status; else the last processing phase the record shows the CR
/// reached (classifying or categorizing with a start or an end; enriching with an end — its
/// start falls back to the CR's creation, which says nothing about processing); else `Pending`.
pub fn payload_phase(cr_phase: Option<&str>, status: AuditStatus, phases: &[ProcessingPhase]) -> (Phase, PhaseSource) {
    if let Some(p) = cr_phase.and_then(|p| Phase::ALL.into_iter().find(|v| v.as_str().eq_ignore_ascii_case(p.trim()))) {
        return (p, PhaseSource::Cr);
    }
    match status {
        AuditStatus::Completed => return (Phase::Completed, PhaseSource::Status),
        AuditStatus::Failed => return (Phase::Failed, PhaseSource::Status),
        AuditStatus::Incomplete | AuditStatus::Forced => {}
    }
    let reached = phases.iter().rev().find_map(|p| match p.phase.as_str() {
        "enriching" if p.end_time.is_some() => Some(Phase::Enriching),
        "classifying" if p.start_time.is_some() || p.end_time.is_some() => Some(Phase::Classifying),
        "categorizing" if p.start_time.is_some() || p.end_time.is_some() => Some(Phase::Categorizing),
        _ => None,
    });
    match reached {
        Some(p) => (p, PhaseSource::Timestamps),
        None => (Phase::Pending, PhaseSource::Initial),
    }
}

/// `event_outcome`: how processing ended, as far as the phase says.
pub fn outcome(phase: Phase) -> Outcome {
    match phase {
        Phase::Completed => Outcome::Success,
        Phase::Failed => Outcome::Failure,
        _ => Outcome::Pending,
    }
}

/// `event_timestamp`: when audit-guard writes the event. Kubernaut refuses events more than
/// 7 days old, and a record may be older (a CR completed 8 days ago is deleted today); the
/// write time is always inside the window, whatever the CR says.
pub fn event_timestamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The classifier's own source name in the payload's `environment_source` enum (Kubernaut's CRD
/// documents `namespace-labels`, `rego-inference`, `default`).
fn environment_source(source: &str) -> Option<&'static str> {
    match source {
        "rego" | "rego-inference" | "rego-policy" => Some("rego"),
        "labels" | "namespace-labels" => Some("labels"),
        "default" => Some("default"),
        _ => None,
    }
}

/// The priority's source in the payload's `priority_source` enum (Kubernaut's CRD documents
/// `rego-policy`, `severity-fallback`, `default`).
fn priority_source(source: &str) -> Option<&'static str> {
    match source {
        "rego" | "rego-policy" => Some("rego"),
        "severity" | "severity-fallback" => Some("severity"),
        "default" => Some("default"),
        _ => None,
    }
}

fn is_policy_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The record (and `facts`, what its CR said beyond it) in the `SignalProcessingAuditPayload`'s
/// own fields; a value the payload's enum does not allow is left out rather than sent
/// (Kubernaut would refuse the whole event).
pub fn payload(record: &SignalProcessingAudit, facts: &CrFacts) -> Payload {
    let (phase, _) = payload_phase(facts.phase.as_deref(), record.status, &record.processing_phases);
    let signal = facts
        .signal_name
        .clone()
        .or_else(|| Some(record.signal_fingerprint.clone()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| record.name.clone().unwrap_or_else(|| record.id.clone()));
    let mut p = Payload {
        event_type: PayloadType::SignalProcessed,
        phase,
        signal,
        ..Default::default()
    };
    p.severity = facts.severity.as_deref().and_then(enum_value);
    p.normalized_severity = p.severity;
    p.external_severity = facts.external_severity.clone();
    p.policy_hash = facts.policy_hash.clone().filter(|h| is_policy_hash(h));
    p.signal_mode = facts.signal_mode.as_deref().and_then(enum_value);
    p.source_signal_name = facts.source_signal_name.clone();
    p.environment = record.environment.as_deref().and_then(enum_value);
    let classification = record.processing_phases.iter().find_map(|p| p.classification_results.as_ref());
    p.environment_source = classification
        .and_then(|c| c.classification_method.as_deref())
        .and_then(environment_source)
        .and_then(enum_value);
    p.priority = record.priority.as_deref().and_then(enum_value);
    let categorization = record.processing_phases.iter().find_map(|p| p.categorization_results.as_ref());
    p.priority_source = categorization
        .and_then(|c| c.source.as_deref())
        .and_then(priority_source)
        .and_then(enum_value);
    p.criticality = record.business_criticality.as_deref().and_then(enum_value);
    p.sla_requirement = record.sla_requirement.clone().filter(|s| !s.is_empty());
    p.business_unit = facts.business_unit.clone();
    p.has_owner_chain = facts.owner_chain_length.map(|n| n > 0);
    p.owner_chain_length = facts.owner_chain_length;
    let enriching = record.processing_phases.iter().find(|p| p.phase == "enriching");
    p.degraded_mode = enriching.and_then(|p| p.enrichment_results.as_ref()).and_then(|r| r.degraded_mode);
    p.duration_ms = enriching
        .and_then(|p| p.duration)
        .filter(|d| d.nanos >= 0)
        .map(|d| d.nanos / 1_000_000);
    p.error = record.error_message.clone().filter(|e| !e.is_empty());
    p
}

/// The CR's record as an event written now. Its `event_action` is the record's status
/// (`completed`, `failed`, `incomplete`, `forced`); `actor_id` `audit-guard` and `resource_id`
/// the CR's uid tell it from the event Kubernaut's own controller writes.
pub fn event_for(record: &SignalProcessingAudit, facts: &CrFacts, now: DateTime<Utc>) -> AuditEvent {
    let data = payload(record, facts);
    AuditEvent {
        event_id: None,
        version: EVENT_VERSION.into(),
        event_type: EVENT_TYPE.into(),
        event_timestamp: event_timestamp(now),
        event_category: EventCategory::SignalProcessing,
        event_action: record.status.as_str().into(),
        event_outcome: outcome(data.phase),
        actor_type: Some(ACTOR_SERVICE.into()),
        actor_id: Some(ACTOR_ID.into()),
        resource_type: Some(RESOURCE_TYPE.into()),
        resource_id: Some(record.id.clone()),
        correlation_id: record.remediation_id.clone(),
        namespace: record.namespace.clone(),
        error_message: record.error_message.clone().filter(|e| !e.is_empty()),
        parent_event_id: None,
        parent_event_date: None,
        event_data: data,
    }
}

/// `ours` as an amendment of `existing` (a different event already stored for the CR): the
/// events API has no amendment endpoint, so the link is the envelope's parent fields.
pub fn amendment(mut ours: AuditEvent, existing: &AuditEvent) -> AuditEvent {
    if let Some(id) = &existing.event_id {
        ours.parent_event_id = Some(id.clone());
        ours.parent_event_date = Some(existing.event_timestamp.clone());
    }
    ours
}

/// A break-glass use as an event of the CR: its actor is the user; the payload is the CR's
/// state at the removal (from the `forced` record built from the live object, and its facts).
pub fn break_glass_event_for(event: &BreakGlassEvent, forced: &SignalProcessingAudit, facts: &CrFacts) -> AuditEvent {
    AuditEvent {
        event_action: BREAK_GLASS_ACTION.into(),
        event_outcome: Outcome::Success,
        actor_type: Some(ACTOR_USER.into()),
        actor_id: Some(event.user.clone()),
        resource_id: Some(event.uid.clone()),
        namespace: Some(event.namespace.clone()),
        ..event_for(forced, facts, event.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{CategorizationPhaseResults, ClassificationPhaseResults, EnrichmentPhaseResults};
    use crate::duration::GoDuration;
    use serde_json::{json, Value};

    /// As sent.
    fn sent(v: impl serde::Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    fn phase(name: &str, started: bool) -> ProcessingPhase {
        ProcessingPhase {
            phase: name.into(),
            start_time: started.then(|| "2025-11-27T10:00:00Z".parse().unwrap()),
            end_time: None,
            duration: None,
            enrichment_results: None,
            classification_results: None,
            categorization_results: None,
        }
    }

    #[test]
    fn phase_is_the_crs_else_the_closest_honest_value() {
        use AuditStatus::*;
        let none = [phase("enriching", false), phase("classifying", false), phase("categorizing", false)];
        // A CR without status: its enrichment "start" is its creation, which shows nothing.
        let created = [phase("enriching", true), phase("classifying", false), phase("categorizing", false)];
        let mut enriched = created.clone();
        enriched[0].end_time = Some("2025-11-27T10:00:01Z".parse().unwrap());
        let classifying = [phase("enriching", true), phase("classifying", true), phase("categorizing", false)];
        /// (case, the CR's phase, the record's status, its phases, the payload's phase and its source)
        type Case<'a> = (&'a str, Option<&'a str>, AuditStatus, &'a [ProcessingPhase], (&'a str, PhaseSource));
        let cases: Vec<Case> = vec![
            ("the CR's own", Some("Enriching"), Incomplete, &none, ("Enriching", PhaseSource::Cr)),
            (
                "any letter case",
                Some(" completed "),
                Completed,
                &none,
                ("Completed", PhaseSource::Cr),
            ),
            (
                "forced keeps the CR's",
                Some("Completed"),
                Forced,
                &none,
                ("Completed", PhaseSource::Cr),
            ),
            ("pending", Some("Pending"), Incomplete, &classifying, ("Pending", PhaseSource::Cr)),
            (
                "unknown phase, completed",
                Some("Validating"),
                Completed,
                &none,
                ("Completed", PhaseSource::Status),
            ),
            ("no phase, failed", None, Failed, &none, ("Failed", PhaseSource::Status)),
            (
                "no phase, timestamps",
                None,
                Incomplete,
                &classifying,
                ("Classifying", PhaseSource::Timestamps),
            ),
            (
                "unknown phase, forced",
                Some("Validating"),
                Forced,
                &classifying,
                ("Classifying", PhaseSource::Timestamps),
            ),
            ("nothing at all", None, Incomplete, &none, ("Pending", PhaseSource::Initial)),
            ("created only", None, Incomplete, &created, ("Pending", PhaseSource::Initial)),
            ("created only, forced", None, Forced, &created, ("Pending", PhaseSource::Initial)),
            (
                "enrichment ended",
                None,
                Incomplete,
                &enriched,
                ("Enriching", PhaseSource::Timestamps),
            ),
            ("no phases", None, Forced, &[], ("Pending", PhaseSource::Initial)),
        ];
        for (name, cr, status, phases, (phase, source)) in cases {
            let want = (enum_value::<Phase>(phase).expect("a phase"), source);
            assert_eq!(payload_phase(cr, status, phases), want, "{name}");
        }
        assert_eq!(
            [Phase::Completed, Phase::Failed, Phase::Pending, Phase::Enriching].map(outcome),
            [Outcome::Success, Outcome::Failure, Outcome::Pending, Outcome::Pending]
        );
    }

    fn record() -> SignalProcessingAudit {
        serde_json::from_value(json!({
            "id": "u-1", "remediation_id": "rr-1", "signal_fingerprint": "fp-1", "processing_phases": [],
            "completed_at": "2025-11-27T10:00:02Z", "status": "completed", "namespace": "prod", "name": "sp-1"
        }))
        .unwrap()
    }

    #[test]
    fn a_cr_without_status_is_pending_whichever_path_records_it() {
        let sp: crate::crd::SignalProcessing = serde_json::from_value(json!({
            "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
            "metadata": { "name": "a", "namespace": "ns", "uid": "u-1",
                "creationTimestamp": "2026-01-01T10:00:00Z", "deletionTimestamp": "2026-01-01T10:05:00Z" },
            "spec": { "remediationRequestRef": { "name": "rr" } }
        }))
        .unwrap();
        let now: DateTime<Utc> = "2026-01-01T10:06:00Z".parse().unwrap();
        for trigger in [crate::audit::Trigger::Deletion, crate::audit::Trigger::Forced] {
            let record = crate::audit::from_cr::build_record(&sp, trigger, now);
            assert!(
                record.processing_phases[0].start_time.is_some(),
                "the creation stands in for the start"
            );
            assert_eq!(payload(&record, &CrFacts::of(&sp)).phase, Phase::Pending, "{trigger:?}");
        }
    }

    #[test]
    fn only_values_the_enums_allow_are_sent() {
        let mut r = record();
        r.environment = Some("test".into());
        r.priority = Some("P9".into());
        r.business_criticality = Some("medium".into());
        let facts = CrFacts {
            severity: Some("sev1".into()),
            signal_mode: Some("predictive".into()),
            policy_hash: Some("not-a-hash".into()),
            ..Default::default()
        };
        let p = sent(payload(&r, &facts));
        for key in [
            "environment",
            "priority",
            "criticality",
            "severity",
            "normalized_severity",
            "signal_mode",
            "policy_hash",
        ] {
            assert!(p.get(key).is_none(), "{key} in {p}");
        }
        r.environment = Some("production".into());
        r.priority = Some("P1".into());
        r.business_criticality = Some("high".into());
        let facts = CrFacts {
            severity: Some("critical".into()),
            signal_mode: Some("reactive".into()),
            policy_hash: Some("a".repeat(64)),
            ..Default::default()
        };
        let p = sent(payload(&r, &facts));
        assert_eq!(p["environment"], "production");
        assert_eq!(p["priority"], "P1");
        assert_eq!(p["criticality"], "high");
        assert_eq!(p["severity"], "critical");
        assert_eq!(p["normalized_severity"], "critical");
        assert_eq!(p["signal_mode"], "reactive");
        assert_eq!(p["policy_hash"], "a".repeat(64));
    }

    #[test]
    fn the_record_maps_into_the_payloads_own_fields() {
        let mut r = record();
        r.status = AuditStatus::Failed;
        r.error_message = Some("enrichment timed out".into());
        r.sla_requirement = Some("gold".into());
        let mut enriching = phase("enriching", true);
        enriching.duration = Some(GoDuration { nanos: 1_500_000_000 });
        enriching.enrichment_results = Some(EnrichmentPhaseResults {
            degraded_mode: Some(true),
            ..Default::default()
        });
        let mut classifying = phase("classifying", true);
        classifying.classification_results = Some(ClassificationPhaseResults {
            classification_method: Some("namespace-labels".into()),
            ..Default::default()
        });
        let mut categorizing = phase("categorizing", true);
        categorizing.categorization_results = Some(CategorizationPhaseResults {
            source: Some("severity-fallback".into()),
            ..Default::default()
        });
        r.processing_phases = vec![enriching, classifying, categorizing];
        let facts = CrFacts {
            phase: Some("Failed".into()),
            signal_name: Some("HighMemory".into()),
            business_unit: Some("payments".into()),
            owner_chain_length: Some(0),
            external_severity: Some("Sev2".into()),
            ..Default::default()
        };
        let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let ev = sent(event_for(&r, &facts, at));
        assert_eq!(ev["event_timestamp"], "2026-01-01T00:00:00.000Z");
        assert_eq!(ev["event_action"], "failed");
        assert_eq!(ev["event_outcome"], "failure");
        assert_eq!(ev["error_message"], "enrichment timed out");
        assert_eq!(ev["namespace"], "prod");
        assert_eq!(ev["resource_id"], "u-1");
        assert_eq!(ev["correlation_id"], "rr-1");
        assert_eq!(ev["actor_id"], ACTOR_ID);
        let d = &ev["event_data"];
        assert_eq!(
            d,
            &json!({
                "event_type": EVENT_TYPE, "phase": "Failed", "signal": "HighMemory", "external_severity": "Sev2",
                "environment_source": "labels", "priority_source": "severity", "sla_requirement": "gold",
                "business_unit": "payments", "has_owner_chain": false, "owner_chain_length": 0,
                "degraded_mode": true, "duration_ms": 1500, "error": "enrichment timed out"
            })
        );
        // Without the CR's facts (a record read back): the fingerprint stands in for the signal.
        assert_eq!(payload(&r, &CrFacts::default()).signal, "fp-1");
    }

    #[test]
    fn amendments_and_break_glass_events_are_marked_in_the_envelope() {
        let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let ours = event_for(&record(), &CrFacts::default(), at);
        let mut existing = ours.clone();
        existing.event_id = Some("0b7c5a4e-8f55-4f53-9d0c-0d2f7e3f1a11".into());
        existing.event_timestamp = "2025-12-31T00:00:00Z".into();
        let amended = sent(amendment(ours.clone(), &existing));
        assert_eq!(amended["parent_event_id"], "0b7c5a4e-8f55-4f53-9d0c-0d2f7e3f1a11");
        assert_eq!(amended["parent_event_date"], "2025-12-31T00:00:00Z");
        assert_eq!(amendment(ours.clone(), &ours), ours, "no id: nothing to link");

        let bg = BreakGlassEvent {
            id: "review-1".into(),
            user: "bob".into(),
            groups: vec!["audit-guard:break-glass".into()],
            extra: Default::default(),
            namespace: "prod".into(),
            name: "sp-1".into(),
            uid: "u-1".into(),
            at,
            confirmed: None,
        };
        let mut forced = record();
        forced.status = AuditStatus::Forced;
        let ev = sent(break_glass_event_for(&bg, &forced, &CrFacts::default()));
        assert_eq!(ev["event_action"], BREAK_GLASS_ACTION);
        assert_eq!(ev["actor_type"], "user");
        assert_eq!(ev["actor_id"], "bob");
        assert_eq!(ev["resource_id"], "u-1");
        assert_eq!(ev["correlation_id"], "rr-1");
        assert_eq!(ev["event_data"]["phase"], "Pending");
    }
}
