//! The listener shared by the admission webhook and Data Storage: TLS (rustls) or, for Data
//! Storage's explicit `--plain-http`, plain TCP; then HTTP/1.1 or HTTP/2 by ALPN via
//! hyper-util, with a graceful shutdown that lets in-flight requests finish.
//!
//! Bounded per client, so no client can hold the listener's resources for long:
//! - TLS handshakes in progress have a cap of their own and a short timeout. At the cap the
//!   peer holding the most places gives up its oldest unfinished handshake to a newcomer from
//!   any other peer at once (a real client finishes its handshake in milliseconds, a silent
//!   one never does), so silent connections from one address cannot delay a new API server
//!   connection; a newcomer from that same peer only replaces its own oldest handshake, after
//!   a grace it waits out unregistered (as many waiting as there are handshake places; more
//!   are closed). Plain connections have no handshake and skip this.
//! - Open connections have a cap overall and per peer address. At a cap the connection that
//!   has been idle longest (no request in flight) is closed gracefully to make room; only when
//!   every connection is busy is the newcomer refused. Connections that carry reviews stay.
//! - An HTTP/1 request head must arrive within a timeout (also the keep-alive bound); an
//!   HTTP/2 connection with no request for the idle timeout is closed, and every connection is
//!   closed gracefully at a maximum age, so a client's hold is never indefinite.
//! - A cap on concurrent HTTP/2 streams, and a lingering close: after the last response the
//!   write side is shut and what the client still sends is read and discarded for a moment, so
//!   an early answer (a 413 before the body was read) reaches the client instead of being
//!   destroyed by the TCP reset a close with unread data causes.
//!
//! Every connection shed is counted in `audit_guard_listener_shed_total{listener, reason}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub mod metrics {
    use crate::metrics::{counter_vec, declare, gauge_vec};
    use prometheus::{IntCounterVec, IntGaugeVec};

    declare! {
        /// Connections the listener closed or refused to protect itself, by listener (webhook|datastorage) and reason.
        pub static SHED: IntCounterVec = counter_vec("audit_guard_listener_shed_total", "Connections closed or refused by the listener's per-client bounds, by listener and reason (handshake_timeout|handshake_evicted (an unfinished handshake dropped, or a newcomer turned away, at the handshake cap)|peer_cap|connection_cap|idle_evicted|idle_timeout|max_age)", &["listener", "reason"]);

        pub static CONNECTIONS: IntGaugeVec = gauge_vec("audit_guard_listener_connections", "Connections held by the listener, by listener and stage (handshaking|open)", &["listener", "stage"]);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// The listener's name in metrics and logs.
    pub name: &'static str,
    /// Connections open at once (after the TLS handshake).
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// TLS handshakes in progress at once; at the cap the oldest is dropped for a newcomer.
    pub max_handshakes: usize,
    /// A client that connects but does not finish the TLS handshake is dropped after this.
    pub handshake_timeout: Duration,
    /// HTTP/1: the request head must arrive within this (also the idle keep-alive bound).
    pub header_read_timeout: Duration,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// A connection with no request in flight for this long is closed gracefully.
    pub idle_timeout: Duration,
    /// Every connection is closed gracefully at this age (clients reconnect); zero: never.
    pub max_connection_age: Duration,
    /// How long a closing connection keeps reading (and discarding) what the client still sends.
    pub linger: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            name: "listener",
            max_connections: 1024,
            max_connections_per_peer: 512,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(3),
            header_read_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 64,
            idle_timeout: Duration::from_secs(90),
            max_connection_age: Duration::from_secs(600),
            linger: Duration::from_secs(2),
        }
    }
}

/// The webhook's listener: TLS with the default limits.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> anyhow::Result<()> {
    serve_with(listener, Some(tls), app, shutdown, drain_timeout, &ListenerLimits::default()).await
}

/// Milliseconds since the first use, for cheap atomic timestamps.
fn now_ms() -> u64 {
    static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);
    BASE.elapsed().as_millis() as u64
}

