//! Break-glass events over REST: `POST /api/v1/audit/break-glass-events` stores one
//! (append-only; the same id again answers 409 with `identical`), GET lists them newest first
//! or returns one by id. See [`crate::audit::break_glass`] for the event itself.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::Value;

use super::http::{db_problem, decode_problem, json_response, read_json_body, timed, AppState};
use super::metrics;
use super::problem::Problem;
use super::query;
use super::records::page_body;
use super::store::{Lane, Outcome, Page, PreparedEvent};
use crate::api_paths::BREAK_GLASS;
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::break_glass::{judge_claims, ClaimVerdict};
use crate::wire::{AmbiguousClaims, RemovalObserved};

/// Decodes and validates one event; errors name the field.
pub fn decode_event(bytes: &[u8], window: &crate::audit::TimeWindow, now: chrono::DateTime<Utc>) -> Result<PreparedEvent, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let event: BreakGlassEvent = serde_path_to_error::deserialize(de).map_err(|e| decode_problem(&e))?;
    event
        .validate(window, now)
        .map_err(|e| Problem::field(e.field.clone(), e.to_string()))?;
    PreparedEvent::new(event).map_err(|e| Problem::bad_request(e.to_string()))
}

/// Whether what is stored under the id is the posted event.
pub fn is_identical(posted: &BreakGlassEvent, stored: Option<&Value>) -> bool {
    stored
        .and_then(|v| serde_json::from_value::<BreakGlassEvent>(v.clone()).ok())
        .is_some_and(|s| &s == posted)
}

pub async fn create(State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let bytes = read_json_body(&headers, body, &state.limits).await?;
    let prepared = decode_event(&bytes, &state.limits.window, Utc::now())?;
    let id = prepared.event.id.clone();
    let outcome = timed("insert_event", state.store.insert_event(&prepared))
        .await
        .map_err(|e| db_problem("insert_event", e))?;
    if outcome == Outcome::Created {
        metrics::BREAK_GLASS_EVENTS.inc();
        tracing::warn!(
            id = %id, user = %prepared.event.user, namespace = %prepared.event.namespace, name = %prepared.event.name,
            "break-glass event stored"
        );
        let mut resp = json_response(StatusCode::CREATED, prepared.event_text);
        if let Ok(v) = HeaderValue::from_str(&format!("{BREAK_GLASS}/{id}")) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(resp);
    }
    let stored = timed("event", state.store.event(id.clone(), Lane::Write))
        .await
        .map_err(|e| db_problem("event", e))?;
    let identical = is_identical(&prepared.event, stored.as_ref());
    let detail = if identical {
        format!("break-glass event {id:?} is already stored with the same content")
    } else {
        format!("break-glass event {id:?} is already stored with different content; events are immutable")
    };
    Err(Problem::conflict(detail, identical, stored.unwrap_or(Value::Null)))
}

pub async fn get_one(State(state): State<Arc<AppState>>, Path(id): Path<String>, uri: Uri) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    // A lookup by id is the deletion path's: the write lane's pool (see `limits`).
    match timed("event", state.store.event(id.clone(), Lane::Write))
        .await
        .map_err(|e| db_problem("event", e))?
    {
        Some(event) => Ok(Json(event).into_response()),
        None => Err(Problem::new(StatusCode::NOT_FOUND, format!("no break-glass event {id:?}"))),
    }
}

/// The page a listing of events or claims asks for.
fn page_of(uri: &Uri) -> Result<Page, Problem> {
    let p = query::params(uri, &["since", "until", "limit", "cursor"])?;
    Ok(Page {
        since: p.time("since")?,
        until: p.time("until")?,
        limit: p.limit()?,
        after: p.cursor()?,
    })
}

