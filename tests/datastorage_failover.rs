//! Data Storage on a replicated PostgreSQL (a primary and a synchronous standby from the
//! Debian packages, tests/support/pg_replica.rs) given as one multi-host URL: records posted
//! while the primary is SIGKILLed and the standby promoted are all on the new primary, once
//! each, and every 201 was one of them. No control plane: the writers are plain HTTP clients
//! that retry like the controller (any 5xx or connection error: again; 201, or 409 saying the
//! stored record is identical: done).

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::datastorage::*;
use support::pg_replica::{ReplicatedPg, SyncCommit, DATABASE};

const RECORDS: usize = 300;
const KILL_AT: usize = 100;

/// Posts `id` until Data Storage says it is stored; how many attempts failed.
async fn post_until_stored(svc: &DataStorage, id: &str) -> usize {
    let body = record(id, "fp-failover", "production", "P1", &ago(30), json!("1s"));
    let mut failed = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let resp = svc
            .http
            .post(svc.endpoint(BASE))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(15))
            .json(&body)
            .send()
            .await;
        // A connection error or a 5xx: the outcome is unknown, so the same record again.
        if let Ok(r) = resp {
            let (status, _, v) = split(r).await;
            match status {
                201 => return failed,
                409 if v["identical"] == json!(true) => return failed,
                s if s >= 500 => {}
                s => panic!("{id}: Data Storage answered {s}: {v}"),
            }
        }
        failed += 1;
        assert!(Instant::now() < deadline, "{id}: still not stored after 180 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_posted_across_a_failover_are_stored_once_each_on_the_new_primary() {
    let pg = Arc::new(ReplicatedPg::start(SyncCommit::On).await.expect("replicated PostgreSQL"));
    // Synchronous replication works before anything is broken: a commit on the primary is on the standby.
    pg.psql(&pg.primary, "CREATE TABLE probe (v int); INSERT INTO probe VALUES (1)")
        .unwrap();
    assert_eq!(pg.psql(&pg.standby, "SELECT v FROM probe").unwrap().trim(), "1");

    let svc = Arc::new(DataStorage::launch(Options::postgres(&pg.owner_url())).await);
    let done = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let ids: Vec<String> = (0..RECORDS).map(|i| format!("failover-{i:04}")).collect();
    let writers = {
        let (svc, done, retries, ids) = (svc.clone(), done.clone(), retries.clone(), ids.clone());
        tokio::spawn(async move {
            futures::stream::iter(ids)
                .for_each_concurrent(8, |id| {
                    let (svc, done, retries) = (svc.clone(), done.clone(), retries.clone());
                    async move {
                        retries.fetch_add(post_until_stored(&svc, &id).await, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await
        })
    };
    support::wait_for("records before the fault", Duration::from_secs(120), || async {
        Ok((done.load(Ordering::SeqCst) >= KILL_AT).then_some(()))
    })
    .await
    .unwrap();
    let killed_at = Instant::now();
    pg.kill_primary().unwrap();
    // Answers to commits made before the kill may still arrive for a moment (a loaded machine
    // delays them); from then until the promotion nothing can commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_kill = done.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during_outage = done.load(Ordering::SeqCst) - at_kill;
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.promote_standby()).await.unwrap().unwrap();
    }
    writers.await.unwrap();
    let drained = killed_at.elapsed();

    let pool = sqlx::PgPool::connect(&pg.node_url(&pg.standby)).await.unwrap();
    let stored: Vec<(String,)> = sqlx::query_as("SELECT id FROM signal_processing_audit")
        .fetch_all(&pool)
        .await
        .unwrap();
    let unique: HashSet<&str> = stored.iter().map(|(id,)| id.as_str()).collect();
    let lost: Vec<&String> = ids.iter().filter(|id| !unique.contains(id.as_str())).collect();
    println!(
        "failover: {RECORDS} records, {} stored, {} lost, primary SIGKILLed after {at_kill}, {during_outage} stored in the 3 s before the promotion, \
         {} failed attempts retried, all stored {:.1} s after the kill",
        stored.len(),
        lost.len(),
        retries.load(Ordering::SeqCst),
        drained.as_secs_f64()
    );
    assert_eq!(during_outage, 0, "nothing is stored while no primary exists");
    assert!(retries.load(Ordering::SeqCst) > 0, "the failover was felt");
    assert!(lost.is_empty(), "acknowledged records missing on the new primary: {lost:?}");
    assert_eq!(stored.len(), RECORDS, "one row per record");
    assert_eq!(unique.len(), RECORDS);

    // The hash chain is intact across the failover.
    let (s, report) = svc.get_as(READER_TOKEN, &format!("{BASE}/verify")).await;
    assert_eq!((s, &report["result"]), (200, &json!("intact")), "{report}");
    pool.close().await;
}

/// While the synchronous standby is down, commits wait for it: Data Storage answers no 201 (a
/// commit's wait is outside PostgreSQL's statement timeout, short here, and the request timeout
/// answers 503); once the standby is back the record is stored, on both servers, and the retry is
/// answered as stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_201_while_the_synchronous_standby_is_down() {
    let pg = ReplicatedPg::start(SyncCommit::On).await.expect("replicated PostgreSQL");
    let svc = DataStorage::launch(Options::postgres(&pg.owner_url()).args(&["--statement-timeout", "1s", "--request-timeout", "4s"])).await;
    let body = record("sync-wait-1", "fp-sync", "production", "P1", &ago(30), json!("1s"));
    let (s, _, v) = svc
        .post_json(BASE, &record("sync-before", "fp-sync", "production", "P1", &ago(30), json!("1s")))
        .await;
    assert_eq!(s, 201, "{v}");

    pg.stop_standby().unwrap();
    let (s, _, v) = svc.post_json(BASE, &body).await;
    assert!(s >= 500, "a record that is on one machine only is not answered {s}: {v}");

    pg.start_standby().await.unwrap();
    let (s, _, v) = svc.post_json(BASE, &body).await;
    assert!(s == 201 || (s == 409 && v["identical"] == json!(true)), "{s}: {v}");
    let sql = "SELECT count(*) FROM signal_processing_audit WHERE id = 'sync-wait-1'";
    assert_eq!(pg.psql_in(&pg.standby, DATABASE, sql).unwrap().trim(), "1", "on the standby");
}
