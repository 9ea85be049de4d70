//! Mass cleanup benchmark on a real control plane, the regimes side by side in one run:
//! 1,000 SignalProcessings deleted at once (one deletecollection), timed until none is left, in
//! a fresh namespace per regime and round:
//! (a) no finalizer, no controller — the API server's own delete rate;
//! (b) finalizer + `examples/floor_controller.rs`, which removes it and stores nothing — the
//!     finalizer protocol's floor;
//! (c) finalizer + the controller-runtime peer (`../shared/peers/cleanup-controller`, binary in
//!     `BENCH_PEER_CLEANUP`) run with `--annotate` (no Events: audit-guard's success Events are off by default, so both
//!     make the same API writes), storing each record synchronously in
//!     the same Data Storage on PostgreSQL — skipped with a note when the binary is absent;
//! (d) `audit-guard serve` (mutating + validating webhooks registered, controller) storing in
//!     that Data Storage.
//! `BENCH_CLEANUP_SIZES` (default `1000`) gives the sizes; past the first, only (b) and (d) run, for
//! the curve of how the cost grows with the work.
//! Rounds (`BENCH_ROUNDS`, default 2) of a, b, c, d (`BENCH_REGIMES="a d"` runs a subset); the table gives medians, ratios to (a) and
//! (d)/(b), (d)/(c), and kube-apiserver CPU seconds over the window.
//!
//! `AUDIT_GUARD_BIN=… BENCH_FLOOR_BIN=… BENCH_PEER_CLEANUP=… cargo run --release --example bench_cleanup [-- postgres://…]`
//!
//! `BENCH_EXEMPT_CONTROLLER=1` registers the validating webhook as it was before the controller
//! lost its exemption (a matchCondition skipping the controller's own finalizer removals).
//! `BENCH_SERVE_ARGS` adds arguments to `audit-guard serve` (for before/after measurements).
//!
//! Prints markdown rows, then `TARGET` lines (tab-separated) for scripts/bench.sh.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::median;

use anyhow::{bail, Context, Result};
use audit_guard::crd::SignalProcessing;
use audit_guard::webhook::registration;
use audit_guard_harness::{free_port, ControlPlane};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use sqlx::Connection;

const CREATE_CONCURRENCY: usize = 32;
const REGIMES: [char; 4] = ['a', 'b', 'c', 'd'];

fn template() -> Result<SignalProcessing> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubernaut-today.json");
    Ok(serde_json::from_slice(&fs::read(fixture)?)?)
}

