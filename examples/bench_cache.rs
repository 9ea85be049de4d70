//! How serve's memory grows with the SignalProcessings in the cluster (the controller's cache):
//! `audit-guard serve` watches a real control plane while SignalProcessings of Kubernaut's shape
//! (tests/fixtures/kubernaut-today.json: spec as Kubernaut's SignalProcessing controller writes
//! it) are created up to each size in `BENCH_CACHE_SIZES` (default 1000 10000 50000). At each size,
//! once the controller has seen every object (it adds the finalizer to each: no webhook is
//! registered here) and the RSS has settled, serve's VmRSS is read.
//!
//! `AUDIT_GUARD_BIN=… cargo run --release --example bench_cache`
//!
//! Prints markdown rows, then `TARGET` lines (tab-separated) for scripts/bench.sh.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use audit_guard::crd::SignalProcessing;
use audit_guard_harness::{free_port, ControlPlane};
use futures::{stream, StreamExt};
use kube::api::{Api, PostParams};
use serde_json::Value;

const NAMESPACE: &str = "bench-cache";
const CREATORS: usize = 32;

fn main() -> Result<()> {
    let bin = PathBuf::from(std::env::var("AUDIT_GUARD_BIN").context("AUDIT_GUARD_BIN (the release audit-guard binary) not set")?);
    let sizes: Vec<usize> = std::env::var("BENCH_CACHE_SIZES")
        .unwrap_or_else(|_| "1000 10000 50000".into())
        .split_whitespace()
        .map(|s| s.parse().context("BENCH_CACHE_SIZES: whole numbers, ascending"))
        .collect::<Result<_>>()?;
    if sizes.is_empty() || sizes.windows(2).any(|w| w[0] >= w[1]) {
        bail!("BENCH_CACHE_SIZES must be ascending sizes");
    }
    let template: Value = serde_json::from_str(&fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubernaut-today.json"
    ))?)?;
    let rt = tokio::runtime::Runtime::new()?;

    eprintln!(">> starting the control plane");
    let cp = ControlPlane::start()?;
    let crd = cp.dir.join("crd.yaml");
    fs::write(&crd, Command::new(&bin).arg("crd").output()?.stdout)?;
    let crd_path = crd.to_str().context("non-UTF-8 path")?;
    cp.kubectl(&["apply", "-f", crd_path])?;
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/signalprocessings.kubernaut.ai",
        "--timeout=60s",
    ])?;
    cp.kubectl(&["create", "namespace", NAMESPACE])?;
    let client = rt.block_on(cp.client())?;

    let (health, metrics, webhook) = (free_port()?, free_port()?, free_port()?);
    let certs = cp.dir.join("webhook-certs");
    let certs_path = certs.to_str().context("non-UTF-8 path")?;
    if !Command::new(&bin).args(["certs", "--out-dir", certs_path]).status()?.success() {
        bail!("audit-guard certs failed");
    }
    let mut serve = Command::new(&bin);
    serve
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("RUST_LOG", "warn")
        .args(["serve", "--webhook-addr", &format!("127.0.0.1:{webhook}")])
        .args(["--health-addr", &format!("127.0.0.1:{health}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        // Nothing is deleted here, so nothing is stored: no Data Storage needed.
        .args(["--datastorage-url", "http://127.0.0.1:9"])
        .args(["--lease-namespace", NAMESPACE, "--identity", "bench"])
        .args(["--controller-identity", "admin", "--cert-dir", certs_path]);
    cp.spawn("audit-guard", serve)?;
    common::wait_http(&format!("http://127.0.0.1:{health}/readyz"), Duration::from_secs(30))?;
    let pid = cp
        .pids()
        .into_iter()
        .find(|(n, _)| n == "audit-guard")
        .map(|(_, p)| p)
        .context("serve not running")?;
    let metrics_url = format!("http://127.0.0.1:{metrics}/metrics");

    let idle = settled_rss_kib(pid)?;
    eprintln!(">> serve idle: {:.1} MiB", idle as f64 / 1024.0);
    let api: Api<SignalProcessing> = Api::namespaced(client, NAMESPACE);
    let mut rows = Vec::new();
    let mut created = 0usize;
    for &size in &sizes {
        let start = Instant::now();
        rt.block_on(create(&api, &template, created, size))?;
        created = size;
        let create_secs = start.elapsed().as_secs_f64();
        wait_seen(&metrics_url, size, Duration::from_secs(600))?;
        let rss = settled_rss_kib(pid)?;
        let per_1000 = (rss.saturating_sub(idle)) as f64 / 1024.0 / size as f64 * 1000.0;
        eprintln!(
            ">> {size}: serve {:.1} MiB ({per_1000:.2} MiB per 1,000 over idle); created in {create_secs:.0} s",
            rss as f64 / 1024.0
        );
        rows.push((size, rss, per_1000));
    }
    let _ = cp.kill("audit-guard");

    println!("| SignalProcessings in the cluster | serve VmRSS | over idle | per 1,000 |\n|---|---|---|---|");
    println!("| 0 | {:.1} MiB | | |", idle as f64 / 1024.0);
    for (size, rss, per_1000) in &rows {
        println!(
            "| {size} | {:.1} MiB | +{:.1} MiB | {per_1000:.2} MiB |",
            *rss as f64 / 1024.0,
            rss.saturating_sub(idle) as f64 / 1024.0
        );
    }
    let (largest, _, worst) = rows
        .iter()
        .copied()
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .context("no size measured")?;
    println!(
        "TARGET\tserve RSS per 1,000 cached SignalProcessings of Kubernaut's shape\t≤ 2 MiB\t{worst:.2} MiB (worst of {}; at {largest})\t{}\t{worst}\t<=\t2\t1",
        sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" / "),
        if worst <= 2.0 { "yes" } else { "**no**" }
    );
    Ok(())
}

/// Creates SignalProcessings `from..to` from the template, `CREATORS` at a time.
async fn create(api: &Api<SignalProcessing>, template: &Value, from: usize, to: usize) -> Result<()> {
    let results: Vec<Result<()>> = stream::iter(from..to)
        .map(|i| {
            let mut obj = template.clone();
            obj["metadata"] = serde_json::json!({ "name": format!("sp-{i:06}"), "namespace": NAMESPACE });
            if let Some(spec) = obj.get_mut("spec") {
                spec["remediationRequestRef"]["name"] = Value::String(format!("rr-{i:06}"));
            }
            async move {
                let sp: SignalProcessing = serde_json::from_value(obj)?;
                api.create(&PostParams::default(), &sp).await?;
                Ok(())
            }
        })
        .buffer_unordered(CREATORS)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Waits until the controller has added its finalizer to `count` objects: it has seen them all.
fn wait_seen(metrics_url: &str, count: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = common::curl_get(metrics_url).unwrap_or_default();
        let added: f64 = text
            .lines()
            .filter(|l| l.starts_with("audit_guard_reconcile_total{") && l.contains("outcome=\"finalizer_added\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if added as usize >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the controller added its finalizer to {added} of {count} objects in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// serve's VmRSS once it stops moving: three readings a second apart within 1% of each other
/// (at most 30 s).
fn settled_rss_kib(pid: u32) -> Result<u64> {
    let read = || -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")
    };
    let mut last = Vec::new();
    for _ in 0..30 {
        last.push(read()?);
        if last.len() >= 3 {
            let w = &last[last.len() - 3..];
            let (lo, hi) = (w.iter().min().copied().unwrap_or(0), w.iter().max().copied().unwrap_or(0));
            if hi.saturating_sub(lo) * 100 <= hi {
                return Ok(hi);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    last.last().copied().context("no reading")
}
