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
//!
//! The release has the control plane to itself: its webhooks cover every namespace with
//! failurePolicy Fail and no pod behind them, it takes the SignalProcessing CRD over, and the
//! pre-delete check looks at every namespace. It is named `audit-guard-helm`, in a namespace
//! of that name, because the shipped names (namespace `audit-guard`, its ServiceAccounts,
//! ClusterRoles) are installed outside any release by other suites, whose tokens stay in use
//! across their tests. [`Restore`] puts the control plane back as the test found it, whatever
//! happens.

use crate::support;
use crate::tools::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

const NS: &str = "audit-guard-helm";
const RELEASE: &str = "audit-guard-helm";
const LIKE_KUSTOMIZE: &str = "tests/fixtures/chart-values-like-kustomize.yaml";
/// Where the test's SignalProcessing lives, as a team's would.
const TEAM_NS: &str = "team-a";
/// The CRDs the test applies or hands to the release.
const CRDS: [&str; 3] = [
    "signalprocessings.kubernaut.ai",
    "servicemonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
];

/// An object of the release: the chart names every one after the release.
fn named(suffix: &str) -> String {
    format!("{RELEASE}{suffix}")
}

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

fn deployment_names() -> [String; 2] {
    [named(""), named("-datastorage")]
}

fn state(cp: &ControlPlane) -> State {
    let secret = get_json(cp, &["secret", "-n", NS, &named("-webhook-tls")]);
    let ca_bundles = ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"]
        .iter()
        .map(|k| get_json(cp, &[k, RELEASE])["webhooks"][0]["clientConfig"]["caBundle"].clone())
        .collect();
    let deployments = deployment_names()
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
    for (i, name) in deployment_names().iter().enumerate() {
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

fn signal_processing() -> String {
    format!(
        "apiVersion: kubernaut.ai/v1alpha1\nkind: SignalProcessing\nmetadata: {{name: probe, namespace: {TEAM_NS}}}\n\
         spec: {{remediationRequestRef: {{name: rr-probe}}, signal: {{fingerprint: fp-probe}}}}\n"
    )
}

#[tokio::test]
async fn install_upgrade_and_uninstall_on_the_control_plane() {
    let _cluster = support::cluster_exclusive().await;
    let cp = control_plane();
    let before = cluster_view(cp);
    {
        let _restore = Restore::new(cp);
        install_monitoring_crds(&admin_client().await).await;
        install_upgrade_and_uninstall(cp);
    }
    let after = cluster_view(cp);
    let differences = differences(&before, &after);
    assert!(
        differences.is_empty(),
        "the control plane is not as the test found it:\n{}",
        differences.join("\n")
    );
}

fn install_upgrade_and_uninstall(cp: &ControlPlane) {
    let tmp = tempfile::tempdir().unwrap();
    cp.kubectl(&["create", "namespace", NS]).unwrap();
    cp.kubectl(&["create", "namespace", TEAM_NS]).unwrap();
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
    assert!(cp.kubectl(&["get", "validatingwebhookconfiguration", RELEASE]).is_err());

    // A CRD created outside the release (an earlier chart's crds/, the kustomize overlays) is
    // refused until it carries Helm's ownership marks, added as docs/deploying.md says.
    // Other suites may have applied it server-side already, as a field manager of theirs that
    // Helm's server-side apply would conflict with; a CRD created by `kubectl apply` or an
    // earlier chart has none, so theirs go for this test ([`Restore`] puts them back).
    if cp.kubectl(&["get", "crd", CRDS[0]]).is_ok() {
        let reset = r#"[{"op":"replace","path":"/metadata/managedFields","value":[{}]}]"#;
        cp.kubectl(&["patch", "crd", CRDS[0], "--type=json", "-p", reset]).unwrap();
    }
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
    assert!(notes.contains(&format!("rollout status deployment/{RELEASE}")), "NOTES:\n{notes}");
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
        &format!("{}.{NS}.svc", named("-webhook")),
    );
    for bundle in &installed.ca_bundles {
        assert_eq!(b64(bundle), b64(&installed.tls["ca.crt"]));
    }

    // The API server now calls the chart's webhook for every SignalProcessing, and with no
    // pod behind its Service (no node here) failurePolicy Fail refuses the create.
    let sp = write(dir, "sp.yaml", &signal_processing());
    let refused = cp.kubectl(&["create", "-f", sp.to_str().unwrap()]).unwrap_err().to_string();
    assert!(
        refused.contains("mutate.signalprocessing.audit.kubernaut.ai") && refused.contains(&named("-webhook")),
        "refused by the chart's webhook: {refused}"
    );

    // `helm test` proves the webhook answers: with no pod behind it here, the test's
    // SignalProcessing is refused, and so the test fails and says why.
    let out = run(&mut helm_cmd(cp, &["test", RELEASE, "-n", NS, "--timeout", "60s"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&named("-helm-test")) && err.contains("mutate.signalprocessing.audit.kubernaut.ai"),
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
    //    once it is off. It looks at every namespace: first the SignalProcessings that other
    //    suites left waiting in namespaces they are deleting, their controllers gone, are let go.
    release_abandoned(cp);
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
        cp.kubectl(&["patch", "signalprocessing", "probe", "-n", TEAM_NS, "--type=merge", "-p", patch])
            .unwrap();
    };
    finalizers(r#"{"metadata":{"finalizers":["kubernaut.ai/audit-persistence"]}}"#);
    check(false);
    cp.kubectl(&["delete", "signalprocessing", "probe", "-n", TEAM_NS, "--wait=false"])
        .unwrap();
    assert!(check(true).contains(&format!("{TEAM_NS}/probe")));
    finalizers(r#"{"metadata":{"finalizers":null}}"#);
    check(false);
}

/// Takes audit-guard's finalizer off each SignalProcessing being deleted in a namespace being
/// deleted: what another suite left behind when its test ended and its controller with it.
fn release_abandoned(cp: &ControlPlane) {
    let namespaces = get_json(cp, &["namespaces"]);
    let objects = get_json(cp, &["signalprocessings", "--all-namespaces"]);
    for (ns, name, finalizers) in abandoned(&namespaces, &objects) {
        eprintln!("letting go {ns}/{name}, left waiting in a namespace being deleted");
        let patch = serde_json::json!({ "metadata": { "finalizers": finalizers } }).to_string();
        cp.kubectl(&["patch", "signalprocessing", &name, "-n", &ns, "--type=merge", "-p", &patch])
            .unwrap_or_else(|e| panic!("letting {ns}/{name} go: {e:#}"));
    }
}

/// Namespace, name and the finalizers to keep of each object of the `objects` list being deleted
/// with audit-guard's finalizer in a namespace of the `namespaces` list that is terminating.
fn abandoned(namespaces: &Value, objects: &Value) -> Vec<(String, String, Vec<String>)> {
    let items = |list: &Value| list["items"].as_array().cloned().unwrap_or_default();
    let terminating: Vec<String> = items(namespaces)
        .iter()
        .filter(|ns| ns["status"]["phase"] == "Terminating")
        .filter_map(|ns| ns["metadata"]["name"].as_str().map(String::from))
        .collect();
    items(objects)
        .iter()
        .filter_map(|o| {
            let m = &o["metadata"];
            let ns = m["namespace"].as_str()?;
            let finalizers: Vec<String> = m["finalizers"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            let waits = m["deletionTimestamp"].is_string() && finalizers.iter().any(|f| f == audit_guard::crd::FINALIZER);
            (waits && terminating.iter().any(|t| t == ns)).then(|| {
                let keep = finalizers.into_iter().filter(|f| f != audit_guard::crd::FINALIZER).collect();
                (ns.to_string(), m["name"].as_str().unwrap_or_default().to_string(), keep)
            })
        })
        .collect()
}

#[test]
fn only_objects_waiting_on_audit_guard_in_terminating_namespaces_are_abandoned() {
    use serde_json::json;
    let namespaces = json!({ "items": [
        { "metadata": { "name": "gone" }, "status": { "phase": "Terminating" } },
        { "metadata": { "name": "live" }, "status": { "phase": "Active" } },
    ]});
    let sp = |ns: &str, name: &str, deleting: bool, finalizers: &[&str]| {
        let mut m = json!({ "namespace": ns, "name": name, "finalizers": finalizers });
        if deleting {
            m["deletionTimestamp"] = json!("2026-12-07T20:00:00Z");
        }
        json!({ "metadata": m })
    };
    let ours = audit_guard::crd::FINALIZER;
    let objects = json!({ "items": [
        sp("gone", "waiting", true, &["other.io/f", ours]),
        sp("gone", "not-deleted", false, &[ours]),
        sp("gone", "not-ours", true, &["other.io/f"]),
        sp("live", "deleted-in-a-live-namespace", true, &[ours]),
    ]});
    assert_eq!(
        abandoned(&namespaces, &objects),
        vec![("gone".to_string(), "waiting".to_string(), vec!["other.io/f".to_string()])]
    );
    assert!(abandoned(&namespaces, &json!({ "items": [] })).is_empty());
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

/// Puts the control plane back as the test found it when dropped, whether the test passed,
/// failed or panicked: the release gone, and with it the webhook configurations (failurePolicy
/// Fail with no pod behind them would refuse every SignalProcessing write of the other suites)
/// and the ClusterRoles; the test's namespaces gone; each CRD of [`CRDS`] as it was (schema,
/// labels, annotations: no Helm ownership left), or gone if it was not there.
struct Restore<'a> {
    cp: &'a ControlPlane,
    crds: Vec<(&'static str, Option<Value>)>,
}

impl<'a> Restore<'a> {
    fn new(cp: &'a ControlPlane) -> Self {
        let crds = CRDS
            .iter()
            .map(|name| {
                let json = cp.kubectl(&["get", "crd", name, "--ignore-not-found", "-o", "json"]).unwrap();
                (*name, (!json.trim().is_empty()).then(|| serde_json::from_str(&json).unwrap()))
            })
            .collect();
        Restore { cp, crds }
    }

    /// Each step is tried whatever the previous one did; failures are printed, not raised (a
    /// panic while unwinding would abort the whole binary).
    fn attempt(what: &str, result: anyhow::Result<String>) {
        if let Err(e) = result {
            eprintln!("restoring the control plane after the Helm test: {what}: {e:#}");
        }
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let cp = self.cp;
        let out = run(&mut helm_cmd(
            cp,
            &[
                "uninstall",
                RELEASE,
                "-n",
                NS,
                "--ignore-not-found",
                "--no-hooks",
                "--wait",
                "--timeout",
                "120s",
            ],
        ));
        if !out.status.success() {
            eprintln!("restoring: helm uninstall: {}", String::from_utf8_lossy(&out.stderr));
        }
        // What the uninstall would have removed, had it failed: the webhooks first, so that
        // the finalizers below may come off.
        for kinds in [
            "mutatingwebhookconfiguration,validatingwebhookconfiguration",
            "clusterrole,clusterrolebinding",
        ] {
            let selector = format!("app.kubernetes.io/instance={RELEASE}");
            Self::attempt(kinds, cp.kubectl(&["delete", kinds, "-l", &selector, "--ignore-not-found"]));
        }
        for ns in [NS, TEAM_NS] {
            let names = cp.kubectl(&["get", "signalprocessings", "-n", ns, "-o", "name"]);
            for name in names.as_deref().unwrap_or_default().lines() {
                let patch = r#"{"metadata":{"finalizers":null}}"#;
                Self::attempt(name, cp.kubectl(&["patch", name, "-n", ns, "--type=merge", "-p", patch]));
            }
        }
        Self::attempt(
            "the namespaces",
            cp.kubectl(&["delete", "namespace", NS, TEAM_NS, "--ignore-not-found", "--wait", "--timeout=120s"]),
        );
        for (name, before) in &self.crds {
            let result = match before {
                Some(crd) => {
                    let file = cp.dir.join(format!("helm-restore-{name}.json"));
                    std::fs::write(&file, as_replacement(crd).to_string())
                        .map_err(anyhow::Error::from)
                        .and_then(|()| cp.kubectl(&["replace", "-f", &file.to_string_lossy()]))
                }
                None => cp.kubectl(&["delete", "crd", name, "--ignore-not-found", "--wait", "--timeout=60s"]),
            };
            Self::attempt(name, result);
        }
    }
}

/// An object as read, made fit for `kubectl replace`: the same object (uid), whatever it is now
/// (no resourceVersion), without status (replaced apart).
fn as_replacement(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = object["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    object
}

/// What the test could leave behind or change, by `kind/name`: the namespaces (with their
/// phase), every cluster-wide kind it creates, and the labels, annotations and spec of each
/// CRD of [`CRDS`].
fn cluster_view(cp: &ControlPlane) -> BTreeMap<String, Value> {
    let mut view = BTreeMap::new();
    for ns in get_json(cp, &["namespaces"])["items"].as_array().unwrap() {
        let name = ns["metadata"]["name"].as_str().unwrap();
        view.insert(format!("namespace/{name}"), ns["status"]["phase"].clone());
    }
    let kinds = "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations,crds";
    for name in cp.kubectl(&["get", kinds, "-o", "name"]).unwrap().lines() {
        view.insert(name.to_string(), Value::Null);
    }
    for name in CRDS {
        let key = format!("customresourcedefinition.apiextensions.k8s.io/{name}");
        if view.contains_key(&key) {
            let crd = get_json(cp, &["crd", name]);
            let m = &crd["metadata"];
            view.insert(key, serde_json::json!([m["labels"], m["annotations"], crd["spec"]]));
        }
    }
    view
}

/// Each entry of `after` that is not in `before` or differs from it, and each one of `before`
/// missing from `after`; but for what `before` found terminating (another suite's namespace,
/// whose deletion may finish meanwhile).
fn differences(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> Vec<String> {
    let terminating = |k: &String| before.get(k).is_some_and(|v| v == "Terminating");
    let added = after
        .iter()
        .filter(|(k, _)| !terminating(k))
        .filter_map(|(k, v)| match before.get(k) {
            None => Some(format!("left behind: {k} {v}")),
            Some(b) if b != v => Some(format!("changed: {k}\nbefore: {b}\nafter:  {v}")),
            Some(_) => None,
        });
    let removed = before
        .keys()
        .filter(|k| !terminating(k) && !after.contains_key(*k))
        .map(|k| format!("gone: {k}"));
    added.chain(removed).collect()
}

#[test]
fn differences_name_what_was_added_changed_or_removed() {
    let view = |entries: &[(&str, Value)]| entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let (active, terminating) = (Value::from("Active"), Value::from("Terminating"));
    let before = view(&[
        ("crd/x", serde_json::json!({"l": 1})),
        ("crd/y", Value::Null),
        ("namespace/a", active.clone()),
        ("namespace/old", terminating.clone()),
        ("namespace/older", terminating.clone()),
    ]);
    assert!(differences(&before, &before).is_empty());
    let after = view(&[
        ("crd/x", serde_json::json!({"l": 2})),
        ("namespace/a", active.clone()),
        ("namespace/b", terminating),
        ("namespace/old", active),
    ]);
    let found = differences(&before, &after);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("changed: crd/x"), "{found:?}");
    assert_eq!(found[1], "left behind: namespace/b \"Terminating\"");
    assert_eq!(found[2], "gone: crd/y");
}
