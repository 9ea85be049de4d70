//! Who may reach Data Storage and the metrics ports, as the shipped NetworkPolicies say:
//! Prometheus is selected by its namespace AND its pod label, never by the label alone (a pod
//! labelled `app.kubernetes.io/name: prometheus` in any namespace is not admitted). Checked in
//! manifests/base and in the chart, whose namespace and labels are values (the drift test in
//! tests/helm_chart.rs compares the two renderings with the defaults).

#[path = "support/tools.rs"]
mod tools;

use serde_json::{json, Value};
use tools::*;

/// Every peer of every ingress rule of the NetworkPolicy `name` in `docs`.
fn peers<'a>(docs: &'a [Value], name: &str) -> Vec<&'a Value> {
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no NetworkPolicy {name}"));
    policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["from"].as_array().into_iter().flatten())
        .collect()
}

/// The peers that admit pods of other namespaces: each must name one namespace and pod labels.
fn cross_namespace(peers: &[&Value]) -> Vec<(Value, Value)> {
    peers
        .iter()
        .filter(|p| p.get("namespaceSelector").is_some())
        .map(|p| (p["namespaceSelector"].clone(), p["podSelector"].clone()))
        .collect()
}

fn prometheus_in(namespace: &str, labels: Value) -> Vec<(Value, Value)> {
    vec![(
        json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}}),
        json!({"matchLabels": labels}),
    )]
}

#[test]
fn the_manifests_admit_prometheus_only_from_the_monitoring_namespace() {
    let text = std::fs::read_to_string(repo().join("manifests/base/networkpolicy.yaml")).unwrap();
    let docs = yaml_docs(&text);
    let want = prometheus_in("monitoring", json!({"app.kubernetes.io/name": "prometheus"}));
    for name in ["audit-guard", "audit-guard-datastorage"] {
        assert_eq!(cross_namespace(&peers(&docs, name)), want, "{name}");
    }
}

#[test]
fn the_chart_admits_prometheus_from_the_configured_namespace_and_labels() {
    let docs = render_chart(&[]);
    let want = prometheus_in("monitoring", json!({"app.kubernetes.io/name": "prometheus"}));
    for name in ["audit-guard", "audit-guard-datastorage"] {
        assert_eq!(cross_namespace(&peers(&docs, name)), want, "{name} with the defaults");
    }

    let docs = render_chart(&[
        "--set",
        "networkPolicy.prometheus.namespace=observability",
        "--set",
        "networkPolicy.prometheus.podLabels.app=prom",
    ]);
    let want = prometheus_in("observability", json!({"app.kubernetes.io/name": "prometheus", "app": "prom"}));
    for name in ["audit-guard", "audit-guard-datastorage"] {
        assert_eq!(cross_namespace(&peers(&docs, name)), want, "{name}");
    }

    // Any namespace is not a namespace.
    for bad in [
        "networkPolicy.prometheus.namespace=",
        "networkPolicy.prometheus.namespace=Not_A_Name",
    ] {
        let out = helm_template(&["--set", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(err.contains("/networkPolicy/prometheus/namespace"), "{bad}: {err}");
    }
}
