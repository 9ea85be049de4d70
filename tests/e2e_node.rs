//! The shipped manifests run as pods on a real node, and the lifecycle passes through them.
//!
//! One control plane (etcd, kube-apiserver with the Node authorizer, kube-controller-manager)
//! and one node (containerd + runc + CNI bridge, kubelet, kube-scheduler, kube-proxy in
//! iptables mode, kube-router as NetworkPolicy firewall, CoreDNS), all built here
//! (`controlplane/build.sh`, `controlplane/build.sh node`); the audit-guard image from
//! `make image`; the self-managed overlay as `make certs` + `kubectl apply -k` install it. Data
//! Storage's PostgreSQL is a server of the node's own on the host, reached by the pods through
//! the Service the Secret's URL names (a Service without selector).
//!
//! Everything that uses the node is in this one test, run scenario by scenario; the node is
//! torn down (processes, mounts, netns, bridge, iptables, ipsets, cgroups, sysctls) when the
//! test ends, passed, failed or panicked. Scenarios print what they saw; nothing is timed.

mod support;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use audit_guard::crd::{SignalProcessing, FINALIZER};
use audit_guard_harness::controlplane::{ControlPlane, Options};
use audit_guard_harness::node::{self, Node, NodePostgres, NODE_NAME};
use futures::future::join_all;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::node::*;
use support::{fresh_namespace, install_monitoring_crds, wait_for};

/// What an install left for the scenarios.
struct Installed<'a> {
    cp: &'a ControlPlane,
    node: &'a Node<'a>,
    client: kube::Client,
    /// The objects installed (the overlay as applied, or the chart's manifest).
    docs: Vec<Value>,
    /// What `kubectl delete -f` takes to remove it again.
    applied: std::path::PathBuf,
    reader: DataStorageReader,
}

type Outcome = Result<String, String>;

#[test]
fn the_shipped_manifests_run_as_pods_on_a_real_node_and_the_lifecycle_passes_through_them() {
    let started = Instant::now();
    let ip = node::host_ip().unwrap();
    let cp = ControlPlane::start_with(Options {
        node_ip: Some(ip),
        ..Default::default()
    })
    .unwrap();
    let node = Node::start(&cp).unwrap();
    println!(
        "node {NODE_NAME} Ready {:.1}s after kubelet started",
        node.ready_after.as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results: Vec<(String, Outcome, Duration)> = Vec::new();
    let mut run = |name: String, fut: &mut dyn FnMut() -> Result<String>| {
        let t = Instant::now();
        println!("\n=== scenario {name}");
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(fut)) {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(p) => Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())),
        };
        match &outcome {
            Ok(s) => println!("=== scenario {name}: ok ({:.1}s)\n{s}", t.elapsed().as_secs_f64()),
            Err(e) => println!("=== scenario {name}: FAILED ({:.1}s)\n{e}", t.elapsed().as_secs_f64()),
        }
        results.push((name, outcome.clone(), t.elapsed()));
        outcome.is_ok()
    };

    // The admin's machine: the passwords they chose and the directory their keys stay in (both installs).
    let admin = Admin::new(&cp).unwrap();
    // The node's PostgreSQL, for the database the manifests' Secret names (both installs).
    let mut pg: Option<(NodePostgres, Vec<reqwest::Url>)> = None;
    let mut installed = None;
    let ok = run(
        "1 install: the README's kustomize commands, pods Ready, runtime enforcement, webhook through the Service".into(),
        &mut || {
            let i = rt.block_on(install_overlay(&cp, &node, &admin, &mut pg))?;
            let mut summary = rt.block_on(check_install(&i))?;
            summary.push('\n');
            summary.push_str(&rt.block_on(kubelet_enforces(&i))?);
            installed = Some(i);
            Ok(summary)
        },
    );
    if ok {
        scenarios(&mut run, &rt, installed.as_ref().unwrap(), "");
        run(
            "9 upgrade as the README says: kubectl apply -k manifests/overlays/self-managed".into(),
            &mut || rt.block_on(upgrade_as_the_readme_says(installed.as_ref().context("no overlay install")?, false)),
        );
        run(
            "6 alerts on a live scrape: every serve pod gone, promtool says AuditGuardServeDown and AuditGuardNoLeader fire; silent again once back".into(),
            &mut || rt.block_on(alerts_on_a_live_scrape(installed.as_ref().context("no overlay install")?)),
        );
        run(
            "8 audit-guard verify through kubectl port-forward with --tls-server-name, as docs/auditors.md says".into(),
            &mut || rt.block_on(verify_through_port_forward(installed.as_ref().context("no overlay install")?)),
        );
    }
    // 4: the same through the Helm chart, in place of the kustomize install.
    let mut chart = None;
    let ok = run(
        "4 the Helm chart: the README's kustomize uninstall, its helm install, pods Ready, helm test".into(),
        &mut || {
            let previous = installed.take().context("the overlay install failed")?;
            let i = rt.block_on(install_chart(previous, &admin, pg.as_ref()))?;
            let summary = rt.block_on(check_install(&i))?;
            chart = Some(i);
            Ok(summary)
        },
    );
    if ok {
        scenarios(&mut run, &rt, chart.as_ref().unwrap(), " (Helm chart)");
        run(
            "9 upgrade as the README says: helm upgrade --reuse-values (Helm chart)".into(),
            &mut || rt.block_on(upgrade_as_the_readme_says(chart.as_ref().context("no chart install")?, true)),
        );
        run(
            "7 helm uninstall refused by the pre-delete check while a SignalProcessing is deleting, then proceeds".into(),
            &mut || rt.block_on(uninstall_refused_while_deleting(chart.as_ref().context("no chart install")?)),
        );
    }
    drop(chart);
    drop(installed);
    drop(rt);
    drop(pg);
    let teardown = Instant::now();
    drop(node);
    println!("\nnode torn down in {:.1}s", teardown.elapsed().as_secs_f64());
    println!("\n{:<90} {:>8}  result", "scenario", "seconds");
    for (name, outcome, took) in &results {
        let r = match outcome {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("FAILED: {}", e.lines().next().unwrap_or_default()),
        };
        println!("{name:<90} {:>8.1}  {r}", took.as_secs_f64());
    }
    println!("e2e-node total {:.1}s", started.elapsed().as_secs_f64());
    let failed: Vec<&String> = results.iter().filter(|r| r.1.is_err()).map(|r| &r.0).collect();
    assert!(failed.is_empty(), "scenarios failed: {failed:?}");
}

/// Scenarios 2, 5, 3a and 3b on an install.
fn scenarios(
    run: &mut impl FnMut(String, &mut dyn FnMut() -> Result<String>) -> bool,
    rt: &tokio::runtime::Runtime,
    i: &Installed,
    via: &str,
) {
    run(format!("2 lifecycle through the pods{via}"), &mut || rt.block_on(lifecycle(i)));
    run(format!("5 NetworkPolicies enforced by kube-router{via}"), &mut || {
        rt.block_on(network_policies(i))
    });
    run(format!("3a leader pod deleted during a 200-CR mass deletion{via}"), &mut || {
        rt.block_on(leader_deleted_during_mass_deletion(i))
    });
    run(format!("3b rollout restart of the webhook during 200 creates{via}"), &mut || {
        rt.block_on(rollout_restart_during_creates(i))
    });
}

