//! The SignalProcessing custom resource (kubernaut.ai/v1alpha1).
//!
//! The types accept two shapes of the same CR: Kubernaut's CRD as it ships today
//! (startTime, completionTime, environmentClassification, priorityAssignment,
//! businessClassification, failureInfo, conditions) and the design document's
//! (enrichmentResults, classification/categorization start and end times, categorization).
//! Every field is optional so that either shape deserializes, and spec and status preserve
//! unknown fields so that nothing a newer Kubernaut writes is pruned by our CRD.
//!
//! `skip_serializing_none` leaves absent fields out of what we write. A field with its own
//! `schema_with` also says `serde(default)`: schemars cannot see the `Option` through it and
//! would otherwise mark the field required.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

use crate::duration::GoDuration;

/// The finalizer audit-guard owns.
pub const FINALIZER: &str = "kubernaut.ai/audit-persistence";
/// Set, in the same patch that removes the finalizer, to the stored audit record's id.
pub const ANNOTATION_RECORD_ID: &str = "audit.kubernaut.ai/record-id";
/// Set, in the same patch that removes the finalizer, to when the record was stored.
pub const ANNOTATION_PERSISTED_AT: &str = "audit.kubernaut.ai/persisted-at";

#[skip_serializing_none]
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
    pub remediation_request_ref: Option<RemediationRequestRef>,
    pub signal: Option<Signal>,
    pub enrichment_config: Option<EnrichmentConfig>,
    pub times_out_at: Option<DateTime<Utc>>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestRef {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
    pub uid: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    pub fingerprint: Option<String>,
    pub name: Option<String>,
    pub severity: Option<String>,
    #[serde(rename = "type")]
    pub signal_type: Option<String>,
    pub source: Option<String>,
    pub target_type: Option<String>,
    pub target_resource: Option<TargetResource>,
    pub received_time: Option<DateTime<Utc>>,
    pub firing_time: Option<DateTime<Utc>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub provider_data: Option<String>,
    #[serde(rename = "clusterID")]
    pub cluster_id: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetResource {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EnrichmentConfig {
    pub enable_cluster_state: Option<bool>,
    pub enable_historical: Option<bool>,
    pub enable_metrics: Option<bool>,
    #[serde(default)]
    #[schemars(schema_with = "crate::duration::int_or_string")]
    pub timeout: Option<GoDuration>,
    /// The design document counts these for `contextSources`.
    #[serde(default)]
    #[schemars(schema_with = "free_form_array")]
    pub context_sources: Option<Vec<Value>>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SignalProcessingStatus {
    /// Pending, Enriching, Classifying, Categorizing, Completed or Failed.
    pub phase: Option<String>,
    pub observed_generation: Option<i64>,
    pub start_time: Option<DateTime<Utc>>,
    pub completion_time: Option<DateTime<Utc>>,
    pub conditions: Option<Vec<Condition>>,
    pub environment_classification: Option<EnvironmentClassification>,
    pub priority_assignment: Option<PriorityAssignment>,
    pub business_classification: Option<BusinessClassification>,
    pub failure_info: Option<FailureInfo>,
    #[serde(default)]
    #[schemars(schema_with = "free_form_object")]
    pub kubernetes_context: Option<Value>,
    #[serde(default)]
    #[schemars(schema_with = "free_form_object")]
    pub signal_classification: Option<Value>,

    // The design document's shape.
    pub enrichment_results: Option<EnrichmentResults>,
    pub classification_start_time: Option<DateTime<Utc>>,
    pub classification_end_time: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schemars(schema_with = "crate::duration::int_or_string")]
    pub classification_duration: Option<GoDuration>,
    pub categorization_start_time: Option<DateTime<Utc>>,
    pub categorization_end_time: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schemars(schema_with = "crate::duration::int_or_string")]
    pub categorization_duration: Option<GoDuration>,
    pub categorization: Option<Categorization>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default, rename = "type")]
    pub condition_type: String,
    #[serde(default)]
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<DateTime<Utc>>,
    pub observed_generation: Option<i64>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentClassification {
    pub environment: Option<String>,
    pub source: Option<String>,
    pub classified_at: Option<DateTime<Utc>>,
    /// Design document only.
    pub confidence: Option<f64>,
    /// Design document only.
    pub business_criticality: Option<String>,
    /// Design document only.
    pub sla_requirement: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriorityAssignment {
    pub priority: Option<String>,
    pub source: Option<String>,
    pub policy_name: Option<String>,
    pub assigned_at: Option<DateTime<Utc>>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BusinessClassification {
    pub business_unit: Option<String>,
    pub criticality: Option<String>,
    pub service_owner: Option<String>,
    pub sla_requirement: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    pub consecutive_failures: Option<i64>,
    pub error: Option<String>,
    pub last_failure_time: Option<DateTime<Utc>>,
}

/// The design document's `status.enrichmentResults`.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EnrichmentResults {
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schemars(schema_with = "crate::duration::int_or_string")]
    pub duration: Option<GoDuration>,
    pub enrichment_quality: Option<f64>,
    pub enrichment_sources: Option<Vec<String>>,
    pub context_size_bytes: Option<i64>,
}

/// The design document's `status.categorization` (DD-CATEGORIZATION-001).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Categorization {
    pub priority: Option<String>,
    pub priority_score: Option<i64>,
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

    /// Completed or Failed (Kubernaut writes them capitalised; case is not trusted).
    pub fn is_terminal(&self) -> bool {
        self.phase()
            .is_some_and(|p| p.eq_ignore_ascii_case("completed") || p.eq_ignore_ascii_case("failed"))
    }
}

pub fn has_finalizer(finalizers: Option<&[String]>) -> bool {
    finalizers.is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// A JSON pointer to one of our own paths.
pub(crate) fn json_pointer(path: &str) -> json_patch::jsonptr::PointerBuf {
    // Every path we build starts with '/', so parsing cannot fail; fall back to root otherwise.
    json_patch::jsonptr::PointerBuf::parse(path).unwrap_or_default()
}

/// Whether [`add_finalizer_patch`] first tests the list it appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListGuard {
    /// An API update: a concurrent change makes the patch fail (the next reconcile sees the
    /// new list) instead of overwriting someone else's finalizer.
    TestFirst,
    /// An admission patch applies to exactly the object it was computed for: no test, and the
    /// patch is the same for every object, so it can be encoded once.
    None,
}

/// The one JSON Patch that adds [`FINALIZER`] to an object whose list is `finalizers`, for the
/// controller and the mutating webhook alike.
pub fn add_finalizer_patch(finalizers: Option<&[String]>, guard: ListGuard) -> json_patch::Patch {
    use json_patch::{AddOperation, PatchOperation, TestOperation};
    let append = |list: &[String]| {
        let mut ops = Vec::with_capacity(2);
        if guard == ListGuard::TestFirst {
            ops.push(PatchOperation::Test(TestOperation {
                path: json_pointer("/metadata/finalizers"),
                value: Value::from(list.to_vec()),
            }));
        }
        ops.push(PatchOperation::Add(AddOperation {
            path: json_pointer("/metadata/finalizers/-"),
            value: Value::from(FINALIZER),
        }));
        ops
    };
    json_patch::Patch(match finalizers {
        Some(list) if !list.is_empty() || guard == ListGuard::TestFirst => append(list),
        _ => vec![PatchOperation::Add(AddOperation {
            path: json_pointer("/metadata/finalizers"),
            value: Value::from(vec![FINALIZER]),
        })],
    })
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
