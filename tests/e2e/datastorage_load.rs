//! Readers and idle connections cannot starve the deletion path.
//!
//! On the real control plane, a real `audit-guard serve` (controller and webhook) deletes 200
//! SignalProcessings through a real Data Storage (TLS, PostgreSQL with the runtime role,
//! tokens file) while, on loopback only and bounded in time and count:
//! - 50 readers loop over the costliest statistics Data Storage accepts (the widest range it
//!   allows over 20,000 stored records; an all-time range is refused with 400),
//! - 500 idle connections are held open against Data Storage and 500 against the webhook
//!   (re-opened whenever the server drops them).
//!
//! Asserted: the deletion completes and every CR has exactly its record, correct. Nothing
//! about time: the latency figure under the same load is a benchmark row (bench_datastorage).
//!
//! And the deletion path never waits behind readers: with the webhook in a `serve` of its own
//! (so every controller's finalizer removal is checked by a lookup of the record in Data
//! Storage, not from the controller's memory) and registered with the API server, 32 readers
//! loop over 30-day statistics while 200 CRs are deleted: every one completes and the webhook
//! denies none for an unavailable store.

use crate::support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audit_guard::crd::SignalProcessing;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{json, Value};
use support::datastorage::*;
use support::faults::{metric, register_url_webhooks, unregister_webhooks};
use support::{admin_client, control_plane, create_bare_signalprocessings, fresh_namespace, install_signalprocessing_crd, wait_for};

const CRS: usize = 200;
const SEEDED: usize = 20_000;
const READERS: usize = 50;
/// Readers of 30-day statistics in the lanes test.
const STATS_READERS: usize = 32;
const LANES_LABEL: &str = "audit-guard-lanes";
/// The tests of this file are heavy: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const IDLE_PER_TARGET: usize = 500;
/// The whole load stops at the latest after this, whatever happens.
const LOAD_CAP: Duration = Duration::from_secs(420);

/// A stored record within the last 29 days, with an enrichment phase of `i` milliseconds.
fn seed(i: usize) -> Value {
    let completed = ago(((i * 127) % (29 * 86_400)) as i64 + 60);
    let mut r = record(
        &format!("seed-{i}"),
        &format!("fp-{}", i % 97),
        ["production", "staging"][i % 2],
        ["P0", "P1", "P2"][i % 3],
        &completed,
        json!(i as i64 * 1_000_000),
    );
    r["name"] = json!(format!("seed-{i}"));
    r
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    refused: AtomicUsize,
    busy: AtomicUsize,
    other: AtomicUsize,
    connections: AtomicUsize,
}

/// Holds one connection open against `addr`, sending nothing; opens a new one when dropped.
async fn idle_connection(addr: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(mut c) => {
                tally.connections.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 256];
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_millis(500), tokio::io::AsyncReadExt::read(&mut c, &mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Loops over the costliest statistics the service accepts over the last `days` (and, with
/// `refused_too`, now and then one it refuses).
async fn reader(svc_base: String, http: reqwest::Client, n: usize, days: i64, refused_too: bool, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut i = n;
    while !stop.load(Ordering::Relaxed) {
        let since = ago(days * 86_400 - 60).replace('+', "%2B");
        let path = match i % 10 {
            0 if refused_too => format!("{BASE}/stats/slow-phases?since=1970-01-01T00:00:00Z"),
            0..=4 => format!("{BASE}/stats/slow-phases?phase=enriching&min_duration=0s&limit=1000&since={since}"),
            5..=7 => format!("{BASE}/stats/classification?since={since}"),
            _ => format!("{BASE}/stats/priority?since={since}"),
        };
        i += 1;
        let r = http.get(format!("{svc_base}{path}")).bearer_auth(READER_TOKEN).send().await;
        let slot = match r.map(|r| r.status().as_u16()) {
            Ok(200) => &tally.ok,
            Ok(400) => &tally.refused,
            Ok(503) => &tally.busy,
            _ => &tally.other,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }
}

/// The admin's client, with the CRD installed; a namespace for the CRs and one for the Lease.
async fn namespaces(prefix: &str) -> (kube::Client, String, String) {
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    let ns = fresh_namespace(&client, prefix).await.unwrap();
    let lease_ns = fresh_namespace(&client, &format!("{prefix}-lease")).await.unwrap();
    (client, ns, lease_ns)
}

/// Data Storage as deployed: TLS, runtime role, tokens; 20,000 records in the last 29 days.
async fn seeded_datastorage() -> (TestDb, DataStorage) {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url()).tls(Tls::Issued)).await;
    let seeds: Vec<Value> = (0..SEEDED).map(seed).collect();
    for chunk in seeds.chunks(1000) {
        let (s, _, body) = svc.post_json(&format!("{BASE}/batch"), &json!(chunk)).await;
        assert_eq!(s, 200, "{body}");
    }
    (db, svc)
}

/// Creates `CRS` SignalProcessings, waits until each carries the finalizer and completes every
/// other one; per uid, its name and the status its record must have.
async fn create_half_completed(api: &Api<SignalProcessing>) -> HashMap<String, (String, &'static str)> {
    let created: Vec<(String, String)> = create_bare_signalprocessings(api, CRS, 16)
        .await
        .unwrap()
        .into_iter()
        .map(|(name, uid, _)| (name, uid))
        .collect();
    wait_for("every CR to carry the finalizer", Duration::from_secs(120), || async {
        let list = api.list(&ListParams::default()).await?;
        Ok((list.items.len() == CRS && list.items.iter().all(|sp| sp.has_finalizer())).then_some(()))
    })
    .await
    .unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let expected: HashMap<String, (String, &str)> = created
        .iter()
        .enumerate()
        .map(|(i, (name, uid))| (uid.clone(), (name.clone(), if i % 2 == 0 { "completed" } else { "incomplete" })))
        .collect();
    for (name, uid) in &created {
        if expected[uid].1 == "completed" {
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "phase": "Completed", "startTime": now, "completionTime": now } })),
            )
            .await
            .unwrap();
        }
    }
    expected
}

