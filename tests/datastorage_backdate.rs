//! Data Storage places a record by when it stored it (`stored_at`), never by the
//! `completed_at` it claims: a record POSTed with a completion time 399 days back is in the
//! current period's report and export, and no retention run drops it before the records
//! stored beside it. Real `audit-guard datastorage` on real PostgreSQL and on SQLite; the
//! PostgreSQL migration to stored_at partitions keeps the rows that were there.

mod support;

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use support::datastorage::*;

/// The first instant of the current UTC month.
fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    format!("{}-01T00:00:00Z", now.format("%Y-%m")).parse().unwrap()
}

/// The current period: this month so far (and a little ahead).
fn current_period() -> String {
    let now = Utc::now();
    format!(
        "since={}&until={}",
        month_start(now).format("%Y-%m-%dT%H:%M:%SZ"),
        (now + Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// A writer posts a record claiming it completed 399 days ago; it is counted in this
/// month's report and export.
async fn a_back_dated_post_counts_in_the_current_period(svc: &DataStorage, id: &str) {
    let claimed = (Utc::now() - Duration::days(399)).to_rfc3339();
    let r = record(id, "fp-backdated", "production", "P1", &claimed, json!("1s"));
    let (st, _, body) = svc.post_json(BASE, &r).await;
    assert_eq!(st, 201, "{body}");
    let (st, stored) = svc.get(&format!("{BASE}/{id}")).await;
    assert_eq!(st, 200, "{stored}");
    let kept: DateTime<Utc> = stored["completed_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        kept.timestamp(),
        claimed.parse::<DateTime<Utc>>().unwrap().timestamp(),
        "the claim is kept as data"
    );

    let period = current_period();
    let (st, report) = svc.get_as(READER_TOKEN, &format!("{BASE}/report?{period}")).await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["records"]["total"], 1, "{report:#}");
    assert_eq!(report["chain"]["result"], "intact", "{report:#}");
    let (st, export) = svc.get_as(READER_TOKEN, &format!("{BASE}/export?{period}&format=ndjson")).await;
    assert_eq!(st, 200, "{export}");
    let lines: Vec<Value> = export
        .as_str()
        .map(|t| t.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
        .unwrap_or_else(|| vec![export.clone()]);
    let records: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "record").collect();
    assert_eq!(records.len(), 1, "{lines:#?}");
    assert_eq!(records[0]["id"], id);

    // The period it claims does not hold it.
    let old = Utc::now() - Duration::days(399);
    let (st, report) = svc
        .get_as(
            READER_TOKEN,
            &format!(
                "{BASE}/report?since={}&until={}",
                month_start(old).format("%Y-%m-%dT%H:%M:%SZ"),
                (month_start(old) + Duration::days(31)).format("%Y-%m-%dT%H:%M:%SZ")
            ),
        )
        .await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["records"]["total"], 0, "{report:#}");
}

#[tokio::test]
async fn postgres_a_back_dated_post_is_in_the_current_period_and_survives_retention() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url())).await;
    a_back_dated_post_counts_in_the_current_period(&svc, "backdated-1").await;

    let pool = db.pool().await;
    let partition: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM signal_processing_audit WHERE id = 'backdated-1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(partition, format!("signal_processing_audit_y{}", Utc::now().format("%Ym%m")));

    // A 15-month retention run about three months from now keeps it.
    let later = Utc::now() + Duration::days(90);
    let dropped = audit_guard::datastorage::postgres::drop_old_partitions_at(&pool, 15, later, &Default::default())
        .await
        .unwrap();
    assert!(!dropped.contains(&partition), "{dropped:?}");
    assert_eq!(svc.get(&format!("{BASE}/backdated-1")).await.0, 200);
    let (st, v) = svc.get_as(READER_TOKEN, &format!("{BASE}/verify?retention_months=15")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["result"].clone(), v["checked"]["records"].clone()),
        (json!("intact"), json!(1)),
        "{v:#}"
    );
    pool.close().await;
    drop(svc);
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_a_back_dated_post_is_in_the_current_period() {
    let svc = DataStorage::launch(Options::sqlite()).await;
    a_back_dated_post_counts_in_the_current_period(&svc, "backdated-1").await;
}

