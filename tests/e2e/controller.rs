//! The finalizer controller end to end: the real `audit-guard serve --disable-webhook`
//! binary against a real control plane and a real `audit-guard datastorage`.

use crate::support;

use crate::webhook_support;

use std::collections::HashSet;
use std::time::Duration;

use audit_guard::audit::from_cr::build_record;
use audit_guard::audit::Trigger;
use audit_guard::crd::{SignalProcessing, ANNOTATION_RECORD_ID, FINALIZER};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use support::datastorage::{Auth, DataStorage, Options, Serve, Tls};
use support::*;

const WAIT: Duration = Duration::from_secs(90);

/// A namespace to watch, a namespace for the Lease, and a Data Storage.
async fn setup(tag: &str) -> (Client, String, String, DataStorage) {
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    let ns = fresh_namespace(&client, tag).await.unwrap();
    let lease_ns = fresh_namespace(&client, &format!("{tag}-lease")).await.unwrap();
    let ds = DataStorage::launch_on(control_plane(), &format!("ds-{ns}"), Options::sqlite().auth(Auth::Insecure))
        .await
        .unwrap();
    (client, ns, lease_ns, ds)
}

/// One `serve` replica (retention off) watching a fresh namespace.
pub(crate) struct One {
    pub(crate) client: Client,
    pub(crate) ns: String,
    pub(crate) ds: DataStorage,
    pub(crate) serve: Serve,
    pub(crate) api: Api<SignalProcessing>,
}

pub(crate) async fn one_replica(tag: &str) -> One {
    let (client, ns, lease_ns, ds) = setup(tag).await;
    let serve = Serve::start(
        control_plane(),
        &format!("serve-{ns}"),
        &ds.url,
        &lease_ns,
        &ns,
        &["--retention", "0"],
    )
    .await
    .unwrap();
    let api = Api::namespaced(client.clone(), &ns);
    One {
        client,
        ns,
        ds,
        serve,
        api,
    }
}

fn bare(name: &str) -> SignalProcessing {
    bare_signalprocessing(name)
}

/// Creates the object from a fixture (spec first, then status through the subresource).
async fn create_from(api: &Api<SignalProcessing>, mut obj: Value, name: &str) -> SignalProcessing {
    obj["metadata"] = json!({ "name": name });
    let status = obj.as_object_mut().and_then(|o| o.remove("status"));
    let sp: SignalProcessing = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &sp).await.unwrap();
    if let Some(status) = status {
        set_status(api, name, status).await;
    }
    api.get(name).await.unwrap()
}

async fn set_status(api: &Api<SignalProcessing>, name: &str, status: Value) {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .unwrap();
}

async fn wait_finalizer(api: &Api<SignalProcessing>, name: &str) -> SignalProcessing {
    wait_for("the controller to add the finalizer", WAIT, || async {
        Ok(api.get_opt(name).await?.filter(|sp| sp.has_finalizer()))
    })
    .await
    .unwrap()
}

async fn wait_gone(api: &Api<SignalProcessing>, name: &str) {
    wait_for("the object to be gone", WAIT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
}

async fn wait_record(ds: &DataStorage, id: &str) -> Value {
    wait_for("the record in Data Storage", WAIT, || async { ds.record(id).await })
        .await
        .unwrap()
}

async fn failed_events(client: &Client, ns: &str, uid: &str) -> usize {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("AuditPersistFailed") && e.involved_object.uid.as_deref() == Some(uid))
        .count()
}

