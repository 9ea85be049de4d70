//! The TLS admission webhook of `audit-guard serve`: mutating (adds the audit finalizer)
//! and validating (guards its removal, stores the record before an unguarded DELETE).

pub mod decisions;
pub mod handlers;
pub mod metrics;
pub mod registration;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::from_cr::{self, RecordBuilder};
use crate::audit::RecordSink;
use crate::certs::{self, ReloadingResolver};
use crate::config::ServeArgs;
use decisions::Policy;

pub use handlers::{MUTATE_PATH, VALIDATE_PATH};

#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub cert_dir: PathBuf,
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub policy: Policy,
    pub build_record: RecordBuilder,
    /// Bound on finishing in-flight reviews at shutdown.
    pub drain_timeout: Duration,
}

impl WebhookSettings {
    pub fn from_args(args: &ServeArgs) -> Self {
        Self {
            cert_dir: args.cert_dir.clone(),
            addr: args.webhook_addr,
            max_body_bytes: args.max_body_bytes,
            policy: Policy {
                controller_identity: args.controller_identity.clone(),
                break_glass_group: args.break_glass_group.clone(),
            },
            build_record: from_cr::build_record,
            drain_timeout: args.shutdown_timeout,
        }
    }
}

/// True once the listener is bound and a certificate is loaded; false again at shutdown.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, v: bool) {
        self.0.store(v, Ordering::Relaxed)
    }
}

/// A bound webhook, not yet serving (so callers can learn the port first).
pub struct Webhook {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    resolver: Arc<ReloadingResolver>,
    app: axum::Router,
    drain_timeout: Duration,
    ready: Readiness,
}

impl Webhook {
    /// Loads the certificate and binds the listener; readiness turns true here.
    pub async fn bind(settings: WebhookSettings, sink: Arc<dyn RecordSink>, ready: Readiness) -> anyhow::Result<Self> {
        let resolver = ReloadingResolver::load(&settings.cert_dir).context("loading the webhook serving certificate")?;
        let tls = Arc::new(certs::server_config(resolver.clone())?);
        let listener = TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("binding the webhook listener on {}", settings.addr))?;
        let state = Arc::new(handlers::AppState {
            policy: settings.policy,
            sink,
            build_record: settings.build_record,
        });
        // Bound and holding a certificate: connections queue in the backlog until serve() accepts.
        ready.set(true);
        Ok(Self {
            listener,
            tls,
            resolver,
            app: handlers::router(state, settings.max_body_bytes),
            drain_timeout: settings.drain_timeout,
            ready,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown`, then finishes in-flight reviews (bounded).
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.resolver.spawn_reloader(shutdown.clone());
        tracing::info!(addr = %self.listener.local_addr()?, "admission webhook listening (TLS)");
        let result = crate::https::serve(self.listener, self.tls, self.app, shutdown, self.drain_timeout).await;
        self.ready.set(false);
        result
    }
}

/// Binds and serves the webhook until `shutdown`.
pub async fn run(
    settings: WebhookSettings,
    sink: Arc<dyn RecordSink>,
    shutdown: CancellationToken,
    ready: Readiness,
) -> anyhow::Result<()> {
    Webhook::bind(settings, sink, ready).await?.serve(shutdown).await
}
