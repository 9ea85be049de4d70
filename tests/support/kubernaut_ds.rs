//! A test double of Kubernaut's Data Storage, the part audit-guard's `events` mode uses:
//! `POST /api/v1/audit/events`, `POST /api/v1/audit/events/batch`, `GET /api/v1/audit/events`.
//! It behaves as the real service was observed to, in every way audit-guard depends on:
//!
//! - **payload pruning**: `event_data` is decoded by its discriminator (`event_type`) into
//!   `SignalProcessingAuditPayload`; unknown keys are dropped and the known ones re-serialised, so
//!   a key the schema does not have never reaches the store; an unknown `event_type` is a 400;
//! - **validation**: the envelope's required fields, lengths and enums, the payload's required
//!   `phase`/`signal`/`event_type` and every enum (phase, severity, environment, priority,
//!   criticality ...), `policy_hash`'s pattern; any violation is a 400 for the whole request;
//! - **the 7-day window**: an `event_timestamp` more than 7 days old is a 400;
//! - **auth** (optional): the bearer token goes to the real API server's TokenReview with no
//!   audience (so only a token for the API server's default audiences authenticates: 401
//!   otherwise), then a SubjectAccessReview for `create` (POST) or `get` (GET) on `services`
//!   named `data-storage-service` in the service's namespace (403 when not allowed);
//! - **the dead-letter queue**: while writes fail, a write is answered 202 and queued; a replay
//!   loop stores *every* queued copy (each as its own event) once it is older than the replay
//!   delay and writes work again. Reads keep working while writes fail.
//!
//! What it cannot be: PostgreSQL, Redis and the oauth-proxy are not there, the other services'
//! payload schemas are not modelled (their event types are refused), and the replay timing is
//! the test's choice (the real first replay comes after about a minute).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, PostParams};
use serde_json::{json, Map, Value};

pub const SERVICE_NAME: &str = "data-storage-service";
pub const BREAK_GLASS_ACTION: &str = "break_glass";

/// Where TokenReview and SubjectAccessReview go, and the namespace the service runs in.
#[derive(Clone)]
pub struct Auth {
    pub client: kube::Client,
    pub namespace: String,
}

pub struct Options {
    pub auth: Option<Auth>,
    /// A queued copy is replayed once it is this old (and writes work).
    pub replay_after: Duration,
    /// How often the replay loop looks at the queue.
    pub replay_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            auth: None,
            replay_after: Duration::from_secs(3),
            replay_every: Duration::from_millis(500),
        }
    }
}

#[derive(Default)]
pub struct DsState {
    writes_fail: AtomicBool,
    /// The queue loses what it holds instead of replaying it.
    queue_loses: AtomicBool,
    stored: Mutex<Vec<Value>>,
    queue: Mutex<Vec<(Instant, Value)>>,
    /// Write requests (POSTs) received, answered or not.
    pub write_requests: AtomicUsize,
    /// Copies the queue replayed into the store.
    pub replayed: AtomicUsize,
    /// Statuses answered, by code.
    answers: Mutex<HashMap<u16, usize>>,
    auth: Option<Auth>,
}

