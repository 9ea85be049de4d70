//! The listener shared by the admission webhook and Data Storage: TLS (rustls) or, for Data
//! Storage's explicit `--plain-http`, plain TCP; then HTTP/1.1 or HTTP/2 by ALPN via
//! hyper-util, with a graceful shutdown that lets in-flight requests finish.
//!
//! Bounded against cheap denial of service: at most `max_connections` at once (beyond that
//! the listener stops accepting and newcomers wait in the kernel backlog), a TLS handshake
//! timeout, an HTTP/1 header-read timeout (it also closes idle keep-alive connections), a cap
//! on concurrent HTTP/2 streams, and a lingering close: after the last response the write side
//! is shut and what the client still sends is read and discarded for a moment, so an early
//! answer (a 413 before the body was read) reaches the client instead of being destroyed by
//! the TCP reset a close with unread data causes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections open at once; at the cap the listener stops accepting until one closes.
    pub max_connections: usize,
    /// A client that connects but never finishes the TLS handshake is dropped after this.
    pub handshake_timeout: Duration,
    /// HTTP/1: the request head must arrive within this (also the idle keep-alive bound).
    pub header_read_timeout: Duration,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// How long a closing connection keeps reading (and discarding) what the client still sends.
    pub linger: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 64,
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

/// Serves `app` on `listener`: TLS when `tls` is given, plain HTTP/1.1 otherwise.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    limits: &ListenerLimits,
) -> anyhow::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
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
    let h1 = Arc::new(builder.clone().http1_only());
    let h2 = Arc::new(builder.http2_only());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection cap reached; not accepting until one closes"
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    s = slots.clone().acquire_owned() => match s {
                        Ok(s) => s,
                        Err(_) => break,
                    },
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, h1, h2) = (acceptor.clone(), h1.clone(), h2.clone());
        let watcher = graceful.watcher();
        let svc = TowerToHyperService::new(app.clone());
        let (handshake_timeout, linger) = (limits.handshake_timeout, limits.linger);
        tokio::spawn(async move {
            let _slot = slot;
            let result = match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let builder = if tls.get_ref().1.alpn_protocol() == Some(b"h2") { h2 } else { h1 };
                    let conn = builder.serve_connection(TokioIo::new(Lingering::new(tls, linger)), svc);
                    watcher.watch(conn.into_owned()).await
                }
                None => {
                    let conn = h1.serve_connection(TokioIo::new(Lingering::new(tcp, linger)), svc);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; finishing in-flight requests");
    if tokio::time::timeout(drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain_timeout, "in-flight requests did not finish in time");
    }
    Ok(())
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
