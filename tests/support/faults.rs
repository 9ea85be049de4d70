//! Fault injection for the fault tests: an HTTP proxy in front of the real Data Storage
//! that delays answers or answers 500, url-based webhook configurations, direct
//! PostgreSQL checks, metric scraping, and the generated results table.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rand::Rng;
use serde_json::{json, Value};

/// What the proxy does to requests on `/api/`; health endpoints always pass through.
#[derive(Default)]
pub struct Faults {
    /// Answer this long after Data Storage answered (the request is forwarded first, so a
    /// client that times out leaves a stored record behind).
    pub delay_ms: AtomicU64,
    /// Percentage of requests answered 500: half of them before forwarding (nothing stored),
    /// half after (stored, but the client is told it failed).
    pub fail_percent: AtomicU32,
    pub forwarded: AtomicU64,
    pub failed_before: AtomicU64,
    pub failed_after: AtomicU64,
    pub delayed: AtomicU64,
    /// When set, the next record POST is held at the proxy until [`Faults::release`].
    hold: AtomicBool,
    held: tokio::sync::Notify,
    released: tokio::sync::Notify,
}

impl Faults {
    /// Holds the next POST of audit records (single, batch or amendment) at the proxy.
    pub fn hold_next_record_post(&self) {
        self.hold.store(true, Ordering::SeqCst);
    }

    /// Waits until the held POST has reached the proxy (not forwarded yet).
    pub async fn held(&self) {
        self.held.notified().await;
    }

    /// Forwards the held POST.
    pub fn release(&self) {
        self.released.notify_one();
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_fail_percent(&self, p: u32) {
        self.fail_percent.store(p, Ordering::SeqCst);
    }

    pub fn summary(&self) -> String {
        format!(
            "forwarded {}, delayed {}, 500 before forwarding {}, 500 after storing {}",
            self.forwarded.load(Ordering::SeqCst),
            self.delayed.load(Ordering::SeqCst),
            self.failed_before.load(Ordering::SeqCst),
            self.failed_after.load(Ordering::SeqCst)
        )
    }
}

struct ProxyState {
    /// Requests go to these in turn (round robin, as a Service spreads them over its pods).
    upstreams: Vec<String>,
    next: AtomicU64,
    http: reqwest::Client,
    faults: Arc<Faults>,
}

/// A fault-injecting HTTP proxy in front of a real service, on the caller's runtime.
pub struct FaultProxy {
    pub url: String,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> Result<Self> {
        Self::start_round_robin(&[upstream.to_string()]).await
    }

    /// One address in front of several replicas: each request goes to the next one.
    pub async fn start_round_robin(upstreams: &[String]) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let faults = Arc::new(Faults::default());
        let state = Arc::new(ProxyState {
            upstreams: upstreams.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            next: AtomicU64::new(0),
            http: reqwest::Client::new(),
            faults: faults.clone(),
        });
        let app = axum::Router::new().fallback(proxy).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, faults, task })
    }
}

fn plain(status: StatusCode, msg: &str) -> Response {
    let mut r = Response::new(Body::from(msg.to_string()));
    *r.status_mut() = status;
    r
}

