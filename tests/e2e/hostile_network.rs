//! A pod with bad intentions cannot silence the fail-closed webhook or Data Storage.
//!
//! On the real control plane, a real `audit-guard serve` (webhook over TLS, no client
//! certificates) and a real Data Storage (TLS, PostgreSQL with the runtime role, tokens file),
//! while clients from another address (127.0.0.2, standing for a pod) keep up, bounded in time:
//! - 16 clients that finish the TLS handshake with the webhook, declare a 4 MiB review and send
//!   nothing, renewed every 4 s (they once held the whole review budget);
//! - 200 connections to the webhook port and 200 to Data Storage's that never say a word, each
//!   reopened as soon as the server drops it.
//!
//! Asserted: the API server creates 1,000 SignalProcessings, every one gets the finalizer, and
//! deleting them all stores exactly one correct record each; the listeners count what they shed.
//! The admission latency seen under the load is printed (a figure, not an assertion).

use crate::support;
use crate::webhook_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_guard::crd::SignalProcessing;
use kube::api::{Api, DeleteParams, ListParams};
use support::datastorage::*;
use support::{admin_client, control_plane, create_bare_signalprocessings, fresh_namespace, install_signalprocessing_crd, wait_for};
use webhook_support::hostile::{spawn_load, Tally};
use webhook_support::http1_tls_connector;

const CRS: usize = 1000;
const BUDGET_HOLDERS: usize = 16;
const IDLE_PER_TARGET: usize = 200;
/// The whole load stops at the latest after this, whatever happens.
const LOAD_CAP: Duration = Duration::from_secs(420);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test]
async fn silent_and_budget_holding_clients_do_not_stop_admission_or_deletion() {
    let _cluster = support::cluster_exclusive().await;
    let cp = control_plane();
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    let ns = fresh_namespace(&client, "hostile").await.unwrap();
    let lease_ns = fresh_namespace(&client, "hostile-lease").await.unwrap();

    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url()).tls(Tls::Issued)).await;

    let guard = GuardingServe::start(cp, &svc, &lease_ns, &ns)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (serve_name, webhook_addr) = (guard.serve.name.clone(), guard.webhook_addr.clone());

    // The load, from another address, before the first CR is created.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let connector = http1_tls_connector(&guard.webhook_ca_pem);
    let idle_targets = [webhook_addr.clone(), format!("127.0.0.1:{}", svc.port)];
    let load = spawn_load(
        &webhook_addr,
        &connector,
        BUDGET_HOLDERS,
        &idle_targets,
        IDLE_PER_TARGET,
        &stop,
        &tally,
    );
    let cap = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LOAD_CAP).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 1,000 creates through the API server, each admitted by the webhook under the load.
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let created = create_bare_signalprocessings(&api, CRS, 16)
        .await
        .unwrap_or_else(|e| panic!("a create failed under the load: {e:#}\n{}", cp.log_tail(&serve_name)));
    let mut latencies: Vec<Duration> = created.iter().map(|(_, _, d)| *d).collect();
    latencies.sort();
    wait_for("every CR to carry the finalizer", Duration::from_secs(120), || async {
        let list = api.list(&ListParams::default()).await?;
        Ok((list.items.len() == CRS && list.items.iter().all(|sp| sp.has_finalizer())).then_some(()))
    })
    .await
    .unwrap();

    // Deleting them all stores every record through the loaded Data Storage port.
    let started = Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    let gone = wait_for("every CR to be deleted", LOAD_CAP, || async {
        Ok(api.list(&ListParams::default()).await?.items.is_empty().then_some(()))
    })
    .await;
    let took = started.elapsed();
    let metrics = guard.serve.metrics().await.unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    cap.abort();
    for t in load {
        let _ = t.await;
    }
    eprintln!(
        "under load: {CRS} creates, admission (client-side create) p50 {:?} p99 {:?} max {:?}; {CRS} deletions in {took:?}; hostile connections opened {}, 4 MiB heads held {}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        tally.connections.load(Ordering::Relaxed),
        tally.held_heads.load(Ordering::Relaxed),
    );
    gone.unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&serve_name)));
    assert!(
        tally.held_heads.load(Ordering::Relaxed) >= BUDGET_HOLDERS,
        "the budget holders really held"
    );
    assert!(tally.connections.load(Ordering::Relaxed) >= 2 * IDLE_PER_TARGET);
    let shed = metrics
        .lines()
        .filter(|l| l.starts_with("audit_guard_listener_shed_total{") && l.contains("listener=\"webhook\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(shed > 0.0, "the webhook listener shed nothing under the load:\n{metrics}");

    for (name, uid, _) in &created {
        let (s, rec) = svc.get(&format!("{BASE}/{uid}")).await;
        assert_eq!(s, 200, "no record for {name} ({uid}): {rec}");
        assert_eq!(rec["name"].as_str(), Some(name.as_str()));
        assert_eq!(rec["status"], "incomplete", "{rec}");
    }
    let pool = db.pool().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM signal_processing_audit WHERE namespace = $1")
        .bind(&ns)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, CRS as i64, "one record per CR, none twice");
    pool.close().await;
    support::delete_namespace(&client, &ns).await;
    drop(svc);
    db.drop_db().await;
}