/// Imports the `make image` archive as every image reference the Deployments name.
fn import_images(node: &Node, docs: &[Value]) -> Result<()> {
    let archive = node::audit_guard_image()?;
    let mut images: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .flat_map(|d| d["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["image"].as_str().map(String::from))
        .collect();
    images.sort();
    images.dedup();
    for image in &images {
        node.import_image(&archive, image)?;
        println!("imported {} as {image}", archive.display());
    }
    Ok(())
}

fn wait_rollouts(cp: &ControlPlane) -> Result<()> {
    for deploy in ["audit-guard", "audit-guard-datastorage"] {
        let target = format!("deployment/{deploy}");
        cp.kubectl(&["rollout", "status", "-n", NAMESPACE, &target, "--timeout=240s"])
            .map_err(|e| {
                let pods = cp.kubectl(&["get", "pods", "-n", NAMESPACE, "-o", "wide"]).unwrap_or_default();
                let events = cp.kubectl(&["get", "events", "-n", NAMESPACE]).unwrap_or_default();
                anyhow::anyhow!("{e:#}\n{pods}\n{events}")
            })?;
    }
    Ok(())
}

/// `make certs` + `kubectl apply -k manifests/overlays/self-managed` (with the overrides named
/// and printed, if any), the PostgreSQL the Secret names, every pod Ready.
async fn install_overlay<'a>(
    cp: &'a ControlPlane,
    node: &'a Node<'a>,
    admin: &Admin,
    pg: &mut Option<(NodePostgres, Vec<reqwest::Url>)>,
) -> Result<Installed<'a>> {
    let client = cp.client().await?;
    let mut docs = render(cp)?;
    import_images(node, &docs)?;
    // The overlay ships a ServiceMonitor and a PrometheusRule: stand-ins for the Prometheus
    // Operator's CRDs, as on a cluster that runs it.
    install_monitoring_crds(&client).await;
    let overrides = overrides(&docs)?;
    for o in &overrides {
        println!("OVERRIDE {}: {}", o.name, o.why);
        (o.apply)(&mut docs);
    }
    // The namespace, the Secrets and the keys as the README's "Secrets and keys" has the admin
    // make them; then the database those Secrets name, before Data Storage starts.
    let urls = readme_secrets(cp, admin, false)?;
    let server = database_for(node, &urls)?;
    database_services(cp, &urls, &server)?;
    *pg = Some((server, urls));

    let applied = cp.dir.join("self-managed-as-applied.yaml");
    std::fs::write(&applied, to_yaml(&docs)?)?;
    if overrides.is_empty() {
        // The README's kustomize install, the self-managed overlay's line and the wait.
        for command in readme_commands("install-kustomize")? {
            if command.contains("apply -k") && !command.contains(&format!("overlays/{README_OVERLAY}")) {
                continue;
            }
            let out = run_readme_ok(cp, &command)?;
            println!("{}", out.trim());
        }
    } else {
        let out = cp.kubectl(&["apply", "-f", applied.to_str().context("path")?])?;
        println!(
            "kubectl apply -f {} (the overlay with the overrides above):\n{out}",
            applied.display()
        );
    }
    ready(cp, node, client, docs, applied).await
}

/// Removes the overlay's install (its SignalProcessings first, so the controller stores their
/// records), then `helm install` of charts/audit-guard in the same namespace, with the same
/// database Secret, every pod Ready.
async fn install_chart<'a>(
    previous: Installed<'a>,
    admin: &Admin,
    pg: Option<&(NodePostgres, Vec<reqwest::Url>)>,
) -> Result<Installed<'a>> {
    let Installed {
        cp, node, client, applied, ..
    } = previous;
    let (server, urls) = pg.context("no database from the overlay install")?;
    // As the README's "Uninstall" says: the SignalProcessings released by audit-guard first,
    // then its kustomize commands; what the overlay installed is gone but the CRD.
    cp.kubectl(&["delete", "signalprocessings", "--all", "-A", "--timeout=300s"])?;
    for command in readme_commands("uninstall-kustomize")? {
        if command.contains("-n kubernaut") {
            continue;
        }
        let out = run_readme_ok(cp, &command)?;
        println!("{}", out.trim());
    }
    let left = cp.kubectl(&["get", "-f", applied.to_str().context("path")?, "--ignore-not-found", "-o", "name"])?;
    ensure!(
        left.trim() == "customresourcedefinition.apiextensions.k8s.io/signalprocessings.kubernaut.ai",
        "after the README's kustomize uninstall, left besides the CRD:\n{left}"
    );
    cp.kubectl(&["delete", "crd", "signalprocessings.kubernaut.ai", "--timeout=120s"])?;
    println!("the overlay's install removed as the README says (its SignalProcessings released first); the CRD deleted by the test for a clean Helm install");

    // The README's "Secrets and keys" again (the namespace went with the kustomize uninstall), with
    // the keys the admin already holds, and the database Service.
    let again = readme_secrets(cp, admin, true)?;
    ensure!(&again == urls, "the README's Secrets name other database URLs the second time");
    database_services(cp, urls, server)?;

    let kubeconfig = cp.kubeconfig.to_str().context("path")?;
    // The opt-in pre-delete check, for scenario 6.
    let mut values = vec!["--set preDeleteCheck.enabled=true".to_string()];
    if audience_override_needed()? {
        let audience = audit_guard_harness::controlplane::SERVICE_ACCOUNT_ISSUER;
        println!("OVERRIDE datastorage-token-audience-until-issue-11: --set datastorage.tokenAudience={audience}");
        values.push(format!("--set datastorage.tokenAudience={audience}"));
    }
    // The README's `helm install`, with the test's values appended; `helm template` with the same
    // flags says which images to import first.
    let install = format!("{} {}", readme_command("install-helm", "helm install")?, values.join(" "));
    let template = install.replacen("helm install", "helm template", 1);
    let docs = parse_docs(&run_readme_ok(cp, &template)?)?;
    import_images(node, &docs)?;
    let out = run_readme_ok(cp, &install)?;
    println!("{}", out.trim());
    let applied = cp.dir.join("chart-as-installed.yaml");
    std::fs::write(&applied, to_yaml(&docs)?)?;
    let installed = ready(cp, node, client, docs, applied).await?;
    // `helm test`: a SignalProcessing created through the webhook and deleted, gone only once its
    // record is stored and the finalizer is off. Once the pods are Ready the Service's rules may
    // still be on their way to the node (connection refused): a few tries, 5 s apart.
    let mut tries = 0;
    let test = loop {
        tries += 1;
        let test = std::process::Command::new(tools::helm())
            .args([
                "test",
                "audit-guard",
                "--namespace",
                NAMESPACE,
                "--kubeconfig",
                kubeconfig,
                "--timeout=2m",
            ])
            .output()?;
        if test.status.success() || tries == 6 {
            break test;
        }
        println!("helm test, try {tries}: {}", String::from_utf8_lossy(&test.stderr).trim());
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    };
    ensure!(
        test.status.success(),
        "helm test: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    println!("helm test audit-guard:\n{}", String::from_utf8_lossy(&test.stdout));
    Ok(installed)
}

/// The admin of the walk-through: the passwords they chose and the directory on their machine
/// where they run the README's commands and keep the key files `audit-guard keys` writes.
struct Admin {
    dir: std::path::PathBuf,
    owner_password: String,
    runtime_password: String,
}

impl Admin {
    fn new(cp: &ControlPlane) -> Result<Self> {
        let dir = cp.dir.join("admin");
        std::fs::create_dir_all(&dir)?;
        // PostgreSQL's CA, as the README's `--from-file=ca.crt=postgresql-ca.crt` expects it here:
        // the node's PostgreSQL serves a certificate of the cluster's CA.
        std::fs::write(dir.join("postgresql-ca.crt"), &cp.ca_pem)?;
        let password = || format!("{:032x}", rand::random::<u128>());
        Ok(Self {
            dir,
            owner_password: password(),
            runtime_password: password(),
        })
    }
}

/// The README's "Secrets and keys" block, run as written in the admin's directory with its
/// placeholders filled: the passwords, and the CA of the API server's admission client
/// certificate (the control plane's AdmissionConfiguration presents one). With `keys_made`, the
/// admin already holds the keys from an earlier install and leaves out the `audit-guard keys`
/// line (it never overwrites a key; the log's key must stay the one auditors were given).
/// Returns the database URLs the Secrets hold, the owner's first (its role owns the database).
fn readme_secrets(cp: &ControlPlane, admin: &Admin, keys_made: bool) -> Result<Vec<reqwest::Url>> {
    let client_ca = cp.webhook_client_ca.to_str().context("path")?;
    let mut urls = Vec::new();
    for command in readme_commands("secrets")? {
        if keys_made && command.starts_with("audit-guard keys") {
            println!("README $ {command}   (left out: the admin keeps the keys made the first time)");
            continue;
        }
        let command = command
            .replace("<owner password>", &admin.owner_password)
            .replace("<runtime password>", &admin.runtime_password)
            .replace("<CA of the API server's client certificate>", client_ca);
        ensure!(
            !(command.contains('<') && command.contains('>')),
            "README secrets: a placeholder the walk-through does not know: {command}"
        );
        let out = run_readme_in(cp, &admin.dir, &command)?;
        ensure!(out.0, "README command failed: {command}\n{}", out.1);
        println!("{}", out.1.trim());
        if let Some(url) = command.split("--from-literal=url=").nth(1) {
            let url = reqwest::Url::parse(url.trim().trim_matches('"'))?;
            let owner = command.contains("create secret generic audit-guard-datastorage-db-owner ");
            urls.insert(if owner { 0 } else { urls.len() }, url);
        }
    }
    ensure!(
        urls.len() == 2,
        "README secrets: {} database URLs, expected the runtime role's and the owner's",
        urls.len()
    );
    Ok(urls)
}

