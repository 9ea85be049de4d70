//! manifests/overlays/cloudnative-pg rendered with kubectl's kustomize: a CloudNativePG
//! `Cluster` of three instances with synchronous replication, and Data Storage trusting the
//! cluster's CA. The operator cannot run here; its CRD comes from its Go module (the version
//! docs/high-availability.md names), so the Cluster goes through the real API server's
//! validation against CloudNativePG's own schema, unknown fields refused, besides the field by
//! field checks of what docs/high-availability.md documents; every Kubernetes object the overlay
//! renders (Data Storage's Deployment and CronJob included) gets a server-side dry run too.

use crate::support;
use crate::tools;

use serde_json::Value;
use support::control_plane;

const CLUSTER: &str = "audit-guard-pg";
/// The CloudNativePG release whose Cluster CRD the overlay is checked against.
const CNPG_MODULE: &str = "github.com/cloudnative-pg/cloudnative-pg";
const CNPG_VERSION: &str = "v1.28.1";

fn rendered() -> Vec<Value> {
    tools::render_overlay("cloudnative-pg", env!("CARGO_BIN_EXE_audit-guard"))
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the overlay"))
}

fn db_ca_volume(pod: &Value) -> Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "db-ca")
        .cloned()
        .expect("a db-ca volume")
}

#[test]
fn the_cluster_has_three_instances_and_a_synchronous_standby() {
    let _cluster = support::cluster_shared_blocking();
    let docs = rendered();
    let cluster = named(&docs, "Cluster", CLUSTER);
    assert_eq!(cluster["apiVersion"], "postgresql.cnpg.io/v1");
    assert_eq!(cluster["metadata"]["namespace"], "audit-guard");
    let spec = &cluster["spec"];
    assert_eq!(spec["instances"], 3);
    let sync = &spec["postgresql"]["synchronous"];
    assert_eq!(sync["method"], "any", "{sync}");
    assert_eq!(sync["number"], 1, "{sync}");
    assert_eq!(sync["dataDurability"], "required", "{sync}");
    assert_eq!(spec["postgresql"]["parameters"]["synchronous_commit"], "on");
    assert_eq!(spec["enableSuperuserAccess"], false);
    assert_eq!(spec["bootstrap"]["initdb"]["database"], "audit_guard");
    assert_eq!(spec["bootstrap"]["initdb"]["owner"], "audit_guard");
    let roles = spec["managed"]["roles"].as_array().unwrap();
    let runtime = roles.iter().find(|r| r["name"] == "audit_guard_app").expect("the runtime role");
    assert_eq!(
        (&runtime["login"], &runtime["superuser"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    assert_eq!(spec["affinity"]["podAntiAffinityType"], "required");
}

#[test]
fn data_storage_trusts_the_clusters_ca_and_is_told_its_read_write_service() {
    let _cluster = support::cluster_shared_blocking();
    let docs = rendered();
    let deployment = &named(&docs, "Deployment", "audit-guard-datastorage")["spec"]["template"]["spec"];
    let cronjob = &named(&docs, "CronJob", "audit-guard-datastorage-retention")["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    for pod in [deployment, cronjob] {
        let ca = db_ca_volume(pod);
        assert_eq!(ca["secret"]["secretName"], format!("{CLUSTER}-ca"), "{ca}");
        assert_eq!(ca["secret"]["optional"], false, "{ca}");
        assert_eq!(ca["secret"]["defaultMode"], 256, "{ca}");
    }
    let kustomization = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/overlays/cloudnative-pg/kustomization.yaml"),
    )
    .unwrap();
    let url = format!("@{CLUSTER}-rw.audit-guard.svc:5432/audit_guard?sslmode=verify-full&sslrootcert=/etc/audit-guard/db-ca/ca.crt");
    assert!(kustomization.contains(&url), "the overlay tells the URL to create: {url}");
}

#[test]
fn every_kubernetes_object_passes_the_api_servers_validation() {
    let _cluster = support::cluster_shared_blocking();
    let cp = control_plane();
    let docs = rendered();
    // Kinds whose CRDs are other operators' (CloudNativePG, cert-manager, Prometheus operator).
    let foreign = ["Cluster", "Certificate", "Issuer", "ServiceMonitor", "PrometheusRule", "PodMonitor"];
    let (own, theirs): (Vec<&Value>, Vec<&Value>) = docs.iter().partition(|d| !foreign.contains(&d["kind"].as_str().unwrap_or("")));
    assert!(theirs.iter().any(|d| d["kind"] == "Cluster"));
    let text: String = own.iter().map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap())).collect();
    let file = cp.dir.join("cloudnative-pg.yaml");
    std::fs::write(&file, text).unwrap();
    // Namespaced objects are checked in a namespace that exists.
    let _ = cp.kubectl(&["create", "namespace", "audit-guard"]);
    let out = cp
        .kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            file.to_str().unwrap(),
        ])
        .unwrap_or_else(|e| panic!("the API server refused an object: {e:#}"));
    for kind in [
        "deployment.apps/audit-guard-datastorage",
        "cronjob.batch/audit-guard-datastorage-retention",
    ] {
        assert!(out.contains(kind), "{kind} checked:\n{out}");
    }
}

#[test]
fn the_cluster_passes_cloudnative_pgs_own_schema() {
    let _cluster = support::cluster_shared_blocking();
    let cp = control_plane();
    let crd = tools::go_module_file(CNPG_MODULE, CNPG_VERSION, "config/crd/bases/postgresql.cnpg.io_clusters.yaml");
    let crd = crd.to_str().unwrap();
    cp.kubectl(&["apply", "--server-side", "-f", crd])
        .unwrap_or_else(|e| panic!("the CloudNativePG Cluster CRD: {e:#}"));
    // `kubectl wait` right after the create can find no conditions yet and fails: poll instead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let established = r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#;
    while cp
        .kubectl(&["get", "crd", "clusters.postgresql.cnpg.io", "-o", established])
        .map_or(true, |out| out.trim() != "True")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the Cluster CRD is not established after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let _ = cp.kubectl(&["create", "namespace", "audit-guard"]);
    let dry_run = |cluster: &Value, file: &str| {
        let path = cp.dir.join(file);
        // JSON: a YAML writer may leave `on` unquoted, which kubectl reads as a boolean.
        std::fs::write(&path, serde_json::to_string(cluster).unwrap()).unwrap();
        cp.kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            path.to_str().unwrap(),
        ])
    };
    let docs = rendered();
    let cluster = named(&docs, "Cluster", CLUSTER).clone();
    let out = dry_run(&cluster, "cnpg-cluster.json").unwrap_or_else(|e| panic!("CloudNativePG's schema refused the Cluster: {e:#}"));
    assert!(out.contains("cluster.postgresql.cnpg.io/audit-guard-pg"), "{out}");
    // The check can fail: a misspelt field and a value outside the schema are refused.
    let mut misspelt = cluster.clone();
    misspelt["spec"]["postgresql"]["synchronous"]["dataDurabilty"] = Value::from("required");
    assert!(dry_run(&misspelt, "cnpg-misspelt.json").is_err(), "a misspelt field passed");
    let mut wrong = cluster;
    wrong["spec"]["postgresql"]["synchronous"]["method"] = Value::from("all-of-them");
    assert!(dry_run(&wrong, "cnpg-wrong.json").is_err(), "a method outside the schema passed");
}
