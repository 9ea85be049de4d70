//! The admission webhook against a real kube-apiserver, calling it over real TLS, with a
//! real Data Storage (`audit-guard datastorage`, SQLite) behind the record sink.
//!
//! Webhook configurations are cluster-wide, so every webhook e2e test lives in this binary
//! and shares one webhook (on its own runtime thread) and one Data Storage child. The
//! configurations only match namespaces labelled `audit-guard-e2e=on`, which lets a test
//! create an object the webhook never saw (as if it predated the webhook).

mod support;

#[path = "support/webhook.rs"]
mod webhook_support;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use audit_guard::audit::{RecordSink, SignalProcessingAudit, StoreError};
use audit_guard::crd::{SignalProcessing, FINALIZER};
use audit_guard::webhook::registration;
use futures::future::BoxFuture;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::*;
use webhook_support::*;

const LABEL: &str = "audit-guard-e2e";
const RECORDS: &str = "/api/v1/audit/signal-processing";

/// Stores records through Data Storage's REST API: 201 or 409 (same id) means stored.
struct HttpSink {
    client: reqwest::Client,
    base: String,
}

impl RecordSink for HttpSink {
    fn store<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            match self.client.post(format!("{}{RECORDS}", self.base)).json(record).send().await {
                Ok(r) if r.status() == 201 || r.status() == 409 => Ok(()),
                Ok(r) => Err(StoreError::Transient(format!("Data Storage answered {}", r.status()))),
                Err(e) => Err(StoreError::Transient(format!("Data Storage unreachable: {e}"))),
            }
        })
    }
}

struct Env {
    ds_base: String,
    ds_port: u16,
    ds_dir: PathBuf,
}

/// Data Storage may be stopped by one test; the others hold this shared while they need it.
static DS_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn start_datastorage(port: u16, dir: &std::path::Path) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_audit-guard"));
    cmd.args([
        "datastorage",
        "--insecure-no-auth",
        "--plain-http",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .arg("--data-dir")
    .arg(dir);
    control_plane().spawn("datastorage", cmd).expect("spawn datastorage");
}

async fn wait_datastorage(base: &str) {
    let client = reqwest::Client::new();
    wait_for("Data Storage /healthz", Duration::from_secs(30), || async {
        Ok(client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", control_plane().log_tail("datastorage")));
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The webhook outlives every test's runtime, so it gets a runtime of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let cp = control_plane();
                let ds_port = support::controlplane::free_port().unwrap();
                let ds_dir = cp.dir.join("webhook-e2e-datastorage");
                std::fs::create_dir_all(&ds_dir).unwrap();
                start_datastorage(ds_port, &ds_dir);
                let ds_base = format!("http://127.0.0.1:{ds_port}");
                wait_datastorage(&ds_base).await;

                let cert_dir = cp.dir.join("webhook-e2e-certs");
                let sink = Arc::new(HttpSink {
                    client: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap(),
                    base: ds_base.clone(),
                });
                let hook = start(&cert_dir, sink, 4 * 1024 * 1024).await;
                let client = cp.client().await.unwrap();
                install_signalprocessing_crd(&client).await.unwrap();
                register_webhooks(&client, &hook).await;
                grant_rbac(&client).await;
                tx.send(Env { ds_base, ds_port, ds_dir }).unwrap();
                let _ = hook.task.await;
            });
        });
        rx.recv().expect("webhook environment")
    })
}

async fn register_webhooks(client: &kube::Client, hook: &Running) {
    let ca_bundle = audit_guard::certs::ca_bundle(&hook.ca_pem);
    let selector = json!({ "matchLabels": { LABEL: "on" } });
    let base = hook.url("");
    let (mutating, validating) =
        registration::url_configurations("audit-guard-e2e", base.trim_end_matches('/'), &ca_bundle, selector, CONTROLLER);
    apply_cluster::<MutatingWebhookConfiguration>(client, mutating).await;
    apply_cluster::<ValidatingWebhookConfiguration>(client, validating).await;
    // The API server picks configurations up asynchronously.
    let ns = guarded_namespace(client, "probe").await;
    delete_namespace(client, &ns).await;
}

