//! The Helm chart (charts/audit-guard) with the real helm, no cluster needed: `helm lint
//! --strict`, `helm template` in each certificate mode, the values schema refusing bad values
//! with a clear message, and the drift test — the chart and the kustomize overlays rendered
//! with equivalent settings must give the same objects, so neither side changes alone.

#[path = "support/tools.rs"]
mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{json, Value};
use tools::*;

const LIKE_KUSTOMIZE: &str = "tests/fixtures/chart-values-like-kustomize.yaml";

fn values_like_kustomize() -> String {
    repo().join(LIKE_KUSTOMIZE).to_string_lossy().into_owned()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn env_of(deployment: &Value) -> BTreeMap<String, String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("<from>").to_string(),
            )
        })
        .collect()
}

#[test]
fn helm_lint_strict_is_clean_in_every_cert_mode() {
    for args in [
        vec![],
        vec!["--set", "certs.mode=cert-manager"],
        vec![
            "--set",
            "certs.mode=existing-secret",
            "--set",
            "certs.existingSecret.name=my-tls",
            "--set",
            "certs.existingSecret.caBundle=Y2E=",
        ],
        vec!["-f", LIKE_KUSTOMIZE],
        vec!["--set", "preDeleteCheck.enabled=true"],
    ] {
        let out = run(Command::new(helm())
            .args(["lint", "--strict"])
            .arg(chart_dir())
            .args(&args)
            .current_dir(repo()));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "helm lint --strict {args:?}:\n{text}");
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm lint --strict {args:?}:\n{text}"
        );
    }
}

#[test]
fn self_signed_mode_generates_a_ca_and_a_serving_certificate_for_the_service() {
    let objs = render_chart(&[]);
    let secret = find(&objs, "Secret", "audit-guard-webhook-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca = b64(&secret["data"]["ca.crt"]);
    let crt = b64(&secret["data"]["tls.crt"]);
    assert!(b64(&secret["data"]["tls.key"]).contains("PRIVATE KEY"));
    assert_chain(&ca, &crt, "audit-guard-webhook.audit-guard.svc");
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let hook = &find(&objs, kind, "audit-guard")["webhooks"][0];
        assert_eq!(b64(&hook["clientConfig"]["caBundle"]), ca, "{kind} trusts the generated CA");
        assert_eq!(hook["clientConfig"]["service"]["name"], "audit-guard-webhook");
    }
    let deployment = find(&objs, "Deployment", "audit-guard");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "audit-guard-webhook-tls"
    );
    // Nothing generated reaches the pod template: an upgrade that keeps the certificates
    // keeps the pods (the real install/upgrade is in tests/e2e/helm.rs).
    assert!(!deployment["spec"]["template"].to_string().contains("BEGIN CERTIFICATE"));
}

#[test]
fn cert_manager_mode_has_cert_manager_issue_and_inject_the_certificate() {
    let objs = render_chart(&["--set", "certs.mode=cert-manager"]);
    let cert = find(&objs, "Certificate", "audit-guard-webhook");
    assert_eq!(cert["spec"]["secretName"], "audit-guard-webhook-tls");
    assert_eq!(cert["spec"]["issuerRef"], json!({"name": "audit-guard-ca", "kind": "Issuer"}));
    find(&objs, "Issuer", "audit-guard-ca");
    assert!(!objs.iter().any(|o| o["kind"] == "Secret"), "cert-manager writes the Secret");
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let hook = find(&objs, kind, "audit-guard");
        assert_eq!(
            hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "audit-guard/audit-guard-webhook"
        );
        assert!(hook["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    }

    // An issuer of the admin's own: no CA of the chart's.
    let objs = render_chart(&[
        "--set",
        "certs.mode=cert-manager",
        "--set",
        "certs.certManager.issuerRef.name=corp-ca",
        "--set",
        "certs.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert_eq!(
        find(&objs, "Certificate", "audit-guard-webhook")["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer"})
    );
    assert!(!objs.iter().any(|o| o["kind"] == "Issuer"));
}

#[test]
fn existing_secret_mode_uses_the_named_secret_and_the_given_ca_bundle() {
    let objs = render_chart(&[
        "--set",
        "certs.mode=existing-secret",
        "--set",
        "certs.existingSecret.name=corp-webhook-tls",
        "--set",
        "certs.existingSecret.caBundle=Y29ycC1jYQ==",
    ]);
    assert!(!objs.iter().any(|o| o["kind"] == "Secret" || o["kind"] == "Certificate"));
    let deployment = find(&objs, "Deployment", "audit-guard");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "corp-webhook-tls"
    );
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        assert_eq!(
            find(&objs, kind, "audit-guard")["webhooks"][0]["clientConfig"]["caBundle"],
            "Y29ycC1jYQ=="
        );
    }
}

