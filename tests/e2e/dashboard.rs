//! The Grafana dashboard (charts/audit-guard/files/grafana-dashboard.json, also the kustomize
//! component): every query parses — promql-parser and Prometheus' own parser (promtool, on a
//! rule file made of the queries) — and every metric a query names is exported by a real
//! `audit-guard serve` and `audit-guard datastorage`, run against the real control plane and
//! driven through what each metric counts (admissions, a denial, a break-glass removal, a
//! completion, a deletion, a certificate reload). The other way round too: a metric the
//! binaries export but no panel shows fails here, by name.

use crate::support;
use crate::tools;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use audit_guard::crd::SignalProcessing;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::controlplane::free_port;
use support::datastorage::{binary, issue_certs, Auth, DataStorage, Options, Serve, Tls};
use support::faults::{metric, register_url_webhooks};
use support::*;
use tools::*;

const WAIT: Duration = Duration::from_secs(60);
const LABEL: &str = "audit-guard-dashboard";

/// Exported on purpose without a panel of its own: (metric, why).
const NOT_ON_THE_DASHBOARD: &[(&str, &str)] = &[(
    "datastorage_rows_written_total",
    "the sum of datastorage_records_stored_total, which the dashboard shows by status",
)];

fn queries() -> Vec<(String, String)> {
    dashboard_queries(&dashboard())
        .into_iter()
        .map(|(at, q)| (at, expand_grafana_variables(&q)))
        .collect()
}

#[test]
fn every_dashboard_query_parses() {
    let _cluster = support::cluster_shared_blocking();
    let queries = queries();
    assert!(queries.len() >= 20, "the dashboard has its panels: {}", queries.len());
    let mut bad = Vec::new();
    for (at, q) in &queries {
        if let Err(e) = metric_names(q) {
            bad.push(format!("{at}: {q}\n  {e}"));
        }
    }
    // Prometheus' own parser: the queries as recording rules, checked by promtool.
    let rules = json!({ "groups": [{ "name": "dashboard", "rules": queries.iter().enumerate()
        .map(|(i, (_, q))| json!({ "record": format!("dashboard:query_{i}"), "expr": q })).collect::<Vec<_>>() }] });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(&rules).unwrap()).unwrap();
    if let Err(e) = promtool_check_rules(&file) {
        bad.push(format!("promtool check rules on the dashboard's queries:\n{e}"));
    }
    assert!(bad.is_empty(), "dashboard queries that do not parse:\n{}", bad.join("\n"));

    // Every panel asks the dashboard's data source variable, so it works in any Grafana.
    let dash = dashboard();
    for p in dash["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {}", p["title"]);
    }
}

/// Metric families of a text exposition page: name → type.
fn families(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect()
}

/// Is `name` exported? A histogram or summary also exports <name>_bucket/_sum/_count.
fn exported(families: &BTreeMap<String, String>, name: &str) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .and_then(|base| families.get(base))
                .is_some_and(|t| t == "histogram" || t == "summary")
        })
}

