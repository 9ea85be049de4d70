//! What the Data Storage handlers share: the application state, the paths, bounded JSON body
//! reads and decoding, problem answers for database failures. A leaf: the handlers import it,
//! and the router ([`super::api`]) imports the handlers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::auth::Authenticator;
use super::authz::Authorizer;
use super::metrics;
use super::problem::{json_path, Problem};
use super::store::{Prepared, Store};
use crate::audit::{SignalProcessingAudit, TimeWindow};
use crate::body::{declared_length, read_bounded, BodyError, ReadBounds};
use crate::evidence::chain::ChainKeys;
use crate::evidence::note::SignerKey;
use crate::evidence::signing::Signer;

/// What one request may send and ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiLimits {
    pub max_batch: usize,
    pub max_body_bytes: usize,
    /// A body not received completely within this is refused with 408.
    pub body_read_timeout: Duration,
    /// Times in records and events must lie in this window around the time of the request.
    pub window: TimeWindow,
    /// Widest `since`..`until` range a statistic may cover.
    pub stats_max_range: Duration,
    /// Widest period of one report.
    pub report_max_range: Duration,
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub authz: Authorizer,
    /// The chain's keys (appending is the store's; verifying is [`super::verify`]'s).
    pub keys: Arc<ChainKeys>,
    /// Signs export manifests; None: exports are refused.
    pub signer: Option<Arc<Signer>>,
    /// Signs the log's checkpoints; None: none are signed (the checkpoint endpoint answers 503).
    pub log_key: Option<Arc<SignerKey>>,
    /// How many witnesses checkpoints are pushed to: an export waits briefly for a cosigned one.
    pub witnesses: usize,
    pub limits: ApiLimits,
}

pub fn db_problem(op: &str, e: impl std::fmt::Display) -> Problem {
    metrics::ERRORS.with_label_values(&["database"]).inc();
    tracing::error!(op, error = %e, "database operation failed");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the database could not complete the request; nothing was written, unless the connection broke during \
         the commit: sending the same content again is safe (an identical record is answered as stored)",
    )
}

/// Times one store call.
pub async fn timed<T>(op: &'static str, fut: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = fut.await;
    metrics::STORE_SECONDS
        .with_label_values(&[op])
        .observe(start.elapsed().as_secs_f64());
    out
}

/// Accepts `application/json` and `application/<x>+json`, with parameters.
pub fn is_json_content_type(value: Option<&str>) -> bool {
    let Some(v) = value else { return false };
    let mime = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The whole JSON body, bounded in size and in time.
pub async fn read_json_body(headers: &HeaderMap, body: Body, limits: &ApiLimits) -> Result<axum::body::Bytes, Problem> {
    let limit = limits.max_body_bytes;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !is_json_content_type(ct) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got {}", ct.unwrap_or("none")),
        ));
    }
    let bounds = ReadBounds {
        max_bytes: limit,
        deadline: tokio::time::Instant::now() + limits.body_read_timeout,
        budget: None,
        drain: false,
    };
    match read_bounded(body, declared_length(headers), &bounds).await {
        Ok((bytes, _)) => Ok(bytes),
        Err(BodyError::TooLarge) => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        )),
        Err(BodyError::TooSlow | BodyError::Busy) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {:?}", limits.body_read_timeout),
        )),
        Err(BodyError::Broken(e)) => Err(Problem::bad_request(format!("could not read request body: {e}"))),
    }
}

/// Decodes and validates one record; errors name the field.
pub fn decode_single(bytes: &[u8]) -> Result<Prepared, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let rec: SignalProcessingAudit = serde_path_to_error::deserialize(de).map_err(|e| decode_problem(&e))?;
    rec.validate().map_err(|e| Problem::field(e.field.clone(), e.to_string()))?;
    Prepared::new(rec).map_err(|e| Problem::bad_request(e.to_string()))
}

/// Decodes and validates a batch; errors name the index and field (`[3].status`).
pub fn decode_batch(bytes: &[u8], max_batch: usize) -> Result<Vec<Prepared>, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let recs: Vec<SignalProcessingAudit> = serde_path_to_error::deserialize(de).map_err(|e| decode_problem(&e))?;
    if recs.is_empty() {
        return Err(Problem::field("$", "batch must contain at least one record"));
    }
    if recs.len() > max_batch {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("batch of {} records exceeds the maximum of {max_batch}", recs.len()),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(recs.len());
    for (i, rec) in recs.iter().enumerate() {
        rec.validate()
            .map_err(|e| Problem::field(format!("[{i}].{}", e.field), format!("[{i}].{e}")))?;
        if let Some(first) = seen.insert(rec.id.as_str(), i) {
            return Err(Problem::field(
                format!("[{i}].id"),
                format!("[{i}].id duplicates [{first}].id {:?}", rec.id),
            ));
        }
    }
    recs.into_iter()
        .map(|r| Prepared::new(r).map_err(|e| Problem::bad_request(e.to_string())))
        .collect()
}

