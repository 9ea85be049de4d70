//! HTTP plumbing: routes, bounded body reads, status codes, AdmissionReview responses, and
//! the I/O each verdict asks for (reading the live object, writing to Data Storage).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use kube::api::Api;
use kube::core::admission::AdmissionResponse;
use kube::core::{Status, TypeMeta};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics;
use super::policy::{self, DenyReason, Live, Policy, Purpose, RecordCheck, Verdict, WriteResult};
use super::review::{self, Review};
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::from_cr::RecordBuilder;
use crate::audit::SignalProcessingAudit;
use crate::audit::Trigger;
use crate::body::{declared_length, read_bounded, BodyError, ReadBounds};
use crate::client::{ClientError, FailureKind, Stored};
use crate::confirmed::{release_key, ConfirmedRecords};
use crate::conflict::{persist, Persisted};
use crate::crd::cached::SlimSignalProcessing;
use crate::crd::SignalProcessing;
use crate::sink::RecordSink;

pub const MUTATE_PATH: &str = "/mutate-kubernaut-ai-v1alpha1-signalprocessing";
pub const VALIDATE_PATH: &str = "/validate-kubernaut-ai-v1alpha1-signalprocessing";

/// Bounds on reading request bodies, so that slow or large requests cannot exhaust the pod.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest body accepted; larger ones get 413.
    pub max_bytes: usize,
    /// Whole body read, from the first byte of the request to the last; slower ones get 408.
    pub read_timeout: Duration,
    /// Bytes of request bodies held at once across all requests (parsed reviews included);
    /// requests beyond it wait, within `read_timeout`, then get 503.
    pub in_flight_bytes: usize,
}

pub struct AppState {
    pub policy: Policy,
    pub ds: Arc<dyn RecordSink>,
    pub kube: kube::Client,
    pub confirmed: Arc<ConfirmedRecords>,
    pub build_record: RecordBuilder,
    pub limits: BodyLimits,
    /// One permit per KiB of `limits.in_flight_bytes`.
    pub budget: Arc<Semaphore>,
    /// Whether every peer proved it is the API server (a client CA is configured and the
    /// handshake demands its certificate): only then is a review's userInfo evidence.
    pub peer_authenticated: bool,
}

impl AppState {
    pub fn budget_for(limits: &BodyLimits) -> Arc<Semaphore> {
        let kib = limits.in_flight_bytes.max(limits.max_bytes).div_ceil(1024);
        Arc::new(Semaphore::new(kib.min(Semaphore::MAX_PERMITS)))
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_handler))
        .route(VALIDATE_PATH, post(validate_handler))
        .fallback(not_found)
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

/// Reads the whole body within the limits, holding budget permits for what it read.
async fn read_body(state: &AppState, req: Request) -> Result<(Bytes, Vec<OwnedSemaphorePermit>), BodyError> {
    let declared = declared_length(req.headers());
    let bounds = ReadBounds {
        max_bytes: state.limits.max_bytes,
        deadline: tokio::time::Instant::now() + state.limits.read_timeout,
        budget: Some(state.budget.clone()),
        drain: true,
    };
    read_bounded(req.into_body(), declared, &bounds).await
}

/// Reads and parses the body, or answers the HTTP error (and counts it).
async fn read_review(
    state: &AppState,
    path: &str,
    req: Request,
    started: Instant,
) -> Result<(Review, Vec<OwnedSemaphorePermit>), Response> {
    let (bytes, permits) = match read_body(state, req).await {
        Ok(read) => read,
        Err(error) => return Err(body_error(state, path, error, started)),
    };
    match review::parse_review(&bytes) {
        Ok(review) => Ok((review, permits)),
        Err(e) => {
            metrics::observe(path, "", "bad_request", started.elapsed().as_secs_f64());
            Err(plain(StatusCode::BAD_REQUEST, e.0))
        }
    }
}

