//! Shared by the webhook test binaries (included with `#[path]`): an in-process webhook on
//! a free port with a freshly issued certificate, and review bodies. The webhook talks to a
//! real API server and a real Data Storage when the test has them, or to addresses where
//! nothing listens (every read and write then fails as it would in an outage).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use audit_guard::certs::IssueSettings;
use audit_guard::client::{ClientSettings, DataStorageClient};
use audit_guard::confirmed::confirmed_records;
use audit_guard::own_api::OwnApi;
use audit_guard::sink::RecordSink;
use audit_guard::webhook::handlers::BodyLimits;
use audit_guard::webhook::policy::Policy;
use audit_guard::webhook::{Readiness, Webhook, WebhookDeps, WebhookSettings};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const CONTROLLER: &str = "system:serviceaccount:audit-guard:audit-guard";
pub const BREAK_GLASS: &str = "audit-guard:break-glass";
/// An address where nothing listens.
pub const NOWHERE: &str = "https://127.0.0.1:1";

/// Issues a CA and a serving cert for 127.0.0.1 into `dir` (reusing the CA already there if asked).
pub fn issue_certs(dir: &Path, reuse_ca: bool) -> audit_guard::certs::Issued {
    audit_guard::certs::issue(&IssueSettings {
        out_dir: dir.to_path_buf(),
        service: "audit-guard-webhook".into(),
        namespace: "audit-guard".into(),
        extra_san: vec!["localhost".into(), "127.0.0.1".into()],
        days: 2,
        reuse_ca,
    })
    .expect("issue certs")
}

/// audit-guard's own Data Storage API at `url`, with an optional token file and CA.
pub fn datastorage_client(url: &str, token_file: Option<PathBuf>, ca_file: Option<PathBuf>) -> Arc<dyn RecordSink> {
    Arc::new(OwnApi::new(
        DataStorageClient::new(&ClientSettings {
            url: url.into(),
            ca_file,
            token_file,
            allow_plain_http_token: false,
            timeout: Duration::from_secs(5),
        })
        .expect("Data Storage client"),
    ))
}

/// Dependencies that are unreachable: an API server and a Data Storage where nothing listens.
pub fn unreachable_deps() -> WebhookDeps {
    let config = kube::Config::new(NOWHERE.parse().expect("url"));
    WebhookDeps {
        kube: kube::Client::try_from(config).expect("kube client"),
        ds: datastorage_client(NOWHERE, None, None),
        confirmed: Arc::new(confirmed_records()),
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub cert_dir: PathBuf,
    pub shutdown: CancellationToken,
    pub ready: Readiness,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }
}

pub fn settings(cert_dir: &Path, max_body_bytes: usize) -> WebhookSettings {
    WebhookSettings {
        cert_dir: cert_dir.to_path_buf(),
        client_ca_file: None,
        addr: "127.0.0.1:0".parse().unwrap(),
        limits: BodyLimits {
            max_bytes: max_body_bytes,
            read_timeout: Duration::from_secs(5),
            in_flight_bytes: 32 * 1024 * 1024,
        },
        listener: audit_guard::https::ListenerLimits::default(),
        policy: Policy {
            controller_identity: CONTROLLER.into(),
            break_glass_group: BREAK_GLASS.into(),
        },
        build_record: audit_guard::audit::from_cr::build_record,
        drain_timeout: Duration::from_secs(10),
    }
}

/// Starts the webhook with these settings (certs already in their cert_dir).
pub async fn start_with(settings: WebhookSettings, ca_pem: String, deps: WebhookDeps) -> Running {
    let ready = Readiness::default();
    let cert_dir = settings.cert_dir.clone();
    let hook = Webhook::bind(settings, deps, ready.clone()).await.expect("bind webhook");
    let addr = hook.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(hook.serve(shutdown.clone()));
    Running {
        addr,
        ca_pem,
        cert_dir,
        shutdown,
        ready,
        task,
    }
}

/// Starts the webhook with certs already in `cert_dir`.
pub async fn start_in(cert_dir: &Path, ca_pem: String, deps: WebhookDeps, max_body_bytes: usize) -> Running {
    start_with(settings(cert_dir, max_body_bytes), ca_pem, deps).await
}

/// Issues certs into `dir` and starts the webhook.
pub async fn start(dir: &Path, deps: WebhookDeps, max_body_bytes: usize) -> Running {
    let issued = issue_certs(dir, false);
    start_in(dir, issued.ca_pem, deps, max_body_bytes).await
}

/// An HTTPS client builder trusting only the test CA.
pub fn https_client_builder(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
}

/// An HTTPS client trusting only the test CA.
#[path = "hostile.rs"]
pub mod hostile;
#[allow(unused_imports)]
pub use hostile::http1_tls_connector;

pub fn https_client(ca_pem: &str, pooled: bool) -> reqwest::Client {
    let mut b = https_client_builder(ca_pem);
    if !pooled {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

pub fn sp_json(name: &str, uid: &str, finalizers: &[&str], deleting: bool) -> Value {
    let mut meta = json!({ "name": name, "namespace": "ns", "uid": uid, "finalizers": finalizers });
    if deleting {
        meta["deletionTimestamp"] = json!("2025-11-27T10:00:00Z");
    }
    json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": meta,
        "spec": { "remediationRequestRef": { "name": "rr-1" }, "signal": { "fingerprint": "fp-1" } }
    })
}

pub fn review(op: &str, user: &str, groups: &[&str], object: Option<Value>, old: Option<Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{op}"), "operation": op, "dryRun": false,
            "kind": { "group": "kubernaut.ai", "version": "v1alpha1", "kind": "SignalProcessing" },
            "resource": { "group": "kubernaut.ai", "version": "v1alpha1", "resource": "signalprocessings" },
            "userInfo": { "username": user, "groups": groups },
            "object": object, "oldObject": old
        }
    })
}