async fn proxy(State(st): State<Arc<ProxyState>>, req: Request) -> Response {
    let method: Method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let headers: HeaderMap = req.headers().clone();
    let body: Bytes = match axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("proxy: reading body: {e}")),
    };
    if method == Method::POST && path.starts_with("/api/v1/audit/signal-processing") && st.faults.hold.swap(false, Ordering::SeqCst) {
        st.faults.held.notify_one();
        st.faults.released.notified().await;
    }
    let faulty = path.starts_with("/api/");
    let fail = faulty && rand::rng().random_range(0..100) < st.faults.fail_percent.load(Ordering::SeqCst);
    let after = rand::rng().random_bool(0.5);
    if fail && !after {
        st.faults.failed_before.fetch_add(1, Ordering::SeqCst);
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "fault proxy: injected 500 (not forwarded)");
    }
    let upstream = &st.upstreams[st.next.fetch_add(1, Ordering::SeqCst) as usize % st.upstreams.len()];
    let mut fwd = st.http.request(method, format!("{upstream}{path}")).body(body);
    for name in ["authorization", "content-type", "accept"] {
        if let Some(v) = headers.get(name) {
            fwd = fwd.header(name, v);
        }
    }
    let resp = match fwd.send().await {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("fault proxy: upstream: {e}")),
    };
    st.faults.forwarded.fetch_add(1, Ordering::SeqCst);
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    for name in ["content-type", "location", "retry-after", "www-authenticate"] {
        if let Some(v) = resp.headers().get(name) {
            out_headers.insert(name, v.clone());
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    let delay = st.faults.delay_ms.load(Ordering::SeqCst);
    if faulty && delay > 0 {
        st.faults.delayed.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if fail {
        st.faults.failed_after.fetch_add(1, Ordering::SeqCst);
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "fault proxy: injected 500 (record forwarded)");
    }
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    *r.headers_mut() = out_headers;
    r
}

/// Registers (or replaces) url-based mutating and validating configurations named `name`,
/// calling `base_url` with `ca_pem` as caBundle, for namespaces labelled `label=value`.
pub async fn register_url_webhooks(client: &kube::Client, name: &str, base_url: &str, ca_pem: &str, label: (&str, &str)) -> Result<()> {
    let ca_bundle = audit_guard::certs::ca_bundle(ca_pem);
    let selector = json!({ "matchLabels": { label.0: label.1 } });
    let (mutating, validating) = audit_guard::webhook::registration::url_configurations(name, base_url, &ca_bundle, Some(selector));
    let pp = PatchParams::apply("audit-guard-faults").force();
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(mutating)?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(name, &pp, &Patch::Apply(&mutating))
        .await?;
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(validating)?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(name, &pp, &Patch::Apply(&validating))
        .await?;
    Ok(())
}

pub async fn unregister_webhooks(client: &kube::Client, name: &str) {
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// What PostgreSQL holds, read directly (not through the API under test).
pub struct Stored {
    pub ids: HashSet<String>,
    /// Ids stored more than once, with their counts.
    pub duplicates: BTreeMap<String, i64>,
    pub rows: i64,
}

pub async fn stored_records(database_url: &str) -> Result<Stored> {
    let pool = sqlx::PgPool::connect(database_url).await.context("connect to the test database")?;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM signal_processing_audit").fetch_all(&pool).await?;
    let dups: Vec<(String, i64)> = sqlx::query_as("SELECT id, count(*) FROM signal_processing_audit GROUP BY id HAVING count(*) > 1")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    Ok(Stored {
        rows: rows.len() as i64,
        ids: rows.into_iter().map(|(id,)| id).collect(),
        duplicates: dups.into_iter().collect(),
    })
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text page; 0 when absent.
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .unwrap_or(0.0)
}

pub const STORAGE_ERRORS: &str = "kubernaut_signal_processing_audit_storage_attempts_total{status=\"error\"}";
pub const STORAGE_SUCCESSES: &str = "kubernaut_signal_processing_audit_storage_attempts_total{status=\"success\"}";

/// One scenario's outcome, a row of `bench/faults.md`.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub crs: usize,
    pub records: usize,
    pub duplicates: usize,
    pub lost: usize,
    pub extras_recorded: usize,
    pub storage_errors: u64,
    pub failed_events: usize,
    pub drain: Duration,
    pub note: String,
}

pub const TABLE_HEADER: &str = "| scenario | CRs | records | duplicates | lost | untouched CRs with a record | storage errors (metric) | AuditPersistFailed events | time to drain | what happened |\n|---|---|---|---|---|---|---|---|---|---|";

impl Row {
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |",
            self.scenario,
            self.crs,
            self.records,
            self.duplicates,
            self.lost,
            self.extras_recorded,
            self.storage_errors,
            self.failed_events,
            self.drain.as_secs_f64(),
            self.note
        )
    }
}

/// Puts `row` into the generated table at `path`, replacing an earlier row of the same
/// scenario and keeping rows sorted by scenario; returns the whole table.
pub fn record_row(path: &Path, preamble: &str, row: &Row) -> Result<String> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let key = |line: &str| line.trim_start_matches('|').split('|').next().unwrap_or("").trim().to_string();
    let mut rows: BTreeMap<String, String> = existing
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario ") && !l.starts_with("| **"))
        .map(|l| (key(l), l.to_string()))
        .collect();
    rows.insert(row.scenario.clone(), row.markdown());
    let mut table = format!("{TABLE_HEADER}\n");
    for line in rows.values() {
        table.push_str(line);
        table.push('\n');
    }
    let total = |i: usize| -> u64 {
        rows.values()
            .map(|l| l.split('|').nth(i + 1).and_then(|c| c.trim().parse::<u64>().ok()).unwrap_or(0))
            .sum()
    };
    table.push_str(&format!(
        "| **all scenarios** | {} | {} | {} | {} | {} | {} | {} | | |\n",
        total(1),
        total(2),
        total(3),
        total(4),
        total(5),
        total(6),
        total(7)
    ));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{preamble}\n{table}"))?;
    Ok(table)
}

/// A JSON merge patch that completes a SignalProcessing now.
pub fn completed_status() -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({ "status": { "phase": "Completed", "startTime": now, "completionTime": now } })
}
