//! HTTP plumbing: routes, body and query decoding, problem responses. Storage is behind [`Store`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::auth::{AuthError, Authenticator};
use super::metrics;
use super::problem::{json_path, Problem};
use super::store::{ListQuery, Outcome, Prepared, SlowPhaseQuery, Store};
use crate::audit::SignalProcessingAudit;
use crate::duration::GoDuration;

pub const BASE: &str = "/api/v1/audit/signal-processing";
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub max_batch: usize,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(BASE, post(create).get(list))
        .route(&format!("{BASE}/batch"), post(create_batch))
        .route(&format!("{BASE}/stats/classification"), get(stats_classification))
        .route(&format!("{BASE}/stats/priority"), get(stats_priority))
        .route(&format!("{BASE}/stats/slow-phases"), get(stats_slow_phases))
        .route(&format!("{BASE}/{{id}}"), get(get_one))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { metrics::render() }))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async { Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint") })
        .layer(middleware::from_fn(track))
        .with_state(state)
}

async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::REQUESTS.with_label_values(&[&route, &method, &status]).inc();
    metrics::REQUEST_SECONDS
        .with_label_values(&[&route, &status])
        .observe(start.elapsed().as_secs_f64());
    resp
}

async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.authenticate(header).await {
        Ok(user) => {
            if let Some(user) = user {
                tracing::debug!(user = %user.name, path = %req.uri().path(), "authenticated");
            }
            next.run(req).await
        }
        Err(e @ (AuthError::Missing | AuthError::Unknown)) => Problem::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        Err(e @ AuthError::Backend(_)) => {
            metrics::ERRORS.with_label_values(&["auth_backend"]).inc();
            tracing::error!(error = %e, "cannot authenticate");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ok".into_response(),
        Err(e) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, format!("database unreachable: {e}")).into_response(),
    }
}

fn db_problem(op: &str, e: impl std::fmt::Display) -> Problem {
    metrics::ERRORS.with_label_values(&["database"]).inc();
    tracing::error!(op, error = %e, "database operation failed");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the database could not complete the request; nothing was written",
    )
}

/// Times one store call.
async fn timed<T>(op: &'static str, fut: impl std::future::Future<Output = T>) -> T {
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

async fn read_json_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<axum::body::Bytes, Problem> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !is_json_content_type(ct) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got {}", ct.unwrap_or("none")),
        ));
    }
    let too_large = || Problem::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = src {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            src = err.source();
        }
        Problem::bad_request(format!("could not read request body: {e}"))
    })
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

fn decode_problem(e: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
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

async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    let bytes = read_json_body(&headers, body, state.max_body_bytes).await?;
    let prepared = decode_single(&bytes)?;
    let outcome = timed("insert", state.store.insert(std::slice::from_ref(&prepared)))
        .await
        .map_err(|e| db_problem("insert", e))?;
    let id = &prepared.rec.id;
    match outcome.first() {
        Some(Outcome::Created) => {
            metrics::stored(&prepared.rec);
            let location = format!("{BASE}/{id}");
            let mut resp = (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                prepared.record_text,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        _ => Err(Problem::new(
            StatusCode::CONFLICT,
            format!("audit record {id:?} already exists; records are immutable"),
        )),
    }
}

async fn create_batch(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    let bytes = read_json_body(&headers, body, state.max_body_bytes).await?;
    let prepared = decode_batch(&bytes, state.max_batch)?;
    let outcomes = timed("insert_batch", state.store.insert(&prepared))
        .await
        .map_err(|e| db_problem("insert_batch", e))?;
    for (p, _) in prepared.iter().zip(&outcomes).filter(|(_, o)| **o == Outcome::Created) {
        metrics::stored(&p.rec);
    }
    let results: Vec<_> = prepared
        .iter()
        .zip(&outcomes)
        .map(|(p, o)| json!({ "id": p.rec.id, "result": o }))
        .collect();
    Ok((StatusCode::OK, Json(results)).into_response())
}

async fn get_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    match timed("get", state.store.get(id.clone())).await.map_err(|e| db_problem("get", e))? {
        Some(record) => Ok(Json(record).into_response()),
        None => Err(Problem::new(StatusCode::NOT_FOUND, format!("no audit record {id:?}"))),
    }
}

type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn params(q: Params) -> Result<HashMap<String, String>, Problem> {
    q.map(|Query(m)| m)
        .map_err(|e| Problem::bad_request(format!("invalid query string: {e}")))
}

fn time_param(p: &HashMap<String, String>, key: &str) -> Result<Option<DateTime<Utc>>, Problem> {
    p.get(key)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| Problem::field(key, format!("{key}: expected an RFC 3339 timestamp: {e}")))
        })
        .transpose()
}

fn limit_param(p: &HashMap<String, String>) -> Result<u32, Problem> {
    match p.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Problem::field("limit", format!("limit: expected an integer from 1 to {MAX_LIMIT}"))),
        },
    }
}

