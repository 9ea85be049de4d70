//! The project's CRD on a real API server: install, round-trip both CR shapes, and
//! garbage collection through an ownerReference (the path Kubernaut uses after 24 h).

use crate::support;

use std::time::Duration;

use audit_guard::crd::SignalProcessing;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};
use support::*;

/// Installs the CRD exactly as `audit-guard crd` prints it.
async fn install_printed_crd(client: &kube::Client) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit-guard"))
        .arg("crd")
        .output()
        .expect("run audit-guard crd");
    assert!(
        out.status.success(),
        "audit-guard crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crd: CustomResourceDefinition = serde_yaml::from_slice(&out.stdout).expect("crd yaml");
    apply_crd(client, &crd).await.expect("apply crd");
}

/// Creates the object with its spec, then writes the status through the status subresource.
async fn create_with_status(api: &Api<SignalProcessing>, mut obj: Value) -> SignalProcessing {
    let status = obj.as_object_mut().and_then(|o| o.remove("status"));
    let sp: SignalProcessing = serde_json::from_value(obj).expect("typed");
    let created = api.create(&PostParams::default(), &sp).await.expect("create");
    let name = created.metadata.name.clone().expect("name");
    if let Some(status) = status {
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
            .await
            .expect("patch status");
    }
    api.get(&name).await.expect("get")
}

#[tokio::test]
async fn crd_install_create_read_delete() {
    let _cluster = support::cluster_shared().await;
    let client = admin_client().await;
    install_printed_crd(&client).await;
    let ns = fresh_namespace(&client, "crd").await.expect("ns");
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let sp: SignalProcessing = serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": "simple" },
        "spec": { "remediationRequestRef": { "name": "rr-1" }, "signal": { "fingerprint": "fp-1", "name": "Test" } }
    }))
    .expect("typed");
    api.create(&PostParams::default(), &sp).await.expect("create");
    let read = api.get("simple").await.expect("get");
    assert_eq!(read.spec, sp.spec);
    assert!(read.metadata.uid.is_some());
    api.delete("simple", &DeleteParams::default()).await.expect("delete");
    wait_for("simple to be gone", Duration::from_secs(10), || async {
        Ok(api.get_opt("simple").await?.is_none().then_some(()))
    })
    .await
    .expect("gone");
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn both_cr_shapes_round_trip_without_losing_a_field() {
    let _cluster = support::cluster_shared().await;
    let client = admin_client().await;
    install_printed_crd(&client).await;
    let ns = fresh_namespace(&client, "shapes").await.expect("ns");
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let gvk = GroupVersionKind::gvk("kubernaut.ai", "v1alpha1", "SignalProcessing");
    let raw_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));

    for name in ["kubernaut-today.json", "design-doc.json"] {
        let sent = fixture(name);
        let typed = create_with_status(&api, sent.clone()).await;
        let obj_name = typed.metadata.name.clone().expect("name");
        // What the API server stored: every field we sent is there, unchanged.
        let stored = serde_json::to_value(raw_api.get(&obj_name).await.expect("raw get")).expect("json");
        for part in ["spec", "status"] {
            assert_json_contains(&stored[part], &sent[part], &format!("{name} {part} as stored"));
        }
        // Through our types and back: nothing lost either (durations normalise to Go strings).
        let retyped = serde_json::to_value(&typed).expect("json");
        assert_json_contains_modulo_durations(&retyped["spec"], &sent["spec"], &format!("{name} spec via types"));
        assert_json_contains_modulo_durations(&retyped["status"], &sent["status"], &format!("{name} status via types"));
    }
    delete_namespace(&client, &ns).await;
}

/// Every key and value of `expected` is in `actual`.
fn assert_json_contains(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, v) in e {
                let got = a.get(k).unwrap_or_else(|| panic!("{at}: field {k} lost; have {a:?}"));
                assert_json_contains(got, v, &format!("{at}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{at}: array length");
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                assert_json_contains(x, y, &format!("{at}[{i}]"));
            }
        }
        (a, e) => assert_eq!(a, e, "{at}"),
    }
}

fn assert_json_contains_modulo_durations(actual: &Value, expected: &Value, at: &str) {
    let is_duration_key = |k: &str| k == "duration" || k.ends_with("Duration") || k == "timeout";
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, v) in e {
                let got = a.get(k).unwrap_or_else(|| panic!("{at}: field {k} lost; have {a:?}"));
                if is_duration_key(k) {
                    let g: audit_guard::duration::GoDuration = serde_json::from_value(got.clone()).expect("duration");
                    let w: audit_guard::duration::GoDuration = serde_json::from_value(v.clone()).expect("duration");
                    assert_eq!(g, w, "{at}.{k}");
                } else {
                    assert_json_contains_modulo_durations(got, v, &format!("{at}.{k}"));
                }
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{at}: array length");
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                assert_json_contains_modulo_durations(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::String(a), Value::String(e)) if looks_like_time(e) => {
            let pa = chrono::DateTime::parse_from_rfc3339(a).expect("time");
            let pe = chrono::DateTime::parse_from_rfc3339(e).expect("time");
            assert_eq!(pa, pe, "{at}");
        }
        (a, e) => assert_eq!(a, e, "{at}"),
    }
}

fn looks_like_time(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[tokio::test]
async fn garbage_collector_deletes_signalprocessing_after_its_owner() {
    let _cluster = support::cluster_shared().await;
    let client = admin_client().await;
    install_printed_crd(&client).await;
    install_remediationrequest_crd(&client).await.expect("parent crd");
    let ns = fresh_namespace(&client, "gc").await.expect("ns");
    let rr_res = ApiResource::from_gvk(&GroupVersionKind::gvk("test.kubernaut.ai", "v1", "RemediationRequest"));
    let rr_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &rr_res);
    let rr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.kubernaut.ai/v1", "kind": "RemediationRequest", "metadata": { "name": "rr-gc" }
    }))
    .expect("rr");
    let rr = rr_api.create(&PostParams::default(), &rr).await.expect("create rr");
    let uid = rr.metadata.uid.clone().expect("uid");

    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let sp: SignalProcessing = serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": "owned", "ownerReferences": [{
            "apiVersion": "test.kubernaut.ai/v1", "kind": "RemediationRequest", "name": "rr-gc", "uid": uid, "controller": true
        }] },
        "spec": { "remediationRequestRef": { "name": "rr-gc" } }
    }))
    .expect("sp");
    api.create(&PostParams::default(), &sp).await.expect("create sp");
    rr_api.delete("rr-gc", &DeleteParams::background()).await.expect("delete rr");
    wait_for(
        "kube-controller-manager to collect the SignalProcessing",
        Duration::from_secs(60),
        || async { Ok(api.get_opt("owned").await?.is_none().then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", control_plane().log_tail("kube-controller-manager")));
    delete_namespace(&client, &ns).await;
}