async fn create_all(client: &kube::Client, ns: &str, finalizer: bool, count: usize) -> Result<()> {
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), ns);
    let mut base = template()?;
    if finalizer {
        base.metadata.finalizers = Some(vec![audit_guard::crd::FINALIZER.to_string()]);
    }
    futures::stream::iter(0..count)
        .map(|i| {
            let (api, mut sp) = (api.clone(), base.clone());
            async move {
                sp.metadata.name = Some(format!("sp-{i:05}"));
                sp.metadata.namespace = Some(ns.to_string());
                api.create(&PostParams::default(), &sp).await.map(|_| ())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .with_context(|| format!("creating {count} SignalProcessings in {ns}"))?;
    Ok(())
}

async fn count_in(api: &Api<SignalProcessing>) -> Result<(usize, usize)> {
    let list = api.list_metadata(&ListParams::default()).await?;
    let with_finalizer = list
        .items
        .iter()
        .filter(|m| audit_guard::crd::has_finalizer(m.metadata.finalizers.as_deref()))
        .count();
    Ok((list.items.len(), with_finalizer))
}

/// Issues one deletecollection and waits until the namespace holds no SignalProcessing.
/// Deletes every SignalProcessing in `ns` and waits until none is left (at most `timeout`).
async fn delete_all_and_wait(client: &kube::Client, ns: &str, timeout: Duration) -> Result<Duration> {
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default()).await?;
    loop {
        let (left, _) = count_in(&api).await?;
        if left == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{left} SignalProcessings still in {ns} after {timeout:?}");
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

fn cpu_diff(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
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

fn file_arg(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

fn label(g: char) -> &'static str {
    match g {
        'a' => "(a) no finalizer, no controller",
        'b' => "(b) finalizer + floor controller (removes it, stores nothing; no webhooks registered)",
        'c' => "(c) controller-runtime peer `--annotate` (no Events, as audit-guard's default), stores in Data Storage (PostgreSQL)",
        _ => "(d) audit-guard serve (webhooks + controller), Data Storage (PostgreSQL)",
    }
}

/// One regime in one round.
struct Sample {
    secs: f64,
    cpu: BTreeMap<String, f64>,
    profile: String,
    stored: Option<i64>,
    notes: String,
}

struct Bench<'a> {
    cp: &'a ControlPlane,
    rt: &'a tokio::runtime::Runtime,
    bin: &'a Path,
    floor: &'a Path,
    peer: Option<&'a Path>,
    client: &'a kube::Client,
    ds_url: String,
    db_url: String,
    certs: PathBuf,
    hooks: PathBuf,
}

fn main() -> Result<()> {
    let bin = PathBuf::from(std::env::var("AUDIT_GUARD_BIN").context("AUDIT_GUARD_BIN (the release audit-guard binary) not set")?);
    let floor = match std::env::var("BENCH_FLOOR_BIN") {
        Ok(p) => PathBuf::from(p),
        Err(_) => std::env::current_exe()?.with_file_name("floor_controller"),
    };
    if !floor.exists() {
        bail!(
            "no floor controller at {} (cargo build --release --example floor_controller)",
            floor.display()
        );
    }
    let peer = std::env::var("BENCH_PEER_CLEANUP").ok().map(PathBuf::from).filter(|p| p.exists());
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let sizes: Vec<usize> = std::env::var("BENCH_CLEANUP_SIZES")
        .unwrap_or_else(|_| "1000".into())
        .split_whitespace()
        .map(|s| s.parse().context("BENCH_CLEANUP_SIZES: whole numbers"))
        .collect::<Result<_>>()?;
    if sizes.is_empty() {
        bail!("BENCH_CLEANUP_SIZES names no size");
    }
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
    cp.kubectl(&["create", "namespace", "audit-guard"])?;
    let client = rt.block_on(cp.client())?;

    // One Data Storage on PostgreSQL for the whole run; records are counted per namespace.
    let db = format!("audit_guard_bench_cleanup_{:08x}", rand::random::<u32>());
    let (prefix, _) = admin.rsplit_once('/').context("database URL without a database name")?;
    let db_url = format!("{prefix}/{db}");
    let mut pg = rt.block_on(sqlx::PgConnection::connect(&admin))?;
    rt.block_on(sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut pg))?;
    let result = (|| {
        let ds_addr = format!("127.0.0.1:{}", free_port()?);
        let key = cp.dir.join("bench-chain.key");
        fs::write(
            &key,
            audit_guard::evidence::chain::generate_key_line("bench").map_err(anyhow::Error::msg)?,
        )?;
        let mut ds = Command::new(&bin);
        ds.env("RUST_LOG", "warn").args([
            "datastorage",
            "--insecure-no-auth",
            "--plain-http",
            "--listen",
            &ds_addr,
            "--database-url",
            &db_url,
            "--chain-key-file",
            file_arg(&key)?,
        ]);
        cp.spawn("datastorage", ds)?;
        common::wait_http(&format!("http://{ds_addr}/readyz"), Duration::from_secs(30))?;
        let certs = cp.dir.join("webhook-certs");
        let st = Command::new(&bin)
            .args(["certs", "--extra-san", "127.0.0.1,localhost", "--out-dir", file_arg(&certs)?])
            .output()?;
        if !st.status.success() {
            bail!("audit-guard certs failed");
        }
        let bench = Bench {
            cp: &cp,
            rt: &rt,
            bin: &bin,
            floor: &floor,
            peer: peer.as_deref(),
            client: &client,
            ds_url: format!("http://{ds_addr}"),
            db_url: db_url.clone(),
            hooks: cp.dir.join("webhooks.json"),
            certs,
        };
        let only = std::env::var("BENCH_REGIMES").unwrap_or_else(|_| "a b c d".into());
        let mut curve = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let mut samples: BTreeMap<char, Vec<Sample>> = BTreeMap::new();
            for round in 1..=rounds {
                for g in REGIMES {
                    // Past the first size only the floor and audit-guard: the curve compares those.
                    let wanted = only.contains(g) && (i == 0 || g == 'b' || g == 'd');
                    if !wanted || (g == 'c' && bench.peer.is_none()) {
                        continue;
                    }
                    let s = bench.regime(round, g, size)?;
                    eprintln!(">> {size}, round {round} {}: {:.2} s; {}", label(g), s.secs, s.profile);
                    samples.entry(g).or_default().push(s);
                }
            }
            if i == 0 {
                report(&samples, rounds, peer.is_some(), size);
            }
            let secs = |g: char| median(samples.get(&g).map(|v| v.iter().map(|s| s.secs).collect()).unwrap_or_default());
            curve.push((size, secs('b'), secs('d')));
        }
        report_curve(&curve);
        Ok(())
    })();
    let _ = cp.kill("audit-guard");
    let _ = cp.kill("datastorage");
    let _ = rt.block_on(sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut pg));
    result
}

