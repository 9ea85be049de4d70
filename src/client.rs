//! The Data Storage client: reqwest + rustls, bearer token from a file that may rotate,
//! and a plain classification of every answer into stored / permanent / transient.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use reqwest::{header, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::audit::{AuditStatus, RecordSink, SignalProcessingAudit, StoreError};
use crate::config::{ApiMode, DataStorageClientArgs};
use crate::metrics;

const SP_PATH: &str = "/api/v1/audit/signal-processing";
const SP_BATCH_PATH: &str = "/api/v1/audit/signal-processing/batch";
const EVENTS_PATH: &str = "/api/v1/audit/events";
const EVENTS_BATCH_PATH: &str = "/api/v1/audit/events/batch";
pub const EVENT_TYPE: &str = "signalprocessing.signal.processed";
pub const EVENT_CATEGORY: &str = "signalprocessing";

/// Why a write did not go through, with what the server said about retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub permanent: bool,
    pub message: String,
    /// From a Retry-After header (seconds form).
    pub retry_after: Option<Duration>,
}

impl ClientError {
    fn transient(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<ClientError> for StoreError {
    fn from(e: ClientError) -> Self {
        if e.permanent {
            StoreError::Permanent(e.message)
        } else {
            StoreError::Transient(e.message)
        }
    }
}

/// What an HTTP answer to a write means. `accepted_is_stored` is false for Kubernaut's
/// events API, whose 202 means "queued in a dead-letter queue, not in the database".
pub fn classify(status: u16, retry_after: Option<&str>, body: &str, accepted_is_stored: bool) -> Result<(), ClientError> {
    let snippet: String = body.chars().take(300).collect();
    match status {
        200 | 201 | 409 => Ok(()),
        202 if accepted_is_stored => Ok(()),
        202 => Err(ClientError::transient(
            "Data Storage queued the record (202) but has not stored it yet",
        )),
        400 | 413 | 422 => Err(ClientError {
            permanent: true,
            message: format!("Data Storage rejected the record ({status}): {snippet}"),
            retry_after: None,
        }),
        _ => Err(ClientError {
            permanent: false,
            message: format!("Data Storage answered {status}: {snippet}"),
            retry_after: retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs),
        }),
    }
}

/// A bearer token file, re-read whenever its modification time changes (projected
/// ServiceAccount tokens are rotated in place by the kubelet).
struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, String)>>,
}

impl TokenFile {
    async fn token(&self) -> Result<String, ClientError> {
        let read_err = |e: std::io::Error| ClientError::transient(format!("reading token file {}: {e}", self.path.display()));
        let mtime = tokio::fs::metadata(&self.path).await.and_then(|m| m.modified()).map_err(read_err)?;
        let mut cached = self.cached.lock().await;
        if let Some((at, token)) = cached.as_ref() {
            if *at == mtime {
                return Ok(token.clone());
            }
        }
        let token = tokio::fs::read_to_string(&self.path).await.map_err(read_err)?.trim().to_string();
        *cached = Some((mtime, token.clone()));
        Ok(token)
    }
}

pub struct DataStorageClient {
    http: reqwest::Client,
    base: String,
    mode: ApiMode,
    token: Option<TokenFile>,
}

#[derive(Deserialize)]
struct EventsPage {
    #[serde(default)]
    data: Vec<Value>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(default)]
    has_more: bool,
}