pub struct KubernautDs {
    pub url: String,
    pub state: Arc<DsState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KubernautDs {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl KubernautDs {
    pub async fn start(opts: Options) -> Self {
        let state = Arc::new(DsState {
            auth: opts.auth.clone(),
            ..Default::default()
        });
        let app = Router::new()
            .route("/api/v1/audit/events", post(post_one).get(query))
            .route("/api/v1/audit/events/batch", post(post_batch))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let replayer = tokio::spawn(replay_loop(state.clone(), opts.replay_after, opts.replay_every));
        Self {
            url,
            state,
            tasks: vec![server, replayer],
        }
    }

    /// Writes fail from now on (202, queued) or work again.
    pub fn set_writes_failing(&self, failing: bool) {
        self.state.writes_fail.store(failing, Ordering::SeqCst);
    }

    /// The queue loses every copy it holds (Redis flushed) instead of replaying it.
    pub fn set_queue_loses(&self, loses: bool) {
        self.state.queue_loses.store(loses, Ordering::SeqCst);
    }

    pub fn queued(&self) -> usize {
        self.state.queue.lock().unwrap().len()
    }

    pub fn stored(&self) -> Vec<Value> {
        self.state.stored.lock().unwrap().clone()
    }

    /// Stored record events of the CR `uid` (its uid as resource_id, not break-glass).
    pub fn record_events(&self, uid: &str) -> Vec<Value> {
        self.stored()
            .into_iter()
            .filter(|e| e["resource_id"] == uid && e["event_action"] != BREAK_GLASS_ACTION)
            .collect()
    }

    pub fn break_glass_events(&self, uid: &str) -> Vec<Value> {
        self.stored()
            .into_iter()
            .filter(|e| e["resource_id"] == uid && e["event_action"] == BREAK_GLASS_ACTION)
            .collect()
    }

    pub fn answers(&self, status: u16) -> usize {
        self.state.answers.lock().unwrap().get(&status).copied().unwrap_or(0)
    }

    pub fn write_requests(&self) -> usize {
        self.state.write_requests.load(Ordering::SeqCst)
    }

    /// Stores an event as if someone else had written it (validated and pruned like any).
    pub fn plant(&self, event: Value) -> Value {
        let clean = validate(&event, Utc::now()).expect("a valid event to plant");
        store(&self.state, vec![clean]).remove(0)
    }
}

async fn replay_loop(state: Arc<DsState>, after: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if state.writes_fail.load(Ordering::SeqCst) {
            continue;
        }
        let due: Vec<Value> = {
            let mut q = state.queue.lock().unwrap();
            let (due, keep): (Vec<_>, Vec<_>) = q.drain(..).partition(|(at, _)| at.elapsed() >= after);
            *q = keep;
            due.into_iter().map(|(_, ev)| ev).collect()
        };
        if due.is_empty() || state.queue_loses.load(Ordering::SeqCst) {
            continue;
        }
        state.replayed.fetch_add(due.len(), Ordering::SeqCst);
        store(&state, due);
    }
}

fn store(state: &DsState, events: Vec<Value>) -> Vec<Value> {
    let mut stored = state.stored.lock().unwrap();
    events
        .into_iter()
        .map(|mut ev| {
            ev["event_id"] = json!(uuid::Uuid::new_v4().to_string());
            let date = ev["event_timestamp"]
                .as_str()
                .and_then(|t| t.get(..10))
                .unwrap_or_default()
                .to_string();
            ev["event_date"] = json!(date);
            stored.push(ev.clone());
            ev
        })
        .collect()
}

fn problem(state: &DsState, status: StatusCode, detail: impl Into<String>) -> Response {
    *state.answers.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    let body = json!({ "type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail.into() });
    (status, [("content-type", "application/problem+json")], body.to_string()).into_response()
}

fn answer(state: &DsState, status: StatusCode, body: Value) -> Response {
    *state.answers.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    (status, axum::Json(body)).into_response()
}

/// TokenReview (no audience: the API server's defaults) and SubjectAccessReview on the
/// service, as Kubernaut's auth middleware does.
async fn authorize(state: &DsState, headers: &HeaderMap, verb: &str) -> Result<(), Response> {
    let Some(auth) = &state.auth else { return Ok(()) };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(problem(state, StatusCode::UNAUTHORIZED, "missing bearer token"));
    };
    let review: TokenReview = serde_json::from_value(json!({ "spec": { "token": token } })).expect("TokenReview");
    let reviewed = Api::<TokenReview>::all(auth.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| problem(state, StatusCode::INTERNAL_SERVER_ERROR, format!("TokenReview: {e}")))?;
    let status = reviewed.status.unwrap_or_default();
    let user = status.user.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(problem(
            state,
            StatusCode::UNAUTHORIZED,
            format!("token not authenticated: {}", status.error.unwrap_or_default()),
        ));
    }
    let sar: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user.username, "groups": user.groups, "uid": user.uid, "extra": user.extra,
            "resourceAttributes": { "namespace": auth.namespace, "verb": verb, "group": "", "resource": "services", "name": SERVICE_NAME }
        }
    }))
    .expect("SubjectAccessReview");
    let decided = Api::<SubjectAccessReview>::all(auth.client.clone())
        .create(&PostParams::default(), &sar)
        .await
        .map_err(|e| problem(state, StatusCode::INTERNAL_SERVER_ERROR, format!("SubjectAccessReview: {e}")))?;
    if decided.status.map(|s| s.allowed) != Some(true) {
        return Err(problem(
            state,
            StatusCode::FORBIDDEN,
            format!("{verb} on services/{SERVICE_NAME} denied"),
        ));
    }
    Ok(())
}

