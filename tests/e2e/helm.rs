//! The Helm chart on the real control plane with the real helm: an invalid value refused
//! at install, a CRD created outside the release adopted once marked, `helm install` (every
//! object accepted, the webhook wired into the API server, a self-signed certificate chain for
//! the Service), `helm upgrade` (certificates and caBundle
//! kept; the Deployment's pod template unchanged by a no-op upgrade and changed exactly once
//! by a changed value), `helm test` failing while the webhook cannot answer, `helm uninstall`
//! (every object gone but the CRD, which the chart keeps) and `audit-guard pre-delete-check`.
//!
//! There is no node here, so no pod runs: what the chart's pods do once they run is the
//! business of the node tests; here the API server is what accepts, stores and calls.

mod support;
#[path = "support/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;
use tools::*;

const NS: &str = "audit-guard";
const RELEASE: &str = "audit-guard";
const LIKE_KUSTOMIZE: &str = "tests/fixtures/chart-values-like-kustomize.yaml";

/// helm against the test control plane, with its own config and cache directories.
fn helm_cmd(cp: &ControlPlane, args: &[&str]) -> Command {
    let home = cp.dir.join("helm-home");
    let mut cmd = Command::new(helm());
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(repo());
    cmd
}

fn helm_ok(cp: &ControlPlane, args: &[&str]) -> String {
    run_ok(&mut helm_cmd(cp, args))
}

fn chart() -> String {
    chart_dir().to_string_lossy().into_owned()
}

fn get_json(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    serde_json::from_str(&cp.kubectl(&a).unwrap()).unwrap()
}

/// What upgrades must keep or change: certificates, caBundles, Deployments' pod templates.
#[derive(Debug)]
struct State {
    tls: Value,
    ca_bundles: Vec<Value>,
    deployments: Vec<(i64, Value)>,
}

fn state(cp: &ControlPlane) -> State {
    let secret = get_json(cp, &["secret", "-n", NS, "audit-guard-webhook-tls"]);
    let ca_bundles = ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"]
        .iter()
        .map(|k| get_json(cp, &[k, "audit-guard"])["webhooks"][0]["clientConfig"]["caBundle"].clone())
        .collect();
    let deployments = ["audit-guard", "audit-guard-datastorage"]
        .iter()
        .map(|d| {
            let d = get_json(cp, &["deployment", "-n", NS, d]);
            (d["metadata"]["generation"].as_i64().unwrap(), d["spec"]["template"].clone())
        })
        .collect();
    State {
        tls: secret["data"].clone(),
        ca_bundles,
        deployments,
    }
}

/// Panics, saying what changed, unless `now` is `before`.
fn assert_unchanged(now: &State, before: &State, what: &str) {
    assert!(now.tls == before.tls, "{what}: the webhook's certificates were replaced");
    assert!(now.ca_bundles == before.ca_bundles, "{what}: the caBundle changed");
    for (i, name) in ["audit-guard", "audit-guard-datastorage"].iter().enumerate() {
        let ((g0, t0), (g1, t1)) = (&before.deployments[i], &now.deployments[i]);
        assert!(
            g0 == g1 && t0 == t1,
            "{what}: Deployment {name}'s pod template changed (generation {g0} -> {g1}), so its pods would restart:\nbefore: {t0}\nafter:  {t1}"
        );
    }
}