#[tokio::test]
async fn completed_cr_is_recorded_by_the_buffered_writer() {
    let _cluster = support::cluster_shared().await;
    let One {
        client,
        ns,
        ds,
        serve,
        api,
    } = one_replica("complete").await;
    api.create(&PostParams::default(), &bare("done")).await.unwrap();
    let sp = wait_finalizer(&api, "done").await;
    let uid = sp.metadata.uid.clone().unwrap();
    assert!(ds.record(&uid).await.unwrap().is_none(), "nothing is written before completion");

    let mut status = fixture_dated_now("kubernaut-today.json")["status"].clone();
    status["phase"] = json!("Completed");
    set_status(&api, "done", status).await;
    let rec = wait_record(&ds, &uid).await;
    assert_eq!(rec["trigger"], "completion");
    assert_eq!(rec["status"], "completed");
    assert_eq!(rec["environment"], "production");
    // Still in the cluster: completion alone never removes anything.
    assert!(api.get("done").await.unwrap().has_finalizer());
    let m = serve.metrics().await.unwrap();
    for line in [
        "audit_events_written_total 1",
        "audit_events_dropped_total 0",
        "audit_batches_failed_total 0",
        "audit_buffer_size 0",
        "kubernaut_signal_processing_audit_storage_attempts_total{status=\"success\"} 1",
        "kubernaut_signal_processing_audit_storage_duration_seconds_bucket{le=\"0.01\"}",
        "kubernaut_signal_processing_audit_storage_duration_seconds_bucket{le=\"0.25\"}",
        "kubernaut_signal_processing_audit_storage_duration_seconds_bucket{le=\"1\"}",
    ] {
        assert!(m.contains(line), "metrics lack {line}:\n{m}");
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deletion_stores_the_record_then_releases_the_object() {
    let _cluster = support::cluster_shared().await;
    let One {
        client,
        ns,
        ds,
        serve: _serve,
        api,
    } = one_replica("delete").await;
    for (name, file) in [("today", "kubernaut-today.json"), ("design", "design-doc.json")] {
        create_from(&api, fixture_dated_now(file), name).await;
        let sp = wait_finalizer(&api, name).await;
        let uid = sp.metadata.uid.clone().unwrap();
        api.delete(name, &DeleteParams::default()).await.unwrap();
        wait_gone(&api, name).await;
        let rec = ds.record(&uid).await.unwrap().expect("stored before the object went away");
        for key in audit_guard::audit::DESIGN_KEYS {
            assert!(rec.get(key).is_some(), "{name}: key {key} missing in {rec}");
        }
        assert_eq!(rec["id"], uid.as_str());
        assert_eq!(rec["status"], "completed");
        assert_eq!(rec["processing_phases"].as_array().unwrap().len(), 3);
        if name == "today" {
            assert_eq!(rec["remediation_id"], "rr-mem-pressure-1");
            assert_eq!(rec["environment"], "production");
            assert_eq!(rec["priority"], "P0");
            assert_eq!(rec["business_criticality"], "critical");
        } else {
            assert_eq!(rec["remediation_id"], "rr-design-1");
            assert_eq!(rec["environment"], "staging");
            assert_eq!(rec["confidence"], 0.92);
            assert_eq!(rec["priority_score"], 82);
            assert_eq!(rec["enrichment_quality"], 0.75);
        }
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deletion_waits_while_data_storage_is_down() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let One {
        client,
        ns,
        ds,
        serve,
        api,
    } = one_replica("down").await;
    api.create(&PostParams::default(), &bare("waits")).await.unwrap();
    let uid = wait_finalizer(&api, "waits").await.metadata.uid.unwrap();

    ds.stop(cp).unwrap();
    api.delete("waits", &DeleteParams::default()).await.unwrap();
    wait_for("an AuditPersistFailed event", WAIT, || async {
        Ok((failed_events(&client, &ns, &uid).await > 0).then_some(()))
    })
    .await
    .unwrap();
    let held = api.get("waits").await.expect("still there while Data Storage is down");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held.has_finalizer());
    let m = serve.metrics().await.unwrap();
    assert!(
        m.contains("kubernaut_signal_processing_audit_storage_attempts_total{status=\"error\"}"),
        "{m}"
    );

    ds.resume(cp).await.unwrap();
    wait_gone(&api, "waits").await;
    let rec = ds.record(&uid).await.unwrap().expect("exactly one record");
    assert_eq!(rec["status"], "incomplete");
    assert_eq!(rec["trigger"], "deletion");
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deleting_the_owner_records_the_signalprocessing() {
    let _cluster = support::cluster_shared().await;
    let One {
        client,
        ns,
        ds,
        serve: _serve,
        api,
    } = one_replica("owner").await;
    install_remediationrequest_crd(&client).await.unwrap();
    let rr_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("test.kubernaut.ai", "v1", "RemediationRequest")),
    );
    let rr: DynamicObject = serde_json::from_value(
        json!({ "apiVersion": "test.kubernaut.ai/v1", "kind": "RemediationRequest", "metadata": { "name": "rr-1" } }),
    )
    .unwrap();
    let rr_uid = rr_api.create(&PostParams::default(), &rr).await.unwrap().metadata.uid.unwrap();
    let mut obj = fixture_dated_now("kubernaut-today.json");
    obj["spec"]["remediationRequestRef"]["name"] = json!("rr-1");
    let sp = create_from(&api, obj, "owned").await;
    api.patch(
        "owned",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "ownerReferences": [{
            "apiVersion": "test.kubernaut.ai/v1", "kind": "RemediationRequest", "name": "rr-1", "uid": rr_uid, "controller": true
        }] } })),
    )
    .await
    .unwrap();
    let uid = sp.metadata.uid.unwrap();
    wait_finalizer(&api, "owned").await;
    rr_api.delete("rr-1", &DeleteParams::background()).await.unwrap();
    wait_gone(&api, "owned").await;
    let rec = ds.record(&uid).await.unwrap().expect("record stored");
    assert_eq!(rec["remediation_id"], "rr-1");
    delete_namespace(&client, &ns).await;
}