/// Deletes every CR while `load` runs (stopped through `stop` once they are gone, or after
/// `LOAD_CAP` whatever happens); whether they went, and how long it took.
async fn delete_all_under(
    api: &Api<SignalProcessing>,
    load: Vec<tokio::task::JoinHandle<()>>,
    stop: &Arc<AtomicBool>,
) -> (anyhow::Result<()>, Duration) {
    let cap = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LOAD_CAP).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    let gone = wait_for("every CR to be deleted", LOAD_CAP, || async {
        Ok(api.list(&ListParams::default()).await?.items.is_empty().then_some(()))
    })
    .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    cap.abort();
    for t in load {
        let _ = t.await;
    }
    (gone, took)
}

/// Every CR has exactly its record, and it says what the CR said.
async fn assert_records(svc: &DataStorage, db: &TestDb, ns: &str, expected: &HashMap<String, (String, &str)>) {
    for (uid, (name, status)) in expected {
        let (s, rec) = svc.get(&format!("{BASE}/{uid}")).await;
        assert_eq!(s, 200, "no record for {name} ({uid}): {rec}");
        assert_eq!((rec["id"].as_str(), rec["uid"].as_str()), (Some(uid.as_str()), Some(uid.as_str())));
        assert_eq!((rec["namespace"].as_str(), rec["name"].as_str()), (Some(ns), Some(name.as_str())));
        assert_eq!(rec["status"], *status, "{rec}");
        assert_eq!(rec["signal_fingerprint"], format!("fp-{name}"));
        assert!(rec.get("amendments").is_none(), "{rec}");
    }
    let pool = db.pool().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM signal_processing_audit WHERE namespace = $1")
        .bind(ns)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, CRS as i64, "one record per CR, none twice");
    pool.close().await;
}

#[tokio::test]
async fn deletions_complete_while_readers_and_idle_connections_load_both_servers() {
    let _cluster = support::cluster_exclusive().await;
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let (client, ns, lease_ns) = namespaces("load").await;

    let (db, svc) = seeded_datastorage().await;

    // A real serve: controller and webhook (TLS), writing to Data Storage over TLS with a token.
    let guard = GuardingServe::start(cp, &svc, &lease_ns, &ns)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (serve_name, webhook_addr) = (guard.serve.name.clone(), guard.webhook_addr.clone());

    // 200 CRs under the finalizer: half completed, half still pending when deleted.
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let expected = create_half_completed(&api).await;

    // The load: readers and idle connections on both servers, bounded in time.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut load = vec![];
    for n in 0..READERS {
        load.push(tokio::spawn(reader(
            svc.url.clone(),
            svc.http.clone(),
            n,
            31,
            true,
            stop.clone(),
            tally.clone(),
        )));
    }
    let idle_tally = Arc::new(Tally::default());
    for target in [format!("127.0.0.1:{}", svc.port), webhook_addr.clone()] {
        for _ in 0..IDLE_PER_TARGET {
            load.push(tokio::spawn(idle_connection(target.clone(), stop.clone(), idle_tally.clone())));
        }
    }

    // The deletion, under that load.
    let (gone, took) = delete_all_under(&api, load, &stop).await;
    // Figures for the reader of the log, not assertions.
    eprintln!(
        "{CRS} CRs deleted in {took:?} under load: readers ok {} / refused {} / busy {} / other {}; idle connections opened {}",
        tally.ok.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.busy.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
        idle_tally.connections.load(Ordering::Relaxed),
    );
    gone.unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&serve_name)));
    assert!(tally.ok.load(Ordering::Relaxed) > 0, "the readers really read");
    assert!(tally.refused.load(Ordering::Relaxed) > 0, "the all-time statistic was refused");
    assert!(idle_tally.connections.load(Ordering::Relaxed) >= 2 * IDLE_PER_TARGET);

    assert_records(&svc, &db, &ns, &expected).await;
    support::delete_namespace(&client, &ns).await;
    drop(svc);
    db.drop_db().await;
}

