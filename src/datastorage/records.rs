//! The record endpoints: store, batch, get, list and amend. Records are immutable: an id is
//! stored once; posting it again answers 409 saying whether the stored original has the same
//! content (`identical`), and a different record under a taken id is stored only as an
//! amendment, appended and linked to the original, never in its place.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::http::{check_times, db_problem, decode_batch, decode_single, json_response, read_json_body, timed, AppState};
use super::metrics;
use super::problem::Problem;
use super::query::{self, encode_cursor};
use super::store::{AmendmentOutcome, Lane, ListQuery, NewAmendment, Outcome, Page, Store, StoredAmendment};
use crate::api_paths::BASE;
use crate::audit::SignalProcessingAudit;
use crate::evidence::entry::Kind;
use crate::wire::{BatchItem, BatchResult};

/// Whether a posted record says the same as what is stored under its id. A stored record
/// that is gone (dropped by retention) or unreadable cannot be confirmed: not identical.
pub fn is_identical(posted: &SignalProcessingAudit, stored: Option<&Value>) -> bool {
    stored
        .and_then(|v| serde_json::from_value::<SignalProcessingAudit>(v.clone()).ok())
        .is_some_and(|s| s.same_content(posted))
}

/// The batch answer for each record from the database outcome and the stored originals.
pub fn batch_results(posted: &[&SignalProcessingAudit], outcomes: &[Outcome], stored: &HashMap<String, Value>) -> Vec<BatchResult> {
    posted
        .iter()
        .zip(outcomes)
        .map(|(rec, outcome)| match outcome {
            Outcome::Created => BatchResult::Created,
            Outcome::Exists if is_identical(rec, stored.get(&rec.id)) => BatchResult::Exists,
            Outcome::Exists => BatchResult::Conflict,
        })
        .collect()
}

/// A stored record with its amendments (if any) under `amendments`, oldest first.
pub fn with_amendments(mut record: Value, amendments: Option<&Vec<StoredAmendment>>) -> Value {
    if let (Some(list), Some(obj)) = (amendments.filter(|l| !l.is_empty()), record.as_object_mut()) {
        obj.insert(
            "amendments".into(),
            Value::Array(list.iter().map(StoredAmendment::to_json).collect()),
        );
    }
    record
}

fn conflict_problem(id: &str, identical: bool, existing: Value) -> Problem {
    let detail = if identical {
        format!("audit record {id:?} is already stored with the same content")
    } else {
        metrics::CONFLICTS.inc();
        tracing::warn!(id, "a different record was posted under a stored id; not stored (amend it instead)");
        format!(
            "audit record {id:?} is already stored with different content; records are immutable: \
             POST the new record to {BASE}/{id}/amendments to store it beside the original"
        )
    };
    Problem::conflict(detail, identical, existing)
}

/// Whether an id whose record is not served is *blocked*: its id row has no log entry either,
/// so Data Storage never stored a record under it (a retention-dropped record keeps its entry).
pub fn is_blocked(record_served: bool, log_index: Option<u64>) -> bool {
    !record_served && log_index.is_none()
}

/// Counts and logs, by name, a record refused because its id is blocked.
fn alarm_blocked(rec: &SignalProcessingAudit) {
    metrics::BLOCKED_IDS.inc();
    tracing::error!(
        id = %rec.id,
        cr = %cr_name(rec),
        "audit record id is held by an id row with no stored record and no log entry (written outside Data Storage); the record cannot be stored"
    );
}

/// The answer for a record whose id is blocked: a conflict no retry resolves, named loudly.
fn blocked_problem(rec: &SignalProcessingAudit) -> Problem {
    alarm_blocked(rec);
    let cr = cr_name(rec);
    Problem::conflict(
        format!(
            "audit record {:?} ({cr}) cannot be stored: its id is held by an id row with no stored record and no \
             transparency-log entry, written outside Data Storage; an operator must investigate (runbook: \
             AuditGuardDataStorageBlockedId)",
            rec.id
        ),
        false,
        Value::Null,
    )
    .with("blocked", Value::Bool(true))
}

fn cr_name(rec: &SignalProcessingAudit) -> String {
    format!(
        "SignalProcessing {}/{} uid {}",
        rec.namespace.as_deref().unwrap_or("?"),
        rec.name.as_deref().unwrap_or("?"),
        rec.uid.as_deref().unwrap_or("?")
    )
}

