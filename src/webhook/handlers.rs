//! HTTP plumbing: routes, body limit, status codes, AdmissionReview responses.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use chrono::Utc;
use serde_json::{json, Value};

use super::decisions::{self, DenyReason, Policy, Review, Verdict};
use super::metrics;
use crate::audit::from_cr::RecordBuilder;
use crate::audit::RecordSink;

pub const MUTATE_PATH: &str = "/mutate-kubernaut-ai-v1alpha1-signalprocessing";
pub const VALIDATE_PATH: &str = "/validate-kubernaut-ai-v1alpha1-signalprocessing";

pub struct AppState {
    pub policy: Policy,
    pub sink: Arc<dyn RecordSink>,
    pub build_record: RecordBuilder,
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_handler))
        .route(VALIDATE_PATH, post(validate_handler))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found() -> Response {
    metrics::observe("other", "", "not_found", 0.0);
    plain(StatusCode::NOT_FOUND, "not found: the webhook serves only POST /mutate-kubernaut-ai-v1alpha1-signalprocessing and POST /validate-kubernaut-ai-v1alpha1-signalprocessing")
}

fn plain(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Reads and parses the body, or answers the HTTP error (and counts it).
fn read_review(path: &str, body: Result<Bytes, BytesRejection>, started: Instant) -> Result<Review, Box<Response>> {
    let failed = |code: StatusCode, outcome: &str, msg: String| {
        metrics::observe(path, "", outcome, started.elapsed().as_secs_f64());
        Box::new(plain(code, msg))
    };
    let bytes = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(failed(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "request body too large for an AdmissionReview".into(),
            ))
        }
        Err(rejection) => return Err(failed(rejection.status(), "bad_request", rejection.body_text())),
    };
    decisions::parse_review(&bytes).map_err(|e| failed(StatusCode::BAD_REQUEST, "bad_request", e.0))
}

fn review_json(uid: &str, allowed: bool, status: Option<(u16, &str, String)>, patch: Option<Vec<Value>>) -> Response {
    let mut response = json!({ "uid": uid, "allowed": allowed });
    if let Some((code, reason, message)) = status {
        response["status"] = json!({ "code": code, "reason": reason, "message": message });
    }
    if let Some(patch) = patch {
        let bytes = serde_json::to_vec(&patch).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    axum::Json(json!({ "apiVersion": decisions::API_VERSION, "kind": decisions::KIND, "response": response })).into_response()
}

async fn mutate_handler(body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let review = match read_review("mutate", body, started) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let patch = decisions::mutate(&review);
    let outcome = if patch.is_some() { "patched" } else { "allowed" };
    metrics::observe("mutate", review.operation.as_str(), outcome, started.elapsed().as_secs_f64());
    review_json(&review.uid, true, None, patch)
}

async fn validate_handler(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let review = match read_review("validate", body, started) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let verdict = decisions::validate(&review, &state.policy);
    let (outcome, response) = answer(&state, &review, verdict).await;
    metrics::observe("validate", review.operation.as_str(), outcome, started.elapsed().as_secs_f64());
    response
}

async fn answer(state: &AppState, review: &Review, verdict: Verdict) -> (&'static str, Response) {
    let trigger = decisions::trigger_for(&verdict);
    match verdict {
        Verdict::Allow => ("allowed", review_json(&review.uid, true, None, None)),
        Verdict::Deny { code, reason, message } => {
            metrics::DENIALS.with_label_values(&[reason.as_str()]).inc();
            tracing::info!(uid = %review.uid, user = %review.username, reason = reason.as_str(), "admission denied");
            ("denied", review_json(&review.uid, false, Some((code, "Forbidden", message)), None))
        }
        Verdict::StoreThenAllow | Verdict::AllowAndRecordForced => {
            let (Some(old), Some(trigger)) = (review.old_object.as_ref(), trigger) else {
                return ("allowed", review_json(&review.uid, true, None, None));
            };
            let record = (state.build_record)(old, trigger, Utc::now());
            let stored = state.sink.store(&record).await;
            let forced = trigger == crate::audit::Trigger::Forced;
            let (ns, name) = (
                old.metadata.namespace.as_deref().unwrap_or(""),
                old.metadata.name.as_deref().unwrap_or(""),
            );
            match (forced, stored) {
                (true, result) => {
                    metrics::FORCED_REMOVALS.inc();
                    // Break-glass exists for when the normal path is stuck, so a failed store does not block it.
                    match result {
                        Ok(()) => {
                            tracing::warn!(user = %review.username, namespace = ns, name, record = %record.id, "break-glass removal of the audit finalizer; forced record stored")
                        }
                        Err(e) => {
                            tracing::error!(user = %review.username, namespace = ns, name, record = %record.id, error = %e, "break-glass removal of the audit finalizer; the forced record could NOT be stored")
                        }
                    }
                    ("forced", review_json(&review.uid, true, None, None))
                }
                (false, Ok(())) => {
                    tracing::info!(namespace = ns, name, record = %record.id, "audit record stored before deletion");
                    ("stored", review_json(&review.uid, true, None, None))
                }
                (false, Err(e)) => {
                    metrics::DENIALS.with_label_values(&[DenyReason::StoreUnavailable.as_str()]).inc();
                    tracing::warn!(namespace = ns, name, record = %record.id, error = %e, "deletion refused: audit record not stored");
                    let msg = decisions::store_unavailable_message(&e.to_string());
                    (
                        "denied",
                        review_json(&review.uid, false, Some((503, "ServiceUnavailable", msg)), None),
                    )
                }
            }
        }
    }
}
