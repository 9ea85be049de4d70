//! The shared listener's bounds (src/https.rs), over real sockets: idle connections that send
//! nothing are closed (TLS handshake timeout, HTTP/1 header-read timeout, idle timeout, maximum
//! age); silent handshakes from one address neither keep a client at another out nor make it
//! wait; at a connection cap (overall or per peer) the longest-idle connection makes room, and
//! only busy connections make a newcomer wait; a pod with more clients than its cap cannot make
//! the listener turn connections over faster than a set pace.

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
async fn idle_plain_connections_are_closed_and_a_newcomer_at_the_cap_is_served() {
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

/// A server whose `/slow` answers only when the test says so (busy connections).
async fn start_with_slow(limits: ListenerLimits) -> (std::net::SocketAddr, CancellationToken, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get(move || {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                "slow"
            }
        }),
    );
    let stop = shutdown.clone();
    tokio::spawn(async move { serve_with(listener, None, app, stop, Duration::from_secs(1), &limits).await });
    (addr, shutdown, release)
}

/// A connection from `source` (a loopback address standing for another pod).
async fn connect_from(source: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends `GET path` (keep-alive) and returns the connection (the request stays in flight).
async fn send_get(mut c: TcpStream, path: &str) -> TcpStream {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    c
}

/// Reads one answer's bytes until the body `want` shows up, EOF, or 30 s.
async fn read_answer(c: &mut TcpStream, want: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(n) = c.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&out).ends_with(want) {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn patient(max_connections: usize) -> ListenerLimits {
    ListenerLimits {
        max_connections,
        header_read_timeout: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(300),
        ..Default::default()
    }
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room_for_a_newcomer() {
    let (addr, shutdown, _release) = start_with_slow(patient(2)).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Both slots are held by idle connections: the newcomer is served at once...
    let answer = get_root(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ... because the longest-idle one was closed for it; the other still serves.
    assert!(closed_by_server(&mut first).await, "the longest-idle connection stayed open");
    let mut second = send_get(second, "/").await;
    let answer = read_answer(&mut second, "ok").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    shutdown.cancel();
}

#[tokio::test]
async fn at_the_cap_busy_connections_are_kept_and_a_newcomer_is_refused() {
    let (addr, shutdown, release) = start_with_slow(patient(1)).await;
    let mut busy = send_get(TcpStream::connect(addr).await.unwrap(), "/slow").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The only slot carries a request in flight: the newcomer is closed without an answer.
    let mut newcomer = send_get(TcpStream::connect(addr).await.unwrap(), "/").await;
    let answer = read_answer(&mut newcomer, "ok").await;
    assert!(
        !answer.contains("200"),
        "served beyond the cap while every connection was busy: {answer}"
    );
    // The busy request is answered whole.
    release.notify_waiters();
    let answer = read_answer(&mut busy, "slow").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    shutdown.cancel();
}

#[tokio::test]
async fn one_peer_at_its_cap_cannot_take_the_connections_of_others() {
    let (addr, shutdown, release) = start_with_slow(ListenerLimits {
        max_connections_per_peer: 2,
        ..patient(8)
    })
    .await;
    // Another pod (127.0.0.2) holds two busy connections: its third is refused...
    let mut held = vec![];
    for _ in 0..2 {
        held.push(send_get(connect_from("127.0.0.2", addr).await, "/slow").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = send_get(connect_from("127.0.0.2", addr).await, "/").await;
    let answer = read_answer(&mut third, "ok").await;
    assert!(!answer.contains("200"), "a peer got past its cap: {answer}");
    // ... while another peer is served.
    let answer = get_root(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    release.notify_waiters();
    for mut c in held {
        let answer = read_answer(&mut c, "slow").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn a_connection_with_no_request_for_the_idle_timeout_is_closed() {
    let (addr, shutdown, _release) = start_with_slow(ListenerLimits {
        idle_timeout: Duration::from_secs(1),
        ..patient(8)
    })
    .await;
    let mut c = send_get(TcpStream::connect(addr).await.unwrap(), "/").await;
    let answer = read_answer(&mut c, "ok").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Kept alive by HTTP (the head timeout is 300 s), closed by the idle bound.
    assert!(closed_by_server(&mut c).await, "an idle connection stayed open");
    shutdown.cancel();
}

#[tokio::test]
async fn a_busy_connection_is_closed_gracefully_at_its_maximum_age() {
    let (addr, shutdown, _release) = start_with_slow(ListenerLimits {
        max_connection_age: Duration::from_secs(1),
        ..patient(8)
    })
    .await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut answered = 0;
    let closed = loop {
        if c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.is_err() {
            break true;
        }
        let answer = read_answer(&mut c, "ok").await;
        if answer.is_empty() {
            break true;
        }
        // Every request sent before the close is answered whole.
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answered += 1;
        if answer.to_ascii_lowercase().contains("connection: close") || answered > 300 {
            break answered <= 300;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(closed, "a connection in steady use outlived its maximum age");
    assert!(answered > 0);
    shutdown.cancel();
}

/// Silent handshakes from one address (a pod) neither keep a client at another address (the
/// API server) out nor make it wait: the pod's oldest handshake is dropped for it at once, well
/// before the 1 s grace after which a newcomer from the pod itself may replace one of its own
/// (a real client there waits for it, and then gets in).
#[tokio::test]
async fn silent_handshakes_from_a_pod_neither_keep_the_api_server_out_nor_make_it_wait() {
    let dir = tempfile::tempdir().unwrap();
    let issued = support::datastorage::issue_certs(dir.path());
    let resolver = audit_guard::certs::ReloadingResolver::load(dir.path()).unwrap();
    let tls = Arc::new(audit_guard::certs::server_config(resolver).unwrap());
    let (addr, shutdown) = start(
        Some(tls),
        ListenerLimits {
            max_connections: 4,
            max_handshakes: 4,
            handshake_timeout: Duration::from_secs(300),
            ..Default::default()
        },
    )
    .await;
    // The pod fills the handshake cap with clients that connect and never say a word.
    let mut silent = vec![];
    for _ in 0..4 {
        silent.push(connect_from("127.0.0.2", addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = |from: &str, timeout: Duration| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(issued.ca_pem.as_bytes()).unwrap())
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .timeout(timeout)
            .build()
            .unwrap()
    };
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let r = client("127.0.0.1", Duration::from_millis(900)).get(&url).send().await;
    let r = r.expect("the API server's connection was kept out by the pod's silent handshakes, or waited for the grace");
    assert_eq!(r.text().await.unwrap(), "ok");
    // The pod's oldest silent one made room.
    assert!(closed_by_server(&mut silent[0]).await);
    // A real client on the pod's own address waits out the grace, then replaces the pod's oldest.
    let r = client("127.0.0.2", Duration::from_secs(30)).get(&url).send().await;
    let r = r.expect("a real client sharing the pod's address was kept out");
    assert_eq!(r.text().await.unwrap(), "ok");
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

#[tokio::test]
async fn a_peer_with_more_clients_than_its_cap_cannot_make_the_listener_spin() {
    let (addr, shutdown, _release) = start_with_slow(ListenerLimits {
        max_connections_per_peer: 4,
        handshake_timeout: Duration::from_millis(500),
        ..patient(64)
    })
    .await;
    // Twice as many silent clients as the pod's cap, each reconnecting the moment it is closed.
    let stop = CancellationToken::new();
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..8 {
        let (stop, closed) = (stop.clone(), closed.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let mut c = connect_from("127.0.0.2", addr).await;
                tokio::select! {
                    _ = closed_by_server(&mut c) => {}
                    _ = stop.cancelled() => return,
                }
                closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Another client is served meanwhile.
    let answer = get_root(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stop.cancel();
    // Paced: about one connection turned over per 100 ms for the pod, plus each waiting
    // newcomer refused after its wait; unpaced, every reconnect closed another at once.
    let closed = closed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(closed < 100, "one pod turned {closed} connections over in 2 s");
    shutdown.cancel();
}
