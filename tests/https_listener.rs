//! The shared listener's bounds (src/https.rs), over real sockets: idle connections that send
//! nothing are closed (TLS handshake timeout, HTTP/1 header-read timeout); at the connection
//! cap the listener stops accepting, and a waiting client is served as soon as a slot frees.

mod support;

use std::sync::Arc;
use std::time::Duration;

use audit_guard::https::{serve_with, ListenerLimits};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn limits(max_connections: usize) -> ListenerLimits {
    ListenerLimits {
        max_connections,
        handshake_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

async fn start(tls: Option<Arc<rustls::ServerConfig>>, limits: ListenerLimits) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let app = Router::new().route("/", get(|| async { "ok" }));
    let stop = shutdown.clone();
    tokio::spawn(async move { serve_with(listener, tls, app, stop, Duration::from_secs(1), &limits).await });
    (addr, shutdown)
}

/// Reads until the server closes the connection (true) or 30 s pass (false).
async fn closed_by_server(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn get_root(addr: std::net::SocketAddr) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), c.read_to_string(&mut out))
        .await
        .expect("answered")
        .unwrap();
    out
}

#[tokio::test]
async fn idle_plain_connections_are_closed_and_the_cap_holds_newcomers_until_a_slot_frees() {
    let (addr, shutdown) = start(None, limits(4)).await;
    // Four silent connections fill the cap; a fifth client's request waits in the backlog.
    let mut idle = vec![];
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let waiting = tokio::spawn(get_root(addr));
    // The silent ones are closed by the header-read timeout, which frees the slots...
    for c in &mut idle {
        assert!(closed_by_server(c).await, "an idle connection stayed open");
    }
    // ... and the waiting client is served.
    let answer = waiting.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A slow sender that never finishes its head is closed too.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(closed_by_server(&mut slow).await, "a half-sent head kept the connection");
    shutdown.cancel();
}

#[tokio::test]
async fn at_the_cap_a_newcomer_is_served_only_when_a_connection_closes() {
    let (addr, shutdown) = start(
        None,
        ListenerLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(300),
            ..Default::default()
        },
    )
    .await;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let waiting = tokio::spawn(get_root(addr));
    // Not an expectation about speed: with both slots held it cannot be served at all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "served beyond the connection cap");
    drop(first);
    let answer = waiting.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_client_that_never_handshakes_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let issued = support::datastorage::issue_certs(dir.path());
    let resolver = audit_guard::certs::ReloadingResolver::load(dir.path()).unwrap();
    let tls = Arc::new(audit_guard::certs::server_config(resolver).unwrap());
    let (addr, shutdown) = start(Some(tls), limits(2)).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut silent2 = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_server(&mut silent).await);
    assert!(closed_by_server(&mut silent2).await);
    // A real TLS client is served afterwards.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(issued.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client.get(format!("https://127.0.0.1:{}/", addr.port())).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    shutdown.cancel();
}
