//! The admission webhook against a real kube-apiserver, calling it over real TLS with the
//! API server's client certificate (`--client-ca-file`: the harness's admission
//! configuration presents one), reading live objects from the API server and writing to a
//! real Data Storage (`audit-guard datastorage`, SQLite) on TLS that authenticates by
//! TokenReview and authorizes by SubjectAccessReview against the shipped RBAC; the webhook
//! writes with a TokenRequest token of the audit-guard ServiceAccount for the manifests'
//! audience, as the Deployment's projected token is.
//!
//! Webhook configurations are cluster-wide, so every webhook e2e test lives in this module
//! and shares one webhook (on its own runtime thread) and one Data Storage child. The
//! configurations cover the namespaces labelled `audit-guard-e2e=on` (the other suites on
//! this control plane keep theirs); a namespace relabelled `off` lets a test create an object
//! the webhook never saw (as if it predated the webhook), and one labelled
//! `audit-guard-e2e=open` a second pair of configurations sends to the webhook that asks for
//! no client certificate (mutual TLS off).

use crate::support;

use crate::webhook_support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use audit_guard::audit::from_cr::build_record;
use audit_guard::audit::Trigger;
use audit_guard::client::Stored;
use audit_guard::confirmed::{confirmed_records, UidSet};
use audit_guard::controller::{self, removals, Context};
use audit_guard::crd::{SignalProcessing, FINALIZER};
use audit_guard::sink::RecordSink;
use audit_guard::webhook::{registration, WebhookDeps, VALIDATE_PATH};
use audit_guard::writer::{AuditWriter, WriterConfig};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::datastorage::{Auth, DataStorage, Options, Tls};
use support::*;
use webhook_support::*;

const LABEL: &str = "audit-guard-e2e";
const RECORDS: &str = "/api/v1/audit/signal-processing";
const BREAK_GLASS_EVENTS: &str = "/api/v1/audit/break-glass-events";
const BREAK_GLASS_CLAIMS: &str = "/api/v1/audit/break-glass-claims";
/// A user nobody has: what a forged review names.
const INVENTED: &str = "not-a-real-user";

struct Env {
    ds_base: String,
    ds: DataStorage,
    /// Data Storage's CA and the writer token the webhook (and the test's reads) use.
    ds_ca: String,
    ds_token: String,
    /// The webhook the API server calls (client certificates required).
    hook_url: String,
    hook_ca: String,
    /// A second webhook on the same API server and Data Storage that asks for no client
    /// certificate, as one without --client-ca-file would: what a forged review can do there.
    open_hook_url: String,
}

/// Data Storage may be stopped by one test; the others hold this shared while they need it.
static DS_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A client for the test's own calls to Data Storage (its CA, the writer token).
fn ds_http() -> reqwest::Client {
    https_client_builder(&env().ds_ca).build().unwrap()
}

/// Panics with Data Storage's log when it did not come up.
fn started(r: anyhow::Result<()>) {
    r.unwrap_or_else(|e| panic!("{e:#}\n{}", control_plane().log_tail("datastorage")));
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The webhooks outlive every test's runtime, so they get a runtime of their own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let cp = control_plane();
                install_shipped_rbac(cp);
                let cert_dir = cp.dir.join("webhook-e2e-certs");
                let issued = issue_certs(&cert_dir, false);
                let kubeconfig = token_kubeconfig(cp, "webhook-e2e-datastorage", &sa_token(cp, "audit-guard-datastorage", None));
                let options = Options::sqlite()
                    .auth(Auth::TokenReview)
                    .tls(Tls::Dir(cert_dir.join(audit_guard::certs::DATASTORAGE_DIR)))
                    .env("KUBECONFIG", &kubeconfig.to_string_lossy());
                let ds = DataStorage::launch_on(cp, "datastorage", options).await;
                let ds = ds.unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail("datastorage")));
                let ds_base = ds.url.clone();

                let ds_token = sa_token(cp, "audit-guard", Some(audit_guard::datastorage::authz::DEFAULT_TOKEN_AUDIENCE));
                let token_file = cp.dir.join("webhook-e2e-datastorage-token");
                std::fs::write(&token_file, &ds_token).unwrap();
                let client = cp.client().await.unwrap();
                let deps = WebhookDeps {
                    kube: client.clone(),
                    ds: datastorage_client(&ds_base, Some(token_file), Some(ds.ca_file())),
                    confirmed: Arc::new(confirmed_records()),
                };
                let mut guarded = settings(&cert_dir, 4 * 1024 * 1024);
                guarded.client_ca_file = Some(cp.webhook_client_ca.clone());
                let hook = start_with(guarded, issued.ca_pem.clone(), deps.clone()).await;
                let open = start_with(settings(&cert_dir, 4 * 1024 * 1024), issued.ca_pem.clone(), deps).await;
                install_signalprocessing_crd(&client).await.unwrap();
                register_webhooks(&client, &hook, &open).await;
                grant_rbac(&client).await;
                tx.send(Env {
                    ds_base,
                    ds,
                    ds_ca: issued.ca_pem.clone(),
                    ds_token,
                    hook_url: hook.url(""),
                    hook_ca: issued.ca_pem,
                    open_hook_url: open.url(""),
                })
                .unwrap();
                let _ = tokio::join!(hook.task, open.task);
            });
        });
        rx.recv().expect("webhook environment")
    })
}