/// Mutual TLS on the webhook is on by default (the CA from the admin's ConfigMap, mounted and
/// named to serve), and off only when asked.
#[test]
fn the_webhook_asks_for_the_api_servers_client_certificate_unless_told_not_to() {
    let on = render_chart(&[]);
    let deployment = find(&on, "Deployment", "audit-guard");
    assert_eq!(
        env_of(deployment).get("AUDIT_GUARD_CLIENT_CA_FILE").map(String::as_str),
        Some("/etc/audit-guard/webhook-client-ca/ca.crt")
    );
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().any(|v| v["configMap"]["name"] == "audit-guard-webhook-client-ca"),
        "{volumes:?}"
    );
    let named = render_chart(&["--set", "webhook.clientCA.configMap=apiserver-client-ca"]);
    assert!(find(&named, "Deployment", "audit-guard")
        .to_string()
        .contains("\"apiserver-client-ca\""));
    let off = render_chart(&["--set", "webhook.clientCA.enabled=false"]);
    let deployment = find(&off, "Deployment", "audit-guard");
    assert!(!env_of(deployment).contains_key("AUDIT_GUARD_CLIENT_CA_FILE"));
    assert!(!deployment.to_string().contains("webhook-client-ca"), "{deployment}");
}

#[test]
fn values_reach_the_pods_and_the_webhooks() {
    let objs = render_chart(&[
        "--set",
        "controller.watchNamespaces={team-a,team-b}",
        "--set",
        "controller.retention=12h",
        "--set",
        "controller.breakGlassGroup=corp:sre",
        "--set",
        "controller.identity=system:serviceaccount:x:y",
        "--set",
        "datastorage.enabled=false",
        "--set",
        "datastorage.externalURL=https://kubernaut-ds.kubernaut.svc:8080",
        "--set",
        "datastorage.apiMode=events",
        "--set",
        "replicas=1",
        "--set",
        "image.tag=9.9.9",
        "--set",
        "commonLabels.team=compliance",
    ]);
    let deployment = find(&objs, "Deployment", "audit-guard");
    let env = env_of(deployment);
    assert_eq!(env["AUDIT_GUARD_NAMESPACES"], "team-a,team-b");
    assert_eq!(env["AUDIT_GUARD_RETENTION"], "12h");
    assert_eq!(env["AUDIT_GUARD_BREAK_GLASS_GROUP"], "corp:sre");
    assert_eq!(env["AUDIT_GUARD_CONTROLLER_IDENTITY"], "system:serviceaccount:x:y");
    assert_eq!(env["DATASTORAGE_URL"], "https://kubernaut-ds.kubernaut.svc:8080");
    assert_eq!(env["DATASTORAGE_API"], "events");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/audit-guard/audit-guard:9.9.9"
    );
    assert!(
        !objs
            .iter()
            .any(|o| o["metadata"]["name"].as_str().unwrap_or("").contains("datastorage")),
        "no Data Storage objects with an external one"
    );
    assert!(
        !objs.iter().any(|o| o["kind"] == "PodDisruptionBudget"),
        "one replica: no PDB blocking drains"
    );
    assert!(objs
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .all(|o| o["metadata"]["labels"]["team"] == "compliance"));
    // A finalizer is only added where a controller will take it off again.
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let hook = &find(&objs, kind, "audit-guard")["webhooks"][0];
        assert_eq!(
            hook["namespaceSelector"],
            json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}),
            "{kind}"
        );
    }
    // The identity reaches serve (above), never the webhook's match conditions: no identity,
    // the controller's included, is exempt from the check that Data Storage holds the record.
    let validating = find(&objs, "ValidatingWebhookConfiguration", "audit-guard");
    assert!(!validating.to_string().contains("userInfo"), "{validating}");
}

/// Renders the chart with a values file written from `yaml`.
fn render_with_values(yaml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, yaml).unwrap();
    render_chart(&["-f", file.to_str().unwrap()])
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// Names of the entries of a list of named objects (env, volumes, mounts).
fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map_or(Vec::new(), |a| a.iter().filter_map(|e| e["name"].as_str()).collect())
}