/// The schema as migration 0006 left it, with rows in it: some stored long after they
/// completed, one whose partition retention already dropped; then the upgrade.
#[tokio::test]
async fn postgres_the_move_to_stored_at_partitions_keeps_every_row_grant_and_guard() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let all = &audit_guard::datastorage::migrate::MIGRATOR;
    let before = sqlx::migrate::Migrator {
        migrations: Cow::Owned(all.iter().filter(|m| m.version <= 6).cloned().collect()),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    // The grants of that time: the claims table and the transparency log come with later
    // migrations (0009 grants its tables to the roles already granted the audit tables).
    for g in audit_guard::datastorage::migrate::grant_statements(RUNTIME_ROLE, "public")
        .into_iter()
        .filter(|g| !g.contains("tlog_clear_sequenced"))
        .map(|g| {
            g.replace(", break_glass_claims", "")
                .replace(", tlog_pending, tlog_entries, tlog_hashes, tlog_checkpoints, tlog_cosignatures", "")
        })
    {
        sqlx::query(&g).execute(&pool).await.unwrap();
    }
    let now = Utc::now();
    // (id, completed days ago, stored days ago)
    let rows = [("old-1", 300, 2), ("old-2", 45, 40), ("old-3", 1, 1)];
    for (id, completed, stored) in rows {
        let completed = now - Duration::days(completed);
        sqlx::query("SELECT signal_processing_audit_create_partition(date_trunc('month', $1 AT TIME ZONE 'UTC')::date)")
            .bind(completed)
            .execute(&pool)
            .await
            .unwrap();
        let rec = record(id, "fp-old", "production", "P2", &completed.to_rfc3339(), json!("1s"));
        sqlx::query(
            "WITH ids AS (INSERT INTO signal_processing_audit_ids (id, completed_at) VALUES ($1, $2)) \
             INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, completed_at, status, \
             record, stored_at, anomalies) VALUES ($1, 'rr', 'fp-old', '[]', $2, 'completed', $3::json, $4, '[{\"field\":\"x\",\"value\":1}]')",
        )
        .bind(id)
        .bind(completed)
        .bind(rec.to_string())
        .bind(now - Duration::days(stored))
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO signal_processing_audit_ids (id, completed_at) VALUES ('gone-1', $1)")
        .bind(now - Duration::days(700))
        .execute(&pool)
        .await
        .unwrap();
    let snapshot = "SELECT id, record::text, completed_at, stored_at, anomalies::text FROM signal_processing_audit ORDER BY id";
    type Row = (String, String, DateTime<Utc>, DateTime<Utc>, Option<String>);
    let kept: Vec<Row> = sqlx::query_as(snapshot).fetch_all(&pool).await.unwrap();
    assert_eq!(kept.len(), 3);

    all.run(&pool).await.unwrap();

    let moved: Vec<Row> = sqlx::query_as(snapshot).fetch_all(&pool).await.unwrap();
    assert_eq!(moved, kept, "every row, unchanged");
    // Each in the partition of the month it was stored in.
    for (id, _, stored) in rows {
        let partition: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM signal_processing_audit WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        let month = (now - Duration::days(stored)).format("%Ym%m");
        assert_eq!(partition, format!("signal_processing_audit_y{month}"), "{id}");
    }
    let ids: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query_as("SELECT id, stored_at FROM signal_processing_audit_ids ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(ids[0], ("gone-1".to_string(), None));
    assert_eq!(ids.iter().filter(|(_, s)| s.is_some()).count(), 3);
    // The guards hold, for the owner too.
    for stmt in [
        "UPDATE signal_processing_audit SET status = 'failed' WHERE id = 'old-1'",
        "DELETE FROM signal_processing_audit WHERE id = 'old-1'",
        "TRUNCATE signal_processing_audit",
        "UPDATE signal_processing_audit_ids SET stored_at = now() WHERE id = 'old-1'",
    ] {
        let e = sqlx::query(stmt).execute(&pool).await.unwrap_err();
        assert!(e.to_string().contains("immutable"), "{stmt}: {e}");
    }
    let part = format!("signal_processing_audit_y{}", now.format("%Ym%m"));
    let e = sqlx::query(&format!("TRUNCATE {part}")).execute(&pool).await.unwrap_err();
    assert!(e.to_string().contains("immutable"), "{e}");

    // The runtime role kept its grants (without a new `migrate --runtime-role`) and its
    // partition function; the service runs on the upgraded schema.
    let runtime = db.runtime_pool().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM signal_processing_audit")
        .fetch_one(&runtime)
        .await
        .unwrap();
    assert_eq!(n, 3);
    sqlx::query("SELECT * FROM signal_processing_audit_create_next_partitions()")
        .fetch_all(&runtime)
        .await
        .unwrap();
    runtime.close().await;
    let facts = audit_guard::datastorage::migrate::privilege_facts(&pool, RUNTIME_ROLE)
        .await
        .unwrap();
    assert_eq!(audit_guard::datastorage::migrate::privilege_problems(&facts), Vec::<String>::new());
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url())).await;
    let (st, v) = svc.get(&format!("{BASE}/old-1")).await;
    assert_eq!((st, v["id"].clone()), (200, json!("old-1")), "{v}");
    let fresh = record("new-1", "fp-new", "staging", "P1", &ago(60), json!("2s"));
    assert_eq!(svc.post_json(BASE, &fresh).await.0, 201);
    let mut listed = svc.all_ids().await;
    listed.sort();
    assert_eq!(listed, ["new-1", "old-1", "old-2", "old-3"]);
    pool.close().await;
    drop(svc);
    db.drop_db().await;
}