const ENVELOPE_STRINGS: &[(&str, usize, usize)] = &[
    ("version", 1, 20),
    ("event_type", 1, 100),
    ("event_category", 1, 50),
    ("event_action", 1, 50),
    ("correlation_id", 1, 255),
];
const REQUIRED: &[&str] = &[
    "version",
    "event_type",
    "event_timestamp",
    "event_category",
    "event_action",
    "event_outcome",
    "correlation_id",
    "event_data",
];
const CATEGORIES: &[&str] = &[
    "gateway",
    "notification",
    "analysis",
    "aiagent",
    "signalprocessing",
    "workflow",
    "workflowexecution",
    "orchestration",
    "approval",
    "effectiveness",
    "actiontype",
    "apifrontend",
    "security",
    "agentsession",
];
/// Optional envelope fields: (name, JSON type, nullable).
const OPTIONAL: &[(&str, &str, bool)] = &[
    ("actor_type", "string", false),
    ("actor_id", "string", false),
    ("actor_ip", "string", false),
    ("resource_type", "string", false),
    ("resource_id", "string", false),
    ("parent_event_id", "uuid", true),
    ("namespace", "string", true),
    ("cluster_id", "string", true),
    ("severity", "string", true),
    ("duration_ms", "integer", true),
    ("parent_event_date", "date-time", true),
    ("error_code", "string", true),
    ("error_message", "string", true),
    ("retention_days", "integer", true),
    ("is_sensitive", "boolean", true),
];
const SP_EVENT_TYPES: &[&str] = &[
    "signalprocessing.signal.processed",
    "signalprocessing.phase.transition",
    "signalprocessing.classification.decision",
    "signalprocessing.business.classified",
    "signalprocessing.enrichment.completed",
    "signalprocessing.error.occurred",
];
/// SignalProcessingAuditPayload: (field, JSON type, allowed values or empty for any).
const PAYLOAD: &[(&str, &str, &[&str])] = &[
    ("event_type", "string", SP_EVENT_TYPES),
    (
        "phase",
        "string",
        &["Pending", "Enriching", "Classifying", "Categorizing", "Completed", "Failed"],
    ),
    ("signal", "string", &[]),
    ("severity", "string", &["critical", "high", "warning", "info", "unknown"]),
    ("external_severity", "string", &[]),
    ("normalized_severity", "string", &["critical", "high", "warning", "info", "unknown"]),
    ("determination_source", "string", &["rego-policy", "fallback", "default"]),
    ("policy_hash", "hash", &[]),
    ("environment", "string", &["production", "staging", "development"]),
    ("environment_source", "string", &["rego", "labels", "default"]),
    ("priority", "string", &["P0", "P1", "P2", "P3", "P4"]),
    ("priority_source", "string", &["rego", "severity", "default"]),
    ("criticality", "string", &["critical", "high", "warning", "low"]),
    ("sla_requirement", "string", &[]),
    ("has_owner_chain", "boolean", &[]),
    ("owner_chain_length", "integer", &[]),
    ("degraded_mode", "boolean", &[]),
    ("duration_ms", "integer", &[]),
    ("has_namespace", "boolean", &[]),
    ("has_pod", "boolean", &[]),
    ("has_deployment", "boolean", &[]),
    ("business_unit", "string", &[]),
    ("from_phase", "string", &[]),
    ("to_phase", "string", &[]),
    ("signal_mode", "string", &["reactive", "proactive"]),
    ("source_signal_name", "string", &[]),
    ("error", "string", &[]),
];
const PAYLOAD_REQUIRED: &[&str] = &["phase", "signal", "event_type"];
/// Kubernaut refuses events older than this.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn type_ok(v: &Value, ty: &str) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "uuid" => v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
        "date-time" => time(v).is_some(),
        "hash" => v
            .as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))),
        _ => false,
    }
}

