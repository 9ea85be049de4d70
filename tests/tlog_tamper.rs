//! The database owner tampers after the auditor saved a checkpoint; `audit-guard verify-log`,
//! holding only the log's public key and that checkpoint, finds and names each change: a
//! record's field altered with every derived column recomputed (the HMAC chain too, with its
//! key, so the keyed `verify` sees nothing), the last 10 entries deleted, a whole month's
//! partition dropped, two entries swapped. Real PostgreSQL (owner and runtime roles), the real
//! Data Storage and the real CLI.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use audit_guard::evidence::chain::{self, ChainKeys, EntryKind, Head, NewEntry};
use audit_guard::evidence::entry::{Entry, Kind};
use audit_guard::evidence::note::{Checkpoint, SignerKey, ALG_ED25519};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::datastorage::*;

const LOG: &str = "/api/v1/log";
const ORIGIN: &str = "audit-guard.test/tamper";

/// `verify-log` as the auditor runs it: (exit code, stdout).
fn verify_log(svc: &DataStorage, dir: &Path, extra: &[&str]) -> (i32, String) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let out = Command::new(binary())
        .args([
            "verify-log",
            "--url",
            &svc.url,
            "--token-file",
            &p("reader.token"),
            "--log-key",
            &p("log.key.pub"),
        ])
        .args(extra)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

