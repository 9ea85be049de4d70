//! The TLS admission webhook of `audit-guard serve`: mutating (adds the audit finalizer)
//! and validating (guards its removal, stores the record before an unguarded DELETE).

pub mod handlers;
pub mod metrics;
pub mod policy;
pub mod registration;
pub mod review;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::from_cr::RecordBuilder;
use crate::certs::{self, ReloadingClientVerifier, ReloadingResolver};
use crate::confirmed::ConfirmedRecords;
use crate::https::ListenerLimits;
use crate::sink::RecordSink;
use handlers::BodyLimits;
use policy::Policy;

pub use handlers::{MUTATE_PATH, VALIDATE_PATH};

/// What the webhook is configured with (`serve`'s flags, see [`crate::config`]).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub cert_dir: PathBuf,
    /// When set, only clients with a certificate this CA signed (the API server, through its
    /// admission configuration) complete the TLS handshake.
    pub client_ca_file: Option<PathBuf>,
    pub addr: SocketAddr,
    pub limits: BodyLimits,
    /// Connections, HTTP/2 streams and header read time, sized with `limits` to the pod's memory.
    pub listener: ListenerLimits,
    pub policy: Policy,
    pub build_record: RecordBuilder,
    /// Bound on finishing in-flight reviews at shutdown.
    pub drain_timeout: Duration,
}

/// What the webhook talks to: the API server (to read the live object), Data Storage, and
/// the set of uids whose records this process has seen confirmed.
#[derive(Clone)]
pub struct WebhookDeps {
    pub kube: kube::Client,
    pub ds: Arc<dyn RecordSink>,
    pub confirmed: Arc<ConfirmedRecords>,
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
    client_ca: Option<Arc<ReloadingClientVerifier>>,
    app: axum::Router,
    drain_timeout: Duration,
    listener_limits: ListenerLimits,
    ready: Readiness,
}

impl Webhook {
    /// Loads the certificate (and client CA) and binds the listener; readiness turns true here.
    pub async fn bind(settings: WebhookSettings, deps: WebhookDeps, ready: Readiness) -> anyhow::Result<Self> {
        let resolver = ReloadingResolver::load(&settings.cert_dir).context("loading the webhook serving certificate")?;
        let client_ca = match &settings.client_ca_file {
            Some(path) => Some(ReloadingClientVerifier::load(path).context("loading the webhook client CA")?),
            None => None,
        };
        let tls = Arc::new(certs::server_config_verifying_clients(resolver.clone(), client_ca.clone())?);
        let listener = TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("binding the webhook listener on {}", settings.addr))?;
        let peer_authenticated = client_ca.is_some();
        let state = Arc::new(handlers::AppState {
            peer_authenticated,
            policy: settings.policy,
            ds: deps.ds,
            kube: deps.kube,
            confirmed: deps.confirmed,
            build_record: settings.build_record,
            budget: handlers::AppState::budget_for(&settings.limits),
            limits: settings.limits,
        });
        // Bound and holding a certificate: connections queue in the backlog until serve() accepts.
        ready.set(true);
        Ok(Self {
            listener,
            tls,
            resolver,
            client_ca,
            app: handlers::router(state),
            drain_timeout: settings.drain_timeout,
            listener_limits: settings.listener,
            ready,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown`, then finishes in-flight reviews (bounded).
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.resolver.spawn_reloader(shutdown.clone());
        if let Some(ca) = &self.client_ca {
            ca.spawn_reloader(shutdown.clone());
        }
        tracing::info!(
            addr = %self.listener.local_addr()?,
            client_certificates = self.client_ca.is_some(),
            "admission webhook listening (TLS)"
        );
        let result = crate::https::serve_with(
            self.listener,
            Some(self.tls),
            self.app,
            shutdown,
            self.drain_timeout,
            &self.listener_limits,
        )
        .await;
        self.ready.set(false);
        result
    }
}
