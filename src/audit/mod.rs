//! The audit record: the design document's `SignalProcessingAudit` / `ProcessingPhase`.
//!
//! JSON keys are binding (including the camelCase keys of the phase results). As the
//! design document's Go encoder would, every key is emitted, null where the CR does not
//! carry the value, except `error_message`, which is omitted when empty. Phase durations
//! go out as integer nanoseconds (Go's `time.Duration`) and come in as either that or a
//! Go duration string. Extra keys (namespace, name, uid, trigger, deleted_at) say where
//! the record came from; `id` is the CR's `metadata.uid`, so one CR yields one record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod from_cr;

use crate::duration::{self, GoDuration};

/// Every key of the design document's schema; all of them are always emitted
/// (`error_message` only when non-empty, so it is not listed).
pub const DESIGN_KEYS: &[&str] = &[
    "id",
    "remediation_id",
    "signal_fingerprint",
    "processing_phases",
    "enrichment_quality",
    "enrichment_sources",
    "context_size_bytes",
    "environment",
    "confidence",
    "business_criticality",
    "sla_requirement",
    "priority",
    "priority_score",
    "routed_to_service",
    "routing_priority",
    "completed_at",
    "status",
];

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SignalProcessingAudit {
    pub id: String,
    pub remediation_id: String,
    pub signal_fingerprint: String,
    pub processing_phases: Vec<ProcessingPhase>,

    // Enrichment results
    #[serde(default)]
    pub enrichment_quality: Option<f64>,
    #[serde(default)]
    pub enrichment_sources: Option<Vec<String>>,
    #[serde(default)]
    pub context_size_bytes: Option<i64>,

    // Classification results
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub business_criticality: Option<String>,
    #[serde(default)]
    pub sla_requirement: Option<String>,

    // Categorization results (DD-CATEGORIZATION-001)
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub priority_score: Option<i64>,

    // Routing decision
    #[serde(default)]
    pub routed_to_service: Option<String>,
    #[serde(default)]
    pub routing_priority: Option<i64>,

    // Metadata
    pub completed_at: DateTime<Utc>,
    pub status: AuditStatus,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub error_message: Option<String>,

    // Where the record came from (extra keys, not in the design document).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub trigger: Option<Trigger>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Values the CR carried that the schema cannot hold (out of range, negative, outside the
    /// accepted time window): stored as null in their field and listed here with the raw value,
    /// so that every record is storable and nothing is silently lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<Anomaly>,
}

/// One value the record could not hold as given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// JSON path of the field in the record, e.g. `confidence` or `processing_phases[1].duration`.
    pub field: String,
    /// The raw value the CR carried.
    pub value: serde_json::Value,
}

/// Times in a record must lie within this window around the moment Data Storage receives it
/// (Data Storage's defaults; the record builder keeps controller records inside it).
pub const TIME_WINDOW_PAST: std::time::Duration = std::time::Duration::from_secs(400 * 24 * 3600);
pub const TIME_WINDOW_FUTURE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

fn is_empty(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatus {
    Completed,
    Failed,
    /// Deleted before it finished processing.
    Incomplete,
    /// The finalizer was removed by break-glass, not by the controller.
    Forced,
}

impl AuditStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Incomplete => "incomplete",
            Self::Forced => "forced",
        }
    }
}

/// What made audit-guard write the record.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The CR reached Completed or Failed (buffered write).
    Completion,
    /// The CR is being deleted (synchronous write before the finalizer comes off).
    Deletion,
    /// A break-glass user removed the finalizer.
    Forced,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProcessingPhase {
    pub phase: String,
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default, with = "duration::nanos")]
    pub duration: Option<GoDuration>,
    #[serde(default, rename = "enrichmentResults", skip_serializing_if = "Option::is_none")]
    pub enrichment_results: Option<EnrichmentPhaseResults>,
    #[serde(default, rename = "classificationResults", skip_serializing_if = "Option::is_none")]
    pub classification_results: Option<ClassificationPhaseResults>,
    #[serde(default, rename = "categorizationResults", skip_serializing_if = "Option::is_none")]
    pub categorization_results: Option<CategorizationPhaseResults>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct EnrichmentPhaseResults {
    #[serde(default, rename = "contextQuality")]
    pub context_quality: Option<f64>,
    #[serde(default, rename = "contextSizeBytes")]
    pub context_size_bytes: Option<i64>,
    #[serde(default, rename = "contextSources")]
    pub context_sources: Option<i64>,
    #[serde(default, rename = "degradedMode")]
    pub degraded_mode: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ClassificationPhaseResults {
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default, rename = "businessCriticality")]
    pub business_criticality: Option<String>,
    #[serde(default, rename = "classificationMethod")]
    pub classification_method: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CategorizationPhaseResults {
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default, rename = "priorityScore")]
    pub priority_score: Option<i64>,
    #[serde(default)]
    pub source: Option<String>,
}

