//! `make run`: the local quickstart. Starts a real control plane, Data Storage on its
//! embedded SQLite file, `audit-guard serve` (webhook + controller) with generated
//! certificates, installs the CRD and both webhook configurations, runs a short demo, and
//! keeps everything running until Ctrl-C.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

use anyhow::{bail, Context, Result};
use audit_guard::webhook::registration;
use audit_guard_harness::ControlPlane;
use base64::Engine;

const DATASTORAGE: &str = "127.0.0.1:8085";
const WEBHOOK: &str = "127.0.0.1:9443";
const HEALTH: &str = "127.0.0.1:8081";
const METRICS: &str = "127.0.0.1:8080";

fn say(msg: &str) {
    println!(">> {msg}");
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run = root.join(".run");
    let _ = fs::remove_dir_all(&run);
    fs::create_dir_all(run.join("bin"))?;
    let bin = PathBuf::from(std::env::var("AUDIT_GUARD_BIN").context("AUDIT_GUARD_BIN (the audit-guard binary) not set; use `make run`")?);
    for addr in [DATASTORAGE, WEBHOOK, HEALTH, METRICS] {
        if std::net::TcpListener::bind(addr).is_err() {
            bail!("{addr} is in use; stop whatever listens there (an earlier `make run`?) and try again");
        }
    }

    say("starting etcd, kube-apiserver and kube-controller-manager");
    let cp = ControlPlane::start()?;
    fs::copy(&cp.kubeconfig, run.join("kubeconfig"))?;
    fs::copy(cp.bin_dir.join("kubectl"), run.join("bin/kubectl"))?;
    let kubectl = |args: &[&str]| cp.kubectl(args);

    say("generating the webhook CA and serving certificate");
    let certs = run.join("certs");
    check(
        Command::new(&bin)
            .args(["certs", "--extra-san", "127.0.0.1,localhost", "--out-dir"])
            .arg(&certs),
    )?;

    say("starting Data Storage on SQLite (.run/data/audit.db)");
    let token = format!("qs-{}", uuid::Uuid::new_v4().simple());
    fs::write(run.join("datastorage.token"), &token)?;
    fs::write(
        run.join("tokens.csv"),
        format!("{token},audit-guard,1,\"audit-guard:datastorage-writers\"\n"),
    )?;
    let mut ds = Command::new(&bin);
    ds.args(["datastorage", "--plain-http", "--listen", DATASTORAGE, "--data-dir"])
        .arg(run.join("data"))
        .arg("--tokens-file")
        .arg(run.join("tokens.csv"));
    cp.spawn("datastorage", ds)?;
    common::wait_http(&format!("http://{DATASTORAGE}/readyz"), Duration::from_secs(30))?;

    say("installing the SignalProcessing CRD");
    let crd = run.join("crd.yaml");
    fs::write(&crd, output(Command::new(&bin).arg("crd"))?)?;
    kubectl(&["apply", "-f", path(&crd)])?;
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/signalprocessings.kubernaut.ai",
        "--timeout=30s",
    ])?;
    kubectl(&["create", "namespace", "audit-guard"])?;

    say("starting audit-guard serve (webhook on 127.0.0.1:9443, controller, buffered writer)");
    let mut serve = Command::new(&bin);
    serve
        .env("KUBECONFIG", &cp.kubeconfig)
        .args([
            "serve",
            "--webhook-addr",
            WEBHOOK,
            "--health-addr",
            HEALTH,
            "--metrics-addr",
            METRICS,
        ])
        .args([
            "--datastorage-url",
            &format!("http://{DATASTORAGE}"),
            "--lease-namespace",
            "audit-guard",
            "--identity",
            "quickstart",
        ])
        // The quickstart's admin user is the controller here; in a cluster it is the ServiceAccount.
        .args(["--controller-identity", "admin", "--cert-dir"])
        .arg(&certs)
        // Mutual TLS as the overlays ship it: the control plane's admission configuration
        // presents a client certificate this CA signed.
        .arg("--client-ca-file")
        .arg(&cp.webhook_client_ca)
        .arg("--datastorage-token-file")
        .arg(run.join("datastorage.token"))
        // Data Storage listens on loopback without TLS here: the token never leaves the machine.
        .arg("--datastorage-allow-plain-http-token");
    cp.spawn("audit-guard", serve)?;
    common::wait_http(&format!("http://{HEALTH}/readyz"), Duration::from_secs(30))?;

    say("registering the mutating and validating webhooks");
    let ca = base64::engine::general_purpose::STANDARD.encode(fs::read(certs.join("ca.crt"))?);
    let webhooks = run.join("webhooks.json");
    fs::write(&webhooks, webhook_configs(&ca)?)?;
    kubectl(&["apply", "-f", path(&webhooks)])?;

    demo(&cp, &token)?;

    println!();
    println!("quickstart ready");
    println!("  kubectl:       .run/bin/kubectl --kubeconfig .run/kubeconfig get signalprocessings -A");
    println!("  Data Storage:  curl -H \"Authorization: Bearer $(cat .run/datastorage.token)\" http://{DATASTORAGE}/api/v1/audit/signal-processing");
    println!("  webhook:       https://{WEBHOOK} (CA .run/certs/ca.crt); health http://{HEALTH}/readyz; metrics http://{METRICS}/metrics");
    println!("  logs:          {}/*.log", cp.dir.display());
    println!("Ctrl-C stops everything.");
    wait_for_ctrl_c();
    say("stopping");
    Ok(())
}