async fn create_many(api: &Api<SignalProcessing>, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move { api.create(&PostParams::default(), &bare(&format!("sp-{i:04}"))).await })
        .buffer_unordered(16)
        .map_ok(|sp| sp.metadata.uid.unwrap())
        .try_collect()
        .await
        .unwrap()
}

async fn wait_all_finalized(api: &Api<SignalProcessing>, n: usize) {
    wait_for("every object to carry the finalizer", WAIT, || async {
        let list = api.list(&ListParams::default()).await?;
        Ok((list.items.len() == n && list.items.iter().all(|sp| sp.has_finalizer())).then_some(()))
    })
    .await
    .unwrap();
}

async fn wait_all_gone(api: &Api<SignalProcessing>) {
    wait_for("every object to be gone", Duration::from_secs(240), || async {
        Ok(api.list(&ListParams::default()).await?.items.is_empty().then_some(()))
    })
    .await
    .unwrap();
}

async fn assert_one_record_each(ds: &DataStorage, uids: &[String]) {
    let distinct: HashSet<&String> = uids.iter().collect();
    assert_eq!(distinct.len(), uids.len());
    for uid in uids {
        let rec = ds.record(uid).await.unwrap().unwrap_or_else(|| panic!("no record for {uid}"));
        assert_eq!(rec["id"], uid.as_str());
    }
}

async fn leader(client: &Client, lease_ns: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), lease_ns);
    leases.get_opt("audit-guard-controller").await.ok()??.spec?.holder_identity
}

