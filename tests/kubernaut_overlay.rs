//! manifests/overlays/kubernaut rendered with kubectl's kustomize: audit-guard for a cluster
//! that runs Kubernaut's own Data Storage. It writes events to Kubernaut's Service, with a token
//! Kubernaut's TokenReview (which names no audience) accepts, as an identity bound to Kubernaut's
//! client role, and ships no Data Storage of its own.

#[path = "support/tools.rs"]
mod tools;

use serde_json::Value;

fn rendered() -> Vec<Value> {
    tools::render_overlay("kubernaut", env!("CARGO_BIN_EXE_audit-guard"))
}

fn env(pod: &Value) -> Vec<(String, String)> {
    pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("<from>").to_string(),
            )
        })
        .collect()
}

#[test]
fn the_kubernaut_overlay_writes_events_to_kubernauts_data_storage_and_ships_none() {
    let objs = rendered();
    let names: Vec<String> = objs
        .iter()
        .map(|o| format!("{} {}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect();
    let own: Vec<&String> = names.iter().filter(|n| n.contains("datastorage")).collect();
    assert!(own.is_empty(), "no Data Storage of audit-guard's own: {own:?}");
    for kept in [
        "Deployment audit-guard",
        "MutatingWebhookConfiguration audit-guard",
        "ValidatingWebhookConfiguration audit-guard",
        "Certificate audit-guard-webhook",
        "PrometheusRule audit-guard",
        "CustomResourceDefinition signalprocessings.kubernaut.ai",
    ] {
        assert!(names.iter().any(|n| n == kept), "{kept} missing: {names:?}");
    }

    let deployment = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let env = env(pod);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("DATASTORAGE_API"), Some("events"));
    // The Service Kubernaut's OpenAPI document names for the cluster.
    assert_eq!(
        get("DATASTORAGE_URL"),
        Some("http://data-storage-service.kubernaut.svc.cluster.local:8080")
    );
    assert_eq!(get("DATASTORAGE_CA_FILE"), None, "no CA of audit-guard's Data Storage");
    assert_eq!(
        get("DATASTORAGE_TOKEN_FILE"),
        Some("/var/run/secrets/audit-guard/datastorage/token")
    );
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(!volumes.iter().any(|v| v["name"] == "datastorage-ca"), "{volumes:?}");
    // Each volume once (the API server refuses a pod with two of a name), each mount backed by one.
    let mut vnames: Vec<&str> = volumes.iter().map(|v| v["name"].as_str().unwrap()).collect();
    vnames.sort();
    let count = vnames.len();
    vnames.dedup();
    assert_eq!(vnames.len(), count, "a volume named twice: {volumes:?}");
    for m in pod["containers"][0]["volumeMounts"].as_array().unwrap() {
        assert!(vnames.contains(&m["name"].as_str().unwrap()), "mount without a volume: {m}");
    }
    let token = volumes.iter().find(|v| v["name"] == "datastorage-token").unwrap();
    let sa_token = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(sa_token["path"], "token");
    assert!(
        sa_token.get("audience").is_none(),
        "Kubernaut's TokenReview names no audience: the token must be for the API server's own ({sa_token})"
    );

    let binding = objs
        .iter()
        .find(|o| o["kind"] == "RoleBinding" && o["metadata"]["name"] == "audit-guard-data-storage-client")
        .expect("a RoleBinding to Kubernaut's client role");
    assert_eq!(binding["metadata"]["namespace"], "kubernaut");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "data-storage-client");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{ "kind": "ServiceAccount", "name": "audit-guard", "namespace": "audit-guard" }])
    );
}