/// Waits until the webhooks apply in `ns`: the API server sees configurations and namespace
/// labels through informers, so both lag a little behind our writes.
async fn wait_matched(client: &kube::Client, ns: &str) {
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), ns);
    wait_for("the webhooks to apply in the namespace", Duration::from_secs(30), || async {
        let created = api
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &sp("probe", &[]),
            )
            .await?;
        Ok(created.has_finalizer().then_some(()))
    })
    .await
    .unwrap();
}

/// Server-side applies a cluster-scoped object given as JSON.
async fn apply_cluster<K>(client: &kube::Client, value: Value)
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

/// alice and bob may edit SignalProcessings; RBAC is not what stops alice.
async fn grant_rbac(client: &kube::Client) {
    apply_cluster::<ClusterRole>(
        client,
        json!({
            "metadata": { "name": "audit-guard-e2e-editor" },
            "rules": [{ "apiGroups": ["kubernaut.ai"], "resources": ["signalprocessings"],
                        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] }]
        }),
    )
    .await;
    apply_cluster::<ClusterRoleBinding>(
        client,
        json!({
            "metadata": { "name": "audit-guard-e2e-editor" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "audit-guard-e2e-editor" },
            "subjects": [
                { "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice" },
                { "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob" },
                { "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER }
            ]
        }),
    )
    .await;
}

async fn label_namespace(client: &kube::Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { LABEL: "on" } } })),
        )
        .await
        .unwrap();
}

/// A namespace the webhook configurations match.
async fn guarded_namespace(client: &kube::Client, prefix: &str) -> String {
    let ns = fresh_namespace(client, prefix).await.unwrap();
    label_namespace(client, &ns).await;
    wait_matched(client, &ns).await;
    ns
}

fn sp(name: &str, finalizers: &[&str]) -> SignalProcessing {
    serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": name, "finalizers": finalizers },
        "spec": { "remediationRequestRef": { "name": format!("rr-{name}") }, "signal": { "fingerprint": format!("fp-{name}") } }
    }))
    .unwrap()
}

async fn stored_record(uid: &str) -> Option<Value> {
    let resp = reqwest::get(format!("{}{RECORDS}/{uid}", env().ds_base)).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json().await.ok()
}