/// The overlay the README's `<overlay>` stands for here, and so which of its `kubectl apply -k`
/// alternatives the walk-through runs.
const README_OVERLAY: &str = "self-managed";

/// What the walk-through changes in the README's commands, each for a reason:
/// - `<overlay>` is `self-managed` (the node has no cert-manager, no Kubernaut, no CloudNativePG);
///   of the install block's alternatives only that overlay's line runs;
/// - `helm install` gets `--set preDeleteCheck.enabled=true` (scenario 7) and, while Data Storage
///   has no `--token-audience`, the API server's audience;
/// - the kustomize uninstall leaves out the kubernaut overlay's RoleBinding line, and the test
///   then deletes the CRD itself, so that the Helm install starts from a clean cluster;
/// - the images the README's install names are imported on the node (no registry here);
/// - `make certs` uses the test's binary (`AUDIT_GUARD_BIN`) instead of building one.
/// - the "Secrets and keys" block's placeholders are filled by [`readme_secrets`].
fn readme_commands(step: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("README.md"))?;
    let marker = format!("<!-- e2e-node: {step} -->");
    let mut lines = text.lines().skip_while(|l| l.trim() != marker).skip(1);
    ensure!(
        lines.next().is_some_and(|l| l.trim_start().starts_with("```")),
        "README.md: no code block right after {marker}"
    );
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in lines.take_while(|l| !l.trim_start().starts_with("```")) {
        let line = without_comment(line).trim();
        if let Some(continued) = line.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let command = current.trim().replace("<overlay>", README_OVERLAY);
        current.clear();
        if !command.is_empty() {
            commands.push(command);
        }
    }
    ensure!(!commands.is_empty(), "README.md: the block after {marker} holds no command");
    Ok(commands)
}

/// A shell line without its `# comment` (a `#` after a blank, outside quotes).
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return &line[..at],
            _ => {}
        }
        previous = c;
    }
    line
}

/// Runs one of the README's commands as a user would at the repository's root, with kubectl,
/// helm and audit-guard on PATH and the control plane's kubeconfig: success and output.
fn run_readme(cp: &ControlPlane, command: &str) -> Result<(bool, String)> {
    run_readme_in(cp, &repo(), command)
}

/// [`run_readme`] in the directory `dir`.
fn run_readme_in(cp: &ControlPlane, dir: &std::path::Path, command: &str) -> Result<(bool, String)> {
    let bin = cp.dir.join("readme-bin");
    std::fs::create_dir_all(&bin)?;
    for (name, target) in [
        ("kubectl", tools::kubectl()),
        ("helm", tools::helm().to_path_buf()),
        ("audit-guard", std::path::PathBuf::from(env!("CARGO_BIN_EXE_audit-guard"))),
    ] {
        let link = bin.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(target, link)?;
        }
    }
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&inherited)))?;
    println!("README $ {command}");
    let out = std::process::Command::new("bash")
        .args(["-c", command])
        .current_dir(dir)
        .env("PATH", path)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("AUDIT_GUARD_BIN", env!("CARGO_BIN_EXE_audit-guard"))
        .output()?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

/// [`run_readme`], which must succeed; its output.
fn run_readme_ok(cp: &ControlPlane, command: &str) -> Result<String> {
    let (ok, out) = run_readme(cp, command)?;
    ensure!(ok, "README command failed: {command}\n{out}");
    Ok(out)
}

/// The one command of a README block that starts with `prefix`.
fn readme_command(step: &str, prefix: &str) -> Result<String> {
    let mut found: Vec<String> = readme_commands(step)?.into_iter().filter(|c| c.starts_with(prefix)).collect();
    ensure!(found.len() == 1, "README {step}: {} commands start with {prefix:?}", found.len());
    Ok(found.remove(0))
}

/// Acceptance 4 (upgrade): the README's upgrade command for this install, then every pod
/// Ready again and a SignalProcessing still admitted with the finalizer and released once stored.
async fn upgrade_as_the_readme_says(i: &Installed<'_>, helm: bool) -> Result<String> {
    let cp = i.cp;
    let command = readme_command("upgrade", if helm { "helm upgrade" } else { "kubectl apply -k" })?;
    let out = run_readme_ok(cp, &command)?;
    wait_rollouts(cp)?;
    let ns = fresh_namespace(&i.client, "upgraded").await?;
    let api: Api<SignalProcessing> = Api::namespaced(i.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &signal_processing("sp-upgraded", "rr-upgrade")?)
        .await?;
    ensure!(
        created.has_finalizer(),
        "after the upgrade a create came back without the finalizer"
    );
    let uid = created.metadata.uid.clone().context("uid")?;
    api.delete("sp-upgraded", &DeleteParams::default()).await?;
    wait_for("sp-upgraded to be gone", Duration::from_secs(120), || async {
        Ok(api.get_opt("sp-upgraded").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(i.reader.record(&uid).await?.is_some(), "no record of sp-upgraded");
    Ok(format!(
        "$ {command}\n{}\nboth Deployments rolled out; a create got {FINALIZER}, its deletion stored the record and released it",
        out.trim()
    ))
}

/// Scales a Deployment of the install and waits until exactly `replicas` of its pods exist (none
/// still terminating), each Ready.
async fn scale(cp: &ControlPlane, deployment: &str, replicas: usize) -> Result<()> {
    cp.kubectl(&[
        "scale",
        &format!("deployment/{deployment}"),
        "-n",
        NAMESPACE,
        &format!("--replicas={replicas}"),
    ])?;
    let selector = format!("app.kubernetes.io/name={deployment}");
    wait_for(&format!("{deployment} at {replicas} pods"), Duration::from_secs(180), || async {
        let list = get_json(cp, &["get", "pods", "-n", NAMESPACE, "-l", &selector])?;
        let pods = list["items"].as_array().cloned().unwrap_or_default();
        let settled = pods.len() == replicas && pods.iter().all(|p| p["metadata"]["deletionTimestamp"].is_null() && pod_ready(p));
        Ok(settled.then_some(()))
    })
    .await
}

/// The samples of a Prometheus text exposition: (metric name, labels without braces, value).
/// Non-finite values are left out (promtool's series notation has no +Inf).
fn samples(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, rest) = match line.rfind('}') {
            Some(close) => (&line[..=close], &line[close + 1..]),
            None => line.split_once(' ').unwrap_or((line, "")),
        };
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        out.push((name.to_string(), labels.to_string(), value));
    }
    out
}

/// What Prometheus would hold after scraping the install's pods the way the shipped
/// ServiceMonitors do (job = the app label; `up` and every sample with the target's labels),
/// and the API server's `apiserver_admission_webhook_*` (job apiserver). A pod that is gone is
/// no target at all, as when it leaves service discovery.
fn live_scrape(cp: &ControlPlane) -> Result<Vec<(String, f64)>> {
    let mut series = Vec::new();
    let mut target = |job: &str, pod: &str, instance: &str, text: &str, keep: &dyn Fn(&str) -> bool| {
        let target = format!("job=\"{job}\",namespace=\"{NAMESPACE}\",pod=\"{pod}\",instance=\"{instance}\"");
        series.push((format!("up{{{target}}}"), 1.0));
        for (name, labels, value) in samples(text).into_iter().filter(|(n, _, _)| keep(n)) {
            let sep = if labels.is_empty() { "" } else { "," };
            series.push((format!("{name}{{{target}{sep}{labels}}}"), value));
        }
    };
    for (app, port, scheme) in [("audit-guard", 8080, ""), ("audit-guard-datastorage", 8085, "https:")] {
        for p in pods_of(cp, NAMESPACE, app)? {
            let text = pod_metrics(cp, NAMESPACE, &format!("{scheme}{}", name(&p)), port)?;
            let instance = format!("{}:{port}", p["status"]["podIP"].as_str().unwrap_or_default());
            target(app, &name(&p), &instance, &text, &|_| true);
        }
    }
    let apiserver = cp.kubectl(&["get", "--raw", "/metrics"])?;
    target("apiserver", "", "apiserver", &apiserver, &|n| {
        n.starts_with("apiserver_admission_webhook_")
    });
    Ok(series)
}

/// A promtool test case: the scrape held for 15 minutes, each alert expected firing (with the
/// rule's own labels and annotations) or silent at minute 10.
fn promtool_case(name: &str, scrape: &[(String, f64)], rules: &Value, expect: &[(&str, bool)]) -> Result<Value> {
    let input: Vec<Value> = scrape
        .iter()
        .map(|(s, v)| json!({ "series": s, "values": format!("{v}x15") }))
        .collect();
    let mut tests = Vec::new();
    for (alert, fires) in expect {
        let rule = tools::alerts(rules)
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| r["alert"] == *alert)
            .with_context(|| format!("no alert {alert} in the shipped rules"))?;
        let exp = if *fires {
            json!([{ "exp_labels": rule["labels"], "exp_annotations": rule["annotations"] }])
        } else {
            json!([])
        };
        tests.push(json!({ "eval_time": "10m", "alertname": alert, "exp_alerts": exp }));
    }
    Ok(json!({ "name": name, "interval": "1m", "input_series": input, "alert_rule_test": tests }))
}

