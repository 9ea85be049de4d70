//! `--datastorage-api events`: audit-guard against a test double of Kubernaut's Data Storage
//! (tests/support/kubernaut_ds.rs) that behaves as the real one was observed to — payload pruning,
//! the phase enum, the 7-day window, TokenReview with no audience and a SubjectAccessReview on its
//! Service (against this binary's real API server), a 202 that queues and replays every copy.
//!
//! The client on its own first (what it sends, the 202 rule, conflicts, batches), then the real
//! `audit-guard serve` on the real control plane through each scenario of the events mode: a CR deleted
//! while Pending, one completed 8 days ago, a break-glass removal, a 20 s write outage, a 401 and
//! a 403 — each ending with exactly one valid event per CR, or waiting with its own alarm.

use crate::support;

use crate::webhook_support;

use crate::tools;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use audit_guard::audit::from_cr::build_record;
use audit_guard::audit::{SignalProcessingAudit, Trigger};
use audit_guard::client::{ClientSettings, DataStorageClient, FailureKind, Stored};
use audit_guard::conflict::{persist, Persisted};
use audit_guard::crd::SignalProcessing;
use audit_guard::kubernaut_api::facts::CrFacts;
use audit_guard::kubernaut_api::mark::ANNOTATION_QUEUED_AT;
use audit_guard::kubernaut_api::KubernautApi;
use audit_guard::sink::RecordSink;
use audit_guard::writer::BatchSink;
use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use support::datastorage::Serve;
use support::faults::{metric, register_url_webhooks};
use support::kubernaut_ds::{validate, Auth, KubernautDs, Options};
use support::*;

const WAIT: Duration = Duration::from_secs(120);