#[tokio::test]
async fn mass_deletion_with_two_replicas() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let (client, ns, lease_ns, ds) = setup("mass").await;
    for r in ["a", "b"] {
        Serve::start(cp, &format!("serve-{ns}-{r}"), &ds.url, &lease_ns, &ns, &["--retention", "0"])
            .await
            .unwrap();
    }
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let uids = create_many(&api, 200).await;
    wait_all_finalized(&api, 200).await;
    let started = std::time::Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    wait_all_gone(&api).await;
    // A figure for the report, not an assertion: speed belongs to benchmarks.
    eprintln!("200 SignalProcessings audited and gone in {:?}", started.elapsed());
    assert_one_record_each(&ds, &uids).await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn leader_killed_mid_deletion_is_replaced() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let (client, ns, lease_ns, ds) = setup("failover").await;
    let names = [format!("serve-{ns}-a"), format!("serve-{ns}-b")];
    for name in &names {
        Serve::start(cp, name, &ds.url, &lease_ns, &ns, &["--retention", "0"])
            .await
            .unwrap();
    }
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let uids = create_many(&api, 200).await;
    wait_all_finalized(&api, 200).await;
    let first = leader(&client, &lease_ns).await.expect("a leader");
    // Hold the deletions back (Data Storage down) so that the leader is surely in the middle
    // of them when it dies: it is retrying every one when Data Storage comes back.
    ds.stop(cp).unwrap();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    wait_for("the leader to be failing deletions", WAIT, || async {
        Ok((failed_events(&client, &ns, &uids[0]).await > 0).then_some(()))
    })
    .await
    .unwrap();
    ds.resume(cp).await.unwrap();
    wait_for("the leader to finish some deletions", WAIT, || async {
        Ok((api.list(&ListParams::default()).await?.items.len() < 200).then_some(()))
    })
    .await
    .unwrap();
    cp.kill(&first).unwrap();
    let left = api.list(&ListParams::default()).await.unwrap().items.len();
    eprintln!("leader {first} killed with {left} SignalProcessings left");
    let second = wait_for("the other replica to take the Lease", WAIT, || async {
        Ok(leader(&client, &lease_ns).await.filter(|l| *l != first))
    })
    .await
    .unwrap();
    assert!(names.contains(&second));
    wait_all_gone(&api).await;
    assert_one_record_each(&ds, &uids).await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn retention_deletes_only_old_completed_crs() {
    let _cluster = support::cluster_shared().await;
    let (client, ns, lease_ns, ds) = setup("retention").await;
    let _serve = Serve::start(
        control_plane(),
        &format!("serve-{ns}"),
        &ds.url,
        &lease_ns,
        &ns,
        &["--retention", "1h", "--retention-interval", "1s"],
    )
    .await
    .unwrap();
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let now = chrono::Utc::now();
    let mut old_uid = String::new();
    for (name, age) in [("old", chrono::Duration::hours(2)), ("young", chrono::Duration::minutes(10))] {
        let created = api.create(&PostParams::default(), &bare(name)).await.unwrap();
        if name == "old" {
            old_uid = created.metadata.uid.unwrap();
        }
        let done = (now - age).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        set_status(
            &api,
            name,
            json!({ "phase": "Completed", "startTime": done, "completionTime": done }),
        )
        .await;
    }
    // The cleaner may delete it (and the controller release it) before a poll sees the finalizer.
    wait_gone(&api, "old").await;
    assert_eq!(ds.record(&old_uid).await.unwrap().expect("old one audited")["status"], "completed");
    let young = api.get("young").await.expect("the younger one stays");
    assert!(young.metadata.deletion_timestamp.is_none());
    // The young one keeps its finalizer and has no release annotations.
    assert!(young.has_finalizer());
    assert!(!young.annotations().contains_key(ANNOTATION_RECORD_ID));
    assert!(young.finalizers().iter().any(|f| f == FINALIZER));
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn release_keeps_other_finalizers_and_annotates() {
    let _cluster = support::cluster_shared().await;
    let One {
        client,
        ns,
        ds,
        serve: _serve,
        api,
    } = one_replica("others").await;
    let mut sp = bare("held");
    sp.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &sp).await.unwrap();
    let uid = wait_finalizer(&api, "held").await.metadata.uid.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let released = wait_for("our finalizer to come off", WAIT, || async {
        Ok(api.get_opt("held").await?.filter(|sp| !sp.has_finalizer()))
    })
    .await
    .unwrap();
    assert_eq!(released.finalizers(), ["example.com/hold".to_string()]);
    assert_eq!(released.annotations().get(ANNOTATION_RECORD_ID), Some(&uid));
    assert!(released.annotations().contains_key(audit_guard::crd::ANNOTATION_PERSISTED_AT));
    assert!(ds.record(&uid).await.unwrap().is_some());
    strip_finalizers(&api, "held").await;
    wait_gone(&api, "held").await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_and_exits_cleanly() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let (client, ns, lease_ns, ds) = setup("sigterm").await;
    let mut child = tokio::process::Command::new(support::datastorage::binary())
        .env("KUBECONFIG", &cp.kubeconfig)
        .args(["serve", "--disable-webhook", "--datastorage-url", &ds.url, "--retention", "0"])
        .args(["--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
        .args([
            "--lease-namespace",
            &lease_ns,
            "--lease-duration",
            "30s",
            "--namespaces",
            &ns,
            "--identity",
            "graceful",
        ])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("the replica to lead", WAIT, || async {
        Ok(leader(&client, &lease_ns).await.filter(|l| l == "graceful"))
    })
    .await
    .unwrap();
    let pid = child.id().unwrap() as i32;
    // SAFETY: plain kill(2) on our own child's pid.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    // Released, not left to expire: holderIdentity is cleared.
    assert_eq!(leader(&client, &lease_ns).await, None);
    delete_namespace(&client, &ns).await;
}

// ---- Data Storage with TokenReview; the controller on ServiceAccount tokens --------------

/// Data Storage on TLS, authenticating by TokenReview (on its own ServiceAccount's token) and
/// authorizing by SubjectAccessReview against the shipped ClusterRoles; one `serve`
/// (controller) on the audit-guard ServiceAccount's tokens: one for the API server, one from
/// the TokenRequest API with the manifests' Data Storage audience.
struct Authed {
    client: Client,
    ns: String,
    ds: DataStorage,
    serve: Serve,
    api: Api<SignalProcessing>,
    /// The controller's Data Storage token (a writer).
    writer_token: String,
}

async fn authed(tag: &str) -> Authed {
    authed_trusting(tag, None).await
}

/// As [`authed`]; the controller trusts `ca_file` for Data Storage instead of its real CA.
async fn authed_trusting(tag: &str, ca_file: Option<std::path::PathBuf>) -> Authed {
    let cp = control_plane();
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    install_shipped_rbac(cp);
    let ns = fresh_namespace(&client, tag).await.unwrap();
    let lease_ns = fresh_namespace(&client, &format!("{tag}-lease")).await.unwrap();
    // The shipped lease Role names one Lease in audit-guard; each test campaigns on its own.
    cp.kubectl(&[
        "create",
        "role",
        "lease",
        "-n",
        &lease_ns,
        "--verb=get,create,update",
        "--resource=leases.coordination.k8s.io",
    ])
    .unwrap();
    cp.kubectl(&[
        "create",
        "rolebinding",
        "lease",
        "-n",
        &lease_ns,
        "--role=lease",
        "--serviceaccount=audit-guard:audit-guard",
    ])
    .unwrap();

    let audience = audit_guard::datastorage::authz::DEFAULT_TOKEN_AUDIENCE;
    let ds_identity = token_kubeconfig(cp, &format!("ds-{ns}"), &sa_token(cp, "audit-guard-datastorage", None));
    // Data Storage on TLS, its certificate from a CA the controller is told to trust alone.
    let certs = cp.dir.join(format!("certs-{ns}"));
    webhook_support::issue_certs(&certs, false);
    let tls_dir = certs.join(audit_guard::certs::DATASTORAGE_DIR);
    let mut ds = DataStorage::launch_on(
        cp,
        &format!("ds-{ns}"),
        Options::sqlite()
            .auth(Auth::TokenReview)
            .tls(Tls::Dir(tls_dir.clone()))
            .env("KUBECONFIG", ds_identity.to_str().unwrap()),
    )
    .await
    .unwrap();
    let writer_token = sa_token(cp, "audit-guard", Some(audience));
    let token_file = cp.dir.join(format!("ds-token-{ns}"));
    std::fs::write(&token_file, &writer_token).unwrap();
    ds.token = Some(writer_token.clone());
    let kubeconfig = token_kubeconfig(cp, &format!("ctl-{ns}"), &sa_token(cp, "audit-guard", None));
    let ca_file = ca_file.unwrap_or_else(|| tls_dir.join("ca.crt"));
    let serve = Serve::start_with_kubeconfig(
        cp,
        &format!("serve-{ns}"),
        &kubeconfig,
        &ds.url,
        &lease_ns,
        &ns,
        &[
            "--retention",
            "0",
            "--datastorage-token-file",
            token_file.to_str().unwrap(),
            "--datastorage-ca-file",
            ca_file.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    Authed {
        api: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        ds,
        serve,
        writer_token,
    }
}

/// POSTs a record straight to Data Storage with `token`; returns the status.
async fn post_record(ds: &DataStorage, token: &str, record: &Value) -> u16 {
    ds.post("/api/v1/audit/signal-processing", token, record).await.unwrap()
}

fn completed_now() -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({ "phase": "Completed", "startTime": now, "completionTime": now })
}

/// The controller, holding only a TokenRequest token with the manifests' audience for Data
/// Storage, stores the record (Data Storage checks it by TokenReview with that audience and
/// by SubjectAccessReview against the shipped writer role); the same ServiceAccount's API
/// server token (another audience) is refused by Data Storage.
#[tokio::test]
async fn the_controller_writes_with_a_tokenrequest_token_for_the_manifests_audience() {
    let _cluster = support::cluster_shared().await;
    let t = authed("auth-cycle").await;
    let (client, ns, ds, api) = (&t.client, &t.ns, &t.ds, &t.api);
    api.create(&PostParams::default(), &bare("cycle")).await.unwrap();
    let uid = wait_finalizer(api, "cycle").await.metadata.uid.unwrap();
    set_status(api, "cycle", completed_now()).await;
    api.delete("cycle", &DeleteParams::default()).await.unwrap();
    wait_gone(api, "cycle").await;
    let record = ds.record(&uid).await.unwrap().expect("stored with the audience token");
    assert_eq!(record["status"], "completed");
    let wrong_audience = sa_token(control_plane(), "audit-guard", None);
    let planted = json!({ "id": "x-1", "remediation_id": "rr", "signal_fingerprint": "fp", "processing_phases": [],
                          "completed_at": chrono::Utc::now(), "status": "completed" });
    assert_eq!(post_record(ds, &wrong_audience, &planted).await, 401);
    delete_namespace(client, ns).await;
}

/// A different record planted under a live CR's uid (by anyone who could write): on deletion
/// the controller stores its own as an amendment, counts the conflict, emits a Warning Event
/// naming what differs, and only then lets the CR go. Both records are in Data Storage.
#[tokio::test]
async fn a_different_record_planted_under_the_uid_is_amended_counted_and_evented() {
    let _cluster = support::cluster_shared().await;
    let t = authed("conflict").await;
    let (client, ns, ds, api) = (&t.client, &t.ns, &t.ds, &t.api);
    api.create(&PostParams::default(), &bare("victim")).await.unwrap();
    let live = wait_finalizer(api, "victim").await;
    let uid = live.metadata.uid.clone().unwrap();
    let mut planted = serde_json::to_value(build_record(&live, Trigger::Deletion, chrono::Utc::now())).unwrap();
    planted["status"] = json!("failed");
    planted["error_message"] = json!("planted");
    planted["environment"] = json!("planted");
    assert_eq!(post_record(ds, &t.writer_token, &planted).await, 201);

    set_status(api, "victim", completed_now()).await;
    api.delete("victim", &DeleteParams::default()).await.unwrap();
    wait_gone(api, "victim").await;
    let held = ds.record(&uid).await.unwrap().expect("the planted record");
    assert_eq!(
        (held["status"].as_str(), held["error_message"].as_str()),
        (Some("failed"), Some("planted")),
        "{held}"
    );
    let amendments = held["amendments"].as_array().cloned().unwrap_or_default();
    assert_eq!(amendments.len(), 1, "{held}");
    assert_eq!(
        (amendments[0]["status"].as_str(), amendments[0]["trigger"].as_str()),
        (Some("completed"), Some("deletion"))
    );
    assert_eq!(amendments[0]["environment"], Value::Null);

    let m = t.serve.metrics().await.unwrap();
    assert!(m.contains("audit_guard_record_conflicts_total{path=\"deletion\"} 1"), "{m}");
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let conflicts: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("AuditRecordConflict") && e.involved_object.uid.as_deref() == Some(uid.as_str()))
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].type_.as_deref(), Some("Warning"));
    let note = conflicts[0].message.clone().unwrap_or_default();
    for key in ["environment", "error_message", "status"] {
        assert!(note.contains(key), "the Event should name {key}: {note}");
    }
    delete_namespace(client, ns).await;
}