async fn register_webhooks(client: &kube::Client, hook: &Running, open: &Running) {
    let ca_bundle = audit_guard::certs::ca_bundle(&hook.ca_pem);
    for (name, running, operator, values) in [
        ("audit-guard-e2e", hook, "In", json!(["on"])),
        ("audit-guard-e2e-open", open, "In", json!(["open"])),
    ] {
        let selector = json!({ "matchExpressions": [{ "key": LABEL, "operator": operator, "values": values }] });
        let base = running.url("");
        let (mutating, validating) = registration::url_configurations(name, base.trim_end_matches('/'), &ca_bundle, Some(selector));
        apply_cluster::<MutatingWebhookConfiguration>(client, mutating).await;
        apply_cluster::<ValidatingWebhookConfiguration>(client, validating).await;
    }
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

/// alice and bob may edit SignalProcessings: RBAC is not what stops them. The controller's
/// identity (a static token with its username) has the shipped controller role, as the real
/// ServiceAccount does: more would show in the permissions `manifests` checks on this control
/// plane.
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
                { "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob" }
            ]
        }),
    )
    .await;
}

async fn label_namespace(client: &kube::Client, ns: &str, value: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { LABEL: value } } })),
        )
        .await
        .unwrap();
}

/// A namespace the API server sends to the webhook that asks for no client certificate.
async fn open_namespace(client: &kube::Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": { LABEL: "open" }}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    wait_matched(client, &name).await;
    name
}

/// A namespace the webhook configurations match (every one not opted out).
async fn guarded_namespace(client: &kube::Client, prefix: &str) -> String {
    let ns = fresh_namespace(client, prefix).await.unwrap();
    label_namespace(client, &ns, "on").await;
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
    let resp = ds_http()
        .get(format!("{}{RECORDS}/{uid}", env().ds_base))
        .bearer_auth(&env().ds_token)
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json().await.ok()
}

