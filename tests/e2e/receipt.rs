//! The CR's receipt, end to end: the real `audit-guard serve --disable-webhook` against a real
//! control plane and a real `audit-guard datastorage` (our own API, SQLite, a signed log). A
//! SignalProcessing deleted through the API carries, in the same patch that removes the
//! finalizer, its record's transparency-log index and record id; the index is the one Data
//! Storage gives that record.

use crate::support;

use std::time::Duration;

use audit_guard::crd::{ANNOTATION_LOG_INDEX, ANNOTATION_LOG_RECORD_ID, ANNOTATION_RECORD_ID};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use support::*;

const WAIT: Duration = Duration::from_secs(90);
const HOLD: &str = "test.audit-guard.io/hold";

#[tokio::test]
async fn a_deleted_cr_carries_its_log_index_and_record_id() {
    let _cluster = support::cluster_shared().await;
    // `serve` is bound so that it lives to the end of the test.
    let crate::controller::One {
        ds, api, serve: _serve, ..
    } = crate::controller::one_replica("receipt").await;
    let name = "receipt-1";
    // The test holds a finalizer of its own, so the object outlives the patch that removes
    // ours and the receipt it wrote can be read back.
    let mut obj = bare_signalprocessing(name);
    obj.metadata.finalizers = Some(vec![HOLD.to_string()]);
    api.create(&PostParams::default(), &obj).await.unwrap();
    wait_for("the controller to add the finalizer", WAIT, || async {
        Ok(api.get_opt(name).await?.filter(|sp| sp.has_finalizer()))
    })
    .await
    .unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let last = wait_for("the controller to release the object", WAIT, || async {
        Ok(api.get_opt(name).await?.filter(|sp| !sp.has_finalizer()))
    })
    .await
    .unwrap();
    assert_eq!(last.finalizers(), [HOLD.to_string()]);

    let annotations = last.annotations();
    let record_id = annotations.get(ANNOTATION_RECORD_ID).expect("the record id annotation").clone();
    assert_eq!(annotations.get(ANNOTATION_LOG_RECORD_ID), Some(&record_id), "{annotations:?}");
    let index: u64 = annotations
        .get(ANNOTATION_LOG_INDEX)
        .unwrap_or_else(|| panic!("no log index on the deleted CR: {annotations:?}"))
        .parse()
        .unwrap();

    // Data Storage gives that record that index, under a signed checkpoint.
    let (status, proof) = ds.get(&format!("/api/v1/log/proof/inclusion?kind=record&id={record_id}")).await;
    assert_eq!(status, 200, "{proof}");
    assert_eq!(proof["index"].as_u64(), Some(index), "{proof}");
    let (status, other) = ds.get(&format!("/api/v1/log/proof/inclusion?index={index}")).await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["entry"], proof["entry"]);

    let release = json!({ "metadata": { "finalizers": null } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(release)).await.unwrap();
    wait_for("the object to be gone", WAIT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
}