/// The HTTP answer to a body that could not be read (and its metric).
fn body_error(state: &AppState, path: &str, error: BodyError, started: Instant) -> Response {
    let failed = |code: StatusCode, outcome: &str, msg: String| {
        metrics::observe(path, "", outcome, started.elapsed().as_secs_f64());
        plain(code, msg)
    };
    match error {
        BodyError::TooLarge => failed(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "request body too large for an AdmissionReview (at most {} bytes)",
                state.limits.max_bytes
            ),
        ),
        BodyError::TooSlow => failed(
            StatusCode::REQUEST_TIMEOUT,
            "too_slow",
            format!("request body not received within {:?}", state.limits.read_timeout),
        ),
        BodyError::Busy => failed(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many review bytes in flight; retry".into(),
        ),
        BodyError::Broken(e) => failed(StatusCode::BAD_REQUEST, "bad_request", format!("reading the request body: {e}")),
    }
}

/// A validating answer in kube's admission types: allowed, or denied with the HTTP code and
/// reason the API server hands to the client.
fn review_response(uid: &str, denial: Option<(u16, &str, String)>) -> Response {
    axum::Json(admission_response(uid, denial).into_review()).into_response()
}

fn admission_response(uid: &str, denial: Option<(u16, &str, String)>) -> AdmissionResponse {
    // `invalid` is kube's only constructor that needs no typed request (this path parses its own
    // review, naming the field it cannot read); everything it sets is replaced here.
    let mut response = AdmissionResponse::invalid("");
    response.types = TypeMeta {
        api_version: review::API_VERSION.into(),
        kind: review::KIND.into(),
    };
    response.uid = uid.to_owned();
    match denial {
        Some((code, reason, message)) => response.result = Status::failure(&message, reason).with_code(code),
        None => {
            response.allowed = true;
            response.result = Status::default();
        }
    }
    response
}

/// The mutating path: every CREATE and UPDATE in the watched scope comes here, so it decodes
/// only what the decision needs ([`policy::parse_mutate`]: no object model) and writes the
/// answer directly around the patch encoded once.
async fn mutate_handler(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let (bytes, _permits) = match read_body(&state, req).await {
        Ok(read) => read,
        Err(error) => return body_error(&state, "mutate", error, started),
    };
    let review = match policy::parse_mutate(&bytes) {
        Ok(r) => r,
        Err(e) => {
            metrics::observe("mutate", "", "bad_request", started.elapsed().as_secs_f64());
            return plain(StatusCode::BAD_REQUEST, e.0);
        }
    };
    let outcome = if review.patch.is_some() { "patched" } else { "allowed" };
    metrics::observe("mutate", review.operation.as_str(), outcome, started.elapsed().as_secs_f64());
    mutate_answer(&review)
}

/// `{"apiVersion":…,"kind":…,"response":{"uid":…,"allowed":true[,"patchType":"JSONPatch","patch":…]}}`,
/// written directly: this is the hot path, and a test holds it to what kube's admission types
/// write for the same answer.
fn mutate_answer(review: &policy::MutateReview) -> Response {
    let uid = serde_json::to_string(&review.uid).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(160 + uid.len() + review.patch.map_or(0, str::len));
    out.push_str("{\"apiVersion\":\"");
    out.push_str(review::API_VERSION);
    out.push_str("\",\"kind\":\"");
    out.push_str(review::KIND);
    out.push_str("\",\"response\":{\"uid\":");
    out.push_str(&uid);
    out.push_str(",\"allowed\":true");
    if let Some(patch) = review.patch {
        out.push_str(",\"patchType\":\"JSONPatch\",\"patch\":\"");
        out.push_str(patch);
        out.push('"');
    }
    out.push_str("}}");
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

async fn validate_handler(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let (review, _permits) = match read_review(&state, "validate", req, started).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (outcome, response) = review_validation(&state, &review).await;
    metrics::observe("validate", review.operation.as_str(), outcome, started.elapsed().as_secs_f64());
    response
}

/// Decides a validating review and carries the decision out, in a span naming the review and
/// the object, so that the Data Storage check or store it makes can be followed in the logs.
/// (The mutating path has no span: it is the hot path, it makes no calls, and it logs nothing.)
#[tracing::instrument(
    name = "review",
    skip_all,
    fields(
        review = %review.uid,
        operation = review.operation.as_str(),
        namespace = %review.namespace,
        name = %review.name,
        user = %review.username,
    )
)]
async fn review_validation(state: &AppState, review: &Review) -> (&'static str, Response) {
    let verdict = policy::validate(review, &state.policy);
    let (outcome, verdict) = carry_out(state, review, verdict).await;
    (outcome, answer(review, verdict))
}