/// Of `ids` (taken, their records not served), those with no log entry either.
async fn blocked(store: &dyn Store, ids: impl IntoIterator<Item = &String>) -> Result<Vec<String>, Problem> {
    let mut out = vec![];
    for id in ids {
        let index = timed("log_index", store.log_index(Kind::Record, id.clone()))
            .await
            .map_err(|e| db_problem("log_index", e))?;
        if is_blocked(false, index) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

async fn originals(store: &dyn Store, ids: &[String], lane: Lane) -> Result<HashMap<String, Value>, Problem> {
    timed("records", store.records(ids, lane))
        .await
        .map_err(|e| db_problem("records", e))
}

pub async fn create(State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let bytes = read_json_body(&headers, body, &state.limits).await?;
    let prepared = decode_single(&bytes)?;
    check_times(std::slice::from_ref(&prepared), &state.limits.window, Utc::now(), false)?;
    let outcome = timed("insert", state.store.insert(std::slice::from_ref(&prepared)))
        .await
        .map_err(|e| db_problem("insert", e))?;
    let id = &prepared.rec.id;
    if outcome.first() == Some(&Outcome::Created) {
        metrics::stored(&prepared.rec);
        let mut resp = json_response(StatusCode::CREATED, prepared.record_text);
        if let Ok(v) = HeaderValue::from_str(&format!("{BASE}/{id}")) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(resp);
    }
    let stored = originals(state.store.as_ref(), std::slice::from_ref(id), Lane::Write).await?;
    let existing = stored.get(id).cloned();
    if existing.is_none() && !blocked(state.store.as_ref(), [id]).await?.is_empty() {
        return Err(blocked_problem(&prepared.rec));
    }
    let identical = is_identical(&prepared.rec, existing.as_ref());
    Err(conflict_problem(id, identical, existing.unwrap_or(Value::Null)))
}

pub async fn create_batch(State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let bytes = read_json_body(&headers, body, &state.limits).await?;
    let prepared = decode_batch(&bytes, state.limits.max_batch)?;
    check_times(&prepared, &state.limits.window, Utc::now(), true)?;
    let outcomes = timed("insert_batch", state.store.insert(&prepared))
        .await
        .map_err(|e| db_problem("insert_batch", e))?;
    let taken: Vec<String> = prepared
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == Outcome::Exists)
        .map(|(p, _)| p.rec.id.clone())
        .collect();
    let stored = if taken.is_empty() {
        HashMap::new()
    } else {
        originals(state.store.as_ref(), &taken, Lane::Write).await?
    };
    let posted: Vec<&SignalProcessingAudit> = prepared.iter().map(|p| &p.rec).collect();
    let results = batch_results(&posted, &outcomes, &stored);
    for (p, _) in prepared.iter().zip(&results).filter(|(_, r)| **r == BatchResult::Created) {
        metrics::stored(&p.rec);
    }
    let unserved = prepared
        .iter()
        .zip(&results)
        .filter(|(p, r)| **r == BatchResult::Conflict && !stored.contains_key(&p.rec.id))
        .map(|(p, _)| p.rec.id.clone())
        .collect::<Vec<_>>();
    let blocked_ids = blocked(state.store.as_ref(), &unserved).await?;
    for p in prepared.iter().filter(|p| blocked_ids.contains(&p.rec.id)) {
        alarm_blocked(&p.rec);
    }
    let conflicts = results.iter().filter(|r| **r == BatchResult::Conflict).count() - blocked_ids.len();
    if conflicts > 0 {
        metrics::CONFLICTS.inc_by(conflicts as u64);
        tracing::warn!(
            conflicts,
            "batch: different records posted under stored ids; not stored (amend them instead)"
        );
    }
    let body: Vec<_> = prepared
        .iter()
        .zip(&results)
        .map(|(p, r)| BatchItem {
            id: p.rec.id.clone(),
            result: *r,
            blocked: blocked_ids.contains(&p.rec.id),
        })
        .collect();
    Ok((StatusCode::OK, Json(body)).into_response())
}

pub async fn get_one(State(state): State<Arc<AppState>>, Path(id): Path<String>, uri: Uri) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let ids = [id];
    // A lookup by id is the deletion path's: the write lane's pool (see `limits`).
    let mut stored = originals(state.store.as_ref(), &ids, Lane::Write).await?;
    let [id] = ids;
    let Some(record) = stored.remove(&id) else {
        return Err(Problem::new(StatusCode::NOT_FOUND, format!("no audit record {id:?}")));
    };
    let amendments = timed("amendments", state.store.amendments(std::slice::from_ref(&id), Lane::Write))
        .await
        .map_err(|e| db_problem("amendments", e))?;
    Ok(Json(with_amendments(record, amendments.get(&id))).into_response())
}

