//! Exports carry the transparency log's evidence, and `audit-guard verify-export` checks it
//! offline with the log's public key and a checkpoint the auditor saved: an honest export
//! passes (NDJSON and CSV, PostgreSQL and SQLite); consistency from the previous export's
//! checkpoint holds and fails against a forged one; after the database owner changes an
//! exported record (its derived status column recomputed) or deletes one from the range, the
//! export is NOT consistent and names it; a changed byte of the bundle fails; the checkpoint
//! carries the auditor's witness's cosignature, which `--witness-key` requires. Real PostgreSQL,
//! the real Data Storage binary, the real witness and the real CLI.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use audit_guard::evidence::note::{Checkpoint, SignerKey, ALG_COSIGNATURE_V1, ALG_ED25519};
use serde_json::{json, Value};
use support::datastorage::*;
use support::witness::Witness;

const ORIGIN: &str = "audit-guard.test/exports";
const WITNESS: &str = "witness.test/exports";

/// The CLI as the auditor runs it: (exit code, stdout and stderr).
fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary()).args(args).env_remove("DATABASE_URL").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

struct Auditor {
    dir: tempfile::TempDir,
    key: SignerKey,
    url: String,
    public_key: PathBuf,
}

impl Auditor {
    fn new() -> Auditor {
        let dir = tempfile::tempdir().unwrap();
        let key = SignerKey::generate(ORIGIN, ALG_ED25519).unwrap();
        std::fs::write(dir.path().join("log.key"), format!("{}\n", key.to_secret_string())).unwrap();
        std::fs::write(dir.path().join("log.key.pub"), format!("{}\n", key.verifier())).unwrap();
        std::fs::write(dir.path().join("reader.token"), READER_TOKEN).unwrap();
        Auditor {
            dir,
            key,
            url: String::new(),
            public_key: PathBuf::new(),
        }
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_str().unwrap().to_string()
    }

    fn service_args(&self) -> Vec<String> {
        vec![
            "--log-signing-key-file".into(),
            self.path("log.key"),
            "--log-sequence-interval".into(),
            "100ms".into(),
        ]
    }

    fn serving(&mut self, svc: &DataStorage) {
        self.url = svc.url.clone();
        self.public_key = svc.public_key_file();
    }

    /// `audit-guard export` to `out`, with `extra` flags.
    fn export(&self, out: &str, extra: &[&str]) -> String {
        let (code, text) = cli(&[
            &[
                "export",
                "--url",
                &self.url,
                "--token-file",
                &self.path("reader.token"),
                "--out",
                &self.path(out),
            ][..],
            extra,
        ]
        .concat());
        assert_eq!(code, 0, "export {out}: {text}");
        text
    }

    /// `audit-guard verify-export` of `file` with the log key and `extra` flags.
    fn verify(&self, file: &str, extra: &[&str]) -> (i32, String) {
        cli(&[
            &[
                "verify-export",
                &self.path(file),
                "--public-key",
                self.public_key.to_str().unwrap(),
                "--log-key",
                &self.path("log.key.pub"),
            ][..],
            extra,
        ]
        .concat())
    }
}

async fn store_records(svc: &DataStorage, prefix: &str, n: usize) {
    let batch: Vec<Value> = (0..n)
        .map(|i| record(&format!("{prefix}-{i:02}"), "fp", "production", "P1", &ago(60), json!("1s")))
        .collect();
    let (st, _, v) = svc.post_json(&format!("{BASE}/batch"), &json!(batch)).await;
    assert_eq!(st, 200, "{v}");
}