fn answer(review: &Review, verdict: Verdict) -> Response {
    match verdict {
        Verdict::Deny { code, reason, message } => {
            metrics::DENIALS.with_label_values(&[reason.as_str()]).inc();
            tracing::info!(uid = %review.uid, user = %review.username, reason = reason.as_str(), "admission denied");
            review_response(&review.uid, Some((code, reason.status_reason(), message)))
        }
        // Every other verdict has been carried out into Allow or Deny by now.
        _ => review_response(&review.uid, None),
    }
}

/// Performs what the verdict asks for; returns the metric outcome and the final verdict.
async fn carry_out(state: &AppState, review: &Review, verdict: Verdict) -> (&'static str, Verdict) {
    let outcome = |v: &Verdict, done: &'static str| match v {
        Verdict::Deny { .. } => "denied",
        _ => done,
    };
    match verdict {
        Verdict::Allow => ("allowed", Verdict::Allow),
        deny @ Verdict::Deny { .. } => ("denied", deny),
        Verdict::AllowIfRecordHeld => {
            let v = check_record_held(state, review).await;
            (outcome(&v, "allowed"), v)
        }
        Verdict::StoreThenAllow => {
            let v = store_unguarded_delete(state, review).await;
            (outcome(&v, "stored"), v)
        }
        Verdict::RecordBreakGlassThenAllow => match policy::break_glass_path(state.peer_authenticated) {
            policy::BreakGlassPath::Event => {
                let v = record_break_glass(state, review).await;
                (outcome(&v, "forced"), v)
            }
            policy::BreakGlassPath::Claim => {
                let v = record_claim(state, review).await;
                (outcome(&v, "claimed"), v)
            }
        },
    }
}

fn old_uid(review: &Review) -> String {
    review.old_object.as_ref().and_then(|o| o.metadata.uid.clone()).unwrap_or_default()
}

/// The controller's identity removes the finalizer: allowed once Data Storage holds the record
/// of the object as it is. A hit in this process's confirmed set (the uid at the very
/// `resourceVersion` being released) is that already; otherwise the live object is read, its
/// record built and stored through the controller's own path: created, or already there, or,
/// when a different record holds the uid (planted with the same identity's token, or built
/// from an older version), stored as an amendment and alarmed. The planted record stays in
/// Data Storage only as what it is, beside the amendment.
async fn check_record_held(state: &AppState, review: &Review) -> Verdict {
    let uid = old_uid(review);
    let version = review.old_object.as_ref().and_then(|o| o.metadata.resource_version.as_deref());
    if let Some(version) = version.filter(|_| !uid.is_empty()) {
        if state.confirmed.contains(&release_key(&uid, version)) {
            metrics::RECORD_CHECKS.with_label_values(&["cache", "held"]).inc();
            return Verdict::Allow;
        }
    }
    let live = match live_object(state, review, Purpose::ControllerRelease).await {
        Ok(live) => live,
        Err(verdict) => return verdict,
    };
    let (record, result) = persist_live(state, &live).await;
    let check = match result {
        Ok(persisted) => {
            if let Some(version) = live.metadata.resource_version.as_deref() {
                state.confirmed.insert(&release_key(&uid, version));
            }
            if let Persisted::Amended { differing, new: true } = &persisted {
                crate::metrics::RECORD_CONFLICTS.with_label_values(&["webhook"]).inc();
                tracing::warn!(user = %review.username, namespace = %review.namespace, name = %review.name, record = %record.id, ?differing, "a different audit record was held under the uid of a CR released under the controller's identity; the live object's record is stored as an amendment");
            }
            RecordCheck::Held
        }
        Err(e) if e.permanent => RecordCheck::Refused(e.to_string()),
        Err(e) => RecordCheck::Unavailable(e.to_string()),
    };
    let result = match check {
        RecordCheck::Held => "held",
        RecordCheck::Refused(_) => "refused",
        RecordCheck::Unavailable(_) => "error",
    };
    metrics::RECORD_CHECKS.with_label_values(&["datastorage", result]).inc();
    if let RecordCheck::Refused(e) = &check {
        tracing::warn!(user = %review.username, namespace = %review.namespace, name = %review.name, %uid, error = %e, "finalizer removal under the controller's identity refused: Data Storage refused the record");
    }
    policy::record_check_verdict(&check, &uid)
}

