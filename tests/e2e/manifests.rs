//! The shipped manifests on a real API server, installed once per test binary: the rendered
//! self-managed overlay (with the CRD component) is accepted object by object, the
//! ServiceAccounts hold exactly the permissions their workloads need (SubjectAccessReview,
//! each check listed below), and the controller runs a full create → complete → delete cycle
//! on its ServiceAccount's token. One test per concern.

use crate::support;
use crate::tools;

use std::time::Duration;

use audit_guard::crd::SignalProcessing;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::datastorage::{binary, Auth, DataStorage, Options, Serve};
use support::*;

/// (user, verb, (group, resource), namespace, name, expected to be allowed)
type Check<'a> = (&'a str, &'a str, (&'a str, &'a str), Option<&'a str>, Option<&'a str>, bool);

const CONTROLLER_SA: &str = "system:serviceaccount:audit-guard:audit-guard";
const DATASTORAGE_SA: &str = "system:serviceaccount:audit-guard:audit-guard-datastorage";

/// Renders the self-managed overlay the way `make manifests` does, with fresh certificates.
fn render_self_managed() -> String {
    tools::render_overlay_text("self-managed", &binary())
}

/// A SubjectAccessReview for a ServiceAccount; `resource` may name a subresource ("x/status").
async fn can(client: &kube::Client, user: &str, verb: &str, group: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> bool {
    let (resource, subresource) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:audit-guard".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: subresource.map(Into::into),
                namespace: ns.map(Into::into),
                name: name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &sar).await.unwrap();
    answer.status.map(|s| s.allowed).unwrap_or(false)
}

/// What installing the overlay printed, and the rendered text.
struct Installed {
    rendered: String,
    applied: String,
    /// `kubectl get -f` of the rendered file, before the webhook configurations were removed.
    names: String,
}

static INSTALLED: tokio::sync::OnceCell<Installed> = tokio::sync::OnceCell::const_new();

/// Installs the rendered self-managed overlay (server-side apply, as an admin would) once for
/// all tests here, then takes the webhook configurations out again: no pods run on this
/// control plane (no kubelet), so the webhook Service has no endpoints, and the tests below
/// create SignalProcessings.
async fn installed() -> &'static Installed {
    INSTALLED
        .get_or_init(|| async {
            // The webhook configurations cover every namespace while they are installed.
            let _cluster = support::cluster_exclusive().await;
            let cp = control_plane();
            install_monitoring_crds(&admin_client().await).await;
            let rendered = render_self_managed();
            let file = cp.dir.join("self-managed.yaml");
            std::fs::write(&file, &rendered).unwrap();
            // Other suites apply the CRD with a field manager of their own.
            let applied = cp
                .kubectl(&["apply", "--server-side", "--force-conflicts", "-f", file.to_str().unwrap()])
                .unwrap();
            let names = cp.kubectl(&["get", "-f", file.to_str().unwrap(), "-o", "name"]).unwrap();
            let bundle = cp
                .kubectl(&[
                    "get",
                    "validatingwebhookconfiguration",
                    "audit-guard",
                    "-o",
                    "jsonpath={.webhooks[0].clientConfig.caBundle}",
                ])
                .unwrap();
            assert!(bundle.len() > 100, "caBundle set");
            cp.kubectl(&[
                "delete",
                "mutatingwebhookconfiguration,validatingwebhookconfiguration",
                "audit-guard",
            ])
            .unwrap();
            Installed { rendered, applied, names }
        })
        .await
}

#[tokio::test]
async fn every_rendered_object_is_accepted_and_created() {
    let cp = control_plane();
    let Installed { rendered, applied, names } = installed().await;
    let _cluster = support::cluster_shared().await;
    let expected_kinds = [
        "namespace/audit-guard",
        "customresourcedefinition.apiextensions.k8s.io/signalprocessings.kubernaut.ai",
        "serviceaccount/audit-guard",
        "serviceaccount/audit-guard-datastorage",
        "clusterrole.rbac.authorization.k8s.io/audit-guard-controller",
        "role.rbac.authorization.k8s.io/audit-guard-leader-election",
        "deployment.apps/audit-guard",
        "deployment.apps/audit-guard-datastorage",
        "service/audit-guard-webhook",
        "service/audit-guard-datastorage",
        "poddisruptionbudget.policy/audit-guard",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/audit-guard",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/audit-guard",
        "networkpolicy.networking.k8s.io/audit-guard",
        "servicemonitor.monitoring.coreos.com/audit-guard",
        "prometheusrule.monitoring.coreos.com/audit-guard",
    ];
    for kind in expected_kinds {
        assert!(applied.contains(kind), "{kind} not applied:\n{applied}");
    }
    assert_eq!(
        names.lines().count(),
        rendered.matches("\nkind: ").count() + usize::from(rendered.starts_with("kind: ")),
        "every object exists:\n{names}"
    );
    let tls = cp
        .kubectl(&["get", "secret", "-n", "audit-guard", "-o", "jsonpath={.items[*].type}"])
        .unwrap();
    assert!(tls.contains("kubernetes.io/tls"), "the webhook's TLS Secret: {tls}");
}

