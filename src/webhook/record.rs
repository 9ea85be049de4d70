//! An interim audit-record builder, until the integrator switches the webhook to
//! `audit::from_cr::build_record` (same signature, see [`RecordBuilder`]).

use chrono::{DateTime, Utc};

use crate::audit::{AuditStatus, SignalProcessingAudit, Trigger};
use crate::crd::SignalProcessing;

/// Builds the audit record of a CR; the webhook takes it as a value so it can be swapped.
pub type RecordBuilder = fn(&SignalProcessing, Trigger, DateTime<Utc>) -> SignalProcessingAudit;

pub fn interim_record(sp: &SignalProcessing, trigger: Trigger, now: DateTime<Utc>) -> SignalProcessingAudit {
    let status = sp.status.as_ref();
    let audit_status = match (trigger, sp.phase()) {
        (Trigger::Forced, _) => AuditStatus::Forced,
        (_, Some("Completed")) => AuditStatus::Completed,
        (_, Some("Failed")) => AuditStatus::Failed,
        _ => AuditStatus::Incomplete,
    };
    let spec = &sp.spec;
    let remediation_id = spec
        .remediation_request_ref
        .as_ref()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        // Data Storage requires a remediation_id; the CR's own name is the closest stable key.
        .or_else(|| sp.metadata.name.clone())
        .unwrap_or_default();
    let uid = sp.metadata.uid.clone().unwrap_or_default();
    SignalProcessingAudit {
        id: uid.clone(),
        remediation_id,
        signal_fingerprint: spec.signal.as_ref().and_then(|s| s.fingerprint.clone()).unwrap_or_default(),
        processing_phases: Vec::new(),
        enrichment_quality: None,
        enrichment_sources: None,
        context_size_bytes: None,
        environment: None,
        confidence: None,
        business_criticality: None,
        sla_requirement: None,
        priority: None,
        priority_score: None,
        routed_to_service: None,
        routing_priority: None,
        completed_at: status.and_then(|s| s.completion_time).unwrap_or(now),
        status: audit_status,
        error_message: status.and_then(|s| s.failure_info.as_ref()).and_then(|f| f.error.clone()),
        namespace: sp.metadata.namespace.clone(),
        name: sp.metadata.name.clone(),
        uid: Some(uid),
        trigger: Some(trigger),
        deleted_at: matches!(trigger, Trigger::Deletion | Trigger::Forced).then_some(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forced_trigger_gives_forced_status_and_uid_is_the_id() {
        let sp: SignalProcessing = serde_json::from_value(json!({
            "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
            "metadata": { "name": "a", "namespace": "n", "uid": "u-1" },
            "spec": { "remediationRequestRef": { "name": "rr" }, "signal": { "fingerprint": "fp" } },
            "status": { "phase": "Completed" }
        }))
        .unwrap();
        let now = Utc::now();
        let r = interim_record(&sp, Trigger::Forced, now);
        assert_eq!(
            (r.id.as_str(), r.status, r.remediation_id.as_str()),
            ("u-1", AuditStatus::Forced, "rr")
        );
        assert_eq!(interim_record(&sp, Trigger::Deletion, now).status, AuditStatus::Completed);
        assert!(r.validate().is_ok());
    }
}
