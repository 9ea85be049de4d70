//! PostgreSQL specifics: the design document's post-mortem SQL run verbatim on what went in
//! through the API, database-enforced immutability, monthly partitions and retention.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::Row;
use support::datastorage::*;

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

async fn partitions(pool: &sqlx::PgPool) -> Vec<String> {
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'signal_processing_audit'::regclass",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    names.sort();
    names
}

async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Data Storage as deployed: the owner migrated the database (with a window wide enough for
/// a record 800 days old, for retention), the runtime role serves it.
struct Deployed {
    svc: DataStorage,
    db: TestDb,
    /// The owner's.
    pool: sqlx::PgPool,
    /// The runtime role's.
    runtime: sqlx::PgPool,
}

async fn deployed() -> Deployed {
    let db = TestDb::create().await;
    let migrated = db.migrate(&["--time-window-past", "1000days"]);
    assert!(migrated.contains("runtime role audit_guard_app: INSERT and SELECT"), "{migrated}");
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url()).args(&["--time-window-past", "1000days"])).await;
    let pool = db.pool().await;
    let runtime = db.runtime_pool().await;
    Deployed { svc, db, pool, runtime }
}

impl Deployed {
    async fn finish(self) {
        let Deployed { svc, db, pool, runtime } = self;
        drop(svc);
        pool.close().await;
        runtime.close().await;
        db.drop_db().await;
    }
}

/// Five records through the API, enrichment durations in both wire forms: 1.5 s (ns), 2.5 s
/// (Go), 3 min (Go), exactly 2 s (ns), 5 s ten days ago; r1 back.
async fn store_five(svc: &DataStorage) -> serde_json::Value {
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
    r1
}

/// An amendment of r1 and a break-glass event, so every table holds a row.
async fn a_row_in_every_table(svc: &DataStorage, r1: &serde_json::Value) {
    let mut r1_failed = r1.clone();
    r1_failed["status"] = json!("failed");
    assert_eq!(svc.post_json(&format!("{BASE}/r1/amendments"), &r1_failed).await.0, 201);
    assert_eq!(
        svc.post_json(BREAK_GLASS, &break_glass_event("rv-1", "bob", "r1", &ago(5))).await.0,
        201
    );
}

/// The partition r1 went to.
async fn partition_of_r1(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM signal_processing_audit WHERE id = 'r1'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_design_documents_query_by_signal_lists_its_records_newest_first() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let rows = text_rows(&d.pool, Q_BY_SIGNAL, &["id", "environment", "priority"]).await;
    assert_eq!(
        rows,
        vec![vec![s("r2"), s("production"), s("P0")], vec![s("r1"), s("production"), s("P0")]]
    );
    d.finish().await;
}

/// r5 is older than its 7 days.
#[tokio::test]
async fn the_design_documents_classification_query_covers_the_last_7_days() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let rows = text_rows(&d.pool, Q_CLASSIFICATION, &["environment", "avg_confidence", "total_signals"]).await;
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
    d.finish().await;
}

#[tokio::test]
async fn the_design_documents_priority_query_covers_the_last_7_days() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let rows = text_rows(&d.pool, Q_PRIORITY, &["priority", "count", "avg_score"]).await;
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
    d.finish().await;
}

/// 3 min, 5 s, 2.5 s in that order; 1.5 s and exactly 2 s left out.
#[tokio::test]
async fn the_design_documents_slow_enrichment_query_lists_the_ones_over_2_seconds_slowest_first() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let rows = text_rows(&d.pool, Q_SLOW, &["remediation_id", "signal_fingerprint", "enrichment_duration"]).await;
    assert_eq!(
        rows,
        vec![
            vec![s("rr-r3"), s("disk-full-staging-7"), s("00:03:00")],
            vec![s("rr-r5"), s("old-signal"), s("00:00:05")],
            vec![s("rr-r2"), s("mem-pressure-prod-123"), s("00:00:02.5")],
        ]
    );
    d.finish().await;
}

