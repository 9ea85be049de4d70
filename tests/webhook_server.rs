//! The webhook's HTTP and TLS surface, in-process, over real TLS: status codes for bad
//! input, bounded body reads (size over both protocols, time), client certificates,
//! protocol versions, certificate reload by symlink swap, the expiry gauge, graceful
//! shutdown. The API server and Data Storage it would talk to are addresses where nothing
//! listens: whatever needs them fails as in an outage (the real ones are in tests/e2e/webhook.rs).

#[path = "support/webhook.rs"]
mod webhook_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audit_guard::webhook::{MUTATE_PATH, VALIDATE_PATH};
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_support::*;

const MAX_BODY: usize = 64 * 1024;

#[tokio::test]
async fn bad_inputs_get_their_status_codes_and_a_plain_message() {
    let dir = tempfile::tempdir().unwrap();
    let hook = start(dir.path(), unreachable_deps(), MAX_BODY).await;
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
    let hook = start(dir.path(), unreachable_deps(), MAX_BODY).await;
    assert!(hook.ready.is_ready());
    let body = review("CREATE", "alice", &[], Some(sp_json("a", "u1", &["x/y"], false)), None);
    for http1 in [false, true] {
        let mut b = https_client_builder(&hook.ca_pem);
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
    // An unguarded DELETE needs the live object and Data Storage; with neither reachable it
    // is refused as retryable, and nothing is stored.
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
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert_eq!(out["response"]["status"]["code"], 503);
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("retry") && message.contains("nothing was stored"), "{out}");
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
    let hook = start(dir.path(), unreachable_deps(), MAX_BODY).await;
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
    let hook = start_in(cert_dir.path(), first.ca_pem.clone(), unreachable_deps(), MAX_BODY).await;
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

/// A TLS connection to the webhook speaking HTTP/1.1 by hand (to send a body in pieces).
async fn raw_tls(addr: std::net::SocketAddr, ca_pem: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    http1_tls_connector(ca_pem)
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends the head and the first half of a review, leaving the request in flight.
async fn half_sent_review(hook: &Running) -> (tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Vec<u8>) {
    let body = review("CREATE", "alice", &[], Some(sp_json("a", "u1", &[], false)), None).to_string();
    let mut tls = raw_tls(hook.addr, &hook.ca_pem).await;
    let head = format!(
        "POST {MUTATE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    (tls, rest.to_vec())
}

async fn read_http_answer(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = tls.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok());
                if len.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// A review is in flight while the webhook waits for the API server: here one that accepts
/// the connection and says nothing until the test hangs up.
#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_in_flight_reviews() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut deps = unreachable_deps();
    let config = kube::Config::new(format!("https://{}", silent.local_addr().unwrap()).parse().unwrap());
    deps.kube = kube::Client::try_from(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hook = start(dir.path(), deps, MAX_BODY).await;
    let client = https_client(&hook.ca_pem, true);
    let del = review("DELETE", "gc", &[], None, Some(sp_json("b", "u2", &[], false)));
    let in_flight = tokio::spawn(client.post(hook.url(VALIDATE_PATH)).json(&del).send());
    // The webhook is reading the live object: the review is in flight.
    let (api_conn, _) = silent.accept().await.unwrap();
    hook.shutdown.cancel();
    // New connections are refused once the listener is closed.
    let url = hook.url(MUTATE_PATH);
    let refused = support_wait(|| async { tokio::net::TcpStream::connect(hook.addr).await.is_err() }).await;
    assert!(refused, "listener still accepting after shutdown ({url})");
    drop(api_conn);
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    // It was answered (refused for want of the live object, as an outage would be).
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert_eq!(out["response"]["status"]["code"], 503, "{out}");
    hook.task.await.unwrap().unwrap();
    assert!(!hook.ready.is_ready());
}

/// The largest body the webhook takes by default (and its reasoning) is 4 MiB; more gets a
/// 413 answer over both protocols, whether the size is declared up front or only found out
/// while reading — never a reset stream or a cut connection. curl is the strict client here:
/// it fails an HTTP/2 upload that is answered before it finished sending.
#[tokio::test]
async fn an_oversized_review_gets_413_over_http2_and_http1() {
    const LIMIT: usize = 4 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let hook = start(dir.path(), unreachable_deps(), LIMIT).await;
    let too_big = format!("{{\"pad\":\"{}\"}}", "x".repeat(LIMIT));
    let (ca, body_file) = (dir.path().join("ca.pem"), dir.path().join("big.json"));
    std::fs::write(&ca, &hook.ca_pem).unwrap();
    std::fs::write(&body_file, &too_big).unwrap();
    for (protocol, chunked) in [("--http2", false), ("--http2", true), ("--http1.1", false), ("--http1.1", true)] {
        let mut curl = tokio::process::Command::new("curl");
        curl.args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", protocol, "--cacert"])
            .arg(&ca)
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", body_file.display()));
        if chunked {
            curl.args(["-H", "Transfer-Encoding: chunked"]);
        }
        let out = curl.arg(hook.url(MUTATE_PATH)).output().await.unwrap();
        let answer = String::from_utf8_lossy(&out.stdout);
        let want = if protocol == "--http2" { "413 2" } else { "413 1.1" };
        assert_eq!(
            answer,
            want,
            "curl {protocol} chunked={chunked}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And from reqwest (hyper), streaming without a declared length.
    for http1 in [false, true] {
        let mut b = https_client_builder(&hook.ca_pem);
        if http1 {
            b = b.http1_only();
        }
        let chunks: Vec<Result<http_body::Frame<axum::body::Bytes>, std::io::Error>> = too_big
            .as_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok(http_body::Frame::data(axum::body::Bytes::copy_from_slice(c))))
            .collect();
        let resp = b
            .build()
            .unwrap()
            .post(hook.url(MUTATE_PATH))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(futures::stream::iter(chunks))))
            .send()
            .await
            .unwrap_or_else(|e| panic!("http1={http1}: {e:?}"));
        assert_eq!(resp.status(), 413, "http1={http1}");
        assert!(resp.text().await.unwrap().contains("too large"), "http1={http1}");
    }
}

/// A body that trickles in is cut off at the read timeout with 408, its connection freed.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let issued = issue_certs(dir.path(), false);
    let mut settings = settings(dir.path(), MAX_BODY);
    settings.limits.read_timeout = Duration::from_secs(1);
    let hook = start_with(settings, issued.ca_pem, unreachable_deps()).await;
    let (mut tls, _never_sent) = half_sent_review(&hook).await;
    let answer = read_http_answer(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");
}

/// Review bodies held at once are bounded: while one large review waits on the API server
/// with its bytes held, another that would exceed the budget waits and then gets 503; once
/// the first is answered, the same request goes through.
#[tokio::test]
async fn review_bytes_in_flight_are_bounded() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut deps = unreachable_deps();
    let config = kube::Config::new(format!("https://{}", silent.local_addr().unwrap()).parse().unwrap());
    deps.kube = kube::Client::try_from(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issued = issue_certs(dir.path(), false);
    let mut settings = settings(dir.path(), MAX_BODY);
    settings.limits.read_timeout = Duration::from_secs(1);
    settings.limits.in_flight_bytes = MAX_BODY;
    let hook = start_with(settings, issued.ca_pem, deps).await;
    let client = https_client(&hook.ca_pem, false);

    // A DELETE of about 60 KiB: its bytes stay held while the webhook reads the live object.
    let mut old = sp_json("big", "u-big", &[], false);
    old["metadata"]["annotations"] = json!({ "pad": "x".repeat(60 * 1024) });
    let big = review("DELETE", "gc", &[], None, Some(old));
    let in_flight = tokio::spawn(client.post(hook.url(VALIDATE_PATH)).json(&big).send());
    let (api_conn, _) = silent.accept().await.unwrap();

    let mut small = sp_json("small", "u-small", &[], false);
    small["metadata"]["annotations"] = json!({ "pad": "x".repeat(8 * 1024) });
    let create = review("CREATE", "alice", &[], Some(small), None);
    let resp = client.post(hook.url(MUTATE_PATH)).json(&create).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("in flight"));

    drop(api_conn);
    assert_eq!(in_flight.await.unwrap().unwrap().status(), 200);
    let resp = client.post(hook.url(MUTATE_PATH)).json(&create).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// The review budget is paid for bytes that arrived, not for a declared size: clients that
/// declare the largest body and send nothing hold none of it, and ordinary reviews pass.
#[tokio::test]
async fn declared_sizes_that_never_arrive_hold_no_review_budget() {
    let dir = tempfile::tempdir().unwrap();
    let issued = issue_certs(dir.path(), false);
    let mut settings = settings(dir.path(), MAX_BODY);
    settings.limits.read_timeout = Duration::from_secs(30);
    settings.limits.in_flight_bytes = 2 * MAX_BODY;
    let hook = start_with(settings, issued.ca_pem, unreachable_deps()).await;
    let mut silent = vec![];
    for _ in 0..4 {
        let mut tls = raw_tls(hook.addr, &hook.ca_pem).await;
        let head = format!(
            "POST {MUTATE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {MAX_BODY}\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        silent.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = https_client(&hook.ca_pem, false);
    let create = review("CREATE", "alice", &[], Some(sp_json("a", "u1", &[], false)), None);
    let resp = client.post(hook.url(MUTATE_PATH)).json(&create).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    drop(silent);
}

/// A CA and a client certificate it signed, as PEM.
fn client_pki(name: &str) -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, name);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

async fn mutate_with(hook: &Running, identity: Option<&str>) -> Result<u16, String> {
    let mut b = https_client_builder(&hook.ca_pem).pool_max_idle_per_host(0);
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    let body = review("CREATE", "alice", &[], Some(sp_json("a", "u1", &[], false)), None);
    match b.build().unwrap().post(hook.url(MUTATE_PATH)).json(&body).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// With --client-ca-file, only a client certificate that CA signed gets through the TLS
/// handshake; the CA file is reloaded when it changes.
#[tokio::test]
async fn with_a_client_ca_only_its_client_certificates_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let issued = issue_certs(dir.path(), false);
    let (ca_a, client_a) = client_pki("apiserver-a");
    let (ca_b, client_b) = client_pki("apiserver-b");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca_a).unwrap();
    let mut settings = settings(dir.path(), MAX_BODY);
    settings.client_ca_file = Some(ca_file.clone());
    let hook = start_with(settings, issued.ca_pem, unreachable_deps()).await;

    assert_eq!(mutate_with(&hook, Some(&client_a)).await, Ok(200));
    for (what, identity) in [("no certificate", None), ("another CA's certificate", Some(client_b.as_str()))] {
        assert!(mutate_with(&hook, identity).await.is_err(), "{what} got through");
    }
    // A plain TLS client (no certificate) does not get an HTTP answer either.
    let addr = hook.addr;
    let handshake = tokio::task::spawn_blocking(move || openssl_connects(addr, &["-tls1_2"]))
        .await
        .unwrap();
    assert!(!handshake, "a TLS 1.2 handshake without a client certificate completed");

    // Rotating the CA: the new one's clients get through, the old one's no longer do.
    std::fs::write(&ca_file, &ca_b).unwrap();
    let rotated = support_wait(|| async { mutate_with(&hook, Some(&client_b)).await == Ok(200) }).await;
    assert!(rotated, "the rotated client CA was not picked up");
    assert!(mutate_with(&hook, Some(&client_a)).await.is_err());
}

/// The expiry gauge names the certificate file and counts down to its notAfter.
#[tokio::test]
async fn the_certificate_expiry_gauge_names_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let _hook = start(dir.path(), unreachable_deps(), MAX_BODY).await;
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::default_registry().gather())
        .unwrap();
    let file = dir.path().join("tls.crt").display().to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("audit_guard_certificate_expiry_seconds{") && l.contains(&file))
        .unwrap_or_else(|| panic!("no expiry series for {file}:\n{text}"));
    let secs: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // issue_certs makes certificates valid for 2 days (to the day's start, rcgen's precision).
    assert!(secs > 86_400.0 && secs <= 3.0 * 86_400.0, "{line}");
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
