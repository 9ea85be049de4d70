//! Kubernaut's unified audit event as it crosses the wire, one type for both directions: the
//! `AuditEventRequest` audit-guard POSTs and the `AuditEvent` the query API answers, with the
//! `SignalProcessingAuditPayload` as its `event_data`. Field names are the OpenAPI file's; what
//! the file gives as an enum is an enum here; an absent optional field is left out when sent
//! and a null one reads as absent (Kubernaut answers null where nothing was sent). Envelope
//! fields audit-guard neither sends nor compares (`actor_ip`, `cluster_id`, `retention_days` ...)
//! and those the query API adds beyond `event_id` (hashes, legal hold) are not read.

use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// The envelope.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Data Storage's id of a stored event (never sent).
    pub event_id: Option<String>,
    pub version: String,
    pub event_type: String,
    /// RFC 3339, kept as written: an amendment names its parent's time exactly as stored.
    pub event_timestamp: String,
    pub event_category: EventCategory,
    pub event_action: String,
    pub event_outcome: Outcome,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub correlation_id: String,
    pub namespace: Option<String>,
    pub error_message: Option<String>,
    pub parent_event_id: Option<String>,
    pub parent_event_date: Option<String>,
    pub event_data: Payload,
}

/// `SignalProcessingAuditPayload`: every field the schema has, so that an event read back is
/// compared on all of them. (An absent `Option` field reads as None.)
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Payload {
    pub event_type: PayloadType,
    pub phase: Phase,
    pub signal: String,
    pub severity: Option<Severity>,
    pub external_severity: Option<String>,
    pub normalized_severity: Option<Severity>,
    pub determination_source: Option<DeterminationSource>,
    pub policy_hash: Option<String>,
    pub environment: Option<Environment>,
    pub environment_source: Option<EnvironmentSource>,
    pub priority: Option<Priority>,
    pub priority_source: Option<PrioritySource>,
    pub criticality: Option<Criticality>,
    pub sla_requirement: Option<String>,
    pub has_owner_chain: Option<bool>,
    pub owner_chain_length: Option<i64>,
    pub degraded_mode: Option<bool>,
    pub duration_ms: Option<i64>,
    pub has_namespace: Option<bool>,
    pub has_pod: Option<bool>,
    pub has_deployment: Option<bool>,
    pub business_unit: Option<String>,
    pub from_phase: Option<String>,
    pub to_phase: Option<String>,
    pub signal_mode: Option<SignalMode>,
    pub source_signal_name: Option<String>,
    pub error: Option<String>,
}

/// The enum value spelled `s` exactly as the schema spells it; None when the enum has no such value.
pub fn enum_value<T: DeserializeOwned>(s: &str) -> Option<T> {
    T::deserialize(StrDeserializer::<ValueError>::new(s)).ok()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventCategory {
    Gateway,
    Notification,
    Analysis,
    AiAgent,
    SignalProcessing,
    Workflow,
    WorkflowExecution,
    Orchestration,
    Approval,
    Effectiveness,
    ActionType,
    ApiFrontend,
    Security,
    AgentSession,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Pending,
}

/// The payload's discriminator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PayloadType {
    #[default]
    #[serde(rename = "signalprocessing.signal.processed")]
    SignalProcessed,
    #[serde(rename = "signalprocessing.phase.transition")]
    PhaseTransition,
    #[serde(rename = "signalprocessing.classification.decision")]
    ClassificationDecision,
    #[serde(rename = "signalprocessing.business.classified")]
    BusinessClassified,
    #[serde(rename = "signalprocessing.enrichment.completed")]
    EnrichmentCompleted,
    #[serde(rename = "signalprocessing.error.occurred")]
    ErrorOccurred,
}

/// The payload's `phase` (the first, `Pending`, is the default).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Pending,
    Enriching,
    Classifying,
    Categorizing,
    Completed,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Enriching,
        Phase::Classifying,
        Phase::Categorizing,
        Phase::Completed,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Enriching => "Enriching",
            Phase::Classifying => "Classifying",
            Phase::Categorizing => "Categorizing",
            Phase::Completed => "Completed",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Warning,
    Info,
    Unknown,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeterminationSource {
    RegoPolicy,
    Fallback,
    Default,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Staging,
    Development,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentSource {
    Rego,
    Labels,
    Default,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    P0,
    P1,
    P2,
    P3,
    P4,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PrioritySource {
    Rego,
    Severity,
    Default,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    Critical,
    High,
    Warning,
    Low,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignalMode {
    Reactive,
    Proactive,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enum_values_are_spelled_as_the_schema_spells_them() {
        assert_eq!(enum_value::<Severity>("critical"), Some(Severity::Critical));
        assert_eq!(enum_value::<Severity>("Critical"), None, "exact spelling only");
        assert_eq!(enum_value::<Priority>("P4"), Some(Priority::P4));
        assert_eq!(enum_value::<Priority>("P9"), None);
        assert_eq!(
            enum_value::<DeterminationSource>("rego-policy"),
            Some(DeterminationSource::RegoPolicy)
        );
        assert_eq!(
            enum_value::<EventCategory>("workflowexecution"),
            Some(EventCategory::WorkflowExecution)
        );
        assert_eq!(enum_value::<EventCategory>("aiagent"), Some(EventCategory::AiAgent));
        assert_eq!(
            enum_value::<PayloadType>("signalprocessing.signal.processed"),
            Some(PayloadType::SignalProcessed)
        );
        for p in Phase::ALL {
            assert_eq!(enum_value::<Phase>(p.as_str()), Some(p));
        }
    }

    #[test]
    fn a_stored_event_reads_with_nulls_as_absent_and_sends_only_what_is_present() {
        let stored = json!({
            "event_id": "e-1", "version": "1.0", "event_type": "signalprocessing.signal.processed",
            "event_timestamp": "2026-01-01T00:00:00Z", "event_category": "signalprocessing",
            "event_action": "completed", "event_outcome": "success", "correlation_id": "rr-1",
            "namespace": null, "event_hash": "ab", "legal_hold": false,
            "event_data": { "event_type": "signalprocessing.signal.processed", "phase": "Completed", "signal": "s",
                "severity": null, "has_pod": true }
        });
        let ev: AuditEvent = serde_json::from_value(stored).unwrap();
        assert_eq!(ev.namespace, None);
        assert_eq!(ev.event_data.severity, None);
        assert_eq!(ev.event_data.has_pod, Some(true));
        let sent = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            sent,
            json!({
                "event_id": "e-1", "version": "1.0", "event_type": "signalprocessing.signal.processed",
                "event_timestamp": "2026-01-01T00:00:00Z", "event_category": "signalprocessing",
                "event_action": "completed", "event_outcome": "success", "correlation_id": "rr-1",
                "event_data": { "event_type": "signalprocessing.signal.processed", "phase": "Completed", "signal": "s", "has_pod": true }
            })
        );
        let bad = json!({ "event_type": "signalprocessing.signal.processed", "phase": "Validating", "signal": "s" });
        assert!(serde_json::from_value::<Payload>(bad).is_err(), "a phase outside the enum");
    }
}