const OPERATIONAL_VALUES: &str = r#"
image: {registry: registry.corp:5000/, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", tag: "9.9.9"}
imagePullSecrets: [{name: corp-pull}]
logLevel: info,audit_guard=debug
logFormat: text
extraArgs: ["--buffer-size=20000"]
extraEnv: [{name: SERVE_EXTRA, value: "1"}]
extraVolumes: [{name: serve-extra, configMap: {name: serve-extra}}]
extraVolumeMounts: [{name: serve-extra, mountPath: /etc/serve-extra}]
serviceAccount: {create: true, name: guard-sa, annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::1:role/x"}}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]
nodeSelector: {pool: serve}
tolerations: [{key: dedicated, operator: Exists}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [serve]}]}]}}}
podDisruptionBudget: {maxUnavailable: 1}
webhook: {timeoutSeconds: {mutating: 3, validating: 25}}
crds: {install: false}
datastorage:
  priorityClassName: audit-critical
  nodeSelector: {pool: storage}
  tolerations: [{key: storage, operator: Exists}]
  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [storage]}]}]}}}
  topologySpreadConstraints: [{maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}]
  podDisruptionBudget: {minAvailable: "50%"}
  extraArgs: ["--max-client-connections=2048"]
  extraEnv: [{name: DS_EXTRA, value: "2"}]
  extraVolumes: [{name: ds-extra, secret: {secretName: ds-extra}}]
  extraVolumeMounts: [{name: ds-extra, mountPath: /etc/ds-extra}]
monitoring:
  prometheusRule:
    enabled: true
    additionalRuleLabels: {team: compliance}
    runbookBaseURL: https://wiki.corp/audit-guard/runbook/
    disabled: {AuditGuardBreakGlassUsed: true}
    overrides: {AuditGuardDeletionStuck: {for: 20m, severity: warning}}
"#;

#[test]
fn operational_values_reach_the_rendered_objects() {
    let objs = render_with_values(OPERATIONAL_VALUES);
    let image =
        "registry.corp:5000/ghcr.io/audit-guard/audit-guard@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    // serve
    let serve = find(&objs, "Deployment", "audit-guard");
    let spec = pod_spec(serve);
    let container = &spec["containers"][0];
    assert_eq!(container["image"], image, "the digest wins over the tag");
    assert_eq!(container["args"], json!(["serve", "--buffer-size=20000"]));
    let env = env_of(serve);
    assert_eq!(env["SERVE_EXTRA"], "1");
    assert_eq!(env["LOG_FORMAT"], "text");
    assert_eq!(env["RUST_LOG"], "info,audit_guard=debug");
    assert!(names(&spec["volumes"]).contains(&"serve-extra"));
    assert!(names(&container["volumeMounts"]).contains(&"serve-extra"));
    assert_eq!(spec["serviceAccountName"], "guard-sa");
    assert_eq!(env["AUDIT_GUARD_CONTROLLER_IDENTITY"], "system:serviceaccount:audit-guard:guard-sa");
    assert_eq!(spec["topologySpreadConstraints"][0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spec["nodeSelector"], json!({"pool": "serve"}));
    assert_eq!(spec["tolerations"][0]["key"], "dedicated");
    assert!(
        spec["affinity"]["nodeAffinity"].is_object(),
        "the given affinity replaces the default"
    );
    assert!(spec["affinity"]["podAntiAffinity"].is_null());
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "corp-pull"}]));
    let sa = find(&objs, "ServiceAccount", "guard-sa");
    assert_eq!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], "arn:aws:iam::1:role/x");
    for binding in ["audit-guard-controller", "audit-guard-datastorage-writer"] {
        assert_eq!(
            find(&objs, "ClusterRoleBinding", binding)["subjects"][0]["name"],
            "guard-sa",
            "{binding}"
        );
    }
    assert_eq!(
        find(&objs, "RoleBinding", "audit-guard-leader-election")["subjects"][0]["name"],
        "guard-sa"
    );
    let pdb = find(&objs, "PodDisruptionBudget", "audit-guard");
    assert_eq!(
        pdb["spec"],
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "audit-guard"}}})
    );
    assert_eq!(
        find(&objs, "MutatingWebhookConfiguration", "audit-guard")["webhooks"][0]["timeoutSeconds"],
        3
    );
    assert_eq!(
        find(&objs, "ValidatingWebhookConfiguration", "audit-guard")["webhooks"][0]["timeoutSeconds"],
        25
    );
    assert!(
        !objs.iter().any(|o| o["kind"] == "CustomResourceDefinition"),
        "crds.install false: the CRD is left to Kubernaut's chart"
    );

    // Data Storage
    let ds = find(&objs, "Deployment", "audit-guard-datastorage");
    let spec = pod_spec(ds);
    let container = &spec["containers"][0];
    assert_eq!(container["image"], image);
    assert_eq!(spec["initContainers"][0]["image"], image);
    assert_eq!(
        container["args"].as_array().unwrap().last().unwrap(),
        "--max-client-connections=2048"
    );
    let env = env_of(ds);
    assert_eq!(env["DS_EXTRA"], "2");
    assert_eq!(env["RUST_LOG"], "info,audit_guard=debug");
    assert!(names(&spec["volumes"]).contains(&"ds-extra"));
    assert!(names(&container["volumeMounts"]).contains(&"ds-extra"));
    assert_eq!(spec["priorityClassName"], "audit-critical");
    assert_eq!(spec["nodeSelector"], json!({"pool": "storage"}));
    assert_eq!(spec["topologySpreadConstraints"][0]["maxSkew"], 2);
    assert_eq!(
        find(&objs, "PodDisruptionBudget", "audit-guard-datastorage")["spec"]["minAvailable"],
        "50%"
    );

    // The retention CronJob: pulls from the same registry, runs where Data Storage may.
    let cron = find(&objs, "CronJob", "audit-guard-datastorage-retention");
    let spec = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["image"], image);
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "corp-pull"}]));
    assert_eq!(spec["priorityClassName"], "audit-critical");
    assert_eq!(spec["nodeSelector"], json!({"pool": "storage"}));
    assert_eq!(spec["tolerations"][0]["key"], "storage");
    assert!(spec["affinity"]["nodeAffinity"].is_object());

    // Alerts: labels added, runbooks moved, the disabled one gone, every other one kept.
    let rule = find(&objs, "PrometheusRule", "audit-guard");
    let rules = alerts(&rule["spec"]);
    let shipped = alerts(&chart_rule_spec());
    assert_eq!(rules.len(), shipped.len() - 1);
    assert!(!rules.iter().any(|(_, r)| r["alert"] == "AuditGuardBreakGlassUsed"));
    let stuck = &rules.iter().find(|(_, r)| r["alert"] == "AuditGuardDeletionStuck").unwrap().1;
    assert_eq!((&stuck["for"], &stuck["labels"]["severity"]), (&json!("20m"), &json!("warning")));
    let shipped_stuck = &shipped.iter().find(|(_, r)| r["alert"] == "AuditGuardDeletionStuck").unwrap().1;
    assert_eq!(stuck["expr"], shipped_stuck["expr"]);
    for (_, r) in &rules {
        let name = r["alert"].as_str().unwrap();
        assert_eq!(r["labels"]["team"], "compliance", "{name}");
        assert!(r["labels"]["severity"].is_string(), "{name} keeps its severity");
        assert_eq!(
            r["annotations"]["runbook_url"],
            format!("https://wiki.corp/audit-guard/runbook#{}", name.to_lowercase()),
            "{name}"
        );
    }
}