fn client_for(url: &str, window: Duration, token_file: Option<&Path>) -> Arc<KubernautApi> {
    Arc::new(KubernautApi::new(
        DataStorageClient::new(&ClientSettings {
            url: url.into(),
            ca_file: None,
            token_file: token_file.map(Path::to_path_buf),
            allow_plain_http_token: false,
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
        window,
    ))
}

/// Kubernaut's CR as it ships today, with its times moved to `days_ago` days back.
fn kubernaut_cr(name: &str, uid: &str, days_ago: i64) -> SignalProcessing {
    let path = format!("{}/tests/fixtures/kubernaut-today.json", env!("CARGO_MANIFEST_DIR"));
    let day = (Utc::now() - chrono::Duration::days(days_ago)).format("%Y-%m-%dT").to_string();
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap().replace("2025-11-27T", &day)).unwrap();
    v["metadata"] = json!({ "name": name, "namespace": "prod", "uid": uid });
    serde_json::from_value(v).unwrap()
}

fn completed(uid: &str) -> SignalProcessingAudit {
    build_record(&kubernaut_cr("sp", uid, 1), Trigger::Completion, Utc::now())
}

/// Hands each record's CR to `client` as the controller does before storing a record: what
/// the CR says beyond the record is kept until the record's event is stored.
fn prepared(client: &KubernautApi, records: &[&SignalProcessingAudit]) {
    for r in records {
        client.prepare(&kubernaut_cr("sp", &r.id, 1), r);
    }
}

/// The event the client sends for `record` (of [`kubernaut_cr`]), as JSON.
fn event_sent(record: &SignalProcessingAudit) -> Value {
    let facts = CrFacts::of(&kubernaut_cr("sp", &record.id, 1));
    serde_json::to_value(audit_guard::kubernaut_api::payload::event_for(record, &facts, Utc::now())).unwrap()
}

// ---- the double itself: it refuses and prunes what the real service refuses and prunes ----

#[tokio::test]
async fn the_double_refuses_and_prunes_as_kubernaut_does() {
    let _cluster = support::cluster_shared().await;
    let now = Utc::now();
    let good = event_sent(&completed("u-1"));
    assert!(validate(&good, now).is_ok(), "{good}");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    for (name, bad) in [
        ("phase null", with(&|v| v["event_data"]["phase"] = Value::Null)),
        ("phase outside the enum", with(&|v| v["event_data"]["phase"] = json!("Validating"))),
        (
            "8 days old",
            with(&|v| v["event_timestamp"] = json!((now - chrono::Duration::days(8)).to_rfc3339())),
        ),
        (
            "unknown event_type",
            with(&|v| v["event_data"]["event_type"] = json!("auditguard.record.stored")),
        ),
        (
            "environment outside the enum",
            with(&|v| v["event_data"]["environment"] = json!("test")),
        ),
        (
            "no signal",
            with(&|v| {
                v["event_data"].as_object_mut().unwrap().remove("signal");
            }),
        ),
        ("bad category", with(&|v| v["event_category"] = json!("audit"))),
    ] {
        assert!(validate(&bad, now).is_err(), "{name} accepted");
    }
    let pruned = validate(&with(&|v| v["event_data"]["audit_record"] = json!({ "id": "u-1" })), now).unwrap();
    assert!(
        pruned["event_data"].get("audit_record").is_none(),
        "unknown keys are dropped: {pruned}"
    );
    assert_eq!(pruned["event_data"], good["event_data"], "known keys are kept as sent");
}

// ---- the client against the double ----

#[tokio::test]
async fn what_the_client_sends_is_what_kubernaut_keeps() {
    let _cluster = support::cluster_shared().await;
    let ds = KubernautDs::start(Options::default()).await;
    let client = client_for(&ds.url, Duration::from_secs(600), None);
    let record = completed("uid-keep");
    prepared(&client, &[&record]);
    assert_eq!(client.store_one(&record).await.unwrap(), Stored::Created);
    let stored = ds.record_events("uid-keep");
    assert_eq!(stored.len(), 1);
    let ev = &stored[0];
    let sent = event_sent(&record);
    assert_eq!(ev["event_data"], sent["event_data"], "nothing was pruned");
    let d = &ev["event_data"];
    for (key, want) in [
        ("phase", json!("Completed")),
        ("signal", json!("HighMemoryUsage")),
        ("environment", json!("production")),
        ("priority", json!("P0")),
        ("criticality", json!("critical")),
        ("sla_requirement", json!("platinum")),
        ("severity", json!("critical")),
        ("business_unit", json!("payments")),
        ("owner_chain_length", json!(2)),
        ("degraded_mode", json!(false)),
        ("environment_source", json!("labels")),
        ("priority_source", json!("rego")),
    ] {
        assert_eq!(d[key], want, "{key} in {d}");
    }
    assert_eq!(ev["actor_id"], "audit-guard");
    assert_eq!(ev["event_action"], "completed");
    assert_eq!(ev["correlation_id"], "rr-mem-pressure-1");
    // Found again: stored, no second POST.
    let posts = ds.write_requests();
    prepared(&client, &[&record]);
    assert_eq!(client.store_one(&record).await.unwrap(), Stored::AlreadyStored);
    assert!(client.record_held("uid-keep", "rr-mem-pressure-1").await.unwrap());
    assert_eq!(ds.write_requests(), posts);
}

#[tokio::test]
async fn after_a_202_the_client_polls_and_never_posts_a_second_copy() {
    let _cluster = support::cluster_shared().await;
    let ds = KubernautDs::start(Options::default()).await;
    let client = client_for(&ds.url, Duration::from_secs(600), None);
    let record = completed("uid-202");
    prepared(&client, &[&record]);
    ds.set_writes_failing(true);
    let e = client.store_one(&record).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Queued, "{e}");
    assert_eq!((ds.write_requests(), ds.queued()), (1, 1));
    for _ in 0..5 {
        let e = client.store_one(&record).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Queued, "{e}");
    }
    let outcome = client.store_batch(std::slice::from_ref(&record)).await.unwrap();
    assert_eq!(outcome.queued, vec!["uid-202".to_string()]);
    assert_eq!(ds.write_requests(), 1, "polled, never POSTed again");
    ds.set_writes_failing(false);
    wait_for("the queue to replay", WAIT, || async {
        Ok((ds.queued() == 0 && !ds.record_events("uid-202").is_empty()).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(client.store_one(&record).await.unwrap(), Stored::AlreadyStored);
    assert_eq!(ds.record_events("uid-202").len(), 1);
    assert_eq!(ds.write_requests(), 1);
}

#[tokio::test]
async fn an_event_the_queue_lost_is_posted_again_once_the_window_has_passed() {
    let _cluster = support::cluster_shared().await;
    let ds = KubernautDs::start(Options::default()).await;
    let window = Duration::from_secs(4);
    let client = client_for(&ds.url, window, None);
    let record = completed("uid-lost");
    prepared(&client, &[&record]);
    ds.set_writes_failing(true);
    ds.set_queue_loses(true);
    assert_eq!(client.store_one(&record).await.unwrap_err().kind, FailureKind::Queued);
    ds.set_writes_failing(false);
    wait_for("the queue to lose it", WAIT, || async { Ok((ds.queued() == 0).then_some(())) })
        .await
        .unwrap();
    assert_eq!(
        client.store_one(&record).await.unwrap_err().kind,
        FailureKind::Queued,
        "inside the window: poll only"
    );
    assert_eq!(ds.write_requests(), 1);
    tokio::time::sleep(window).await;
    assert_eq!(client.store_one(&record).await.unwrap(), Stored::Created);
    assert_eq!(ds.record_events("uid-lost").len(), 1);
    assert_eq!(ds.write_requests(), 2);
}

#[tokio::test]
async fn a_different_event_for_the_uid_is_a_conflict_and_ours_is_stored_linked_to_it() {
    let _cluster = support::cluster_shared().await;
    let ds = KubernautDs::start(Options::default()).await;
    let client = client_for(&ds.url, Duration::from_secs(600), None);
    let record = completed("uid-conflict");
    prepared(&client, &[&record]);
    let mut planted = event_sent(&record);
    planted["event_data"]["priority"] = json!("P3");
    let planted = ds.plant(planted);
    match client.store_one(&record).await.unwrap() {
        Stored::Conflict { existing } => assert_eq!(existing["event_id"], planted["event_id"]),
        other => panic!("a different event was taken as ours: {other:?}"),
    }
    match persist(client.as_ref(), None, &record).await.unwrap() {
        Persisted::Amended { differing, new } => {
            assert_eq!(differing, vec!["event_data.priority".to_string()]);
            assert!(new);
        }
        other => panic!("{other:?}"),
    }
    let events = ds.record_events("uid-conflict");
    assert_eq!(events.len(), 2, "both kept: {events:?}");
    let ours = events.iter().find(|e| e["event_data"]["priority"] == "P0").unwrap();
    assert_eq!(ours["parent_event_id"], planted["event_id"]);
    assert_eq!(ours["parent_event_date"], planted["event_timestamp"]);
    // A retry finds our amendment: stored, nothing more written.
    prepared(&client, &[&record]);
    assert_eq!(persist(client.as_ref(), None, &record).await.unwrap(), Persisted::Stored);
    assert_eq!(ds.record_events("uid-conflict").len(), 2);
}

#[tokio::test]
async fn a_batch_posts_only_missing_events_and_a_202_leaves_them_queued() {
    let _cluster = support::cluster_shared().await;
    let ds = KubernautDs::start(Options::default()).await;
    let client = client_for(&ds.url, Duration::from_secs(600), None);
    let (a, b, c) = (completed("uid-a"), completed("uid-b"), completed("uid-c"));
    prepared(&client, &[&a]);
    assert_eq!(client.store_one(&a).await.unwrap(), Stored::Created);
    prepared(&client, &[&a, &b]);
    let outcome = client.store_batch(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!((outcome.stored.len(), outcome.queued.len()), (2, 0), "{outcome:?}");
    ds.set_writes_failing(true);
    prepared(&client, &[&a, &b, &c]);
    let outcome = client.store_batch(&[a.clone(), b.clone(), c.clone()]).await.unwrap();
    assert_eq!(outcome.stored.len(), 2);
    assert_eq!(outcome.queued, vec!["uid-c".to_string()]);
    let posts = ds.write_requests();
    let outcome = client.store_batch(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(outcome.queued, vec!["uid-c".to_string()]);
    assert_eq!(ds.write_requests(), posts, "no second copy");
    ds.set_writes_failing(false);
    wait_for("the replay", WAIT, || async {
        Ok((!ds.record_events("uid-c").is_empty()).then_some(()))
    })
    .await
    .unwrap();
    for uid in ["uid-a", "uid-b", "uid-c"] {
        assert_eq!(ds.record_events(uid).len(), 1, "{uid}");
    }
}

// ---- the real serve on the real control plane ----

const LABEL: &str = "audit-guard-events-e2e";
const KUBERNAUT_NS: &str = "kubernaut";
/// audit-guard's identity for Kubernaut's Data Storage, as the kubernaut overlay creates it.
const CLIENT_SA: &str = "audit-guard-kubernaut-client";

/// Kubernaut's side of the cluster, once per binary: its namespace, a stand-in for its client
/// ClusterRole (`create`/`get` on its Service), and the kubernaut overlay's Data Storage identity
/// (a ServiceAccount of its own) with its RoleBinding to that role, as rendered from
/// manifests/overlays/kubernaut; and the right for the break-glass user to edit SignalProcessings.
/// (Its tokens come from the TokenRequest API, with the API server's own audiences, as the
/// overlay's ServiceAccount-token Secret's do.)
fn install_kubernaut_side(cp: &ControlPlane) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        install_shipped_rbac(cp);
        let _ = cp.kubectl(&["create", "namespace", KUBERNAUT_NS]);
        let dir = cp.dir.join("kubernaut-side");
        std::fs::create_dir_all(&dir).unwrap();
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": "data-storage-client" },
            "rules": [{ "apiGroups": [""], "resources": ["services"], "resourceNames": ["data-storage-service"], "verbs": ["create", "get"] }]
        });
        let rendered = tools::render_overlay("kubernaut", &support::datastorage::binary());
        let bindings: Vec<Value> = rendered
            .iter()
            .filter(|o| o["kind"] == "RoleBinding" && o["metadata"]["namespace"] == KUBERNAUT_NS)
            .cloned()
            .collect();
        assert_eq!(bindings.len(), 1, "the kubernaut overlay binds audit-guard to Kubernaut's client role");
        let identity = rendered
            .iter()
            .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == CLIENT_SA)
            .cloned()
            .expect("the kubernaut overlay's Data Storage identity");
        // bob (the harness's break-glass user) may edit SignalProcessings: RBAC is not what stops him.
        let editor = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": "audit-guard-events-e2e-editor" },
            "rules": [{ "apiGroups": ["kubernaut.ai"], "resources": ["signalprocessings"], "verbs": ["get", "list", "watch", "update", "patch", "delete"] }]
        });
        let editor_binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": "audit-guard-events-e2e-editor" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "audit-guard-events-e2e-editor" },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob" }]
        });
        let items: Vec<Value> = [role, editor, editor_binding, identity].into_iter().chain(bindings).collect();
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": items });
        let file = dir.join("kubernaut-side.json");
        std::fs::write(&file, list.to_string()).unwrap();
        cp.kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()]).unwrap();
    });
}

