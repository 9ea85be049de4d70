//! Tamper evidence and signed exports, end to end: the real `audit-guard datastorage` on real
//! PostgreSQL (owner and runtime roles) and on SQLite, the real `audit-guard verify`,
//! `export` and `verify-export` commands as an auditor runs them. Tampering is done the way
//! an insider with database access would: as the PostgreSQL superuser, triggers disabled.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::datastorage::*;

/// Runs the binary; (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-guard"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs SQL in `db` as the PostgreSQL superuser (peer authentication through `su`).
fn as_superuser(db: &str, sql: &str) {
    let mut child = Command::new("su")
        .current_dir("/")
        .args(["postgres", "-c", &format!("psql -v ON_ERROR_STOP=1 -qAt -d {db}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql as superuser:\n{sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn reader_token_file(dir: &Path) -> PathBuf {
    let p = dir.join("reader.token");
    std::fs::write(&p, READER_TOKEN).unwrap();
    p
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `verify` through the API with the reader's token; (exit code, stdout + stderr, JSON result).
fn verify_api(svc: &DataStorage, token: &Path, extra: &[&str]) -> (i32, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("verify.json");
    let mut args = vec!["verify", "--url", &svc.url, "--token-file", p(token), "--output", p(&out)];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = cli(&args);
    let json = std::fs::read_to_string(&out)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (code, format!("{stdout}{stderr}"), json)
}

/// `verify` straight from the database (a read-only auditor): the owner's URL and the key file.
fn verify_db(url: &str, key: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["verify", "--database-url", url, "--chain-key-file", p(key)];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = cli(&args);
    (code, format!("{stdout}{stderr}"))
}

async fn post_batch(svc: &DataStorage, records: Vec<Value>) {
    for chunk in records.chunks(1000) {
        let (s, _, v) = svc.post_json(&format!("{BASE}/batch"), &Value::Array(chunk.to_vec())).await;
        assert_eq!(s, 200, "{v}");
        assert!(v.as_array().unwrap().iter().all(|r| r["result"] == "created"), "{v}");
    }
}

fn rec(i: usize, secs_ago: i64) -> Value {
    record(
        &format!("r-{i:05}"),
        &format!("fp-{}", i % 7),
        ["production", "staging"][i % 2],
        "P1",
        &ago(secs_ago),
        json!("1.5s"),
    )
}

/// A record, an amendment of it and a break-glass event, so all three kinds are chained.
async fn seed(svc: &DataStorage, n: usize) {
    post_batch(svc, (0..n).map(|i| rec(i, 600 + i as i64)).collect()).await;
    let mut amended = rec(0, 600);
    amended["status"] = json!("failed");
    amended["error_message"] = json!("changed after the fact");
    let (s, _, v) = svc.post_json(&format!("{BASE}/r-00000/amendments"), &amended).await;
    assert_eq!(s, 201, "{v}");
    let (s, _, v) = svc
        .post_json(BREAK_GLASS, &break_glass_event("rev-1", "bob", "r-00001", &ago(30)))
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn postgres_verify_names_every_kind_of_tampering() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url())).await;
    let dir = tempfile::tempdir().unwrap();
    let token = reader_token_file(dir.path());
    let key = svc.chain_key_file();
    // Two records claiming two months back (stored now, in this month's partition with the
    // rest); then the rest, the break-glass event last.
    post_batch(&svc, (100..102).map(|i| rec(i, 70 * 86_400)).collect()).await;
    seed(&svc, 40).await;

    let (code, out, json) = verify_api(&svc, &token, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("intact: 44 chain entries"), "{out}");
    assert_eq!(json["checked"], json!({"records": 42, "amendments": 1, "break_glass_events": 1}));
    let anchors = dir.path().join("anchors.json");
    std::fs::write(&anchors, json.to_string()).unwrap();
    let (code, out) = verify_db(&db.url, &key, &[]);
    assert_eq!(code, 0, "straight from the database too: {out}");

    // One column of one record, as the superuser with the triggers off.
    as_superuser(
        &db.name,
        "ALTER TABLE signal_processing_audit DISABLE TRIGGER signal_processing_audit_no_change;
         UPDATE signal_processing_audit SET confidence = 0.99 WHERE id = 'r-00017';
         ALTER TABLE signal_processing_audit ENABLE TRIGGER signal_processing_audit_no_change;",
    );
    let (code, out, json) = verify_api(&svc, &token, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("broken: 1 finding"), "{out}");
    assert_eq!(json["first_broken"]["id"], "r-00017", "{json:#}");
    assert_eq!(json["first_broken"]["problem"], "column_changed");
    assert!(json["first_broken"]["detail"].as_str().unwrap().contains("confidence"));
    let (code, out) = verify_db(&db.url, &key, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("r-00017"), "{out}");

    // The stored JSON itself (the query columns left alone), and an event's actor.
    as_superuser(
        &db.name,
        "ALTER TABLE signal_processing_audit DISABLE TRIGGER signal_processing_audit_no_change;
         UPDATE signal_processing_audit SET record = jsonb_set(record::jsonb, '{sla_requirement}', '\"relaxed\"')::json WHERE id = 'r-00003';
         ALTER TABLE signal_processing_audit ENABLE TRIGGER signal_processing_audit_no_change;
         ALTER TABLE break_glass_events DISABLE TRIGGER break_glass_events_no_change;
         UPDATE break_glass_events SET user_name = 'nobody' WHERE id = 'rev-1';
         ALTER TABLE break_glass_events ENABLE TRIGGER break_glass_events_no_change;",
    );
    let (_, out, json) = verify_api(&svc, &token, &[]);
    let named = |problem: &str| -> Vec<String> {
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["problem"] == problem)
            .map(|f| f["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(named("content_changed"), ["r-00003"], "{out}");
    assert_eq!(named("column_changed"), ["r-00003", "r-00017", "rev-1"], "{out}");

    // A row deleted from its partition; a whole partition dropped.
    as_superuser(
        &db.name,
        "ALTER TABLE signal_processing_audit DISABLE TRIGGER signal_processing_audit_no_change;
         DELETE FROM signal_processing_audit WHERE id = 'r-00009';
         ALTER TABLE signal_processing_audit ENABLE TRIGGER signal_processing_audit_no_change;",
    );
    let (_, _, json) = verify_api(&svc, &token, &[]);
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["problem"] == "missing" && f["id"] == "r-00009"),
        "{json:#}"
    );
    // The partition of the month the two records claim holds none of them: dropping it loses
    // nothing.
    let claimed_month = chrono::Utc::now() - chrono::Duration::days(70);
    let partition = format!("signal_processing_audit_y{}", claimed_month.format("%Ym%m"));
    as_superuser(&db.name, &format!("DROP TABLE {partition};"));
    let (_, out, json) = verify_api(&svc, &token, &[]);
    assert_eq!(named_of(&json, "partition_dropped").len(), 0, "{out}");

    // A record and its link removed together: a gap names the entry after it.
    let (_, _, before) = verify_api(&svc, &token, &[]);
    let victim = "r-00030";
    as_superuser(
        &db.name,
        &format!(
            "ALTER TABLE signal_processing_audit DISABLE TRIGGER signal_processing_audit_no_change;
             ALTER TABLE signal_processing_audit_ids DISABLE TRIGGER signal_processing_audit_ids_no_change;
             DELETE FROM signal_processing_audit WHERE id = '{victim}';
             DELETE FROM signal_processing_audit_ids WHERE id = '{victim}';
             ALTER TABLE signal_processing_audit ENABLE TRIGGER signal_processing_audit_no_change;
             ALTER TABLE signal_processing_audit_ids ENABLE TRIGGER signal_processing_audit_ids_no_change;"
        ),
    );
    let (_, out, json) = verify_api(&svc, &token, &[]);
    assert_eq!(named_of(&json, "gap").len(), 1, "{out}");
    assert!(json["findings_total"].as_u64() > before["findings_total"].as_u64(), "{out}");

    // The newest entry of the shard cut off: the chain alone cannot tell, the anchor can.
    let head = &json["heads"][0];
    let newest: (String,) = sqlx::query_as(
        "SELECT id FROM break_glass_events WHERE chain_shard = $1 AND chain_seq = $2 \
         UNION ALL SELECT amendment_id FROM signal_processing_audit_amendments WHERE chain_shard = $1 AND chain_seq = $2 \
         UNION ALL SELECT id FROM signal_processing_audit_ids WHERE chain_shard = $1 AND chain_seq = $2",
    )
    .bind(head["shard"].as_i64().unwrap() as i32)
    .bind(head["seq"].as_i64().unwrap())
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert_eq!(newest.0, "rev-1", "the break-glass event was stored last");
    as_superuser(
        &db.name,
        "ALTER TABLE break_glass_events DISABLE TRIGGER break_glass_events_no_change;
         DELETE FROM break_glass_events WHERE id = 'rev-1';
         ALTER TABLE break_glass_events ENABLE TRIGGER break_glass_events_no_change;",
    );
    let (_, _, json) = verify_api(&svc, &token, &[]);
    assert_eq!(named_of(&json, "anchor_mismatch").len(), 0);
    let (_, out, json) = verify_api(&svc, &token, &["--anchor", p(&anchors)]);
    assert_eq!(json["findings_by_problem"]["anchor_mismatch"], 1, "{out}");
    let (code, out) = verify_db(&db.url, &key, &["--anchor", p(&anchors)]);
    assert_eq!(code, 1);
    assert!(out.contains("AnchorMismatch"), "{out}");

    // The month the records were stored in, dropped whole: every chained record still listed
    // in the ids table is gone with it, and no retention expects that of the current month.
    let partition = format!("signal_processing_audit_y{}", chrono::Utc::now().format("%Ym%m"));
    as_superuser(&db.name, &format!("DROP TABLE {partition};"));
    for retention in ["0", "1", "15"] {
        let (_, out, json) = verify_api(&svc, &token, &["--retention-months", retention]);
        assert_eq!(json["findings_by_problem"]["partition_dropped"], 41, "{out}");
        assert_eq!(json["expired_by_retention"], 0, "{out}");
        assert!(named_of(&json, "partition_dropped").contains(&"r-00100".to_string()), "{out}");
    }

    drop(svc);
    db.drop_db().await;
}

fn named_of(json: &Value, problem: &str) -> Vec<String> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["problem"] == problem)
        .map(|f| f["id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn postgres_ten_thousand_records_verify_as_intact() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url())).await;
    let dir = tempfile::tempdir().unwrap();
    let token = reader_token_file(dir.path());
    // Four writers at once, so several shards are in use.
    let batches: Vec<Vec<Value>> = (0..10)
        .map(|b| (0..1000).map(|i| rec(b * 1000 + i, 60 + i as i64)).collect())
        .collect();
    futures::future::join_all(batches.into_iter().map(|b| post_batch(&svc, b))).await;
    let (code, out, json) = verify_api(&svc, &token, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("intact: 10000 chain entries"), "{out}");
    assert_eq!(json["checked"]["records"], 10000);
    assert_eq!(
        json["heads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["seq"].as_i64().unwrap())
            .sum::<i64>(),
        10000
    );
    let (code, out) = verify_db(&db.url, &svc.chain_key_file(), &[]);
    assert_eq!(code, 0, "{out}");
    drop(svc);
    db.drop_db().await;
}

/// Downloads an export with the CLI; returns the file.
fn export(svc: &DataStorage, token: &Path, dir: &Path, format: &str) -> PathBuf {
    let out = dir.join(format!("export.{format}"));
    let (code, stdout, stderr) = cli(&[
        "export",
        "--url",
        &svc.url,
        "--token-file",
        p(token),
        "--format",
        format,
        "--out",
        p(&out),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("matches the manifest"), "{stdout}");
    out
}

fn verify_export(file: &Path, public: &Path) -> (i32, String) {
    let (code, stdout, stderr) = cli(&["verify-export", p(file), "--public-key", p(public)]);
    (code, format!("{stdout}{stderr}"))
}

async fn signed_exports_hold_and_one_changed_byte_fails(svc: &DataStorage, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let token = reader_token_file(dir.path());
    // The public key from the well-known endpoint (no token) is the service's.
    let published = svc
        .http
        .get(svc.endpoint("/.well-known/audit-guard/export-signing-key.pem"))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    let published = published.text().await.unwrap();
    assert_eq!(published, std::fs::read_to_string(svc.public_key_file()).unwrap());
    let public = svc.public_key_file();
    let other = dir.path().join("other.pem");
    let (code, out, err) = cli(&["keys", "--signing-key", p(&other)]);
    assert_eq!(code, 0, "{out}{err}");
    let other_public = dir.path().join("other.pem.pub");
    for format in ["ndjson", "csv"] {
        let file = export(svc, &token, dir.path(), format);
        let (code, out) = verify_export(&file, &public);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("{n} records, 1 amendments, 1 break-glass events")), "{out}");
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(file.with_extension(format!("{format}.manifest.json"))).unwrap()).unwrap();
        assert_eq!(manifest["content_format"], format);
        assert!(!manifest["chain_heads"].as_array().unwrap().is_empty());
        let bytes = std::fs::read(&file).unwrap();
        for at in [bytes.len() / 2, bytes.len() - 3] {
            let mut changed = bytes.clone();
            changed[at] = if changed[at] == b'7' { b'8' } else { b'7' };
            let tampered = dir.path().join(format!("tampered.{format}"));
            std::fs::write(&tampered, &changed).unwrap();
            std::fs::copy(
                file.with_extension(format!("{format}.manifest.json")),
                dir.path().join(format!("tampered.{format}.manifest.json")),
            )
            .unwrap();
            std::fs::copy(
                file.with_extension(format!("{format}.sig")),
                dir.path().join(format!("tampered.{format}.sig")),
            )
            .unwrap();
            let (code, out) = verify_export(&tampered, &public);
            assert_eq!(code, 1, "byte {at} changed: {out}");
            assert!(out.contains("FAILED") && out.contains("not what was signed"), "{out}");
        }
        // Another key does not vouch for it.
        let (code, out) = verify_export(&file, &other_public);
        assert_eq!(code, 1, "{out}");
    }
    // An NDJSON line per row, each with its chain link and the stored JSON.
    let text = std::fs::read_to_string(dir.path().join("export.ndjson")).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.len(), n + 2);
    assert_eq!(kinds.last().map(String::as_str), Some("break_glass"));
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(first["chain"]["hash"].as_str().unwrap().len() == 64 && first["record"]["id"].is_string());
    // Manifests: none for an unknown id; readers only.
    let (s, v) = svc.get_as(READER_TOKEN, &format!("{BASE}/exports/not-an-export")).await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = svc.get_as(OUTSIDER_TOKEN, &format!("{BASE}/export")).await;
    assert_eq!(s, 403);
    let (s, v) = svc.get_as(READER_TOKEN, &format!("{BASE}/export?format=xml")).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("format")));
}