/// Checks both formats of one service's export: the rows proven, CSV as well as NDJSON, and
/// the behaviour without the log key.
fn an_honest_export_verifies(a: &Auditor, rows: usize) {
    a.export("first.ndjson", &[]);
    let (code, out) = a.verify("first.ndjson", &["--save", &a.path("first.checkpoint")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("consistent with the transparency log"), "{out}");
    assert!(out.contains(&format!("{rows} rows proven in it")), "{out}");
    let saved = std::fs::read(a.path("first.checkpoint")).unwrap();
    let cp = Checkpoint::open(&saved, a.key.verifier(), ORIGIN).unwrap().0;
    assert!(cp.size >= rows as u64, "{cp:?}");

    a.export("first.csv", &["--format", "csv"]);
    let (code, out) = a.verify("first.csv", &["--checkpoint", &a.path("first.checkpoint")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{rows} rows proven in it")), "{out}");

    // Without the log key: today's checks, and it says what it did not check.
    let (code, out) = cli(&[
        "verify-export",
        &a.path("first.ndjson"),
        "--public-key",
        a.public_key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("evidence was not checked"), "{out}");
}

/// One byte changed anywhere in the bundle fails it.
fn a_changed_byte_fails(a: &Auditor, file: &str) {
    for (what, path) in [("file", a.path(file)), ("manifest", a.path(&format!("{file}.manifest.json")))] {
        let original = std::fs::read(&path).unwrap();
        let mut changed = original.clone();
        let at = changed.len() / 2;
        changed[at] ^= 0x01;
        std::fs::write(&path, &changed).unwrap();
        let (code, out) = a.verify(file, &[]);
        assert_eq!(code, 1, "a byte of the {what} changed: {out}");
        assert!(out.starts_with("FAILED") || out.starts_with("NOT consistent"), "{what}: {out}");
        std::fs::write(&path, original).unwrap();
    }
}

#[tokio::test]
async fn postgres_exports_prove_their_rows_and_name_the_owners_tampering() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let mut a = Auditor::new();
    let args = a.service_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url()).args(&args)).await;
    a.serving(&svc);
    let owner = db.pool().await;

    store_records(&svc, "rec", 20).await;
    an_honest_export_verifies(&a, 20);

    // The next export, proven consistent with the checkpoint saved from the first.
    store_records(&svc, "more", 10).await;
    a.export("second.ndjson", &["--previous-checkpoint", &a.path("first.checkpoint")]);
    let (code, out) = a.verify(
        "second.ndjson",
        &["--checkpoint", &a.path("first.checkpoint"), "--save", &a.path("second.checkpoint")],
    );
    assert_eq!(code, 0, "{out}");
    let first = Checkpoint::open(&std::fs::read(a.path("first.checkpoint")).unwrap(), a.key.verifier(), ORIGIN)
        .unwrap()
        .0;
    assert!(
        out.contains(&format!("extends the saved checkpoint of {} entries", first.size)),
        "{out}"
    );
    assert!(out.contains("30 rows proven in it"), "{out}");

    // A forged saved checkpoint (signed with the log's key, another root): not consistent.
    let mut forged = first.clone();
    forged.root[0] ^= 1;
    let note = forged.sign(&a.key).unwrap();
    std::fs::write(a.path("forged.checkpoint"), note.to_bytes()).unwrap();
    let (code, out) = a.verify(
        "second.ndjson",
        &["--checkpoint", &a.path("forged.checkpoint"), "--save", &a.path("x")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("NOT consistent"), "{out}");
    assert!(out.contains(&format!("does not extend the saved one of {}", first.size)), "{out}");
    assert!(!Path::new(&a.path("x")).exists(), "a failed check saved its checkpoint");

    a_changed_byte_fails(&a, "second.ndjson");

    // The owner changes an exported record's content (its status column recomputed) and
    // deletes another one: both are named by the next export's check.
    as_owner(
        &owner,
        &[
            "ALTER TABLE signal_processing_audit DISABLE TRIGGER signal_processing_audit_no_change",
            "UPDATE signal_processing_audit SET record = replace(record::text, '\"status\":\"completed\"', '\"status\":\"failed\"')::json, \
             status = 'failed' WHERE id = 'rec-05'",
            "DELETE FROM signal_processing_audit WHERE id = 'rec-10'",
            "ALTER TABLE signal_processing_audit ENABLE TRIGGER signal_processing_audit_no_change",
        ],
    )
    .await;
    let status: String = sqlx::query_scalar("SELECT status FROM signal_processing_audit WHERE id = 'rec-05'")
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(status, "failed");
    a.export("third.ndjson", &[]);
    let (code, out) = a.verify("third.ndjson", &["--checkpoint", &a.path("second.checkpoint")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("NOT consistent"), "{out}");
    assert!(
        out.contains("the record \"rec-05\"") && out.contains("changed after it was logged"),
        "{out}"
    );
    assert!(
        out.contains("the record \"rec-10\"") && out.contains("is in the log and in the export's period, but not in the export"),
        "{out}"
    );
    println!("verify-export after the owner's changes:\n{out}");
    drop(svc);
    owner.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_exports_prove_their_rows_under_a_witnessed_checkpoint() {
    let mut a = Auditor::new();
    // The auditor's witness, in Data Storage's policy.
    let witness = SignerKey::generate(WITNESS, ALG_COSIGNATURE_V1).unwrap();
    std::fs::write(a.path("witness.key"), format!("{}\n", witness.to_secret_string())).unwrap();
    std::fs::write(a.path("witness.key.pub"), format!("{}\n", witness.verifier())).unwrap();
    let port = support::controlplane::free_port().unwrap();
    let w = Witness::start(
        Path::new(&a.path("witness.key")),
        Path::new(&a.path("log.key.pub")),
        Path::new(&a.path("witness-state")),
        port,
        Path::new(&a.path("witness.log")),
    )
    .await;
    std::fs::write(a.path("witnesses"), format!("witness {} {}\n", witness.verifier(), w.url)).unwrap();
    let mut args = a.service_args();
    args.extend(["--witness-policy-file".to_string(), a.path("witnesses")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let svc = DataStorage::launch(Options::sqlite().args(&args)).await;
    a.serving(&svc);
    store_records(&svc, "lite", 12).await;
    an_honest_export_verifies(&a, 12);

    // The checkpoint carries the witness's cosignature: required, it checks.
    let (code, out) = a.verify("first.ndjson", &["--witness-key", &a.path("witness.key.pub")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("cosigned by {WITNESS} (checked, cosigned at")), "{out}");
    // A witness that did not cosign it is refused.
    let other = SignerKey::generate("other.test/witness", ALG_COSIGNATURE_V1).unwrap();
    std::fs::write(a.path("other.pub"), format!("{}\n", other.verifier())).unwrap();
    let (code, out) = a.verify("first.ndjson", &["--witness-key", &a.path("other.pub")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("lacks the cosignature of witness other.test/witness"), "{out}");
    a_changed_byte_fails(&a, "first.csv");
    // Only a period's rows: proven by the range they occupy.
    let mid = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store_records(&svc, "later", 3).await;
    a.export("since.ndjson", &["--since", &mid]);
    let (code, out) = a.verify("since.ndjson", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 rows proven in it"), "{out}");
}

/// Runs statements as the owner in one transaction (the owner may switch its triggers off).
async fn as_owner(pool: &sqlx::PgPool, statements: &[&str]) {
    let mut tx = pool.begin().await.unwrap();
    for s in statements {
        sqlx::query(s).execute(&mut *tx).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    tx.commit().await.unwrap();
}