/// A token from the TokenRequest API for a ServiceAccount in namespace audit-guard (after the
/// shipped RBAC and Kubernaut's side are installed).
fn token(sa: &str, audience: Option<&str>) -> String {
    let cp = control_plane();
    install_kubernaut_side(cp);
    sa_token(cp, sa, audience)
}

/// One scenario's world: a Kubernaut Data Storage double with real auth, namespaces, tokens.
struct World {
    client: Client,
    ds: KubernautDs,
    ns: String,
    lease_ns: String,
    dir: std::path::PathBuf,
    token_file: std::path::PathBuf,
}

impl World {
    async fn new(tag: &str, token: &str) -> World {
        let cp = control_plane();
        let client = admin_client().await;
        install_signalprocessing_crd(&client).await.unwrap();
        install_kubernaut_side(cp);
        let ns = fresh_namespace(&client, tag).await.unwrap();
        label(&client, &ns, tag).await;
        let lease_ns = fresh_namespace(&client, &format!("{tag}-lease")).await.unwrap();
        let dir = cp.dir.join(format!("events-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).unwrap();
        let ds = KubernautDs::start(Options {
            auth: Some(Auth {
                client: client.clone(),
                namespace: KUBERNAUT_NS.into(),
            }),
            ..Options::default()
        })
        .await;
        World {
            client,
            ds,
            ns,
            lease_ns,
            dir,
            token_file,
        }
    }

    fn api(&self) -> Api<SignalProcessing> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// `serve` in events mode watching this world's namespace.
    async fn serve(&self, name: &str, extra: &[&str]) -> Serve {
        let cp = control_plane();
        let mut args = vec![
            "--datastorage-api",
            "events",
            "--datastorage-token-file",
            self.token_file.to_str().unwrap(),
            // The Kubernaut Data Storage double serves plain HTTP on loopback, as Kubernaut's does.
            "--datastorage-allow-plain-http-token",
            "--events-replay-window",
            "60s",
            "--retention",
            "0",
            "--controller-identity",
            "admin",
        ];
        args.extend_from_slice(extra);
        let name = format!("{name}-{}", self.ns);
        Serve::start_full(cp, &name, &cp.kubeconfig, &self.ds.url, &self.lease_ns, &self.ns, &args)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&name)))
    }
}