/// Over a range that includes r5.
#[tokio::test]
async fn the_slow_phases_endpoint_agrees_with_the_design_documents_query() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let since = ago(11 * 86_400).replace('+', "%2B");
    let (st, slow) = d
        .svc
        .get(&format!("{BASE}/stats/slow-phases?phase=enriching&min_duration=2s&since={since}"))
        .await;
    assert_eq!(st, 200, "{slow}");
    let got: Vec<_> = slow["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["duration_ns"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("r3"), json!(180_000_000_000i64)),
            (json!("r5"), json!(5_000_000_000i64)),
            (json!("r2"), json!(2_500_000_000i64))
        ]
    );
    d.finish().await;
}

/// Monthly partitions exist for the whole window; nothing falls into DEFAULT.
#[tokio::test]
async fn records_go_to_monthly_partitions_and_none_to_default() {
    let d = deployed().await;
    store_five(&d.svc).await;
    assert_eq!(count(&d.pool, "signal_processing_audit_default").await, 0);
    let partition_of_r1 = partition_of_r1(&d.pool).await;
    assert!(partition_of_r1.starts_with("signal_processing_audit_y"), "{partition_of_r1}");
    d.finish().await;
}

/// As the runtime role, nothing but INSERT and SELECT through the
/// parents works — on the parents, on a partition by name, on every other table.
#[tokio::test]
async fn the_runtime_role_can_only_insert_and_select_through_the_parents() {
    let d = deployed().await;
    let r1 = store_five(&d.svc).await;
    a_row_in_every_table(&d.svc, &r1).await;
    let partition_of_r1 = partition_of_r1(&d.pool).await;
    let insert_into_partition = format!(
        "INSERT INTO {partition_of_r1} (id, remediation_id, signal_fingerprint, processing_phases, completed_at, status, record) \
         VALUES ('sneaky', 'rr', 'fp', '[]', now(), 'completed', '{{}}')"
    );
    let refused_for_runtime = [
        "UPDATE signal_processing_audit SET status = 'failed' WHERE id = 'r1'".to_string(),
        "DELETE FROM signal_processing_audit WHERE id = 'r1'".into(),
        "TRUNCATE signal_processing_audit".into(),
        format!("TRUNCATE {partition_of_r1}"),
        "TRUNCATE signal_processing_audit_default".into(),
        format!("UPDATE {partition_of_r1} SET status = 'failed'"),
        format!("DELETE FROM {partition_of_r1}"),
        format!("DROP TABLE {partition_of_r1}"),
        "DROP TABLE signal_processing_audit".into(),
        "ALTER TABLE signal_processing_audit DISABLE TRIGGER ALL".into(),
        format!("ALTER TABLE signal_processing_audit DETACH PARTITION {partition_of_r1}"),
        insert_into_partition.clone(),
        "INSERT INTO signal_processing_audit_default (id, remediation_id, signal_fingerprint, processing_phases, completed_at, status, record) \
         VALUES ('sneaky', 'rr', 'fp', '[]', now(), 'completed', '{}')"
            .into(),
        format!("SELECT * FROM {partition_of_r1}"),
        "UPDATE signal_processing_audit_ids SET id = 'x' WHERE id = 'r1'".into(),
        "DELETE FROM signal_processing_audit_ids".into(),
        "TRUNCATE signal_processing_audit_ids".into(),
        "DELETE FROM signal_processing_audit_amendments".into(),
        "TRUNCATE signal_processing_audit_amendments".into(),
        "UPDATE break_glass_events SET user_name = 'nobody'".into(),
        "DELETE FROM break_glass_events".into(),
        "TRUNCATE break_glass_events".into(),
        "DROP TABLE break_glass_events".into(),
        "ALTER TABLE signal_processing_audit_ids ADD COLUMN x int".into(),
        "SELECT signal_processing_audit_create_partition('2031-01-01')".into(),
        "CREATE TABLE signal_processing_audit_y2031m01 (LIKE signal_processing_audit)".into(),
    ];
    for sql in &refused_for_runtime {
        let err = sqlx::raw_sql(sql).execute(&d.runtime).await.expect_err(sql);
        let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
    }
    // ... and its own path still works: it can read through the parent and create next month.
    assert_eq!(count(&d.runtime, "signal_processing_audit").await, 5);
    sqlx::query("SELECT * FROM signal_processing_audit_create_next_partitions()")
        .fetch_all(&d.runtime)
        .await
        .unwrap();
    assert!(
        audit_guard::datastorage::postgres::drop_old_partitions(&d.runtime, 1, &Default::default())
            .await
            .is_err(),
        "retention needs the owner"
    );
    d.finish().await;
}

