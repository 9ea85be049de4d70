//! Mass cleanup benchmark on a real control plane: 1,000 SignalProcessings deleted at once
//! (one deletecollection), timed until none is left,
//! (a) with nothing of audit-guard installed, then
//! (b) with `audit-guard serve` (mutating + validating webhook registered, leader-elected
//!     controller) and `audit-guard datastorage` on PostgreSQL: every record stored, then gone.
//!
//! `AUDIT_GUARD_BIN=target/release/audit-guard cargo run --release --example bench_cleanup [-- postgres://…]`
//!
//! `BENCH_EXEMPT_CONTROLLER=1` registers the validating webhook as it was before the controller
//! lost its exemption (a matchCondition skipping the controller's own finalizer removals), so
//! the cost of checking every removal is measured on the same build.
//!
//! Prints markdown rows, then `TARGET` lines (tab-separated) for scripts/bench.sh.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use audit_guard::crd::SignalProcessing;
use audit_guard::webhook::registration;
use audit_guard_harness::{free_port, ControlPlane};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use sqlx::Connection;

const COUNT: usize = 1_000;
const CREATE_CONCURRENCY: usize = 32;
const TIMEOUT: Duration = Duration::from_secs(300);

fn template() -> Result<SignalProcessing> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubernaut-today.json");
    Ok(serde_json::from_slice(&fs::read(fixture)?)?)
}