/// The reasons `audit_guard_listener_shed_total` counts.
const SHED_REASONS: [&str; 7] = [
    "handshake_timeout",
    "handshake_evicted",
    "peer_cap",
    "connection_cap",
    "idle_evicted",
    "idle_timeout",
    "max_age",
];

/// At the handshake cap, how long the oldest unfinished handshake of the peer holding the most
/// places is left before a newcomer from that same peer may replace it: far longer than a real
/// client's handshake takes, and it bounds how fast one peer turns its places over.
const HANDSHAKE_GRACE: Duration = Duration::from_secs(1);

/// At a cap, how often one peer's newcomers may close an idle connection to get in. A pool that
/// left idle connections behind gets in at once; a peer holding more clients than its cap, each
/// reconnecting as soon as it is closed, would otherwise turn connections over as fast as it can
/// reconnect and take the server's time from everyone else.
const EVICTION_INTERVAL: Duration = Duration::from_millis(100);

/// Whether a newcomer from a peer whose newcomers last closed a connection at `last_ms` may close
/// one now.
fn eviction_due(last_ms: Option<u64>, now_ms: u64) -> bool {
    last_ms.is_none_or(|last| now_ms.saturating_sub(last) >= EVICTION_INTERVAL.as_millis() as u64)
}

/// What a newcomer gets at the handshake cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandshakeRoom {
    /// Under the cap: nothing else is touched.
    Fits,
    /// This unfinished handshake is dropped for the newcomer.
    Displace(u64),
    /// The newcomer waits this long (ms), unregistered, for its peer's oldest handshake to
    /// reach the grace, then asks again.
    Wait(u64),
}

/// Where a newcomer from `peer` finds a handshake place. A plain function over plain data:
/// `(id, peer, accepted_ms)` of every unfinished handshake not already told to go. The peer
/// holding the most places (ties: the one with the oldest handshake) gives up its oldest to a
/// newcomer from a peer holding fewer; a newcomer from a peer holding as many only replaces
/// that peer's own oldest, once it is older than the grace (it waits until then).
fn handshake_room(handshaking: &[(u64, IpAddr, u64)], peer: IpAddr, now_ms: u64, limits: &ListenerLimits) -> HandshakeRoom {
    if handshaking.len() < limits.max_handshakes.max(1) {
        return HandshakeRoom::Fits;
    }
    // Per peer: places held, and its oldest handshake as (accepted_ms, id).
    let mut held: HashMap<IpAddr, (usize, (u64, u64))> = HashMap::new();
    for &(id, p, at) in handshaking {
        let e = held.entry(p).or_insert((0, (at, id)));
        e.0 += 1;
        e.1 = e.1.min((at, id));
    }
    let heaviest = held.values().max_by_key(|(n, oldest)| (*n, std::cmp::Reverse(*oldest))).copied();
    let Some((most, (_, victim))) = heaviest else {
        return HandshakeRoom::Fits;
    };
    match held.get(&peer) {
        Some(&(mine, (oldest_at, oldest_id))) if mine >= most => {
            let grace = HANDSHAKE_GRACE.min(limits.handshake_timeout).as_millis() as u64;
            match now_ms.saturating_sub(oldest_at) {
                age if age >= grace => HandshakeRoom::Displace(oldest_id),
                age => HandshakeRoom::Wait(grace - age),
            }
        }
        _ => HandshakeRoom::Displace(victim),
    }
}

/// One accepted connection as the listener's bookkeeping sees it.
struct Conn {
    peer: IpAddr,
    accepted_ms: u64,
    /// Requests being answered on it now.
    in_flight: AtomicUsize,
    /// When a request last started or ended (or the connection opened).
    last_active_ms: AtomicU64,
    open: AtomicBool,
    /// Cancelled when the listener wants this connection gone (gracefully once open).
    close: CancellationToken,
    places: Arc<Places>,
}