/// Including TRUNCATE of a partition, whose guard PostgreSQL does not inherit from the parent
/// (each partition gets its own).
#[tokio::test]
async fn the_triggers_refuse_changes_from_the_owner_too() {
    let d = deployed().await;
    let r1 = store_five(&d.svc).await;
    a_row_in_every_table(&d.svc, &r1).await;
    let partition_of_r1 = partition_of_r1(&d.pool).await;
    for sql in [
        "UPDATE signal_processing_audit SET status = 'failed' WHERE id = 'r1'".to_string(),
        "DELETE FROM signal_processing_audit WHERE id = 'r1'".into(),
        "TRUNCATE signal_processing_audit".into(),
        format!("TRUNCATE {partition_of_r1}"),
        format!("DELETE FROM {partition_of_r1}"),
        "TRUNCATE signal_processing_audit_default".into(),
        "UPDATE signal_processing_audit_ids SET id = 'x' WHERE id = 'r1'".into(),
        "DELETE FROM signal_processing_audit_ids WHERE id = 'r1'".into(),
        "UPDATE signal_processing_audit_amendments SET record = '{}'".into(),
        "TRUNCATE signal_processing_audit_amendments".into(),
        "DELETE FROM break_glass_events".into(),
        "TRUNCATE break_glass_events".into(),
    ] {
        let err = sqlx::raw_sql(&sql).execute(&d.pool).await.expect_err(&sql);
        assert!(err.to_string().contains("immutable"), "{sql}: {err}");
    }
    for table in ["signal_processing_audit", "signal_processing_audit_ids"] {
        assert_eq!(count(&d.pool, table).await, 5, "{table}");
    }
    assert_eq!(count(&d.pool, "signal_processing_audit_amendments").await, 1);
    assert_eq!(count(&d.pool, "break_glass_events").await, 1);
    let (st, got) = d.svc.get(&format!("{BASE}/r1")).await;
    assert_eq!(st, 200);
    assert_eq!(got["amendments"][0]["status"], "failed");
    let mut original = got.clone();
    original.as_object_mut().unwrap().remove("amendments");
    assert_eq!(original, r1);
    d.finish().await;
}

/// A record dated year 9999 or 0001 is refused naming the field,
/// nothing is written and no partition appears.
#[tokio::test]
async fn a_time_outside_the_window_is_refused_naming_the_field_and_makes_no_partition() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let before = partitions(&d.pool).await;
    for (path, body, field) in [
        (
            format!("{BASE}/batch"),
            json!([
                record("ok-1", "fp", "staging", "P1", &ago(5), json!(1)),
                record("far-1", "fp", "staging", "P1", "9999-06-01T00:00:00Z", json!(1))
            ]),
            "[1].completed_at",
        ),
        (
            format!("{BASE}/batch"),
            json!([record("far-2", "fp", "staging", "P1", "0001-01-01T00:00:00Z", json!(1))]),
            "[0].completed_at",
        ),
        (
            BASE.to_string(),
            record("far-3", "fp", "staging", "P1", "9999-12-31T23:59:59Z", json!(1)),
            "completed_at",
        ),
        (
            BASE.to_string(),
            record("far-4", "fp", "staging", "P1", &ago(-3600), json!(1)),
            "completed_at",
        ),
    ] {
        let (st, _, p) = d.svc.post_json(&path, &body).await;
        assert_eq!((st, p["field"].as_str()), (400, Some(field)), "{p}");
    }
    assert_eq!(partitions(&d.pool).await, before, "no partition for a refused month");
    assert_eq!(count(&d.pool, "signal_processing_audit_ids").await, 5);
    d.finish().await;
}