async fn label(client: &Client, ns: &str, tag: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { LABEL: tag } } })),
        )
        .await
        .unwrap();
}

fn bare(name: &str) -> SignalProcessing {
    serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": name },
        "spec": { "remediationRequestRef": { "name": format!("rr-{name}") }, "signal": { "fingerprint": format!("fp-{name}"), "name": "HighMemoryUsage" } }
    }))
    .unwrap()
}

async fn create_guarded(api: &Api<SignalProcessing>, name: &str) -> String {
    api.create(&PostParams::default(), &bare(name)).await.unwrap();
    let sp = wait_for("the finalizer", WAIT, || async {
        Ok(api.get_opt(name).await?.filter(|sp| sp.has_finalizer()))
    })
    .await
    .unwrap();
    sp.metadata.uid.unwrap()
}

async fn complete(api: &Api<SignalProcessing>, name: &str, days_ago: i64) {
    let t = (Utc::now() - chrono::Duration::days(days_ago)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = json!({ "status": {
        "phase": "Completed", "startTime": t, "completionTime": t,
        "environmentClassification": { "environment": "Production", "source": "namespace-labels", "classifiedAt": t },
        "priorityAssignment": { "priority": "P1", "source": "rego-policy", "assignedAt": t }
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

async fn wait_gone(api: &Api<SignalProcessing>, name: &str) {
    wait_for(&format!("{name} to be gone"), WAIT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
}

/// Events (core/v1) about the object `uid` with `reason`.
async fn events_with(client: &Client, ns: &str, uid: &str, reason: &str) -> usize {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.involved_object.uid.as_deref() == Some(uid))
        .count()
}

/// Deletes `name` (uid `uid`), waits until it is gone, and returns its one stored event, checked
/// for the payload's `phase`, the `event_action` and the signal's name (from the CR, not the record).
async fn delete_to_one_event(w: &World, api: &Api<SignalProcessing>, name: &str, uid: &str, phase: &str, action: &str) -> Value {
    api.delete(name, &DeleteParams::default()).await.unwrap();
    wait_gone(api, name).await;
    let ev = w.ds.record_events(uid);
    assert_eq!(ev.len(), 1, "{name}: {ev:?}");
    assert_eq!(ev[0]["event_data"]["phase"], phase, "{name}");
    assert_eq!(ev[0]["event_action"], action, "{name}");
    assert_eq!(ev[0]["event_data"]["signal"], "HighMemoryUsage", "{name}");
    ev[0].clone()
}

/// Acceptance 1: a CR deleted while Pending, one completed 8 days ago, a CR without the finalizer
/// deleted (the webhook's unguarded path) and a break-glass removal each end with exactly one
/// valid event, stored, and the CR gone.
#[tokio::test]
async fn pending_eight_days_old_and_forced_each_end_with_exactly_one_event() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let w = World::new("ev-one", &token(CLIENT_SA, None)).await;
    // A second namespace the webhooks cover but no controller watches: deletions wait there
    // until break-glass.
    let held_ns = fresh_namespace(&w.client, "ev-held").await.unwrap();
    label(&w.client, &held_ns, "ev-one").await;
    // Created before the webhooks: no finalizer, so its DELETE is the webhook's unguarded path.
    let held: Api<SignalProcessing> = Api::namespaced(w.client.clone(), &held_ns);
    let unguarded = held.create(&PostParams::default(), &bare("unguarded")).await.unwrap();
    assert!(!unguarded.has_finalizer());
    let unguarded = unguarded.metadata.uid.unwrap();
    let issued = webhook_support::issue_certs(&w.dir.join("certs"), false);
    let port = support::controlplane::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let cert_dir = w.dir.join("certs");
    // Mutual TLS as shipped: the API server's admission client certificate is what makes a
    // break-glass review's user evidence (without it, a break-glass review is only a claim).
    let client_ca = cp.webhook_client_ca.to_str().unwrap().to_string();
    let serve = w
        .serve(
            "ev-one",
            &[
                "--webhook-addr",
                &addr,
                "--cert-dir",
                cert_dir.to_str().unwrap(),
                "--client-ca-file",
                &client_ca,
            ],
        )
        .await;
    register_url_webhooks(
        &w.client,
        "audit-guard-events-e2e",
        &format!("https://{addr}"),
        &issued.ca_pem,
        (LABEL, "ev-one"),
    )
    .await
    .unwrap();
    let api = w.api();
    wait_for("the webhooks to apply", WAIT, || async {
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        Ok(api.create(&dry, &bare("probe")).await?.has_finalizer().then_some(()))
    })
    .await
    .unwrap();

    // Deleted while Pending (no status at all).
    let pending = create_guarded(&api, "pending").await;
    let ev = delete_to_one_event(&w, &api, "pending", &pending, "Pending", "incomplete").await;
    assert_eq!(ev["event_outcome"], "pending");

    // A status claiming completion 8 days ago, on a CR created just now: the claimed time is an
    // anomaly (before the CR existed), so the buffered writer leaves the CR to the deletion path,
    // whose one event carries the write time, inside Kubernaut's window.
    let old = create_guarded(&api, "old").await;
    complete(&api, "old", 8).await;
    api.delete("old", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "old").await;
    let ev = w.ds.record_events(&old);
    assert_eq!(ev.len(), 1, "one event for the CR: {ev:?}");
    assert_eq!(ev[0]["event_data"]["phase"], "Completed");
    assert_eq!(ev[0]["event_data"]["priority"], "P1");
    assert_eq!(ev[0]["event_data"]["signal"], "HighMemoryUsage");
    let at = chrono::DateTime::parse_from_rfc3339(ev[0]["event_timestamp"].as_str().unwrap()).unwrap();
    assert!(Utc::now().signed_duration_since(at) < chrono::Duration::hours(1), "{at}");

    // An unguarded DELETE (the webhook stores the record of the CR, still Pending, first).
    delete_to_one_event(&w, &held, "unguarded", &unguarded, "Pending", "incomplete").await;

    // Break-glass in the unwatched namespace: the forced record and the break-glass event.
    held.create(&PostParams::default(), &bare("forced")).await.unwrap();
    let sp = held.get("forced").await.unwrap();
    assert!(sp.has_finalizer(), "the mutating webhook added it");
    let forced = sp.metadata.uid.clone().unwrap();
    held.delete("forced", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(held.get("forced").await.unwrap().has_finalizer(), "no controller here: it waits");
    let bob: Api<SignalProcessing> = Api::namespaced(cp.client_with_token("breakglass-token").await.unwrap(), &held_ns);
    bob.patch(
        "forced",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": [] } })),
    )
    .await
    .unwrap();
    wait_gone(&held, "forced").await;
    let ev = w.ds.record_events(&forced);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["event_action"], "forced");
    assert_eq!(ev[0]["event_data"]["phase"], "Pending");
    assert_eq!(ev[0]["event_data"]["signal"], "HighMemoryUsage");
    let bg = w.ds.break_glass_events(&forced);
    assert_eq!(bg.len(), 1, "{bg:?}");
    assert_eq!(bg[0]["actor_id"], "bob");
    assert_eq!(bg[0]["event_data"]["signal"], "HighMemoryUsage");
    assert_eq!(bg[0]["correlation_id"], "rr-forced");

    // Every stored event is one Kubernaut accepts (it was validated on the way in), nothing was refused.
    assert_eq!(w.ds.answers(400), 0);
    let m = serve.metrics().await.unwrap();
    assert_eq!(metric(&m, "audit_guard_datastorage_rejected_total"), 0.0, "{m}");
    support::faults::unregister_webhooks(&w.client, "audit-guard-events-e2e").await;
    delete_namespace(&w.client, &held_ns).await;
    delete_namespace(&w.client, &w.ns).await;
}

/// Acceptance 2: writes fail for 20 s while reads work; the writer and the deletion path both
/// meet 202s; the leader is killed while the events wait in the queue and another `serve` takes
/// over (it reads the CRs' marks, so it polls too); once the queue drains, each CR has exactly
/// one event and is gone.
#[tokio::test]
async fn a_20s_write_outage_ends_with_one_event_per_cr() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let w = World::new("ev-outage", &token(CLIENT_SA, None)).await;
    let first = w.serve("ev-outage", &["--disable-webhook"]).await;
    let api = w.api();
    let names: Vec<String> = (0..7).map(|i| format!("sp-{i}")).collect();
    // Six are deleted during the outage; the last completes and stays until the end.
    let (deleted, kept) = names.split_at(6);
    let mut uids = Vec::new();
    for n in &names {
        uids.push(create_guarded(&api, n).await);
    }
    w.ds.set_writes_failing(true);
    let outage = std::time::Instant::now();
    // Some complete during the outage: the buffered writer meets the 202s.
    for n in deleted[..3].iter().chain(kept) {
        complete(&api, n, 0).await;
    }
    wait_for("the writer's batch to be queued", WAIT, || async {
        Ok((w.ds.queued() >= 4).then_some(()))
    })
    .await
    .unwrap();
    for n in deleted {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
    wait_for("every CR marked with the time its event was queued", WAIT, || async {
        let marked = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|sp| sp.annotations().contains_key(ANNOTATION_QUEUED_AT))
            .count();
        Ok((marked == names.len()).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(w.ds.queued(), names.len(), "one copy each, by the writer or the deletion path");
    let m = first.metrics().await.unwrap();
    assert!(metric(&m, "audit_guard_events_queued_total") >= 2.0, "{m}");
    assert!(events_with(&w.client, &w.ns, &uids[4], "AuditEventQueued").await >= 1);

    // A new leader knows only what the CRs say: its controller (the deleting CRs) and its
    // writer (the completed one it finds at start) both poll.
    cp.kill(&first.name).unwrap();
    let _second = w.serve("ev-outage-2", &["--disable-webhook"]).await;
    let posts = w.ds.write_requests();
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed())).await;
    for n in deleted {
        assert!(api.get(n).await.unwrap().has_finalizer(), "{n} released without a stored event");
    }
    w.ds.set_writes_failing(false);
    for n in deleted {
        wait_gone(&api, n).await;
    }
    wait_for("the kept CR's event to be replayed", WAIT, || async {
        Ok((!w.ds.record_events(&uids[6]).is_empty()).then_some(()))
    })
    .await
    .unwrap();
    api.delete(&kept[0], &DeleteParams::default()).await.unwrap();
    wait_gone(&api, &kept[0]).await;
    assert_eq!(w.ds.write_requests(), posts, "the new leader polled; it POSTed nothing");
    assert_eq!(w.ds.queued(), 0);
    for uid in &uids {
        let ev = w.ds.record_events(uid);
        assert_eq!(ev.len(), 1, "{uid}: {ev:?}");
        assert_eq!(
            ev[0]["event_data"]["signal"], "HighMemoryUsage",
            "{uid}: the CR's, whichever path wrote it"
        );
    }
    assert_eq!(w.ds.stored().len(), names.len(), "no extra copy anywhere");
    delete_namespace(&w.client, &w.ns).await;
}

async fn refused_then_fixed(tag: &str, bad_token: String, metric_name: &str, reason: &str, refusal: &str) {
    let w = World::new(tag, &bad_token).await;
    let serve = w.serve(tag, &["--disable-webhook"]).await;
    let api = w.api();
    let uid = create_guarded(&api, "held").await;
    api.delete("held", &DeleteParams::default()).await.unwrap();
    wait_for("the refusal's metric", WAIT, || async {
        Ok((metric(&serve.metrics().await?, metric_name) >= 1.0).then_some(()))
    })
    .await
    .unwrap();
    wait_for("the refusal's Event", WAIT, || async {
        Ok((events_with(&w.client, &w.ns, &uid, reason).await >= 1).then_some(()))
    })
    .await
    .unwrap();
    let ready = reqwest::get(serve.health_url("/readyz/datastorage")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let text = ready.text().await.unwrap();
    assert!(text.contains(refusal), "{text}");
    assert_eq!(
        reqwest::get(serve.health_url("/readyz")).await.unwrap().status(),
        200,
        "the webhook stays in its Service"
    );
    assert!(api.get("held").await.unwrap().has_finalizer(), "kept while refused");
    assert!(w.ds.record_events(&uid).is_empty());
    let m = serve.metrics().await.unwrap();
    for other in [
        "audit_guard_datastorage_unauthenticated_total",
        "audit_guard_datastorage_forbidden_total",
        "audit_guard_datastorage_rejected_total",
    ] {
        if other != metric_name {
            assert_eq!(metric(&m, other), 0.0, "{other}");
        }
    }
    // Fixed (a token Kubernaut takes, for an identity it allows): stored once, then released.
    let good = dir_token(&w.dir, &token(CLIENT_SA, None));
    std::fs::rename(good, &w.token_file).unwrap();
    wait_gone(&api, "held").await;
    assert_eq!(w.ds.record_events(&uid).len(), 1);
    assert_eq!(reqwest::get(serve.health_url("/readyz/datastorage")).await.unwrap().status(), 200);
    delete_namespace(&w.client, &w.ns).await;
}

fn dir_token(dir: &Path, token: &str) -> std::path::PathBuf {
    let p = dir.join("token.new");
    std::fs::write(&p, token).unwrap();
    p
}

/// Acceptance 3: a token for another audience (the shipped `audit-guard-datastorage`) gets 401
/// from Kubernaut's TokenReview, which names no audience.
#[tokio::test]
async fn a_401_raises_its_own_metric_and_event_and_keeps_the_finalizer() {
    let _cluster = support::cluster_shared().await;
    let token = token(CLIENT_SA, Some("audit-guard-datastorage"));
    refused_then_fixed(
        "ev-401",
        token,
        "audit_guard_datastorage_unauthenticated_total",
        "AuditPersistUnauthenticated",
        "unauthenticated",
    )
    .await;
}

/// Acceptance 3: an identity without the RoleBinding to Kubernaut's client role gets 403 — the
/// controller's own ServiceAccount among them: under the overlay it is not Data Storage's client.
#[tokio::test]
async fn a_403_raises_its_own_metric_and_event_and_keeps_the_finalizer() {
    let _cluster = support::cluster_shared().await;
    let token = token("audit-guard", None);
    refused_then_fixed(
        "ev-403",
        token,
        "audit_guard_datastorage_forbidden_total",
        "AuditPersistForbidden",
        "forbidden",
    )
    .await;
}