/// Newcomers waiting for a place under the connection caps, and their wake-up: a connection
/// leaving, or one going idle (which makes it a candidate to close).
#[derive(Default)]
struct Places {
    freed: Notify,
    waiting: AtomicUsize,
}

impl Conn {
    fn idle_for_ms(&self, now: u64) -> Option<u64> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| now.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)))
    }
}

/// Counts a request in flight on a connection for as long as it lives.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn enter(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.last_active_ms.store(now_ms(), Ordering::Relaxed);
        Self(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_active_ms.store(now_ms(), Ordering::Relaxed);
        let was = self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if was == 1 && self.0.places.waiting.load(Ordering::Acquire) > 0 {
            self.0.places.freed.notify_waiters();
        }
    }
}

/// What becomes of an accepted connection.
enum Admission {
    Registered(u64, Arc<Conn>),
    /// Wait this long unregistered, then ask once more ([`Registry::after_wait`]).
    Wait(Duration),
    Refused,
}

/// Why a connection may not open (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    PeerCap,
    ConnectionCap,
}

/// Which connection, if any, to close so that a newcomer from `peer` fits under the caps: the
/// longest-idle one (of the same peer when the peer's cap binds). `Ok(None)`: it fits as is.
/// A plain function over plain data: `(id, peer, idle_ms)` of every open connection not
/// already closing, `idle_ms` None while a request is in flight; `may_evict` false when the
/// peer's newcomers closed one too recently ([`eviction_due`]).
fn choose_eviction(
    open: impl IntoIterator<Item = (u64, IpAddr, Option<u64>)>,
    peer: IpAddr,
    limits: &ListenerLimits,
    may_evict: bool,
) -> Result<Option<u64>, Refusal> {
    // One pass: counts, and the longest-idle connection of the peer and of all.
    let (mut from_peer, mut total) = (0usize, 0usize);
    // (idle_ms, id) of the longest idle.
    let mut peer_idlest: Option<(u64, u64)> = None;
    let mut idlest: Option<(u64, u64)> = None;
    for (id, p, idle) in open {
        total += 1;
        let candidate = idle.map(|idle| (idle, id));
        if p == peer {
            from_peer += 1;
            peer_idlest = peer_idlest.max(candidate);
        }
        idlest = idlest.max(candidate);
    }
    let (candidate, refusal) = if from_peer >= limits.max_connections_per_peer.max(1) {
        (peer_idlest, Refusal::PeerCap)
    } else if total >= limits.max_connections.max(1) {
        (idlest, Refusal::ConnectionCap)
    } else {
        return Ok(None);
    };
    if !may_evict {
        return Err(refusal);
    }
    candidate.map(|(_, id)| Some(id)).ok_or(refusal)
}

/// The listener's connections: handshaking and open, and the caps over them.
struct Registry {
    limits: ListenerLimits,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Newcomers waiting for a place under the connection caps ([`Registry::open`]).
    places: Arc<Places>,
    /// Newcomers waiting for a handshake place (see [`HandshakeRoom::Wait`]).
    waiting: AtomicUsize,
    /// When each peer's newcomers last closed a connection to get in ([`eviction_due`]).
    last_eviction_ms: Mutex<HashMap<IpAddr, u64>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gauge(&self, stage: &str, delta: i64) {
        metrics::CONNECTIONS.with_label_values(&[self.limits.name, stage]).add(delta);
    }

    fn shed(&self, reason: &str) {
        metrics::SHED.with_label_values(&[self.limits.name, reason]).inc();
    }