#[test]
fn image_registry_and_tag_compose_without_a_digest_and_an_existing_service_account_is_used() {
    let objs = render_with_values(
        "image: {registry: mirror.corp, tag: \"1.2.3\"}\nserviceAccount: {create: false, name: platform-sa}\nreplicas: 1\n",
    );
    let serve = find(&objs, "Deployment", "audit-guard");
    assert_eq!(
        pod_spec(serve)["containers"][0]["image"],
        "mirror.corp/ghcr.io/audit-guard/audit-guard:1.2.3"
    );
    assert_eq!(pod_spec(serve)["serviceAccountName"], "platform-sa");
    assert!(
        !objs
            .iter()
            .any(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] != "audit-guard-datastorage"),
        "serviceAccount.create false: only Data Storage's own"
    );
    assert!(
        !objs
            .iter()
            .any(|o| o["kind"] == "PodDisruptionBudget" && o["metadata"]["name"] == "audit-guard"),
        "one replica and minAvailable: no PDB that would block every drain"
    );
    assert!(
        objs.iter().any(|o| o["kind"] == "CustomResourceDefinition"),
        "crds.install defaults to true"
    );
}

fn annotation<'a>(o: &'a Value, key: &str) -> &'a str {
    o["metadata"]["annotations"][key].as_str().unwrap_or("")
}

/// `helm test` creates a SignalProcessing where the webhooks apply and deletes it, waiting: the
/// create needs the mutating webhook's answer, the delete the stored record.
#[test]
fn helm_test_round_trips_a_signal_processing_where_the_webhooks_apply() {
    let objs = render_chart(&[]);
    let sp = find(&objs, "SignalProcessing", "audit-guard-helm-test");
    assert_eq!(annotation(sp, "helm.sh/hook"), "test");
    assert!(
        annotation(sp, "helm.sh/hook-delete-policy").contains("hook-succeeded"),
        "Helm deletes it and waits for the finalizer to come off"
    );
    assert_eq!(sp["metadata"]["namespace"], "audit-guard");
    let watched = render_chart(&["--set", "controller.watchNamespaces={team-a,team-b}"]);
    assert_eq!(
        find(&watched, "SignalProcessing", "audit-guard-helm-test")["metadata"]["namespace"],
        "team-a",
        "a namespace the webhooks and the controller cover"
    );
    let off = render_chart(&["--set", "helmTest.enabled=false"]);
    assert!(!off.iter().any(|o| o["kind"] == "SignalProcessing"));
}