async fn create_all(client: &kube::Client, ns: &str) -> Result<()> {
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), ns);
    let base = template()?;
    futures::stream::iter(0..COUNT)
        .map(|i| {
            let (api, mut sp) = (api.clone(), base.clone());
            async move {
                sp.metadata.name = Some(format!("sp-{i:04}"));
                sp.metadata.namespace = Some(ns.to_string());
                api.create(&PostParams::default(), &sp).await.map(|_| ())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .with_context(|| format!("creating {COUNT} SignalProcessings in {ns}"))?;
    Ok(())
}

async fn count(api: &Api<SignalProcessing>) -> Result<(usize, usize)> {
    let list = api.list_metadata(&ListParams::default()).await?;
    let with_finalizer = list
        .items
        .iter()
        .filter(|m| audit_guard::crd::has_finalizer(m.metadata.finalizers.as_deref()))
        .count();
    Ok((list.items.len(), with_finalizer))
}

/// Issues one deletecollection and waits until the namespace holds no SignalProcessing.
async fn delete_all_and_wait(client: &kube::Client, ns: &str) -> Result<Duration> {
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default()).await?;
    loop {
        let (left, _) = count(&api).await?;
        if left == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > TIMEOUT {
            bail!("{left} SignalProcessings still in {ns} after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// CPU seconds (user + system) used so far by each process of the benchmark, PostgreSQL's
/// processes summed: a coarse profile of where a cleanup's work goes (hardware counters and
/// perf are not available on this machine).
fn cpu_seconds(cp: &ControlPlane) -> BTreeMap<String, f64> {
    let ticks = 100.0; // USER_HZ on Linux
    let read = |pid: u32| -> f64 {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0.0;
        };
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (num(11) + num(12)) / ticks
    };
    let mut out: BTreeMap<String, f64> = cp.pids().into_iter().map(|(name, pid)| (name, read(pid))).collect();
    let postgres: f64 = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(read)
        .sum();
    out.insert("postgres".into(), postgres);
    out
}

fn cpu_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    let mut parts: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect();
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = parts.iter().map(|(_, v)| v).sum();
    let list: Vec<String> = parts
        .iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| format!("{k} {v:.2} s"))
        .collect();
    format!("{total:.2} CPU-s: {}", list.join(", "))
}

fn webhook_configs(addr: &str, ca: &str) -> Value {
    // Every namespace, as shipped.
    let (mutating, mut validating) = registration::url_configurations("audit-guard", &format!("https://{addr}"), ca, None);
    if exempt_controller() {
        if let Some(conditions) = validating["webhooks"][0]["matchConditions"].as_array_mut() {
            conditions.push(json!({ "name": "not-the-controller", "expression": "request.userInfo.username != 'admin'" }));
        }
    }
    json!({"apiVersion": "v1", "kind": "List", "items": [mutating, validating]})
}

/// The old configuration: the controller's removals skip the webhook (for comparison only).
fn exempt_controller() -> bool {
    std::env::var("BENCH_EXEMPT_CONTROLLER").is_ok_and(|v| v == "1")
}

fn wait_http(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} did not answer")
}

fn file_arg(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

fn main() -> Result<()> {
    let bin = PathBuf::from(std::env::var("AUDIT_GUARD_BIN").context("AUDIT_GUARD_BIN (the release audit-guard binary) not set")?);
    let admin = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL_TEST").ok())
        .unwrap_or_else(|| "postgres://audit_guard:audit_guard@127.0.0.1:5432/audit_guard".into());
    let rt = tokio::runtime::Runtime::new()?;

    eprintln!(">> starting the control plane");
    let cp = ControlPlane::start()?;
    let crd = cp.dir.join("crd.yaml");
    let out = Command::new(&bin).arg("crd").output()?;
    fs::write(&crd, out.stdout)?;
    cp.kubectl(&["apply", "-f", file_arg(&crd)?])?;
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/signalprocessings.kubernaut.ai",
        "--timeout=60s",
    ])?;
    for ns in ["audit-guard", "bench-plain", "bench-guarded"] {
        cp.kubectl(&["create", "namespace", ns])?;
    }
    let client = rt.block_on(cp.client())?;

    // (a) nothing of audit-guard installed.
    eprintln!(">> (a) {COUNT} SignalProcessings, no audit-guard");
    rt.block_on(create_all(&client, "bench-plain"))?;
    let before = cpu_seconds(&cp);
    let plain = rt.block_on(delete_all_and_wait(&client, "bench-plain"))?;
    let cpu_plain = cpu_delta(&before, &cpu_seconds(&cp));
    eprintln!(">> (a) gone in {plain:?}");

    // (b) Data Storage on PostgreSQL, audit-guard serve, webhooks registered.
    let db = format!("audit_guard_bench_cleanup_{:08x}", rand::random::<u32>());
    let (prefix, _) = admin.rsplit_once('/').context("database URL without a database name")?;
    let url = format!("{prefix}/{db}");
    let mut pg = rt.block_on(sqlx::PgConnection::connect(&admin))?;
    rt.block_on(sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut pg))?;
    let result = run_guarded(&cp, &rt, &bin, &client, &url, (plain, &cpu_plain));
    let _ = cp.kill("audit-guard");
    let _ = cp.kill("datastorage");
    let _ = rt.block_on(sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut pg));
    result
}