/// Stores the deletion-time record of `live` (an amendment when a different record holds its
/// uid) through the controller's path; a write the API may have queued is marked on the object.
async fn persist_live(state: &AppState, live: &SignalProcessing) -> (SignalProcessingAudit, Result<Persisted, ClientError>) {
    let record = (state.build_record)(live, Trigger::Deletion, Utc::now());
    state.ds.prepare(live, &record);
    let result = persist(state.ds.as_ref(), None, &record).await;
    if let Err(e) = &result {
        remember_queued(state, live, e).await;
    }
    (record, result)
}

/// Reads the live object the review is about and judges it; Ok carries the live object.
async fn live_object(state: &AppState, review: &Review, purpose: Purpose) -> Result<SignalProcessing, Verdict> {
    let unavailable = |e: String| Verdict::Deny {
        code: 503,
        reason: DenyReason::StoreUnavailable,
        message: format!("could not read this SignalProcessing from the API server to check it ({e}); nothing was stored, retry"),
    };
    if !policy::valid_object_ref(&review.namespace, &review.name) {
        // Not a name the API server could hold: no such object, and no such URL is requested.
        policy::judge_live(purpose, &old_uid(review), &Live::NotFound)?;
    }
    // Decoded slim: what the record and the judgement read, not what users put in the object.
    let api: Api<SlimSignalProcessing> = Api::namespaced(state.kube.clone(), &review.namespace);
    let live = api
        .get_opt(&review.name)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map(SlimSignalProcessing::into_inner);
    policy::judge_live(purpose, &old_uid(review), &Live::of(live.as_ref()))?;
    live.ok_or_else(|| unavailable("the object vanished".into()))
}

/// A DELETE of a CR without the finalizer: the live object's record is stored first.
async fn store_unguarded_delete(state: &AppState, review: &Review) -> Verdict {
    let live = match live_object(state, review, Purpose::UnguardedDelete).await {
        Ok(live) => live,
        Err(verdict) => return verdict,
    };
    let (record, result) = persist_live(state, &live).await;
    match result {
        Ok(persisted) => {
            if let Persisted::Amended { differing, .. } = &persisted {
                crate::metrics::RECORD_CONFLICTS.with_label_values(&["webhook"]).inc();
                tracing::warn!(namespace = %review.namespace, name = %review.name, record = %record.id, ?differing, "audit record conflict on an unguarded DELETE; amendment stored");
            }
            tracing::info!(namespace = %review.namespace, name = %review.name, record = %record.id, "audit record stored before deletion");
            Verdict::Allow
        }
        Err(e) => {
            tracing::warn!(namespace = %review.namespace, name = %review.name, record = %record.id, error = %e, "deletion refused: audit record not stored");
            Verdict::Deny {
                code: 503,
                reason: DenyReason::StoreUnavailable,
                message: policy::store_unavailable_message(&e.to_string()),
            }
        }
    }
}