/// Acceptance 2 (the real-scrape half): every serve pod killed (scaled to 0), the live pods and
/// the API server scraped, the shipped rules evaluated by promtool on that scrape: the
/// absent-target and no-leader alerts fire, Data Storage's does not; back at full strength, a
/// second scrape leaves all three silent.
async fn alerts_on_a_live_scrape(i: &Installed<'_>) -> Result<String> {
    let cp = i.cp;
    let mut lines = Vec::new();
    let replicas = pods_of(cp, NAMESPACE, "audit-guard")?.len();
    scale(cp, "audit-guard", 0).await?;
    let outage = async {
        // A create while no webhook answers: the API server counts the failed call.
        let ns = fresh_namespace(&i.client, "alerts").await?;
        let api: Api<SignalProcessing> = Api::namespaced(i.client.clone(), &ns);
        let refused = api
            .create(&PostParams::default(), &signal_processing("sp-refused", "rr-alerts")?)
            .await;
        ensure!(refused.is_err(), "a create was admitted with no serve pod running");
        live_scrape(cp)
    }
    .await;
    scale(cp, "audit-guard", replicas).await?;
    let outage = outage?;
    wait_for("a leader", Duration::from_secs(60), || async {
        Ok(Some(leader(cp)?).filter(|l| !l.is_empty()))
    })
    .await?;
    let healthy = wait_for("the leader's audit_guard_leader 1", Duration::from_secs(60), || async {
        let scrape = live_scrape(cp)?;
        Ok(scrape
            .iter()
            .any(|(s, v)| s.starts_with("audit_guard_leader{") && *v == 1.0)
            .then_some(scrape))
    })
    .await?;
    let count = |scrape: &[(String, f64)], prefix: &str| scrape.iter().filter(|(s, _)| s.starts_with(prefix)).count();
    let failed_calls: f64 = outage
        .iter()
        .filter(|(s, _)| s.starts_with("apiserver_admission_webhook_rejection_count{") && s.contains("calling_webhook_error"))
        .map(|(_, v)| v)
        .sum();
    lines.push(format!(
        "outage scrape: {} series; up targets: {} serve, {} Data Storage, 1 API server ({} apiserver_admission_webhook_* series, {failed_calls} calls failing with calling_webhook_error)",
        outage.len(),
        count(&outage, "up{job=\"audit-guard\""),
        count(&outage, "up{job=\"audit-guard-datastorage\""),
        count(&outage, "apiserver_admission_webhook_"),
    ));
    lines.push(format!(
        "healthy scrape: {} series; up targets: {} serve, {} Data Storage",
        healthy.len(),
        count(&healthy, "up{job=\"audit-guard\""),
        count(&healthy, "up{job=\"audit-guard-datastorage\""),
    ));
    ensure!(count(&outage, "up{job=\"audit-guard\"") == 0, "a serve target in the outage scrape");
    ensure!(failed_calls >= 1.0, "the API server counted no failed webhook call");

    let rules = tools::chart_rule_spec();
    let dir = cp.dir.join("alerts-live");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&rules)?)?;
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            promtool_case(
                "every serve pod gone (live scrape)",
                &outage,
                &rules,
                &[("AuditGuardServeDown", true), ("AuditGuardNoLeader", true), ("AuditGuardDataStorageDown", false)],
            )?,
            promtool_case(
                "serve back (live scrape)",
                &healthy,
                &rules,
                &[("AuditGuardServeDown", false), ("AuditGuardNoLeader", false), ("AuditGuardDataStorageDown", false)],
            )?,
        ],
    });
    let file = dir.join("live-scrape.test.yaml");
    std::fs::write(&file, serde_yaml::to_string(&tests)?)?;
    let out = std::process::Command::new(tools::promtool())
        .args(["test", "rules"])
        .arg(&file)
        .current_dir(&dir)
        .output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "promtool test rules {}:\n{said}", file.display());
    lines.push(format!(
        "promtool test rules on both scrapes (the shipped rules): outage: AuditGuardServeDown and AuditGuardNoLeader fire, AuditGuardDataStorageDown silent; healthy: all three silent: {}",
        said.trim().replace('\n', " ")
    ));
    Ok(lines.join("\n"))
}

/// `kubectl port-forward` running; killed when dropped.
struct PortForward(std::process::Child);

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubectl port-forward <target> :<port>` in the install's namespace: the process and the local
/// port kubectl chose (from its "Forwarding from 127.0.0.1:<port>" line).
fn port_forward(cp: &ControlPlane, target: &str, port: u16) -> Result<(PortForward, u16)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(tools::kubectl())
        .args(["--kubeconfig", cp.kubeconfig.to_str().context("path")?, "-n", NAMESPACE])
        .args(["port-forward", target, &format!(":{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("port-forward's stdout")?;
    let forward = PortForward(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let local = line
                .strip_prefix("Forwarding from 127.0.0.1:")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(p) = local {
                let _ = tx.send(p);
            }
        }
    });
    let local = rx
        .recv_timeout(Duration::from_secs(60))
        .context("kubectl port-forward printed no local port within 60 s")?;
    Ok((forward, local))
}

/// Acceptance 5: an auditor's `verify` from outside the cluster, as docs/auditors.md tells it:
/// a reader token, the CA from the Secret holding Data Storage's certificate, `kubectl
/// port-forward` to the Service, `--url https://localhost:<port> --tls-server-name <Service DNS
/// name>`. The built binary passes; a name the certificate does not carry fails the handshake.
async fn verify_through_port_forward(i: &Installed<'_>) -> Result<String> {
    use base64::Engine;
    let cp = i.cp;
    let dir = cp.dir.join("auditor");
    std::fs::create_dir_all(&dir)?;
    let token = dir.join("reader.token");
    std::fs::write(&token, reader_token(cp, &i.client, &i.docs).await?)?;
    let ca_b64 = cp.kubectl(&[
        "-n",
        NAMESPACE,
        "get",
        "secret",
        "audit-guard-datastorage-tls",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ])?;
    let ca = dir.join("datastorage-ca.crt");
    std::fs::write(&ca, base64::engine::general_purpose::STANDARD.decode(ca_b64.trim())?)?;
    let (_forward, port) = port_forward(cp, "svc/audit-guard-datastorage", 8085)?;
    let url = format!("https://localhost:{port}");
    let service = "audit-guard-datastorage.audit-guard.svc";
    let verify = |name: &str| -> Result<(i32, String)> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit-guard"))
            .args(["verify", "--url", &url, "--tls-server-name", name])
            .arg("--token-file")
            .arg(&token)
            .arg("--ca-file")
            .arg(&ca)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        ))
    };
    let (code, out) = verify(service)?;
    ensure!(
        code == 0,
        "audit-guard verify --url {url} --tls-server-name {service} exited {code}:\n{out}"
    );
    let (wrong_code, wrong) = verify("not-datastorage.audit-guard.svc")?;
    ensure!(
        wrong_code == 2,
        "verify with a name the certificate does not carry exited {wrong_code}:\n{wrong}"
    );
    Ok(format!(
        "kubectl port-forward svc/audit-guard-datastorage :8085 -> localhost:{port}; CA from Secret audit-guard-datastorage-tls\n\
         audit-guard verify --url {url} --tls-server-name {service}: exit 0: {}\n\
         with --tls-server-name not-datastorage.audit-guard.svc: exit 2: {}",
        out.trim().replace('\n', " | "),
        wrong.trim().lines().last().unwrap_or_default()
    ))
}

