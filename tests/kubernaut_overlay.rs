//! manifests/overlays/kubernaut rendered with kubectl's kustomize: audit-guard for a cluster
//! that runs Kubernaut's own Data Storage. It writes events to Kubernaut's Service, with a token
//! Kubernaut's TokenReview (which names no audience) accepts, as an identity of its own that is
//! bound to Kubernaut's client role and nothing else, and ships no Data Storage of its own.

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
    // The token sent is the Data Storage identity's, from its ServiceAccount-token Secret (no
    // audience, as Kubernaut's TokenReview wants), not a projection of the pod's own
    // ServiceAccount: the controller's token never goes to Data Storage.
    let token = volumes.iter().find(|v| v["name"] == "datastorage-token").unwrap();
    assert_eq!(token["secret"]["secretName"], CLIENT_TOKEN_SECRET, "{token}");
    assert_eq!(token["secret"]["items"], serde_json::json!([{ "key": "token", "path": "token" }]));
    assert!(
        !volumes.iter().any(|v| v.to_string().contains("serviceAccountToken")),
        "no token of the pod's own ServiceAccount is projected for Data Storage: {volumes:?}"
    );
    assert_eq!(
        pod["serviceAccountName"], "audit-guard",
        "the controller keeps its own identity for the API"
    );
    // The plain-HTTP choice is explicit.
    assert_eq!(get("DATASTORAGE_ALLOW_PLAIN_HTTP_TOKEN"), Some("true"));

    let binding = objs
        .iter()
        .find(|o| o["kind"] == "RoleBinding" && o["metadata"]["name"] == "audit-guard-data-storage-client")
        .expect("a RoleBinding to Kubernaut's client role");
    assert_eq!(binding["metadata"]["namespace"], "kubernaut");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "data-storage-client");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{ "kind": "ServiceAccount", "name": CLIENT_SA, "namespace": "audit-guard" }])
    );
}

const CLIENT_SA: &str = "audit-guard-kubernaut-client";
const CLIENT_TOKEN_SECRET: &str = "audit-guard-kubernaut-client-token";

/// Whether a binding's subjects take in `audit-guard:<CLIENT_SA>` (by name, or by a group every
/// ServiceAccount of the namespace, or every ServiceAccount, is in).
fn binds_client(binding: &Value) -> bool {
    binding["subjects"].as_array().into_iter().flatten().any(|s| {
        let ns = s["namespace"]
            .as_str()
            .unwrap_or(binding["metadata"]["namespace"].as_str().unwrap_or(""));
        match s["kind"].as_str() {
            Some("ServiceAccount") => s["name"] == CLIENT_SA && ns == "audit-guard",
            Some("Group") => [
                "system:serviceaccounts",
                "system:serviceaccounts:audit-guard",
                "system:authenticated",
            ]
            .contains(&s["name"].as_str().unwrap_or("")),
            _ => false,
        }
    })
}

#[test]
fn the_kubernaut_data_storage_identity_is_its_own_and_has_no_api_rights() {
    let objs = rendered();
    let sa = objs
        .iter()
        .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == CLIENT_SA)
        .expect("the Data Storage identity's ServiceAccount");
    assert_eq!(sa["metadata"]["namespace"], "audit-guard");
    assert_eq!(sa["automountServiceAccountToken"], false, "no pod runs as it");
    let secret = objs
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == CLIENT_TOKEN_SECRET)
        .expect("its token Secret");
    assert_eq!(secret["metadata"]["namespace"], "audit-guard");
    assert_eq!(secret["type"], "kubernetes.io/service-account-token");
    assert_eq!(secret["metadata"]["annotations"]["kubernetes.io/service-account.name"], CLIENT_SA);
    assert!(
        secret.get("data").is_none() && secret.get("stringData").is_none(),
        "the API server fills it in"
    );

    // Its one binding is to Kubernaut's client role (a ClusterRole Kubernaut ships, not this
    // overlay); no role rendered here is bound to it, so it has no rights on SignalProcessings.
    let bindings: Vec<&Value> = objs
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("RoleBinding" | "ClusterRoleBinding")) && binds_client(o))
        .collect();
    let refs: Vec<(String, String)> = bindings
        .iter()
        .map(|b| {
            (
                b["roleRef"]["kind"].as_str().unwrap().into(),
                b["roleRef"]["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        [("ClusterRole".to_string(), "data-storage-client".to_string())],
        "{bindings:?}"
    );
    assert!(
        !objs
            .iter()
            .any(|o| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")) && o["metadata"]["name"] == "data-storage-client"),
        "Kubernaut's role is Kubernaut's"
    );
    // The controller's ServiceAccount (patch/delete on SignalProcessings) is not the client.
    let controller_rules: Vec<&Value> = objs
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")))
        .filter(|o| o.to_string().contains("signalprocessings"))
        .collect();
    assert!(!controller_rules.is_empty(), "the controller's rights are rendered");
    for role in controller_rules {
        let name = role["metadata"]["name"].as_str().unwrap();
        assert!(!refs.iter().any(|(_, r)| r == name), "{name} is bound to the Data Storage identity");
    }
}