#[test]
fn the_pre_delete_check_is_opt_in_and_may_only_list_signal_processings() {
    assert!(
        !render_chart(&[])
            .iter()
            .any(|o| o["metadata"]["name"] == "audit-guard-pre-delete-check"),
        "off by default"
    );
    let objs = render_chart(&[
        "--set",
        "preDeleteCheck.enabled=true",
        "--set",
        "imagePullSecrets[0].name=corp-pull",
    ]);
    let name = "audit-guard-pre-delete-check";
    let job = find(&objs, "Job", name);
    let role = find(&objs, "ClusterRole", name);
    let binding = find(&objs, "ClusterRoleBinding", name);
    let account = find(&objs, "ServiceAccount", name);
    for o in [job, role, binding, account] {
        assert_eq!(annotation(o, "helm.sh/hook"), "pre-delete", "{}", key(o));
    }
    // The Job runs after its RBAC exists.
    let weight = |o: &Value| annotation(o, "helm.sh/hook-weight").parse::<i32>().unwrap();
    for o in [role, binding, account] {
        assert!(weight(o) < weight(job), "{}", key(o));
    }
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["kubernaut.ai"], "resources": ["signalprocessings"], "verbs": ["list"]}])
    );
    assert_eq!(binding["subjects"][0]["name"], name);
    assert_eq!(binding["roleRef"]["name"], name);
    assert_eq!(job["spec"]["backoffLimit"], 0, "a refusal is final: the uninstall stops");
    let spec = pod_spec(job);
    assert_eq!(spec["serviceAccountName"], name);
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "corp-pull"}]));
    // audit-guard's own image, which the cluster already pulls for the webhook.
    let webhook = find(&objs, "Deployment", "audit-guard");
    assert_eq!(spec["containers"][0]["image"], pod_spec(webhook)["containers"][0]["image"]);
    assert_eq!(spec["containers"][0]["args"], json!(["pre-delete-check"]));
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn the_schema_refuses_bad_values_with_a_clear_message() {
    // (values, what the message must say)
    let cases: &[(&[&str], &[&str])] = &[
        (&["--set", "replicas=two"], &["/replicas", "got string, want integer"]),
        (
            &["--set", "certs.mode=self-made"],
            &["/certs/mode", "self-signed", "cert-manager", "existing-secret"],
        ),
        (&["--set", "replica=3"], &["additional properties 'replica' not allowed"]),
        (
            &["--set", "controller.retenton=12h"],
            &["additional properties 'retenton' not allowed"],
        ),
        (
            &["--set", "controller.retention=12 hours"],
            &["/controller/retention", "does not match pattern"],
        ),
        (&["--set", "datastorage.enabled=false"], &["/datastorage/externalURL"]),
        (&["--set", "datastorage.apiMode=events"], &["/datastorage/apiMode"]),
        (
            &["--set", "datastorage.apiMode=unified"],
            &["/datastorage/apiMode", "signal-processing", "events"],
        ),
        (
            &["--set", "certs.mode=existing-secret"],
            &["/certs/existingSecret/name", "/certs/existingSecret/caBundle"],
        ),
        (
            &["--set", "monitoring.prometheusRule.enabled=yes"],
            &["/monitoring/prometheusRule/enabled", "want boolean"],
        ),
        (
            &["--set", "controller.watchNamespaces={Team_A}"],
            &["/controller/watchNamespaces/0"],
        ),
        (&["--set", "image.digest=0123abcd"], &["/image/digest", "does not match pattern"]),
        (&["--set", "extraArg={--x}"], &["additional properties 'extraArg' not allowed"]),
        (
            &["--set", "datastorage.extraVolume[0].name=x"],
            &["additional properties 'extraVolume' not allowed"],
        ),
        (
            &["--set", "serviceAccount.annotation.a=b"],
            &["additional properties 'annotation' not allowed"],
        ),
        (
            &["--set", "webhook.timeoutSeconds.validating=45"],
            &["/webhook/timeoutSeconds/validating"],
        ),
        (
            &["--set", "webhook.timeoutSeconds.validate=10"],
            &["additional properties 'validate' not allowed"],
        ),
        (
            &["--set", "podDisruptionBudget.maxUnavailible=1"],
            &["additional properties 'maxUnavailible' not allowed"],
        ),
        (&["--set", "logFormat=yaml"], &["/logFormat", "json", "text"]),
        (&["--set", "crds.instal=false"], &["additional properties 'instal' not allowed"]),
        (
            &["--set", "monitoring.prometheusRule.runbookBaseUrl=https://x"],
            &["additional properties 'runbookBaseUrl' not allowed"],
        ),
        (
            &["--set", "monitoring.prometheusRule.runbookBaseURL=wiki/runbook"],
            &["/monitoring/prometheusRule/runbookBaseURL"],
        ),
        (
            &["--set", "datastorage.priorityClass=x"],
            &["additional properties 'priorityClass' not allowed"],
        ),
        (
            &["--set", "preDeleteCheck.enable=true"],
            &["additional properties 'enable' not allowed"],
        ),
        (&["--set", "helmTest.enabled=maybe"], &["/helmTest/enabled", "want boolean"]),
    ];
    let mut wrong = Vec::new();
    for (args, must_say) in cases {
        let out = helm_template(args);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            wrong.push(format!("{args:?} was accepted"));
        } else if !err.contains("values don't meet the specifications of the schema") || must_say.iter().any(|m| !err.contains(m)) {
            wrong.push(format!("{args:?}: the message does not say {must_say:?}:\n{err}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn chart_and_crd_versions_follow_the_crate() {
    let chart: Value = serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["apiVersion"], "v2", "a Helm 3 chart");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion is the crate's version"
    );
    let annotations = &chart["annotations"];
    let images: Value = serde_yaml::from_str(annotations["artifacthub.io/images"].as_str().unwrap()).unwrap();
    assert_eq!(
        images[0]["image"],
        format!("ghcr.io/audit-guard/audit-guard:{}", env!("CARGO_PKG_VERSION")),
        "Artifact Hub's image list names the default image"
    );
    assert_eq!(annotations["artifacthub.io/license"], env!("CARGO_PKG_LICENSE"));
    let changes: Value = serde_yaml::from_str(annotations["artifacthub.io/changes"].as_str().unwrap()).unwrap();
    let kinds = ["added", "changed", "deprecated", "removed", "fixed", "security"];
    assert!(changes
        .as_array()
        .unwrap()
        .iter()
        .all(|c| kinds.contains(&c["kind"].as_str().unwrap_or("")) && c["description"].is_string()));
    for field in ["home", "sources", "maintainers", "keywords"] {
        assert!(!chart[field].is_null(), "Chart.yaml {field}");
    }
    assert_eq!(
        std::fs::read_to_string(chart_dir().join("files/crds/signalprocessings.kubernaut.ai.yaml")).unwrap(),
        audit_guard::crd::crd_yaml().unwrap(),
        "charts/audit-guard/files/crds/ is what `audit-guard crd` prints: run `make manifests`"
    );
}

// ---------------------------------------------------------------------------------------
// Drift: the chart against the kustomize overlays.

/// Labels Helm adds to the chart's objects that kustomize has no counterpart for.
const HELM_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// Differences that are meant to be, each with its reason: (object, path or "" for the whole
/// object, side that has it). The test also fails when one of them is no longer seen.
const EXPECTED: &[(&str, &str, &str, &str)] = &[
    (
        "Namespace audit-guard",
        "",
        "kustomize",
        "Helm installs into the release namespace (--create-namespace) and does not own it; NOTES.txt says to label it restricted",
    ),
    (
        "Secret audit-guard/audit-guard-webhook-tls",
        "data.ca.crt",
        "chart",
        "self-signed mode keeps its CA in the Secret, so that upgrades reuse it",
    ),
    (
        "CustomResourceDefinition signalprocessings.kubernaut.ai",
        "metadata.annotations",
        "chart",
        "crds.keep: uninstalling the release leaves the CRD, and so every SignalProcessing, in place",
    ),
];

fn key(o: &Value) -> String {
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!(
            "{} {ns}/{}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["name"].as_str().unwrap_or("?")
        ),
        None => format!(
            "{} {}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["name"].as_str().unwrap_or("?")
        ),
    }
}

