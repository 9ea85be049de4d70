//! What a SignalProcessing said is recorded, whenever it said it: the real `audit-guard serve
//! --disable-webhook` binary against a real control plane and a real `audit-guard datastorage`.
//!
//! - The buffered writer's completion-time record, meeting a record the deletion path stored
//!   from a later status, is stored as its amendment (not only counted).
//! - A status change after the deletion-time record was built fails the release patch (it
//!   tests the `resourceVersion` the record was built from); the record of the changed object
//!   is stored too before the object goes. The race is forced with a proxy in front of Data
//!   Storage that holds the controller's record POST while the test writes the status.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use audit_guard::crd::SignalProcessing;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use support::datastorage::{Auth, DataStorage, Options, Serve};
use support::faults::FaultProxy;
use support::*;

const WAIT: Duration = Duration::from_secs(90);

struct Replica {
    client: Client,
    ns: String,
    ds: DataStorage,
    serve: Serve,
    api: Api<SignalProcessing>,
    /// Between the controller and Data Storage, when asked for.
    proxy: Option<FaultProxy>,
}

/// A Data Storage and one `serve` replica (retention off, plus `extra`) watching a fresh
/// namespace, talking to Data Storage through a proxy when `via_proxy`.
async fn replica(tag: &str, extra: &[&str], via_proxy: bool) -> Replica {
    let cp = control_plane();
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    let ns = fresh_namespace(&client, tag).await.unwrap();
    let lease_ns = fresh_namespace(&client, &format!("{tag}-lease")).await.unwrap();
    let ds = DataStorage::launch_on(cp, &format!("ds-{ns}"), Options::sqlite().auth(Auth::Insecure))
        .await
        .unwrap();
    let proxy = if via_proxy {
        Some(FaultProxy::start(&ds.url).await.unwrap())
    } else {
        None
    };
    let url = proxy.as_ref().map_or(ds.url.clone(), |p| p.url.clone());
    let mut args = vec!["--retention", "0"];
    args.extend_from_slice(extra);
    let serve = Serve::start(cp, &format!("serve-{ns}"), &url, &lease_ns, &ns, &args).await.unwrap();
    Replica {
        api: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        ds,
        serve,
        proxy,
    }
}

/// Creates the object and waits for the controller's finalizer; returns its uid.
async fn created(api: &Api<SignalProcessing>, name: &str) -> String {
    api.create(&PostParams::default(), &bare_signalprocessing(name)).await.unwrap();
    let guarded = wait_for("the controller to add the finalizer", WAIT, || async {
        Ok(api.get_opt(name).await?.filter(|sp| sp.has_finalizer()))
    })
    .await
    .unwrap();
    guarded.metadata.uid.unwrap()
}

async fn set_status(api: &Api<SignalProcessing>, name: &str, status: Value) {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .unwrap();
}

fn completed(environment: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({ "phase": "Completed", "startTime": now, "completionTime": now,
            "environmentClassification": { "environment": environment } })
}

async fn wait_gone(api: &Api<SignalProcessing>, name: &str) {
    wait_for("the object to be gone", WAIT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
}

/// The record under `uid` once it has an amendment.
async fn amended_record(ds: &DataStorage, uid: &str) -> Value {
    wait_for("the record and its amendment", WAIT, || async {
        Ok(ds
            .record(uid)
            .await?
            .filter(|r| r["amendments"].as_array().is_some_and(|a| !a.is_empty())))
    })
    .await
    .unwrap()
}

/// The record's and its amendments' values of `key`.
fn contents(record: &Value, key: &str) -> Vec<Value> {
    let amendments = record["amendments"].as_array().cloned().unwrap_or_default();
    std::iter::once(record[key].clone())
        .chain(amendments.iter().map(|a| a[key].clone()))
        .collect()
}

/// Completed (the writer takes the completion-time record), then the environment changed and
/// the CR deleted within 100 ms: the deletion path stores the later content while the writer
/// still holds the earlier (it flushes every 5 s), and the writer's record, meeting it, is
/// stored as its amendment. Both contents are in Data Storage, in whichever order they came.
#[tokio::test]
async fn a_completion_record_meeting_a_later_one_is_stored_as_its_amendment() {
    let _cluster = support::cluster_shared().await;
    let r = replica("rel-both", &["--flush-interval", "5s"], false).await;
    let uid = created(&r.api, "both").await;
    set_status(&r.api, "both", completed("staging")).await;
    wait_for("the completion record handed to the writer", WAIT, || async {
        let m = r.serve.metrics().await?;
        Ok(m.contains("audit_guard_reconcile_total{outcome=\"enqueued\"} 1").then_some(()))
    })
    .await
    .unwrap();
    set_status(
        &r.api,
        "both",
        json!({ "environmentClassification": { "environment": "production" } }),
    )
    .await;
    r.api.delete("both", &DeleteParams::default()).await.unwrap();
    wait_gone(&r.api, "both").await;
    let record = amended_record(&r.ds, &uid).await;
    let environments: BTreeSet<String> = contents(&record, "environment")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    assert_eq!(
        environments,
        BTreeSet::from(["production".to_string(), "staging".to_string()]),
        "{record}"
    );
    assert_eq!(contents(&record, "id").len(), 2, "one record, one amendment: {record}");
    delete_namespace(&r.client, &r.ns).await;
}

/// The controller builds the deletion-time record from the object as it is and POSTs it; the
/// proxy holds that POST while the test writes the status (a new resourceVersion), then lets
/// it through. The release patch tests the version the record was built from, so it fails;
/// the controller reads the object again, stores its record (an amendment: it differs) and
/// releases that version. Both what the object said then and what it said at release are stored.
#[tokio::test]
async fn a_status_change_after_the_record_was_built_is_recorded_before_the_release() {
    let _cluster = support::cluster_shared().await;
    let r = replica("rel-race", &[], true).await;
    let faults = r.proxy.as_ref().map(|p| p.faults.clone()).unwrap();
    // Not finished: the buffered writer leaves it alone, the deletion path builds its record.
    let uid = created(&r.api, "race").await;
    faults.hold_next_record_post();
    r.api.delete("race", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(WAIT, faults.held())
        .await
        .expect("the controller's record POST at the proxy");
    set_status(&r.api, "race", completed("production")).await;
    faults.release();
    wait_gone(&r.api, "race").await;
    let record = amended_record(&r.ds, &uid).await;
    assert_eq!(
        contents(&record, "status"),
        vec![json!("incomplete"), json!("completed")],
        "{record}"
    );
    assert_eq!(contents(&record, "environment"), vec![Value::Null, json!("production")], "{record}");
    delete_namespace(&r.client, &r.ns).await;
}