/// A record write Data Storage may have queued (202, or no answer) is marked on the live
/// object, so that the retry (on any replica) polls for it instead of POSTing a second copy.
async fn remember_queued(state: &AppState, live: &SignalProcessing, e: &ClientError) {
    if matches!(e.kind, FailureKind::Queued | FailureKind::NoAnswer) {
        state.ds.mark_queued(&state.kube, live).await;
    }
}

fn write_result(result: &Result<Stored, ClientError>) -> WriteResult {
    match result {
        Ok(Stored::Created | Stored::AlreadyStored) => WriteResult::Stored,
        Ok(Stored::Conflict { .. }) => WriteResult::Conflict,
        Err(e) if e.permanent => WriteResult::Permanent(e.message.clone()),
        Err(e) => WriteResult::Transient(e.message.clone()),
    }
}

/// What a break-glass review says: who, for which live object, now (an event or a claim).
fn break_glass_of(review: &Review, live: &SignalProcessing) -> BreakGlassEvent {
    BreakGlassEvent {
        id: review.uid.clone(),
        user: review.username.clone(),
        groups: review.groups.clone(),
        extra: review.extra.clone(),
        namespace: review.namespace.clone(),
        name: review.name.clone(),
        uid: live.metadata.uid.clone().unwrap_or_default(),
        at: Utc::now(),
        confirmed: None,
    }
}

/// A break-glass removal: the event naming the actor, then the live object's forced record.
async fn record_break_glass(state: &AppState, review: &Review) -> Verdict {
    let live = match live_object(state, review, Purpose::BreakGlass).await {
        Ok(live) => live,
        Err(verdict) => return verdict,
    };
    let event = break_glass_of(review, &live);
    let record = (state.build_record)(&live, Trigger::Forced, Utc::now());
    state.ds.prepare(&live, &record);
    let event_result = write_result(&state.ds.store_break_glass(&event, &record).await);
    let record_result = if event_result == WriteResult::Stored {
        let stored = state.ds.store_one(&record).await;
        if let Err(e) = &stored {
            remember_queued(state, &live, e).await;
        }
        let result = write_result(&stored);
        if let WriteResult::Permanent(e) = &result {
            tracing::error!(user = %event.user, namespace = %event.namespace, name = %event.name, record = %record.id, error = %e, "break-glass removal: Data Storage rejected the forced record for good; the break-glass event is stored");
        }
        Some(result)
    } else {
        None
    };
    let verdict = policy::break_glass_verdict(&event_result, record_result.as_ref());
    if verdict == Verdict::Allow {
        metrics::FORCED_REMOVALS.inc();
        tracing::warn!(user = %event.user, groups = ?event.groups, extra = ?event.extra, namespace = %event.namespace, name = %event.name, uid = %event.uid, event = %event.id, "break-glass removal of the audit finalizer; break-glass event stored");
    }
    verdict
}

