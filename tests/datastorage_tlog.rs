//! The transparency log in a real Data Storage (the real binary, on real PostgreSQL and on
//! SQLite): records, amendments and break-glass events stored concurrently through the HTTP
//! API each get exactly one entry at a contiguous index; the checkpoints verify with the
//! public key alone; inclusion and consistency proofs verify against them; two processes
//! sequencing one PostgreSQL database never fork the log; and Go's sumdb verifier accepts
//! what a running Data Storage serves.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use audit_guard::evidence::entry::{Entry, Kind};
use audit_guard::evidence::merkle::{leaf_hash, root_at, verify_consistency, verify_inclusion, Hash, MemoryTree};
use audit_guard::evidence::note::{Checkpoint, SignerKey, VerifierKey, ALG_ED25519};
use audit_guard::evidence::proof::TlogProof;
use audit_guard::evidence::tiles::{bundles_for_size, decode_bundle, tiles_for_size, Tile, TileHashReader};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::future::join_all;
use futures::StreamExt;
use serde_json::{json, Value};
use support::datastorage::*;
use support::tlog::{run_verifier, write};

const LOG: &str = "/api/v1/log";
const ORIGIN: &str = "audit-guard.test/datastorage";

/// A log key file in `dir` (generated at run time, never committed) and its verifier key.
fn log_key(dir: &Path) -> (PathBuf, VerifierKey) {
    let key = SignerKey::generate(ORIGIN, ALG_ED25519).unwrap();
    let path = dir.join("log.key");
    std::fs::write(&path, format!("{}\n", key.to_secret_string())).unwrap();
    (path, key.verifier().clone())
}

fn hash(v: &Value) -> Hash {
    B64.decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(hash).collect()
}

