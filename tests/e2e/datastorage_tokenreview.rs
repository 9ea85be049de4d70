//! TokenReview authentication and SubjectAccessReview authorization against a real
//! kube-apiserver, with the shipped RBAC (manifests/base/datastorage-rbac.yaml) applied and
//! Data Storage running on its own ServiceAccount's token (so that RBAC is what it needs).
//!
//! A ServiceAccount other than the controller gets 403 writing and
//! reading; a reader-bound one reads; the controller, with a TokenRequest token carrying the
//! manifests' audience, writes; a token without that audience is refused.

use crate::support;

use std::path::Path;

use audit_guard::datastorage::authz::DEFAULT_TOKEN_AUDIENCE;
use serde_json::json;
use support::datastorage::*;

/// A kubeconfig that authenticates with `token`.
fn token_kubeconfig(cp: &support::ControlPlane, name: &str, token: &str) -> std::path::PathBuf {
    let path = cp.dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            cp.server,
            cp.dir.join("ca.crt").display(),
        ),
    )
    .unwrap();
    path
}

fn token(cp: &support::ControlPlane, sa: &str, ns: &str, audience: Option<&str>) -> String {
    let mut args = vec!["create", "token", sa, "-n", ns, "--duration=1h"];
    if let Some(a) = audience {
        args.extend(["--audience", a]);
    }
    let t = cp.kubectl(&args).unwrap().trim().to_string();
    assert!(!t.is_empty());
    t
}