async fn wait_for_size(svc: &DataStorage, size: u64) {
    let start = Instant::now();
    loop {
        let r = svc
            .http
            .get(svc.endpoint(&format!("{LOG}/checkpoint")))
            .bearer_auth(READER_TOKEN)
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap_or_default();
        if body.lines().nth(1) == Some(&size.to_string()) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no checkpoint of {size}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs statements as the owner in one transaction (the owner may switch its triggers off).
async fn as_owner(pool: &sqlx::PgPool, statements: &[&str]) {
    let mut tx = pool.begin().await.unwrap();
    for s in statements {
        sqlx::query(s).execute(&mut *tx).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    tx.commit().await.unwrap();
}

/// Records stored `days` ago by the owner, each with its log entry (the service stores at its
/// own now, so a past month's partition gets its records this way).
async fn backdated(pool: &sqlx::PgPool, ids: &[&str], days: i64) {
    let at: DateTime<Utc> = chrono::SubsecRound::trunc_subsecs(Utc::now() - chrono::Duration::days(days), 6);
    for id in ids {
        let text = record(id, "fp-old", "production", "P2", &at.to_rfc3339(), json!("1s")).to_string();
        let entry = Entry::new(Kind::Record, id, id, at, text.as_bytes()).encode().unwrap();
        sqlx::query(
            "WITH ids AS (INSERT INTO signal_processing_audit_ids (id, completed_at, stored_at) VALUES ($1, $2, $2)), \
             pending AS (INSERT INTO tlog_pending (kind, item_id, stored_at, entry) VALUES (1, $1, $2, $4)) \
             INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, completed_at, status, \
             record, stored_at, uid) VALUES ($1, 'rr', 'fp-old', '[]', $2, 'completed', $3::json, $2, $1)",
        )
        .bind(id)
        .bind(at)
        .bind(&text)
        .bind(entry)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Alters the newest record of a chain shard (status completed → failed) and recomputes every
/// derived column: its status column and its link, with the chain key. Returns its id.
async fn alter_a_record(pool: &sqlx::PgPool, keys: &ChainKeys) -> String {
    let (id, shard, seq, completed_at, stored_at, key_id): (String, i32, i64, DateTime<Utc>, DateTime<Utc>, String) = sqlx::query_as(
        "SELECT id, chain_shard, chain_seq, completed_at, stored_at, chain_key_id FROM signal_processing_audit_ids \
         WHERE chain_shard IS NOT NULL ORDER BY chain_seq DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let prev: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT chain_seq, chain_hash FROM signal_processing_audit_ids WHERE chain_shard = $1 AND chain_seq = $2")
            .bind(shard)
            .bind(seq - 1)
            .fetch_optional(pool)
            .await
            .unwrap();
    let head = prev.map(|(seq, hash)| Head {
        shard,
        seq,
        hash: hash.try_into().unwrap(),
    });
    let text: String = sqlx::query_scalar("SELECT record::text FROM signal_processing_audit WHERE id = $1")
        .bind(&id)
        .fetch_one(pool)
        .await
        .unwrap();
    let altered = text.replace("\"status\":\"completed\"", "\"status\":\"failed\"");
    assert_ne!(altered, text);
    let entry = NewEntry {
        kind: EntryKind::Record,
        id: id.clone(),
        at: completed_at,
        stored_at,
        digest: chain::content_digest(altered.as_bytes()),
    };
    let link = chain::extend(keys.get(&key_id).unwrap(), shard, head.as_ref(), &[entry]).remove(0);
    assert_eq!(link.seq, seq);
    let mut tx = pool.begin().await.unwrap();
    for (sql, with) in [
        (
            "ALTER TABLE signal_processing_audit_ids DISABLE TRIGGER signal_processing_audit_ids_no_change",
            false,
        ),
        (
            "ALTER TABLE signal_processing_audit DISABLE TRIGGER signal_processing_audit_no_change",
            false,
        ),
        (
            "UPDATE signal_processing_audit SET record = $1::json, status = 'failed' WHERE id = $2",
            true,
        ),
        (
            "ALTER TABLE signal_processing_audit ENABLE TRIGGER signal_processing_audit_no_change",
            false,
        ),
    ] {
        let q = sqlx::query(sql);
        let q = if with { q.bind(&altered).bind(&id) } else { q };
        q.execute(&mut *tx).await.unwrap();
    }
    sqlx::query("UPDATE signal_processing_audit_ids SET chain_digest = $1, chain_hash = $2 WHERE id = $3")
        .bind(link.digest.to_vec())
        .bind(link.hash.to_vec())
        .bind(&id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE signal_processing_audit_ids ENABLE TRIGGER signal_processing_audit_ids_no_change")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn the_owners_tampering_after_a_saved_checkpoint_is_named_by_verify_log_with_the_public_key_alone() {
    let db = TestDb::create().await;
    db.migrate(&["--time-window-past", "1000days"]);
    let dir = tempfile::tempdir().unwrap();
    let key = SignerKey::generate(ORIGIN, ALG_ED25519).unwrap();
    let key_file = dir.path().join("log.key");
    std::fs::write(&key_file, format!("{}\n", key.to_secret_string())).unwrap();
    std::fs::write(dir.path().join("log.key.pub"), format!("{}\n", key.verifier())).unwrap();
    std::fs::write(dir.path().join("reader.token"), READER_TOKEN).unwrap();
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url()).args(&[
        "--time-window-past",
        "1000days",
        "--log-signing-key-file",
        key_file.to_str().unwrap(),
        "--log-sequence-interval",
        "100ms",
    ]))
    .await;
    let owner = db.pool().await;

    // Three records of a past month first (log indexes 0-2), then 40 through the API.
    let old_month = ["old-1", "old-2", "old-3"];
    backdated(&owner, &old_month, 62).await;
    wait_for_size(&svc, 3).await;
    let batch: Vec<Value> = (0..40)
        .map(|i| record(&format!("rec-{i:02}"), "fp", "production", "P1", &ago(60), json!("1s")))
        .collect();
    let (st, _, v) = svc.post_json(&format!("{BASE}/batch"), &json!(batch)).await;
    assert_eq!(st, 200, "{v}");
    wait_for_size(&svc, 43).await;

    // The auditor's first run: everything checks; the checkpoint is saved.
    let saved = dir.path().join("saved.checkpoint");
    let (code, out) = verify_log(&svc, dir.path(), &["--save", saved.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("consistent: the signed checkpoint covers 43 entries"), "{out}");
    assert!(out.contains("43 matched to their entries"), "{out}");
    let cp = Checkpoint::open(&std::fs::read(&saved).unwrap(), key.verifier(), ORIGIN).unwrap().0;
    assert_eq!(cp.size, 43);
    let check = |extra: &[&str]| {
        let mut args = vec!["--checkpoint", saved.to_str().unwrap()];
        args.extend_from_slice(extra);
        verify_log(&svc, dir.path(), &args)
    };

    // (a) A record's field altered, its columns and its HMAC link recomputed with the key.
    let keys = ChainKeys::load(&svc.chain_key_file()).unwrap();
    let altered = alter_a_record(&owner, &keys).await;
    let (st, keyed) = svc.get_as(READER_TOKEN, &format!("{BASE}/verify")).await;
    assert_eq!(st, 200, "{keyed}");
    assert!(
        !keyed["findings"].as_array().unwrap().iter().any(|f| f["id"] == altered.as_str()),
        "the keyed chain cannot tell: {keyed:#}"
    );
    let (code, out) = check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("NOT consistent"), "{out}");
    assert!(
        out.contains(&format!("the record {altered:?}")) && out.contains("changed after it was logged"),
        "{out}"
    );

    // (b) The last 10 entries deleted (the items stay served).
    let tail: Vec<String> = sqlx::query_scalar("SELECT item_id FROM tlog_entries WHERE idx >= 33 ORDER BY idx")
        .fetch_all(&owner)
        .await
        .unwrap();
    assert_eq!(tail.len(), 10);
    as_owner(
        &owner,
        &[
            "ALTER TABLE tlog_entries DISABLE TRIGGER tlog_entries_no_change",
            "DELETE FROM tlog_entries WHERE idx >= 33",
            "ALTER TABLE tlog_entries ENABLE TRIGGER tlog_entries_no_change",
        ],
    )
    .await;
    let (code, out) = check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the checkpoint covers 43 entries but 33 were served"), "{out}");
    assert!(out.contains("10 served items have no log entry"), "{out}");
    for id in tail.iter().filter(|id| **id != altered) {
        assert!(out.contains(&format!("the record {id:?}")), "{id}: {out}");
    }

    // With entries removed no checkpoint is signed over the log: a new item waits, and the
    // staleness gauges show it.
    let gauge = |metrics: &str, name: &str| -> i64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {metrics}"))
    };
    let metrics = || async { svc.http.get(svc.endpoint("/metrics")).send().await.unwrap().text().await.unwrap() };
    assert_eq!(gauge(&metrics().await, "datastorage_log_oldest_pending_seconds"), 0);
    let late = record("late-1", "fp", "production", "P1", &ago(5), json!("1s"));
    assert_eq!(svc.post_json(BASE, &late).await.0, 201);
    let start = Instant::now();
    while gauge(&metrics().await, "datastorage_log_oldest_pending_seconds") < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", metrics().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gauge(&metrics().await, "datastorage_log_checkpoint_age_seconds") >= 2);

    // (c) A whole month's partition dropped.
    let month = (Utc::now() - chrono::Duration::days(62)).format("%Ym%m").to_string();
    as_owner(&owner, &[&format!("DROP TABLE signal_processing_audit_y{month}")]).await;
    let (code, out) = check(&[]);
    assert_eq!(code, 1, "{out}");
    let label = (Utc::now() - chrono::Duration::days(62)).format("%Y-%m").to_string();
    assert!(
        out.contains(&format!("3 items stored in {label} are in the log but no longer served")),
        "{out}"
    );
    for id in old_month {
        assert!(out.contains(&format!("the record {id:?}")), "{id}: {out}");
    }
    // Expected gone when the auditor's retention says that month may go.
    let (_, out) = check(&["--retention-months", "1"]);
    assert!(!out.contains(&format!("stored in {label}")), "{out}");

    // (d) Two entries swapped.
    let swapped: Vec<String> = sqlx::query_scalar("SELECT item_id FROM tlog_entries WHERE idx IN (5, 6) ORDER BY idx")
        .fetch_all(&owner)
        .await
        .unwrap();
    as_owner(
        &owner,
        &[
            "ALTER TABLE tlog_entries DISABLE TRIGGER tlog_entries_no_change",
            "UPDATE tlog_entries SET idx = 1000000 WHERE idx = 5",
            "UPDATE tlog_entries SET idx = 5 WHERE idx = 6",
            "UPDATE tlog_entries SET idx = 6 WHERE idx = 1000000",
            "ALTER TABLE tlog_entries ENABLE TRIGGER tlog_entries_no_change",
        ],
    )
    .await;
    let (code, out) = check(&[]);
    assert_eq!(code, 1, "{out}");
    for (i, id) in [(5, &swapped[1]), (6, &swapped[0])] {
        assert!(
            out.contains(&format!("entry {i}, the record {id:?}"))
                && out.contains(&format!("is not the entry the log's stored hash at index {i} is of")),
            "{i} {id}: {out}"
        );
    }
    println!("verify-log after the four changes:\n{out}");
    assert!(!std::fs::read(&saved).unwrap().is_empty());
    drop(svc);
    owner.close().await;
    db.drop_db().await;
}
