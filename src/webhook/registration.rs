//! The Mutating- and ValidatingWebhookConfigurations that put the webhook in the API
//! server's path. One definition serves the quickstart, the tests and the benchmarks;
//! `manifests/base/webhook-configurations.yaml` carries the same rules (a unit test keeps
//! the two in step).
//!
//! `matchConditions` send the API server only the requests whose decision is not a foregone
//! "allow": the webhook would answer the others the same way, but during a mass cleanup each
//! skipped call is one less round trip per object on the API server's hot path. No identity
//! is exempt: the controller's own removals are checked too (Data Storage must hold the
//! record), so a token for its ServiceAccount cannot strip the finalizer unseen.
//!
//! The shipped configurations have no `namespaceSelector`: every namespace is covered, the
//! webhook's own included (it only matches SignalProcessings, so no bootstrap deadlock).

use serde_json::{json, Value};

use super::{MUTATE_PATH, VALIDATE_PATH};
use crate::crd::FINALIZER;

pub const MUTATING_WEBHOOK_NAME: &str = "mutate.signalprocessing.audit.kubernaut.ai";
pub const VALIDATING_WEBHOOK_NAME: &str = "validate.signalprocessing.audit.kubernaut.ai";

/// CEL: does `obj` carry the audit finalizer?
fn carries_finalizer(obj: &str) -> String {
    format!("(has({obj}.metadata.finalizers) && {obj}.metadata.finalizers.exists(f, f == '{FINALIZER}'))")
}

/// Match conditions of the mutating webhook: nothing is ever added to a deleting object.
pub fn mutating_match_conditions() -> Value {
    json!([{ "name": "not-being-deleted", "expression": "!has(object.metadata.deletionTimestamp)" }])
}

/// Match conditions of the validating webhook: a DELETE of an object without the finalizer
/// (its record must be stored first), or an UPDATE that takes the finalizer off, by anyone.
pub fn validating_match_conditions() -> Value {
    let old = carries_finalizer("oldObject");
    let new = carries_finalizer("object");
    json!([{
        "name": "unguarded-delete-or-finalizer-removal",
        "expression": format!("request.operation == 'DELETE' ? !{old} : ({old} && !{new})")
    }])
}

fn webhook(name: &str, client_config: Value, operations: &[&str], namespace_selector: &Option<Value>, match_conditions: Value) -> Value {
    let mut hook = json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "NoneOnDryRun",
        "failurePolicy": "Fail",
        "timeoutSeconds": 10,
        "clientConfig": client_config,
        "matchConditions": match_conditions,
        "rules": [{
            "apiGroups": ["kubernaut.ai"], "apiVersions": ["v1alpha1"], "resources": ["signalprocessings"],
            "operations": operations, "scope": "Namespaced"
        }]
    });
    if let Some(selector) = namespace_selector {
        hook["namespaceSelector"] = selector.clone();
    }
    hook
}

/// Both configurations, named `name`, calling the webhook at `base_url` (e.g.
/// `https://127.0.0.1:9443`) with `ca_bundle` (base64 PEM), for namespaces matched by
/// `namespace_selector` (None: every namespace, as shipped).
pub fn url_configurations(name: &str, base_url: &str, ca_bundle: &str, namespace_selector: Option<Value>) -> (Value, Value) {
    let client_config = |path: &str| json!({ "url": format!("{base_url}{path}"), "caBundle": ca_bundle });
    let mut mutating = webhook(
        MUTATING_WEBHOOK_NAME,
        client_config(MUTATE_PATH),
        &["CREATE", "UPDATE"],
        &namespace_selector,
        mutating_match_conditions(),
    );
    mutating["reinvocationPolicy"] = json!("IfNeeded");
    let validating = webhook(
        VALIDATING_WEBHOOK_NAME,
        client_config(VALIDATE_PATH),
        &["UPDATE", "DELETE"],
        &namespace_selector,
        validating_match_conditions(),
    );
    (
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": { "name": name }, "webhooks": [mutating]
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": { "name": name }, "webhooks": [validating]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped manifests say what the generated configurations say.
    #[test]
    fn manifests_match_the_generated_configurations() {
        let text = include_str!("../../manifests/base/webhook-configurations.yaml");
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
            .map(|d| serde_yaml::with::singleton_map_recursive::deserialize(d).unwrap())
            .collect();
        let (mutating, validating) = url_configurations("audit-guard", "https://x", "", None);
        for (shipped, generated) in docs.iter().zip([&mutating, &validating]) {
            let (s, g) = (&shipped["webhooks"][0], &generated["webhooks"][0]);
            assert_eq!(shipped["kind"], generated["kind"]);
            for key in [
                "name",
                "admissionReviewVersions",
                "sideEffects",
                "failurePolicy",
                "rules",
                "matchConditions",
                "reinvocationPolicy",
                "namespaceSelector",
            ] {
                assert_eq!(s[key], g[key], "{} {key}", shipped["kind"]);
            }
            assert_eq!(
                s["clientConfig"]["service"]["path"],
                g["clientConfig"]["url"].as_str().unwrap().trim_start_matches("https://x")
            );
        }
    }

    /// Every namespace is covered and no identity is exempt from the validating webhook.
    #[test]
    fn no_namespace_and_no_identity_is_exempt() {
        let (mutating, validating) = url_configurations("audit-guard", "https://x", "", None);
        for config in [&mutating, &validating] {
            assert!(config["webhooks"][0].get("namespaceSelector").is_none(), "{config}");
        }
        let conditions = validating_match_conditions().to_string();
        assert!(conditions.contains(FINALIZER));
        assert!(!conditions.contains("userInfo"), "{conditions}");
    }
}