/// Whoever may patch `signalprocessings/status` cannot hold a deletion forever with values
/// the schema cannot take: they are stored as null and listed as anomalies.
#[tokio::test]
async fn out_of_range_status_values_become_anomalies_and_the_deletion_completes() {
    let _cluster = support::cluster_shared().await;
    let t = authed("anomaly").await;
    let (client, ns, ds, api) = (&t.client, &t.ns, &t.ds, &t.api);
    api.create(&PostParams::default(), &bare("odd")).await.unwrap();
    let uid = wait_finalizer(api, "odd").await.metadata.uid.unwrap();
    let mut status = completed_now();
    status["environmentClassification"] = json!({ "environment": "Production", "confidence": 5 });
    status["classificationDuration"] = json!("-2s");
    set_status(api, "odd", status).await;
    api.delete("odd", &DeleteParams::default()).await.unwrap();
    wait_gone(api, "odd").await;
    let record = ds.record(&uid).await.unwrap().expect("stored");
    assert_eq!(record["confidence"], Value::Null, "{record}");
    assert_eq!(record["processing_phases"][1]["duration"], Value::Null, "{record}");
    assert_eq!(record["environment"], "production");
    let anomalies = record["anomalies"].as_array().cloned().unwrap_or_default();
    for (field, value) in [("confidence", json!(5.0)), ("processing_phases[1].duration", json!("-2s"))] {
        assert!(
            anomalies.iter().any(|a| a["field"] == field && a["value"] == value),
            "{field} = {value} not listed: {anomalies:?}"
        );
    }
    delete_namespace(client, ns).await;
}