/// Validates one event as Kubernaut does and returns what it would store (pruned).
pub fn validate(ev: &Value, now: DateTime<Utc>) -> Result<Value, String> {
    let obj = ev.as_object().ok_or("an event must be a JSON object")?;
    for f in REQUIRED {
        if obj.get(*f).is_none_or(Value::is_null) {
            return Err(format!("{f} is required"));
        }
    }
    let mut out = Map::new();
    for (f, min, max) in ENVELOPE_STRINGS {
        let s = obj[*f].as_str().ok_or(format!("{f} must be a string"))?;
        if s.chars().count() < *min || s.chars().count() > *max {
            return Err(format!("{f} must be {min} to {max} characters"));
        }
        out.insert(f.to_string(), json!(s));
    }
    let category = obj["event_category"].as_str().unwrap_or_default();
    if !CATEGORIES.contains(&category) {
        return Err(format!("event_category {category:?} is not allowed"));
    }
    let outcome = obj["event_outcome"].as_str().unwrap_or_default();
    if !["success", "failure", "pending"].contains(&outcome) {
        return Err(format!("event_outcome {outcome:?} is not allowed"));
    }
    out.insert("event_outcome".into(), json!(outcome));
    let at = time(&obj["event_timestamp"]).ok_or("event_timestamp must be an RFC 3339 date-time")?;
    if now.signed_duration_since(at) > chrono::Duration::from_std(MAX_AGE).unwrap_or_default() {
        return Err(format!("event_timestamp {at} is more than 7 days old"));
    }
    out.insert("event_timestamp".into(), obj["event_timestamp"].clone());
    for (f, ty, nullable) in OPTIONAL {
        match obj.get(*f) {
            None => {}
            Some(Value::Null) if *nullable => {
                out.insert(f.to_string(), Value::Null);
            }
            Some(v) if type_ok(v, ty) => {
                out.insert(f.to_string(), v.clone());
            }
            Some(v) => return Err(format!("{f}: {v} is not a valid {ty}")),
        }
    }
    out.insert("event_data".into(), payload(&obj["event_data"])?);
    Ok(Value::Object(out))
}

/// Decodes `event_data` by its discriminator into SignalProcessingAuditPayload: unknown keys
/// dropped, known ones checked and re-serialised.
fn payload(data: &Value) -> Result<Value, String> {
    let obj = data.as_object().ok_or("event_data must be an object")?;
    let discriminator = obj.get("event_type").and_then(Value::as_str).unwrap_or_default();
    if !SP_EVENT_TYPES.contains(&discriminator) {
        return Err(format!(
            "event_data.event_type {discriminator:?} maps to no payload schema (this double models SignalProcessingAuditPayload only)"
        ));
    }
    for f in PAYLOAD_REQUIRED {
        if obj.get(*f).is_none() {
            return Err(format!("event_data.{f} is required"));
        }
    }
    let mut out = Map::new();
    for (f, ty, allowed) in PAYLOAD {
        let Some(v) = obj.get(*f) else { continue };
        if !type_ok(v, ty) {
            return Err(format!("event_data.{f}: {v} is not a valid {ty}"));
        }
        if !allowed.is_empty() && !allowed.contains(&v.as_str().unwrap_or_default()) {
            return Err(format!("event_data.{f}: {v} is not one of {allowed:?}"));
        }
        out.insert(f.to_string(), v.clone());
    }
    Ok(Value::Object(out))
}

