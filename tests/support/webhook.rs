//! Shared by the webhook test binaries (included with `#[path]`): an in-process webhook on
//! a free port with a freshly issued certificate, an in-memory record sink, review bodies.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use audit_guard::audit::{RecordSink, SignalProcessingAudit, StoreError};
use audit_guard::config::CertsArgs;
use audit_guard::webhook::decisions::Policy;
use audit_guard::webhook::{Readiness, Webhook, WebhookSettings};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const CONTROLLER: &str = "system:serviceaccount:audit-guard:audit-guard";
pub const BREAK_GLASS: &str = "audit-guard:break-glass";

/// Issues a CA and a serving cert for 127.0.0.1 into `dir` (reusing the CA already there if asked).
pub fn issue_certs(dir: &Path, reuse_ca: bool) -> audit_guard::certs::Issued {
    audit_guard::certs::issue(&CertsArgs {
        out_dir: dir.to_path_buf(),
        service: "audit-guard-webhook".into(),
        namespace: "audit-guard".into(),
        extra_san: vec!["localhost".into(), "127.0.0.1".into()],
        days: 2,
        reuse_ca,
    })
    .expect("issue certs")
}

/// Stores records in memory, or fails while `down` is set.
#[derive(Default)]
pub struct MemorySink {
    pub records: Mutex<Vec<SignalProcessingAudit>>,
    pub down: AtomicBool,
}

impl RecordSink for MemorySink {
    fn store<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Transient("memory sink is down".into()));
            }
            self.records.lock().unwrap().push(record.clone());
            Ok(())
        })
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
        addr: "127.0.0.1:0".parse().unwrap(),
        max_body_bytes,
        policy: Policy {
            controller_identity: CONTROLLER.into(),
            break_glass_group: BREAK_GLASS.into(),
        },
        build_record: audit_guard::audit::from_cr::build_record,
        drain_timeout: std::time::Duration::from_secs(10),
    }
}

/// Starts the webhook with certs already in `cert_dir`.
pub async fn start_in(cert_dir: &Path, ca_pem: String, sink: Arc<dyn RecordSink>, max_body_bytes: usize) -> Running {
    let ready = Readiness::default();
    let hook = Webhook::bind(settings(cert_dir, max_body_bytes), sink, ready.clone())
        .await
        .expect("bind webhook");
    let addr = hook.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(hook.serve(shutdown.clone()));
    Running {
        addr,
        ca_pem,
        cert_dir: cert_dir.to_path_buf(),
        shutdown,
        ready,
        task,
    }
}

/// Issues certs into `dir` and starts the webhook.
pub async fn start(dir: &Path, sink: Arc<dyn RecordSink>, max_body_bytes: usize) -> Running {
    let issued = issue_certs(dir, false);
    start_in(dir, issued.ca_pem, sink, max_body_bytes).await
}

/// An HTTPS client trusting only the test CA.
pub fn https_client(ca_pem: &str, pooled: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
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
