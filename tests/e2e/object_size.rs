//! What users put in SignalProcessings does not grow `serve`'s memory.
//!
//! On the real control plane, a real `audit-guard serve` child (controller and webhook, the
//! webhooks registered with the API server, failurePolicy Fail) and a real Data Storage: after a
//! warm-up with 20 ordinary objects, 20 objects of about 1 MB each (the largest the API server
//! stores) are created in one namespace — 10 with a contextSources list of empty objects, 10
//! with 20,000 signal labels — interleaved with ordinary ones, then all are deleted.
//!
//! Asserted: serve's resident memory (VmRSS of the child, sampled throughout) stays within
//! [`BOUND_MIB`] of its idle figure; every create is admitted with the finalizer; every object,
//! big or not, gets its record stored (the big ones with their contextSources counted).
//! The figures are printed.

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audit_guard::crd::SignalProcessing;
use audit_guard::webhook::registration;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use support::datastorage::*;
use support::{admin_client, apply_cluster, control_plane, fresh_namespace, install_signalprocessing_crd, wait_for};

/// Objects of each big shape.
const BIG_PER_SHAPE: usize = 10;
const ORDINARY: usize = 20;
/// How far above its idle figure serve's resident memory may go, at its peak through creation
/// and deletion (the stated bound): objects are decoded slim, so what remains is a watch
/// event's or review's bytes while they are read; cached objects add next to nothing.
const BOUND_MIB: u64 = 32;
/// How much a further 10 big objects may add once the first ones were met (cached whole, 10
/// objects of 20,000 labels would add well over that).
const FURTHER_MIB: u64 = 8;
/// Empty objects in a contextSources list of about 1 MB (`{},` each).
const CONTEXT_SOURCES: usize = 330_000;
/// Signal labels of about 1 MB with their managedFields entry.
const LABELS: usize = 20_000;

/// `VmRSS` (or another `Vm*` line) of a process, in KiB.
fn vm_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim_start_matches(':')
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn ordinary(name: &str) -> SignalProcessing {
    serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": name },
        "spec": { "remediationRequestRef": { "name": format!("rr-{name}") }, "signal": { "fingerprint": format!("fp-{name}") } }
    }))
    .unwrap()
}

/// A ~1 MB object: a contextSources list of empty objects, or 20,000 signal labels.
fn big(name: &str, labels: bool) -> Value {
    let mut v = json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": name },
        "spec": { "remediationRequestRef": { "name": format!("rr-{name}") }, "signal": { "fingerprint": format!("fp-{name}") } }
    });
    if labels {
        let map: serde_json::Map<String, Value> = (0..LABELS)
            .map(|i| (format!("label-{i:05}"), json!(format!("value-{i:05}-abcdefghijklmnop"))))
            .collect();
        v["spec"]["signal"]["labels"] = Value::Object(map);
    } else {
        v["spec"]["enrichmentConfig"] = json!({ "contextSources": vec![json!({}); CONTEXT_SOURCES] });
    }
    v
}

