//! The SignalProcessing custom resource (kubernaut.ai/v1alpha1).
//!
//! The types accept two shapes of the same CR: Kubernaut's CRD as it ships today
//! (startTime, completionTime, environmentClassification, priorityAssignment,
//! businessClassification, failureInfo, conditions) and the design document's
//! (enrichmentResults, classification/categorization start and end times, categorization).
//! Every field is optional so that either shape deserializes, and spec and status preserve
//! unknown fields so that nothing a newer Kubernaut writes is pruned by our CRD.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::GoDuration;

/// The finalizer audit-guard owns.
pub const FINALIZER: &str = "kubernaut.ai/audit-persistence";
/// Set, in the same patch that removes the finalizer, to the stored audit record's id.
pub const ANNOTATION_RECORD_ID: &str = "audit.kubernaut.ai/record-id";
/// Set, in the same patch that removes the finalizer, to when the record was stored.
pub const ANNOTATION_PERSISTED_AT: &str = "audit.kubernaut.ai/persisted-at";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubernaut.ai",
    version = "v1alpha1",
    kind = "SignalProcessing",
    plural = "signalprocessings",
    singular = "signalprocessing",
    shortname = "sp",
    namespaced,
    status = "SignalProcessingStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".status.environmentClassification.environment"}"#,
    printcolumn = r#"{"name":"Priority","type":"string","jsonPath":".status.priorityAssignment.priority"}"#,
    printcolumn = r#"{"name":"Audit","type":"string","jsonPath":".metadata.annotations.audit\\.kubernaut\\.ai/record-id","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SignalProcessingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_request_ref: Option<RemediationRequestRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment_config: Option<EnrichmentConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times_out_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub signal_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource: Option<TargetResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_data: Option<String>,
    #[serde(default, rename = "clusterID", skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetResource {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EnrichmentConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_cluster_state: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_historical: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_metrics: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::int_or_string")]
    pub timeout: Option<GoDuration>,
    /// The design document counts these for `contextSources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_array")]
    pub context_sources: Option<Vec<Value>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SignalProcessingStatus {
    /// Pending, Enriching, Classifying, Categorizing, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_classification: Option<EnvironmentClassification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_assignment: Option<PriorityAssignment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_classification: Option<BusinessClassification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_info: Option<FailureInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub kubernetes_context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub signal_classification: Option<Value>,

    // The design document's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment_results: Option<EnrichmentResults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification_start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification_end_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::int_or_string")]
    pub classification_duration: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorization_start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorization_end_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::int_or_string")]
    pub categorization_duration: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorization: Option<Categorization>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default, rename = "type")]
    pub condition_type: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentClassification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classified_at: Option<DateTime<Utc>>,
    /// Design document only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Design document only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_criticality: Option<String>,
    /// Design document only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_requirement: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriorityAssignment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BusinessClassification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_requirement: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<DateTime<Utc>>,
}

/// The design document's `status.enrichmentResults`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EnrichmentResults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::int_or_string")]
    pub duration: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment_quality: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment_sources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size_bytes: Option<i64>,
}

/// The design document's `status.categorization` (DD-CATEGORIZATION-001).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Categorization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_score: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorization_source: Option<String>,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn free_form_array(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}

impl SignalProcessing {
    pub fn has_finalizer(&self) -> bool {
        has_finalizer(self.metadata.finalizers.as_deref())
    }

    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    pub fn phase(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.phase.as_deref())
    }
}

pub fn has_finalizer(finalizers: Option<&[String]>) -> bool {
    finalizers.is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// The CRD as YAML, the way `audit-guard crd` prints it.
pub fn crd_yaml() -> anyhow::Result<String> {
    use kube::CustomResourceExt;
    Ok(serde_yaml::to_string(&SignalProcessing::crd())?)
}

#[cfg(test)]
mod tests {
    /// `manifests/components/crd/crd.yaml` is what `audit-guard crd` prints (`make manifests` regenerates it).
    #[test]
    fn shipped_crd_is_the_generated_one() {
        let shipped = include_str!("../manifests/components/crd/crd.yaml");
        assert_eq!(
            shipped,
            super::crd_yaml().unwrap(),
            "run `make manifests` to regenerate the shipped CRD"
        );
    }
}

/// Objects for the unit tests of the modules that decide over SignalProcessings.
#[cfg(test)]
pub mod test_support {
    use super::SignalProcessing;
    use serde_json::{json, Value};

    /// A SignalProcessing with this metadata and, if given, this status phase.
    pub fn sp(meta: Value, phase: Option<&str>) -> SignalProcessing {
        let mut v = json!({ "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": meta, "spec": {} });
        if let Some(p) = phase {
            v["status"] = json!({ "phase": p });
        }
        serde_json::from_value(v).expect("a SignalProcessing")
    }
}
