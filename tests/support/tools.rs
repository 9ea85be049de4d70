//! Shared by the chart, alert and dashboard tests (included with `#[path]`): the real helm
//! (built from Go modules by tools/helm/build.sh), promtool (Debian's prometheus package),
//! kubectl's kustomize, and what they render: the chart, the kustomize overlays, the alert
//! rules and the Grafana dashboard's queries.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart_dir() -> PathBuf {
    repo().join("charts/audit-guard")
}

/// The helm binary: AUDIT_GUARD_HELM, or the cached build of tools/helm (built on first use,
/// with its progress on stderr).
pub fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(p) = std::env::var("AUDIT_GUARD_HELM") {
            return PathBuf::from(p);
        }
        let out = Command::new("bash")
            .arg(repo().join("tools/helm/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running tools/helm/build.sh");
        assert!(out.status.success(), "tools/helm/build.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// promtool from Debian's `prometheus` package (scripts/install-deps.sh installs it). Never
/// skipped: without it these tests fail and say how to get it.
pub fn promtool() -> PathBuf {
    let p = PathBuf::from(std::env::var("PROMTOOL").unwrap_or_else(|_| "/usr/bin/promtool".into()));
    assert!(
        p.exists(),
        "promtool not found at {}: install Debian's prometheus package (bash scripts/install-deps.sh, as root)",
        p.display()
    );
    p
}

/// kubectl built with the control plane (its `kustomize` is what `kubectl apply -k` uses).
pub fn kubectl() -> PathBuf {
    audit_guard_harness::controlplane::binaries()
        .expect("control plane binaries (controlplane/build.sh)")
        .join("kubectl")
}

/// A file of a Go module (another project's CRDs, say), fetched through the Go module proxy into
/// Go's module cache (outside the repository) the first time.
pub fn go_module_file(module: &str, version: &str, path: &str) -> PathBuf {
    let out = run_ok(Command::new("go").args(["mod", "download", "-json", &format!("{module}@{version}")]));
    let info: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("go mod download {module}@{version}: {e}: {out}"));
    let dir = info["Dir"]
        .as_str()
        .unwrap_or_else(|| panic!("go mod download {module}@{version}: no Dir in {out}"));
    let file = Path::new(dir).join(path);
    assert!(file.exists(), "{} is not in {module}@{version}", file.display());
    file
}

/// Runs a command; returns its output whether it succeeded or not.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every non-empty document of a multi-document YAML stream, as JSON values.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::with::singleton_map_recursive::deserialize::<Value, _>(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart as release `audit-guard` in namespace `audit-guard`, CRDs
/// included, with these extra arguments (e.g. `--set`, `-f`).
pub fn helm_template(args: &[&str]) -> Output {
    run(Command::new(helm())
        .args(["template", "audit-guard"])
        .arg(chart_dir())
        .args(["--namespace", "audit-guard", "--include-crds"])
        .args(args))
}

pub fn render_chart(args: &[&str]) -> Vec<Value> {
    let out = helm_template(args);
    assert!(
        out.status.success(),
        "helm template {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `kubectl kustomize manifests/overlays/<overlay>` on a copy of manifests/; the
/// self-managed overlay gets throw-away certificates from `audit-guard certs`.
pub fn render_overlay(overlay: &str, audit_guard_bin: &str) -> Vec<Value> {
    yaml_docs(&render_overlay_text(overlay, audit_guard_bin))
}

/// As [`render_overlay`], the YAML as kustomize prints it.
pub fn render_overlay_text(overlay: &str, audit_guard_bin: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    if overlay == "self-managed" {
        let generated = manifests.join("overlays/self-managed/generated");
        let _ = std::fs::remove_dir_all(&generated);
        let certs = tmp.path().join("certs");
        let ca_bundle = run_ok(Command::new(audit_guard_bin).args(["certs", "--out-dir"]).arg(&certs));
        std::fs::create_dir_all(&generated).unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::fs::copy(certs.join(f), generated.join(f)).unwrap();
        }
        std::fs::create_dir_all(generated.join("datastorage")).unwrap();
        for f in ["tls.crt", "tls.key", "ca.crt"] {
            std::fs::copy(certs.join("datastorage").join(f), generated.join("datastorage").join(f)).unwrap();
        }
        std::fs::write(
            generated.join("ca-bundle.yaml"),
            format!(
                "- op: add\n  path: /webhooks/0/clientConfig/caBundle\n  value: {}\n",
                ca_bundle.trim()
            ),
        )
        .unwrap();
    }
    run_ok(
        Command::new(kubectl())
            .arg("kustomize")
            .arg(manifests.join("overlays").join(overlay)),
    )
}

/// The text of a base64 value (a Secret's data, a caBundle).
pub fn b64(v: &Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("base64");
    String::from_utf8(bytes).expect("UTF-8")
}

/// `openssl verify`: the serving certificate chains to the CA and is for this DNS name.
pub fn assert_chain(ca_pem: &str, crt_pem: &str, dns: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.path().join("tls.crt"), crt_pem).unwrap();
    run_ok(
        Command::new("openssl")
            .args([
                "verify",
                "-CAfile",
                "ca.crt",
                "-verify_hostname",
                dns,
                "-purpose",
                "sslserver",
                "tls.crt",
            ])
            .current_dir(dir.path()),
    );
}

/// The PrometheusRule's `spec` (its rule groups) in manifests/base/monitoring.yaml.
pub fn kustomize_rule_spec() -> Value {
    let text = std::fs::read_to_string(repo().join("manifests/base/monitoring.yaml")).unwrap();
    yaml_docs(&text)
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule in manifests/base/monitoring.yaml")["spec"]
        .clone()
}

/// The chart's copy of the rule groups (files/prometheus-rules.yaml, the PrometheusRule's spec).
pub fn chart_rule_spec() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("files/prometheus-rules.yaml")).unwrap();
    serde_yaml::from_str(&text).expect("charts/audit-guard/files/prometheus-rules.yaml is YAML")
}