fn revision(cp: &ControlPlane) -> i64 {
    let status: Value = serde_json::from_str(&helm_ok(cp, &["status", RELEASE, "-n", NS, "-o", "json"])).unwrap();
    status["version"].as_i64().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Stand-ins for the Prometheus Operator's CRDs, so the API server can hold those objects.
fn monitoring_crds() -> String {
    [("servicemonitors", "ServiceMonitor"), ("prometheusrules", "PrometheusRule")]
        .iter()
        .map(|(plural, kind)| {
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.monitoring.coreos.com}}\n\
                 spec:\n  group: monitoring.coreos.com\n  scope: Namespaced\n  names: {{plural: {plural}, kind: {kind}}}\n  \
                 versions: [{{name: v1, served: true, storage: true, schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}}}]\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

const SIGNAL_PROCESSING: &str = r#"
apiVersion: kubernaut.ai/v1alpha1
kind: SignalProcessing
metadata: {name: probe, namespace: team-a}
spec: {remediationRequestRef: {name: rr-probe}, signal: {fingerprint: fp-probe}}
"#;

#[test]
fn install_upgrade_and_uninstall_on_the_control_plane() {
    let cp = control_plane();
    let tmp = tempfile::tempdir().unwrap();
    let crds = write(tmp.path(), "monitoring-crds.yaml", &monitoring_crds());
    cp.kubectl(&["apply", "-f", crds.to_str().unwrap()]).unwrap();
    cp.kubectl(&["wait", "--for=condition=Established", "-f", crds.to_str().unwrap()])
        .unwrap();
    cp.kubectl(&["create", "namespace", NS]).unwrap();
    cp.kubectl(&["create", "namespace", "team-a"]).unwrap();
    // The database URLs live in Secrets of the admin's, never in Helm values.
    for (secret, role) in [
        ("audit-guard-datastorage-db", "audit_guard_app"),
        ("audit-guard-datastorage-db-owner", "audit_guard"),
    ] {
        cp.kubectl(&[
            "create",
            "secret",
            "generic",
            secret,
            "-n",
            NS,
            &format!("--from-literal=url=postgres://{role}:secret@postgresql.audit-guard.svc:5432/audit_guard?sslmode=verify-full&sslrootcert=/etc/audit-guard/db-ca/ca.crt"),
        ])
        .unwrap();
    }
    let install = ["install", RELEASE, &chart(), "-n", NS, "-f", LIKE_KUSTOMIZE];

    // 1. A wrong value is refused by the schema, before anything reaches the cluster.
    let mut bad = install.to_vec();
    bad.extend(["--set", "replicas=two"]);
    assert_install_refused(cp, &bad, &["/replicas", "want integer"]);
    assert!(cp.kubectl(&["get", "validatingwebhookconfiguration", "audit-guard"]).is_err());

    // A CRD created outside the release (an earlier chart's crds/, the kustomize overlays) is
    // refused until it carries Helm's ownership marks, added as docs/deploying.md says.
    let crd = chart_dir().join("files/crds/signalprocessings.kubernaut.ai.yaml");
    cp.kubectl(&["apply", "-f", crd.to_str().unwrap()]).unwrap();
    assert_install_refused(cp, &install, &["signalprocessings.kubernaut.ai", "meta.helm.sh/release-name"]);
    let crd_name = "crd/signalprocessings.kubernaut.ai";
    cp.kubectl(&["label", crd_name, "app.kubernetes.io/managed-by=Helm"]).unwrap();
    cp.kubectl(&[
        "annotate",
        crd_name,
        &format!("meta.helm.sh/release-name={RELEASE}"),
        &format!("meta.helm.sh/release-namespace={NS}"),
    ])
    .unwrap();

    // 2. Install: every object is accepted; NOTES tell what to check next.
    let notes = helm_ok(cp, &install);
    assert!(notes.contains("rollout status deployment/audit-guard"), "NOTES:\n{notes}");
    let manifest = write(tmp.path(), "manifest.yaml", &helm_ok(cp, &["get", "manifest", RELEASE, "-n", NS]));
    let objects = yaml_docs(&std::fs::read_to_string(&manifest).unwrap());
    let names = cp.kubectl(&["get", "-f", manifest.to_str().unwrap(), "-o", "name"]).unwrap();
    assert_eq!(names.lines().count(), objects.len(), "every object of the release exists:\n{names}");
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(objects.iter().any(|o| o["kind"] == kind), "{kind} installed");
    }
    let crd = get_json(cp, &["crd", "signalprocessings.kubernaut.ai"]);
    assert_eq!(crd["spec"]["group"], "kubernaut.ai", "the CRD, one of the release's objects");
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");

    // The self-signed chain is for the webhook Service, and both configurations trust it.
    let installed = state(cp);
    let dir = tmp.path();
    assert_chain(
        &b64(&installed.tls["ca.crt"]),
        &b64(&installed.tls["tls.crt"]),
        "audit-guard-webhook.audit-guard.svc",
    );
    for bundle in &installed.ca_bundles {
        assert_eq!(b64(bundle), b64(&installed.tls["ca.crt"]));
    }

    // The API server now calls the chart's webhook for every SignalProcessing, and with no
    // pod behind its Service (no node here) failurePolicy Fail refuses the create.
    let sp = write(dir, "sp.yaml", SIGNAL_PROCESSING);
    let refused = cp.kubectl(&["create", "-f", sp.to_str().unwrap()]).unwrap_err().to_string();
    assert!(
        refused.contains("mutate.signalprocessing.audit.kubernaut.ai") && refused.contains("audit-guard-webhook"),
        "refused by the chart's webhook: {refused}"
    );

    // `helm test` proves the webhook answers: with no pod behind it here, the test's
    // SignalProcessing is refused, and so the test fails and says why.
    let out = run(&mut helm_cmd(cp, &["test", RELEASE, "-n", NS, "--timeout", "60s"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("audit-guard-helm-test") && err.contains("mutate.signalprocessing.audit.kubernaut.ai"),
        "helm test fails while the webhook does not answer:\n{err}"
    );

    // 3. A no-op upgrade changes nothing: same certificates, same pod templates.
    let upgrade = ["upgrade", RELEASE, &chart(), "-n", NS, "-f", LIKE_KUSTOMIZE];
    helm_ok(cp, &upgrade);
    assert_eq!(revision(cp), 2);
    assert_unchanged(&state(cp), &installed, "a no-op upgrade");

    // 4. A changed value changes the webhook Deployment's pod template once; certificates stay.
    let mut changed = upgrade.to_vec();
    changed.extend(["--set", "controller.retention=12h"]);
    helm_ok(cp, &changed);
    let after = state(cp);
    assert_eq!(after.tls, installed.tls, "certificates kept across upgrades");
    assert_eq!(after.ca_bundles, installed.ca_bundles, "caBundle kept across upgrades");
    assert_eq!(after.deployments[0].0, installed.deployments[0].0 + 1, "one new pod template");
    assert!(after.deployments[0].1.to_string().contains("AUDIT_GUARD_RETENTION"));
    assert_eq!(after.deployments[1], installed.deployments[1], "Data Storage's pods untouched");
    helm_ok(cp, &changed);
    assert_unchanged(&state(cp), &after, "the same values again");
    // Back to the default: the variable leaves the pod template again (one more change).
    helm_ok(cp, &upgrade);
    let back = state(cp);
    assert_eq!(back.deployments[0].0, after.deployments[0].0 + 1);
    assert_eq!(back.deployments[0].1, installed.deployments[0].1, "the pod template as installed");
    assert_eq!(back.tls, installed.tls);

    // 5. A bad value on upgrade is refused too, and the release stays as it was.
    let rev = revision(cp);
    let mut bad = upgrade.to_vec();
    bad.extend(["--set", "certs.mode=self-made"]);
    let out = run(&mut helm_cmd(cp, &bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/certs/mode"), "{err}");
    assert_eq!(revision(cp), rev);

    // 6. Uninstall: every object of the release is gone, cluster-wide ones included; the CRD
    //    (and so every SignalProcessing) stays; the webhook no longer stands in the way.
    helm_ok(cp, &["uninstall", RELEASE, "-n", NS, "--wait"]);
    let left = cp
        .kubectl(&["get", "-f", manifest.to_str().unwrap(), "--ignore-not-found", "-o", "name"])
        .unwrap();
    assert_eq!(
        left.trim(),
        "customresourcedefinition.apiextensions.k8s.io/signalprocessings.kubernaut.ai",
        "only the CRD (helm.sh/resource-policy: keep) is left behind after uninstall:\n{left}"
    );
    cp.kubectl(&["create", "-f", sp.to_str().unwrap()]).unwrap();

    // 7. The pre-delete check (`audit-guard pre-delete-check`, as its Job runs it) against the
    //    real API server: it lets the uninstall go while no SignalProcessing waits on the
    //    finalizer, refuses (exit 1, naming it) while one is being deleted with it, and lets go
    //    once it is off.
    let check = |expect_refusal: bool| {
        let out = pre_delete_check(cp);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            !out.status.success(),
            expect_refusal,
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let finalizers = |patch: &str| {
        cp.kubectl(&["patch", "signalprocessing", "probe", "-n", "team-a", "--type=merge", "-p", patch])
            .unwrap();
    };
    finalizers(r#"{"metadata":{"finalizers":["kubernaut.ai/audit-persistence"]}}"#);
    check(false);
    cp.kubectl(&["delete", "signalprocessing", "probe", "-n", "team-a", "--wait=false"])
        .unwrap();
    assert!(check(true).contains("team-a/probe"));
    finalizers(r#"{"metadata":{"finalizers":null}}"#);
    check(false);
}

/// `helm install` with `args` fails, saying each of `must_say`, and leaves no release.
fn assert_install_refused(cp: &ControlPlane, args: &[&str], must_say: &[&str]) {
    let out = run(&mut helm_cmd(cp, args));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && must_say.iter().all(|m| err.contains(m)), "{err}");
    assert_eq!(helm_ok(cp, &["list", "-n", NS, "-q"]).trim(), "", "no release");
}

/// Runs `audit-guard pre-delete-check` as the chart's Job does, with the test's kubeconfig.
fn pre_delete_check(cp: &ControlPlane) -> std::process::Output {
    run(Command::new(env!("CARGO_BIN_EXE_audit-guard"))
        .arg("pre-delete-check")
        .env("KUBECONFIG", &cp.kubeconfig))
}
