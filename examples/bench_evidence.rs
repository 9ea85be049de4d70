//! Compliance evidence benchmark on PostgreSQL.
//!
//! `cargo run --release --example bench_evidence -- postgres://audit_guard:audit_guard@127.0.0.1:5432/audit_guard`
//!
//! Runs the real `audit-guard datastorage` (a child process, `AUDIT_GUARD_BIN`, so its memory
//! can be read from /proc) on a scratch database with a chain key and a signing key, then:
//! 1. ingests `BENCH_EVIDENCE_RECORDS` records (default 1,000,000) through the batch API, 1,000
//!    per batch from 4 clients, every one chained (the rate is the "batch ingestion with the
//!    chain" figure);
//! 2. exports the 100,000 of them that completed on one day as NDJSON, reading the stream as it
//!    comes, while sampling the server's RSS every 50 ms (the "bounded memory" figure);
//! 3. runs `audit-guard verify` straight from the database over everything (the chain walked
//!    link by link and every row re-checked) and times it.
//!
//! Prints a markdown table and TARGET lines for scripts/bench.sh.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::Connection;

const DEFAULT_RECORDS: usize = 1_000_000;
const EXPORT_RECORDS: usize = 100_000;
const BATCH: usize = 1000;
const CLIENTS: usize = 4;
const BASE: &str = "/api/v1/audit/signal-processing";
const ENVS: [&str; 2] = ["production", "staging"];
const PRIORITIES: [&str; 3] = ["P0", "P1", "P2"];

/// The day whose records are exported: three days back, whole (UTC).
fn export_day() -> DateTime<Utc> {
    let day = (Utc::now() - chrono::Duration::days(3)).date_naive();
    day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(Utc::now)
}

/// Record `i`: the first EXPORT_RECORDS complete on the export day, half a second apart; the
/// rest within the last 1.7 days (never on the export day).
fn record(i: usize, day: DateTime<Utc>) -> Value {
    let completed = if i < EXPORT_RECORDS {
        day + chrono::Duration::milliseconds(500 * i as i64)
    } else {
        Utc::now() - chrono::Duration::seconds((i % 150_000) as i64 + 60)
    };
    json!({
        "id": format!("ev-{i:07}"), "remediation_id": format!("rr-{i}"), "signal_fingerprint": format!("fp-{}", i % 97),
        "processing_phases": [
            {"phase": "enriching", "start_time": completed - chrono::Duration::seconds(2), "end_time": completed, "duration": "1.5s"},
            {"phase": "classifying", "start_time": null, "end_time": null, "duration": "250ms"}
        ],
        "enrichment_quality": 0.9, "enrichment_sources": ["kubernetes", "prometheus"], "context_size_bytes": 2048,
        "environment": ENVS[i % 2], "confidence": 0.9, "business_criticality": "high",
        "sla_requirement": "critical", "priority": PRIORITIES[i % 3], "priority_score": 70,
        "routed_to_service": "ai-analysis", "routing_priority": 1, "completed_at": completed, "status": "completed",
        "namespace": "team-a", "name": format!("sp-{i}"), "uid": format!("ev-{i:07}"), "trigger": "completion", "deleted_at": null
    })
}

/// A kilobyte figure of /proc/<pid>/status (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> String {
    std::env::var("AUDIT_GUARD_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/release/audit-guard")
    })
}

fn start_server(url: &str, listen: &str, dir: &Path) -> Result<Server> {
    let chain_key = dir.join("chain.key");
    let signing_key = dir.join("signing-key.pem");
    std::fs::write(
        &chain_key,
        audit_guard::evidence::chain::generate_key_line("bench").map_err(anyhow::Error::msg)?,
    )?;
    std::fs::write(&signing_key, audit_guard::evidence::signing::generate_signing_key()?.0)?;
    let child = Command::new(bin())
        .env("RUST_LOG", "warn")
        .args([
            "datastorage",
            "--insecure-no-auth",
            "--plain-http",
            "--listen",
            listen,
            "--database-url",
            url,
        ])
        .arg("--chain-key-file")
        .arg(&chain_key)
        .arg("--signing-key-file")
        .arg(&signing_key)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin()))?;
    Ok(Server(child))
}

