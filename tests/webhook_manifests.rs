//! The shipped webhook Deployment and alerts say what the code expects: the Data Storage
//! token's audience is the one Data Storage asks for, Data Storage is reached over TLS checked
//! against its CA alone, Secret files are 0400 and readable through fsGroup, and every alert
//! watches a metric the code exports.

use std::collections::HashSet;
use std::sync::LazyLock;

use clap::CommandFactory;
use serde_json::Value;

fn docs(file: &str) -> Vec<Value> {
    let path = format!("{}/manifests/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::with::singleton_map_recursive::deserialize(d).unwrap())
        .collect()
}

fn webhook_pod() -> Value {
    let deployment = docs("base/webhook-deployment.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    deployment["spec"]["template"]["spec"].clone()
}

fn env(pod: &Value, name: &str) -> String {
    pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{name} not set"))
        .to_string()
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

#[test]
fn the_datastorage_token_carries_the_audience_datastorage_asks_for() {
    let pod = webhook_pod();
    let sources = volume(&pod, "datastorage-token")["projected"]["sources"]
        .as_array()
        .unwrap()
        .clone();
    let audience = sources[0]["serviceAccountToken"]["audience"].as_str().unwrap();
    assert_eq!(audience, audit_guard::datastorage::authz::DEFAULT_TOKEN_AUDIENCE);
    let token_file = env(&pod, "DATASTORAGE_TOKEN_FILE");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "datastorage-token")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        token_file,
        format!("{mount}/{}", sources[0]["serviceAccountToken"]["path"].as_str().unwrap())
    );
}

#[test]
fn datastorage_is_reached_over_tls_checked_against_its_ca_alone() {
    let pod = webhook_pod();
    assert!(env(&pod, "DATASTORAGE_URL").starts_with("https://"));
    let ca = volume(&pod, "datastorage-ca");
    // Only ca.crt of Data Storage's TLS Secret: never its private key.
    assert_eq!(ca["secret"]["items"], serde_json::json!([{ "key": "ca.crt", "path": "ca.crt" }]));
    assert_eq!(env(&pod, "DATASTORAGE_CA_FILE"), "/etc/audit-guard/datastorage-ca/ca.crt");
}

#[test]
fn secret_files_are_0400_and_readable_through_fs_group() {
    let pod = webhook_pod();
    for v in pod["volumes"].as_array().unwrap().iter().filter(|v| v.get("secret").is_some()) {
        assert_eq!(v["secret"]["defaultMode"], 0o400, "{}", v["name"]);
    }
    let sc = &pod["securityContext"];
    assert_eq!(sc["fsGroup"], sc["runAsGroup"]);
    assert_eq!(sc["runAsUser"], 65532);
}

/// The component that turns client certificates on sets the variable `--client-ca-file` reads.
#[test]
fn the_client_ca_component_sets_the_flag_serve_reads() {
    let cli = audit_guard::config::Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let arg = serve.get_arguments().find(|a| a.get_id() == "client_ca_file").unwrap();
    let var = arg.get_env().unwrap().to_str().unwrap().to_string();
    let component = docs("components/webhook-client-ca/kustomization.yaml");
    let patch = component[0]["patches"][0]["patch"].as_str().unwrap();
    assert!(patch.contains(&format!("name: {var}")), "{patch}");
    // Not in the base: a cluster whose API server presents no client certificate would refuse
    // every SignalProcessing write.
    assert!(!serde_json::to_string(&webhook_pod()).unwrap().contains(&var));
}

/// Metric names the code exports, with one sample each so the registry lists them.
fn exported() -> HashSet<String> {
    audit_guard::metrics::init();
    audit_guard::certs::metrics::init();
    audit_guard::datastorage::metrics::init();
    // A vector without preset labels is listed once it has a child.
    audit_guard::datastorage::metrics::REQUESTS.with_label_values(&["/api/v1/audit/signal-processing", "POST", "201"]);
    use audit_guard::webhook::metrics as wm;
    wm::DENIALS.with_label_values(&["record_not_held"]);
    LazyLock::force(&wm::FORCED_REMOVALS);
    audit_guard::certs::CERT_EXPIRY.with_label_values(&["tls.crt"]).set(1.0);
    audit_guard::certs::metrics::TRUSTED_CA_NOT_AFTER
        .with_label_values(&["ca.crt"])
        .set(1.0);
    prometheus::default_registry()
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

#[test]
fn alerts_watch_metrics_the_code_exports_and_cover_integrity_and_expiry() {
    let rules = docs("base/monitoring.yaml")
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .unwrap();
    // Every group: serve's, and the one for the Data Storage audit-guard ships.
    let alerts: Vec<Value> = rules["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    let by_name = |n: &str| {
        alerts.iter().find(|a| a["alert"] == n).unwrap_or_else(|| panic!("no alert {n}"))["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(by_name("AuditGuardRecordConflict").contains("audit_guard_record_conflicts_total"));
    assert!(by_name("AuditGuardCertificateExpiresSoon").contains("< 14 * 24 * 3600"));
    assert!(by_name("AuditGuardCertificateExpiresVerySoon").contains("< 3 * 24 * 3600"));
    let exported = exported();
    for a in &alerts {
        let expr = a["expr"].as_str().unwrap();
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            // Our own prefixes; up, apiserver_* and kube_* come from Prometheus, the API server
            // and kube-state-metrics.
            .filter(|w| w.starts_with("audit_") || w.starts_with("kubernaut_") || w.starts_with("datastorage_"));
        for name in names {
            assert!(
                exported.contains(name),
                "alert {} watches {name}, which nothing exports",
                a["alert"]
            );
        }
    }
}

/// The job label each ServiceMonitor gives its targets (Prometheus Operator: the value of the
/// Service's label named by `jobLabel`, else the Service's name) is the job the alerts on absent
/// targets name, so they watch something that exists.
#[test]
fn alerts_on_absent_targets_name_the_jobs_the_service_monitors_produce() {
    let services: Vec<Value> = ["base/webhook-service.yaml", "base/datastorage.yaml"]
        .iter()
        .flat_map(|f| docs(f))
        .filter(|d| d["kind"] == "Service")
        .collect();
    let monitoring = docs("base/monitoring.yaml");
    let mut jobs = HashSet::new();
    for sm in monitoring.iter().filter(|d| d["kind"] == "ServiceMonitor") {
        let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let selected: Vec<&Value> = services
            .iter()
            .filter(|s| selector.iter().all(|(k, v)| &s["metadata"]["labels"][k] == v))
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "ServiceMonitor {} selects one Service: {selected:?}",
            sm["metadata"]["name"]
        );
        let job = match sm["spec"]["jobLabel"].as_str() {
            Some(label) => selected[0]["metadata"]["labels"][label].as_str(),
            None => selected[0]["metadata"]["name"].as_str(),
        };
        jobs.insert(job.unwrap().to_string());
    }
    let rules = monitoring.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    let mut named = 0;
    for rule in rules["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let expr = rule["expr"].as_str().unwrap();
        for part in expr.split("up{job=\"").skip(1) {
            let job = part.split('"').next().unwrap();
            assert!(
                jobs.contains(job),
                "alert {} watches job {job:?}; the ServiceMonitors produce {jobs:?}",
                rule["alert"]
            );
            named += 1;
        }
    }
    assert_eq!(named, 2, "serve's and Data Storage's targets are each watched");
}