impl DataStorageClient {
    pub fn new(args: &DataStorageClientArgs) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(args.timeout)
            .connect_timeout(args.timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca) = &args.ca_file {
            let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("reading CA file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build()?,
            base: args.url.trim_end_matches('/').to_string(),
            mode: args.api_mode,
            token: args.token_file.clone().map(|path| TokenFile {
                path,
                cached: Mutex::new(None),
            }),
        })
    }

    pub fn mode(&self) -> ApiMode {
        self.mode
    }

    async fn request(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.token().await?);
        }
        Ok(req)
    }

    /// POSTs `body` and classifies the answer, counting the attempt in the design document's metrics.
    async fn post(&self, path: &str, body: &Value, accepted_is_stored: bool) -> Result<Value, ClientError> {
        let started = Instant::now();
        let result = self.post_inner(path, body, accepted_is_stored).await;
        metrics::observe_attempt(result.is_ok(), started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            if e.permanent {
                tracing::error!(path, error = %e, "Data Storage permanently rejected an audit write");
            }
        }
        result
    }

    async fn post_inner(&self, path: &str, body: &Value, accepted_is_stored: bool) -> Result<Value, ClientError> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .await?
            .json(body)
            .send()
            .await
            .map_err(|e| ClientError::transient(format!("Data Storage unreachable: {e}")))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        classify(status, retry_after.as_deref(), &text, accepted_is_stored)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Stores one record; Ok means Data Storage confirmed it is stored.
    pub async fn store_one(&self, record: &SignalProcessingAudit) -> Result<(), ClientError> {
        match self.mode {
            ApiMode::SignalProcessing => self.post(SP_PATH, &to_json(record)?, true).await.map(drop),
            ApiMode::Events => {
                if self.event_exists(record).await? {
                    return Ok(());
                }
                self.post(EVENTS_PATH, &event_for(record), false).await.map(drop)
            }
        }
    }

    /// Stores a batch (the buffered writer's path); Ok means every record is stored.
    pub async fn store_batch(&self, records: &[SignalProcessingAudit]) -> Result<(), ClientError> {
        if records.is_empty() {
            return Ok(());
        }
        match self.mode {
            ApiMode::SignalProcessing => {
                let body = serde_json::to_value(records).map_err(|e| ClientError::transient(e.to_string()))?;
                let answer = self.post(SP_BATCH_PATH, &body, true).await?;
                check_batch_results(&answer, records)
            }
            ApiMode::Events => {
                let mut missing = Vec::new();
                for r in records {
                    if !self.event_exists(r).await? {
                        missing.push(event_for(r));
                    }
                }
                if missing.is_empty() {
                    return Ok(());
                }
                self.post(EVENTS_BATCH_PATH, &Value::Array(missing), false).await.map(drop)
            }
        }
    }

    /// The events API is not idempotent: before writing, look for this CR's event.
    async fn event_exists(&self, record: &SignalProcessingAudit) -> Result<bool, ClientError> {
        const PAGE: usize = 1000;
        let mut offset = 0usize;
        // Bounded: one remediation has a handful of SignalProcessings, never thousands of pages.
        for _ in 0..50 {
            let resp = self
                .request(reqwest::Method::GET, EVENTS_PATH)
                .await?
                .query(&[
                    ("event_type", EVENT_TYPE),
                    ("correlation_id", record.remediation_id.as_str()),
                    ("limit", &PAGE.to_string()),
                    ("offset", &offset.to_string()),
                ])
                .send()
                .await
                .map_err(|e| ClientError::transient(format!("Data Storage unreachable: {e}")))?;
            if resp.status() != StatusCode::OK {
                return Err(ClientError::transient(format!("querying existing events: {}", resp.status())));
            }
            let page: EventsPage = resp
                .json()
                .await
                .map_err(|e| ClientError::transient(format!("querying existing events: {e}")))?;
            if page
                .data
                .iter()
                .any(|ev| ev.get("resource_id").and_then(Value::as_str) == Some(record.id.as_str()))
            {
                return Ok(true);
            }
            if !page.pagination.is_some_and(|p| p.has_more) || page.data.is_empty() {
                return Ok(false);
            }
            offset += page.data.len();
        }
        Err(ClientError::transient("too many events to search for an existing one"))
    }

    /// Whether Data Storage answers its /readyz.
    pub async fn ready(&self) -> bool {
        match self.http.get(format!("{}/readyz", self.base)).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

fn to_json(record: &SignalProcessingAudit) -> Result<Value, ClientError> {
    serde_json::to_value(record).map_err(|e| ClientError::transient(e.to_string()))
}

/// A batch answer lists a result per record; any record without one is not confirmed.
fn check_batch_results(answer: &Value, records: &[SignalProcessingAudit]) -> Result<(), ClientError> {
    let Some(results) = answer.as_array().or_else(|| answer.get("results").and_then(Value::as_array)) else {
        // A 2xx without per-record results: the batch was stored as a whole.
        return Ok(());
    };
    let confirmed: std::collections::HashSet<&str> = results
        .iter()
        .filter(|r| matches!(r.get("result").and_then(Value::as_str), Some("created" | "exists")))
        .filter_map(|r| r.get("id").and_then(Value::as_str))
        .collect();
    let unconfirmed = records.iter().filter(|r| !confirmed.contains(r.id.as_str())).count();
    if unconfirmed == 0 {
        Ok(())
    } else {
        Err(ClientError::transient(format!("{unconfirmed} records of the batch not confirmed")))
    }
}

/// The record as one of Kubernaut's unified audit events.
pub fn event_for(record: &SignalProcessingAudit) -> Value {
    let (outcome, phase) = match record.status {
        AuditStatus::Completed => ("success", Some("Completed")),
        AuditStatus::Failed => ("failure", Some("Failed")),
        // The record does not say which phase an unfinished CR was in.
        AuditStatus::Incomplete | AuditStatus::Forced => ("pending", None),
    };
    json!({
        "version": "1.0",
        "event_type": EVENT_TYPE,
        "event_timestamp": record.completed_at,
        "event_category": EVENT_CATEGORY,
        "event_action": "processed",
        "event_outcome": outcome,
        "actor_type": "service",
        "actor_id": "audit-guard",
        "resource_type": "SignalProcessing",
        "resource_id": record.id,
        "correlation_id": record.remediation_id,
        "namespace": record.namespace,
        "error_message": record.error_message,
        "event_data": {
            "event_type": EVENT_TYPE,
            "phase": phase,
            "signal": record.signal_fingerprint,
            "audit_record": record,
        },
    })
}

impl RecordSink for DataStorageClient {
    fn store<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.store_one(record).await.map_err(StoreError::from) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_spec() {
        for s in [200, 201, 409] {
            assert_eq!(classify(s, None, "", false), Ok(()));
        }
        assert_eq!(classify(202, None, "", true), Ok(()));
        assert!(!classify(202, None, "", false).unwrap_err().permanent);
        for s in [400, 413, 422] {
            assert!(classify(s, None, "bad", true).unwrap_err().permanent, "{s}");
        }
        for s in [401, 403, 429, 500, 502, 503] {
            assert!(!classify(s, None, "", true).unwrap_err().permanent, "{s}");
        }
        assert_eq!(
            classify(429, Some("7"), "", true).unwrap_err().retry_after,
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            classify(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), "", true)
                .unwrap_err()
                .retry_after,
            None
        );
    }

    fn record(id: &str) -> SignalProcessingAudit {
        serde_json::from_value(json!({
            "id": id, "remediation_id": "rr", "signal_fingerprint": "fp", "processing_phases": [],
            "completed_at": "2025-11-27T10:00:02Z", "status": "completed"
        }))
        .unwrap()
    }

    #[test]
    fn batch_results_must_confirm_every_record() {
        let recs = [record("a"), record("b")];
        let ok = json!([{"id": "a", "result": "created"}, {"id": "b", "result": "exists"}]);
        assert!(check_batch_results(&ok, &recs).is_ok());
        let partial = json!([{"id": "a", "result": "created"}]);
        assert!(check_batch_results(&partial, &recs).is_err());
        assert!(check_batch_results(&json!({"results": ok}), &recs).is_ok());
    }

    #[test]
    fn event_carries_the_binding_fields() {
        let ev = event_for(&record("uid-1"));
        assert_eq!(ev["event_type"], EVENT_TYPE);
        assert_eq!(ev["event_category"], EVENT_CATEGORY);
        assert_eq!(ev["correlation_id"], "rr");
        assert_eq!(ev["resource_id"], "uid-1");
        assert_eq!(ev["event_outcome"], "success");
        assert_eq!(ev["event_data"]["audit_record"]["id"], "uid-1");
    }

    #[tokio::test]
    async fn token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let tf = TokenFile {
            path: path.clone(),
            cached: Mutex::new(None),
        };
        assert_eq!(tf.token().await.unwrap(), "one");
        std::fs::write(&path, "two").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(tf.token().await.unwrap(), "two");
    }
}