async fn get_bytes(svc: &DataStorage, path: &str) -> (u16, Vec<u8>) {
    let r = svc.http.get(svc.endpoint(path)).bearer_auth(READER_TOKEN).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// A tlog-tiles resource the service must have.
async fn served(svc: &DataStorage, resource: &str) -> Vec<u8> {
    let (s, data) = get_bytes(svc, &format!("{LOG}/{resource}")).await;
    assert_eq!(s, 200, "{resource}");
    data
}

/// One worker's share: a batch of records, a single record, an amendment of it and a
/// break-glass event, `rounds` times; every item answered as created.
async fn worker(svc: &DataStorage, tag: &str, rounds: usize) -> Vec<(Kind, String)> {
    let mut stored = vec![];
    for i in 0..rounds {
        let batch: Vec<Value> = (0..5)
            .map(|k| record(&format!("{tag}-b{i}-{k}"), "fp", "production", "P1", &ago(60), json!("1s")))
            .collect();
        let (s, _, v) = svc.post_json(&format!("{BASE}/batch"), &json!(batch)).await;
        assert_eq!(s, 200, "{v}");
        for item in v.as_array().unwrap() {
            assert_eq!(item["result"], "created", "{v}");
            stored.push((Kind::Record, item["id"].as_str().unwrap().to_string()));
        }
        let id = format!("{tag}-s{i}");
        let single = record(&id, "fp", "staging", "P2", &ago(30), json!("2s"));
        let (s, _, v) = svc.post_json(BASE, &single).await;
        assert_eq!(s, 201, "{v}");
        stored.push((Kind::Record, id.clone()));
        let mut changed = single.clone();
        changed["status"] = json!("failed");
        let (s, _, v) = svc.post_json(&format!("{BASE}/{id}/amendments"), &changed).await;
        assert_eq!(s, 201, "{v}");
        stored.push((Kind::Amendment, v["amendment_id"].as_str().unwrap().to_string()));
        let ev = format!("{tag}-bg{i}");
        let (s, _, v) = svc.post_json(BREAK_GLASS, &break_glass_event(&ev, "admin", &id, &ago(5))).await;
        assert_eq!(s, 201, "{v}");
        stored.push((Kind::BreakGlass, ev));
    }
    stored
}

/// Stores through every service at once, `workers` concurrent workers each.
async fn store_concurrently(services: &[&DataStorage], tag: &str, workers: usize, rounds: usize) -> Vec<(Kind, String)> {
    let tags: Vec<(usize, String)> = (0..services.len() * workers).map(|w| (w, format!("{tag}-w{w}"))).collect();
    let all = join_all(tags.iter().map(|(w, t)| worker(services[w % services.len()], t, rounds))).await;
    all.into_iter().flatten().collect()
}

/// The signed checkpoint the service serves once it covers `size` entries (sequencing runs
/// after commit): its parsed body and note bytes.
async fn checkpoint_covering(svc: &DataStorage, key: &VerifierKey, size: u64) -> (Checkpoint, Vec<u8>, Duration) {
    let start = Instant::now();
    loop {
        let (s, body) = get_bytes(svc, &format!("{LOG}/checkpoint")).await;
        if s == 200 {
            let (cp, _) = Checkpoint::open(&body, key, ORIGIN).expect("the checkpoint verifies with the public key");
            assert!(
                cp.size <= size,
                "the log holds more entries ({}) than were stored ({size})",
                cp.size
            );
            if cp.size == size {
                return (cp, body, start.elapsed());
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no checkpoint of {size} entries within 30 s (last: {s})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every entry of the tree of `size`, read from the entry bundles the service serves.
async fn entries(svc: &DataStorage, size: u64) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for b in bundles_for_size(size) {
        let data = served(svc, &b.path()).await;
        out.extend(decode_bundle(&data).unwrap().into_iter().map(<[u8]>::to_vec));
    }
    out
}

/// Every stored item has exactly one entry, the indexes are 0..size, the checkpoint's root is
/// the root of those entries and of the served tiles; every item's inclusion proof verifies.
async fn check_log(svc: &DataStorage, cp: &Checkpoint, stored: &[(Kind, String)]) -> Vec<Vec<u8>> {
    let all = entries(svc, cp.size).await;
    assert_eq!(all.len() as u64, cp.size);
    let mut seen: BTreeMap<(u8, String), u64> = BTreeMap::new();
    for (i, e) in all.iter().enumerate() {
        let d = Entry::decode(e).unwrap();
        assert!(
            seen.insert((d.kind.byte(), d.id.clone()), i as u64).is_none(),
            "{:?} {} twice",
            d.kind,
            d.id
        );
    }
    let want: BTreeMap<(u8, String), ()> = stored.iter().map(|(k, id)| ((k.byte(), id.clone()), ())).collect();
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the log's items are exactly those stored"
    );
    let tree: MemoryTree = all.iter().map(|e| leaf_hash(e)).collect();
    assert_eq!(tree.root(), cp.root, "the checkpoint's root is the root of the entries");
    let mut tiles: HashMap<Tile, Vec<u8>> = HashMap::new();
    for t in tiles_for_size(cp.size) {
        let data = served(svc, &t.path()).await;
        tiles.insert(t, data);
    }
    let from_tiles = TileHashReader::new(cp.size, |t: Tile| tiles.get(&t).cloned().ok_or_else(|| "absent".to_string()));
    assert_eq!(
        root_at(&from_tiles, cp.size).unwrap(),
        cp.root,
        "the tiles give the checkpoint's root"
    );
    let paths: Vec<String> = stored
        .iter()
        .map(|(kind, id)| format!("{LOG}/proof/inclusion?kind={}&id={id}&size={}", path_kind(*kind), cp.size))
        .collect();
    // Within the read lane's bound (--max-concurrent-reads).
    let proofs: Vec<(u16, Value)> = futures::stream::iter(paths.iter().map(|p| svc.get_as(READER_TOKEN, p)))
        .buffered(8)
        .collect()
        .await;
    for ((kind, id), (s, p)) in stored.iter().zip(proofs) {
        assert_eq!(s, 200, "{p}");
        let index = p["index"].as_u64().unwrap();
        assert_eq!(seen[&(kind.byte(), id.clone())], index);
        // The receipt's lookup names the same index, under a checkpoint at least this large.
        let name = path_kind(*kind);
        let (s, at) = svc.get_as(READER_TOKEN, &format!("{LOG}/index/{name}/{id}")).await;
        assert_eq!((s, at["index"].as_u64()), (200, Some(index)), "{at}");
        assert!(at["size"].as_u64().unwrap() >= cp.size, "{at}");
        let entry = B64.decode(p["entry"].as_str().unwrap()).unwrap();
        assert_eq!(entry, all[index as usize]);
        verify_inclusion(&leaf_hash(&entry), index, cp.size, &hashes(&p["proof"]), &cp.root).expect("inclusion proof");
    }
    all
}

/// A kind as the log's paths and queries name it.
fn path_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Record => "record",
        Kind::Amendment => "amendment",
        Kind::BreakGlass => "break-glass",
    }
}

/// What nobody may do, and what a bad question gets: nothing changes.
async fn check_refusals(svc: &DataStorage, size: u64) {
    let before = get_bytes(svc, &format!("{LOG}/checkpoint")).await;
    for (path, status) in [
        (format!("{LOG}/proof/inclusion?index=abc"), 400),
        (format!("{LOG}/proof/inclusion?index={size}&size={size}"), 400),
        (format!("{LOG}/proof/inclusion?index=0&size={}", size + 1), 400),
        (format!("{LOG}/proof/inclusion?kind=record"), 400),
        (format!("{LOG}/proof/inclusion?kind=record&id=never-stored"), 404),
        (format!("{LOG}/proof/inclusion?index=0&sise=1"), 400),
        (format!("{LOG}/index/record/never-stored"), 404),
        (format!("{LOG}/index/records/x"), 400),
        (format!("{LOG}/index/record/x?size=1"), 400),
        (format!("{LOG}/proof/consistency?old=2&new=1"), 400),
        (format!("{LOG}/proof/consistency?new=1"), 400),
        (format!("{LOG}/proof/consistency?old=0&new={}", size + 1), 400),
        (format!("{LOG}/tile/0/1"), 400),
        (format!("{LOG}/tile/0/000.p/0"), 400),
        (format!("{LOG}/tile/entries/x001/000"), 404),
        (format!("{LOG}/tile/3/000"), 404),
        (format!("{LOG}/tile/40/000"), 404),
        (format!("{LOG}/tile/entries/x018/x446/x744/x073/x709/x551/615"), 404),
        (format!("{LOG}/checkpoint?size=x"), 400),
        (format!("{LOG}/checkpoint?size={}", size + 1000), 404),
        (format!("{LOG}/checkpoint?size={}", u64::MAX), 404),
    ] {
        let (s, v) = svc.get_as(READER_TOKEN, &path).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(v["detail"].is_string(), "{path}: a problem: {v}");
    }
    let (s, _) = svc.get_as(OUTSIDER_TOKEN, &format!("{LOG}/checkpoint")).await;
    assert_eq!(s, 403, "readers' authorization, as every read");
    let r = svc
        .http
        .post(svc.endpoint(&format!("{LOG}/checkpoint")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(get_bytes(svc, &format!("{LOG}/checkpoint")).await, before, "nothing changed");
}

async fn consistency(svc: &DataStorage, old: &Checkpoint, new: &Checkpoint) -> Vec<Hash> {
    let (s, p) = svc
        .get_as(READER_TOKEN, &format!("{LOG}/proof/consistency?old={}&new={}", old.size, new.size))
        .await;
    assert_eq!(s, 200, "{p}");
    let proof = hashes(&p["proof"]);
    verify_consistency(old.size, new.size, &proof, &old.root, &new.root).expect("consistency proof");
    proof
}

/// Two Data Storage processes on one PostgreSQL database (the runtime role), both sequencing.
#[tokio::test]
async fn postgres_two_processes_log_every_item_once_without_a_fork() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let keys = tempfile::tempdir().unwrap();
    let (key_file, vkey) = log_key(keys.path());
    let chain = chain_key_file(keys.path());
    let opts = || {
        Options::postgres(&db.runtime_url()).args(&[
            "--log-signing-key-file",
            key_file.to_str().unwrap(),
            "--chain-key-file",
            chain.to_str().unwrap(),
            "--log-sequence-interval",
            "100ms",
        ])
    };
    let a = DataStorage::launch(opts()).await;
    let b = DataStorage::launch(opts()).await;

    let started = Instant::now();
    let first = store_concurrently(&[&a, &b], "one", 4, 6).await;
    let ingest = started.elapsed();
    let (cp1, note1, lag) = checkpoint_covering(&a, &vkey, first.len() as u64).await;
    println!(
        "stored {} items through two processes in {ingest:?}; a checkpoint covered them {lag:?} after the last 201",
        first.len()
    );
    check_log(&b, &cp1, &first).await;

    let second = store_concurrently(&[&b, &a], "two", 4, 3).await;
    let mut all = first.clone();
    all.extend(second);
    let (cp2, _, _) = checkpoint_covering(&b, &vkey, all.len() as u64).await;
    let entries = check_log(&a, &cp2, &all).await;
    consistency(&a, &cp1, &cp2).await;
    // The first checkpoint is kept and served as signed.
    let (s, kept) = get_bytes(&b, &format!("{LOG}/checkpoint?size={}", cp1.size)).await;
    assert_eq!((s, kept), (200, note1));
    check_refusals(&a, cp2.size).await;

    // In the database: nothing left pending, and every checkpoint either process signed is a
    // root of the one tree (no fork), each size signed once.
    let pool = db.pool().await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM tlog_pending")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pending, 0);
    let tree: MemoryTree = entries.iter().map(|e| leaf_hash(e)).collect();
    let signed: Vec<(i64, Vec<u8>, String)> = sqlx::query_as("SELECT size, root, note FROM tlog_checkpoints ORDER BY size")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(signed.len() >= 2, "{signed:?}");
    for (size, root, note) in &signed {
        let size = u64::try_from(*size).unwrap();
        assert_eq!(root.as_slice(), root_at(&tree, size).unwrap().as_slice(), "checkpoint {size}");
        let (cp, _) = Checkpoint::open(note.as_bytes(), &vkey, ORIGIN).unwrap();
        assert_eq!(cp.size, size);
    }
    // Each entry commits to the stored text: the record's, as kept byte for byte.
    let texts: Vec<(String, String)> = sqlx::query_as("SELECT id, record::text FROM signal_processing_audit")
        .fetch_all(&pool)
        .await
        .unwrap();
    let texts: HashMap<String, String> = texts.into_iter().collect();
    for e in &entries {
        let d = Entry::decode(e).unwrap();
        if d.kind == Kind::Record {
            let text = &texts[&d.id];
            assert_eq!(d.content_sha256, <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()).as_slice());
            assert_eq!(d.cr_uid, d.id, "the test's records carry their id as uid");
        }
    }
    // The runtime role cannot rewrite the log or clear what is not logged.
    let runtime = db.runtime_pool().await;
    for stmt in [
        "UPDATE tlog_entries SET entry = '\\x00' WHERE idx = 0",
        "DELETE FROM tlog_entries WHERE idx = 0",
        "DELETE FROM tlog_hashes",
        "DELETE FROM tlog_pending",
        "DELETE FROM tlog_checkpoints",
    ] {
        assert!(sqlx::query(stmt).execute(&runtime).await.is_err(), "{stmt}");
    }
    runtime.close().await;
    pool.close().await;
    drop((a, b));
    db.drop_db().await;
}

/// SQLite: the same code path (its key created beside the database when none is given).
#[tokio::test]
async fn sqlite_logs_every_item_once_with_proofs() {
    let svc = DataStorage::launch(Options::sqlite().args(&["--log-sequence-interval", "100ms"])).await;
    let text = std::fs::read_to_string(svc.data_dir().join("log.key")).unwrap();
    let key = SignerKey::parse(text.trim()).unwrap();
    let vkey = key.verifier().clone();
    let origin = vkey.name.clone();
    assert_eq!(origin, audit_guard::datastorage::LOCAL_LOG_NAME);
    let first = store_concurrently(&[&svc], "one", 4, 4).await;
    let size = first.len() as u64;
    let cp1 = wait_for_size(&svc, &vkey, &origin, size).await;
    check_log(&svc, &cp1, &first).await;
    let mut all = first;
    all.extend(store_concurrently(&[&svc], "two", 2, 3).await);
    let cp2 = wait_for_size(&svc, &vkey, &origin, all.len() as u64).await;
    check_log(&svc, &cp2, &all).await;
    consistency(&svc, &cp1, &cp2).await;
    check_refusals(&svc, cp2.size).await;
    tlog_proof_stands_alone(&svc, &vkey, &all[0]).await;
    verify_log_as_an_auditor(&svc, &key, &cp1).await;
}

/// A C2SP tlog-proof of one item checks offline with the public key alone: its checkpoint's
/// signature, and its entry (the extra data) at its index under that checkpoint's root.
async fn tlog_proof_stands_alone(svc: &DataStorage, key: &VerifierKey, (kind, id): &(Kind, String)) {
    assert_eq!(*kind, Kind::Record);
    let (s, text) = get_bytes(svc, &format!("{LOG}/proof/inclusion?kind=record&id={id}&format=tlog-proof")).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&text));
    let proof = TlogProof::parse(&text).unwrap();
    let (cp, _) = Checkpoint::open(&proof.checkpoint, key, &key.name).unwrap();
    let entry = proof.extra.unwrap();
    assert_eq!(&Entry::decode(&entry).unwrap().id, id);
    verify_inclusion(&leaf_hash(&entry), proof.index, cp.size, &proof.hashes, &cp.root).expect("tlog-proof");
    // A size the log has but no checkpoint was signed at: no tlog-proof for it.
    let mut unsigned = None;
    for size in 1..=cp.size {
        if get_bytes(svc, &format!("{LOG}/checkpoint?size={size}")).await.0 == 404 {
            unsigned = Some(size);
            break;
        }
    }
    let size = unsigned.expect("rounds sign far fewer checkpoints than entries");
    let (s, v) = svc
        .get_as(
            READER_TOKEN,
            &format!("{LOG}/proof/inclusion?index=0&size={size}&format=tlog-proof"),
        )
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("size")), "no checkpoint of size {size}: {v}");
}