async fn ingest(http: &reqwest::Client, base: &str, total: usize, day: DateTime<Utc>) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..CLIENTS {
        let (http, base, next) = (http.clone(), base.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let batch: Vec<Value> = (from..(from + BATCH).min(total)).map(|i| record(i, day)).collect();
                let resp = http.post(format!("{base}{BASE}/batch")).json(&batch).send().await?;
                if !resp.status().is_success() {
                    bail!("batch at {from}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

struct ExportRun {
    bytes: u64,
    lines: u64,
    secs: f64,
    rss_before: u64,
    rss_peak: u64,
    manifest_records: u64,
}

async fn export(http: &reqwest::Client, base: &str, pid: u32, day: DateTime<Utc>) -> Result<ExportRun> {
    let rss_before = proc_kib(pid, "VmRSS")?;
    let peak = Arc::new(AtomicU64::new(rss_before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(rss) = proc_kib(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let until = day + chrono::Duration::days(1);
    let started = Instant::now();
    let mut resp = http
        .get(format!("{base}{BASE}/export"))
        .query(&[
            ("since", day.to_rfc3339()),
            ("until", until.to_rfc3339()),
            ("format", "ndjson".into()),
        ])
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("export: {}", resp.status());
    }
    let id = resp
        .headers()
        .get("audit-guard-export-id")
        .and_then(|v| v.to_str().ok())
        .context("no export id")?
        .to_string();
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = resp.chunk().await? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let signed: Value = http.get(format!("{base}{BASE}/exports/{id}")).send().await?.json().await?;
    let manifest: Value = serde_json::from_str(signed["manifest"].as_str().context("no manifest")?)?;
    Ok(ExportRun {
        bytes,
        lines,
        secs,
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
        manifest_records: manifest["counts"]["records"].as_u64().unwrap_or(0),
    })
}

/// `audit-guard verify` straight from the database; (seconds, its JSON result).
fn verify(url: &str, dir: &Path) -> Result<(f64, Value)> {
    let out = dir.join("verify.json");
    let started = Instant::now();
    let status = Command::new(bin())
        .args(["verify", "--database-url", url])
        .arg("--chain-key-file")
        .arg(dir.join("chain.key"))
        .arg("--output")
        .arg(&out)
        .stdout(Stdio::null())
        .status()?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("verify exited with {status}");
    }
    Ok((secs, serde_json::from_str(&std::fs::read_to_string(out)?)?))
}

#[tokio::main]
async fn main() -> Result<()> {
    let admin = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL_TEST").ok())
        .unwrap_or_else(|| "postgres://audit_guard:audit_guard@127.0.0.1:5432/audit_guard".into());
    let total: usize = std::env::var("BENCH_EVIDENCE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RECORDS)
        .max(EXPORT_RECORDS);
    let db = format!("audit_guard_bench_{:08x}", rand::random::<u32>());
    let (prefix, _) = admin.rsplit_once('/').context("database URL without a database name")?;
    let url = format!("{prefix}/{db}");
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await?;
    let dir = tempfile::tempdir()?;
    let result = run(&url, dir.path(), total).await;
    for attempt in 1..=20 {
        match sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => break,
            Err(e) if attempt == 20 => eprintln!("warning: could not drop the benchmark database {db}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    result
}

async fn run(url: &str, dir: &Path, total: usize) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen = format!("127.0.0.1:{port}");
    let server = start_server(url, &listen, dir)?;
    let pid = server.0.id();
    let base = format!("http://{listen}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(16).build()?;
    common::wait_ready(&http, &base, Duration::from_secs(60), || false).await?;
    let day = export_day();
    let rate = ingest(&http, &base, total, day).await?;
    let ex = export(&http, &base, pid, day).await?;
    let (verify_secs, verdict) = verify(url, dir)?;
    drop(server);

    if ex.lines != EXPORT_RECORDS as u64 || ex.manifest_records != EXPORT_RECORDS as u64 {
        bail!(
            "the export holds {} lines, its manifest {} records; expected {EXPORT_RECORDS}",
            ex.lines,
            ex.manifest_records
        );
    }
    let checked = verdict["checked"]["records"].as_u64().unwrap_or(0);
    if verdict["result"] != "intact" || checked != total as u64 {
        bail!("verify: {} with {checked} records checked of {total}", verdict["result"]);
    }
    // Linear in the rows: each is read once and checked once.
    let per_million = verify_secs * 1_000_000.0 / total as f64;
    let scaled = if total == DEFAULT_RECORDS {
        String::new()
    } else {
        format!(", {per_million:.1} s per 1,000,000 at that rate (run at {total}, not 1,000,000)")
    };
    println!("| what | measured | target |\n|---|---|---|");
    println!(
        "| batch ingestion with the hash chain, batch {BATCH}, {CLIENTS} clients, {total} records | {rate:.0} records/s | ≥ 20,000 records/s |"
    );
    println!(
        "| `audit-guard verify` from PostgreSQL: {} chain entries walked, {checked} records re-checked | {verify_secs:.1} s{scaled} | < 60 s for 1,000,000 |",
        verdict["chain_entries"]
    );
    println!(
        "| streamed NDJSON export of {EXPORT_RECORDS} records ({:.1} MiB in {:.1} s), server RSS | {:.1} MiB before, peak {:.1} MiB during (+{:.1} MiB) | bounded (independent of the export's size) |",
        ex.bytes as f64 / 1048576.0,
        ex.secs,
        mib(ex.rss_before),
        mib(ex.rss_peak),
        mib(ex.rss_peak.saturating_sub(ex.rss_before))
    );
    let met = |b: bool| if b { "yes" } else { "**no**" };
    println!(
        "TARGET\tbatch ingestion with the hash chain (PostgreSQL)\t≥ 20,000 records/s\t{rate:.0}/s ({total} records, batch {BATCH})\t{}\t{rate}\t>=\t20000\t1",
        met(rate >= 20_000.0)
    );
    println!(
        "TARGET\tverify 1,000,000 records\t< 1 min\t{verify_secs:.1} s for {total}{scaled}\t{}{}\t{per_million}\t<\t60\t1",
        met(per_million < 60.0),
        if total == DEFAULT_RECORDS { "" } else { " (extrapolated)" }
    );
    println!(
        "TARGET\texport of 100,000 records: server memory\tbounded\tRSS {:.1} → peak {:.1} MiB for {:.1} MiB streamed\t{}",
        mib(ex.rss_before),
        mib(ex.rss_peak),
        ex.bytes as f64 / 1048576.0,
        met(ex.rss_peak.saturating_sub(ex.rss_before) * 1024 < ex.bytes / 4)
    );
    Ok(())
}