/// The controller checks Data Storage's certificate against its CA file alone: a certificate
/// another CA signed is refused (the deletion waits, alarmed), however the rest is set up.
#[tokio::test]
async fn a_datastorage_certificate_from_another_ca_is_refused() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let other = cp.dir.join(format!("other-ca-{}", uuid::Uuid::new_v4().simple()));
    webhook_support::issue_certs(&other, false);
    let t = authed_trusting("other-ca", Some(other.join("ca.crt"))).await;
    let (client, ns, ds, api) = (&t.client, &t.ns, &t.ds, &t.api);
    api.create(&PostParams::default(), &bare("held")).await.unwrap();
    let uid = wait_finalizer(api, "held").await.metadata.uid.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    wait_for("an AuditPersistFailed event", WAIT, || async {
        Ok((failed_events(client, ns, &uid).await > 0).then_some(()))
    })
    .await
    .unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("AuditPersistFailed"))
        .filter_map(|e| e.message)
        .collect();
    assert!(notes.iter().any(|n| n.to_lowercase().contains("certificate")), "{notes:?}");
    assert!(api.get("held").await.unwrap().has_finalizer(), "released without a stored record");
    assert!(ds.record(&uid).await.unwrap().is_none());
    strip_finalizers(api, "held").await;
    delete_namespace(client, ns).await;
}