fn run_guarded(
    cp: &ControlPlane,
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    client: &kube::Client,
    url: &str,
    (plain, cpu_plain): (Duration, &str),
) -> Result<()> {
    let ds_addr = format!("127.0.0.1:{}", free_port()?);
    let key = cp.dir.join("bench-chain.key");
    std::fs::write(
        &key,
        audit_guard::datastorage::chain::generate_key_line("bench").map_err(anyhow::Error::msg)?,
    )?;
    let mut ds = Command::new(bin);
    ds.env("RUST_LOG", "warn").args([
        "datastorage",
        "--insecure-no-auth",
        "--plain-http",
        "--listen",
        &ds_addr,
        "--database-url",
        url,
        "--chain-key-file",
        file_arg(&key)?,
    ]);
    cp.spawn("datastorage", ds)?;
    wait_http(&format!("http://{ds_addr}/readyz"))?;

    let certs = cp.dir.join("webhook-certs");
    let st = Command::new(bin)
        .args(["certs", "--extra-san", "127.0.0.1,localhost", "--out-dir", file_arg(&certs)?])
        .output()?;
    if !st.status.success() {
        bail!("audit-guard certs failed");
    }
    let (wh, health, metrics) = (free_port()?, free_port()?, free_port()?);
    let wh_addr = format!("127.0.0.1:{wh}");
    let mut serve = Command::new(bin);
    serve
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("RUST_LOG", "warn")
        .args(["serve", "--webhook-addr", &wh_addr])
        .args(["--health-addr", &format!("127.0.0.1:{health}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--datastorage-url", &format!("http://{ds_addr}")])
        .args(["--lease-namespace", "audit-guard", "--identity", "bench"])
        // The control plane's admin user is the controller here; in a cluster it is the ServiceAccount.
        .args(["--controller-identity", "admin", "--cert-dir", file_arg(&certs)?]);
    cp.spawn("audit-guard", serve)?;
    wait_http(&format!("http://127.0.0.1:{health}/readyz"))?;
    let ca = base64::engine::general_purpose::STANDARD.encode(fs::read(certs.join("ca.crt"))?);
    let hooks = cp.dir.join("webhooks.json");
    fs::write(&hooks, serde_json::to_vec(&webhook_configs(&wh_addr, &ca))?)?;
    cp.kubectl(&["apply", "-f", file_arg(&hooks)?])?;

    eprintln!(">> (b) {COUNT} SignalProcessings under audit-guard (webhook + controller + Data Storage on PostgreSQL)");
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), "bench-guarded");
    // The mutating webhook adds the finalizer at create; any created before the registration took
    // effect get it from the controller. Wait until all carry it.
    let deadline = Instant::now() + Duration::from_secs(30);
    rt.block_on(create_all(client, "bench-guarded"))?;
    loop {
        let (n, guarded) = rt.block_on(count(&api))?;
        if n == COUNT && guarded == COUNT {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {guarded} of {n} SignalProcessings carry the audit finalizer");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the controller's watch see them all before the clock starts.
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_seconds(cp);
    let guarded = rt.block_on(delete_all_and_wait(client, "bench-guarded"))?;
    let cpu_guarded = cpu_delta(&before, &cpu_seconds(cp));
    eprintln!(">> (b) gone in {guarded:?}");

    let stored: i64 = rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::query_scalar("SELECT count(DISTINCT uid) FROM signal_processing_audit WHERE namespace = 'bench-guarded'")
            .fetch_one(&mut c)
            .await
    })?;
    let ratio = guarded.as_secs_f64() / plain.as_secs_f64();
    println!("| what | measured | notes |\n|---|---|---|");
    println!(
        "| mass cleanup (a): {COUNT} SignalProcessings, one deletecollection, no audit-guard | {:.2} s until none left | |",
        plain.as_secs_f64()
    );
    let removals = if exempt_controller() {
        "controller's removals exempt from the webhook (as before)"
    } else {
        "every removal checked by the webhook"
    };
    println!(
        "| mass cleanup (b): same, audit-guard serve (webhooks + controller) + Data Storage on PostgreSQL; {removals} | {:.2} s until none left | {stored} of {COUNT} records stored |",
        guarded.as_secs_f64()
    );
    let page = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{metrics}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let checks: Vec<String> = page
        .lines()
        .filter(|l| l.starts_with("audit_guard_webhook_record_checks_total{"))
        .map(|l| l.trim_start_matches("audit_guard_webhook_record_checks_total").to_string())
        .collect();
    println!(
        "| removals checked by the webhook during (b) | {} | source: this process's confirmed set (cache) or a GET to Data Storage |",
        if checks.is_empty() { "none".to_string() } else { checks.join(", ") }
    );
    println!("| CPU used during (a), by process | {cpu_plain} | coarse profile from /proc/<pid>/stat |");
    println!("| CPU used during (b), by process | {cpu_guarded} | |");
    let met = ratio <= 1.5 && stored == COUNT as i64;
    println!(
        "TARGET\tmass cleanup of {COUNT} SignalProcessings: all audited and gone\t≤ 1.5× without the finalizer\t{:.2} s vs {:.2} s = {ratio:.2}×; {stored}/{COUNT} records stored\t{}",
        guarded.as_secs_f64(),
        plain.as_secs_f64(),
        if met { "yes" } else { "**no**" }
    );
    Ok(())
}
