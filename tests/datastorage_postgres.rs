//! PostgreSQL specifics: the design document's post-mortem SQL run verbatim on what went in
//! through the API, database-enforced immutability, monthly partitions and retention.

mod datastorage_common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use datastorage_common::*;
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::Row;

// The design document's four queries, verbatim.
const Q_BY_SIGNAL: &str = "-- Find all signal processing records for a specific signal
SELECT * FROM signal_processing_audit
WHERE signal_fingerprint = 'mem-pressure-prod-123'
ORDER BY completed_at DESC;";

const Q_CLASSIFICATION: &str = "-- Classification accuracy analysis
SELECT environment,
       AVG(confidence) as avg_confidence,
       COUNT(*) as total_signals
FROM signal_processing_audit
WHERE completed_at > NOW() - INTERVAL '7 days'
GROUP BY environment;";

const Q_PRIORITY: &str = "-- Priority distribution analysis (DD-CATEGORIZATION-001)
SELECT priority,
       COUNT(*) as count,
       AVG(priority_score) as avg_score
FROM signal_processing_audit
WHERE completed_at > NOW() - INTERVAL '7 days'
GROUP BY priority;";

const Q_SLOW: &str = "-- Find slow enrichment operations
SELECT remediation_id, signal_fingerprint,
       (processing_phases->0->>'duration')::interval as enrichment_duration
FROM signal_processing_audit
WHERE (processing_phases->0->>'duration')::interval > INTERVAL '2 seconds'
ORDER BY enrichment_duration DESC;";

/// Runs a query with the simple protocol, so every column comes back as text.
async fn text_rows(pool: &sqlx::PgPool, sql: &str, cols: &[&str]) -> Vec<Vec<Option<String>>> {
    let rows: Vec<PgRow> = sqlx::raw_sql(sql).fetch_all(pool).await.unwrap();
    rows.iter()
        .map(|r| cols.iter().map(|c| r.try_get_unchecked::<Option<String>, _>(*c).unwrap()).collect())
        .collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test]
