//! The webhook's HTTP and TLS surface, in-process, over real TLS: status codes for bad
//! input, protocol versions, certificate reload by symlink swap, graceful shutdown.

#[path = "support/webhook.rs"]
mod webhook_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audit_guard::audit::{RecordSink, SignalProcessingAudit, StoreError};
use audit_guard::webhook::{MUTATE_PATH, VALIDATE_PATH};
use base64::Engine;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_support::*;

const MAX_BODY: usize = 64 * 1024;

#[tokio::test]
async fn bad_inputs_get_their_status_codes_and_a_plain_message() {
    let dir = tempfile::tempdir().unwrap();
    let hook = start(dir.path(), Arc::new(MemorySink::default()), MAX_BODY).await;
    let client = https_client(&hook.ca_pem, true);
    let good = review("CREATE", "alice", &[], Some(sp_json("a", "u1", &[], false)), None);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(&str, reqwest::Method, &str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            reqwest::Method::POST,
            MUTATE_PATH,
            "{\"apiVersion\":".into(),
            400,
            "malformed",
        ),
        ("empty body", reqwest::Method::POST, VALIDATE_PATH, String::new(), 400, "empty"),
        (
            "wrong apiVersion",
            reqwest::Method::POST,
            MUTATE_PATH,
            with(&|v| v["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            400,
            "apiVersion",
        ),
        (
            "wrong kind",
            reqwest::Method::POST,
            VALIDATE_PATH,
            with(&|v| v["kind"] = json!("TokenReview")),
            400,
            "kind",
        ),
        (
            "missing request",
            reqwest::Method::POST,
            MUTATE_PATH,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            400,
            "no request",
        ),
        (
            "missing object",
            reqwest::Method::POST,
            MUTATE_PATH,
            with(&|v| v["request"]["object"] = Value::Null),
            400,
            "object is missing",
        ),
        (
            "missing oldObject on DELETE",
            reqwest::Method::POST,
            VALIDATE_PATH,
            with(&|v| v["request"]["operation"] = json!("DELETE")),
            400,
            "oldObject is missing",
        ),
        (
            "oversized body",
            reqwest::Method::POST,
            MUTATE_PATH,
            format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BODY + 1)),
            413,
            "too large",
        ),
        ("wrong method", reqwest::Method::GET, MUTATE_PATH, String::new(), 405, ""),
        (
            "unknown path",
            reqwest::Method::POST,
            "/mutate-something-else",
            good.to_string(),
            404,
            "not found",
        ),
    ];
    for (name, method, path, body, want, says) in cases {
        let resp = client
            .request(method, hook.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, want, "{name}: {text}");
        assert!(text.contains(says), "{name}: message {text:?} should contain {says:?}");
    }
    // The server is still fine after all of that.
    let ok = client.post(hook.url(MUTATE_PATH)).json(&good).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    // And it counted what happened, by path, operation and outcome.
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::default_registry().gather())
        .unwrap();
    for series in [
        r#"audit_guard_webhook_requests_total{operation="",outcome="too_large",path="mutate"}"#,
        r#"audit_guard_webhook_requests_total{operation="",outcome="bad_request",path="validate"}"#,
        r#"audit_guard_webhook_requests_total{operation="CREATE",outcome="patched",path="mutate"}"#,
        r#"audit_guard_webhook_request_duration_seconds_count{operation="CREATE",outcome="patched",path="mutate"}"#,
    ] {
        assert!(text.contains(series), "{series} missing");
    }
}

#[tokio::test]
async fn reviews_are_answered_over_http2_and_http1_with_the_request_uid() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(MemorySink::default());
    let hook = start(dir.path(), sink.clone(), MAX_BODY).await;
    assert!(hook.ready.is_ready());
    let body = review("CREATE", "alice", &[], Some(sp_json("a", "u1", &["x/y"], false)), None);
    for http1 in [false, true] {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(hook.ca_pem.as_bytes()).unwrap());
        if http1 {
            b = b.http1_only();
        }
        let resp = b.build().unwrap().post(hook.url(MUTATE_PATH)).json(&body).send().await.unwrap();
        let version = resp.version();
        assert_eq!(
            version,
            if http1 {
                reqwest::Version::HTTP_11
            } else {
                reqwest::Version::HTTP_2
            }
        );
        let out: Value = resp.json().await.unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], "uid-CREATE");
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "kubernaut.ai/audit-persistence"}])
        );
    }
    // An unguarded DELETE is stored first; with the sink down it is refused as retryable.
    let client = https_client(&hook.ca_pem, true);
    let del = review(
        "DELETE",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        &[],
        None,
        Some(sp_json("b", "u2", &[], false)),
    );
    let out: Value = client
        .post(hook.url(VALIDATE_PATH))
        .json(&del)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["response"]["allowed"], true, "{out}");
    assert_eq!(
        sink.records.lock().unwrap().iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec!["u2".to_string()]
    );
    sink.down.store(true, Ordering::SeqCst);
    let out: Value = client
        .post(hook.url(VALIDATE_PATH))
        .json(&del)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(out["response"]["status"]["code"], 503);
    assert!(out["response"]["status"]["message"].as_str().unwrap().contains("retry"), "{out}");
}