/// Break-glass events Data Storage holds for this SignalProcessing uid.
async fn break_glass_events(uid: &str) -> Vec<Value> {
    let resp = ds_http()
        .get(format!("{}{BREAK_GLASS_EVENTS}", env().ds_base))
        .bearer_auth(&env().ds_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    let items = page.get("items").unwrap_or(&page).as_array().cloned().unwrap_or_default();
    items.into_iter().filter(|e| e["uid"] == uid).collect()
}

/// Break-glass claims Data Storage holds for this SignalProcessing uid, each with its status.
async fn break_glass_claims(uid: &str) -> Vec<Value> {
    let resp = ds_http()
        .get(format!("{}{BREAK_GLASS_CLAIMS}", env().ds_base))
        .bearer_auth(&env().ds_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    let items = page["items"].as_array().cloned().unwrap_or_default();
    items.into_iter().filter(|e| e["uid"] == uid).collect()
}

/// The JSON period report over the last hour.
async fn report_json() -> Value {
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let resp = ds_http()
        .get(format!("{}{RECORDS}/report", env().ds_base))
        .query(&[("since", since.as_str()), ("until", until.as_str()), ("format", "json")])
        .bearer_auth(&env().ds_token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The Data Storage client the webhook uses (same token, same CA).
fn ds() -> Arc<dyn RecordSink> {
    let cp = control_plane();
    datastorage_client(
        &env().ds_base,
        Some(cp.dir.join("webhook-e2e-datastorage-token")),
        Some(env().ds.ca_file()),
    )
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
    let _cluster = support::cluster_shared().await;
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
        strip_finalizers(&api, name).await;
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_server_side_dry_run_create_is_mutated_and_leaves_nothing_behind() {
    let _cluster = support::cluster_shared().await;
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
async fn only_break_glass_and_a_controller_whose_record_is_stored_remove_the_finalizer() {
    let _cluster = support::cluster_shared().await;
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

    // bob (break-glass) can; the removal is stored as a break-glass event naming him and his
    // groups, and as a forced record.
    let bob = as_user("breakglass-token", &ns).await;
    bob.patch("held", &PatchParams::default(), &DROP_FINALIZERS()).await.unwrap();
    wait_gone(&api, "held").await;
    let record = stored_record(&uid).await.expect("forced record stored");
    assert_eq!(
        (record["status"].as_str(), record["trigger"].as_str()),
        (Some("forced"), Some("forced")),
        "{record}"
    );
    // The API server proved itself with its client certificate: the event is stored at once,
    // as what the API server authenticated, not as a claim awaiting confirmation.
    let events = break_glass_events(&uid).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"], "bob");
    assert_eq!(events[0]["groups"], json!(["audit-guard:break-glass", "system:authenticated"]));
    assert_eq!(events[0].get("confirmed"), None, "{events:?}");
    assert!(
        break_glass_claims(&uid).await.is_empty(),
        "a claim for a review from the API server"
    );
    assert_eq!(
        (events[0]["namespace"].as_str(), events[0]["name"].as_str()),
        (Some(ns.as_str()), Some("held"))
    );
    delete_namespace(&client, &ns).await;

    // The controller's identity (here a static token with its username): the removal goes
    // through once Data Storage holds the live object's record, which the webhook stores
    // first when it is not there; a record already stored with that content is enough.
    for stored_first in [false, true] {
        let (api, ns, uid) = deleting_object(&client, "wh-ctrl").await;
        let live = api.get("held").await.unwrap();
        if stored_first {
            let record = build_record(&live, Trigger::Deletion, chrono::Utc::now());
            assert_eq!(ds().store_one(&record).await.unwrap(), Stored::Created);
        }
        let ctrl = as_user("controller-token", &ns).await;
        ctrl.patch("held", &PatchParams::default(), &DROP_FINALIZERS()).await.unwrap();
        wait_gone(&api, "held").await;
        let record = stored_record(&uid).await.expect("the live object's record");
        assert_eq!(
            (record["trigger"].as_str(), record["remediation_id"].as_str()),
            (Some("deletion"), Some("rr-held")),
            "{record}"
        );
        assert_eq!(record["amendments"].as_array().map_or(0, Vec::len), 0, "{record}");
        delete_namespace(&client, &ns).await;
    }
}

/// Break-glass on a CR whose record is already stored (it completed, the writer stored it):
/// the forced record meets the existing one, which is fine; the break-glass event is stored
/// all the same, naming the user and groups.
#[tokio::test]
async fn break_glass_on_a_completed_cr_leaves_a_break_glass_event() {
    let _cluster = support::cluster_shared().await;
    env();
    let _ds = DS_LOCK.read().await;
    let client = admin_client().await;
    let (api, ns, uid) = deleting_object(&client, "wh-bg-done").await;
    let live = api.get("held").await.unwrap();
    let completion = build_record(&live, Trigger::Completion, chrono::Utc::now());
    assert_eq!(ds().store_one(&completion).await.unwrap(), Stored::Created);
    as_user("breakglass-token", &ns)
        .await
        .patch("held", &PatchParams::default(), &DROP_FINALIZERS())
        .await
        .unwrap();
    wait_gone(&api, "held").await;
    let events = break_glass_events(&uid).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"], "bob");
    assert!(events[0]["groups"].as_array().unwrap().contains(&json!(BREAK_GLASS)), "{events:?}");
    // The record is the completion record; nothing else took its place.
    assert_eq!(stored_record(&uid).await.unwrap()["trigger"], "completion");
    delete_namespace(&client, &ns).await;
}

/// Break-glass by impersonation (the admin acting as alice — an editor, not in the break-glass
/// group herself — in the break-glass group, with an `Impersonate-Extra-Ticket` header): the API server hands the webhook the impersonated user
/// and the review's userInfo.extra, which the break-glass event keeps whole. (kube-apiserver
/// does not put the impersonator's own name in userInfo; its audit log records it.)
#[tokio::test]
async fn break_glass_by_impersonation_keeps_the_user_infos_extra() {
    let _cluster = support::cluster_shared().await;
    env();
    let _ds = DS_LOCK.read().await;
    let client = admin_client().await;
    let (api, ns, uid) = deleting_object(&client, "wh-bg-as").await;
    let kubeconfig = kube::config::Kubeconfig::read_from(&control_plane().kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    config.auth_info.impersonate = Some("alice".into());
    config.auth_info.impersonate_groups = Some(vec![BREAK_GLASS.into()]);
    config.headers.push((
        http::HeaderName::from_static("impersonate-extra-ticket"),
        http::HeaderValue::from_static("INC-42"),
    ));
    let as_alice: Api<SignalProcessing> = Api::namespaced(kube::Client::try_from(config).unwrap(), &ns);
    as_alice.patch("held", &PatchParams::default(), &DROP_FINALIZERS()).await.unwrap();
    wait_gone(&api, "held").await;
    let events = break_glass_events(&uid).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"], "alice");
    assert_eq!(events[0]["groups"], json!([BREAK_GLASS, "system:authenticated"]));
    assert_eq!(events[0]["extra"], json!({ "ticket": ["INC-42"] }), "{events:?}");
    delete_namespace(&client, &ns).await;
}

/// The controller's ServiceAccount is also Data Storage's writer. With its tokens (one from
/// the TokenRequest API for the API server, one for Data Storage's audience), POST a
/// different record under a CR's uid, delete the CR and take the finalizer off at once
/// (`finalizers: null`): the removal is refused while the record of what the CR says cannot be
/// stored (Data Storage down), and goes through only once it is, as an amendment beside the
/// planted record, which stays as what it is; the conflict is counted.
#[tokio::test]
async fn a_record_planted_with_the_controllers_tokens_does_not_release_the_cr() {
    let _cluster = support::cluster_shared().await;
    let env = env();
    let _ds = DS_LOCK.write().await;
    let cp = control_plane();
    let client = admin_client().await;
    let ns = guarded_namespace(&client, "wh-plant").await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &sp("victim", &[])).await.unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = json!({ "status": { "phase": "Completed", "startTime": now, "completionTime": now,
                                     "environmentClassification": { "environment": "production" } } });
    let live = api
        .patch_status("victim", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let uid = live.metadata.uid.clone().unwrap();
    let mut planted = serde_json::to_value(build_record(&live, Trigger::Deletion, chrono::Utc::now())).unwrap();
    planted["status"] = json!("failed");
    planted["environment"] = json!("planted");
    planted["error_message"] = json!("planted");
    let posted = ds_http()
        .post(format!("{}{RECORDS}", env.ds_base))
        .bearer_auth(&env.ds_token)
        .json(&planted)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201, "{:?}", posted.text().await);
    let conflicts = || audit_guard::metrics::RECORD_CONFLICTS.with_label_values(&["webhook"]).get();
    let before = conflicts();
    api.delete("victim", &DeleteParams::default()).await.unwrap();

    // The ServiceAccount as the shipped RBAC makes it: it may patch SignalProcessings.
    let sa: Api<SignalProcessing> = Api::namespaced(cp.client_with_token(&sa_token(cp, "audit-guard", None)).await.unwrap(), &ns);
    let release = || Patch::Merge(json!({ "metadata": { "finalizers": null } }));
    cp.kill("datastorage").unwrap();
    let err = sa.patch("victim", &PatchParams::default(), &release()).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 503, "{status:?}");
    assert!(api.get("victim").await.unwrap().has_finalizer());

    started(env.ds.resume(cp).await);
    sa.patch("victim", &PatchParams::default(), &release()).await.unwrap();
    wait_gone(&api, "victim").await;
    let held = stored_record(&uid).await.expect("the planted record");
    assert_eq!(
        (held["status"].as_str(), held["environment"].as_str()),
        (Some("failed"), Some("planted")),
        "the planted record is kept as what it is: {held}"
    );
    let amendments = held["amendments"].as_array().cloned().unwrap_or_default();
    assert_eq!(amendments.len(), 1, "{held}");
    assert_eq!(
        (
            amendments[0]["status"].as_str(),
            amendments[0]["environment"].as_str(),
            amendments[0]["error_message"].as_str()
        ),
        (Some("completed"), Some("production"), None),
        "the amendment carries what the CR said: {held}"
    );
    assert!(conflicts() > before, "the conflict is counted");
    delete_namespace(&client, &ns).await;
}

/// The webhooks apply in the audit-guard namespace (created with the shipped RBAC) as in any
/// other: nothing in their configurations leaves it out.
#[tokio::test]
async fn a_signalprocessing_in_the_audit_guard_namespace_gets_the_finalizer() {
    let _cluster = support::cluster_shared().await;
    env();
    let client = admin_client().await;
    label_namespace(&client, "audit-guard", "on").await;
    wait_matched(&client, "audit-guard").await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), "audit-guard");
    let name = format!("in-own-ns-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let created = api.create(&PostParams::default(), &sp(&name, &[])).await.unwrap();
    assert_eq!(finalizers(&created), vec![FINALIZER.to_string()]);
}

/// Posts a hand-made review straight to a webhook, as any pod in the cluster could.
async fn post_review(base: &str, review: &Value, identity: Option<&str>) -> Result<Value, String> {
    let mut b = https_client_builder(&env().hook_ca);
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    let resp = b
        .build()
        .unwrap()
        .post(format!("{}{VALIDATE_PATH}", base.trim_end_matches('/')))
        .json(review)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    resp.json().await.map_err(|e| format!("{e:?}"))
}

/// An invented object: the live CR's identity, a made-up status.
fn forged(live: &SignalProcessing, finalizers: &[&str], deleting: bool) -> Value {
    let mut v = serde_json::to_value(live).unwrap();
    v["metadata"]["finalizers"] = json!(finalizers);
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    v["status"] = json!({
        "phase": "Failed", "completionTime": chrono::Utc::now().to_rfc3339(),
        "environmentClassification": { "environment": "Forged-Env", "confidence": 0.01 },
        "failureInfo": { "error": "invented by an attacker" }
    });
    v
}

fn forged_review(op: &str, user: &str, groups: &[&str], ns: &str, name: &str, object: Option<Value>, old: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uuid::Uuid::new_v4().to_string(), "operation": op, "dryRun": false,
            "kind": { "group": "kubernaut.ai", "version": "v1alpha1", "kind": "SignalProcessing" },
            "resource": { "group": "kubernaut.ai", "version": "v1alpha1", "resource": "signalprocessings" },
            "namespace": ns, "name": name,
            "userInfo": { "username": user, "groups": groups },
            "object": object, "oldObject": old
        }
    })
}

/// A hand-made review taking the finalizer off a deleting `live` object, as `user` in `groups`.
fn forged_removal(live: &SignalProcessing, user: &str, groups: &[&str], ns: &str, name: &str) -> Value {
    forged_review(
        "UPDATE",
        user,
        groups,
        ns,
        name,
        Some(forged(live, &[], true)),
        forged(live, &[FINALIZER], true),
    )
}

/// Hand-made reviews posted straight to port 9443 store nothing the API server's object does
/// not say; with --client-ca-file they do not get past the TLS handshake at all.
#[tokio::test]
async fn hand_made_reviews_store_nothing_the_live_object_does_not_say() {
    let _cluster = support::cluster_shared().await;
    let env = env();
    let _ds = DS_LOCK.read().await;
    let client = admin_client().await;
    let ns = guarded_namespace(&client, "wh-forge").await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let guarded = api.create(&PostParams::default(), &sp("guarded", &[])).await.unwrap();
    let uid = guarded.metadata.uid.clone().unwrap();

    // The webhook the API server calls asks for its client certificate: a pod has none.
    let del = forged_review("DELETE", "mallory", &[], &ns, "guarded", None, forged(&guarded, &[], false));
    assert!(
        post_review(&env.hook_url, &del, None).await.is_err(),
        "a review without a client certificate got an answer"
    );
    let stranger = std::fs::read_to_string(control_plane().dir.join("admin.crt")).unwrap()
        + &std::fs::read_to_string(control_plane().dir.join("admin.key")).unwrap();
    assert!(
        post_review(&env.hook_url, &del, Some(&stranger)).await.is_err(),
        "a certificate from another CA got an answer"
    );

    // Where no client certificate is asked for, the review is judged against the live object.
    // A DELETE "without the finalizer" of a CR that has it: refused, nothing stored.
    let out = post_review(&env.open_hook_url, &del, None).await.unwrap();
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert_eq!(out["response"]["status"]["code"], 409, "{out}");
    // A break-glass claim, or the controller's identity, on a CR that is not being deleted:
    // refused, no event, no record.
    for (user, groups, code) in [("mallory", vec![BREAK_GLASS], 409), (CONTROLLER, vec![], 409)] {
        let removal = forged_removal(&guarded, user, &groups, &ns, "guarded");
        let out = post_review(&env.open_hook_url, &removal, None).await.unwrap();
        assert_eq!(
            (out["response"]["allowed"].as_bool(), out["response"]["status"]["code"].as_u64()),
            (Some(false), Some(code)),
            "{user}: {out}"
        );
    }
    assert!(stored_record(&uid).await.is_none(), "a forged review stored a record");
    assert!(
        break_glass_events(&uid).await.is_empty(),
        "a forged review stored a break-glass event"
    );

    // A DELETE review for a CR that really lacks the finalizer stores what the live object
    // says — not the invented status.
    let (old_api, old_ns, old_uid) = unguarded_object(&client, "wh-forge-old").await;
    let live = old_api.get("old").await.unwrap();
    let del = forged_review("DELETE", "mallory", &[], &old_ns, "old", None, forged(&live, &[], false));
    let out = post_review(&env.open_hook_url, &del, None).await.unwrap();
    assert_eq!(out["response"]["allowed"], true, "{out}");
    let record = stored_record(&old_uid).await.expect("the live object's record");
    assert_eq!(record["status"], "incomplete", "{record}");
    assert_eq!(record["environment"], Value::Null, "{record}");
    assert!(
        !record.to_string().contains("invented") && !record.to_string().contains("forged-env"),
        "{record}"
    );
    delete_namespace(&client, &old_ns).await;
    delete_namespace(&client, &ns).await;
}

/// An object the webhook never saw: created while its namespace was opted out.
async fn unguarded_object(client: &kube::Client, prefix: &str) -> (Api<SignalProcessing>, String, String) {
    let ns = fresh_namespace(client, prefix).await.unwrap();
    label_namespace(client, &ns, "off").await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    // The opt-out reaches the API server's informer a moment after the label is set.
    wait_for("the namespace to be opted out", Duration::from_secs(30), || async {
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        Ok((!api.create(&dry, &sp("old", &[])).await?.has_finalizer()).then_some(()))
    })
    .await
    .unwrap();
    let created = api.create(&PostParams::default(), &sp("old", &[])).await.unwrap();
    assert!(!created.has_finalizer());
    label_namespace(client, &ns, "on").await;
    wait_matched(client, &ns).await;
    (api, ns, created.metadata.uid.clone().unwrap())
}

#[tokio::test]
async fn deleting_a_signalprocessing_without_the_finalizer_stores_its_record_first() {
    let _cluster = support::cluster_shared().await;
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
    let _cluster = support::cluster_shared().await;
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
    started(env.ds.resume(control_plane()).await);
    api.delete("old", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "old").await;
    assert!(stored_record(&uid).await.is_some());
    delete_namespace(&client, &ns).await;
}

/// The controller as `serve` runs it (its reconciler and its removal watch) for one namespace,
/// with the controller's identity, until `stop`.
async fn run_controller(ns: String, stop: tokio_util::sync::CancellationToken) {
    let client = control_plane().client_with_token("controller-token").await.unwrap();
    let ds = ds();
    let writer = Arc::new(AuditWriter::start(ds.clone().batch_sink(), WriterConfig::default()));
    let ctx = Arc::new(Context::new(client, ds, writer, Arc::new(confirmed_records()), "e2e-controller"));
    controller::run(ctx, &[ns], stop).await;
}

fn removals_observed(outcome: &str) -> u64 {
    audit_guard::metrics::REMOVALS_OBSERVED.with_label_values(&[outcome]).get()
}

/// Without mutual TLS any pod can POST a review to 9443. One naming an invented user in the
/// break-glass group, for a CR an ordinary deletion is taking away, is allowed (the API server
/// applies nothing from it) but names nobody: Data Storage keeps the live object's ordinary
/// deletion record and an unconfirmed claim; the controller then releases the CR itself, its
/// watch sees its own release, and the claim stays unconfirmed — in the claims listing and in
/// the compliance report — with no break-glass event naming that user.
#[tokio::test]
async fn a_forged_break_glass_review_without_mutual_tls_leaves_only_an_unconfirmed_claim() {
    let _cluster = support::cluster_shared().await;
    let env = env();
    let _ds = DS_LOCK.read().await;
    let client = admin_client().await;
    let ns = open_namespace(&client, "wh-claim").await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let created = api.create(&PostParams::default(), &sp("victim", &[])).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    // The ordinary DELETE; no controller runs yet, so the forged review lands while it waits.
    api.delete("victim", &DeleteParams::default()).await.unwrap();
    let live = api.get("victim").await.unwrap();
    assert!(live.is_deleting() && live.has_finalizer());

    let review = forged_removal(&live, INVENTED, &[BREAK_GLASS, "system:authenticated"], &ns, "victim");
    let review_uid = review["request"]["uid"].as_str().unwrap().to_string();
    let out = post_review(&env.open_hook_url, &review, None).await.unwrap();
    assert_eq!(out["response"]["allowed"], true, "{out}");
    let record = stored_record(&uid).await.expect("the live object's record");
    assert_eq!(
        (record["trigger"].as_str(), record["status"].as_str()),
        (Some("deletion"), Some("incomplete")),
        "the record is the one the controller would store, not a forced one: {record}"
    );
    assert!(!record.to_string().contains("invented"), "{record}");
    let claims = break_glass_claims(&uid).await;
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(
        (claims[0]["id"].as_str(), claims[0]["user"].as_str(), claims[0]["status"].as_str()),
        (Some(review_uid.as_str()), Some(INVENTED), Some("unconfirmed"))
    );
    assert!(
        break_glass_events(&uid).await.is_empty(),
        "a forged review stored a break-glass event"
    );

    // The ordinary deletion proceeds: the controller releases the CR, and its watch sees that
    // release as its own.
    let own_before = removals_observed("own_release");
    let stop = tokio_util::sync::CancellationToken::new();
    let controller = tokio::spawn(run_controller(ns.clone(), stop.clone()));
    wait_gone(&api, "victim").await;
    wait_for(
        "the removal watch to see the controller's release",
        Duration::from_secs(30),
        || async { Ok((removals_observed("own_release") > own_before).then_some(())) },
    )
    .await
    .unwrap();
    stop.cancel();
    controller.await.unwrap();

    assert!(
        break_glass_events(&uid).await.is_empty(),
        "a break-glass event names the invented user"
    );
    let claims = break_glass_claims(&uid).await;
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0]["status"], "unconfirmed", "{claims:?}");
    let report = report_json().await;
    let section = &report["break_glass_claims"];
    let listed = section["unconfirmed"].as_array().cloned().unwrap_or_default();
    assert!(
        listed.iter().any(|c| c["uid"] == uid.as_str()
            && c["claimed_user"] == INVENTED
            && c["status"] == "unconfirmed"
            && c["review"] == review_uid.as_str()),
        "the report does not list the claim as unconfirmed: {section}"
    );
    let events = report["forced_removals"]["events"].as_array().cloned().unwrap_or_default();
    assert!(
        !events.iter().any(|e| e["user"] == INVENTED),
        "the report names the invented user as a break-glass actor: {events:?}"
    );
    delete_namespace(&client, &ns).await;
}

