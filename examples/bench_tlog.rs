//! Transparency log core benchmark, through src/evidence/'s public API (no database).
//!
//! `cargo run --release --example bench_tlog`
//!
//! 1. Whole-log verification as an auditor does it from an export: encode
//!    `BENCH_TLOG_ENTRIES` entries (default 1,000,000), hash each as a leaf, append it to a
//!    compact range, take the root.
//! 2. The same log with every stored hash kept (what a store or the tiles hold), then
//!    inclusion and consistency proofs built from those hashes and checked: mean time per check
//!    and proof size.
//! 3. Signing and verifying a checkpoint.
//!
//! Prints markdown rows, then `TARGET` lines (tab-separated) for scripts/bench.sh.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use audit_guard::evidence::entry::{Entry, Kind};
use audit_guard::evidence::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root_at, verify_consistency, verify_inclusion, CompactRange, MemoryTree,
};
use audit_guard::evidence::note::{Checkpoint, SignerKey, ALG_ED25519};
use chrono::{DateTime, Utc};

const DEFAULT_ENTRIES: u64 = 1_000_000;
const PROOFS: u64 = 10_000;

fn entry(i: u64, t0: DateTime<Utc>) -> Result<Vec<u8>> {
    // Content as big as a typical stored record, so the content digest costs what it does.
    let content = format!(
        r#"{{"id":"rec-{i:09}","remediation_id":"rr-{i}","signal_fingerprint":"fp-{}","environment":"production","priority":"P1","padding":"{}"}}"#,
        i % 97,
        "x".repeat(1500)
    );
    let kind = if i % 50 == 0 { Kind::Amendment } else { Kind::Record };
    Ok(Entry::new(
        kind,
        &format!("rec-{i:09}"),
        &format!("00000000-0000-4000-8000-{i:012}"),
        t0 + chrono::Duration::microseconds(i as i64),
        content.as_bytes(),
    )
    .encode()?)
}

/// A cheap, deterministic spread of indexes over the log.
fn spread(k: u64, n: u64) -> u64 {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
}

fn per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() -> Result<()> {
    let n: u64 = match std::env::var("BENCH_TLOG_ENTRIES") {
        Ok(v) => v.parse().context("BENCH_TLOG_ENTRIES")?,
        Err(_) => DEFAULT_ENTRIES,
    };
    let t0 = Utc::now();

    // 1. An auditor's whole-log check: entries from the export, to the root.
    let start = Instant::now();
    let mut range = CompactRange::new();
    for i in 0..n {
        range.append(leaf_hash(&entry(i, t0)?));
    }
    let root = range.root();
    let whole = start.elapsed();

    // 2. Stored hashes kept, then proofs from them.
    let start = Instant::now();
    let tree: MemoryTree = (0..n).map(|i| entry(i, t0).map(|e| leaf_hash(&e))).collect::<Result<_>>()?;
    let build = start.elapsed();
    anyhow::ensure!(tree.root() == root, "the stored hashes give another root");

    let mut make = Duration::ZERO;
    let mut check = Duration::ZERO;
    let mut proof_hashes = 0usize;
    let mut max_hashes = 0usize;
    for k in 0..PROOFS {
        let index = spread(k, n);
        let leaf = leaf_hash(&entry(index, t0)?);
        let s = Instant::now();
        let proof = inclusion_proof(&tree, index, n)?;
        make += s.elapsed();
        let s = Instant::now();
        verify_inclusion(&leaf, index, n, &proof, &root)?;
        check += s.elapsed();
        proof_hashes += proof.len();
        max_hashes = max_hashes.max(proof.len());
    }
    let mut c_make = Duration::ZERO;
    let mut c_check = Duration::ZERO;
    let mut c_hashes = 0usize;
    let consistency_runs = 1000u64;
    for k in 0..consistency_runs {
        let old = 1 + spread(k, n - 1);
        let old_root = root_at(&tree, old)?;
        let s = Instant::now();
        let proof = consistency_proof(&tree, old, n)?;
        c_make += s.elapsed();
        let s = Instant::now();
        verify_consistency(old, n, &proof, &old_root, &root)?;
        c_check += s.elapsed();
        c_hashes += proof.len();
    }

    // 3. A checkpoint.
    let key = SignerKey::generate("bench.example/log", ALG_ED25519)?;
    let cp = Checkpoint {
        origin: "bench.example/log".into(),
        size: n,
        root,
        extensions: vec![],
    };
    let s = Instant::now();
    let note = cp.sign(&key)?.to_bytes();
    let sign = s.elapsed();
    let s = Instant::now();
    Checkpoint::open(&note, key.verifier(), "bench.example/log")?;
    let open = s.elapsed();

    let incl_us = per(check, PROOFS);
    let mean_bytes = proof_hashes as f64 * 32.0 / PROOFS as f64;
    println!("| what | measured |\n|---|---|");
    println!(
        "| whole-log check: encode + leaf-hash + root of {n} entries (1.6 KB content each, digest included) | {:.2} s ({:.0} entries/s) |",
        whole.as_secs_f64(),
        n as f64 / whole.as_secs_f64()
    );
    println!(
        "| keep every stored hash of {n} entries (in memory) | {:.2} s |",
        build.as_secs_f64()
    );
    println!(
        "| inclusion proof from stored hashes: make / check | {:.1} µs / {incl_us:.1} µs (mean of {PROOFS}) |",
        per(make, PROOFS)
    );
    println!(
        "| inclusion proof size at {n} entries | mean {mean_bytes:.0} B, max {} B ({max_hashes} hashes) |",
        max_hashes * 32
    );
    println!(
        "| consistency proof to {n}: make / check / size | {:.1} µs / {:.1} µs / mean {:.0} B (of {consistency_runs}) |",
        per(c_make, consistency_runs),
        per(c_check, consistency_runs),
        c_hashes as f64 * 32.0 / consistency_runs as f64
    );
    println!(
        "| checkpoint: sign / parse + verify | {:.0} µs / {:.0} µs ({} bytes) |",
        sign.as_secs_f64() * 1e6,
        open.as_secs_f64() * 1e6,
        note.len()
    );
    let yes = |ok: bool| if ok { "yes" } else { "**no**" };
    println!(
        "TARGET\ttransparency log: whole-log check of {n} entries (encode, leaf-hash, root)\t< 30 s\t{:.2} s\t{}\t{}\t<\t30\t1",
        whole.as_secs_f64(),
        yes(whole.as_secs_f64() < 30.0),
        whole.as_secs_f64()
    );
    println!(
        "TARGET\ttransparency log: one inclusion proof check at {n} entries\t< 1 ms\t{incl_us:.1} µs, {mean_bytes:.0} B mean proof\t{}\t{incl_us}\t<\t1000\t1",
        yes(incl_us < 1000.0)
    );
    Ok(())
}