async fn design_document_queries_immutability_partitions_and_retention() {
    let db = TestDb::create().await;
    let svc = Service::start(Some(&db.url)).await;
    let pool = db.pool().await;

    // Enrichment durations in both wire forms: 1.5 s (ns), 2.5 s (Go), 3 min (Go), exactly 2 s (ns), 5 s ten days ago.
    let r1 = record(
        "r1",
        "mem-pressure-prod-123",
        "production",
        "P0",
        &ago(600),
        json!(1_500_000_000i64),
    );
    let r2 = record("r2", "mem-pressure-prod-123", "production", "P0", &ago(300), json!("2.5s"));
    let r3 = record("r3", "disk-full-staging-7", "staging", "P1", &ago(200), json!("3m"));
    let r4 = record("r4", "cpu-dev-1", "development", "P2", &ago(100), json!(2_000_000_000i64));
    let r5 = record("r5", "old-signal", "production", "P3", &ago(10 * 86_400), json!("5s"));
    for r in [&r1, &r2] {
        let (st, _, body) = svc.post_json(BASE, r).await;
        assert_eq!(st, 201, "{body}");
    }
    let (st, _, body) = svc.post_json(&format!("{BASE}/batch"), &json!([r3, r4, r5])).await;
    assert!(st == 200 || st == 201, "{body}");

    // 1. All records of one signal, newest first.
    let rows = text_rows(&pool, Q_BY_SIGNAL, &["id", "environment", "priority"]).await;
    assert_eq!(
        rows,
        vec![vec![s("r2"), s("production"), s("P0")], vec![s("r1"), s("production"), s("P0")]]
    );

    // 2. Classification over the last 7 days (r5 is older).
    let rows = text_rows(&pool, Q_CLASSIFICATION, &["environment", "avg_confidence", "total_signals"]).await;
    let got: BTreeMap<_, _> = rows
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                (r[1].clone().unwrap().parse::<f64>().unwrap(), r[2].clone().unwrap()),
            )
        })
        .collect();
    let want: BTreeMap<_, _> = [
        ("development".to_string(), (0.7, "1".to_string())),
        ("production".to_string(), (0.9, "2".to_string())),
        ("staging".to_string(), (0.7, "1".to_string())),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);

    // 3. Priority distribution over the last 7 days.
    let rows = text_rows(&pool, Q_PRIORITY, &["priority", "count", "avg_score"]).await;
    let got: BTreeMap<_, _> = rows
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                (r[1].clone().unwrap(), r[2].clone().unwrap().parse::<f64>().unwrap()),
            )
        })
        .collect();
    let want: BTreeMap<_, _> = [
        ("P0".to_string(), ("2".to_string(), 100.0)),
        ("P1".to_string(), ("1".to_string(), 50.0)),
        ("P2".to_string(), ("1".to_string(), 50.0)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);

    // 4. Slow enrichment: 3 min, 5 s, 2.5 s in that order; 1.5 s and exactly 2 s left out.
    let rows = text_rows(&pool, Q_SLOW, &["remediation_id", "signal_fingerprint", "enrichment_duration"]).await;
    assert_eq!(
        rows,
        vec![
            vec![s("rr-r3"), s("disk-full-staging-7"), s("00:03:00")],
            vec![s("rr-r5"), s("old-signal"), s("00:00:05")],
            vec![s("rr-r2"), s("mem-pressure-prod-123"), s("00:00:02.5")],
        ]
    );

    // Rows are immutable, enforced by the database against the service's own role.
    for sql in [
        "UPDATE signal_processing_audit SET status = 'failed' WHERE id = 'r1'",
        "DELETE FROM signal_processing_audit WHERE id = 'r1'",
        "TRUNCATE signal_processing_audit",
        "UPDATE signal_processing_audit_ids SET id = 'x' WHERE id = 'r1'",
        "DELETE FROM signal_processing_audit_ids WHERE id = 'r1'",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.expect_err(sql);
        assert!(err.to_string().contains("immutable"), "{sql}: {err}");
    }
    let (st, got) = svc.get(&format!("{BASE}/r1")).await;
    assert_eq!((st, got), (200, r1.clone()));

    // Monthly partitions exist for the incoming months; nothing fell into DEFAULT.
    let default_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM signal_processing_audit_default")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(default_rows, 0);
    let partition_of_r1: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM signal_processing_audit WHERE id = 'r1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(partition_of_r1.starts_with("signal_processing_audit_y"), "{partition_of_r1}");

    // Retention drops whole old partitions, and only those.
    let ancient = (chrono::Utc::now() - chrono::Duration::days(800)).to_rfc3339();
    let (st, _, body) = svc
        .post_json(BASE, &record("r-old", "ancient", "production", "P0", &ancient, json!("1s")))
        .await;
    assert_eq!(st, 201, "{body}");
    let dropped = audit_guard::datastorage::postgres::drop_old_partitions(&pool, &Mutex::new(HashSet::new()), 12)
        .await
        .unwrap();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(svc.get(&format!("{BASE}/r-old")).await.0, 404);
    let mut ids = svc.all_ids().await;
    ids.sort();
    assert_eq!(ids, ["r1", "r2", "r3", "r4", "r5"]);

    drop(svc);
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn database_gone_gives_500_problem_and_not_ready() {
    let db = TestDb::create().await;
    let svc = Service::start(Some(&db.url)).await;
    db.drop_db().await;

    let (s, h, body) = svc
        .post_json(BASE, &record("lost", "fp", "production", "P0", &ago(5), json!(1)))
        .await;
    assert_eq!(s, 500, "{body}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert!(body["detail"].as_str().unwrap().contains("nothing was written"), "{body}");
    let r = svc.http.get(svc.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(svc.http.get(svc.url("/healthz")).send().await.unwrap().status(), 200);
    let metrics = svc.http.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("datastorage_errors_total{kind=\"database\"} 1"), "{metrics}");
}