    /// Registers an accepted connection as handshaking, making room at the handshake cap
    /// ([`handshake_room`]; plain connections have no handshake and skip it).
    fn accepted(&self, peer: IpAddr, tls: bool) -> Admission {
        let now = now_ms();
        let mut conns = self.lock();
        let handshaking: Vec<_> = conns
            .iter()
            .filter(|(_, c)| !c.open.load(Ordering::Relaxed) && !c.close.is_cancelled())
            .map(|(id, c)| (*id, c.peer, c.accepted_ms))
            .collect();
        let room = if tls {
            handshake_room(&handshaking, peer, now, &self.limits)
        } else {
            HandshakeRoom::Fits
        };
        match room {
            HandshakeRoom::Fits => {}
            HandshakeRoom::Displace(victim) => {
                if let Some(v) = conns.get(&victim) {
                    v.close.cancel();
                }
                self.shed("handshake_evicted");
            }
            HandshakeRoom::Wait(ms) => {
                drop(conns);
                // Waiting newcomers hold a socket each: as many as handshake places, no more.
                let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
                if waiting >= self.limits.max_handshakes.max(1) {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    self.shed("handshake_evicted");
                    return Admission::Refused;
                }
                return Admission::Wait(Duration::from_millis(ms));
            }
        }
        let conn = Arc::new(Conn {
            peer,
            accepted_ms: now,
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(now),
            open: AtomicBool::new(false),
            close: CancellationToken::new(),
            places: self.places.clone(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        conns.insert(id, conn.clone());
        drop(conns);
        self.gauge("handshaking", 1);
        Admission::Registered(id, conn)
    }

    /// A newcomer that waited asks once more; it is refused if there is still no place.
    fn after_wait(&self, peer: IpAddr) -> Option<(u64, Arc<Conn>)> {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match self.accepted(peer, true) {
            Admission::Registered(id, conn) => Some((id, conn)),
            Admission::Wait(_) => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                self.shed("handshake_evicted");
                None
            }
            Admission::Refused => None,
        }
    }

    /// Moves a handshaken connection to open, closing the longest-idle one when a cap is
    /// reached (at most once per [`EVICTION_INTERVAL`] for one peer's newcomers) and waiting,
    /// within `wait`, for a place: a connection leaving or going idle. Err: no place in time, or
    /// too many newcomers already waiting (as many as handshake places).
    async fn open(&self, id: u64, conn: &Conn, wait: Duration) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut waiting = None;
        let result = loop {
            let freed = self.places.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let refusal = match self.try_open(id, conn) {
                Ok(()) => break Ok(()),
                Err(refusal) => refusal,
            };
            if waiting.is_none() {
                if self.places.waiting.fetch_add(1, Ordering::AcqRel) >= self.limits.max_handshakes.max(1) {
                    self.places.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(refusal);
                }
                waiting = Some(WaitingToOpen(&self.places.waiting));
            }
            // The eviction pace is the one thing that changes without a wake-up.
            let next = (tokio::time::Instant::now() + EVICTION_INTERVAL).min(deadline);
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(next) => {}
                _ = conn.close.cancelled() => break Err(refusal),
            }
            if tokio::time::Instant::now() >= deadline {
                break Err(refusal);
            }
        };
        drop(waiting);
        result
    }

    /// One look at the caps for a newcomer: opens it, closing a connection first to make
    /// room if a cap binds and one may go, or refuses.
    fn try_open(&self, id: u64, conn: &Conn) -> Result<(), Refusal> {
        let conns = self.lock();
        let now = now_ms();
        let live = |c: &Conn| c.open.load(Ordering::Relaxed) && !c.close.is_cancelled();
        let open = conns
            .iter()
            .filter(|(other, c)| **other != id && live(c))
            .map(|(other, c)| (*other, c.peer, c.idle_for_ms(now)));
        let mut last_eviction = self.last_eviction_ms.lock().unwrap_or_else(|e| e.into_inner());
        let may_evict = eviction_due(last_eviction.get(&conn.peer).copied(), now);
        // A connection told to go no longer counts against the caps.
        if let Some(victim) = choose_eviction(open, conn.peer, &self.limits, may_evict)? {
            if let Some(v) = conns.get(&victim) {
                v.close.cancel();
            }
            last_eviction.retain(|_, at| !eviction_due(Some(*at), now));
            last_eviction.insert(conn.peer, now);
            self.shed("idle_evicted");
        }
        conn.open.store(true, Ordering::Relaxed);
        conn.last_active_ms.store(now, Ordering::Relaxed);
        drop(last_eviction);
        drop(conns);
        self.gauge("handshaking", -1);
        self.gauge("open", 1);
        Ok(())
    }