#[tokio::test]
async fn only_the_writer_writes_readers_read_and_the_audience_is_checked() {
    let _cluster = support::cluster_exclusive().await;
    let cp = support::control_plane();
    let client = support::admin_client().await;

    // The shipped RBAC, as kustomize would place it in the audit-guard namespace.
    // Other suites on this control plane may have created the namespace and the ServiceAccount.
    let _ = cp.kubectl(&["create", "namespace", "audit-guard"]);
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/datastorage-rbac.yaml");
    cp.kubectl(&["apply", "-n", "audit-guard", "-f", rbac.to_str().unwrap()]).unwrap();
    let _ = cp.kubectl(&["create", "serviceaccount", "audit-guard", "-n", "audit-guard"]);

    // Other ServiceAccounts: one an admin bound to the reader role, one bound to nothing.
    let ns = support::fresh_namespace(&client, "ds-tr").await.unwrap();
    for sa in ["auditor", "bystander"] {
        cp.kubectl(&["create", "serviceaccount", sa, "-n", &ns]).unwrap();
    }
    cp.kubectl(&[
        "create",
        "clusterrolebinding",
        &format!("{ns}-auditor"),
        "--clusterrole=audit-guard-datastorage-reader",
        &format!("--serviceaccount={ns}:auditor"),
    ])
    .unwrap();

    // Data Storage on its own ServiceAccount's token: TokenReview and SubjectAccessReview only.
    let ds_token = token(cp, "audit-guard-datastorage", "audit-guard", None);
    let kubeconfig = token_kubeconfig(cp, "datastorage-sa", &ds_token);
    let kubeconfig = kubeconfig.to_string_lossy().to_string();
    let svc = DataStorage::launch(Options::sqlite().auth(Auth::TokenReview).env("KUBECONFIG", kubeconfig.as_str())).await;

    let controller = token(cp, "audit-guard", "audit-guard", Some(DEFAULT_TOKEN_AUDIENCE));
    let controller_no_audience = token(cp, "audit-guard", "audit-guard", None);
    let auditor = token(cp, "auditor", &ns, Some(DEFAULT_TOKEN_AUDIENCE));
    let bystander = token(cp, "bystander", &ns, Some(DEFAULT_TOKEN_AUDIENCE));

    // The controller, with the manifests' audience, writes and reads.
    let rec = record("tr-1", "fp", "production", "P0", &ago(5), json!(1_000_000_000i64));
    let (s, _, body) = svc.post_as(&controller, BASE, &rec).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(svc.get_as(&controller, &format!("{BASE}/tr-1")).await, (200, rec.clone()));
    assert_eq!(svc.get_as(&controller, BASE).await.0, 200);
    let event = break_glass_event("tr-review-1", "bob", "tr-1", &ago(1));
    assert_eq!(svc.post_as(&controller, BREAK_GLASS, &event).await.0, 201);

    // The same identity without the audience (a token for the API server) is not accepted here.
    let (s, h, body) = svc
        .post_as(
            &controller_no_audience,
            BASE,
            &record("tr-2", "fp", "production", "P0", &ago(5), json!(1)),
        )
        .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert_eq!(svc.get_as(&controller_no_audience, BASE).await.0, 401);

    // A reader reads everything but writes nothing.
    assert_eq!(svc.get_as(&auditor, &format!("{BASE}/tr-1")).await, (200, rec.clone()));
    assert_eq!(svc.get_as(&auditor, BASE).await.0, 200);
    assert_eq!(svc.get_as(&auditor, &format!("{BASE}/stats/priority")).await.0, 200);
    assert_eq!(svc.get_as(&auditor, BREAK_GLASS).await.0, 200);
    let mut forged = rec.clone();
    forged["status"] = json!("failed");
    for (path, body) in [
        (BASE.to_string(), record("tr-3", "fp", "production", "P0", &ago(5), json!(1))),
        (
            format!("{BASE}/batch"),
            json!([record("tr-4", "fp", "production", "P0", &ago(5), json!(1))]),
        ),
        (format!("{BASE}/tr-1/amendments"), forged.clone()),
        (BREAK_GLASS.to_string(), break_glass_event("tr-review-2", "bob", "tr-1", &ago(1))),
    ] {
        let (s, _, v) = svc.post_as(&auditor, &path, &body).await;
        assert_eq!(s, 403, "auditor POST {path}: {v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("system:serviceaccount:{ns}:auditor")) && detail.contains("may not create"),
            "{detail}"
        );
    }

    // Any other ServiceAccount: 403 writing and 403 reading (it used to be able to write).
    let (s, _, v) = svc
        .post_as(&bystander, BASE, &record("tr-5", "fp", "production", "P0", &ago(5), json!(1)))
        .await;
    assert_eq!(s, 403, "{v}");
    for path in [BASE.to_string(), format!("{BASE}/tr-1"), BREAK_GLASS.to_string()] {
        let (s, v) = svc.get_as(&bystander, &path).await;
        assert_eq!(s, 403, "bystander GET {path}: {v}");
        assert!(!v.to_string().contains("\"fp\""), "{v}");
    }

    // Garbage, a tampered token and no token are refused, reads included.
    // Change the signature's first character: its last one carries padding bits too, so
    // replacing that can leave the decoded signature (and so the token) as it was.
    let sig = controller.rfind('.').unwrap() + 1;
    let other = if controller[sig..].starts_with('A') { "B" } else { "A" };
    let tampered = format!("{}{other}{}", &controller[..sig], &controller[sig + 1..]);
    for bad in ["garbage", tampered.as_str()] {
        assert_eq!(svc.get_as(bad, BASE).await.0, 401);
        assert_eq!(
            svc.post_as(bad, BASE, &record("tr-6", "fp", "production", "P0", &ago(5), json!(1)))
                .await
                .0,
            401
        );
    }
    assert_eq!(svc.http.get(svc.endpoint(BASE)).send().await.unwrap().status(), 401);

    // Only the controller's record went in.
    let (_, page) = svc.get_as(&controller, BASE).await;
    let ids: Vec<_> = page["items"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!("tr-1")]);
    support::delete_namespace(&client, &ns).await;

    // With the API server gone, an unreviewed token cannot be judged: 503 (retry), never a pass.
    let _restart = RestartApiServer(cp);
    cp.kill("kube-apiserver").unwrap();
    let (s, h, body) = split(
        svc.http
            .get(svc.endpoint(BASE))
            .bearer_auth("never-seen-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(h["content-type"], "application/problem+json");
}

/// Starts the API server again when dropped: the other suites share it, so it comes back
/// (before the exclusive hold on it ends) whether the assertions passed or not.
struct RestartApiServer(&'static support::ControlPlane);

impl Drop for RestartApiServer {
    fn drop(&mut self) {
        if let Err(e) = self.0.restart_apiserver() {
            eprintln!("kube-apiserver did not come back: {e:#}");
        }
    }
}
