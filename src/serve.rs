//! `audit-guard serve`: metrics and health listeners, the TLS admission webhook, and — while this replica holds the Lease — the finalizer controller, the
//! buffered writer and the retention cleaner. SIGTERM/SIGINT shut it all down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::client::DataStorageClient;
use crate::config::{ApiMode, ServeArgs};
use crate::confirmed::{confirmed_records, ConfirmedRecords};
use crate::controller::{self, Context};
use crate::kubernaut_api::KubernautApi;
use crate::leader::LeaderElector;
use crate::own_api::OwnApi;
use crate::sink::RecordSink;
use crate::webhook::{Readiness, Webhook, WebhookDeps, WebhookSettings};
use crate::writer::{AuditWriter, WriterConfig};
use crate::{certs, metrics, retention, webhook};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    metrics::init();
    webhook::metrics::init();
    certs::metrics::init();
    crate::https::metrics::init();
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));

    // First, so that a refused Data Storage setting (a token over plain HTTP) stops the start
    // before anything else is tried.
    let http = DataStorageClient::new(&(&args.datastorage).into()).context("building the Data Storage client")?;
    // The one place the Data Storage API is chosen; everything below speaks to the sink.
    let ds: Arc<dyn RecordSink> = match args.datastorage.api_mode {
        ApiMode::SignalProcessing => Arc::new(OwnApi::new(http)),
        ApiMode::Events => Arc::new(KubernautApi::new(http, args.datastorage.events_replay_window)),
    };
    let client = kube::Client::try_default().await.context("building the Kubernetes client")?;
    // One set for the webhook and every leadership term of the controller.
    let confirmed = Arc::new(confirmed_records());

    let metrics_app = Router::new().route("/metrics", get(serve_metrics));
    let metrics_srv = listen(args.metrics_addr, metrics_app, shutdown.clone()).await?;
    let webhook_ready = Readiness::default();
    let health = Arc::new(Health {
        ds: ds.clone(),
        check_ds: args.readyz_checks_datastorage,
        webhook: (!args.disable_webhook).then(|| webhook_ready.clone()),
    });
    let health_app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/readyz/datastorage", get(readyz_datastorage))
        .with_state(health);
    let health_srv = listen(args.health_addr, health_app, shutdown.clone()).await?;

    // The webhook serves on every replica; it is bound before leadership is sought so a
    // certificate problem fails the start instead of surfacing at the first review.
    let webhook_srv = if args.disable_webhook {
        None
    } else {
        let deps = WebhookDeps {
            kube: client.clone(),
            ds: ds.clone(),
            confirmed: confirmed.clone(),
        };
        let hook = Webhook::bind(WebhookSettings::from(&args), deps, webhook_ready).await?;
        let stop = shutdown.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = hook.serve(stop).await {
                tracing::error!(error = %format!("{e:#}"), "admission webhook failed");
            }
        }))
    };

    if args.disable_controller {
        shutdown.cancelled().await;
    } else {
        lead(&args, client, ds, confirmed, shutdown.clone()).await;
    }

    // In-flight reviews finish within the webhook's own drain bound (--shutdown-timeout).
    if let Some(srv) = webhook_srv {
        let _ = srv.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = metrics_srv.await;
        let _ = health_srv.await;
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}

async fn listen(addr: SocketAddr, app: Router, shutdown: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
            tracing::error!(%addr, error = %e, "listener failed");
        }
    }))
}

async fn serve_metrics() -> impl axum::response::IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render())
}

struct Health {
    ds: Arc<dyn RecordSink>,
    check_ds: bool,
    /// None when the webhook is disabled.
    webhook: Option<Readiness>,
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    if h.webhook.as_ref().is_some_and(|w| !w.is_ready()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook listener not up or no certificate loaded".into(),
        );
    }
    if h.check_ds {
        if let Some(r) = h.ds.client().refusal() {
            return (StatusCode::SERVICE_UNAVAILABLE, refusal_text(&r));
        }
        if !h.ds.client().ready().await {
            return (StatusCode::SERVICE_UNAVAILABLE, "Data Storage not ready".into());
        }
    }
    (StatusCode::OK, "ok".into())
}