    /// Forgets a connection that ended.
    fn left(&self, id: u64) {
        let removed = self.lock().remove(&id);
        if let Some(conn) = removed {
            let stage = if conn.open.load(Ordering::Relaxed) { "open" } else { "handshaking" };
            self.gauge(stage, -1);
        }
        self.places.freed.notify_waiters();
    }
}

/// Counts a newcomer waiting in [`Registry::open`] for as long as it waits.
struct WaitingToOpen<'a>(&'a AtomicUsize);

impl Drop for WaitingToOpen<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Forgets the connection when its task ends, however it ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.left(self.id);
    }
}

/// What every connection task shares.
struct Shared {
    registry: Arc<Registry>,
    acceptor: Option<TlsAcceptor>,
    h1: Builder<TokioExecutor>,
    h2: Builder<TokioExecutor>,
    app: Router,
    shutdown: CancellationToken,
}

/// Serves `app` on `listener`: TLS when `tls` is given, plain HTTP/1.1 otherwise.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    limits: &ListenerLimits,
) -> anyhow::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    // A timer lets hyper enforce its header-read timeout (HTTP/1) and keep-alive pings (HTTP/2).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    // The protocol is known from ALPN (or is HTTP/1.1 without TLS): no sniffing of the first
    // bytes, which would wait without a timeout for a client that sends nothing.
    let shared = Arc::new(Shared {
        registry: Arc::new(Registry {
            limits: limits.clone(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            places: Arc::default(),
            last_eviction_ms: Mutex::new(HashMap::new()),
        }),
        acceptor: tls.map(TlsAcceptor::from),
        h1: builder.clone().http1_only(),
        h2: builder.http2_only(),
        app,
        shutdown: shutdown.clone(),
    });
    // Every reason and stage shows at zero from the start, so dashboards and alerts see the series.
    for reason in SHED_REASONS {
        metrics::SHED.with_label_values(&[limits.name, reason]);
    }
    for stage in ["handshaking", "open"] {
        metrics::CONNECTIONS.with_label_values(&[limits.name, stage]);
    }
    let tasks = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(listener = limits.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let tls = shared.acceptor.is_some();
        let shared = shared.clone();
        match shared.registry.accepted(peer.ip(), tls) {
            Admission::Registered(id, conn) => {
                tasks.spawn(async move {
                    let _registered = Registered {
                        registry: shared.registry.clone(),
                        id,
                    };
                    serve_connection(&shared, tcp, peer, id, conn).await;
                });
            }
            Admission::Wait(wait) => {
                tasks.spawn(async move {
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => {
                            shared.registry.waiting.fetch_sub(1, Ordering::AcqRel);
                            return;
                        }
                        _ = tokio::time::sleep(wait) => {}
                    }
                    let Some((id, conn)) = shared.registry.after_wait(peer.ip()) else {
                        return;
                    };
                    let _registered = Registered {
                        registry: shared.registry.clone(),
                        id,
                    };
                    serve_connection(&shared, tcp, peer, id, conn).await;
                });
            }
            Admission::Refused => {}
        }
    }
    drop(listener);
    tasks.close();
    tracing::info!(listener = limits.name, "stopped accepting; finishing in-flight requests");
    if tokio::time::timeout(drain_timeout, tasks.wait()).await.is_err() {
        tracing::warn!(listener = limits.name, ?drain_timeout, "in-flight requests did not finish in time");
    }
    Ok(())
}