impl Bench<'_> {
    fn regime(&self, round: usize, g: char, count: usize) -> Result<Sample> {
        let ns = format!("cleanup-{count}-r{round}-{g}");
        self.cp.kubectl(&["create", "namespace", &ns])?;
        let api: Api<SignalProcessing> = Api::namespaced(self.client.clone(), &ns);
        let name = match g {
            'b' => {
                let mut cmd = Command::new(self.floor);
                cmd.env("KUBECONFIG", &self.cp.kubeconfig);
                self.cp.spawn("floor", cmd)?;
                "floor"
            }
            'c' => {
                let (health, metrics) = (free_port()?, free_port()?);
                let mut cmd = Command::new(self.peer.context("no peer")?);
                cmd.env("KUBECONFIG", &self.cp.kubeconfig)
                    .args(["--store-url", &self.ds_url, "--annotate"])
                    .args(["--lease-namespace", &ns])
                    .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
                    .args(["--health-addr", &format!("127.0.0.1:{health}")]);
                self.cp.spawn("peer", cmd)?;
                common::wait_http(&format!("http://127.0.0.1:{health}/readyz"), Duration::from_secs(30))?;
                "peer"
            }
            'd' => {
                self.start_audit_guard(&ns)?;
                "audit-guard"
            }
            _ => "",
        };
        // (a) carries no finalizer; (b) and (c) get it in the object as created; in (d) the
        // mutating webhook adds it (the controller, for any created before the registration
        // took effect).
        self.rt.block_on(create_all(self.client, &ns, g == 'b' || g == 'c', count))?;
        let want = if g == 'a' { 0 } else { count };
        // Generous for a loaded machine: a minute, plus a second per hundred objects.
        let deadline = Instant::now() + Duration::from_secs(60 + count as u64 / 100);
        loop {
            let (n, guarded) = self.rt.block_on(count_in(&api))?;
            if n == count && guarded == want {
                break;
            }
            if Instant::now() > deadline {
                bail!("{ns}: {guarded} of {n} SignalProcessings carry the audit finalizer, want {want}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Let the controller's watch see them all (and audit-guard's writer flush) first.
        std::thread::sleep(Duration::from_secs(3));
        let before = cpu_seconds(self.cp);
        let timeout = Duration::from_secs(300 + count as u64 / 50);
        let elapsed = self.rt.block_on(delete_all_and_wait(self.client, &ns, timeout))?;
        let after = cpu_seconds(self.cp);
        let mut notes = vec![];
        let stored = if g == 'c' || g == 'd' {
            let url = self.db_url.clone();
            let q = format!("SELECT count(DISTINCT uid) FROM signal_processing_audit WHERE namespace = '{ns}'");
            Some(self.rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&url).await?;
                sqlx::query_scalar::<_, i64>(&q).fetch_one(&mut c).await
            })?)
        } else {
            None
        };
        if g == 'd' {
            let _ = self.cp.kubectl(&[
                "delete",
                "mutatingwebhookconfiguration,validatingwebhookconfiguration",
                "audit-guard",
                "--ignore-not-found",
            ]);
            // The API server stops calling the webhook before audit-guard goes away.
            std::thread::sleep(Duration::from_secs(2));
        }
        if !name.is_empty() {
            self.cp.kill(name)?;
            let events = self
                .cp
                .kubectl(&["get", "events.events.k8s.io", "-n", &ns, "-o", "jsonpath={.items[*].reason}"])
                .unwrap_or_default();
            let persisted = events.split_whitespace().filter(|r| *r == "AuditPersisted").count();
            notes.push(format!("{persisted} AuditPersisted Events"));
        }
        Ok(Sample {
            secs: elapsed.as_secs_f64(),
            profile: cpu_delta(&before, &after),
            cpu: cpu_diff(&before, &after),
            stored,
            notes: notes.join("; "),
        })
    }

    fn start_audit_guard(&self, ns: &str) -> Result<()> {
        let (wh, health, metrics) = (free_port()?, free_port()?, free_port()?);
        let wh_addr = format!("127.0.0.1:{wh}");
        let mut serve = Command::new(self.bin);
        serve
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .env("RUST_LOG", "warn")
            .args(["serve", "--webhook-addr", &wh_addr])
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--datastorage-url", &self.ds_url])
            // A fresh Lease per regime: the previous audit-guard was killed without releasing its own.
            .args(["--lease-namespace", ns, "--identity", "bench"])
            // The control plane's admin user is the controller here; in a cluster it is the ServiceAccount.
            .args(["--controller-identity", "admin", "--cert-dir", file_arg(&self.certs)?]);
        if let Ok(extra) = std::env::var("BENCH_SERVE_ARGS") {
            serve.args(extra.split_whitespace());
        }
        self.cp.spawn("audit-guard", serve)?;
        common::wait_http(&format!("http://127.0.0.1:{health}/readyz"), Duration::from_secs(30))?;
        let ca = base64::engine::general_purpose::STANDARD.encode(fs::read(self.certs.join("ca.crt"))?);
        fs::write(&self.hooks, serde_json::to_vec(&webhook_configs(&wh_addr, &ca))?)?;
        self.cp.kubectl(&["apply", "-f", file_arg(&self.hooks)?])?;
        // Wait until the mutating webhook answers creates (a server-side dry run gets the finalizer).
        let api: Api<SignalProcessing> = Api::namespaced(self.client.clone(), ns);
        let mut probe = template()?;
        probe.metadata.name = Some("webhook-probe".into());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.rt.block_on(api.create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &probe,
            ));
            if got.is_ok_and(|sp| sp.has_finalizer()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the mutating webhook did not take effect in 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn report(samples: &BTreeMap<char, Vec<Sample>>, rounds: usize, have_peer: bool, count: usize) {
    let secs = |g: char| median(samples.get(&g).map(|v| v.iter().map(|s| s.secs).collect()).unwrap_or_default());
    let cpu = |g: char, who: &str| {
        median(
            samples
                .get(&g)
                .map(|v| v.iter().map(|s| s.cpu.get(who).copied().unwrap_or(0.0)).collect())
                .unwrap_or_default(),
        )
    };
    let total = |g: char| {
        median(
            samples
                .get(&g)
                .map(|v| v.iter().map(|s| s.cpu.values().sum()).collect())
                .unwrap_or_default(),
        )
    };
    let a = secs('a');
    println!("Medians of {rounds} round(s); each round runs (a), (b), (c), (d) in that order, each in a fresh namespace.\n");
    println!("| regime | seconds | × (a) | kube-apiserver CPU-s | all processes CPU-s | records | notes |\n|---|---|---|---|---|---|---|");
    for g in REGIMES {
        let Some(v) = samples.get(&g) else {
            println!(
                "| {} | skipped | | | | | not run: for (c), `../shared/peers/cleanup-controller` not present (BENCH_PEER_CLEANUP unset or missing); or left out by BENCH_REGIMES |",
                label(g)
            );
            continue;
        };
        let stored = v
            .iter()
            .filter_map(|s| s.stored)
            .map(|n| format!("{n}/{count}"))
            .collect::<Vec<_>>()
            .join(", ");
        let notes = v
            .iter()
            .map(|s| s.notes.as_str())
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            label(g),
            secs(g),
            secs(g) / a,
            cpu(g, "kube-apiserver"),
            total(g),
            if stored.is_empty() { "-".into() } else { stored },
            notes
        );
    }
    println!("\nPer round (seconds; CPU seconds by process over the same window, from /proc/<pid>/stat):\n");
    println!("| round | regime | seconds | profile |\n|---|---|---|---|");
    for (g, v) in samples {
        for (i, s) in v.iter().enumerate() {
            println!("| {} | ({g}) | {:.2} | {} |", i + 1, s.secs, s.profile);
        }
    }
    let d_b = secs('d') / secs('b');
    let all_stored = samples
        .iter()
        .filter(|(g, _)| **g == 'c' || **g == 'd')
        .flat_map(|(_, v)| v.iter())
        .all(|s| s.stored == Some(count as i64));
    let met = |b: bool| if b { "yes" } else { "**no**" };
    println!(
        "TARGET\tmass cleanup of {count}: audit-guard (d) vs the protocol's floor (b)\t(d)/(b) ≤ 1.0\t{:.2} s / {:.2} s = {d_b:.2}× ((d)/(a) {:.2}×){}\t{}\t{d_b}\t<=\t1.0\t{}",
        secs('d'),
        secs('b'),
        secs('d') / a,
        if all_stored { "" } else { "; records missing" },
        met(d_b <= 1.0 && all_stored),
        u8::from(all_stored)
    );
    if have_peer {
        let d_c = secs('d') / secs('c');
        println!(
            "TARGET\tmass cleanup of {count}: audit-guard (d) vs controller-runtime peer (c)\t(d)/(c) ≤ 0.7\t{:.2} s / {:.2} s = {d_c:.2}×\t{}\t{d_c}\t<=\t0.7\t{}",
            secs('d'),
            secs('c'),
            met(d_c <= 0.7 && all_stored),
            u8::from(all_stored)
        );
    } else {
        println!("TARGET\tmass cleanup: audit-guard (d) vs controller-runtime peer (c)\t(d)/(c) ≤ 0.7\tskipped: ../shared/peers/cleanup-controller not present\t-");
    }
}

/// How the cleanup's cost grows with its size: (b) and (d) at each size, and whether (d)/(b)
/// at the largest stays within 10% of (d)/(b) at the smallest.
fn report_curve(curve: &[(usize, f64, f64)]) {
    println!("\nMass cleanup by size (medians of the rounds; (a) and (c) at the first size only):\n");
    println!("| SignalProcessings | (b) floor, s | (d) audit-guard, s | (d)/(b) |\n|---|---|---|---|");
    for (size, b, d) in curve {
        println!("| {size} | {b:.2} | {d:.2} | {:.2} |", d / b);
    }
    if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
        if curve.len() > 1 {
            let growth = (last.2 / last.1) / (first.2 / first.1);
            println!(
                "TARGET\tmass cleanup: (d)/(b) at {} within 10% of (d)/(b) at {}\t≤ 1.10×\t{:.2} vs {:.2} = {growth:.2}×\t{}\t{growth}\t<=\t1.10\t1",
                last.0,
                first.0,
                last.2 / last.1,
                first.2 / first.1,
                if growth <= 1.10 { "yes" } else { "**no**" }
            );
        }
    }
}