/// `audit-guard verify-log` with the public key and a saved checkpoint only: the honest log
/// checks (and the latest checkpoint is saved for next time); a saved checkpoint the served log
/// does not extend (another history, signed with the same key) is named.
async fn verify_log_as_an_auditor(svc: &DataStorage, key: &SignerKey, saved: &Checkpoint) {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_string()
    };
    let vkey = file("log.key.pub", format!("{}\n", key.verifier()).as_bytes());
    let token = file("reader.token", READER_TOKEN.as_bytes());
    let (_, kept) = get_bytes(svc, &format!("{LOG}/checkpoint?size={}", saved.size)).await;
    let saved_file = file("saved.checkpoint", &kept);
    let next = dir.path().join("next.checkpoint");
    let run = |checkpoint: &str| {
        let out = std::process::Command::new(binary())
            .args(["verify-log", "--url", &svc.url, "--token-file", &token, "--log-key", &vkey])
            .args(["--checkpoint", checkpoint, "--save", next.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = run(&saved_file);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("consistent: the signed checkpoint covers"), "{stdout}");
    let (_, latest) = get_bytes(svc, &format!("{LOG}/checkpoint")).await;
    assert_eq!(std::fs::read(&next).unwrap(), latest, "the latest checkpoint is saved");
    std::fs::remove_file(&next).unwrap();
    let other = Checkpoint {
        root: [7; 32],
        ..saved.clone()
    };
    let forged = file("other.checkpoint", &other.sign(key).unwrap().to_bytes());
    let (code, stdout, stderr) = run(&forged);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("does not extend the saved one"), "{stdout}");
    assert!(!next.exists(), "nothing saved from a log that does not check");
}