/// For counting them.
#[tokio::test]
async fn anomalies_have_a_nullable_column_of_their_own() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let mut odd = record("odd-1", "fp", "staging", "P1", &ago(5), json!(1));
    odd["anomalies"] = json!([{"field": "confidence", "value": 5}]);
    assert_eq!(d.svc.post_json(BASE, &odd).await.0, 201);
    let anomalous: Vec<(String, i32)> =
        sqlx::query_as("SELECT id, jsonb_array_length(anomalies) FROM signal_processing_audit WHERE anomalies IS NOT NULL")
            .fetch_all(&d.pool)
            .await
            .unwrap();
    assert_eq!(anomalous, [("odd-1".to_string(), 1)]);
    d.finish().await;
}

/// As the owner; the dropped record's id stays taken.
/// Retention drops the partitions of old months of `stored_at`: a record that only claims an
/// old `completed_at` stays; one stored in such a month goes with it.
#[tokio::test]
async fn retention_drops_whole_old_partitions_and_only_those() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let odd = record("odd-1", "fp", "staging", "P1", &ago(5), json!(1));
    assert_eq!(d.svc.post_json(BASE, &odd).await.0, 201);
    let ancient = chrono::Utc::now() - chrono::Duration::days(800);
    let claims_old = record("r-claims-old", "ancient", "production", "P0", &ancient.to_rfc3339(), json!("1s"));
    let (st, _, body) = d.svc.post_json(BASE, &claims_old).await;
    assert_eq!(st, 201, "{body}");
    // A record stored 800 days ago (written as the owner: the service stores at its own now),
    // with its log entry, as an id row needs.
    let old = record("r-old", "ancient", "production", "P0", &ancient.to_rfc3339(), json!("1s"));
    let entry = audit_guard::evidence::entry::Entry::new(
        audit_guard::evidence::entry::Kind::Record,
        "r-old",
        "r-old",
        ancient,
        old.to_string().as_bytes(),
    )
    .encode()
    .unwrap();
    sqlx::query(
        "WITH ids AS (INSERT INTO signal_processing_audit_ids (id, completed_at, stored_at) VALUES ('r-old', $1, $1)), \
         pending AS (INSERT INTO tlog_pending (kind, item_id, stored_at, entry) VALUES (1, 'r-old', $1, $3)) \
         INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, completed_at, status, \
         record, stored_at) VALUES ('r-old', 'rr', 'ancient', '[]', $1, 'completed', $2::json, $1)",
    )
    .bind(ancient)
    .bind(old.to_string())
    .bind(entry)
    .execute(&d.pool)
    .await
    .unwrap();
    let dropped = audit_guard::datastorage::postgres::drop_old_partitions(&d.pool, 12, &Default::default())
        .await
        .unwrap();
    let cutoff = (chrono::Utc::now() - chrono::Duration::days(366)).format("y%Ym%m").to_string();
    assert!(
        !dropped.is_empty() && dropped.iter().all(|p| p["signal_processing_audit_".len()..] < *cutoff),
        "{dropped:?}"
    );
    assert_eq!(d.svc.get(&format!("{BASE}/r-old")).await.0, 404);
    let mut ids = d.svc.all_ids().await;
    ids.sort();
    assert_eq!(ids, ["odd-1", "r-claims-old", "r1", "r2", "r3", "r4", "r5"]);
    // The same record again is a 409 that cannot be confirmed identical.
    let (st, _, p) = d.svc.post_json(BASE, &old).await;
    assert_eq!(
        (st, p["identical"].clone(), p["existing"].clone()),
        (409, json!(false), json!(null)),
        "{p}"
    );
    d.finish().await;
}

