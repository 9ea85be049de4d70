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

pub mod cached;

/// The finalizer audit-guard owns.
pub const FINALIZER: &str = "kubernaut.ai/audit-persistence";
/// Set, in the same patch that removes the finalizer, to the stored audit record's id.
pub const ANNOTATION_RECORD_ID: &str = "audit.kubernaut.ai/record-id";
/// Set, in the same patch that removes the finalizer, to when the record was stored.
pub const ANNOTATION_PERSISTED_AT: &str = "audit.kubernaut.ai/persisted-at";
/// The record's receipt from the transparency log (own API mode), set in the same patch that
/// removes the finalizer: its log index, and the record id that entry is for.
pub const ANNOTATION_LOG_INDEX: &str = "audit-guard.io/log-index";
pub const ANNOTATION_LOG_RECORD_ID: &str = "audit-guard.io/record-id";
/// Events mode: when Kubernaut's Data Storage queued (202) the CR's event (see
/// [`crate::kubernaut_api::mark`]).
pub const ANNOTATION_QUEUED_AT: &str = "audit.kubernaut.ai/event-queued-at";

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
    /// How many `contextSources` there were, once [`slim`] dropped the list itself.
    #[serde(skip)]
    pub context_sources_dropped: Option<usize>,
}

impl EnrichmentConfig {
    /// The number of `contextSources`, whether the list is kept or was slimmed away.
    pub fn context_source_count(&self) -> Option<usize> {
        self.context_sources.as_ref().map(Vec::len).or(self.context_sources_dropped)
    }
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
    /// How many entries `kubernetesContext.ownerChain` had, once [`slim`] dropped it.
    #[serde(skip)]
    pub owner_chain_dropped: Option<usize>,
}

impl SignalProcessingStatus {
    /// The number of entries of `kubernetesContext.ownerChain`, when it is a list (kept or
    /// slimmed away).
    pub fn owner_chain_length(&self) -> Option<usize> {
        let kept = self
            .kubernetes_context
            .as_ref()
            .and_then(|c| c.get("ownerChain"))
            .and_then(Value::as_array);
        kept.map(Vec::len).or(self.owner_chain_dropped)
    }
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

/// The annotations audit-guard writes (the record id, when it was stored, the queued-event
/// mark): the only ones the cache keeps.
pub const OWN_ANNOTATIONS: [&str; 3] = [ANNOTATION_RECORD_ID, ANNOTATION_PERSISTED_AT, ANNOTATION_QUEUED_AT];

/// Reduces an object to what the controller reads from its cache: the audit record and the
/// event facts built from it, the decisions, and the patches (finalizers, resourceVersion,
/// whether annotations exist). Everything else (labels, managedFields, the signal's labels and
/// annotations, other owners and conditions, free-form status beyond the keys read) is
/// dropped, and lists that are only counted keep their count: what one cached object costs
/// follows from what its record carries, not from what users put in the object.
/// The record built from the slimmed object is the record built from the whole one (a unit
/// test holds that for arbitrary objects).
pub fn slim(sp: &mut SignalProcessing) {
    let meta = &mut sp.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        // Kept as a (possibly empty) map: a patch adds to it only when it exists.
        annotations.retain(|k, _| OWN_ANNOTATIONS.contains(&k.as_str()));
    }
    if let Some(owners) = meta.owner_references.as_mut() {
        // The record names the first RemediationRequest owner.
        let first = owners.iter().position(|o| o.kind == "RemediationRequest");
        *owners = first.map(|i| owners.swap_remove(i)).into_iter().collect();
    }
    let spec = &mut sp.spec;
    spec.times_out_at = None;
    if let Some(r) = spec.remediation_request_ref.as_mut() {
        *r = RemediationRequestRef {
            name: std::mem::take(&mut r.name),
            ..Default::default()
        };
    }
    if let Some(s) = spec.signal.as_mut() {
        *s = Signal {
            fingerprint: s.fingerprint.take(),
            name: s.name.take(),
            severity: s.severity.take(),
            ..Default::default()
        };
    }
    if let Some(c) = spec.enrichment_config.as_mut() {
        *c = EnrichmentConfig {
            context_sources_dropped: c.context_source_count(),
            ..Default::default()
        };
    }
    let Some(st) = sp.status.as_mut() else { return };
    if let Some(conditions) = st.conditions.as_mut() {
        // The record reads the first Ready condition's message.
        let ready = conditions.iter().position(|c| c.condition_type == "Ready");
        *conditions = ready.map(|i| conditions.swap_remove(i)).into_iter().collect();
    }
    st.owner_chain_dropped = st.owner_chain_length();
    if let Some(context) = st.kubernetes_context.as_mut() {
        keep_scalars(context, &["degradedMode"]);
    }
    if let Some(classification) = st.signal_classification.as_mut() {
        keep_scalars(classification, &["severity", "policyHash", "signalMode", "sourceSignalName"]);
    }
}