async fn sp(api: &Api<SignalProcessing>, name: &str) -> SignalProcessing {
    let obj: SignalProcessing = serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": { "name": name },
        "spec": { "remediationRequestRef": { "name": format!("rr-{name}") }, "signal": { "fingerprint": format!("fp-{name}") } }
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

async fn wait_gone(api: &Api<SignalProcessing>, name: &str) {
    wait_for(&format!("{name} to be gone"), WAIT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn every_metric_the_dashboard_names_is_exported_by_serve_and_datastorage() {
    let _cluster = support::cluster_shared().await;
    let cp = control_plane();
    let client = admin_client().await;
    install_signalprocessing_crd(&client).await.unwrap();
    let watched = fresh_namespace(&client, "dash-watched").await.unwrap();
    let unwatched = fresh_namespace(&client, "dash-unwatched").await.unwrap();
    for ns in [&watched, &unwatched] {
        cp.kubectl(&["label", "namespace", ns, &format!("{LABEL}=on")]).unwrap();
    }
    // alice and bob may edit SignalProcessings: RBAC is not what stops alice.
    cp.kubectl(&[
        "create",
        "clusterrole",
        "dash-editor",
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=signalprocessings.kubernaut.ai",
    ])
    .unwrap();
    cp.kubectl(&[
        "create",
        "clusterrolebinding",
        "dash-editor",
        "--clusterrole=dash-editor",
        "--user=alice",
        "--user=bob",
    ])
    .unwrap();

    // Data Storage, and serve with its webhook on real TLS, registered with the API server.
    // Over TLS, so serve exports its trust in Data Storage's CA too.
    let ds_certs = tempfile::tempdir().unwrap();
    issue_certs(ds_certs.path());
    let ds_cert_dir = ds_certs.path().join(audit_guard::certs::DATASTORAGE_DIR);
    let ds = DataStorage::launch_on(
        cp,
        "ds-dashboard",
        Options::sqlite().auth(Auth::Insecure).tls(Tls::Dir(ds_cert_dir)),
    )
    .await
    .unwrap();
    let ds_ca = ds.ca_file();
    let certs = tempfile::tempdir().unwrap();
    let issue = |reuse_ca: bool| {
        let mut cmd = Command::new(binary());
        cmd.args(["certs", "--out-dir"]).arg(certs.path());
        if reuse_ca {
            cmd.arg("--reuse-ca");
        }
        run_ok(&mut cmd);
    };
    issue(false);
    let ca_pem = std::fs::read_to_string(certs.path().join("ca.crt")).unwrap();
    let webhook_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let serve = Serve::start_full(
        cp,
        "serve-dashboard",
        &cp.kubeconfig,
        &ds.url,
        &watched,
        &watched,
        &[
            "--retention",
            "0",
            "--controller-identity",
            "admin",
            "--webhook-addr",
            &webhook_addr,
            "--cert-dir",
            certs.path().to_str().unwrap(),
            "--datastorage-ca-file",
            ds_ca.to_str().unwrap(),
            // Mutual TLS as shipped: the break-glass removal below is then an event at once.
            "--client-ca-file",
            cp.webhook_client_ca.to_str().unwrap(),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail("serve-dashboard")));
    register_url_webhooks(
        &client,
        "audit-guard-dashboard",
        &format!("https://{webhook_addr}"),
        &ca_pem,
        (LABEL, "on"),
    )
    .await
    .unwrap();
    let watched_api: Api<SignalProcessing> = Api::namespaced(client.clone(), &watched);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for("the webhook to be called", WAIT, || async {
        let probe: SignalProcessing = serde_json::from_value(
            json!({"apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": {"name": "probe"}, "spec": {}}),
        )?;
        Ok(watched_api.create(&dry, &probe).await?.has_finalizer().then_some(()))
    })
    .await
    .unwrap();

    // A denial and a break-glass removal, where no controller takes the finalizer off.
    let held_api: Api<SignalProcessing> = Api::namespaced(client.clone(), &unwatched);
    assert!(
        sp(&held_api, "held").await.has_finalizer(),
        "the mutating webhook adds the finalizer"
    );
    held_api.delete("held", &DeleteParams::default()).await.unwrap();
    let strip = Patch::Merge(json!({ "metadata": { "finalizers": null } }));
    let alice: Api<SignalProcessing> = Api::namespaced(cp.client_with_token("alice-token").await.unwrap(), &unwatched);
    let denied = alice.patch("held", &PatchParams::default(), &strip).await;
    assert!(denied.is_err(), "alice may not strip the finalizer: {denied:?}");
    let bob: Api<SignalProcessing> = Api::namespaced(cp.client_with_token("breakglass-token").await.unwrap(), &unwatched);
    bob.patch("held", &PatchParams::default(), &strip).await.unwrap();
    wait_gone(&held_api, "held").await;

    // The controller's path: completion (buffered writer), then deletion (synchronous store).
    let uid = sp(&watched_api, "done").await.metadata.uid.unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    watched_api
        .patch_status(
            "done",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Completed", "startTime": now, "completionTime": now } })),
        )
        .await
        .unwrap();
    wait_for("the completion record", WAIT, || async { Ok(ds.record(&uid).await?.map(|_| ())) })
        .await
        .unwrap();
    watched_api.delete("done", &DeleteParams::default()).await.unwrap();
    wait_gone(&watched_api, "done").await;

    // A certificate reload: a new serving certificate from the same CA.
    issue(true);
    wait_for("a certificate reload", WAIT, || async {
        let page = serve.metrics().await?;
        Ok((metric(&page, "audit_guard_webhook_cert_reloads_total{result=\"success\"}") >= 1.0).then_some(()))
    })
    .await
    .unwrap();

    let serve_page = serve.metrics().await.unwrap();
    let ds_page = ds
        .http
        .get(format!("{}/metrics", ds.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // What was driven shows up in the counters the panels read.
    assert!(metric(&serve_page, "audit_guard_webhook_denials_total{reason=\"finalizer_removal\"}") >= 1.0);
    assert!(metric(&serve_page, "audit_guard_webhook_forced_finalizer_removals_total") >= 1.0);
    assert!(
        metric(
            &serve_page,
            "kubernaut_signal_processing_audit_storage_attempts_total{status=\"success\"}"
        ) >= 1.0
    );
    assert!(
        metric(&ds_page, "datastorage_records_stored_total{status=\"completed\"}") >= 1.0,
        "{ds_page}"
    );
    assert!(
        metric(&ds_page, "datastorage_records_stored_total{status=\"forced\"}") >= 1.0,
        "{ds_page}"
    );

    let mut exported_families = families(&serve_page);
    exported_families.extend(families(&ds_page));
    let mut named = BTreeMap::<String, Vec<String>>::new();
    for (at, q) in queries() {
        // A query that does not parse fails every_dashboard_query_parses.
        for name in metric_names(&q).unwrap_or_default() {
            named.entry(name).or_default().push(at.clone());
        }
    }
    let missing: Vec<String> = named
        .iter()
        .filter(|(name, _)| !exported(&exported_families, name))
        .map(|(name, at)| format!("  {name} (in {})", at.join("; ")))
        .collect();
    let shown: BTreeSet<String> = named
        .keys()
        .flat_map(|n| {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(n);
            [n.clone(), base.to_string()]
        })
        .collect();
    let unshown: Vec<String> = exported_families
        .keys()
        .filter(|f| !shown.contains(*f) && !NOT_ON_THE_DASHBOARD.iter().any(|(n, _)| n == f))
        .map(|f| format!("  {f}"))
        .collect();
    assert!(
        missing.is_empty() && unshown.is_empty(),
        "dashboard and exported metrics disagree.\nNamed by the dashboard but exported by neither serve nor datastorage \
         (fix the query in charts/audit-guard/files/grafana-dashboard.json and manifests/components/grafana-dashboard/audit-guard.json):\n{}\n\
         Exported but on no panel (add a panel, or list it in NOT_ON_THE_DASHBOARD in tests/e2e_dashboard.rs with the reason):\n{}",
        missing.join("\n"),
        unshown.join("\n")
    );

    support::faults::unregister_webhooks(&client, "audit-guard-dashboard").await;
    for ns in [&watched, &unwatched] {
        delete_namespace(&client, ns).await;
    }
}
