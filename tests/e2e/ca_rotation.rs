//! Day 60 of a cert-manager install: the CA is renewed under a new key and Data Storage's
//! certificate is re-issued under it while SignalProcessings are being deleted.
//!
//! On the real control plane, a real `serve` (controller + webhook) stores records in a real Data
//! Storage over TLS, trusting the CA file that sits beside Data Storage's certificate (one Secret,
//! as in the manifests). Mid-deletion, the three files are replaced by a new CA's, as a Secret
//! update does, and Data Storage's process is restarted (its TLS session cache would otherwise
//! let serve resume sessions without a certificate check), so serve must verify the new
//! certificate with the CA file as it is now. Asserted: every deletion completes with its record; serve counts
//! the CA reload (a restarted serve would load the new CA at start and count none, so the count
//! also shows the process was not restarted); Data Storage now presents a certificate only the
//! new CA verifies.

use crate::support;

use std::path::Path;
use std::time::Duration;

use audit_guard::crd::SignalProcessing;
use kube::api::{Api, DeleteParams, ListParams};
use support::datastorage::*;
use support::faults::metric;
use support::{admin_client, control_plane, create_bare_signalprocessings, fresh_namespace, install_signalprocessing_crd, wait_for};

const BEFORE: usize = 20;
const DURING: usize = 40;

/// Replaces `dir/name` the way a Secret update does: the new file moved over the old one.
fn replace(dir: &Path, name: &str, from: &Path) {
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::copy(from.join(name), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A client trusting only `ca_pem`.
fn trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// Whether a client trusting only `ca_pem` gets an answer from Data Storage's port.
async fn reaches(port: u16, ca_pem: &str) -> bool {
    trusting(ca_pem)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn a_rotated_datastorage_ca_is_followed_without_a_restart_while_crs_are_deleted() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    let ns = fresh_namespace(&client, "rotation").await.unwrap();
    let lease_ns = fresh_namespace(&client, "rotation-lease").await.unwrap();

    let certs = tempfile::tempdir().unwrap();
    let old = issue_certs(&certs.path().join("old"));
    let new = issue_certs(&certs.path().join("new"));
    let live = certs.path().join("old").join(audit_guard::certs::DATASTORAGE_DIR);
    let renewed = certs.path().join("new").join(audit_guard::certs::DATASTORAGE_DIR);
    let svc = DataStorage::launch_on(
        cp,
        &format!("datastorage-{ns}"),
        Options::sqlite().tls(Tls::Dir(live.clone())).args(&["--max-connection-age", "5s"]),
    )
    .await
    .unwrap();
    let guard = GuardingServe::start(cp, &svc, &lease_ns, &ns)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let serve_name = guard.serve.name.clone();

    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let uids: Vec<(String, String)> = create_bare_signalprocessings(&api, BEFORE + DURING, 8)
        .await
        .unwrap_or_else(|e| panic!("a create failed: {e:#}\n{}", cp.log_tail(&serve_name)))
        .into_iter()
        .map(|(name, uid, _)| (name, uid))
        .collect();
    wait_for("every CR to carry the finalizer", Duration::from_secs(60), || async {
        let list = api.list(&ListParams::default()).await?;
        Ok((list.items.len() == BEFORE + DURING && list.items.iter().all(|sp| sp.has_finalizer())).then_some(()))
    })
    .await
    .unwrap();

    // Some deletions under the old CA: serve's connections to Data Storage are up and trusted.
    for (name, _) in &uids[..BEFORE] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_for("the first CRs to be gone", Duration::from_secs(60), || async {
        let left = api.list(&ListParams::default()).await?.items.len();
        Ok((left == DURING).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&serve_name)));
    let reloads_before = metric(
        &guard.serve.metrics().await.unwrap(),
        "audit_guard_trusted_ca_reloads_total{result=\"success\"}",
    );

    // The rest are deleted while the CA and the certificate change under both processes.
    let deleting = {
        let api = api.clone();
        let names: Vec<String> = uids[BEFORE..].iter().map(|(n, _)| n.clone()).collect();
        tokio::spawn(async move {
            for name in names {
                api.delete(&name, &DeleteParams::default()).await?;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok::<_, kube::Error>(())
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for file in ["ca.crt", "tls.key", "tls.crt"] {
        replace(&live, file, &renewed);
    }
    // Resumed TLS sessions skip certificate checks, and Data Storage keeps its session cache
    // across a certificate reload; its pod restarting (a rollout, a node drain) is what makes
    // every client verify the new certificate. serve is not restarted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    svc.stop(cp).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The launcher's own readiness check trusts the old CA: start it, do not wait on that.
    let _ = tokio::time::timeout(Duration::from_secs(1), svc.resume(cp)).await;
    deleting.await.unwrap().unwrap();
    wait_for("every CR to be deleted", Duration::from_secs(120), || async {
        Ok(api.list(&ListParams::default()).await?.items.is_empty().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&serve_name)));

    let page = guard.serve.metrics().await.unwrap();
    let reloads = metric(&page, "audit_guard_trusted_ca_reloads_total{result=\"success\"}");
    let failures = metric(&page, "audit_guard_trusted_ca_reloads_total{result=\"failure\"}");
    eprintln!("CA reloads in serve: {reloads_before} before the rotation, {reloads} after; {failures} failed");
    assert_eq!(reloads_before, 0.0, "nothing to reload before the rotation");
    assert!(reloads >= 1.0, "serve did not count the CA reload:\n{page}");
    assert!(
        reaches(svc.port, &new.ca_pem).await && !reaches(svc.port, &old.ca_pem).await,
        "Data Storage should now present the certificate the new CA issued, and only that"
    );
    let reader = trusting(&new.ca_pem);
    for (name, uid) in &uids {
        let r = reader
            .get(format!("https://127.0.0.1:{}{BASE}/{uid}", svc.port))
            .bearer_auth(READER_TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let rec: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(status, 200, "no record for {name} ({uid}): {rec}");
        assert_eq!(rec["name"].as_str(), Some(name.as_str()));
    }
    support::delete_namespace(&client, &ns).await;
}