/// A connection's bytes: TLS, or plain TCP for Data Storage's `--plain-http`.
enum Stream {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// Handshake, admission under the caps, then HTTP until the client, a bound or shutdown ends it.
async fn serve_connection(shared: &Shared, tcp: TcpStream, peer: SocketAddr, id: u64, conn: Arc<Conn>) {
    let registry = &shared.registry;
    let limits = &registry.limits;
    let (stream, h2) = match &shared.acceptor {
        Some(acceptor) => {
            let tls = tokio::select! {
                // Dropped for a newcomer (counted by the registry) or shutting down.
                _ = conn.close.cancelled() => return,
                _ = shared.shutdown.cancelled() => return,
                handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)) => match handshake {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = limits.name, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        registry.shed("handshake_timeout");
                        tracing::debug!(listener = limits.name, %peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            (Stream::Tls(Box::new(tls)), h2)
        }
        None => (Stream::Plain(tcp), false),
    };
    if let Err(refusal) = registry.open(id, &conn, limits.handshake_timeout).await {
        let reason = match refusal {
            Refusal::PeerCap => "peer_cap",
            Refusal::ConnectionCap => "connection_cap",
        };
        registry.shed(reason);
        tracing::debug!(listener = limits.name, %peer, reason, "connection refused: every connection under the cap is busy");
        return;
    }
    let app = shared.app.clone();
    let tracked = conn.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = InFlight::enter(&tracked);
        let call = app.clone().oneshot(req);
        async move {
            let answered: Result<axum::response::Response, Infallible> = call.await;
            drop(in_flight);
            answered
        }
    });
    let builder = if h2 { &shared.h2 } else { &shared.h1 };
    let served = builder.serve_connection(TokioIo::new(Lingering::new(stream, limits.linger)), svc);
    tokio::pin!(served);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            result = served.as_mut() => break result,
            reason = close_reason(&conn, limits, &shared.shutdown), if !closing => {
                if let Some(reason) = reason {
                    registry.shed(reason);
                }
                served.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = limits.name, %peer, error = %e, "connection ended with an error");
    }
}

