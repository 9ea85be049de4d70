//! The API-server audit policy the project ships (manifests/audit/policy.yaml), read the way
//! kube-apiserver reads it: the first rule that matches a request decides its level.

use serde_json::Value;

fn policy() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/audit/policy.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn listed(list: Option<&Value>, item: &str) -> bool {
    list.and_then(Value::as_array)
        .is_none_or(|l| l.iter().any(|v| v == item || v == "*"))
}

/// The level of a request on `resource` (with `/subresource`) of group kubernaut.ai.
fn level(policy: &Value, verb: &str, resource: &str) -> String {
    for rule in policy["rules"].as_array().unwrap() {
        let verbs = rule.get("verbs");
        let resources = rule["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["group"] == "kubernaut.ai" && listed(r.get("resources"), resource));
        if listed(verbs, verb) && resources {
            return rule["level"].as_str().unwrap().to_string();
        }
    }
    "None".into()
}

#[test]
fn status_writes_of_signalprocessings_are_logged_at_metadata_level() {
    let p = policy();
    for verb in ["patch", "update"] {
        assert_eq!(level(&p, verb, "signalprocessings/status"), "Metadata", "{verb} /status");
    }
    for verb in ["create", "update", "patch", "delete", "deletecollection"] {
        assert_eq!(level(&p, verb, "signalprocessings"), "Metadata", "{verb}");
    }
    // Reads stay out of the log (status carries the signal's data; Metadata never has bodies).
    for verb in ["get", "list", "watch"] {
        assert_eq!(level(&p, verb, "signalprocessings"), "None", "{verb}");
        assert_eq!(level(&p, verb, "signalprocessings/status"), "None", "{verb} /status");
    }
}