fn demo(cp: &ControlPlane, token: &str) -> Result<()> {
    say("demo: creating SignalProcessing demo/sp-demo");
    let _ = cp.kubectl(&["create", "namespace", "demo"]);
    let manifest = cp.dir.join("sp-demo.yaml");
    fs::write(
        &manifest,
        "apiVersion: kubernaut.ai/v1alpha1\nkind: SignalProcessing\nmetadata:\n  name: sp-demo\n  namespace: demo\nspec:\n  remediationRequestRef:\n    name: rr-demo\n  signal:\n    fingerprint: mem-pressure-prod-123\n    name: HighMemoryUsage\n    severity: critical\n",
    )?;
    cp.kubectl(&["apply", "-f", path(&manifest)])?;
    let finalizers = cp.kubectl(&["get", "sp", "sp-demo", "-n", "demo", "-o", "jsonpath={.metadata.finalizers}"])?;
    say(&format!("demo: finalizers after create: {finalizers}"));
    let uid = cp.kubectl(&["get", "sp", "sp-demo", "-n", "demo", "-o", "jsonpath={.metadata.uid}"])?;
    say("demo: completing it (status.phase=Completed)");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = format!(
        r#"{{"status":{{"phase":"Completed","startTime":"{now}","completionTime":"{now}","environmentClassification":{{"environment":"Production","source":"namespace-labels","classifiedAt":"{now}"}},"priorityAssignment":{{"priority":"P1","source":"rego-policy","assignedAt":"{now}"}}}}}}"#
    );
    cp.kubectl(&[
        "patch",
        "sp",
        "sp-demo",
        "-n",
        "demo",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])?;
    say("demo: deleting it; audit-guard stores the record, then removes its finalizer");
    cp.kubectl(&["delete", "sp", "sp-demo", "-n", "demo", "--wait=true", "--timeout=60s"])?;
    let url = format!("http://{DATASTORAGE}/api/v1/audit/signal-processing/{uid}");
    let record = output(Command::new("curl").args(["-sf", "-H", &format!("Authorization: Bearer {token}"), &url]))?;
    say(&format!("demo: the stored audit record ({url}):"));
    let pretty = serde_json::from_slice::<serde_json::Value>(&record)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default();
    println!("{pretty}");
    Ok(())
}

fn webhook_configs(ca: &str) -> Result<String> {
    // Every namespace, as shipped.
    let (mutating, validating) = registration::url_configurations("audit-guard", &format!("https://{WEBHOOK}"), ca, None);
    Ok(serde_json::to_string(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [mutating, validating]}),
    )?)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn check(cmd: &mut Command) -> Result<()> {
    output(cmd).map(|_| ())
}

fn output(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

#[allow(unsafe_code)]
fn wait_for_ctrl_c() {
    // SIGINT/SIGTERM end the process; the control plane and services die with it
    // (PR_SET_PDEATHSIG), so blocking until a signal arrives is all that is left to do.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
}