/// Certificates are generated on each side: compare that they are there, not their bytes.
fn mask_generated(o: &mut Value) {
    if o["kind"] == "Secret" && o["type"] == "kubernetes.io/tls" {
        if let Some(data) = o.get_mut("data").and_then(Value::as_object_mut) {
            for v in data.values_mut() {
                *v = json!("<generated>");
            }
        }
    }
    if let Some(hooks) = o.get_mut("webhooks").and_then(Value::as_array_mut) {
        for h in hooks {
            if let Some(bundle) = h.pointer_mut("/clientConfig/caBundle") {
                *bundle = json!("<generated>");
            }
        }
    }
}

fn normalize_chart(mut o: Value) -> Value {
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            for l in HELM_LABELS {
                labels.remove(*l);
            }
            if labels.is_empty() {
                meta.remove("labels");
            }
        }
    }
    mask_generated(&mut o);
    o
}

/// kustomize's secretGenerator names its Secret <name>-<hash> and rewrites the references.
fn normalize_kustomize(objs: Vec<Value>) -> Vec<Value> {
    let mut renames = BTreeMap::new();
    for o in &objs {
        let name = o["metadata"]["name"].as_str().unwrap_or("");
        if o["kind"] == "Secret" {
            if let Some((base, hash)) = name.rsplit_once('-') {
                if base == "audit-guard-webhook-tls" && hash.len() == 10 {
                    renames.insert(name.to_string(), base.to_string());
                }
            }
        }
    }
    fn rename(v: &mut Value, renames: &BTreeMap<String, String>) {
        match v {
            Value::String(s) => {
                if let Some(n) = renames.get(s.as_str()) {
                    *s = n.clone();
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| rename(x, renames)),
            Value::Object(m) => m.values_mut().for_each(|x| rename(x, renames)),
            _ => {}
        }
    }
    objs.into_iter()
        .map(|mut o| {
            rename(&mut o, &renames);
            mask_generated(&mut o);
            o
        })
        .collect()
}

/// A list whose elements all have distinct names is compared by name (env, containers, ports...).
fn by_name(a: &[Value]) -> Option<BTreeMap<String, &Value>> {
    let m: BTreeMap<String, &Value> = a
        .iter()
        .filter_map(|x| x.get("name").and_then(|n| n.as_str()).map(|n| (n.to_string(), x)))
        .collect();
    (m.len() == a.len() && !a.is_empty()).then_some(m)
}

/// Lists of named entries (volumes, env, containers...) where a name appears twice: the API
/// server's server-side apply refuses such an object ("duplicate entries for key"), and
/// client-side apply silently keeps one of them.
fn duplicate_names(path: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| duplicate_names(&format!("{path}.{k}"), x, out)),
        Value::Array(a) => {
            let names: Vec<&str> = a.iter().filter_map(|x| x.get("name").and_then(Value::as_str)).collect();
            if names.len() == a.len() {
                let mut seen = BTreeSet::new();
                out.extend(names.iter().filter(|n| !seen.insert(**n)).map(|n| format!("{path}[name={n}]")));
            }
            a.iter()
                .enumerate()
                .for_each(|(i, x)| duplicate_names(&format!("{path}[{i}]"), x, out));
        }
        _ => {}
    }
}