/// A break-glass removal reviewed for a peer that did not prove it is the API server: the
/// review's userInfo may be invented, so it is stored as an unconfirmed claim (what the
/// controller's watch confirms once the finalizer really comes off), and the live object's
/// record is stored exactly as the controller's own release would store it, so a forged
/// review leaves nothing but the truth about the object and a claim nobody confirmed.
async fn record_claim(state: &AppState, review: &Review) -> Verdict {
    let live = match live_object(state, review, Purpose::BreakGlass).await {
        Ok(live) => live,
        Err(verdict) => return verdict,
    };
    let claim = break_glass_of(review, &live);
    let claim_result = match state.ds.store_claim(&claim).await {
        Ok(Some(stored)) => write_result(&Ok(stored)),
        Ok(None) => {
            // Events mode keeps no claims: the log line and the metric are all there is.
            tracing::warn!(user = %claim.user, groups = ?claim.groups, namespace = %claim.namespace, name = %claim.name, uid = %claim.uid, review = %claim.id, "unconfirmed break-glass claim (not stored: events mode keeps none; no event names this user)");
            WriteResult::Stored
        }
        Err(e) => write_result(&Err(e)),
    };
    let record_result = if claim_result == WriteResult::Stored {
        let (record, result) = persist_live(state, &live).await;
        Some(match result {
            Ok(Persisted::Amended { differing, .. }) => {
                crate::metrics::RECORD_CONFLICTS.with_label_values(&["webhook"]).inc();
                tracing::warn!(namespace = %review.namespace, name = %review.name, record = %record.id, ?differing, "audit record conflict on a claimed break-glass removal; amendment stored");
                WriteResult::Stored
            }
            Ok(Persisted::Stored) => WriteResult::Stored,
            Err(e) if e.permanent => WriteResult::Permanent(e.message.clone()),
            Err(e) => WriteResult::Transient(e.message.clone()),
        })
    } else {
        None
    };
    let verdict = policy::claim_verdict(&claim_result, record_result.as_ref());
    if verdict == Verdict::Allow {
        metrics::BREAK_GLASS_CLAIMS.inc();
        tracing::warn!(user = %claim.user, groups = ?claim.groups, namespace = %claim.namespace, name = %claim.name, uid = %claim.uid, review = %claim.id, "break-glass removal claimed by a peer that did not prove it is the API server; stored as an unconfirmed claim (no event names this user until the removal is observed)");
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{add_finalizer_patch, ListGuard};
    use base64::Engine;
    use kube::core::admission::AdmissionReview;
    use kube::core::DynamicObject;
    use serde_json::{json, Value};

    async fn body_json(resp: Response) -> Value {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The hand-written mutating answer is what kube's admission types write for the same
    /// answer, and its patch is the one finalizer patch.
    #[tokio::test]
    async fn the_mutating_answer_is_what_kubes_admission_types_write() {
        for uid in ["u-1", "a\"b\u{e9}\\"] {
            let plain = policy::MutateReview {
                uid: uid.into(),
                operation: review::Operation::Update,
                patch: None,
            };
            let ours = body_json(mutate_answer(&plain)).await;
            let mut theirs = serde_json::to_value(admission_response(uid, None).into_review()).unwrap();
            // kube writes an allowed answer's empty status as `{}`; the API server reads its
            // absence the same way.
            let status = theirs["response"].as_object_mut().and_then(|r| r.remove("status"));
            assert_eq!(status, Some(json!({})));
            assert_eq!(ours, theirs);
        }
        let patched = policy::parse_mutate(
            &serde_json::to_vec(&json!({
                "apiVersion": review::API_VERSION, "kind": review::KIND,
                "request": {"uid": "u-2", "operation": "CREATE",
                    "kind": {"group": "kubernaut.ai", "version": "v1alpha1", "kind": "SignalProcessing"},
                    "object": {"metadata": {"name": "sp"}}}
            }))
            .unwrap(),
        )
        .unwrap();
        let ours = body_json(mutate_answer(&patched)).await;
        assert_eq!(ours["response"]["patchType"], "JSONPatch", "{ours}");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(ours["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        assert_eq!(patch, add_finalizer_patch(None, ListGuard::None));
    }

    #[tokio::test]
    async fn a_denial_carries_code_reason_and_message_in_kubes_status() {
        let out = body_json(review_response("u-3", Some((409, "Conflict", "not yet".into())))).await;
        let read: AdmissionReview<DynamicObject> = serde_json::from_value(out.clone()).unwrap();
        let response = read.response.unwrap();
        assert!(!response.allowed, "{out}");
        assert_eq!(
            (
                response.result.code,
                response.result.reason.as_str(),
                response.result.message.as_str()
            ),
            (409, "Conflict", "not yet")
        );
        assert_eq!(out["response"]["uid"], "u-3");
    }
}