/// Reconciles the controller has finished, whatever their outcome.
async fn reconciles(serve: &Serve) -> f64 {
    let text = serve.metrics().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("audit_guard_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_megabyte_per_object_does_not_grow_serves_memory() {
    let _cluster = support::cluster_exclusive().await;
    let cp = control_plane();
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    let ns = fresh_namespace(&client, "bigobj").await.unwrap();
    let lease_ns = fresh_namespace(&client, "bigobj-lease").await.unwrap();
    let svc = DataStorage::launch(Options::sqlite().tls(Tls::Issued)).await;
    // The test's client is the admin: serve releases as that identity, and the webhook checks
    // those releases as the controller's.
    let guard = GuardingServe::start_with(cp, &svc, &lease_ns, &ns, &["--controller-identity", "admin"])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let serve_name = guard.serve.name.clone();
    let pid = cp
        .pids()
        .into_iter()
        .find(|(n, _)| *n == serve_name)
        .map(|(_, p)| p)
        .expect("serve's pid");

    // The webhooks in the API server's path, for this namespace only.
    let ca_bundle = audit_guard::certs::ca_bundle(&guard.webhook_ca_pem);
    let selector = json!({ "matchExpressions": [{ "key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns] }] });
    let base = format!("https://{}", guard.webhook_addr);
    let (mutating, validating) = registration::url_configurations("audit-guard-bigobj", &base, &ca_bundle, Some(selector));
    apply_cluster::<MutatingWebhookConfiguration>(&client, mutating).await;
    apply_cluster::<ValidatingWebhookConfiguration>(&client, validating).await;
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for("the webhooks to apply", Duration::from_secs(30), || async {
        Ok(api.create(&dry, &ordinary("probe")).await?.has_finalizer().then_some(()))
    })
    .await
    .unwrap();

    let admitted = |sp: SignalProcessing| {
        assert!(sp.has_finalizer(), "{:?} admitted without the finalizer", sp.metadata.name);
        (sp.metadata.name.unwrap_or_default(), sp.metadata.uid.unwrap_or_default())
    };
    let mut uids = vec![];
    // Warm-up: ordinary objects created, deleted with their records, and created again.
    for round in 0..2 {
        for i in 0..ORDINARY {
            let created = api
                .create(&PostParams::default(), &ordinary(&format!("warm-{round}-{i:02}")))
                .await
                .unwrap();
            uids.push((admitted(created), None));
        }
        if round == 0 {
            api.delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
                .unwrap();
            wait_for("the warm-up objects to go", Duration::from_secs(120), || async {
                Ok(api.list(&ListParams::default()).await?.items.is_empty().then_some(()))
            })
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&serve_name)));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = vm_kib(pid, "VmRSS");
    assert!(idle > 0, "serve's VmRSS is readable");

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(vm_kib(pid, "VmRSS"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let reconciles_before = reconciles(&guard.serve).await;
    let known_before = uids.len();

    // The big objects, each shape in turn, with ordinary ones created meanwhile.
    let mut body_bytes = vec![];
    let mut after_shape = vec![];
    for (shape, labels) in [("sources", false), ("labels", true)] {
        for i in 0..BIG_PER_SHAPE {
            let obj = big(&format!("big-{shape}-{i:02}"), labels);
            body_bytes.push(serde_json::to_vec(&obj).unwrap().len());
            let sp: SignalProcessing = serde_json::from_value(obj).unwrap();
            let created = api
                .create(&PostParams::default(), &sp)
                .await
                .unwrap_or_else(|e| panic!("creating a {shape} object: {e}"));
            uids.push((admitted(created), (!labels).then_some(CONTEXT_SOURCES)));
            if i % 2 == 0 {
                let created = api
                    .create(&PostParams::default(), &ordinary(&format!("meanwhile-{shape}-{i:02}")))
                    .await
                    .unwrap();
                uids.push((admitted(created), None));
            }
        }
        after_shape.push(vm_kib(pid, "VmRSS"));
        eprintln!("serve RSS after the {shape} objects: {} KiB", vm_kib(pid, "VmRSS"));
    }
    // Each new object is reconciled at least once after the controller cached it.
    let created = (uids.len() - known_before) as f64;
    wait_for("the controller to meet every new object", Duration::from_secs(120), || async {
        Ok((reconciles(&guard.serve).await >= reconciles_before + created).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&serve_name)));
    let total = api.list(&ListParams::default()).await.unwrap().items.len();
    let loaded = vm_kib(pid, "VmRSS");

    eprintln!(
        "serve RSS idle {} KiB, with every object cached {loaded} KiB, peak so far {} KiB",
        idle,
        peak.load(Ordering::Relaxed)
    );

    // One DELETE per object: a collection of ~40 MB takes the API server longer than its timeout.
    let names: Vec<String> = uids.iter().skip(ORDINARY).map(|((name, _), _)| name.clone()).collect();
    futures::stream::iter(names)
        .for_each_concurrent(4, |name| {
            let api = api.clone();
            async move {
                // On a loaded machine the API server may answer 504 to a DELETE it carries out
                // anyway: done once the object is deleting or gone.
                wait_for(&format!("{name} to be deleting"), Duration::from_secs(300), || async {
                    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                        eprintln!("deleting {name}: {e}");
                    }
                    let current = api.get_opt(&name).await?;
                    Ok(current.is_none_or(|o| o.is_deleting()).then_some(()))
                })
                .await
                .unwrap();
            }
        })
        .await;
    wait_for("every object to be deleted", Duration::from_secs(600), || async {
        Ok(api.list(&ListParams::default()).await?.items.is_empty().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&serve_name)));
    let after = vm_kib(pid, "VmRSS");
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed).max(after).max(loaded);
    let hwm = vm_kib(pid, "VmHWM");
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "serve RSS: idle {:.1} MiB (with {ORDINARY} ordinary objects), after {} objects of {:.0}-{:.0} KiB created {:.1} MiB, \
         peak while creating and deleting {:.1} MiB (+{:.1} MiB), after deleting all {:.1} MiB; VmHWM since start {:.1} MiB; \
         {total} objects in the namespace at most",
        mib(idle),
        body_bytes.len(),
        body_bytes.iter().min().copied().unwrap_or_default() as f64 / 1024.0,
        body_bytes.iter().max().copied().unwrap_or_default() as f64 / 1024.0,
        mib(loaded),
        mib(peak),
        mib(peak.saturating_sub(idle)),
        mib(after),
        mib(hwm),
    );
    assert!(
        body_bytes.iter().all(|b| *b > 850 * 1024),
        "every big object is about 1 MB: {body_bytes:?}"
    );
    let further = after_shape[1].saturating_sub(after_shape[0]);
    assert!(
        further <= FURTHER_MIB * 1024,
        "the second {BIG_PER_SHAPE} big objects grew serve by {:.1} MiB (bound {FURTHER_MIB} MiB)",
        mib(further)
    );
    assert!(
        peak <= idle + BOUND_MIB * 1024,
        "serve's resident memory grew by {:.1} MiB (bound {BOUND_MIB} MiB)",
        mib(peak - idle)
    );

    // Every object, big or ordinary, has its record; the big ones count their contextSources.
    for ((name, uid), sources) in &uids {
        let (s, rec) = svc.get(&format!("{BASE}/{uid}")).await;
        assert_eq!(s, 200, "no record for {name} ({uid}): {rec}");
        assert_eq!(rec["name"].as_str(), Some(name.as_str()), "{rec}");
        if let Some(n) = sources {
            assert_eq!(
                rec["processing_phases"][0]["enrichmentResults"]["contextSources"],
                json!(n),
                "{name}: {rec}"
            );
        }
    }
    support::delete_namespace(&client, &ns).await;
    let _ = (&lease_ns, guard);
}
