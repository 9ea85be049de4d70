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

use super::api::{db_problem, decode_problem, json_response, read_json_body, timed, AppState, BREAK_GLASS};
use super::metrics;
use super::problem::Problem;
use super::query;
use super::records::page_body;
use super::store::{Lane, Outcome, Page, PreparedEvent};
use crate::audit::break_glass::BreakGlassEvent;

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

pub async fn list(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["since", "until", "limit", "cursor"])?;
    let page = Page {
        since: p.time("since")?,
        until: p.time("until")?,
        limit: p.limit()?,
        after: p.cursor()?,
    };
    let limit = page.limit;
    let rows = timed("list_events", state.store.list_events(page))
        .await
        .map_err(|e| db_problem("list_events", e))?;
    let last = rows.last().map(|r| (r.at, r.id.clone()));
    let items = rows.into_iter().map(|r| r.json).collect();
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