/// Every difference between two values: (path, in kustomize, in chart).
fn diff(path: &str, k: Option<&Value>, c: Option<&Value>, out: &mut Vec<(String, String, String)>) {
    let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
    let join = |p: &str, s: &str| if p.is_empty() { s.to_string() } else { format!("{p}.{s}") };
    match (k, c) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                diff(&join(path, key), a.get(key), b.get(key), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => match (by_name(a), by_name(b)) {
            (Some(ma), Some(mb)) => {
                let names: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
                for n in names {
                    diff(&format!("{path}[name={n}]"), ma.get(n).copied(), mb.get(n).copied(), out);
                }
                let (oa, ob): (Vec<_>, Vec<_>) = (ma.keys().collect(), mb.keys().collect());
                let order = |v: &Vec<Value>| v.iter().map(|x| x["name"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>();
                if oa.len() == ob.len() && oa == ob && order(a) != order(b) {
                    out.push((format!("{path} (order)"), format!("{:?}", order(a)), format!("{:?}", order(b))));
                }
            }
            _ if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    diff(&format!("{path}[{i}]"), Some(x), Some(y), out);
                }
            }
            _ => out.push((path.to_string(), show(k), show(c))),
        },
        (a, b) if a != b => out.push((path.to_string(), show(a), show(b))),
        _ => {}
    }
}