/// Acceptance 3 (the uninstall half): with `preDeleteCheck.enabled`, `helm uninstall` stops
/// while a SignalProcessing waits in deletion for its record (Data Storage scaled to 0 holds it
/// there), the release intact; once Data Storage is back and the CR is gone, it proceeds.
async fn uninstall_refused_while_deleting(i: &Installed<'_>) -> Result<String> {
    let cp = i.cp;
    let mut lines = Vec::new();
    let ns = fresh_namespace(&i.client, "uninstall").await?;
    let api: Api<SignalProcessing> = Api::namespaced(i.client.clone(), &ns);
    api.create(&PostParams::default(), &signal_processing("sp-held", "rr-uninstall")?)
        .await?;
    let ds_replicas = pods_of(cp, NAMESPACE, "audit-guard-datastorage")?.len();
    scale(cp, "audit-guard-datastorage", 0).await?;
    api.delete("sp-held", &DeleteParams::default()).await?;
    let held = api.get("sp-held").await?;
    ensure!(
        held.metadata.deletion_timestamp.is_some() && held.has_finalizer(),
        "sp-held is not waiting in deletion: {:?}",
        held.metadata
    );
    lines.push(format!("Data Storage scaled to 0; {ns}/sp-held deleted and held by {FINALIZER}"));

    let uninstall = readme_command("uninstall-helm", "helm uninstall")?;
    let (ok, out) = run_readme(cp, &uninstall)?;
    ensure!(!ok, "helm uninstall proceeded while sp-held was waiting:\n{out}");
    let job = cp.kubectl(&["logs", "job/audit-guard-pre-delete-check", "-n", NAMESPACE])?;
    ensure!(
        job.contains(&format!("{ns}/sp-held")),
        "the pre-delete Job's output does not name {ns}/sp-held:\n{job}"
    );
    for deploy in ["audit-guard", "audit-guard-datastorage"] {
        get_json(cp, &["get", "deployment", deploy, "-n", NAMESPACE])
            .with_context(|| format!("{deploy} gone after the refused uninstall"))?;
    }
    lines.push(format!(
        "helm uninstall refused: {}",
        out.lines().find(|l| l.contains("rror")).unwrap_or_default().trim()
    ));
    lines.push(format!("the pre-delete Job said: {}", job.trim().replace('\n', " | ")));
    lines.push("both Deployments still there".into());

    scale(cp, "audit-guard-datastorage", ds_replicas).await?;
    wait_for("sp-held to be released", Duration::from_secs(180), || async {
        Ok(api.get_opt("sp-held").await?.is_none().then_some(()))
    })
    .await?;
    let out = run_readme_ok(cp, &uninstall)?;
    for deploy in ["audit-guard", "audit-guard-datastorage"] {
        ensure!(
            get_json(cp, &["get", "deployment", deploy, "-n", NAMESPACE]).is_err(),
            "{deploy} left after uninstall"
        );
    }
    lines.push(format!(
        "Data Storage back to {ds_replicas}; sp-held stored and gone; helm uninstall proceeded: {}",
        out.trim()
    ));
    Ok(lines.join("\n"))
}

/// Waits for both Deployments, and makes the compliance reader: the install is ready for the scenarios.
async fn ready<'a>(
    cp: &'a ControlPlane,
    node: &'a Node<'a>,
    client: kube::Client,
    docs: Vec<Value>,
    applied: std::path::PathBuf,
) -> Result<Installed<'a>> {
    wait_rollouts(cp)?;
    let reader = compliance_reader(cp, &client, &docs).await?;
    Ok(Installed {
        cp,
        node,
        client,
        docs,
        applied,
        reader,
    })
}

/// A compliance reader: a ServiceAccount (bound to the reader ClusterRole when the manifests ship
/// one) with a token from the TokenRequest API for the audience Data Storage accepts.
async fn compliance_reader(cp: &ControlPlane, client: &kube::Client, docs: &[Value]) -> Result<DataStorageReader> {
    let token = reader_token(cp, client, docs).await?;
    DataStorageReader::new(cp, docs, token)
}

/// A reader's token, made as docs/auditors.md says: a ServiceAccount in a fresh namespace bound
/// to the reader ClusterRole, `kubectl create token` for Data Storage's audience.
async fn reader_token(cp: &ControlPlane, client: &kube::Client, docs: &[Value]) -> Result<String> {
    let audience = accepted_audience(docs)?;
    let readers = fresh_namespace(client, "compliance").await?;
    cp.kubectl(&["create", "serviceaccount", "reader", "-n", &readers])?;
    if let Some(role) = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("datastorage-reader")))
    {
        cp.kubectl(&[
            "create",
            "clusterrolebinding",
            &format!("{readers}-reader"),
            &format!("--clusterrole={}", name(role)),
            &format!("--serviceaccount={readers}:reader"),
        ])?;
    }
    let token = cp.kubectl(&[
        "create",
        "token",
        "reader",
        "-n",
        &readers,
        "--audience",
        &audience,
        "--duration=2h",
    ])?;
    Ok(token.trim().to_string())
}

/// Acceptance 1: every pod Ready; non-root, read-only root and probes enforced by the runtime;
/// the API server calls the webhook through its Service.
async fn check_install(i: &Installed<'_>) -> Result<String> {
    let cp = i.cp;
    let mut lines = Vec::new();
    let mut pods = Vec::new();
    for ns in [NAMESPACE, "kube-system"] {
        let list = get_json(cp, &["get", "pods", "-n", ns])?;
        pods.extend(list["items"].as_array().cloned().unwrap_or_default());
    }
    pods.retain(|p| p["metadata"]["deletionTimestamp"].is_null());
    ensure!(
        pods.len() >= 5,
        "expected CoreDNS, 2 webhook and 2 Data Storage pods, found {}",
        pods.len()
    );
    for p in &pods {
        ensure!(pod_ready(p), "pod {} not Ready: {}", name(p), p["status"]);
        ensure!(p["spec"]["nodeName"] == NODE_NAME, "pod {} not on the node", name(p));
    }
    lines.push(format!(
        "{} pods Ready on {NODE_NAME}: {}",
        pods.len(),
        pods.iter().map(name).collect::<Vec<_>>().join(", ")
    ));

    // The kernel's view of each audit-guard container: uid 65532, root filesystem read-only.
    for (app, container) in [("audit-guard", "audit-guard"), ("audit-guard-datastorage", "datastorage")] {
        for p in pods_of(cp, NAMESPACE, app)? {
            let pid = container_pid(i.node, &name(&p), container)?;
            let (uids, root_ro) = process_evidence(pid)?;
            ensure!(uids == "65532 65532 65532 65532", "{} runs as uids {uids}", name(&p));
            ensure!(root_ro, "{}: root filesystem not mounted read-only", name(&p));
            lines.push(format!("{}: pid {pid} uids {uids}, / mounted ro (from /proc)", name(&p)));
        }
    }

    // Probes: kubelet runs the readiness and liveness probes of every audit-guard container.
    let ours: Vec<String> = pods_of(cp, NAMESPACE, "audit-guard")?
        .iter()
        .chain(pods_of(cp, NAMESPACE, "audit-guard-datastorage")?.iter())
        .map(name)
        .collect();
    wait_for("kubelet's first liveness probes", Duration::from_secs(90), || async {
        let probes = cp.kubectl(&["get", "--raw", &format!("/api/v1/nodes/{NODE_NAME}/proxy/metrics/probes")])?;
        let all = ours.iter().all(|p| {
            ["Readiness", "Liveness"].iter().all(|kind| {
                metric(
                    &probes,
                    "prober_probe_total",
                    &[("pod", p), ("probe_type", kind), ("result", "successful")],
                ) >= 1.0
            })
        });
        Ok(all.then_some(()))
    })
    .await?;
    lines.push("kubelet's prober_probe_total: readiness and liveness probes succeeded on every audit-guard pod".into());

    // The API server calls the webhook through its Service: the Service's endpoints are the
    // webhook pods, and a create is mutated (the finalizer is in the create's answer) while the
    // pods count the review.
    let slices = get_json(
        cp,
        &[
            "get",
            "endpointslices",
            "-n",
            NAMESPACE,
            "-l",
            "kubernetes.io/service-name=audit-guard-webhook",
        ],
    )?;
    let endpoint_ips: Vec<String> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .filter_map(|e| e["addresses"][0].as_str().map(String::from))
        .collect();
    let webhook_pods = pods_of(cp, NAMESPACE, "audit-guard")?;
    let pod_ips: Vec<String> = webhook_pods
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
        .collect();
    ensure!(
        !endpoint_ips.is_empty() && endpoint_ips.iter().all(|ip| pod_ips.contains(ip)),
        "webhook Service endpoints {endpoint_ips:?} are not the webhook pods {pod_ips:?}"
    );
    let before = webhook_reviews(cp)?;
    let ns = fresh_namespace(&i.client, "admission").await?;
    let api: Api<SignalProcessing> = Api::namespaced(i.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &signal_processing("through-the-service", "rr-admission")?)
        .await?;
    ensure!(
        created.has_finalizer(),
        "the create's answer lacks the finalizer: {:?}",
        created.metadata.finalizers
    );
    let after = webhook_reviews(cp)?;
    ensure!(after > before, "the webhook pods counted no review ({before} -> {after})");
    lines.push(format!(
        "webhook Service endpoints = webhook pods {pod_ips:?}; a create came back with {FINALIZER}; the pods counted {} more mutating review(s)",
        after - before
    ));
    Ok(lines.join("\n"))
}