#[tokio::test]
async fn the_service_accounts_hold_exactly_what_their_workloads_need() {
    installed().await;
    let _cluster = support::cluster_shared().await;
    let client = admin_client().await;
    let sp = ("kubernaut.ai", "signalprocessings");
    let checks: &[Check] = &[
        // The controller: watch and patch SignalProcessings everywhere, delete (retention), Events, its Lease.
        (CONTROLLER_SA, "list", sp, None, None, true),
        (CONTROLLER_SA, "watch", sp, None, None, true),
        (CONTROLLER_SA, "get", sp, Some("team-a"), None, true),
        (CONTROLLER_SA, "patch", sp, Some("team-a"), None, true),
        (CONTROLLER_SA, "delete", sp, Some("team-a"), None, true),
        (CONTROLLER_SA, "create", ("events.k8s.io", "events"), Some("team-a"), None, true),
        (
            CONTROLLER_SA,
            "create",
            ("coordination.k8s.io", "leases"),
            Some("audit-guard"),
            None,
            true,
        ),
        (
            CONTROLLER_SA,
            "update",
            ("coordination.k8s.io", "leases"),
            Some("audit-guard"),
            Some("audit-guard-controller"),
            true,
        ),
        (
            CONTROLLER_SA,
            "get",
            ("coordination.k8s.io", "leases"),
            Some("audit-guard"),
            Some("audit-guard-controller"),
            true,
        ),
        // ... and nothing more.
        (CONTROLLER_SA, "create", sp, Some("team-a"), None, false),
        (CONTROLLER_SA, "update", sp, Some("team-a"), None, false),
        (CONTROLLER_SA, "deletecollection", sp, Some("team-a"), None, false),
        (
            CONTROLLER_SA,
            "patch",
            ("kubernaut.ai", "signalprocessings/status"),
            Some("team-a"),
            None,
            false,
        ),
        (
            CONTROLLER_SA,
            "update",
            ("coordination.k8s.io", "leases"),
            Some("audit-guard"),
            Some("kube-scheduler"),
            false,
        ),
        (
            CONTROLLER_SA,
            "update",
            ("coordination.k8s.io", "leases"),
            Some("kube-system"),
            Some("audit-guard-controller"),
            false,
        ),
        (CONTROLLER_SA, "get", ("", "secrets"), Some("audit-guard"), None, false),
        (CONTROLLER_SA, "list", ("", "pods"), None, None, false),
        (
            CONTROLLER_SA,
            "create",
            ("authentication.k8s.io", "tokenreviews"),
            None,
            None,
            false,
        ),
        (
            CONTROLLER_SA,
            "update",
            ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
            None,
            None,
            false,
        ),
        // Data Storage: TokenReview only.
        (
            DATASTORAGE_SA,
            "create",
            ("authentication.k8s.io", "tokenreviews"),
            None,
            None,
            true,
        ),
        (DATASTORAGE_SA, "list", sp, None, None, false),
        (DATASTORAGE_SA, "get", ("", "secrets"), Some("audit-guard"), None, false),
        (
            DATASTORAGE_SA,
            "create",
            ("coordination.k8s.io", "leases"),
            Some("audit-guard"),
            None,
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for (user, verb, (group, resource), ns, name, expected) in checks {
        let allowed = can(&client, user, verb, group, resource, *ns, *name).await;
        println!("SAR {user} {verb} {group}/{resource} ns={ns:?} name={name:?}: {allowed}");
        if allowed != *expected {
            wrong.push(format!(
                "{user} {verb} {group}/{resource} {ns:?} {name:?}: allowed={allowed}, expected {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "RBAC differs from what the workloads need:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn the_controller_runs_a_whole_cycle_on_its_service_accounts_token() {
    installed().await;
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let client = admin_client().await;
    let token = cp
        .kubectl(&["create", "token", "audit-guard", "-n", "audit-guard", "--duration=1h"])
        .unwrap();
    let kubeconfig = cp.dir.join("controller-sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa}}\ncurrent-context: c\n",
            cp.server,
            cp.dir.join("ca.crt").display(),
            token.trim()
        ),
    )
    .unwrap();
    let ns = fresh_namespace(&client, "sa-cycle").await.unwrap();
    let ds = DataStorage::launch_on(cp, "ds-sa-cycle", Options::sqlite().auth(Auth::Insecure))
        .await
        .unwrap();
    let _serve = Serve::start_with_kubeconfig(
        cp,
        "serve-sa-cycle",
        &kubeconfig,
        &ds.url,
        "audit-guard",
        &ns,
        &["--retention", "0", "--lease-name", "audit-guard-controller"],
    )
    .await
    .unwrap();
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
    let obj: SignalProcessing = serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": "cycle" },
        "spec": { "remediationRequestRef": { "name": "rr-cycle" }, "signal": { "fingerprint": "fp-cycle" } }
    }))
    .unwrap();
    let uid = api.create(&PostParams::default(), &obj).await.unwrap().metadata.uid.unwrap();
    wait_for(
        "the finalizer, added on the ServiceAccount's token",
        Duration::from_secs(60),
        || async { Ok(api.get_opt("cycle").await?.filter(|o| o.has_finalizer()).map(|_| ())) },
    )
    .await
    .unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    api.patch_status(
        "cycle",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "phase": "Completed", "startTime": now, "completionTime": now } })),
    )
    .await
    .unwrap();
    api.delete("cycle", &DeleteParams::default()).await.unwrap();
    wait_for("the object to be released and gone", Duration::from_secs(60), || async {
        Ok(api.get_opt("cycle").await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    let record = ds.record(&uid).await.unwrap().expect("stored record");
    assert_eq!(record["status"], "completed");
    delete_namespace(&client, &ns).await;
}