/// The opaque keyset cursor: hex of `<completed_at micros>:<id>`.
pub fn encode_cursor(completed_at: DateTime<Utc>, id: &str) -> String {
    format!("{}:{id}", completed_at.timestamp_micros())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    if cursor.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| cursor.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (micros, id) = text.split_once(':')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.to_string()))
}

pub fn list_query(p: &HashMap<String, String>) -> Result<ListQuery, Problem> {
    let after = p
        .get("cursor")
        .map(|c| decode_cursor(c).ok_or_else(|| Problem::field("cursor", "cursor: not a cursor this service issued")))
        .transpose()?;
    Ok(ListQuery {
        signal_fingerprint: p.get("signal_fingerprint").cloned(),
        remediation_id: p.get("remediation_id").cloned(),
        environment: p.get("environment").cloned(),
        priority: p.get("priority").cloned(),
        status: p.get("status").cloned(),
        since: time_param(p, "since")?,
        until: time_param(p, "until")?,
        limit: limit_param(p)?,
        after,
    })
}

async fn list(State(state): State<Arc<AppState>>, q: Params) -> Result<Response, Problem> {
    let query = list_query(&params(q)?)?;
    let limit = query.limit as usize;
    let rows = timed("list", state.store.list(query)).await.map_err(|e| db_problem("list", e))?;
    let next_cursor = (rows.len() == limit)
        .then(|| rows.last().map(|r| encode_cursor(r.completed_at, &r.id)))
        .flatten();
    let items: Vec<_> = rows.into_iter().map(|r| r.record).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

fn since_or_week(p: &HashMap<String, String>) -> Result<DateTime<Utc>, Problem> {
    Ok(time_param(p, "since")?.unwrap_or_else(|| Utc::now() - chrono::Duration::days(7)))
}

async fn stats_classification(State(state): State<Arc<AppState>>, q: Params) -> Result<Response, Problem> {
    let since = since_or_week(&params(q)?)?;
    let rows = timed("stats_classification", state.store.classification(since))
        .await
        .map_err(|e| db_problem("stats_classification", e))?;
    Ok(Json(json!({ "since": since, "items": rows })).into_response())
}

async fn stats_priority(State(state): State<Arc<AppState>>, q: Params) -> Result<Response, Problem> {
    let since = since_or_week(&params(q)?)?;
    let rows = timed("stats_priority", state.store.priorities(since))
        .await
        .map_err(|e| db_problem("stats_priority", e))?;
    Ok(Json(json!({ "since": since, "items": rows })).into_response())
}

pub fn slow_phase_query(p: &HashMap<String, String>) -> Result<SlowPhaseQuery, Problem> {
    let min = p.get("min_duration").map(String::as_str).unwrap_or("2s");
    let min = GoDuration::parse(min).map_err(|e| Problem::field("min_duration", format!("min_duration: {e}")))?;
    Ok(SlowPhaseQuery {
        phase: p.get("phase").cloned().unwrap_or_else(|| "enriching".into()),
        min_duration_nanos: min.nanos,
        since: time_param(p, "since")?,
        limit: limit_param(p)?,
    })
}

async fn stats_slow_phases(State(state): State<Arc<AppState>>, q: Params) -> Result<Response, Problem> {
    let query = slow_phase_query(&params(q)?)?;
    let phase = query.phase.clone();
    let rows = timed("stats_slow_phases", state.store.slow_phases(query))
        .await
        .map_err(|e| db_problem("stats_slow_phases", e))?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id, "remediation_id": r.remediation_id, "signal_fingerprint": r.signal_fingerprint,
                "phase": phase, "duration": GoDuration::from_nanos(r.duration_nanos).to_go_string(),
                "duration_ns": r.duration_nanos, "completed_at": r.completed_at,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        v.as_object_mut().unwrap().remove("remediation_id");
        let p = decode_single(rec("a").to_string().replace("\"remediation_id\":\"r\",", "").as_bytes())
            .err()
            .unwrap();
        assert_eq!(p.field.as_deref(), Some("remediation_id"));
        assert!(decode_single(b"{\"id\":").err().unwrap().detail.starts_with("malformed JSON"));
        assert_eq!(decode_single(b"[]").err().unwrap().status, 400);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let t: DateTime<Utc> = "2025-03-01T10:00:00.123456Z".parse().unwrap();
        assert_eq!(decode_cursor(&encode_cursor(t, "a:b")), Some((t, "a:b".to_string())));
        // Odd length, not hex, no separator, empty timestamp.
        for bad in ["abc", "zz", "3132", "3a78"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
        let mut p = HashMap::new();
        p.insert("cursor".to_string(), "nothex".to_string());
        assert_eq!(list_query(&p).err().unwrap().field.as_deref(), Some("cursor"));
        p.clear();
        p.insert("limit".to_string(), "0".to_string());
        assert_eq!(list_query(&p).err().unwrap().field.as_deref(), Some("limit"));
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