/// Without mutual TLS, a real break-glass removal through the API server (bob) is first only
/// a claim; the removal watch sees the finalizer come off without the controller and Data
/// Storage confirms the claim: a break-glass event naming bob, under the review's id, saying
/// what confirmed it. A second CR whose removal both a forged review and bob claimed has two
/// claims: the removal confirms neither, both are reported ambiguous, no event.
#[tokio::test]
async fn without_mutual_tls_a_real_break_glass_removal_is_confirmed_once_observed() {
    let _cluster = support::cluster_shared().await;
    let env = env();
    let _ds = DS_LOCK.read().await;
    let client = admin_client().await;
    let ns = open_namespace(&client, "wh-confirm").await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);

    // The removal watch alone (no controller releases anything here).
    let stop = tokio_util::sync::CancellationToken::new();
    let synced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = tokio::spawn(removals::watch_alone(
        vec![Api::namespaced(client.clone(), &ns)],
        ds(),
        Arc::new(UidSet::new(16)),
        stop.clone(),
        synced.clone(),
    ));
    wait_for("the removal watch's first listing", Duration::from_secs(30), || async {
        Ok((synced.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(()))
    })
    .await
    .unwrap();

    let bob = as_user("breakglass-token", &ns).await;
    let created = api.create(&PostParams::default(), &sp("stuck", &[])).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    api.delete("stuck", &DeleteParams::default()).await.unwrap();
    bob.patch("stuck", &PatchParams::default(), &DROP_FINALIZERS()).await.unwrap();
    wait_gone(&api, "stuck").await;
    let events = wait_for("the claim's confirmation", Duration::from_secs(30), || async {
        let events = break_glass_events(&uid).await;
        Ok((!events.is_empty()).then_some(events))
    })
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let claims = break_glass_claims(&uid).await;
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0]["status"], "confirmed", "{claims:?}");
    assert_eq!(events[0]["user"], "bob", "{events:?}");
    assert_eq!(events[0]["id"], claims[0]["id"], "{events:?}");
    assert_eq!(
        (events[0]["confirmed"]["claim"].as_str(), events[0]["confirmed"]["by"].as_str()),
        (claims[0]["id"].as_str(), Some("controller-watch")),
        "{events:?}"
    );
    let record = stored_record(&uid).await.expect("the live object's record");
    assert_eq!(record["trigger"], "deletion", "{record}");

    // Two claims on one removal: none confirmed.
    let ambiguous_before = removals_observed("ambiguous");
    let created = api.create(&PostParams::default(), &sp("twice", &[])).await.unwrap();
    let twice = created.metadata.uid.clone().unwrap();
    api.delete("twice", &DeleteParams::default()).await.unwrap();
    let live = api.get("twice").await.unwrap();
    let review = forged_removal(&live, INVENTED, &[BREAK_GLASS], &ns, "twice");
    let out = post_review(&env.open_hook_url, &review, None).await.unwrap();
    assert_eq!(out["response"]["allowed"], true, "{out}");
    bob.patch("twice", &PatchParams::default(), &DROP_FINALIZERS()).await.unwrap();
    wait_gone(&api, "twice").await;
    wait_for("the removal watch to report the removal", Duration::from_secs(30), || async {
        Ok((removals_observed("ambiguous") > ambiguous_before).then_some(()))
    })
    .await
    .unwrap();
    assert!(break_glass_events(&twice).await.is_empty(), "an ambiguous claim was confirmed");
    let claims = break_glass_claims(&twice).await;
    let mut seen: Vec<(String, String)> = claims
        .iter()
        .map(|c| {
            (
                c["user"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![("bob".into(), "ambiguous".into()), (INVENTED.into(), "ambiguous".into())],
        "{claims:?}"
    );
    stop.cancel();
    watch.await.unwrap();
    delete_namespace(&client, &ns).await;
}