pub async fn list(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let page = page_of(&uri)?;
    let limit = page.limit;
    let rows = timed("list_events", state.store.list_events(page))
        .await
        .map_err(|e| db_problem("list_events", e))?;
    let last = rows.last().map(|r| (r.at, r.id.clone()));
    let items = rows.into_iter().map(|r| r.json).collect();
    Ok(Json(page_body(items, last.as_ref().map(|(at, id)| (*at, id.as_str())), limit)).into_response())
}

/// `POST /api/v1/audit/break-glass-claims`: a claim, stored as posted (append-only; the
/// same id again answers 409 with `identical`). A claim names nobody: see
/// [`crate::audit::break_glass::ClaimVerdict`] for how one becomes an event.
pub async fn create_claim(State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let bytes = read_json_body(&headers, body, &state.limits).await?;
    let prepared = decode_event(&bytes, &state.limits.window, Utc::now())?;
    if prepared.event.confirmed.is_some() {
        return Err(Problem::field("confirmed", "a claim is not confirmed by whoever posts it"));
    }
    let outcome = timed("insert_claim", state.store.insert_claim(&prepared))
        .await
        .map_err(|e| db_problem("insert_claim", e))?;
    let id = prepared.event.id.clone();
    if outcome == Outcome::Created {
        metrics::BREAK_GLASS_CLAIMS.with_label_values(&["stored"]).inc();
        tracing::warn!(
            id = %id, user = %prepared.event.user, namespace = %prepared.event.namespace, name = %prepared.event.name,
            uid = %prepared.event.uid, "unconfirmed break-glass claim stored"
        );
        return Ok(json_response(StatusCode::CREATED, prepared.event_text));
    }
    let stored = timed("claims_for_uid", state.store.claims_for_uid(prepared.event.uid.clone()))
        .await
        .map_err(|e| db_problem("claims_for_uid", e))?;
    let stored = stored
        .into_iter()
        .map(|(v, _)| v)
        .find(|v| v.get("id").and_then(Value::as_str) == Some(id.as_str()));
    let identical = is_identical(&prepared.event, stored.as_ref());
    Err(Problem::conflict(
        format!("break-glass claim {id:?} is already stored"),
        identical,
        stored.unwrap_or(Value::Null),
    ))
}

/// `POST /api/v1/audit/break-glass-claims/confirmations`: the removal of the finalizer of
/// `uid` was observed. Its one claim becomes a break-glass event (201; 200 when it already
/// is one); none (404) or several (409, `ambiguous` lists them) confirm nothing.
pub async fn confirm(State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let bytes = read_json_body(&headers, body, &state.limits).await?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let observed: RemovalObserved = serde_path_to_error::deserialize(de).map_err(|e| decode_problem(&e))?;
    crate::audit::check_id("uid", &observed.uid).map_err(|e| Problem::field(e.field.clone(), e.to_string()))?;
    let rows = timed("claims_for_uid", state.store.claims_for_uid(observed.uid.clone()))
        .await
        .map_err(|e| db_problem("claims_for_uid", e))?;
    let mut claims = Vec::with_capacity(rows.len());
    let mut confirmed = Vec::with_capacity(rows.len());
    for (v, done) in rows {
        let claim: crate::audit::break_glass::BreakGlassEvent = serde_json::from_value(v).map_err(|e| db_problem("claims_for_uid", e))?;
        claims.push(claim);
        confirmed.push(done);
    }
    match judge_claims(&claims, &confirmed) {
        ClaimVerdict::NoClaim => {
            metrics::BREAK_GLASS_CLAIMS.with_label_values(&["no_claim"]).inc();
            Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("no break-glass claim names SignalProcessing uid {:?}", observed.uid),
            ))
        }
        ClaimVerdict::Ambiguous(ids) => {
            metrics::BREAK_GLASS_CLAIMS.with_label_values(&["ambiguous"]).inc();
            tracing::warn!(uid = %observed.uid, claims = ?ids, "several break-glass claims name one removed object; none is confirmed");
            Err(Problem::conflict(
                format!(
                    "{} break-glass claims name SignalProcessing uid {:?}; none is confirmed (ambiguous)",
                    ids.len(),
                    observed.uid
                ),
                false,
                serde_json::to_value(AmbiguousClaims { ambiguous: ids }).unwrap_or_default(),
            ))
        }
        ClaimVerdict::AlreadyConfirmed => {
            let id = claims.first().map(|c| c.id.clone()).unwrap_or_default();
            let stored = timed("event", state.store.event(id, Lane::Write))
                .await
                .map_err(|e| db_problem("event", e))?;
            Ok((StatusCode::OK, Json(stored.unwrap_or(Value::Null))).into_response())
        }
        ClaimVerdict::Confirm(i) => {
            let Some(claim) = claims.get(i) else {
                return Err(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "claim index out of range"));
            };
            let event = crate::audit::break_glass::BreakGlassEvent::confirmed_from(
                claim,
                crate::audit::break_glass::OBSERVED_BY_CONTROLLER,
                observed.observed_at,
            );
            let prepared = PreparedEvent::new(event).map_err(|e| Problem::bad_request(e.to_string()))?;
            let outcome = timed("insert_event", state.store.insert_event(&prepared))
                .await
                .map_err(|e| db_problem("insert_event", e))?;
            if outcome == Outcome::Created {
                metrics::BREAK_GLASS_EVENTS.inc();
                metrics::BREAK_GLASS_CLAIMS.with_label_values(&["confirmed"]).inc();
                tracing::warn!(id = %claim.id, user = %claim.user, uid = %claim.uid, "break-glass claim confirmed: the removal was observed; break-glass event stored");
                return Ok(json_response(StatusCode::CREATED, prepared.event_text));
            }
            let stored = timed("event", state.store.event(claim.id.clone(), Lane::Write))
                .await
                .map_err(|e| db_problem("event", e))?;
            Ok((StatusCode::OK, Json(stored.unwrap_or(Value::Null))).into_response())
        }
    }
}