async fn wait_gone(api: &Api<SignalProcessing>, name: &str) {
    wait_for(&format!("{name} to be gone"), Duration::from_secs(30), || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
}

fn finalizers(obj: &SignalProcessing) -> Vec<String> {
    obj.metadata.finalizers.clone().unwrap_or_default()
}

#[tokio::test]
async fn created_signalprocessings_carry_the_finalizer_and_keep_other_finalizers() {
    env();
    let client = admin_client().await;
    let ns = guarded_namespace(&client, "wh-create").await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let plain = api.create(&PostParams::default(), &sp("plain", &[])).await.unwrap();
    assert_eq!(finalizers(&plain), vec![FINALIZER.to_string()]);
    let other = api
        .create(&PostParams::default(), &sp("other", &["example.com/a", "example.com/b"]))
        .await
        .unwrap();
    assert_eq!(finalizers(&other), vec!["example.com/a", "example.com/b", FINALIZER]);
    // An update that drops our finalizer from a live object gets it back (reinvocation is idempotent).
    let updated = api
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": ["example.com/a"] } })),
        )
        .await
        .unwrap();
    assert_eq!(finalizers(&updated), vec!["example.com/a", FINALIZER]);
    for name in ["plain", "other"] {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .unwrap();
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_server_side_dry_run_create_is_mutated_and_leaves_nothing_behind() {
    env();
    let client = admin_client().await;
    let ns = guarded_namespace(&client, "wh-dry").await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let created = api.create(&dry, &sp("dry", &["example.com/a"])).await.unwrap();
    assert_eq!(finalizers(&created), vec!["example.com/a", FINALIZER]);
    assert!(api.get_opt("dry").await.unwrap().is_none());
    delete_namespace(&client, &ns).await;
}

/// Creates a guarded object and starts deleting it; our finalizer holds it.
async fn deleting_object(client: &kube::Client, prefix: &str) -> (Api<SignalProcessing>, String, String) {
    let ns = guarded_namespace(client, prefix).await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let created = api.create(&PostParams::default(), &sp("held", &[])).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let held = api.get("held").await.unwrap();
    assert!(held.is_deleting() && held.has_finalizer());
    (api, ns, uid)
}

async fn as_user(token: &str, ns: &str) -> Api<SignalProcessing> {
    Api::namespaced(control_plane().client_with_token(token).await.unwrap(), ns)
}

const DROP_FINALIZERS: fn() -> Patch<Value> = || Patch::Merge(json!({ "metadata": { "finalizers": [] } }));

#[tokio::test]
async fn only_the_controller_and_break_glass_can_remove_the_finalizer_from_a_deleting_object() {
    env();
    let _ds = DS_LOCK.read().await;
    let client = admin_client().await;

    // alice is refused, and told why and what to do.
    let (api, ns, uid) = deleting_object(&client, "wh-alice").await;
    let alice = as_user("alice-token", &ns).await;
    let err = alice.patch("held", &PatchParams::default(), &DROP_FINALIZERS()).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 403, "{status:?}");
    for says in ["must be stored", "audit-guard:break-glass", FINALIZER] {
        assert!(status.message.contains(says), "message {:?} should say {says:?}", status.message);
    }
    assert!(api.get("held").await.unwrap().has_finalizer());

    // bob (break-glass) can; the removal is stored as a forced record.
    let bob = as_user("breakglass-token", &ns).await;
    bob.patch("held", &PatchParams::default(), &DROP_FINALIZERS()).await.unwrap();
    wait_gone(&api, "held").await;
    let record = stored_record(&uid).await.expect("forced record stored");
    assert_eq!(
        (record["status"].as_str(), record["trigger"].as_str()),
        (Some("forced"), Some("forced")),
        "{record}"
    );
    delete_namespace(&client, &ns).await;

    // The controller's own identity can, without a forced record.
    let (api, ns, uid) = deleting_object(&client, "wh-ctrl").await;
    as_user("controller-token", &ns)
        .await
        .patch("held", &PatchParams::default(), &DROP_FINALIZERS())
        .await
        .unwrap();
    wait_gone(&api, "held").await;
    assert!(stored_record(&uid).await.is_none());
    delete_namespace(&client, &ns).await;
}

/// An object the webhook never saw: created before its namespace was matched.
async fn unguarded_object(client: &kube::Client, prefix: &str) -> (Api<SignalProcessing>, String, String) {
    let ns = fresh_namespace(client, prefix).await.unwrap();
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let created = api.create(&PostParams::default(), &sp("old", &[])).await.unwrap();
    assert!(!created.has_finalizer());
    label_namespace(client, &ns).await;
    wait_matched(client, &ns).await;
    (api, ns, created.metadata.uid.clone().unwrap())
}

#[tokio::test]
async fn deleting_a_signalprocessing_without_the_finalizer_stores_its_record_first() {
    env();
    let _ds = DS_LOCK.read().await;
    let client = admin_client().await;
    let (api, ns, uid) = unguarded_object(&client, "wh-unguarded").await;
    // A dry-run delete stores nothing.
    api.delete(
        "old",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(stored_record(&uid).await.is_none());
    api.delete("old", &DeleteParams::default()).await.unwrap();
    let record = stored_record(&uid).await.expect("record stored before the delete was admitted");
    assert_eq!(record["trigger"], "deletion");
    assert_eq!(record["remediation_id"], "rr-old");
    wait_gone(&api, "old").await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn with_data_storage_down_the_delete_is_refused_and_the_object_stays() {
    let env = env();
    let _ds = DS_LOCK.write().await;
    let client = admin_client().await;
    let (api, ns, uid) = unguarded_object(&client, "wh-down").await;
    control_plane().kill("datastorage").unwrap();
    let err = api.delete("old", &DeleteParams::default()).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 503, "{status:?}");
    assert!(status.message.contains("retry"), "{status:?}");
    assert!(api.get("old").await.unwrap().metadata.deletion_timestamp.is_none());

    // Once Data Storage is back, the retried deletion goes through and the record is there.
    start_datastorage(env.ds_port, &env.ds_dir);
    wait_datastorage(&env.ds_base).await;
    api.delete("old", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "old").await;
    assert!(stored_record(&uid).await.is_some());
    delete_namespace(&client, &ns).await;
}