#[tokio::test]
async fn deletions_never_wait_behind_readers_of_statistics() {
    let _cluster = support::cluster_exclusive().await;
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let (client, ns, lease_ns) = namespaces("lanes").await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { LANES_LABEL: &ns } } })),
        )
        .await
        .unwrap();
    let (db, svc) = seeded_datastorage().await;

    // The controller and the webhook in two serves: the webhook's check of each removal asks
    // Data Storage whether it holds the record.
    let dir = tempfile::tempdir().unwrap();
    let issued = issue_certs(&dir.path().join("webhook-certs"));
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let webhook_addr = format!("127.0.0.1:{}", support::controlplane::free_port().unwrap());
    let ds_url = format!("https://127.0.0.1:{}", svc.port);
    let path = |p: &str| dir.path().join(p).to_string_lossy().to_string();
    let (certs, token, ca) = (path("webhook-certs"), path("token"), svc.ca_file().to_string_lossy().to_string());
    let common = [
        "--retention",
        "0",
        "--controller-identity",
        "admin",
        "--datastorage-token-file",
        &token,
        "--datastorage-ca-file",
        &ca,
        // The service's default (the test launcher's own is 2 s).
        "--datastorage-timeout",
        "5s",
    ];
    let webhook_name = format!("webhook-{ns}");
    let mut webhook_args = common.to_vec();
    webhook_args.extend(["--disable-controller", "--webhook-addr", &webhook_addr, "--cert-dir", &certs]);
    let webhook = Serve::start_full(cp, &webhook_name, &cp.kubeconfig, &ds_url, &lease_ns, &ns, &webhook_args)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&webhook_name)));
    let controller_name = format!("controller-{ns}");
    let mut controller_args = common.to_vec();
    controller_args.push("--disable-webhook");
    Serve::start_full(cp, &controller_name, &cp.kubeconfig, &ds_url, &lease_ns, &ns, &controller_args)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&controller_name)));
    let hooks = format!("lanes-{ns}");
    register_url_webhooks(
        &client,
        &hooks,
        &format!("https://{webhook_addr}"),
        &issued.ca_pem,
        (LANES_LABEL, &ns),
    )
    .await
    .unwrap();

    // Created through the registered webhook (it adds the finalizer).
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let expected = create_half_completed(&api).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let readers: Vec<_> = (0..STATS_READERS)
        .map(|n| tokio::spawn(reader(svc.url.clone(), svc.http.clone(), n, 30, false, stop.clone(), tally.clone())))
        .collect();
    let (gone, took) = delete_all_under(&api, readers, &stop).await;
    let page = webhook.metrics().await.unwrap();
    let unavailable = metric(&page, "audit_guard_webhook_denials_total{reason=\"store_unavailable\"}");
    let looked_up = metric(
        &page,
        "audit_guard_webhook_record_checks_total{result=\"held\",source=\"datastorage\"}",
    );
    let lookup_errors = metric(
        &page,
        "audit_guard_webhook_record_checks_total{result=\"error\",source=\"datastorage\"}",
    );
    // The webhook's own account of what went wrong, for the reader of a failure.
    let log = std::fs::read_to_string(cp.dir.join(format!("{webhook_name}.log"))).unwrap_or_default();
    let trouble: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("denied"))
        .collect();
    eprintln!(
        "{CRS} CRs deleted in {took:?} under {STATS_READERS} readers of 30-day statistics: readers ok {} / busy (503) {} / other {}; \
         webhook: {looked_up} records found held in Data Storage, {lookup_errors} lookups failed, {unavailable} denials for an unavailable store",
        tally.ok.load(Ordering::Relaxed),
        tally.busy.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    unregister_webhooks(&client, &hooks).await;
    gone.unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail(&webhook_name)));
    assert_eq!(
        unavailable,
        0.0,
        "the webhook denied removals because Data Storage was busy:\n{}",
        trouble.join("\n")
    );
    assert!(
        looked_up >= CRS as f64,
        "the removals were not checked against Data Storage:\n{page}"
    );
    assert!(tally.ok.load(Ordering::Relaxed) > 0, "the readers really read");
    assert_records(&svc, &db, &ns, &expected).await;
    support::delete_namespace(&client, &ns).await;
    drop(svc);
    db.drop_db().await;
}