/// kubelet enforces runAsNonRoot, readOnlyRootFilesystem and readiness on any pod, not only ours.
async fn kubelet_enforces(i: &Installed<'_>) -> Result<String> {
    let cp = i.cp;
    let mut lines = Vec::new();
    // kubelet enforces runAsNonRoot and readOnlyRootFilesystem on any pod, not just ours.
    let scratch = fresh_namespace(&i.client, "enforce").await?;
    let root = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: wants-root, namespace: {scratch}}}\nspec:\n  containers:\n  - name: probe\n    image: {}\n    imagePullPolicy: Never\n    args: [sleep]\n    securityContext: {{runAsNonRoot: true, runAsUser: 0}}\n",
        node::PROBE_IMAGE
    );
    let file = cp.dir.join("wants-root.yaml");
    std::fs::write(&file, root)?;
    cp.kubectl(&["apply", "-f", file.to_str().context("path")?])?;
    let reason = wait_for("kubelet to refuse the root container", Duration::from_secs(60), || async {
        let p = get_json(cp, &["get", "pod", "wants-root", "-n", &scratch])?;
        let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        Ok(waiting["reason"]
            .as_str()
            .filter(|r| *r == "CreateContainerConfigError")
            .map(|r| format!("{r}: {}", waiting["message"])))
    })
    .await?;
    ensure!(reason.contains("non-root"), "refused for another reason: {reason}");
    lines.push(format!("runAsNonRoot with runAsUser 0: {reason}"));
    probe_pod(cp, &scratch, "probe", &BTreeMap::new())?;
    let (ok, out) = probe(cp, &scratch, "probe", &["write", "/x"]);
    ensure!(!ok && out.contains("read-only file system"), "write to a read-only root: {out}");
    lines.push(format!(
        "readOnlyRootFilesystem: writing /x fails: {}",
        out.lines().next().unwrap_or_default()
    ));

    // A failing readiness probe keeps a pod out of Ready.
    let unready = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: never-ready, namespace: {scratch}}}\nspec:\n  securityContext: {{runAsNonRoot: true, runAsUser: 65532}}\n  containers:\n  - name: probe\n    image: {}\n    imagePullPolicy: Never\n    args: [sleep]\n    readinessProbe: {{tcpSocket: {{port: 1}}, periodSeconds: 1}}\n",
        node::PROBE_IMAGE
    );
    std::fs::write(&file, unready)?;
    cp.kubectl(&["apply", "-f", file.to_str().context("path")?])?;
    wait_for("failed readiness probes of never-ready", Duration::from_secs(60), || async {
        let probes = cp.kubectl(&["get", "--raw", &format!("/api/v1/nodes/{NODE_NAME}/proxy/metrics/probes")])?;
        Ok((metric(&probes, "prober_probe_total", &[("pod", "never-ready"), ("result", "failed")]) >= 3.0).then_some(()))
    })
    .await?;
    let p = get_json(cp, &["get", "pod", "never-ready", "-n", &scratch])?;
    ensure!(p["status"]["phase"] == "Running" && !pod_ready(&p), "never-ready: {}", p["status"]);
    lines.push("a pod whose readiness probe fails runs but is not Ready".into());
    cp.kubectl(&["delete", "namespace", &scratch, "--wait=false"])?;
    Ok(lines.join("\n"))
}

/// Mutating reviews counted by all webhook pods (through the API server's pod proxy).
fn webhook_reviews(cp: &ControlPlane) -> Result<f64> {
    let mut total = 0.0;
    for p in pods_of(cp, NAMESPACE, "audit-guard")? {
        let text = pod_metrics(cp, NAMESPACE, &name(&p), 8080)?;
        total += text
            .lines()
            .filter(|l| l.starts_with("audit_guard_webhook_requests_total{") && l.contains("mutate"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>();
    }
    Ok(total)
}

/// A SignalProcessing in Kubernaut's shape today (tests/fixtures/kubernaut-today.json), renamed.
fn signal_processing(name: &str, remediation: &str) -> Result<SignalProcessing> {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("tests/fixtures/kubernaut-today.json"))?)?;
    v["metadata"] = json!({ "name": name });
    v["spec"]["remediationRequestRef"]["name"] = json!(remediation);
    v.as_object_mut().context("object")?.remove("status");
    Ok(serde_json::from_value(v)?)
}

/// The fixture's status, with today's times (Data Storage accepts a window around now).
fn completed_status() -> Result<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("tests/fixtures/kubernaut-today.json"))?)?;
    let mut status = v["status"].clone();
    let now = chrono::Utc::now();
    let t = |s: i64| (now - chrono::Duration::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    status["startTime"] = json!(t(4));
    status["completionTime"] = json!(t(0));
    status["environmentClassification"]["classifiedAt"] = json!(t(2));
    status["priorityAssignment"]["assignedAt"] = json!(t(1));
    status["conditions"][0]["lastTransitionTime"] = json!(t(0));
    status["failureInfo"]["lastFailureTime"] = json!(t(3600));
    Ok(status)
}

