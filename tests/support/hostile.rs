//! Clients with bad intentions, shared by the hostile-network test and the webhook benchmark
//! (included with `#[path]`): connections that never say a word and reviews declared but never
//! sent, from another loopback address (standing for a pod, so per-peer bounds apply to them and
//! not to the API server's or the load generator's 127.0.0.1).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const HOSTILE_SOURCE: &str = "127.0.0.2";
/// What one budget holder declares and never sends.
pub const DECLARED_BYTES: usize = 4 * 1024 * 1024;
/// How often a budget holder starts over on a fresh connection.
pub const RENEW_EVERY: Duration = Duration::from_secs(4);

#[derive(Default)]
pub struct Tally {
    pub connections: AtomicUsize,
    pub held_heads: AtomicUsize,
}

/// A TLS connector trusting `ca_pem` that speaks HTTP/1.1, for hand-written requests.
pub fn http1_tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()).flatten() {
        let _ = roots.add(c);
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub async fn connect_from_pod(addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{HOSTILE_SOURCE}:0").parse().map_err(std::io::Error::other)?)?;
    socket.connect(addr.parse().map_err(std::io::Error::other)?).await
}

/// Holds one connection that sends nothing; reopens it as soon as the server drops it.
pub async fn idle_connection(addr: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        match connect_from_pod(&addr).await {
            Ok(mut c) => {
                tally.connections.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Declares a 4 MiB review on the mutating path and sends none of it; a new one every 4 s.
pub async fn budget_holder(addr: String, connector: tokio_rustls::TlsConnector, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let head = format!(
        "POST /mutate-kubernaut-ai-v1alpha1-signalprocessing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {DECLARED_BYTES}\r\n\r\n"
    );
    let Ok(name) = rustls::pki_types::ServerName::try_from("127.0.0.1") else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if let Ok(tcp) = connect_from_pod(&addr).await {
            if let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(5), connector.connect(name.clone(), tcp)).await {
                if tls.write_all(head.as_bytes()).await.is_ok() && tls.flush().await.is_ok() {
                    tally.held_heads.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(RENEW_EVERY.saturating_sub(started.elapsed())).await;
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts `holders` budget holders and `idle` silent connections against each of `idle_targets`;
/// they run until `stop` is set.
pub fn spawn_load(
    webhook_addr: &str,
    connector: &tokio_rustls::TlsConnector,
    holders: usize,
    idle_targets: &[String],
    idle: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut load = vec![];
    for _ in 0..holders {
        load.push(tokio::spawn(budget_holder(
            webhook_addr.to_string(),
            connector.clone(),
            stop.clone(),
            tally.clone(),
        )));
    }
    for target in idle_targets {
        for _ in 0..idle {
            load.push(tokio::spawn(idle_connection(target.clone(), stop.clone(), tally.clone())));
        }
    }
    load
}