/// Resolves when an open connection should be closed gracefully: shutdown or an eviction
/// (None: already counted), its maximum age, or an idle spell (the reason to count).
async fn close_reason(conn: &Conn, limits: &ListenerLimits, shutdown: &CancellationToken) -> Option<&'static str> {
    let age = async {
        if limits.max_connection_age.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(limits.max_connection_age).await;
    };
    let idle = async {
        let limit = limits.idle_timeout.as_millis() as u64;
        loop {
            match conn.idle_for_ms(now_ms()) {
                Some(idle) if idle >= limit => return,
                Some(idle) => tokio::time::sleep(Duration::from_millis(limit - idle)).await,
                // Busy: look again after another idle spell's length at most.
                None => tokio::time::sleep(Duration::from_millis(limit.max(1))).await,
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = conn.close.cancelled() => None,
        _ = age => Some("max_age"),
        _ = idle, if !limits.idle_timeout.is_zero() => Some("idle_timeout"),
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

enum LingerState {
    Open,
    Draining(Pin<Box<tokio::time::Sleep>>),
    Closed,
}

/// A stream whose shutdown first shuts the write side, then reads and discards what the peer
/// still sends until it closes too or `linger` passes (bounded by time only: a byte cap would
/// end the linger early exactly for the large uploads an early 413 answers).
pub struct Lingering<S> {
    inner: S,
    linger: Duration,
    state: LingerState,
}

impl<S> Lingering<S> {
    pub fn new(inner: S, linger: Duration) -> Self {
        Self {
            inner,
            linger,
            state: LingerState::Open,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                LingerState::Open => {
                    std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.state = LingerState::Draining(Box::pin(tokio::time::sleep(this.linger)));
                }
                LingerState::Draining(until) => {
                    if until.as_mut().poll(cx).is_ready() {
                        this.state = LingerState::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        // The peer is done (EOF) or gone: nothing left to protect.
                        Poll::Ready(Ok(())) if buf.filled().is_empty() => this.state = LingerState::Closed,
                        Poll::Ready(Err(_)) => this.state = LingerState::Closed,
                        Poll::Ready(Ok(())) => {}
                    }
                }
                LingerState::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The server answers after reading only the head and closes while the client is still
    /// sending a large body and reading the answer slowly. A plain close with unread data makes
    /// the kernel reset the connection and drop the part of the answer not yet sent; with the
    /// lingering close the client reads all of it.
    async fn early_answer_arrives_whole(linger: Duration) -> bool {
        const ANSWER: usize = 1024 * 1024;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = Lingering::new(tcp, linger);
            let mut head = [0u8; 16];
            s.read_exact(&mut head).await.unwrap();
            let mut answer = format!("HTTP/1.1 413 Payload Too Large\r\ncontent-length: {ANSWER}\r\n\r\n").into_bytes();
            answer.resize(answer.len() + ANSWER, b'a');
            let _ = s.write_all(&answer).await;
            let _ = s.shutdown().await;
        });
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let (mut rd, mut wr) = socket.connect(addr).await.unwrap().into_split();
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..1024 {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut got = 0;
        let mut buf = vec![0u8; 16 * 1024];
        let whole = loop {
            match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
                Ok(Ok(0)) => break got >= ANSWER,
                Ok(Ok(n)) => got += n,
                Ok(Err(_)) | Err(_) => break false,
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        writer.abort();
        let _ = server.await;
        whole
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn under_the_caps_a_newcomer_fits_without_closing_anything() {
        let limits = ListenerLimits {
            max_connections: 3,
            max_connections_per_peer: 2,
            ..Default::default()
        };
        assert_eq!(choose_eviction([], ip("10.0.0.1"), &limits, true), Ok(None));
        assert_eq!(
            choose_eviction([(1, ip("10.0.0.1"), None)], ip("10.0.0.1"), &limits, true),
            Ok(None)
        );
    }

    #[test]
    fn at_the_overall_cap_the_longest_idle_connection_of_anyone_goes() {
        let limits = ListenerLimits {
            max_connections: 3,
            max_connections_per_peer: 2,
            ..Default::default()
        };
        let open = [
            (1, ip("10.0.0.1"), Some(5)),
            (2, ip("10.0.0.2"), Some(50)),
            (3, ip("10.0.0.1"), None),
        ];
        assert_eq!(choose_eviction(open, ip("10.0.0.3"), &limits, true), Ok(Some(2)));
    }

    #[test]
    fn at_a_peers_cap_only_that_peers_connections_are_candidates() {
        let limits = ListenerLimits {
            max_connections: 10,
            max_connections_per_peer: 2,
            ..Default::default()
        };
        let open = [
            (1, ip("10.0.0.1"), Some(5)),
            (2, ip("10.0.0.2"), Some(50)),
            (3, ip("10.0.0.1"), Some(1)),
        ];
        assert_eq!(choose_eviction(open, ip("10.0.0.1"), &limits, true), Ok(Some(1)));
    }

    #[test]
    fn busy_connections_are_never_closed_for_a_newcomer() {
        let limits = ListenerLimits {
            max_connections: 3,
            max_connections_per_peer: 2,
            ..Default::default()
        };
        let peer_busy = [(1, ip("10.0.0.1"), None), (3, ip("10.0.0.1"), None), (2, ip("10.0.0.2"), Some(9))];
        assert_eq!(choose_eviction(peer_busy, ip("10.0.0.1"), &limits, true), Err(Refusal::PeerCap));
        let all_busy = [(1, ip("10.0.0.1"), None), (2, ip("10.0.0.2"), None), (3, ip("10.0.0.3"), None)];
        assert_eq!(
            choose_eviction(all_busy, ip("10.0.0.4"), &limits, true),
            Err(Refusal::ConnectionCap)
        );
    }

    #[test]
    fn a_peer_that_closed_a_connection_to_get_in_waits_before_closing_another() {
        let limits = ListenerLimits {
            max_connections: 10,
            max_connections_per_peer: 2,
            ..Default::default()
        };
        let open = [(1, ip("10.0.0.1"), Some(5_000)), (2, ip("10.0.0.1"), Some(9_000))];
        assert_eq!(choose_eviction(open, ip("10.0.0.1"), &limits, false), Err(Refusal::PeerCap));
        let interval = EVICTION_INTERVAL.as_millis() as u64;
        assert!(eviction_due(None, 0));
        assert!(!eviction_due(Some(1_000), 1_000 + interval - 1));
        assert!(eviction_due(Some(1_000), 1_000 + interval));
        // Under the caps the pace does not matter: nothing is closed.
        assert_eq!(choose_eviction(open[..1].iter().copied(), ip("10.0.0.1"), &limits, false), Ok(None));
    }

    fn handshakes(peers: &[(&str, u64)]) -> Vec<(u64, IpAddr, u64)> {
        peers.iter().enumerate().map(|(i, (p, at))| (i as u64, ip(p), *at)).collect()
    }

    #[test]
    fn under_the_handshake_cap_a_newcomer_fits() {
        let limits = ListenerLimits {
            max_handshakes: 3,
            ..Default::default()
        };
        let held = handshakes(&[("10.0.0.9", 0), ("10.0.0.9", 0)]);
        assert_eq!(handshake_room(&held, ip("10.0.0.1"), 0, &limits), HandshakeRoom::Fits);
    }

    /// Silent connections from one address cannot make a newcomer from another wait: the
    /// heaviest peer's oldest handshake goes at once, however young.
    #[test]
    fn at_the_handshake_cap_the_heaviest_peer_gives_up_its_oldest_to_anyone_else() {
        let limits = ListenerLimits {
            max_handshakes: 4,
            ..Default::default()
        };
        let held = handshakes(&[("10.0.0.9", 500), ("10.0.0.9", 400), ("10.0.0.8", 100), ("10.0.0.9", 450)]);
        assert_eq!(handshake_room(&held, ip("10.0.0.1"), 510, &limits), HandshakeRoom::Displace(1));
        assert_eq!(handshake_room(&held, ip("10.0.0.8"), 510, &limits), HandshakeRoom::Displace(1));
    }

    #[test]
    fn the_heaviest_peer_only_replaces_its_own_oldest_after_the_grace() {
        let limits = ListenerLimits {
            max_handshakes: 3,
            ..Default::default()
        };
        let held = handshakes(&[("10.0.0.9", 1_000), ("10.0.0.9", 1_200), ("10.0.0.8", 0)]);
        assert_eq!(handshake_room(&held, ip("10.0.0.9"), 1_500, &limits), HandshakeRoom::Wait(500));
        assert_eq!(handshake_room(&held, ip("10.0.0.9"), 2_000, &limits), HandshakeRoom::Displace(0));
        // Two peers holding as many: each newcomer of theirs competes only with its own.
        let even = handshakes(&[("10.0.0.9", 1_000), ("10.0.0.8", 1_900)]);
        let two = ListenerLimits {
            max_handshakes: 2,
            ..Default::default()
        };
        assert_eq!(handshake_room(&even, ip("10.0.0.8"), 2_000, &two), HandshakeRoom::Wait(900));
        assert_eq!(handshake_room(&even, ip("10.0.0.9"), 2_000, &two), HandshakeRoom::Displace(0));
    }

    #[tokio::test]
    async fn an_early_answer_survives_the_close() {
        assert!(early_answer_arrives_whole(Duration::from_secs(5)).await);
    }

    /// The test above can fail: without lingering the same exchange loses the answer.
    #[tokio::test]
    async fn without_lingering_the_answer_is_lost() {
        assert!(!early_answer_arrives_whole(Duration::ZERO).await);
    }

    #[tokio::test]
    async fn lingering_stops_at_eof_or_after_its_time() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut s = Lingering::new(a, Duration::from_secs(3600));
        b.write_all(b"late bytes").await.unwrap();
        drop(b);
        // EOF from the peer ends the linger at once.
        tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await.unwrap().unwrap();

        let (a, _b) = tokio::io::duplex(64);
        let mut s = Lingering::new(a, Duration::from_millis(50));
        // A peer that neither sends nor closes: the linger ends by time.
        tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await.unwrap().unwrap();
    }
}