/// The Lease's holder: the pod running the controller.
fn leader(cp: &ControlPlane) -> Result<String> {
    let lease = get_json(cp, &["get", "lease", "audit-guard-controller", "-n", NAMESPACE])?;
    Ok(lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
}

/// Acceptance 2: create → Completed → delete, through the pods, the record read back through
/// Data Storage's Service.
async fn lifecycle(i: &Installed<'_>) -> Result<String> {
    let cp = i.cp;
    let mut lines = Vec::new();
    let ns = fresh_namespace(&i.client, "lifecycle").await?;
    let api: Api<SignalProcessing> = Api::namespaced(i.client.clone(), &ns);
    let leader_pod = wait_for("a leader", Duration::from_secs(60), || async {
        Ok(Some(leader(cp)?).filter(|l| !l.is_empty()))
    })
    .await?;
    let webhook_pods: Vec<String> = pods_of(cp, NAMESPACE, "audit-guard")?.iter().map(name).collect();
    ensure!(
        webhook_pods.contains(&leader_pod),
        "lease holder {leader_pod} is not a webhook pod {webhook_pods:?}"
    );
    let metrics_before = pod_metrics(cp, NAMESPACE, &leader_pod, 8080)?;

    // Create: the webhook pod adds the finalizer at admission.
    let created = api
        .create(&PostParams::default(), &signal_processing("sp-lifecycle", "rr-lifecycle")?)
        .await?;
    let uid = created.metadata.uid.clone().context("uid")?;
    ensure!(created.has_finalizer(), "no finalizer in the create's answer");
    lines.push(format!(
        "created {ns}/sp-lifecycle (uid {uid}) with {FINALIZER} from the webhook pod"
    ));

    // Completed: the record goes through the leader's buffered writer.
    api.patch_status(
        "sp-lifecycle",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": completed_status()? })),
    )
    .await?;
    let record = wait_for("the completion record in Data Storage", Duration::from_secs(60), || async {
        i.reader.record(&uid).await
    })
    .await?;
    let metrics = pod_metrics(cp, NAMESPACE, &leader_pod, 8080)?;
    let written = metric(&metrics, "audit_events_written_total", &[]) - metric(&metrics_before, "audit_events_written_total", &[]);
    ensure!(written >= 1.0, "the leader's buffered writer wrote nothing ({written})");
    check_record(&record, &uid, &ns, "sp-lifecycle", "completed")?;
    ensure!(record["trigger"] == "completion", "trigger: {}", record["trigger"]);
    lines.push(format!(
        "Completed: record written by {leader_pod}'s buffered writer (audit_events_written_total +{written}); read via {}: status {}, environment {}, priority {}, business_criticality {}, sla_requirement {}",
        i.reader.base, record["status"], record["environment"], record["priority"], record["business_criticality"], record["sla_requirement"]
    ));

    // Delete: the controller makes sure the record is stored, then releases the CR.
    api.delete("sp-lifecycle", &DeleteParams::default()).await?;
    wait_for("sp-lifecycle to be gone", Duration::from_secs(60), || async {
        Ok(api.get_opt("sp-lifecycle").await?.is_none().then_some(()))
    })
    .await?;
    let again = i.reader.record(&uid).await?.context("record gone")?;
    ensure!(again == record, "the record changed at deletion:\n{record}\n{again}");
    lines.push("deleted: released and gone; the stored record is unchanged".into());

    // A CR deleted before it completes: its record is stored synchronously at deletion.
    let created = api
        .create(&PostParams::default(), &signal_processing("sp-unfinished", "rr-lifecycle")?)
        .await?;
    let uid2 = created.metadata.uid.clone().context("uid")?;
    ensure!(i.reader.record(&uid2).await?.is_none(), "a record before anything happened");
    api.delete("sp-unfinished", &DeleteParams::default()).await?;
    wait_for("sp-unfinished to be gone", Duration::from_secs(60), || async {
        Ok(api.get_opt("sp-unfinished").await?.is_none().then_some(()))
    })
    .await?;
    let record2 = i.reader.record(&uid2).await?.context("no record of the unfinished CR")?;
    check_record(&record2, &uid2, &ns, "sp-unfinished", "incomplete")?;
    ensure!(record2["trigger"] == "deletion", "trigger: {}", record2["trigger"]);
    let holder = leader(cp)?;
    let m = pod_metrics(cp, NAMESPACE, &holder, 8080)?;
    let stored = metric(
        &m,
        "kubernaut_signal_processing_audit_storage_attempts_total",
        &[("status", "success")],
    );
    ensure!(stored >= 1.0, "the controller counted no successful storage");
    let ds_posts: f64 = pods_of(cp, NAMESPACE, "audit-guard-datastorage")?
        .iter()
        .map(|p| {
            // Data Storage serves TLS: the API server's pod proxy speaks https to it.
            pod_metrics(cp, NAMESPACE, &format!("https:{}", name(p)), 8085)
                .map(|t| metric(&t, "datastorage_http_requests_total", &[("method", "POST")]))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .sum();
    lines.push(format!(
        "deleted before completing: {holder} stored it at deletion (status incomplete, trigger deletion; storage attempts success {stored}); Data Storage pods answered {ds_posts} POSTs"
    ));
    Ok(lines.join("\n"))
}

fn check_record(record: &Value, uid: &str, ns: &str, name: &str, status: &str) -> Result<()> {
    ensure!(record["id"] == uid, "id {} != uid {uid}", record["id"]);
    ensure!(
        record["namespace"] == ns && record["name"] == name,
        "namespace/name: {} {}",
        record["namespace"],
        record["name"]
    );
    ensure!(record["status"] == status, "status {} != {status}", record["status"]);
    ensure!(
        record["signal_fingerprint"] == "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "signal_fingerprint {}",
        record["signal_fingerprint"]
    );
    ensure!(
        record["remediation_id"].as_str().is_some_and(|r| r.starts_with("rr-")),
        "remediation_id {}",
        record["remediation_id"]
    );
    if status == "completed" {
        for (key, want) in [
            ("environment", "production"),
            ("priority", "P0"),
            ("business_criticality", "critical"),
            ("sla_requirement", "platinum"),
        ] {
            ensure!(record[key] == want, "{key}: {} != {want}", record[key]);
        }
    }
    Ok(())
}

/// Acceptance 5: pods outside the allowed set cannot reach Data Storage or the webhook's
/// metrics and health ports; the API server and the controller still can; DNS answers right.
async fn network_policies(i: &Installed<'_>) -> Result<String> {
    let cp = i.cp;
    let mut lines = Vec::new();
    let outside = fresh_namespace(&i.client, "outsider").await?;
    probe_pod(cp, &outside, "outsider", &BTreeMap::new())?;
    let prometheus_label = BTreeMap::from([("app.kubernetes.io/name", "prometheus")]);
    // A pod labelled like Prometheus outside the monitoring namespace is not Prometheus.
    probe_pod(cp, &outside, "prometheus", &prometheus_label)?;
    let monitoring = "monitoring";
    if cp.kubectl(&["get", "namespace", monitoring]).is_err() {
        cp.kubectl(&["create", "namespace", monitoring])?;
    }
    probe_pod(cp, monitoring, "prometheus", &prometheus_label)?;
    probe_pod(
        cp,
        NAMESPACE,
        "neighbour",
        &BTreeMap::from([("app.kubernetes.io/name", "neighbour")]),
    )?;

    // Cluster DNS answers with the Service's ClusterIP (not merely some answer), and names
    // that do not exist do not resolve.
    let ds_ip = cp.kubectl(&[
        "get",
        "service",
        "audit-guard-datastorage",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let (ok, out) = probe(
        cp,
        &outside,
        "outsider",
        &["dns", "audit-guard-datastorage.audit-guard.svc.cluster.local"],
    );
    ensure!(
        ok && out.lines().any(|l| l == ds_ip),
        "DNS answered {out:?}, the Service's ClusterIP is {ds_ip}"
    );
    let (ok, out) = probe(cp, &outside, "outsider", &["dns", "no-such-service.audit-guard.svc.cluster.local"]);
    ensure!(!ok, "a name that does not exist resolved: {out}");
    lines.push(format!(
        "DNS: audit-guard-datastorage.audit-guard.svc.cluster.local -> {ds_ip} (its ClusterIP); no-such-service -> no address"
    ));

    let ds_pod_ip = pods_of(cp, NAMESPACE, "audit-guard-datastorage")?
        .first()
        .and_then(|p| p["status"]["podIP"].as_str().map(String::from))
        .context("no Data Storage pod IP")?;
    let webhook_pod_ip = pods_of(cp, NAMESPACE, "audit-guard")?
        .first()
        .and_then(|p| p["status"]["podIP"].as_str().map(String::from))
        .context("no webhook pod IP")?;
    let ds_svc = format!("{ds_ip}:8085");
    let ds_direct = format!("{ds_pod_ip}:8085");
    let metrics = format!("{webhook_pod_ip}:8080");
    let health = format!("{webhook_pod_ip}:8081");
    // (namespace, pod, target, reachable?)
    let checks: Vec<(&str, &str, &str, bool)> = vec![
        (&outside, "outsider", &ds_svc, false),
        (&outside, "outsider", &ds_direct, false),
        (NAMESPACE, "neighbour", &ds_svc, false),
        (NAMESPACE, "neighbour", &ds_direct, false),
        (&outside, "outsider", &metrics, false),
        (&outside, "outsider", &health, false),
        (NAMESPACE, "neighbour", &metrics, false),
        // Prometheus (its label in the monitoring namespace) may scrape both; the label elsewhere may not.
        (monitoring, "prometheus", &ds_svc, true),
        (monitoring, "prometheus", &ds_direct, true),
        (monitoring, "prometheus", &metrics, true),
        (&outside, "prometheus", &ds_direct, false),
        (&outside, "prometheus", &metrics, false),
    ];
    let mut wrong = Vec::new();
    for (ns, pod, target, want) in &checks {
        let (ok, out) = probe(cp, ns, pod, &["tcp", target]);
        let line = format!("{ns}/{pod} -> {target}: {}", if ok { "connected" } else { "blocked" });
        if ok != *want {
            wrong.push(format!("{line} (expected {}) {out}", if *want { "connected" } else { "blocked" }));
        }
        lines.push(line);
    }
    ensure!(wrong.is_empty(), "NetworkPolicy not as shipped:\n{}", wrong.join("\n"));

    // The webhook port: the API server is not a pod and its address is cluster-specific, so the
    // NetworkPolicy admits any source on 9443; the client certificate the webhook demands (on
    // by default in both installs) is what keeps pods out.
    let webhook = format!("{webhook_pod_ip}:9443");
    let (tcp, _) = probe(cp, &outside, "outsider", &["tcp", &webhook]);
    let (tls, out) = probe(cp, &outside, "outsider", &["tls", &webhook]);
    let deployment = find(&i.docs, "Deployment", "audit-guard")
        .map(|d| d.to_string())
        .unwrap_or_default();
    ensure!(
        deployment.contains("AUDIT_GUARD_CLIENT_CA_FILE"),
        "the installed webhook Deployment asks for no client certificate"
    );
    ensure!(
        tcp,
        "the outsider pod did not reach {webhook} at all, so the handshake proves nothing"
    );
    ensure!(
        !tls,
        "a pod without a client certificate completed a TLS handshake with the webhook: {out}"
    );
    lines.push(format!(
        "outsider -> {webhook}: TCP {tcp}, TLS refused without a client certificate ({out})"
    ));

    // The API server still reaches the webhook, the controller still reaches Data Storage.
    let ns = fresh_namespace(&i.client, "after-policies").await?;
    let api: Api<SignalProcessing> = Api::namespaced(i.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &signal_processing("sp-policy", "rr-policy")?)
        .await?;
    ensure!(created.has_finalizer(), "the API server did not get the finalizer from the webhook");
    let uid = created.metadata.uid.clone().context("uid")?;
    api.delete("sp-policy", &DeleteParams::default()).await?;
    wait_for("sp-policy to be gone", Duration::from_secs(60), || async {
        Ok(api.get_opt("sp-policy").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(i.reader.record(&uid).await?.is_some(), "no record of sp-policy");
    lines.push("with the policies in place the API server got the finalizer from the webhook and the controller stored the record through Data Storage".into());
    cp.kubectl(&["delete", "pod", "neighbour", "-n", NAMESPACE, "--wait=false"])?;
    cp.kubectl(&["delete", "pod", "prometheus", "-n", monitoring, "--wait=false"])?;
    Ok(lines.join("\n"))
}

/// Creates `count` SignalProcessings named `<prefix>-<n>`, 20 at a time; returns their uids.
async fn create_many(api: &Api<SignalProcessing>, prefix: &str, remediation: &str, count: usize) -> Result<Vec<String>> {
    let mut uids = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(20) {
        let created = join_all(chunk.iter().map(|n| async move {
            let sp = signal_processing(&format!("{prefix}-{n}"), remediation)?;
            let created = api.create(&PostParams::default(), &sp).await?;
            ensure!(created.has_finalizer(), "{prefix}-{n} admitted without the finalizer");
            created.metadata.uid.context("uid")
        }))
        .await;
        for c in created {
            uids.push(c?);
        }
    }
    Ok(uids)
}

/// Acceptance 3a: the leader pod is deleted while 200 CRs are being deleted; the other replica
/// takes over; all 200 records are stored, each once. The CRs are deleted one by one (as
/// Kubernaut's retention deletes them, each at its time) so that the deletion is still under way
/// when the leader pod goes: one deletecollection is over before a pod deletion takes effect.
async fn leader_deleted_during_mass_deletion(i: &Installed<'_>) -> Result<String> {
    let cp = i.cp;
    let ns = fresh_namespace(&i.client, "mass").await?;
    let remediation = format!("rr-{ns}");
    let api: Api<SignalProcessing> = Api::namespaced(i.client.clone(), &ns);
    let uids = create_many(&api, "sp", &remediation, 200).await?;
    let old_leader = leader(cp)?;
    let replicas: Vec<String> = pods_of(cp, NAMESPACE, "audit-guard")?.iter().map(name).collect();
    ensure!(
        replicas.len() == 2 && replicas.contains(&old_leader),
        "replicas {replicas:?}, leader {old_leader}"
    );
    let survivor = replicas.iter().find(|r| **r != old_leader).cloned().unwrap_or_default();
    let survivor_stored_before = metric(
        &pod_metrics(cp, NAMESPACE, &survivor, 8080)?,
        "kubernaut_signal_processing_audit_storage_attempts_total",
        &[("status", "success")],
    );

    let deleter = {
        let api = api.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                api.delete(&format!("sp-{n}"), &DeleteParams::default()).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    // Once 50 records are stored, delete the leader pod.
    let stored_at_kill = wait_for("50 deletion records", Duration::from_secs(120), || async {
        let n = i.reader.records_of(&remediation).await?.len();
        Ok((n >= 50).then_some(n))
    })
    .await?;
    cp.kubectl(&["delete", "pod", &old_leader, "-n", NAMESPACE, "--wait=false"])?;
    let left_at_kill = api.list(&ListParams::default()).await?.items.len();
    ensure!(
        left_at_kill > 0,
        "the deletion finished before the leader pod was deleted: no takeover to see"
    );
    let new_leader = wait_for("another replica to hold the lease", Duration::from_secs(120), || async {
        let l = leader(cp)?;
        Ok((!l.is_empty() && l != old_leader).then_some(l))
    })
    .await?;
    deleter.await??;
    wait_for("all 200 to be gone", Duration::from_secs(300), || async {
        Ok(api.list(&ListParams::default()).await?.items.is_empty().then_some(()))
    })
    .await?;
    let records = i.reader.records_of(&remediation).await?;
    let mut ids: Vec<String> = records.iter().filter_map(|r| r["id"].as_str().map(String::from)).collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    let mut want = uids.clone();
    want.sort();
    ensure!(
        total == 200 && ids == want,
        "records: {total} ({} distinct), expected the 200 uids",
        ids.len()
    );
    // The new leader really took the work over: it stored some of the 200 itself.
    let stored = metric(
        &pod_metrics(cp, NAMESPACE, &new_leader, 8080)?,
        "kubernaut_signal_processing_audit_storage_attempts_total",
        &[("status", "success")],
    ) - if new_leader == survivor { survivor_stored_before } else { 0.0 };
    ensure!(stored >= 1.0, "the new leader {new_leader} stored nothing");
    let mut line = format!(
        "200 CRs deleted one by one; leader {old_leader} deleted with {stored_at_kill} records stored and {left_at_kill} CRs left; \
         the lease went to {new_leader} ({}), which stored {stored} records",
        if new_leader == survivor {
            "the other replica"
        } else {
            "the replacement pod; the other replica lost the race"
        }
    );
    line.push_str("; all 200 gone, 200 records for the 200 uids, none twice");
    Ok(line)
}

/// Acceptance 3b: `kubectl rollout restart` of the webhook Deployment while 200 CRs are
/// created: whatever the API server admits carries the finalizer.
async fn rollout_restart_during_creates(i: &Installed<'_>) -> Result<String> {
    let cp = i.cp;
    let ns = fresh_namespace(&i.client, "rollout").await?;
    let api: Api<SignalProcessing> = Api::namespaced(i.client.clone(), &ns);
    let before: Vec<String> = pods_of(cp, NAMESPACE, "audit-guard")?.iter().map(name).collect();
    cp.kubectl(&["rollout", "restart", "deployment/audit-guard", "-n", NAMESPACE])?;
    let rollout_started = Instant::now();
    let (mut created, mut refused, mut without) = (0usize, 0usize, Vec::new());
    let mut n = 0;
    let mut rolled_out_during = false;
    // Create steadily (4 at a time) until 200 are in and the rollout has finished, so that the
    // creates span the whole rollout.
    loop {
        let batch = join_all((n..n + 4).map(|k| {
            let api = api.clone();
            async move {
                let sp = signal_processing(&format!("sp-{k}"), "rr-rollout")?;
                let mut refusals = 0usize;
                loop {
                    match api.create(&PostParams::default(), &sp).await {
                        Ok(c) => return Ok::<_, anyhow::Error>((c.has_finalizer(), c.metadata.name.unwrap_or_default(), refusals)),
                        // No webhook answered: failurePolicy Fail refused the create. Retry.
                        Err(kube::Error::Api(e)) if e.code >= 500 => {
                            refusals += 1;
                            ensure!(refusals < 100, "sp-{k} refused 100 times: {e:?}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }))
        .await;
        for r in batch {
            let (has, name, refusals) = r?;
            refused += refusals;
            created += 1;
            if !has {
                without.push(name);
            }
        }
        n += 4;
        let status = get_json(cp, &["get", "deployment", "audit-guard", "-n", NAMESPACE])?;
        let done = status["status"]["updatedReplicas"] == status["spec"]["replicas"]
            && status["status"]["availableReplicas"] == status["spec"]["replicas"]
            && status["status"]["replicas"] == status["spec"]["replicas"]
            && status["status"]["observedGeneration"] == status["metadata"]["generation"];
        let now: Vec<String> = pods_of(cp, NAMESPACE, "audit-guard")?.iter().map(name).collect();
        if done && before.iter().all(|b| !now.contains(b)) {
            rolled_out_during = true;
        }
        if created >= 200 && rolled_out_during {
            break;
        }
        ensure!(
            rollout_started.elapsed() < Duration::from_secs(300),
            "the rollout did not finish: {}",
            status["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(without.is_empty(), "admitted without the finalizer: {without:?}");
    let list = api.list(&ListParams::default()).await?;
    let missing: Vec<String> = list
        .items
        .iter()
        .filter(|o| !o.has_finalizer())
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    ensure!(missing.is_empty(), "in the cluster without the finalizer: {missing:?}");
    let after: Vec<String> = pods_of(cp, NAMESPACE, "audit-guard")?.iter().map(name).collect();
    Ok(format!(
        "rollout restart: pods {before:?} -> {after:?}; {created} CRs created during it ({refused} creates refused while no webhook answered, retried), every admitted CR carried {FINALIZER} in its create's answer, {} in the namespace, all with the finalizer",
        list.items.len()
    ))
}
