//! The Data Storage client in `events` mode against a small real HTTP server that
//! implements the relevant part of Kubernaut's unified audit API (OpenAPI v1):
//! POST /api/v1/audit/events, POST /api/v1/audit/events/batch, GET /api/v1/audit/events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_guard::audit::SignalProcessingAudit;
use audit_guard::client::{DataStorageClient, Stored};
use audit_guard::config::{ApiMode, DataStorageClientArgs};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the fake answers a write.
#[derive(Clone, Copy, PartialEq)]
enum WriteMode {
    Store,
    /// Database down: the event goes to the dead-letter queue, 202.
    QueueOnly,
    /// Stores the event but the answer is lost (a 500 stands in for a dropped connection).
    StoreAndLoseAnswer,
}

struct Fake {
    mode: Mutex<WriteMode>,
    events: Mutex<Vec<Value>>,
    queued: Mutex<Vec<Value>>,
    posts: Mutex<usize>,
}

fn write(fake: &Fake, batch: Vec<Value>) -> (StatusCode, Json<Value>) {
    *fake.posts.lock().unwrap() += 1;
    let mode = *fake.mode.lock().unwrap();
    for ev in &batch {
        for field in [
            "event_type",
            "event_category",
            "correlation_id",
            "event_data",
            "event_timestamp",
            "event_action",
            "event_outcome",
            "version",
        ] {
            if ev.get(field).is_none() {
                return (StatusCode::BAD_REQUEST, Json(json!({ "title": format!("missing {field}") })));
            }
        }
    }
    match mode {
        WriteMode::QueueOnly => {
            fake.queued.lock().unwrap().extend(batch);
            (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "queued", "message": "database unavailable, queued" })),
            )
        }
        WriteMode::Store | WriteMode::StoreAndLoseAnswer => {
            let ids: Vec<String> = batch.iter().map(|_| uuid::Uuid::new_v4().to_string()).collect();
            let mut events = fake.events.lock().unwrap();
            for (mut ev, id) in batch.into_iter().zip(&ids) {
                ev["event_id"] = json!(id);
                events.push(ev);
            }
            if mode == WriteMode::StoreAndLoseAnswer {
                return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "title": "connection reset" })));
            }
            (StatusCode::CREATED, Json(json!({ "event_ids": ids, "message": "created" })))
        }
    }
}

async fn post_one(State(f): State<Arc<Fake>>, Json(ev): Json<Value>) -> (StatusCode, Json<Value>) {
    write(&f, vec![ev])
}

async fn post_batch(State(f): State<Arc<Fake>>, Json(evs): Json<Vec<Value>>) -> (StatusCode, Json<Value>) {
    write(&f, evs)
}

async fn query(State(f): State<Arc<Fake>>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
    let offset: usize = q.get("offset").and_then(|l| l.parse().ok()).unwrap_or(0);
    let matching: Vec<Value> = f
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|ev| {
            ["event_type", "correlation_id"]
                .iter()
                .all(|k| q.get(*k).is_none_or(|v| ev[*k] == json!(v)))
        })
        .cloned()
        .collect();
    let page: Vec<Value> = matching.iter().skip(offset).take(limit).cloned().collect();
    Json(
        json!({ "data": page, "pagination": { "limit": limit, "offset": offset, "total": matching.len(), "has_more": offset + page.len() < matching.len() } }),
    )
}

async fn start(mode: WriteMode) -> (Arc<Fake>, DataStorageClient) {
    let fake = Arc::new(Fake {
        mode: Mutex::new(mode),
        events: Mutex::new(Vec::new()),
        queued: Mutex::new(Vec::new()),
        posts: Mutex::new(0),
    });
    let app = Router::new()
        .route("/api/v1/audit/events", post(post_one).get(query))
        .route("/api/v1/audit/events/batch", post(post_batch))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = DataStorageClient::new(&DataStorageClientArgs {
        url: format!("http://{addr}"),
        ca_file: None,
        token_file: None,
        timeout: Duration::from_secs(5),
        api_mode: ApiMode::Events,
    })
    .unwrap();
    (fake, client)
}

fn record(uid: &str, rr: &str) -> SignalProcessingAudit {
    serde_json::from_value(json!({
        "id": uid, "remediation_id": rr, "signal_fingerprint": "fp-1",
        "processing_phases": [{ "phase": "enriching", "start_time": "2025-11-27T10:00:00Z", "end_time": "2025-11-27T10:00:01Z", "duration": 1_000_000_000i64 }],
        "environment": "production", "priority": "P0",
        "completed_at": "2025-11-27T10:00:05Z", "status": "completed", "namespace": "prod", "name": "sp-1", "uid": uid
    }))
    .unwrap()
}

#[tokio::test]
async fn accepted_202_is_not_taken_as_stored() {
    let (fake, client) = start(WriteMode::QueueOnly).await;
    let rec = record("uid-queued", "rr-1");
    let err = client.store_one(&rec).await.unwrap_err();
    assert!(!err.permanent, "{err:?}");
    assert_eq!(fake.queued.lock().unwrap().len(), 1);
    assert!(fake.events.lock().unwrap().is_empty());
    assert!(client.ready().await);
}

#[tokio::test]
async fn retry_after_a_lost_answer_does_not_write_a_second_event() {
    let (fake, client) = start(WriteMode::StoreAndLoseAnswer).await;
    let rec = record("uid-lost", "rr-2");
    assert!(client.store_one(&rec).await.is_err_and(|e| !e.permanent));
    *fake.mode.lock().unwrap() = WriteMode::Store;
    assert_eq!(client.store_one(&rec).await.unwrap(), Stored::AlreadyStored);
    assert_eq!(client.store_one(&rec).await.unwrap(), Stored::AlreadyStored);
    assert!(client.record_held("uid-lost", "rr-2").await.unwrap());
    assert!(!client.record_held("uid-other", "rr-2").await.unwrap());
    let events = fake.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(*fake.posts.lock().unwrap(), 1, "the retries found the event and did not POST again");
    let ev = &events[0];
    assert_eq!(ev["event_type"], "signalprocessing.signal.processed");
    assert_eq!(ev["event_category"], "signalprocessing");
    assert_eq!(ev["correlation_id"], "rr-2");
    assert_eq!(ev["resource_id"], "uid-lost");
    assert_eq!(ev["event_data"]["audit_record"]["environment"], "production");
}

#[tokio::test]
async fn batch_writes_only_the_missing_events() {
    let (fake, client) = start(WriteMode::Store).await;
    assert_eq!(client.store_one(&record("uid-a", "rr-3")).await.unwrap(), Stored::Created);
    let batch = [record("uid-a", "rr-3"), record("uid-b", "rr-3"), record("uid-c", "rr-4")];
    for _ in 0..2 {
        let outcome = client.store_batch(&batch).await.unwrap();
        assert_eq!(outcome.stored.len(), 3, "{outcome:?}");
        assert!(outcome.conflicts.is_empty() && outcome.unconfirmed.is_empty());
    }
    let mut ids: Vec<String> = fake
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["resource_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["uid-a", "uid-b", "uid-c"]);
    assert_eq!(
        *fake.posts.lock().unwrap(),
        2,
        "one single POST, one batch POST, nothing for the repeat"
    );
}