/// Compares the kustomize overlay with the chart rendered with equivalent values; panics with
/// every unexpected difference, each naming the template that rendered the chart's side.
fn assert_no_drift(overlay: &str, chart_args: &[&str]) {
    let kustomize = normalize_kustomize(render_overlay(overlay, env!("CARGO_BIN_EXE_audit-guard")));
    // `helm test`'s objects are not installed (kustomize has no counterpart).
    let mut args = vec!["--skip-tests", "-f", LIKE_KUSTOMIZE_ARG.as_str()];
    args.extend_from_slice(chart_args);
    let (chart, sources) = render_chart_with_sources(&args);
    let chart: Vec<Value> = chart.into_iter().map(normalize_chart).collect();

    let mut duplicates = Vec::new();
    for (side, objs) in [("kustomize", &kustomize), ("chart", &chart)] {
        for o in objs {
            duplicate_names(&format!("{side}: {}", key(o)), o, &mut duplicates);
        }
    }
    assert!(
        duplicates.is_empty(),
        "entries named twice in one list:\n  {}",
        duplicates.join("\n  ")
    );

    let k: BTreeMap<String, &Value> = kustomize.iter().map(|o| (key(o), o)).collect();
    let c: BTreeMap<String, &Value> = chart.iter().map(|o| (key(o), o)).collect();
    let mut found: Vec<(String, String, String, String)> = Vec::new(); // (object, path, side, text)
    for name in k.keys().chain(c.keys()).collect::<BTreeSet<_>>() {
        match (k.get(name), c.get(name)) {
            (Some(_), None) => found.push((name.clone(), String::new(), "kustomize".into(), "only in kustomize".into())),
            (None, Some(_)) => found.push((name.clone(), String::new(), "chart".into(), "only in the chart".into())),
            (Some(a), Some(b)) => {
                let mut d = Vec::new();
                diff("", Some(a), Some(b), &mut d);
                for (path, kv, cv) in d {
                    let side = match (kv.as_str(), cv.as_str()) {
                        ("(absent)", _) => "chart",
                        (_, "(absent)") => "kustomize",
                        _ => "both",
                    };
                    found.push((name.clone(), path, side.into(), format!("kustomize: {kv}\n      chart:     {cv}")));
                }
            }
            (None, None) => unreachable!(),
        }
    }
    let expected = |o: &str, p: &str, s: &str| EXPECTED.iter().any(|(eo, ep, es, _)| *eo == o && *ep == p && *es == s);
    let unexpected: Vec<String> = found
        .iter()
        .filter(|(o, p, s, _)| !expected(o, p, s))
        .map(|(o, p, _, t)| {
            let template = sources
                .get(o)
                .map_or(String::from("(no chart template renders it)"), |s| format!("charts/{s}"));
            format!(
                "  {o}  [{template}]\n    {}\n      {t}",
                if p.is_empty() { "(whole object)" } else { p }
            )
        })
        .collect();
    // Which expected differences each overlay can show: only self-managed keeps the CA in the
    // webhook's Secret; the kubernaut overlay ships no Data Storage (so no database Secrets).
    let applies =
        |eo: &str, ep: &str| (overlay == "self-managed" || ep != "data.ca.crt") && !(overlay == "kubernaut" && eo.contains("datastorage"));
    let stale: Vec<String> = EXPECTED
        .iter()
        .filter(|(eo, ep, es, _)| applies(eo, ep) && !found.iter().any(|(o, p, s, _)| o == eo && p == ep && s == es))
        .map(|(o, p, s, why)| format!("  {o} {p} (only in {s}: {why})"))
        .collect();
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "the chart and manifests/overlays/{overlay} differ (chart rendered with {LIKE_KUSTOMIZE} {chart_args:?}).\n\
         Change the other side too (or, if the difference is meant to be, list it in EXPECTED in tests/helm_chart.rs):\n{}\n{}",
        unexpected.join("\n"),
        if stale.is_empty() {
            String::new()
        } else {
            format!(
                "Expected differences no longer seen (remove them from EXPECTED):\n{}",
                stale.join("\n")
            )
        }
    );
}

static LIKE_KUSTOMIZE_ARG: std::sync::LazyLock<String> = std::sync::LazyLock::new(values_like_kustomize);

/// The rendered chart and, per object key, the template that rendered it (`# Source:`).
fn render_chart_with_sources(args: &[&str]) -> (Vec<Value>, BTreeMap<String, String>) {
    let out = helm_template(args);
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut objs = Vec::new();
    let mut sources = BTreeMap::new();
    for doc in text.split("\n---") {
        let source = doc.lines().find_map(|l| l.strip_prefix("# Source: ")).map(str::to_string);
        for o in yaml_docs(doc) {
            if let Some(s) = &source {
                sources.insert(key(&o), s.clone());
            }
            objs.push(o);
        }
    }
    (objs, sources)
}

#[test]
fn the_chart_renders_what_the_cert_manager_overlay_renders() {
    assert_no_drift("cert-manager", &["--set", "certs.mode=cert-manager"]);
}

#[test]
fn the_chart_renders_what_the_self_managed_overlay_renders() {
    assert_no_drift("self-managed", &["--set", "certs.mode=self-signed"]);
}

/// Kubernaut's own Data Storage in events mode: no Data Storage of audit-guard's, the token of an
/// identity of its own bound to Kubernaut's client role only, sent over plain HTTP by choice.
#[test]
fn the_chart_renders_what_the_kubernaut_overlay_renders() {
    assert_no_drift(
        "kubernaut",
        &[
            "--set",
            "certs.mode=cert-manager",
            "--set",
            "datastorage.enabled=false",
            "--set",
            "datastorage.externalURL=http://data-storage-service.kubernaut.svc.cluster.local:8080",
            "--set",
            "datastorage.apiMode=events",
            "--set",
            "datastorage.tokenAudience=",
            "--set",
            "datastorage.kubernautClientRole.enabled=true",
            "--set",
            "datastorage.allowPlainHTTPToken=true",
        ],
    );
}