const LIST_PARAMS: &[&str] = &[
    "signal_fingerprint",
    "remediation_id",
    "environment",
    "priority",
    "status",
    "since",
    "until",
    "limit",
    "cursor",
];

pub fn list_query(p: &query::Params) -> Result<ListQuery, Problem> {
    Ok(ListQuery {
        signal_fingerprint: p.text("signal_fingerprint"),
        remediation_id: p.text("remediation_id"),
        environment: p.text("environment"),
        priority: p.text("priority"),
        status: p.text("status"),
        page: Page {
            since: p.time("since")?,
            until: p.time("until")?,
            limit: p.limit()?,
            after: p.cursor()?,
        },
    })
}

/// A page of listed items: `{"items": [...], "next_cursor": ...}` (null on the last page).
pub fn page_body(items: Vec<Value>, last: Option<(chrono::DateTime<Utc>, &str)>, limit: u32) -> Value {
    let next_cursor = (items.len() == limit as usize)
        .then(|| last.map(|(at, id)| encode_cursor(at, id)))
        .flatten();
    json!({ "items": items, "next_cursor": next_cursor })
}

pub async fn list(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let q = list_query(&query::params(&uri, LIST_PARAMS)?)?;
    let limit = q.page.limit;
    let rows = timed("list", state.store.list(q)).await.map_err(|e| db_problem("list", e))?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let amendments = if ids.is_empty() {
        HashMap::new()
    } else {
        timed("amendments", state.store.amendments(&ids, Lane::Read))
            .await
            .map_err(|e| db_problem("amendments", e))?
    };
    let last = rows.last().map(|r| (r.at, r.id.clone()));
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let a = amendments.get(&r.id);
            with_amendments(r.json, a)
        })
        .collect();
    Ok(Json(page_body(items, last.as_ref().map(|(at, id)| (*at, id.as_str())), limit)).into_response())
}

/// What to do with a posted amendment, given the original and the amendments already stored.
#[derive(Debug, Clone, PartialEq)]
pub enum AmendDecision {
    /// The same content is already stored (as the original or an amendment): 409 identical.
    AlreadyStored(Value),
    Store,
}

pub fn decide_amendment(posted: &SignalProcessingAudit, original: &Value, amendments: &[StoredAmendment]) -> AmendDecision {
    if is_identical(posted, Some(original)) {
        return AmendDecision::AlreadyStored(original.clone());
    }
    match amendments.iter().find(|a| is_identical(posted, Some(&a.record))) {
        Some(a) => AmendDecision::AlreadyStored(a.to_json()),
        None => AmendDecision::Store,
    }
}

fn already_amended(id: &str, existing: Value) -> Problem {
    Problem::conflict(format!("this content is already stored for audit record {id:?}"), true, existing)
}

