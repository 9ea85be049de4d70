//! DDL on the audit table never queues the deletion path's INSERTs behind a reader's lock.
//!
//! Real PostgreSQL, real Data Storage (runtime role), real `datastorage migrate` (owner). A
//! session holds `LOCK TABLE signal_processing_audit IN ACCESS SHARE MODE` (what a long
//! reader holds) while DDL that needs ACCESS EXCLUSIVE wants to run:
//! - partition upkeep (next month's partition is missing when the service starts): single
//!   POSTs all succeed while the lock is held; upkeep sees the long holder and never requests
//!   its lock meanwhile (no lock request waits on the table), retries with backoff and creates
//!   the partition once the lock is released;
//! - `migrate`: retries within `--ddl-retry-for`, then fails with an error that says a lock
//!   held elsewhere is the cause, while POSTs keep succeeding; after the release it succeeds.
//!
//! The lock is held for 15 s instead of the 60 s of the acceptance: every upkeep attempt
//! during the hold is of the same kind whatever the holder's duration, so a longer hold only
//! adds attempts. The POST latency is printed (a benchmark figure), not asserted.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_guard::datastorage::postgres::partition_name;
use chrono::{Datelike, Utc};
use serde_json::json;
use sqlx::Connection;
use support::datastorage::*;
use support::faults::metric;
use support::wait_for;

const HOLD: Duration = Duration::from_secs(15);
const POSTERS: usize = 4;

/// Next month's partition, dropped by the owner (it is empty in a fresh database).
async fn drop_next_month(db: &TestDb) -> String {
    let now = Utc::now();
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let name = partition_name(y, m);
    let pool = db.pool().await;
    sqlx::query(&format!("DROP TABLE {name}")).execute(&pool).await.unwrap();
    pool.close().await;
    name
}

async fn partition_exists(db: &TestDb, name: &str) -> bool {
    let pool = db.pool().await;
    let found: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    found
}

/// An owner's session holding ACCESS SHARE on the audit table until the transaction ends.
async fn hold_access_share(db: &TestDb) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("LOCK TABLE signal_processing_audit IN ACCESS SHARE MODE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Looks every few milliseconds, until `stop`, for a lock request on the audit table that
/// waits (upkeep's ACCESS EXCLUSIVE behind the reader's ACCESS SHARE, which every INSERT would
/// queue behind): (looks, looks that saw one).
async fn watch_lock_requests(db: &TestDb, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, usize)> {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let stop = stop.clone();
    tokio::spawn(async move {
        let (mut looks, mut waiting) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'relation' \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND relation = 'signal_processing_audit'::regclass",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            looks += 1;
            waiting += usize::from(n > 0);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (looks, waiting)
    })
}

/// Single POSTs from `POSTERS` loops until `stop`: (status, latency) of each.
fn post_until(svc: &Arc<DataStorage>, stop: &Arc<AtomicBool>, tag: &str) -> Vec<tokio::task::JoinHandle<Vec<(u16, Duration)>>> {
    (0..POSTERS)
        .map(|p| {
            let (svc, stop, tag) = (svc.clone(), stop.clone(), tag.to_string());
            tokio::spawn(async move {
                let mut out = vec![];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let rec = record(&format!("{tag}-{p}-{i}"), "fp", "production", "P1", &ago(60), json!(1_000_000));
                    let started = Instant::now();
                    let (s, _, _) = svc.post_json(BASE, &rec).await;
                    out.push((s, started.elapsed()));
                    i += 1;
                }
                out
            })
        })
        .collect()
}

async fn collect(posters: Vec<tokio::task::JoinHandle<Vec<(u16, Duration)>>>) -> Vec<(u16, Duration)> {
    let mut all = vec![];
    for p in posters {
        all.extend(p.await.unwrap());
    }
    all
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[i]
}

#[tokio::test]
async fn posts_keep_flowing_while_partition_upkeep_waits_for_a_readers_lock() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let next = drop_next_month(&db).await;
    let mut holder = hold_access_share(&db).await;
    let locked_at = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let queued = watch_lock_requests(&db, &stop).await;

    // The service starts while the lock is held: its upkeep cannot create next month's partition.
    let svc = Arc::new(DataStorage::launch(Options::postgres(&db.runtime_url())).await);
    let posters = post_until(&svc, &stop, "held");
    tokio::time::sleep(HOLD.saturating_sub(locked_at.elapsed())).await;
    assert!(!partition_exists(&db, &next).await, "the partition was created under the lock?");
    stop.store(true, Ordering::Relaxed);
    let mut during = collect(posters).await;
    let (looks, waiting) = queued.await.unwrap();
    assert!(looks > 100, "the lock requests were watched ({looks} looks)");
    assert_eq!(
        waiting, 0,
        "upkeep requested a lock on the table behind the reader's, queueing the INSERTs behind it, in {waiting} of {looks} looks"
    );
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    drop(holder);

    let failed: Vec<_> = during.iter().filter(|(s, _)| *s != 201).collect();
    assert!(failed.is_empty(), "POSTs failed while the lock was held: {failed:?}");
    assert!(during.len() > POSTERS, "the POSTs flowed");

    // Released: upkeep's next retry creates the partition.
    wait_for("upkeep to create next month's partition", Duration::from_secs(120), || async {
        Ok(partition_exists(&db, &next).await.then_some(()))
    })
    .await
    .unwrap();
    let page = reqwest::get(svc.endpoint("/metrics")).await.unwrap().text().await.unwrap();
    let gave_up = metric(&page, "datastorage_ddl_lock_waits_given_up_total{what=\"create_next_partitions\"}");
    assert!(gave_up >= 1.0, "upkeep never gave up a lock wait:\n{page}");
    let mut latencies: Vec<Duration> = during.drain(..).map(|(_, d)| d).collect();
    eprintln!(
        "{} single POSTs while ACCESS SHARE was held for {HOLD:?} and upkeep gave up {gave_up} lock waits: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&mut latencies, 0.50),
        percentile(&mut latencies, 0.99),
        percentile(&mut latencies, 1.0),
    );
    drop(svc);
    db.drop_db().await;
}

#[tokio::test]
async fn migrate_against_a_locked_table_gives_up_within_its_bound_and_queues_no_insert() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = Arc::new(DataStorage::launch(Options::postgres(&db.runtime_url())).await);
    let next = drop_next_month(&db).await;
    let mut holder = hold_access_share(&db).await;

    let stop = Arc::new(AtomicBool::new(false));
    let posters = post_until(&svc, &stop, "migrate");
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(["datastorage", "migrate", "--database-url", &url, "--runtime-role", RUNTIME_ROLE])
            .args(["--ddl-retry-for", "3s"])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let during = collect(posters).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "migrate succeeded under the lock:\n{stderr}");
    assert!(
        stderr.contains(&format!("could not create partition {next}")) && stderr.contains("another session holds a conflicting lock"),
        "{stderr}"
    );
    assert!(stderr.contains("--ddl-retry-for"), "the error names the bound: {stderr}");
    let failed: Vec<_> = during.iter().filter(|(s, _)| *s != 201).collect();
    assert!(failed.is_empty(), "POSTs failed while migrate ran: {failed:?}");
    assert!(!during.is_empty(), "the POSTs flowed");

    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    drop(holder);
    let stdout = db.migrate(&[]);
    assert!(stdout.contains(&format!("created partition {next}")), "{stdout}");
    drop(svc);
    db.drop_db().await;
}