/// Keeps only these keys of a free-form object, and only where they hold a string or a bool
/// (what is read from them); anything but an object becomes null (nothing is read from it).
fn keep_scalars(value: &mut Value, keys: &[&str]) {
    match value {
        Value::Object(map) => map.retain(|k, v| keys.contains(&k.as_str()) && (v.is_string() || v.is_boolean())),
        other => *other = Value::Null,
    }
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
    use crate::patch::PatchBuilder;
    match finalizers {
        Some(list) if !list.is_empty() || guard == ListGuard::TestFirst => {
            let patch = PatchBuilder::new();
            let patch = match guard {
                ListGuard::TestFirst => patch.test("/metadata/finalizers", list.to_vec()),
                ListGuard::None => patch,
            };
            patch.add("/metadata/finalizers/-", FINALIZER)
        }
        _ => PatchBuilder::new().add("/metadata/finalizers", vec![FINALIZER]),
    }
    .build()
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

/// The slimmed object the controller caches builds the same record, facts, decisions and
/// patches as the whole object.
#[cfg(test)]
mod slim_tests {
    use super::*;
    use crate::audit::from_cr::{build_record, finished_at};
    use crate::audit::Trigger;
    use crate::controller::decisions::{decide, release_patch};
    use crate::kubernaut_api::facts::CrFacts;
    use proptest::prelude::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Everything the controller derives from a cached object, serialised.
    fn derived(sp: &SignalProcessing) -> Vec<String> {
        let now = at("2025-11-28T00:00:00Z");
        let mut out = vec![];
        for trigger in [Trigger::Completion, Trigger::Deletion, Trigger::Forced] {
            let record = build_record(sp, trigger, now);
            out.push(serde_json::to_string(&record).unwrap());
        }
        out.push(format!("{:?}", CrFacts::of(sp)));
        out.push(format!("{:?}", finished_at(sp, now)));
        for enqueued in [false, true] {
            out.push(format!("{:?}", decide(sp, enqueued, now)));
        }
        out.push(serde_json::to_string(&release_patch(sp, "id", now, None)).unwrap());
        out.push(serde_json::to_string(&crate::kubernaut_api::mark::mark_patch(sp, now)).unwrap());
        out.push(format!("{:?}", crate::kubernaut_api::mark::queued_at(sp)));
        out.push(format!("{:?}", sp.metadata.finalizers));
        out
    }

    fn check(v: Value) -> Result<(), TestCaseError> {
        let full: SignalProcessing = serde_json::from_value(v.clone()).unwrap();
        let mut slimmed = full.clone();
        slim(&mut slimmed);
        prop_assert_eq!(derived(&full), derived(&slimmed));
        let decoded: cached::SlimSignalProcessing = serde_json::from_value(v).unwrap();
        prop_assert_eq!(
            format!("{:?}", decoded.0),
            format!("{slimmed:?}"),
            "decoded slim is the whole object slimmed"
        );
        let mut twice = slimmed.clone();
        slim(&mut twice);
        prop_assert_eq!(format!("{twice:?}"), format!("{slimmed:?}"), "slimming is idempotent");
        Ok(())
    }

    fn entries(prefix: &'static str, n: usize) -> serde_json::Map<String, Value> {
        (0..n).map(|i| (format!("{prefix}-{i}"), json!(format!("v{i}")))).collect()
    }

    #[derive(Debug, Clone)]
    struct Shape {
        design_doc: bool,
        context_sources: Option<(usize, bool)>,
        labels: usize,
        annotations: Vec<(u8, String)>,
        owners: Vec<(bool, String)>,
        conditions: Vec<(u8, String)>,
        owner_chain: Option<Option<usize>>,
        degraded: u8,
        classification: Vec<(u8, bool)>,
        phase: u8,
        deleting: bool,
        finalizers: Vec<bool>,
        error: String,
        managed_fields: bool,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        let text = "[a-z ]{0,6}";
        (
            (any::<bool>(), prop::option::of((0usize..3000, any::<bool>())), 0usize..3000),
            prop::collection::vec((0u8..4, text), 0..4),
            prop::collection::vec((any::<bool>(), text), 0..4),
            prop::collection::vec((0u8..3, text), 0..4),
            (prop::option::of(prop::option::of(0usize..2000)), 0u8..3),
            prop::collection::vec((0u8..5, any::<bool>()), 0..6),
            (
                0u8..5,
                any::<bool>(),
                prop::collection::vec(any::<bool>(), 0..3),
                text,
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (design_doc, context_sources, labels),
                    annotations,
                    owners,
                    conditions,
                    (owner_chain, degraded),
                    classification,
                    (phase, deleting, finalizers, error, managed_fields),
                )| Shape {
                    design_doc,
                    context_sources,
                    labels,
                    annotations,
                    owners,
                    conditions,
                    owner_chain,
                    degraded,
                    classification,
                    phase,
                    deleting,
                    finalizers,
                    error: error.to_string(),
                    managed_fields,
                },
            )
    }

    fn object(s: &Shape) -> Value {
        let mut v = fixture(if s.design_doc { "design-doc.json" } else { "kubernaut-today.json" });
        let meta = &mut v["metadata"];
        meta["uid"] = json!("u-1");
        meta["namespace"] = json!("prod");
        meta["resourceVersion"] = json!("42");
        meta["creationTimestamp"] = json!("2025-11-27T10:00:00Z");
        meta["labels"] = Value::Object(entries("label", s.labels));
        if !s.annotations.is_empty() {
            let keys = [
                "user/note",
                crate::kubernaut_api::mark::ANNOTATION_QUEUED_AT,
                ANNOTATION_RECORD_ID,
                "audit.kubernaut.ai/x",
            ];
            let values = ["2025-11-27T10:30:00Z", "not a time"];
            let a: serde_json::Map<String, Value> = s
                .annotations
                .iter()
                .map(|(k, t)| {
                    (
                        keys[*k as usize].to_string(),
                        json!(if t.len() % 2 == 0 { values[0] } else { values[1] }),
                    )
                })
                .collect();
            meta["annotations"] = Value::Object(a);
        }
        if !s.owners.is_empty() {
            let owners: Vec<Value> = s
                .owners
                .iter()
                .map(|(rr, name)| {
                    let kind = if *rr { "RemediationRequest" } else { "Deployment" };
                    json!({ "apiVersion": "v1", "kind": kind, "name": format!("o{name}"), "uid": "x" })
                })
                .collect();
            meta["ownerReferences"] = json!(owners);
        }
        if s.managed_fields {
            meta["managedFields"] = json!([{ "manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                "fieldsV1": { "f:metadata": { "f:labels": Value::Object(entries("f:label", s.labels)) } } }]);
        }
        if s.deleting {
            meta["deletionTimestamp"] = json!("2025-11-27T11:00:00Z");
        }
        let finalizers: Vec<&str> = s
            .finalizers
            .iter()
            .map(|ours| if *ours { FINALIZER } else { "other.io/f" })
            .collect();
        meta["finalizers"] = json!(finalizers);
        if let Some((n, empty)) = s.context_sources {
            let item = if empty {
                json!({})
            } else {
                json!({ "kind": "metrics", "url": "http://x" })
            };
            v["spec"]["enrichmentConfig"]["contextSources"] = json!(vec![item; n]);
        }
        v["spec"]["signal"]["labels"] = Value::Object(entries("signal", s.labels));
        v["spec"]["signal"]["annotations"] = Value::Object(entries("annotation", s.labels / 2));
        let st = &mut v["status"];
        let phase = ["Completed", "Failed", "failed", "Enriching", ""][s.phase as usize];
        st["phase"] = json!(phase);
        st["failureInfo"] = json!({ "error": s.error });
        let conditions: Vec<Value> = s
            .conditions
            .iter()
            .map(|(t, m)| {
                let kind = ["Ready", "Enriched", "ready"][*t as usize];
                json!({ "type": kind, "status": "False", "message": m })
            })
            .collect();
        st["conditions"] = json!(conditions);
        let mut context = json!({ "namespace": { "labels": Value::Object(entries("ns", s.labels)) } });
        match s.owner_chain {
            Some(Some(n)) => context["ownerChain"] = json!(vec![json!({ "kind": "ReplicaSet", "name": "r" }); n]),
            Some(None) => context["ownerChain"] = json!("not a list"),
            None => {}
        }
        match s.degraded {
            0 => context["degradedMode"] = json!(true),
            1 => context["degradedMode"] = json!("yes"),
            _ => {}
        }
        st["kubernetesContext"] = context;
        let keys = ["severity", "policyHash", "signalMode", "sourceSignalName", "extra"];
        let mut classification = json!({ "big": Value::Object(entries("c", s.labels)) });
        for (k, as_text) in &s.classification {
            classification[keys[*k as usize]] = if *as_text { json!(format!("t{k}")) } else { json!(7) };
        }
        st["signalClassification"] = classification;
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn the_slimmed_object_builds_the_same_record_facts_decisions_and_patches(s in shape()) {
            check(object(&s))?;
        }
    }

    #[test]
    fn both_fixtures_and_a_bare_object_slim_to_the_same_record() {
        for v in [
            fixture("kubernaut-today.json"),
            fixture("design-doc.json"),
            json!({ "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": { "name": "bare" }, "spec": {} }),
        ] {
            check(v).unwrap();
        }
    }

    /// The largest shapes the API server accepts (about 1 MB each): a contextSources list of
    /// empty objects, and 20,000 signal labels. What is cached of them is a few hundred bytes.
    #[test]
    fn a_megabyte_of_contextsources_or_labels_is_cached_as_a_count() {
        let shape = |n_sources: usize, labels: usize| Shape {
            design_doc: false,
            context_sources: Some((n_sources, true)),
            labels,
            annotations: vec![(1, String::new())],
            owners: vec![(false, "a".into()), (true, "b".into())],
            conditions: vec![(1, "x".into()), (0, "y".into())],
            owner_chain: Some(Some(30_000)),
            degraded: 0,
            classification: vec![(0, true)],
            phase: 0,
            deleting: true,
            finalizers: vec![true],
            error: String::new(),
            managed_fields: true,
        };
        for s in [shape(330_000, 0), shape(0, 20_000)] {
            let v = object(&s);
            assert!(serde_json::to_vec(&v).unwrap().len() > 900_000);
            check(v.clone()).unwrap();
            let mut sp: SignalProcessing = serde_json::from_value(v).unwrap();
            slim(&mut sp);
            let kept = serde_json::to_vec(&sp).unwrap().len();
            assert!(kept < 2048, "{kept} bytes kept: {}", serde_json::to_string(&sp).unwrap());
            let config = sp.spec.enrichment_config.as_ref().unwrap();
            assert_eq!(config.context_source_count(), Some(s.context_sources.unwrap().0));
            assert_eq!(sp.status.as_ref().unwrap().owner_chain_length(), Some(30_000));
        }
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