pub async fn amend(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let bytes = read_json_body(&headers, body, &state.limits).await?;
    let prepared = decode_single(&bytes)?;
    if prepared.rec.id != id {
        return Err(Problem::field(
            "id",
            format!("id: the amendment's id {:?} is not the record's id {id:?}", prepared.rec.id),
        ));
    }
    check_times(std::slice::from_ref(&prepared), &state.limits.window, Utc::now(), false)?;
    let ids = [id];
    let stored = originals(state.store.as_ref(), &ids, Lane::Write).await?;
    let [id] = ids;
    let Some(original) = stored.get(&id) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("no audit record {id:?} to amend; POST it to {BASE} instead"),
        ));
    };
    let amendments = timed("amendments", state.store.amendments(std::slice::from_ref(&id), Lane::Write))
        .await
        .map_err(|e| db_problem("amendments", e))?;
    let existing = amendments.get(&id).map(Vec::as_slice).unwrap_or_default();
    if let AmendDecision::AlreadyStored(v) = decide_amendment(&prepared.rec, original, existing) {
        return Err(already_amended(&id, v));
    }
    let new = NewAmendment {
        amendment_id: uuid::Uuid::new_v4().to_string(),
        amended_at: super::store::stored_now(),
        digest: prepared.rec.content_digest(),
        prepared,
    };
    match timed("insert_amendment", state.store.insert_amendment(&new))
        .await
        .map_err(|e| db_problem("insert_amendment", e))?
    {
        AmendmentOutcome::Created(a) => {
            metrics::AMENDMENTS.inc();
            tracing::warn!(id = %id, amendment_id = %a.amendment_id, "amendment stored beside a different original");
            let body = json!({ "record_id": a.record_id, "amendment_id": a.amendment_id, "stored_at": a.amended_at, "record": a.record });
            let mut resp = (StatusCode::CREATED, Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{BASE}/{id}")) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        AmendmentOutcome::Duplicate(a) => Err(already_amended(&id, a.to_json())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: &str) -> SignalProcessingAudit {
        serde_json::from_value(
            json!({"id": id, "remediation_id": "r", "signal_fingerprint": "f", "processing_phases": [],
               "completed_at": "2025-01-01T00:00:00Z", "status": status, "trigger": "completion"}),
        )
        .unwrap()
    }

    fn stored(r: &SignalProcessingAudit) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn batch_tells_created_exists_and_conflict_apart() {
        let (a, b, c, d) = (
            rec("a", "completed"),
            rec("b", "completed"),
            rec("c", "completed"),
            rec("d", "completed"),
        );
        let mut b_deleted = b.clone();
        b_deleted.trigger = Some(crate::audit::Trigger::Deletion);
        b_deleted.deleted_at = Some("2025-01-01T00:10:00Z".parse().unwrap());
        let mut db = HashMap::new();
        db.insert("b".to_string(), stored(&b));
        db.insert("c".to_string(), stored(&rec("c", "failed")));
        let posted = [&a, &b_deleted, &c, &d];
        let outcomes = [Outcome::Created, Outcome::Exists, Outcome::Exists, Outcome::Exists];
        assert_eq!(
            batch_results(&posted, &outcomes, &db),
            [
                BatchResult::Created,
                BatchResult::Exists,
                BatchResult::Conflict,
                BatchResult::Conflict
            ],
            "d: taken but its original is gone, so it cannot be confirmed as the same"
        );
        assert_eq!(serde_json::to_value(BatchResult::Conflict).unwrap(), json!("conflict"));
    }

    #[test]
    fn amendments_are_attached_in_order_only_when_present() {
        let record = json!({"id": "a"});
        assert_eq!(with_amendments(record.clone(), None), record);
        assert_eq!(with_amendments(record.clone(), Some(&vec![])), record);
        let am = |n: &str| StoredAmendment {
            amendment_id: n.into(),
            record_id: "a".into(),
            amended_at: "2025-01-01T00:00:00Z".parse().unwrap(),
            record: json!({"id": "a", "status": "failed"}),
        };
        let v = with_amendments(record, Some(&vec![am("1"), am("2")]));
        assert_eq!(v["amendments"][0]["amendment_id"], "1");
        assert_eq!(v["amendments"][1]["amendment_id"], "2");
        assert_eq!(v["amendments"][1]["status"], "failed");
    }

    #[test]
    fn an_amendment_is_stored_once_and_never_when_it_repeats_the_original() {
        let original = rec("a", "completed");
        let different = rec("a", "failed");
        assert_eq!(
            decide_amendment(&original, &stored(&original), &[]),
            AmendDecision::AlreadyStored(stored(&original))
        );
        assert_eq!(decide_amendment(&different, &stored(&original), &[]), AmendDecision::Store);
        let a = StoredAmendment {
            amendment_id: "1".into(),
            record_id: "a".into(),
            amended_at: "2025-01-01T00:00:00Z".parse().unwrap(),
            record: stored(&different),
        };
        assert_eq!(
            decide_amendment(&different, &stored(&original), std::slice::from_ref(&a)),
            AmendDecision::AlreadyStored(a.to_json())
        );
        assert_eq!(
            decide_amendment(&rec("a", "incomplete"), &stored(&original), &[a]),
            AmendDecision::Store
        );
    }

    #[test]
    fn pages_have_a_cursor_only_when_full() {
        let t = "2025-01-01T00:00:00Z".parse().unwrap();
        assert!(page_body(vec![json!(1)], Some((t, "a")), 2)["next_cursor"].is_null());
        assert_eq!(page_body(vec![json!(1)], Some((t, "a")), 1)["next_cursor"], encode_cursor(t, "a"));
    }
}