/// Every time in every record must lie in the window; the error names index and field.
/// Checked before anything is written, so no partition is created for a refused month.
pub fn check_times(records: &[Prepared], window: &TimeWindow, now: DateTime<Utc>, batch: bool) -> Result<(), Problem> {
    for (i, p) in records.iter().enumerate() {
        p.rec.check_times(window, now).map_err(|e| {
            if batch {
                Problem::field(format!("[{i}].{}", e.field), format!("[{i}].{e}"))
            } else {
                Problem::field(e.field.clone(), e.to_string())
            }
        })?;
    }
    Ok(())
}

pub fn decode_problem(e: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let inner = e.inner();
    let mut field = json_path(e.path());
    // serde reports a missing key at its parent; name the key itself.
    if let Some(key) = inner.to_string().strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        field = if field == "$" { key.to_string() } else { format!("{field}.{key}") };
    }
    let detail = if inner.is_syntax() || inner.is_eof() {
        format!("malformed JSON: {inner}")
    } else {
        format!("{field}: {inner}")
    };
    Problem::field(field, detail)
}

/// A JSON answer with a status.
pub fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(id: &str) -> serde_json::Value {
        json!({"id": id, "remediation_id": "r", "signal_fingerprint": "f", "processing_phases": [],
               "completed_at": "2025-01-01T00:00:00Z", "status": "completed"})
    }

    fn field_of(r: Result<Vec<Prepared>, Problem>) -> (u16, Option<String>) {
        let p = r.err().unwrap();
        (p.status, p.field)
    }

    #[test]
    fn batch_errors_name_index_and_field() {
        let mut bad = rec("d");
        bad["status"] = json!("done");
        let body = json!([rec("a"), rec("b"), rec("c"), bad]).to_string();
        assert_eq!(field_of(decode_batch(body.as_bytes(), 10)), (400, Some("[3].status".into())));

        let mut missing = rec("b");
        missing.as_object_mut().unwrap().remove("status");
        let body = json!([rec("a"), missing]).to_string();
        assert_eq!(field_of(decode_batch(body.as_bytes(), 10)), (400, Some("[1].status".into())));

        let mut invalid = rec("b");
        invalid["confidence"] = json!(2.0);
        let body = json!([rec("a"), invalid]).to_string();
        assert_eq!(field_of(decode_batch(body.as_bytes(), 10)), (400, Some("[1].confidence".into())));

        let body = json!([rec("a"), rec("b"), rec("a")]).to_string();
        assert_eq!(field_of(decode_batch(body.as_bytes(), 10)), (400, Some("[2].id".into())));
        assert_eq!(decode_batch(b"[]", 10).err().unwrap().status, 400);
        assert_eq!(decode_batch(rec("a").to_string().as_bytes(), 10).err().unwrap().status, 400);
        let body = json!([rec("a"), rec("b")]).to_string();
        assert_eq!(decode_batch(body.as_bytes(), 1).err().unwrap().status, 413);
        assert_eq!(decode_batch(body.as_bytes(), 2).unwrap().len(), 2);
    }

    #[test]
    fn single_errors_name_the_field() {
        let mut v = rec("a");
        v["priority_score"] = json!("high");
        let p = decode_single(v.to_string().as_bytes()).err().unwrap();
        assert_eq!(p.field.as_deref(), Some("priority_score"));
        let p = decode_single(rec("a").to_string().replace("\"remediation_id\":\"r\",", "").as_bytes())
            .err()
            .unwrap();
        assert_eq!(p.field.as_deref(), Some("remediation_id"));
        assert!(decode_single(b"{\"id\":").err().unwrap().detail.starts_with("malformed JSON"));
        assert_eq!(decode_single(b"[]").err().unwrap().status, 400);
    }

    #[test]
    fn times_outside_the_window_name_index_and_field() {
        let now: DateTime<Utc> = "2025-01-01T00:01:00Z".parse().unwrap();
        let mut future = rec("b");
        future["completed_at"] = json!("9999-01-01T00:00:00Z");
        let body = json!([rec("a"), future]).to_string();
        let batch = decode_batch(body.as_bytes(), 10).unwrap();
        let p = check_times(&batch, &TimeWindow::default(), now, true).unwrap_err();
        assert_eq!((p.status, p.field.as_deref()), (400, Some("[1].completed_at")));
        let p = check_times(&batch[1..], &TimeWindow::default(), now, false).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("completed_at"));
        assert!(check_times(&batch[..1], &TimeWindow::default(), now, true).is_ok());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type(Some("application/json")));
        assert!(is_json_content_type(Some("application/json; charset=utf-8")));
        assert!(is_json_content_type(Some("application/merge-patch+json")));
        assert!(!is_json_content_type(Some("text/plain")));
        assert!(!is_json_content_type(None));
    }
}