async fn wait_for_size(svc: &DataStorage, key: &VerifierKey, origin: &str, size: u64) -> Checkpoint {
    let start = Instant::now();
    loop {
        let (s, body) = get_bytes(svc, &format!("{LOG}/checkpoint")).await;
        if s == 200 {
            let (cp, _) = Checkpoint::open(&body, key, origin).unwrap();
            if cp.size == size {
                return cp;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no checkpoint of {size} within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without a log key (PostgreSQL): items are still sequenced and provable by index; the
/// checkpoint endpoint says why there is none.
#[tokio::test]
async fn postgres_without_a_log_key_sequences_but_signs_nothing() {
    let db = TestDb::create().await;
    let svc = DataStorage::launch(Options::postgres(&db.url).args(&["--log-sequence-interval", "100ms"])).await;
    let (s, _, v) = svc
        .post_json(BASE, &record("nokey-1", "fp", "production", "P0", &ago(5), json!(1)))
        .await;
    assert_eq!(s, 201, "{v}");
    let start = Instant::now();
    let p = loop {
        let (s, p) = svc
            .get_as(READER_TOKEN, &format!("{LOG}/proof/inclusion?kind=record&id=nokey-1"))
            .await;
        if s == 200 {
            break p;
        }
        assert_eq!(s, 404, "{p}");
        assert!(start.elapsed() < Duration::from_secs(30), "never sequenced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((p["index"].clone(), p["size"].clone()), (json!(0), json!(1)), "{p}");
    let (s, v) = svc.get_as(READER_TOKEN, &format!("{LOG}/checkpoint")).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("--log-signing-key-file"), "{v}");
    drop(svc);
    db.drop_db().await;
}

/// Go's sumdb verifier judges what a running Data Storage serves: two checkpoints, every tile
/// of both sizes, the entry bundles, inclusion proofs of items and the consistency proof.
#[tokio::test]
async fn go_sumdb_accepts_the_log_a_running_data_storage_serves() {
    let db = TestDb::create().await;
    let keys = tempfile::tempdir().unwrap();
    let (key_file, vkey) = log_key(keys.path());
    let svc = DataStorage::launch(Options::postgres(&db.url).args(&[
        "--log-signing-key-file",
        key_file.to_str().unwrap(),
        "--log-sequence-interval",
        "100ms",
    ]))
    .await;
    // Sizes past a full tile and into a second tile level's partial tile.
    let first = store_concurrently(&[&svc], "one", 3, 20).await;
    let (cp1, note1, _) = checkpoint_covering(&svc, &vkey, first.len() as u64).await;
    let mut all = first;
    all.extend(store_concurrently(&[&svc], "two", 3, 15).await);
    let (cp2, note2, _) = checkpoint_covering(&svc, &vkey, all.len() as u64).await;
    assert!(cp1.size > 256 && cp2.size > 512, "{} {}", cp1.size, cp2.size);

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vkey", format!("{vkey}\n").as_bytes());
    write(dir.path(), &format!("checkpoint.{}", cp1.size), &note1);
    write(dir.path(), &format!("checkpoint.{}", cp2.size), &note2);
    let mut tiles = tiles_for_size(cp1.size);
    tiles.extend(tiles_for_size(cp2.size));
    tiles.sort();
    tiles.dedup();
    for t in &tiles {
        let data = served(&svc, &t.path()).await;
        write(dir.path(), &t.path(), &data);
    }
    for b in bundles_for_size(cp2.size) {
        let data = served(&svc, &b.path()).await;
        write(dir.path(), &b.path(), &data);
    }
    let mut inclusion = vec![];
    for cp in [&cp1, &cp2] {
        for index in [0, 1, 255, 256, cp.size / 2, cp.size - 1] {
            let (s, p) = svc
                .get_as(READER_TOKEN, &format!("{LOG}/proof/inclusion?index={index}&size={}", cp.size))
                .await;
            assert_eq!(s, 200, "{p}");
            inclusion.push(json!({"size": cp.size, "index": index, "leaf": p["leaf"], "proof": p["proof"]}));
        }
    }
    let proof = consistency(&svc, &cp1, &cp2).await;
    let consistency = vec![json!({"old": cp1.size, "new": cp2.size,
        "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>()})];
    let proofs = json!({"inclusion": inclusion, "consistency": consistency});
    write(dir.path(), "proofs.json", serde_json::to_string_pretty(&proofs).unwrap().as_bytes());
    let out = run_verifier(dir.path());
    assert!(
        out.status.success(),
        "Go refused the served log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!(
        "verified checkpoints=2 entries={} bundles={} tiles={} inclusion={} consistency=1\n",
        cp2.size,
        bundles_for_size(cp2.size).len(),
        tiles.len(),
        inclusion.len()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    drop(svc);
    db.drop_db().await;
}