/// Runs the binary expecting it to exit with an error; returns its stderr.
fn refuses(args: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_audit-guard"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "{args:?} should have failed:\n{err}");
            return err;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test]
async fn the_runtime_role_cannot_migrate_and_retention_belongs_to_the_owner() {
    let db = TestDb::create().await;
    let runtime_url = db.runtime_url();
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let tokens = tokens.to_str().unwrap();
    let key = chain_key_file(dir.path());
    let key = key.to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut a = vec![
            "datastorage",
            "--listen",
            "127.0.0.1:0",
            "--plain-http",
            "--tokens-file",
            tokens,
            "--database-url",
            &runtime_url,
            "--chain-key-file",
            key,
        ];
        a.extend_from_slice(extra);
        refuses(&a)
    };

    // Before the owner migrated: the runtime role cannot create the schema, and says what to do.
    let err = serve(&[]);
    assert!(err.contains("audit-guard datastorage migrate"), "{err}");

    // migrate converges: a second run creates nothing new and grants the same.
    let first = db.migrate(&[]);
    assert!(first.contains("created partition signal_processing_audit_y"), "{first}");
    let second = db.migrate(&[]);
    assert!(!second.contains("created partition"), "{second}");
    assert!(second.contains("runtime role audit_guard_app"), "{second}");
    let facts = audit_guard::datastorage::migrate::privilege_facts(&db.pool().await, RUNTIME_ROLE)
        .await
        .unwrap();
    assert_eq!(audit_guard::datastorage::migrate::privilege_problems(&facts), Vec::<String>::new());
    // SELECT and INSERT on the eleven audit tables (export_manifests, break_glass_claims, the
    // transparency log's four and the witnesses' cosignatures included), SELECT on the migrations.
    assert_eq!(facts.table_privileges.len(), 23, "{facts:?}");
    let mut cosignatures: Vec<&str> = facts
        .table_privileges
        .iter()
        .filter(|(table, _)| table == "tlog_cosignatures")
        .map(|(_, privilege)| privilege.as_str())
        .collect();
    cosignatures.sort_unstable();
    assert_eq!(cosignatures, ["INSERT", "SELECT"], "cosignatures are append-only: {facts:?}");

    // Retention is the owner's job, and never shorter than the time window.
    let err = serve(&["--retention-months", "15"]);
    assert!(err.contains("datastorage migrate --retention-months"), "{err}");
    let err = refuses(&["datastorage", "migrate", "--database-url", &db.url, "--retention-months", "14"]);
    assert!(err.contains("at least 15"), "{err}");
    let ok = db.migrate(&["--retention-months", "15"]);
    assert!(!ok.contains("dropped"), "nothing that old yet: {ok}");

    db.drop_db().await;
}

