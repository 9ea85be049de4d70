//! The router: routes, request tracking, authentication and authorization of every `/api/`
//! call. The endpoints live in [`super::records`], [`super::stats`], [`super::break_glass`],
//! [`super::export`], [`super::report`] and [`super::tlog_api`]; what they share (state, body
//! decoding, problem answers) in [`super::http`], which imports none of them.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

use super::auth::AuthError;
use super::authz;
use super::limits::{self, Lanes};
use super::problem::Problem;
use super::tlog_api;
use super::{break_glass, export, metrics, records, report, stats};

// The request helpers and the state handlers share, re-exported for modules that still
// name them here.
pub use super::http::{db_problem, timed, ApiLimits, AppState};
use crate::api_paths::{BASE, BATCH, BREAK_GLASS, BREAK_GLASS_CLAIMS, BREAK_GLASS_CONFIRMATIONS, LOG, LOG_INDEX, PUBLIC_KEY_PATH};

pub fn router(state: Arc<AppState>, lanes: Arc<Lanes>) -> Router {
    let api = Router::new()
        .route(BASE, post(records::create).get(records::list))
        .route(BATCH, post(records::create_batch))
        .route(&format!("{BASE}/stats/classification"), get(stats::classification))
        .route(&format!("{BASE}/stats/priority"), get(stats::priority))
        .route(&format!("{BASE}/stats/slow-phases"), get(stats::slow_phases))
        .route(&format!("{BASE}/verify"), get(report::verify))
        .route(&format!("{BASE}/report"), get(report::report))
        .route(&format!("{BASE}/export"), get(export::export))
        .route(&format!("{BASE}/exports/{{id}}"), get(export::manifest))
        .route(&format!("{BASE}/{{id}}"), get(records::get_one))
        .route(&format!("{BASE}/{{id}}/amendments"), post(records::amend))
        .route(BREAK_GLASS, post(break_glass::create).get(break_glass::list))
        .route(&format!("{BREAK_GLASS}/{{id}}"), get(break_glass::get_one))
        .route(BREAK_GLASS_CLAIMS, post(break_glass::create_claim).get(break_glass::list_claims))
        .route(BREAK_GLASS_CONFIRMATIONS, post(break_glass::confirm))
        .route(&format!("{LOG}/checkpoint"), get(tlog_api::checkpoint))
        .route(&format!("{LOG}/tile/{{*path}}"), get(tlog_api::tile))
        .route(&format!("{LOG}/proof/inclusion"), get(tlog_api::inclusion))
        .route(&format!("{LOG}/proof/consistency"), get(tlog_api::consistency))
        .route(&format!("{LOG_INDEX}/{{kind}}/{{id}}"), get(tlog_api::item_index))
        // Innermost first: the lanes bound the work of callers already allowed in.
        .route_layer(middleware::from_fn_with_state(lanes, limits::admit))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { metrics::render() }))
        .route(PUBLIC_KEY_PATH, get(export::public_key))
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
    // One span per request: what the handlers and the store log inside it names the request.
    let span = tracing::info_span!("request", %method, %route, status = tracing::field::Empty);
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16().to_string();
    span.record("status", status.as_str());
    metrics::REQUESTS.with_label_values(&[&route, &method, &status]).inc();
    metrics::REQUEST_SECONDS
        .with_label_values(&[&route, &status])
        .observe(start.elapsed().as_secs_f64());
    resp
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Response {
    metrics::ERRORS.with_label_values(&["auth_backend"]).inc();
    tracing::error!(error = %e, "cannot {what}");
    let mut resp = Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Authenticates the caller, then checks the call's verb on the audit records.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let verb = authz::verb_for(req.method(), &route);
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut req = req;
    let user = match state.auth.authenticate(header.as_deref()).await {
        Ok(None) => return next.run(req).await,
        Ok(Some(user)) => user,
        Err(e @ (AuthError::Missing | AuthError::Unknown)) => {
            return Problem::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
        Err(e @ AuthError::Unavailable(_)) => return unavailable("authenticate", e),
        Err(e @ AuthError::Throttled) => {
            let mut resp = Problem::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
    };
    match state.authz.allows(&user, verb).await {
        Ok(true) => {
            tracing::debug!(user = %user.name, verb = verb.as_str(), route = %route, "authorized");
            // Who asked, for the endpoints that record it (an export's manifest).
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Ok(false) => {
            metrics::FORBIDDEN.with_label_values(&[verb.as_str()]).inc();
            tracing::warn!(user = %user.name, verb = verb.as_str(), route = %route, "forbidden");
            Problem::new(StatusCode::FORBIDDEN, authz::forbidden_detail(&user, verb)).into_response()
        }
        Err(e) => unavailable("authorize", e),
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Some(reason) = state.auth.not_ready() {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
    }
    match state.store.ping().await {
        Ok(()) => "ok".into_response(),
        Err(e) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, format!("database unreachable: {e}")).into_response(),
    }
}