fn openssl_connects(addr: std::net::SocketAddr, args: &[&str]) -> bool {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", addr.port())])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    // A completed handshake prints the negotiated protocol and cipher.
    out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)")
}

#[tokio::test]
async fn only_tls12_and_tls13_are_spoken_and_plaintext_gets_no_http_answer() {
    let dir = tempfile::tempdir().unwrap();
    let hook = start(dir.path(), Arc::new(MemorySink::default()), MAX_BODY).await;
    let addr = hook.addr;
    let results = tokio::task::spawn_blocking(move || {
        [
            openssl_connects(addr, &["-tls1_3"]),
            openssl_connects(addr, &["-tls1_2"]),
            // SECLEVEL=0 lets the client offer TLS 1.1 at all, so a failure is the server's refusal.
            openssl_connects(addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(results, [true, true, false], "tls1.3, tls1.2, tls1.1 handshakes");

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /mutate-kubernaut-ai-v1alpha1-signalprocessing HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plaintext got an HTTP answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

/// Presents a Secret volume's layout: `..data` → timestamped dir, tls.* → `..data/tls.*`.
fn secret_layout(dir: &std::path::Path, from: &std::path::Path, version: &str) {
    let ts = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&ts).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::fs::copy(from.join(f), ts.join(f)).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    // rename(2) replaces the old ..data symlink atomically, as the kubelet does.
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

/// The leaf certificate a fresh TLS connection is served.
async fn served_cert(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn a_secret_style_symlink_swap_is_picked_up_without_failing_requests() {
    let issue_dir = tempfile::tempdir().unwrap();
    let first = issue_certs(issue_dir.path(), false);
    let cert_dir = tempfile::tempdir().unwrap();
    secret_layout(cert_dir.path(), issue_dir.path(), "2025_01_01");
    let hook = start_in(cert_dir.path(), first.ca_pem.clone(), Arc::new(MemorySink::default()), MAX_BODY).await;
    assert_eq!(served_cert(hook.addr, &hook.ca_pem).await, pem_der(&first.cert_pem));

    // Requests on new connections and on one kept-alive connection, throughout the swap.
    let stop = tokio_util::sync::CancellationToken::new();
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for pooled in [false, true] {
        let (client, url, stop, ok, failed) = (
            https_client(&hook.ca_pem, pooled),
            hook.url(MUTATE_PATH),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        let body = review("CREATE", "alice", &[], Some(sp_json("a", "u1", &[], false)), None);
        loops.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }

    let second = issue_certs(issue_dir.path(), true);
    secret_layout(cert_dir.path(), issue_dir.path(), "2025_01_02");
    std::fs::remove_dir_all(cert_dir.path().join("..2025_01_01")).unwrap();
    let want = pem_der(&second.cert_pem);
    let (addr, ca) = (hook.addr, hook.ca_pem.clone());
    let mut seen_new = false;
    for _ in 0..200 {
        if served_cert(addr, &ca).await == want {
            seen_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for l in loops {
        l.await.unwrap();
    }
    assert!(seen_new, "new connections never got the new certificate");
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "requests failed during the swap");

    // A broken update keeps the current certificate.
    std::fs::write(cert_dir.path().join("..2025_01_02/tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(audit_guard::certs::POLL_INTERVAL * 2).await;
    assert_eq!(served_cert(addr, &ca).await, want);
}

/// Holds every store until released, to keep a review in flight.
struct GateSink {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl RecordSink for GateSink {
    fn store<'a>(&'a self, _record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.entered.notify_one();
            self.release.notified().await;
            Ok(())
        })
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_in_flight_reviews() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(GateSink {
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let hook = start(dir.path(), sink.clone(), MAX_BODY).await;
    let client = https_client(&hook.ca_pem, true);
    let del = review("DELETE", "gc", &[], None, Some(sp_json("b", "u2", &[], false)));
    let in_flight = tokio::spawn(client.post(hook.url(VALIDATE_PATH)).json(&del).send());
    sink.entered.notified().await;
    hook.shutdown.cancel();
    // New connections are refused once the listener is closed.
    let url = hook.url(MUTATE_PATH);
    let refused = support_wait(|| async { tokio::net::TcpStream::connect(hook.addr).await.is_err() }).await;
    assert!(refused, "listener still accepting after shutdown ({url})");
    sink.release.notify_one();
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["response"]["allowed"], true);
    hook.task.await.unwrap().unwrap();
    assert!(!hook.ready.is_ready());
}

async fn support_wait<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