#[tokio::test]
async fn database_gone_gives_500_problem_and_not_ready() {
    let db = TestDb::create().await;
    let svc = DataStorage::launch(Options::postgres(&db.url)).await;
    db.drop_db().await;

    let (s, h, body) = svc
        .post_json(BASE, &record("lost", "fp", "production", "P0", &ago(5), json!(1)))
        .await;
    assert_eq!(s, 500, "{body}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert!(body["detail"].as_str().unwrap().contains("nothing was written"), "{body}");
    let r = svc.http.get(svc.endpoint("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(svc.http.get(svc.endpoint("/healthz")).send().await.unwrap().status(), 200);
    let metrics = svc.http.get(svc.endpoint("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("datastorage_errors_total{kind=\"database\"} 1"), "{metrics}");
}

/// The runtime role cannot claim an id with nothing behind it: an id row needs its record and
/// its log entry in the same statement. A bare row planted anyway (by the owner, the guard
/// switched off — or left from before the guard) makes the record's POST an alarm that names
/// it, and `verify` names the row.
#[tokio::test]
async fn a_bare_id_row_is_refused_for_the_runtime_role_and_an_alarm_when_planted() {
    let d = deployed().await;
    store_five(&d.svc).await;
    let planted = record("planted-1", "fp", "production", "P1", &ago(60), json!("1s"));
    let refused = [
        "INSERT INTO signal_processing_audit_ids (id, completed_at) VALUES ('planted-1', now())".to_string(),
        // With a record but no log entry.
        "WITH ids AS (INSERT INTO signal_processing_audit_ids (id, completed_at, stored_at) VALUES ('planted-1', now(), now())) \
         INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, completed_at, status, \
         record, stored_at) VALUES ('planted-1', 'rr', 'fp', '[]', now(), 'completed', '{}', now())"
            .into(),
        // With a log entry but no record.
        "WITH ids AS (INSERT INTO signal_processing_audit_ids (id, completed_at, stored_at) VALUES ('planted-1', now(), now())) \
         INSERT INTO tlog_pending (kind, item_id, stored_at, entry) VALUES (1, 'planted-1', now(), '\\x00')"
            .into(),
    ];
    for sql in &refused {
        let err = sqlx::raw_sql(sql).execute(&d.runtime).await.expect_err(sql);
        let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("23514"), "{sql}: {err}");
        assert!(err.to_string().contains("planted-1"), "{err}");
    }
    // Separate statements in one transaction are refused too (the first one already).
    let mut tx = d.runtime.begin().await.unwrap();
    assert!(
        sqlx::query("INSERT INTO signal_processing_audit_ids (id, completed_at) VALUES ('planted-1', now())")
            .execute(&mut *tx)
            .await
            .is_err()
    );
    tx.rollback().await.unwrap();
    assert_eq!(count(&d.pool, "signal_processing_audit_ids").await, 5);
    let (st, _, body) = d.svc.post_json(BASE, &planted).await;
    assert_eq!(st, 201, "the service's own path still stores: {body}");

    // A bare row the guard did not see (the owner switched it off, or it predates the guard).
    sqlx::raw_sql(
        "ALTER TABLE signal_processing_audit_ids DISABLE TRIGGER signal_processing_audit_ids_complete; \
         INSERT INTO signal_processing_audit_ids (id, completed_at) VALUES ('planted-2', now()); \
         ALTER TABLE signal_processing_audit_ids ENABLE TRIGGER signal_processing_audit_ids_complete;",
    )
    .execute(&d.pool)
    .await
    .unwrap();
    let blocked = record("planted-2", "fp", "production", "P1", &ago(60), json!("1s"));
    let (st, _, p) = d.svc.post_json(BASE, &blocked).await;
    assert_eq!(
        (st, p["blocked"].clone(), p["identical"].clone()),
        (409, json!(true), json!(false)),
        "{p}"
    );
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"planted-2\"") && detail.contains("uid planted-2") && detail.contains("no transparency-log entry"),
        "{detail}"
    );
    let ok = record("fine-1", "fp", "production", "P1", &ago(60), json!("1s"));
    let (st, _, v) = d.svc.post_json(&format!("{BASE}/batch"), &json!([ok, blocked])).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!([{"id": "fine-1", "result": "created"}, {"id": "planted-2", "result": "conflict", "blocked": true}])
    );
    // A record that exists with other content is still a plain conflict.
    let mut other = planted.clone();
    other["status"] = json!("failed");
    let (st, _, p) = d.svc.post_json(BASE, &other).await;
    assert_eq!((st, p.get("blocked")), (409, None), "{p}");
    let metrics = d
        .svc
        .http
        .get(d.svc.endpoint("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("datastorage_blocked_ids_total 2"), "{metrics}");
    assert!(metrics.contains("datastorage_record_conflicts_total 1"), "{metrics}");

    let (st, v) = d.svc.get_as(READER_TOKEN, &format!("{BASE}/verify")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"], "broken", "{v:#}");
    let bare: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["problem"] == "bare_id")
        .collect();
    assert_eq!(bare.len(), 1, "{v:#}");
    assert_eq!(bare[0]["id"], "planted-2");
    d.finish().await;
}
