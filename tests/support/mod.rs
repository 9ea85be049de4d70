//! Shared test support: one real control plane per test binary, and helpers on it.

#![allow(dead_code)]

pub use audit_guard_harness::controlplane;
#[macro_use]
pub mod datastorage;
pub mod faults;
pub mod kubernaut_ds;
pub mod node;
pub mod pg_replica;
pub mod tlog;
pub mod witness;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

pub use controlplane::ControlPlane;

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary, started on first use; its API server writes an audit
/// log with the shipped policy (what `audit-guard witness` reads).
pub fn control_plane() -> &'static ControlPlane {
    let options = controlplane::Options {
        audit_policy: Some(controlplane::shipped_audit_policy()),
        ..Default::default()
    };
    CONTROL_PLANE.get_or_init(|| match ControlPlane::start_with(options) {
        Ok(cp) => cp,
        Err(e) => panic!("could not start the control plane: {e:#}"),
    })
}

/// An admin client on the shared control plane, bound to the calling test's runtime.
pub async fn admin_client() -> Client {
    let cp = control_plane();
    match cp.client().await {
        Ok(c) => c,
        Err(e) => panic!("admin client: {e:#}"),
    }
}

/// Applies a CRD and waits until the API server serves it.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().context("CRD without a name")?;
    api.patch(&name, &PatchParams::apply("audit-guard-tests").force(), &Patch::Apply(crd))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = api.get(&name).await?;
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            // Discovery lags behind Established by a moment.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("CRD {name} not established");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Server-side applies a cluster-scoped object given as JSON.
pub async fn apply_cluster<K>(client: &kube::Client, value: Value)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(value).unwrap();
    let name = obj.meta().name.clone().unwrap();
    Api::<K>::all(client.clone())
        .patch(&name, &PatchParams::apply("audit-guard-e2e").force(), &Patch::Apply(&obj))
        .await
        .unwrap();
}

/// Stand-ins for the Prometheus Operator's CRDs, so the API server can hold those objects.
pub async fn install_monitoring_crds(client: &Client) {
    for (plural, kind) in [("servicemonitors", "ServiceMonitor"), ("prometheusrules", "PrometheusRule")] {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": { "name": format!("{plural}.monitoring.coreos.com") },
            "spec": { "group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": { "plural": plural, "kind": kind },
                "versions": [{ "name": "v1", "served": true, "storage": true,
                    "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }] }
        }))
        .unwrap();
        apply_crd(client, &crd).await.unwrap();
    }
}

/// Installs the project's SignalProcessing CRD (what `audit-guard crd` prints).
pub async fn install_signalprocessing_crd(client: &Client) -> Result<()> {
    let yaml = audit_guard::crd::crd_yaml()?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml)?;
    apply_crd(client, &crd).await
}

/// Installs `remediationrequests.test.kubernaut.ai/v1`, a small stand-in for Kubernaut's
/// RemediationRequest, the owner whose deletion garbage-collects a SignalProcessing.
pub async fn install_remediationrequest_crd(client: &Client) -> Result<()> {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "remediationrequests.test.kubernaut.ai" },
        "spec": {
            "group": "test.kubernaut.ai", "scope": "Namespaced",
            "names": { "plural": "remediationrequests", "singular": "remediationrequest", "kind": "RemediationRequest" },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
        }
    }))?;
    apply_crd(client, &crd).await
}

/// Creates a fresh namespace with a unique name.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(name)
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Polls `check` until it returns Some or the timeout passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last_err:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shipped RBAC (rbac.yaml, datastorage-rbac.yaml) applied in namespace audit-guard, as
/// the manifests install it; once per test binary.
pub fn install_shipped_rbac(cp: &ControlPlane) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| apply_shipped_rbac(cp));
}