async fn write(state: &DsState, events: Vec<Value>, batch: bool) -> Response {
    let now = Utc::now();
    let mut clean = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        match validate(ev, now) {
            Ok(c) => clean.push(c),
            Err(e) if batch => return problem(state, StatusCode::BAD_REQUEST, format!("event {i}: {e}")),
            Err(e) => return problem(state, StatusCode::BAD_REQUEST, e),
        }
    }
    if state.writes_fail.load(Ordering::SeqCst) {
        let at = Instant::now();
        state.queue.lock().unwrap().extend(clean.into_iter().map(|ev| (at, ev)));
        return answer(
            state,
            StatusCode::ACCEPTED,
            json!({ "status": "accepted", "message": "database write failed; audit event queued for async processing" }),
        );
    }
    let stored = store(state, clean);
    let ids: Vec<Value> = stored.iter().map(|e| e["event_id"].clone()).collect();
    if batch {
        answer(state, StatusCode::CREATED, json!({ "event_ids": ids, "message": "created" }))
    } else {
        answer(
            state,
            StatusCode::CREATED,
            json!({ "event_id": ids[0], "event_timestamp": stored[0]["event_timestamp"], "message": "created" }),
        )
    }
}

async fn post_one(State(state): State<Arc<DsState>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    state.write_requests.fetch_add(1, Ordering::SeqCst);
    if let Err(r) = authorize(&state, &headers, "create").await {
        return r;
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(ev) => write(&state, vec![ev], false).await,
        Err(e) => problem(&state, StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    }
}

/// Kubernaut's batch endpoint takes at most this many events.
pub const MAX_BATCH: usize = 500;

async fn post_batch(State(state): State<Arc<DsState>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    state.write_requests.fetch_add(1, Ordering::SeqCst);
    if let Err(r) = authorize(&state, &headers, "create").await {
        return r;
    }
    match serde_json::from_slice::<Vec<Value>>(&body) {
        Ok(evs) if evs.is_empty() || evs.len() > MAX_BATCH => {
            problem(&state, StatusCode::BAD_REQUEST, format!("a batch holds 1 to {MAX_BATCH} events"))
        }
        Ok(evs) => write(&state, evs, true).await,
        Err(e) => problem(&state, StatusCode::BAD_REQUEST, format!("invalid JSON array: {e}")),
    }
}

async fn query(State(state): State<Arc<DsState>>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Err(r) = authorize(&state, &headers, "get").await {
        return r;
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(l)) if (1..=1000).contains(&l) => l,
        Some(_) => return problem(&state, StatusCode::BAD_REQUEST, "limit must be 1 to 1000"),
    };
    let offset = match q.get("offset").map(|o| o.parse::<usize>()) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => return problem(&state, StatusCode::BAD_REQUEST, "offset must be a non-negative integer"),
    };
    let matching: Vec<Value> = state
        .stored
        .lock()
        .unwrap()
        .iter()
        .rev()
        .filter(|ev| {
            ["event_type", "correlation_id", "event_category", "event_outcome"]
                .iter()
                .all(|k| q.get(*k).is_none_or(|v| ev[*k] == json!(v)))
        })
        .cloned()
        .collect();
    let page: Vec<Value> = matching.iter().skip(offset).take(limit).cloned().collect();
    let has_more = offset + page.len() < matching.len();
    answer(
        &state,
        StatusCode::OK,
        json!({ "data": page, "pagination": { "limit": limit, "offset": offset, "total": matching.len(), "has_more": has_more } }),
    )
}
