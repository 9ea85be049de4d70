//! The transparency log judged by another implementation: a log written by src/evidence/ is
//! verified by Go's golang.org/x/mod/sumdb (note, tlog) through the small program in
//! tests/fixtures/tlog-verifier, which must accept it whole and refuse it after any one
//! artefact has one byte changed.

mod support;

use std::path::{Path, PathBuf};

use audit_guard::evidence::entry::{Entry, Kind};
use audit_guard::evidence::merkle::{consistency_proof, inclusion_proof, root_at, verify_consistency, verify_inclusion, MemoryTree};
use audit_guard::evidence::note::{Checkpoint, SignerKey, ALG_ED25519};
use audit_guard::evidence::tiles::{
    bundles_for_size, encode_bundle, new_tiles, parse_path, tile_data, tiles_for_size, Resource, Tile, TileHashReader,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use support::tlog::{run_verifier, write};

const ORIGIN: &str = "audit-guard.example/tlog-interop";
const SIZES: [u64; 3] = [512, 1000, 1537];

fn entries(n: u64) -> Vec<Vec<u8>> {
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-07T06:00:00.000001Z")
        .unwrap()
        .with_timezone(&Utc);
    (0..n)
        .map(|i| {
            let kind = [Kind::Record, Kind::Amendment, Kind::BreakGlass][(i % 3) as usize];
            let content = format!(r#"{{"id":"item-{i}","n":{i}}}"#);
            Entry::new(
                kind,
                &format!("item-{i}"),
                &format!("00000000-0000-4000-8000-{i:012}"),
                t0 + Duration::microseconds(i as i64 * 1_337),
                content.as_bytes(),
            )
            .encode()
            .unwrap()
        })
        .collect()
}

fn b64(h: &[u8; 32]) -> String {
    B64.encode(h)
}

/// The counts the verifier must report for the log this test writes.
struct Written {
    tiles: usize,
    bundles: usize,
    inclusion: usize,
    consistency: usize,
}

/// Writes the log as a tiled log would publish it while growing through SIZES: at each size
/// a signed checkpoint, the tiles and bundles that size adds, and proofs against it.
fn write_log(dir: &Path) -> Written {
    let key = SignerKey::generate(ORIGIN, ALG_ED25519).unwrap();
    write(dir, "vkey", format!("{}\n", key.verifier()).as_bytes());
    let all = entries(*SIZES.last().unwrap());
    let tree: MemoryTree = all.iter().map(|e| audit_guard::evidence::merkle::leaf_hash(e)).collect();

    let mut tiles: Vec<Tile> = vec![];
    let mut bundle_paths = std::collections::BTreeSet::new();
    let mut inclusion = vec![];
    let mut consistency = vec![];
    let mut old = 0u64;
    for size in SIZES {
        let root = root_at(&tree, size).unwrap();
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size,
            root,
            extensions: vec![],
        };
        write(dir, &format!("checkpoint.{size}"), &cp.sign(&key).unwrap().to_bytes());
        for t in new_tiles(old, size) {
            write(dir, &t.path(), &tile_data(&tree, t).unwrap());
            assert_eq!(parse_path(&t.path()), Ok(Resource::Tile(t)));
            tiles.push(t);
        }
        for b in bundles_for_size(size) {
            let first = b.first() as usize;
            let data = encode_bundle(&all[first..first + usize::from(b.width)]).unwrap();
            write(dir, &b.path(), &data);
            assert_eq!(parse_path(&b.path()), Ok(Resource::Entries(b)));
            bundle_paths.insert(b.path());
        }
        for index in [0, 1, 255, 256, 511, size / 2, size - 2, size - 1] {
            let proof = inclusion_proof(&tree, index, size).unwrap();
            let leaf = audit_guard::evidence::merkle::leaf_hash(&all[index as usize]);
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
            inclusion.push(json!({
                "size": size, "index": index, "leaf": b64(&leaf),
                "proof": proof.iter().map(b64).collect::<Vec<_>>(),
            }));
        }
        for earlier in SIZES.iter().copied().filter(|s| *s < size) {
            let proof = consistency_proof(&tree, earlier, size).unwrap();
            verify_consistency(earlier, size, &proof, &root_at(&tree, earlier).unwrap(), &root).unwrap();
            consistency.push(json!({"old": earlier, "new": size, "proof": proof.iter().map(b64).collect::<Vec<_>>()}));
        }
        old = size;
    }
    // What was written incrementally is every tile of every published size.
    let mut every: Vec<Tile> = SIZES.iter().flat_map(|s| tiles_for_size(*s)).collect();
    every.sort();
    every.dedup();
    tiles.sort();
    assert_eq!(tiles, every, "new_tiles over the sizes covers every tile of each size");
    // An auditor holding only the published tiles builds the same proofs.
    for size in SIZES {
        let from_files = TileHashReader::new(size, |t: Tile| std::fs::read(dir.join(t.path())).map_err(|e| e.to_string()));
        assert_eq!(root_at(&from_files, size).unwrap(), root_at(&tree, size).unwrap());
        for index in [0, size / 3, size - 1] {
            assert_eq!(
                inclusion_proof(&from_files, index, size).unwrap(),
                inclusion_proof(&tree, index, size).unwrap()
            );
        }
        for earlier in SIZES.iter().copied().filter(|s| *s < size) {
            assert_eq!(
                consistency_proof(&from_files, earlier, size).unwrap(),
                consistency_proof(&tree, earlier, size).unwrap()
            );
        }
    }
    // 512: bundles 0 and 1; 1000: 2 and 3.p/232; 1537: 3 to 5 and 6.p/1.
    assert_eq!(bundle_paths.len(), 2 + 2 + 4);
    let proofs = json!({"inclusion": inclusion, "consistency": consistency});
    write(dir, "proofs.json", serde_json::to_string_pretty(&proofs).unwrap().as_bytes());
    Written {
        tiles: tiles.len(),
        // Go reads the bundles of the largest tree.
        bundles: bundles_for_size(*SIZES.last().unwrap()).len(),
        inclusion: proofs["inclusion"].as_array().unwrap().len(),
        consistency: proofs["consistency"].as_array().unwrap().len(),
    }
}

fn log_dir() -> (tempfile::TempDir, Written) {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(dir.path());
    (dir, written)
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let target = to.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A copy of the log with one file changed by `change`; the verifier must refuse it,
/// saying `why`.
fn refused_after(log: &Path, rel: &str, why: &str, change: impl FnOnce(&mut Vec<u8>)) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(log, copy.path());
    let path = copy.path().join(rel);
    let mut data = std::fs::read(&path).unwrap();
    let before = data.clone();
    change(&mut data);
    assert_eq!(data.len(), before.len(), "{rel}: the change keeps the length");
    assert_eq!(
        data.iter().zip(&before).filter(|(a, b)| a != b).count(),
        1,
        "{rel}: exactly one byte changed"
    );
    std::fs::write(&path, &data).unwrap();
    let out = run_verifier(copy.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "Go accepted the log with one byte of {rel} changed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(why), "{rel}: refused, but not for {why:?}: {stderr}");
}

/// Changes one byte of one hash inside proofs.json. The hash's base64 changes in one
/// character (bit 5 of byte 5 lies wholly in the 8th character), and the file is written back
/// the way it was first written, so the JSON stays valid and only that character differs.
fn change_proof_hash(data: &mut Vec<u8>, list: &str, item: usize, hash: usize) {
    let mut v: Value = serde_json::from_slice(data).unwrap();
    let slot = &mut v[list][item]["proof"][hash];
    let mut raw = B64.decode(slot.as_str().unwrap()).unwrap();
    raw[5] ^= 0x20;
    *slot = Value::String(B64.encode(&raw));
    *data = serde_json::to_string_pretty(&v).unwrap().into_bytes();
}

#[test]
fn go_sumdb_accepts_our_log() {
    let (dir, w) = log_dir();
    let out = run_verifier(dir.path());
    assert!(out.status.success(), "Go refused our log: {}", String::from_utf8_lossy(&out.stderr));
    let want = format!(
        "verified checkpoints={} entries={} bundles={} tiles={} inclusion={} consistency={}\n",
        SIZES.len(),
        SIZES.last().unwrap(),
        w.bundles,
        w.tiles,
        w.inclusion,
        w.consistency
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn go_sumdb_refuses_each_changed_byte() {
    let (dir, _) = log_dir();
    let log = dir.path();
    let cp = std::fs::read_to_string(log.join("checkpoint.1537")).unwrap();
    let body_len = cp.find("\n\n").unwrap();

    // The checkpoint body: its size, its root hash, its origin.
    let size_at = cp.find("1537").unwrap();
    refused_after(log, "checkpoint.1537", "invalid signature", |d| d[size_at + 3] = b'6');
    refused_after(log, "checkpoint.1537", "invalid signature", |d| {
        let root_at_byte = cp.find('\n').unwrap() + 1 + 5 + 3;
        d[root_at_byte] = if d[root_at_byte] == b'A' { b'B' } else { b'A' };
    });
    refused_after(log, "checkpoint.1537", "checkpoint.1537", |d| d[3] ^= 0x01);
    // The signature: a base64 character well inside it (not the key ID, not the padding).
    refused_after(log, "checkpoint.1537", "invalid signature", |d| {
        let sig_char = cp.rfind(' ').unwrap() + 40;
        assert!(sig_char > body_len);
        d[sig_char] = if d[sig_char] == b'A' { b'B' } else { b'A' };
    });
    // A proof hash: inclusion and consistency.
    refused_after(log, "proofs.json", "inclusion proof", |d| change_proof_hash(d, "inclusion", 12, 3));
    refused_after(log, "proofs.json", "consistency proof", |d| {
        change_proof_hash(d, "consistency", 2, 1)
    });
    // A tile byte: a full level-0 tile, and the partial level-1 tile of the last checkpoint.
    refused_after(log, "tile/0/001", "tile", |d| d[100] ^= 0x01);
    refused_after(log, "tile/1/000.p/6", "tile", |d| d[33] ^= 0x80);
    // An entry byte in a bundle: the tree the entries give no longer has the signed root.
    refused_after(log, "tile/entries/002", "the entries give", |d| d[40] ^= 0x01);
}
