//! Back-dating through the status subresource, end to end: a real control plane (with the
//! shipped API-server audit policy), the real `serve` controller, the real Data Storage on
//! real PostgreSQL. A CR whose `status.completionTime` claims 399 days ago is stored with the
//! claim as an anomaly, counted in the current period's report and export, kept by a
//! 15-month retention run, and the status write itself is in the API server's audit log.

use crate::support;

use std::time::Duration;

use audit_guard::crd::SignalProcessing;
use chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::datastorage::{Auth, DataStorage, Options, Serve, TestDb, BASE, READER_TOKEN};
use support::*;

const WAIT: Duration = Duration::from_secs(90);

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The API server's audit events about `name`'s status subresource.
fn status_writes(name: &str) -> Vec<Value> {
    let log = std::fs::read_to_string(control_plane().audit_log()).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["objectRef"]["resource"] == "signalprocessings" && e["objectRef"]["subresource"] == "status")
        .filter(|e| e["objectRef"]["name"] == name)
        .collect()
}

#[tokio::test]
async fn a_cr_back_dated_399_days_is_an_anomaly_counted_now_and_kept_by_retention() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    let ns = fresh_namespace(&client, "backdate").await.unwrap();
    let lease_ns = fresh_namespace(&client, "backdate-lease").await.unwrap();
    let db = TestDb::create().await;
    db.migrate(&[]);
    let ds = DataStorage::launch_on(cp, &format!("ds-{ns}"), Options::postgres(&db.runtime_url()).auth(Auth::Insecure))
        .await
        .unwrap();
    let _serve = Serve::start(cp, &format!("serve-{ns}"), &ds.url, &lease_ns, &ns, &["--retention", "0"])
        .await
        .unwrap();
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let sp: SignalProcessing = serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": "backdated" },
        "spec": { "remediationRequestRef": { "name": "rr-backdated" }, "signal": { "fingerprint": "fp-backdated" } }
    }))
    .unwrap();
    api.create(&PostParams::default(), &sp).await.unwrap();
    let created = wait_for("the controller to add the finalizer", WAIT, || async {
        Ok(api.get_opt("backdated").await?.filter(|sp| sp.has_finalizer()))
    })
    .await
    .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let creation = created.metadata.creation_timestamp.clone().unwrap().0;

    // A status writer claims the CR completed 399 days ago.
    let claimed = Utc::now() - chrono::Duration::days(399);
    let status = json!({ "phase": "Completed", "startTime": stamp(Utc::now()), "completionTime": stamp(claimed) });
    api.patch_status("backdated", &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .unwrap();
    api.delete("backdated", &DeleteParams::default()).await.unwrap();
    wait_for("the object to be gone", WAIT, || async {
        Ok(api.get_opt("backdated").await?.is_none().then_some(()))
    })
    .await
    .unwrap();

    // Stored with the claim as an anomaly; completed_at is what the object proves.
    let record = ds.record(&uid).await.unwrap().expect("stored");
    let anomalies = record["anomalies"].as_array().cloned().unwrap_or_default();
    let listed = anomalies.iter().find(|a| a["field"] == "completed_at").cloned().unwrap_or_default();
    let listed_at: Option<DateTime<Utc>> = listed["value"].as_str().and_then(|v| v.parse().ok());
    assert_eq!(listed_at, Some(stamp(claimed).parse().unwrap()), "{record:#}");
    let completed_at: DateTime<Utc> = record["completed_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(record["completed_at"], record["deleted_at"], "{record:#}");
    assert!(completed_at >= creation, "{completed_at} before the creation {creation}");

    // Counted in the current period's report and export.
    let now = Utc::now();
    let period = format!(
        "since={}&until={}",
        stamp(now - chrono::Duration::hours(1)),
        stamp(now + chrono::Duration::hours(1))
    );
    let (st, report) = ds.get_as(READER_TOKEN, &format!("{BASE}/report?{period}")).await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["records"]["total"], 1, "{report:#}");
    assert_eq!(report["anomalies"]["records"], 1, "{report:#}");
    let (st, export) = ds.get_as(READER_TOKEN, &format!("{BASE}/export?{period}&format=ndjson")).await;
    assert_eq!(st, 200, "{export}");
    let text = export.as_str().map(str::to_string).unwrap_or_else(|| export.to_string());
    assert!(
        text.lines().any(|l| l.contains("\"kind\":\"record\"") && l.contains(&uid)),
        "{text}"
    );

    // A 15-month retention run about three months from now keeps it; verify says intact.
    let pool = db.pool().await;
    let later = Utc::now() + chrono::Duration::days(90);
    audit_guard::datastorage::postgres::drop_old_partitions_at(&pool, 15, later, &Default::default())
        .await
        .unwrap();
    assert!(ds.record(&uid).await.unwrap().is_some(), "dropped by retention");
    let (st, v) = ds.get_as(READER_TOKEN, &format!("{BASE}/verify?retention_months=15")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"], "intact", "{v:#}");

    // The status write is on the API server's own record, at Metadata level.
    let writes = status_writes("backdated");
    assert!(
        writes.iter().any(|e| e["verb"] == "patch" && e["level"] == "Metadata"),
        "{writes:#?}"
    );
    pool.close().await;
    delete_namespace(&client, &ns).await;
    drop(ds);
    db.drop_db().await;
}