/// A record that parsed but breaks a rule; `field` is its JSON path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

pub const MAX_ID_LEN: usize = 128;

impl SignalProcessingAudit {
    /// Rules beyond the JSON shape, checked by Data Storage before anything is written.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.id.is_empty() {
            return Err(field_error("id", "must not be empty"));
        }
        if self.id.len() > MAX_ID_LEN || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            return Err(field_error(
                "id",
                format!("must be at most {MAX_ID_LEN} characters of [A-Za-z0-9-_.:]"),
            ));
        }
        if self.remediation_id.is_empty() {
            return Err(field_error("remediation_id", "must not be empty"));
        }
        for (field, value) in [("confidence", self.confidence), ("enrichment_quality", self.enrichment_quality)] {
            if let Some(v) = value {
                if !(0.0..=1.0).contains(&v) {
                    return Err(field_error(field, "must be between 0 and 1"));
                }
            }
        }
        if self.priority_score.is_some_and(|s| s < 0) {
            return Err(field_error("priority_score", "must not be negative"));
        }
        for (i, p) in self.processing_phases.iter().enumerate() {
            if p.phase.is_empty() {
                return Err(field_error(format!("processing_phases[{i}].phase"), "must not be empty"));
            }
            if p.duration.is_some_and(|d| d.nanos < 0) {
                return Err(field_error(format!("processing_phases[{i}].duration"), "must not be negative"));
            }
            if let (Some(s), Some(e)) = (p.start_time, p.end_time) {
                if e < s {
                    return Err(field_error(format!("processing_phases[{i}].end_time"), "is before start_time"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> serde_json::Value {
        json!({
            "id": "3f1c2b8e-0000-4000-8000-000000000001",
            "remediation_id": "rr-1",
            "signal_fingerprint": "fp",
            "processing_phases": [{ "phase": "enriching", "start_time": "2025-11-27T10:00:00Z", "end_time": "2025-11-27T10:00:01.5Z", "duration": "1.5s",
                                    "enrichmentResults": { "contextQuality": 0.9, "contextSizeBytes": 10, "contextSources": 2, "degradedMode": false } }],
            "completed_at": "2025-11-27T10:00:02Z",
            "status": "completed"
        })
    }

    #[test]
    fn emits_every_design_key_and_omits_only_empty_error_message() {
        let rec: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        let out = serde_json::to_value(&rec).unwrap();
        for key in DESIGN_KEYS {
            assert!(out.get(key).is_some(), "missing {key}");
        }
        assert!(out.get("error_message").is_none());
        assert_eq!(out["processing_phases"][0]["duration"], json!(1_500_000_000i64));
        assert!(out["processing_phases"][0].get("classificationResults").is_none());
    }

    #[test]
    fn accepts_nanoseconds_and_go_strings() {
        let mut v = minimal();
        v["processing_phases"][0]["duration"] = json!(1_500_000_000i64);
        let a: SignalProcessingAudit = serde_json::from_value(v).unwrap();
        let b: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn validation_names_the_field() {
        let mut rec: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        rec.confidence = Some(1.5);
        assert_eq!(rec.validate().unwrap_err().field, "confidence");
        rec.confidence = None;
        rec.id = String::new();
        assert_eq!(rec.validate().unwrap_err().field, "id");
    }

    #[test]
    fn unknown_status_is_rejected() {
        let mut v = minimal();
        v["status"] = json!("done");
        assert!(serde_json::from_value::<SignalProcessingAudit>(v).is_err());
    }
}

/// Why a record could not be confirmed as stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Retrying the same request cannot succeed (400, 413, 422): surface it loudly.
    #[error("audit record rejected: {0}")]
    Permanent(String),
    /// Retrying may succeed (network, timeout, 401, 403, 429, 5xx, 202 queued-not-stored).
    #[error("audit record not stored yet: {0}")]
    Transient(String),
}

/// Somewhere an audit record can be stored synchronously: `Ok` means Data Storage
/// confirmed the record is stored (a 201, or a 409 for the same id).
pub trait RecordSink: Send + Sync + 'static {
    fn store<'a>(&'a self, record: &'a SignalProcessingAudit) -> futures::future::BoxFuture<'a, Result<(), StoreError>>;
}