fn refusal_text(r: &crate::client::Refusal) -> String {
    format!(
        "Data Storage refuses audit-guard ({}) since {}: {}",
        r.kind.as_str(),
        r.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.message
    )
}

/// Whether Data Storage accepts what audit-guard sends it: 503 while its last answer was a
/// refusal (401, 403, or a record refused for good), with which one and since when. Apart from
/// /readyz (unless --readyz-checks-datastorage): taking the webhook out of its Service would
/// refuse every SignalProcessing write in the cluster (failurePolicy Fail), while deletions
/// already wait safely.
async fn readyz_datastorage(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    match h.ds.client().refusal() {
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, refusal_text(&r)),
        None => (StatusCode::OK, "ok: Data Storage accepted audit-guard's last request".into()),
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "audit-guard".into());
    // Two processes on one host must still be told apart.
    format!("{host}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Campaigns for the Lease until shutdown; runs a leadership term whenever it is won.
async fn lead(
    args: &ServeArgs,
    client: kube::Client,
    ds: Arc<dyn RecordSink>,
    confirmed: Arc<ConfirmedRecords>,
    shutdown: CancellationToken,
) {
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let elector = LeaderElector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        args.lease_duration,
    );
    let retry = (args.lease_duration / 3).max(Duration::from_millis(200));
    tracing::info!(%identity, lease = %args.lease_name, "campaigning for leadership");
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => {
                term(args, &client, &ds, &confirmed, &elector, retry, &shutdown).await;
                if shutdown.is_cancelled() {
                    if let Err(e) = elector.release().await {
                        tracing::warn!(error = %e, "could not release the Lease");
                    } else {
                        tracing::info!("Lease released");
                    }
                    return;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election round failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// One leadership term: the controller, writer and retention cleaner run until the Lease is
/// lost (or cannot be renewed before it would expire) or shutdown begins.
async fn term(
    args: &ServeArgs,
    client: &kube::Client,
    ds: &Arc<dyn RecordSink>,
    confirmed: &Arc<ConfirmedRecords>,
    elector: &LeaderElector,
    retry: Duration,
    shutdown: &CancellationToken,
) {
    tracing::info!(identity = elector.identity(), "became leader");
    metrics::IS_LEADER.set(1);
    let stop = CancellationToken::new();
    let writer = Arc::new(AuditWriter::start(
        ds.clone().writer_sink(client.clone()),
        WriterConfig {
            buffer_size: args.buffer_size,
            batch_size: args.batch_size,
            flush_interval: args.flush_interval,
            ..WriterConfig::default()
        },
    ));
    let ctx = Arc::new(
        Context::new(client.clone(), ds.clone(), writer.clone(), confirmed.clone(), elector.identity())
            .with_success_events(args.success_events),
    );
    let namespaces = args.namespaces.clone();
    let ctl = tokio::spawn({
        let stop = stop.clone();
        async move { controller::run(ctx, &namespaces, stop).await }
    });
    let cleaner = tokio::spawn(retention::run(
        client.clone(),
        args.namespaces.clone(),
        args.retention,
        args.retention_interval,
        stop.clone(),
    ));

    // Step down before the Lease could expire under us if renewals keep failing.
    let renew_deadline = args.lease_duration.mul_f64(2.0 / 3.0);
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(retry) => {}
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!("leadership lost");
                break;
            }
            Err(e) if last_renewed.elapsed() > renew_deadline => {
                tracing::warn!(error = %e, "could not renew the Lease in time; stepping down");
                break;
            }
            Err(e) => tracing::warn!(error = %e, "Lease renewal failed; retrying"),
        }
    }

    stop.cancel();
    let bound = args.shutdown_timeout;
    let deadline = Instant::now() + bound;
    if tokio::time::timeout(bound / 2, async {
        let _ = ctl.await;
        let _ = cleaner.await;
    })
    .await
    .is_err()
    {
        tracing::warn!("controller did not stop within the bound");
    }
    writer.shutdown(deadline.saturating_duration_since(Instant::now())).await;
    metrics::IS_LEADER.set(0);
    tracing::info!("leadership term ended");
}