#[tokio::test]
async fn postgres_exports_are_signed_streamed_and_checked_offline() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url())).await;
    // More than two of the export's pages.
    seed(&svc, 2_345).await;
    signed_exports_hold_and_one_changed_byte_fails(&svc, 2_345).await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM export_manifests")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(kept, 2, "every finished export leaves its signed manifest");
    drop(svc);
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_chain_verify_and_export() {
    let svc = DataStorage::launch(Options::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = reader_token_file(dir.path());
    seed(&svc, 50).await;
    let (code, out, _) = verify_api(&svc, &token, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("intact: 52 chain entries"), "{out}");
    signed_exports_hold_and_one_changed_byte_fails(&svc, 50).await;

    // Straight from the file, read-only, with the key the service created beside it.
    let file = svc.data_dir().join("audit.db");
    let key = svc.chain_key_file();
    let (code, out, _) = cli(&["verify", "--sqlite", p(&file), "--chain-key-file", p(&key)]);
    assert_eq!(code, 0, "{out}");

    // Tampered in the file (triggers dropped and put back, as an insider would).
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", file.display())).await.unwrap();
    let trigger: (String,) = sqlx::query_as("SELECT sql FROM sqlite_master WHERE name = 'signal_processing_audit_no_update'")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER signal_processing_audit_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE signal_processing_audit SET status = 'failed' WHERE id = 'r-00020'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&trigger.0).execute(&pool).await.unwrap();
    pool.close().await;
    let (code, out, json) = verify_api(&svc, &token, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(json["first_broken"]["id"], "r-00020", "{json:#}");
    assert!(json["first_broken"]["detail"].as_str().unwrap().contains("status"));
    let (code, out, _) = cli(&["verify", "--sqlite", p(&file), "--chain-key-file", p(&key)]);
    assert_eq!(code, 1);
    assert!(out.contains("r-00020"), "{out}");
    // Without the key, nothing can be recomputed: an error, never "intact".
    let (code, _, err) = cli(&["verify", "--sqlite", p(&file)]);
    assert_eq!(code, 2, "{err}");
}

/// `completed_at` on `day` (0 = yesterday, 1 = the day before, UTC) at `hour`.
fn on_day(day: i64, hour: u32) -> String {
    let date = (chrono::Utc::now() - chrono::Duration::days(day + 1)).date_naive();
    date.and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn postgres_report_of_a_known_period_gives_the_right_numbers() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url())).await;
    let dir = tempfile::tempdir().unwrap();
    let token = reader_token_file(dir.path());
    let (d1, d2) = (1, 0); // the day before yesterday, yesterday
    let mut rows = vec![];
    let mut add = |id: &str, day: i64, hour: u32, env: &str, prio: &str, patch: Value| {
        let mut r = record(id, "fp", env, prio, &on_day(day, hour), json!("1.5s"));
        for (k, v) in patch.as_object().unwrap() {
            r[k] = v.clone();
        }
        rows.push(r);
    };
    // Day 1: two completions. Day 2: two deletions (waits of about 20 s and 5 s), a failure
    // routed elsewhere, a forced removal, an anomalous record.
    add("c1", d1, 9, "production", "P0", json!({}));
    add("c2", d1, 10, "staging", "P1", json!({}));
    add(
        "c3",
        d2,
        9,
        "production",
        "P1",
        json!({"trigger": "deletion", "deleted_at": ago(20)}),
    );
    add("c4", d2, 10, "staging", "P1", json!({"trigger": "deletion", "deleted_at": ago(5)}));
    add(
        "f1",
        d2,
        11,
        "production",
        "P0",
        json!({"status": "failed", "error_message": "enrichment timed out", "routed_to_service": "manual-review", "routing_priority": 2}),
    );
    add(
        "x1",
        d2,
        12,
        "production",
        "P1",
        json!({"status": "forced", "trigger": "forced", "deleted_at": ago(30)}),
    );
    add(
        "a1",
        d2,
        13,
        "staging",
        "P1",
        json!({"anomalies": [{"field": "priority_score", "value": 500}]}),
    );
    // Claims a day before the period, but is stored in it: counted (under the day it claims).
    add("old", 2, 12, "production", "P0", json!({}));
    let mut changed = rows[1].clone();
    post_batch(&svc, rows).await;
    // A conflict: c2 posted again with other content is kept as an amendment.
    changed["status"] = json!("failed");
    changed["error_message"] = json!("reported late");
    let (s, _, v) = svc.post_json(&format!("{BASE}/c2/amendments"), &changed).await;
    assert_eq!(s, 201, "{v}");
    let (s, _, v) = svc
        .post_json(BREAK_GLASS, &break_glass_event("rev-x1", "alice", "x1", &on_day(d2, 12)))
        .await;
    assert_eq!(s, 201, "{v}");

    let since = on_day(d1, 0);
    // Until now: the amendment is of the period by the time it was stored (today).
    let until = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let report = |format: &str| {
        let out = dir.path().join(format!("report.{format}"));
        let (code, stdout, stderr) = cli(&[
            "report",
            "--url",
            &svc.url,
            "--token-file",
            p(&token),
            "--since",
            &since,
            "--until",
            &until,
            "--format",
            format,
            "--out",
            p(&out),
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        std::fs::read_to_string(out).unwrap()
    };
    let r: Value = serde_json::from_str(&report("json")).unwrap();
    assert_eq!(r["records"]["total"], 8, "{:#}", r["records"]);
    assert_eq!(r["records"]["by_status"], json!({"completed": 6, "failed": 1, "forced": 1}));
    assert_eq!(r["records"]["by_trigger"], json!({"completion": 5, "deletion": 2, "forced": 1}));
    let day = |d: i64| on_day(d, 0)[..10].to_string();
    let classification: Vec<(String, String, u64, f64)> = r["classification_by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let avg = (c["avg_confidence"].as_f64().unwrap() * 100.0).round() / 100.0;
            (
                c["day"].as_str().unwrap().into(),
                c["environment"].as_str().unwrap().into(),
                c["count"].as_u64().unwrap(),
                avg,
            )
        })
        .collect();
    assert_eq!(
        classification,
        [
            (day(2), "production".into(), 1, 0.9),
            (day(d1), "production".into(), 1, 0.9),
            (day(d1), "staging".into(), 1, 0.7),
            (day(d2), "production".into(), 3, 0.9),
            (day(d2), "staging".into(), 2, 0.7)
        ]
    );
    let priority: Vec<(String, String, u64, f64)> = r["priority_by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["day"].as_str().unwrap().into(),
                c["priority"].as_str().unwrap().into(),
                c["count"].as_u64().unwrap(),
                c["avg_score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        priority,
        [
            (day(2), "P0".into(), 1, 100.0),
            (day(d1), "P0".into(), 1, 100.0),
            (day(d1), "P1".into(), 1, 50.0),
            (day(d2), "P0".into(), 1, 100.0),
            (day(d2), "P1".into(), 4, 50.0)
        ]
    );
    assert_eq!(
        r["routing"]["by_service"],
        json!([{"value": "ai-analysis", "count": 7}, {"value": "manual-review", "count": 1}])
    );
    assert_eq!(
        r["routing"]["by_priority"],
        json!([{"value": 1, "count": 7}, {"value": 2, "count": 1}])
    );
    assert_eq!(r["forced_removals"]["forced_records"], 1);
    assert_eq!(r["forced_removals"]["by_user"], json!({"alice": 1}));
    assert_eq!(r["forced_removals"]["events"][0]["uid"], "x1");
    assert_eq!(r["amendments"]["total"], 1);
    assert_eq!(r["amendments"]["items"][0]["record_id"], "c2");
    assert_eq!(r["amendments"]["items"][0]["changed"], json!(["error_message", "status"]));
    assert_eq!(r["anomalies"]["records"], 1);
    assert_eq!(r["anomalies"]["items"][0]["id"], "a1");
    assert_eq!(r["anomalies"]["by_field"], json!({"priority_score": 1}));
    // Deletions that waited on Data Storage: c3 and c4 (x1 was forced, not a deletion write).
    let waits = &r["deletion_waits"];
    assert_eq!(waits["deletions"], 2, "{waits:#}");
    assert_eq!(waits["longest"]["id"], "c3");
    let longest = waits["longest"]["seconds"].as_f64().unwrap();
    assert!((19.0..60.0).contains(&longest), "{longest}");
    assert!(r["writer_drops"]["dropped"].is_null() && r["writer_drops"]["note"].as_str().unwrap().contains("--prometheus-url"));
    assert_eq!(r["chain"]["result"], "intact");
    assert_eq!(
        r["chain"]["checked"],
        json!({"records": 8, "amendments": 1, "break_glass_events": 1})
    );

    // The same numbers in the other renderings; the HTML is self-contained (no fetched fonts,
    // scripts or styles) and carries its charts inline.
    let md = report("markdown");
    assert!(
        md.contains("manual-review") && md.contains("alice") && md.contains("intact"),
        "{md}"
    );
    let html = report("html");
    assert!(
        html.starts_with("<!DOCTYPE html>") || html.starts_with("<!doctype html>"),
        "{}",
        &html[..80.min(html.len())]
    );
    assert!(html.contains("<svg"), "a chart");
    let svg_namespaces = html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
    assert_eq!(html.matches("http://").count(), svg_namespaces, "no URL but the SVG namespace");
    assert!(
        !html.contains("https://") && !html.contains("<link") && !html.contains("@import"),
        "nothing fetched"
    );
    drop(svc);
    db.drop_db().await;
}