/// `GET /api/v1/audit/break-glass-claims`: claims newest first, each with its `status`
/// (`unconfirmed`, `ambiguous` or `confirmed`).
pub async fn list_claims(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let page = page_of(&uri)?;
    let limit = page.limit;
    let rows = timed("list_claims", state.store.list_claims(page))
        .await
        .map_err(|e| db_problem("list_claims", e))?;
    let last = rows.last().map(|r| (r.at, r.id.clone()));
    let items = rows
        .into_iter()
        .map(|r| {
            let mut v = r.json;
            if let Some(o) = v.as_object_mut() {
                o.insert("status".into(), Value::String(r.status));
            }
            v
        })
        .collect();
    Ok(Json(page_body(items, last.as_ref().map(|(at, id)| (*at, id.as_str())), limit)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_decode_with_named_fields_and_compare_exactly() {
        let now = "2025-11-27T10:01:00Z".parse().unwrap();
        let w = crate::audit::TimeWindow::default();
        let v = json!({"id": "rev-1", "user": "bob", "groups": ["g"], "namespace": "ns", "name": "sp", "uid": "u-1",
                       "at": "2025-11-27T10:00:00Z"});
        let p = decode_event(v.to_string().as_bytes(), &w, now).unwrap();
        assert!(is_identical(&p.event, Some(&serde_json::from_str(&p.event_text).unwrap())));
        let mut other = v.clone();
        other["user"] = json!("mallory");
        assert!(!is_identical(&p.event, Some(&other)));
        assert!(!is_identical(&p.event, None));
        let mut bad = v.clone();
        bad.as_object_mut().unwrap().remove("groups");
        assert_eq!(
            decode_event(bad.to_string().as_bytes(), &w, now).unwrap_err().field.as_deref(),
            Some("groups")
        );
        let mut bad = v;
        bad["at"] = json!("0001-01-01T00:00:00Z");
        assert_eq!(
            decode_event(bad.to_string().as_bytes(), &w, now).unwrap_err().field.as_deref(),
            Some("at")
        );
    }
}
