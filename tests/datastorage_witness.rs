//! Witnesses of the transparency log, with real processes over real HTTP: `audit-guard
//! log-witness` (the auditor's witness) and a Data Storage configured with a witness policy, on
//! real PostgreSQL and on SQLite. The checkpoint Data Storage serves carries the witness's valid
//! cosignature; a log that shows the witness a fork (another root at the same size) or a
//! smaller tree gets 409 and no cosignature; the witness keeps its state across a restart and
//! Data Storage's pushes go on from it.

mod support;

use std::path::{Path, PathBuf};

use audit_guard::evidence::note::{SignerKey, VerifierKey, ALG_COSIGNATURE_V1, ALG_ED25519};
use support::datastorage::*;
use support::witness::*;

const ORIGIN: &str = "audit-guard.test/datastorage";
const WITNESS: &str = "witness.test/auditor";

/// A log key and a witness key in `dir` (generated at run time): the files and the keys.
struct Keys {
    log: SignerKey,
    log_file: PathBuf,
    log_pub: PathBuf,
    witness: VerifierKey,
    witness_file: PathBuf,
}

fn keys(dir: &Path) -> Keys {
    let log = SignerKey::generate(ORIGIN, ALG_ED25519).unwrap();
    let log_file = dir.join("log.key");
    let log_pub = dir.join("log.key.pub");
    std::fs::write(&log_file, format!("{}\n", log.to_secret_string())).unwrap();
    std::fs::write(&log_pub, format!("{}\n", log.verifier())).unwrap();
    let witness = SignerKey::generate(WITNESS, ALG_COSIGNATURE_V1).unwrap();
    let witness_file = dir.join("witness.key");
    std::fs::write(&witness_file, format!("{}\n", witness.to_secret_string())).unwrap();
    Keys {
        log,
        log_file,
        log_pub,
        witness: witness.verifier().clone(),
        witness_file,
    }
}

async fn witnessed(options: impl Fn(&Keys, &Path) -> Options) {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let state = dir.path().join("witness-state");
    let port = support::controlplane::free_port().unwrap();
    let wlog = dir.path().join("witness.log");
    let w = Witness::start(&k.witness_file, &k.log_pub, &state, port, &wlog).await;
    let policy = dir.path().join("witnesses");
    std::fs::write(&policy, format!("# the auditor's witness\nwitness {} {}\n", k.witness, w.url)).unwrap();
    let svc = DataStorage::launch(options(&k, &policy)).await;

    store_records(&svc, "w1", 6).await;
    let (cp, note, _) = cosigned_checkpoint(&svc, k.log.verifier(), &k.witness, 6).await;
    // One signature by the log, one cosignature by the witness.
    assert_eq!(note.signatures.len(), 2, "{}", String::from_utf8_lossy(&note.to_bytes()));

    // A fork: another root at the size the witness cosigned, signed with the log's key.
    let mut other = cp.root;
    other[0] ^= 1;
    let (s, ct, body) = w.add(cp.size, vec![], &signed_checkpoint(&k.log, cp.size, other)).await;
    assert_eq!((s, ct.as_str()), (409, "text/x.tlog.size"), "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, format!("{}\n", cp.size).into_bytes());
    // A smaller tree: 409 naming the size the witness knows; claiming that size as `old` is
    // malformed (old > size). Neither gets a cosignature line.
    let smaller = signed_checkpoint(&k.log, cp.size - 1, [7; 32]);
    let (s, _, body) = w.add(0, vec![], &smaller).await;
    assert_eq!((s, body), (409, format!("{}\n", cp.size).into_bytes()));
    let (s, _, body) = w.add(cp.size, vec![], &smaller).await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&body));
    assert!(!body.starts_with("—".as_bytes()));
    // The fork is kept as evidence against the log.
    assert_eq!(std::fs::read_dir(state.join("refused")).unwrap().count(), 1);

    // A restart keeps the state: the same fork is refused, a fresh start (old 0) is told the size.
    drop(w);
    let w = Witness::start(&k.witness_file, &k.log_pub, &state, port, &wlog).await;
    let (s, _, body) = w.add(cp.size, vec![], &signed_checkpoint(&k.log, cp.size, other)).await;
    assert_eq!((s, body), (409, format!("{}\n", cp.size).into_bytes()));
    // Data Storage may have pushed a larger checkpoint meanwhile: the witness names at least
    // the size it cosigned before the restart.
    let (s, _, body) = w.add(0, vec![], &note.to_bytes()).await;
    assert_eq!(s, 409);
    let latest: u64 = String::from_utf8(body).unwrap().trim_end().parse().unwrap();
    assert!(latest >= cp.size);

    // Data Storage pushes on from the witness's size after the restart.
    store_records(&svc, "w2", 4).await;
    let (cp2, _, _) = cosigned_checkpoint(&svc, k.log.verifier(), &k.witness, cp.size + 4).await;
    assert!(cp2.size >= cp.size + 4);
    assert_pushes_cosigned(&svc).await;
    let log = std::fs::read_to_string(&wlog).unwrap();
    assert!(log.contains("cosigned"), "{log}");
}

#[tokio::test]
async fn postgres_checkpoints_carry_the_witness_cosignature_and_forks_get_409() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let url = db.runtime_url();
    let chain = tempfile::tempdir().unwrap();
    let chain_file = chain_key_file(chain.path());
    witnessed(|k, policy| {
        Options::postgres(&url).args(&[
            "--log-signing-key-file",
            k.log_file.to_str().unwrap(),
            "--chain-key-file",
            chain_file.to_str().unwrap(),
            "--witness-policy-file",
            policy.to_str().unwrap(),
            "--log-sequence-interval",
            "100ms",
        ])
    })
    .await;
}

#[tokio::test]
async fn sqlite_checkpoints_carry_the_witness_cosignature_and_forks_get_409() {
    witnessed(|k, policy| {
        Options::sqlite().args(&[
            "--log-signing-key-file",
            k.log_file.to_str().unwrap(),
            "--witness-policy-file",
            policy.to_str().unwrap(),
            "--log-sequence-interval",
            "100ms",
        ])
    })
    .await;
}