fn apply_shipped_rbac(cp: &ControlPlane) {
    let _ = cp.kubectl(&["create", "namespace", "audit-guard"]);
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base");
    let (rbac, ds_rbac) = (base.join("rbac.yaml"), base.join("datastorage-rbac.yaml"));
    cp.kubectl(&[
        "apply",
        "--server-side",
        "-n",
        "audit-guard",
        "-f",
        rbac.to_str().unwrap(),
        "-f",
        ds_rbac.to_str().unwrap(),
    ])
    .unwrap();
}

/// A token from the TokenRequest API for a ServiceAccount in namespace audit-guard.
pub fn sa_token(cp: &ControlPlane, sa: &str, audience: Option<&str>) -> String {
    let mut args = vec!["create", "token", sa, "-n", "audit-guard", "--duration=1h"];
    if let Some(a) = audience {
        args.extend(["--audience", a]);
    }
    cp.kubectl(&args).unwrap().trim().to_string()
}

pub fn token_kubeconfig(cp: &ControlPlane, name: &str, token: &str) -> std::path::PathBuf {
    let path = cp.dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            cp.server,
            cp.dir.join("ca.crt").display(),
        ),
    )
    .unwrap();
    path
}

/// Patches every finalizer off a SignalProcessing (where a webhook guards it, its rules apply).
pub async fn strip_finalizers(api: &Api<audit_guard::crd::SignalProcessing>, name: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .unwrap();
}

/// A CR from tests/fixtures, as written.
#[allow(dead_code)] // not every test binary reads fixtures
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture json")
}

/// A fixture CR with its times moved so that 2025-11-27T10:00:00Z, where they start, is now (to
/// the second): Data Storage accepts times within 400 days only, and the record builder lists
/// status times outside the CR's life (before its creation, just before) as anomalies.
#[allow(dead_code)]
pub fn fixture_dated_now(name: &str) -> Value {
    use chrono::SubsecRound;
    let origin: chrono::DateTime<chrono::Utc> = "2025-11-27T10:00:00Z".parse().expect("origin");
    let shift = chrono::Utc::now().trunc_subsecs(0) - origin;
    fn walk(v: &mut Value, shift: chrono::Duration) {
        match v {
            Value::String(s) => {
                if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                    *s = (t.with_timezone(&chrono::Utc) + shift).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, shift)),
            Value::Object(map) => map.values_mut().for_each(|i| walk(i, shift)),
            _ => {}
        }
    }
    let mut v = fixture(name);
    walk(&mut v, shift);
    v
}

/// A SignalProcessing with only a name, its RemediationRequest's name (`rr-<name>`) and a
/// fingerprint (`fp-<name>`).
pub fn bare_signalprocessing(name: &str) -> audit_guard::crd::SignalProcessing {
    serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": name },
        "spec": { "remediationRequestRef": { "name": format!("rr-{name}") }, "signal": { "fingerprint": format!("fp-{name}") } }
    }))
    .expect("a SignalProcessing")
}

/// Creates `sp-0000` … through the API server ([`bare_signalprocessing`]), `concurrency` at a
/// time; per CR, in order: its name, its uid and how long its create took (admission included).
pub async fn create_bare_signalprocessings(
    api: &Api<audit_guard::crd::SignalProcessing>,
    count: usize,
    concurrency: usize,
) -> Result<Vec<(String, String, Duration)>> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("sp-{i:04}");
                let started = Instant::now();
                let created = api.create(&PostParams::default(), &bare_signalprocessing(&name)).await?;
                Ok::<_, anyhow::Error>((name, created.metadata.uid.unwrap_or_default(), started.elapsed()))
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// Held shared by every test on the shared control plane, exclusively by one that changes what
/// the others rely on (see tests/e2e/main.rs).
static CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The control plane as every test finds it: held for the test's whole run.
pub async fn cluster_shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    CLUSTER.read().await
}

/// [`cluster_shared`] for a test without a runtime.
pub fn cluster_shared_blocking() -> tokio::sync::RwLockReadGuard<'static, ()> {
    CLUSTER.blocking_read()
}

/// The control plane to this test alone, once every running test has let go of it.
pub async fn cluster_exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    CLUSTER.write().await
}