/// Every alerting rule of a rule spec: (group, rule).
pub fn alerts(spec: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for group in spec["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            if rule.get("alert").is_some() {
                out.push((group["name"].as_str().unwrap_or_default().to_string(), rule.clone()));
            }
        }
    }
    out
}

/// The Grafana dashboard (the chart's copy; the kustomize component's is compared with it).
pub fn dashboard() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("files/grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every query of the dashboard: (where, PromQL as Grafana sends it, with its variables).
/// `label_values(metric, label)` template queries come back as the metric selector.
pub fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn panels(v: &Value, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        format!("panel {:?} ({}) target {}", p["title"].as_str().unwrap_or(""), p["id"], t["refId"]),
                        expr.to_string(),
                    ));
                }
            }
            panels(&p["panels"], out);
        }
    }
    panels(&dash["panels"], &mut out);
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().or(var["query"].as_str()).unwrap_or("");
            let expr = q
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(',').map(|(sel, _)| sel.trim().to_string()))
                .unwrap_or_else(|| q.to_string());
            out.push((format!("variable ${}", var["name"].as_str().unwrap_or("")), expr));
        }
    }
    out
}

/// Grafana's variables replaced by what Grafana would send (a namespace regex, intervals).
pub fn expand_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "2m")
        .replace("$__interval", "1m")
        .replace("$__range", "6h")
        .replace("${namespace}", ".*")
        .replace("$namespace", ".*")
}

/// The metric names a PromQL expression selects (promql-parser; the expression must parse).
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    use promql_parser::parser::{self, Expr};
    use promql_parser::util::{walk_expr, ExprVisitor};
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
            let vs = match e {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            let name = vs
                .name
                .clone()
                .or_else(|| vs.matchers.matchers.iter().find(|m| m.name == "__name__").map(|m| m.value.clone()));
            match name {
                Some(n) => {
                    self.0.insert(n);
                    Ok(true)
                }
                None => Err(format!("a selector without a metric name in {e}")),
            }
        }
    }
    let ast = parser::parse(expr)?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &ast)?;
    Ok(names.0)
}

/// Runs `promtool check rules` on a rule file; Err with its output when it fails.
pub fn promtool_check_rules(file: &Path) -> Result<String, String> {
    let out = run(Command::new(promtool()).args(["check", "rules"]).arg(file));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
