//! The Data Storage API, one test per behaviour, each run on every backend: embedded SQLite,
//! PostgreSQL as deployed (migrated by the owner, served by the runtime role over TLS) and
//! PostgreSQL in single-URL mode. Every test starts its own `audit-guard datastorage` on a
//! fresh SQLite file or a fresh database, so they run in parallel, and the metrics one reads
//! are that test's alone.

#[macro_use]
mod support;

use serde_json::{json, Value};
use support::datastorage::*;

/// PostgreSQL as deployed also serves TLS, with a certificate from `audit-guard certs`.
async fn start(backend: Backend) -> Running {
    Running::start(backend, |o| match backend {
        Backend::Postgres => o.tls(Tls::Issued),
        _ => o,
    })
    .await
}

behaviours_on!(
    start,
    [sqlite = Sqlite, postgres = Postgres, postgres_single_role = PostgresSingleRole],
    a_post_answers_201_with_its_location_and_the_record,
    a_second_post_of_an_id_answers_409_saying_whether_the_content_is_identical,
    go_duration_strings_come_back_as_integer_nanoseconds,
    a_batch_answers_per_record_in_order_and_stores_no_conflicting_record,
    an_unknown_id_answers_404_problem,
    the_list_is_newest_first,
    the_list_pages_with_an_opaque_cursor,
    the_list_filters_by_fingerprint_remediation_environment_priority_status_and_since,
    a_different_record_under_a_stored_id_is_kept_beside_it_as_an_amendment,
    a_record_keeps_its_anomalies,
    break_glass_events_are_append_only_idempotent_and_listed_newest_first,
    a_break_glass_event_keeps_the_reviews_user_info_extra,
    a_break_glass_claim_becomes_an_event_only_when_it_is_the_one_claim_on_a_removal,
    classification_stats_average_confidence_per_environment,
    priority_stats_count_and_average_score_per_priority,
    slow_phase_stats_list_the_phases_over_the_minimum_duration,
    concurrent_posts_of_one_new_id_store_exactly_one,
    health_and_metrics_need_no_token,
    metrics_count_requests_rows_conflicts_amendments_and_break_glass_events,
);

// The records the behaviours use; each call reads the clock, so a test makes each once.

fn rec_a() -> Value {
    record("rec-a", "fp-1", "production", "P0", &ago(300), json!(1_500_000_000i64))
}

fn rec_b() -> Value {
    record("rec-b", "fp-1", "staging", "P2", &ago(200), json!("2.5s"))
}

fn rec_c() -> Value {
    record("rec-c", "fp-2", "production", "P0", &ago(100), json!("3m"))
}

fn rec_d() -> Value {
    record("rec-d", "fp-2", "development", "P3", &ago(50), json!(null))
}

/// A record with anomalies (its confidence and a duration the schema cannot hold).
fn rec_odd() -> Value {
    let mut odd = record("rec-odd", "fp-odd", "staging", "P2", &ago(30), json!(1));
    odd["confidence"] = json!(null);
    odd["anomalies"] = json!([{"field": "confidence", "value": 5}, {"field": "processing_phases[0].duration", "value": -3}]);
    odd
}

/// `v` with `key` set to `value`.
fn with(v: &Value, key: &str, value: Value) -> Value {
    let mut v = v.clone();
    v[key] = value;
    v
}

/// The same record as the deletion path sends it: other provenance, same content.
fn at_deletion(v: &Value) -> Value {
    with(&with(v, "trigger", json!("deletion")), "deleted_at", json!(ago(1)))
}

async fn created(svc: &DataStorage, path: &str, body: &Value) -> Value {
    let (s, _, answer) = svc.post_json(path, body).await;
    assert_eq!(s, 201, "{path}: {answer}");
    answer
}

/// rec-a and rec-b one by one, rec-c and rec-d in a batch.
async fn store_four(svc: &DataStorage) -> [Value; 4] {
    let (a, b, c, d) = (rec_a(), rec_b(), rec_c(), rec_d());
    created(svc, BASE, &a).await;
    created(svc, BASE, &b).await;
    let (s, _, res) = svc.post_json(&format!("{BASE}/batch"), &json!([c, d])).await;
    assert!(s == 200 || s == 201, "{res}");
    [a, b, c, d]
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

async fn a_post_answers_201_with_its_location_and_the_record(svc: &DataStorage) {
    let a = rec_a();
    let (s, h, body) = svc.post_json(BASE, &a).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(h["location"], format!("{BASE}/rec-a").as_str());
    assert_eq!(body, a);
}

/// 409 problem saying whether the stored original has the same content (provenance keys
/// aside), with the original attached; the record is unchanged.
async fn a_second_post_of_an_id_answers_409_saying_whether_the_content_is_identical(svc: &DataStorage) {
    let a = rec_a();
    created(svc, BASE, &a).await;
    let changed = with(&a, "status", json!("failed"));
    for (again, identical) in [(&a, true), (&at_deletion(&a), true), (&changed, false)] {
        let (s, h, p) = svc.post_json(BASE, again).await;
        assert_eq!(s, 409, "{p}");
        assert_eq!(h["content-type"], "application/problem+json");
        assert_eq!(p["status"], 409);
        assert_eq!(p["identical"], identical, "{p}");
        assert_eq!(p["existing"], a, "{p}");
    }
    let (s, got) = svc.get(&format!("{BASE}/rec-a")).await;
    assert_eq!(s, 200);
    assert_eq!(got, a, "GET returns the keys and values posted");
}

/// The design document's wire form.
async fn go_duration_strings_come_back_as_integer_nanoseconds(svc: &DataStorage) {
    let (s, _, body) = svc.post_json(BASE, &rec_b()).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["processing_phases"][0]["duration"], json!(2_500_000_000i64));
}

/// An id already holding the same content "exists", one holding different content is a
/// "conflict" and is not stored.
async fn a_batch_answers_per_record_in_order_and_stores_no_conflicting_record(svc: &DataStorage) {
    let (a, b) = (rec_a(), rec_b());
    created(svc, BASE, &a).await;
    created(svc, BASE, &b).await;
    let batch = json!([rec_c(), at_deletion(&a), rec_d(), with(&b, "confidence", json!(0.1))]);
    let (s, _, res) = svc.post_json(&format!("{BASE}/batch"), &batch).await;
    assert!(s == 200 || s == 201, "{res}");
    assert_eq!(
        res,
        json!([{"id": "rec-c", "result": "created"}, {"id": "rec-a", "result": "exists"}, {"id": "rec-d", "result": "created"},
               {"id": "rec-b", "result": "conflict"}])
    );
    let (_, got) = svc.get(&format!("{BASE}/rec-b")).await;
    assert_eq!(got["confidence"], b["confidence"], "the conflicting record was not stored");
}

async fn an_unknown_id_answers_404_problem(svc: &DataStorage) {
    let (s, p) = svc.get(&format!("{BASE}/nope")).await;
    assert_eq!((s, p["status"].clone()), (404, json!(404)));
}

async fn the_list_is_newest_first(svc: &DataStorage) {
    store_four(svc).await;
    let (s, page) = svc.get(&format!("{BASE}?limit=10")).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&page), ["rec-d", "rec-c", "rec-b", "rec-a"]);
    assert!(page["next_cursor"].is_null());
}

async fn the_list_pages_with_an_opaque_cursor(svc: &DataStorage) {
    store_four(svc).await;
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{BASE}?limit=3&cursor={c}"),
            None => format!("{BASE}?limit=3"),
        };
        let (s, page) = svc.get(&q).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["rec-d", "rec-c", "rec-b", "rec-a"]);
}

async fn the_list_filters_by_fingerprint_remediation_environment_priority_status_and_since(svc: &DataStorage) {
    store_four(svc).await;
    let filtered = |q: &'static str| async move {
        let (s, page) = svc.get(&format!("{BASE}?{q}")).await;
        assert_eq!(s, 200, "{page}");
        ids(&page)
    };
    assert_eq!(filtered("signal_fingerprint=fp-1").await, ["rec-b", "rec-a"]);
    assert_eq!(filtered("remediation_id=rr-rec-c").await, ["rec-c"]);
    assert_eq!(filtered("environment=production&priority=P0").await, ["rec-c", "rec-a"]);
    assert_eq!(filtered("status=failed").await, Vec::<String>::new());
    let since = ago(150).replace('+', "%2B");
    let (_, page) = svc.get(&format!("{BASE}?since={since}")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "since keeps rec-c and rec-d");
}

/// Appended beside the original, once; GET shows the original as stored and its amendments
/// in order.
async fn a_different_record_under_a_stored_id_is_kept_beside_it_as_an_amendment(svc: &DataStorage) {
    let [a, ..] = store_four(svc).await;
    let changed = with(&a, "status", json!("failed"));
    let amendments = format!("{BASE}/rec-a/amendments");
    let (s, h, am) = svc.post_json(&amendments, &changed).await;
    assert_eq!(s, 201, "{am}");
    assert_eq!(h["location"], format!("{BASE}/rec-a").as_str());
    assert_eq!(am["record_id"], "rec-a");
    assert_eq!(am["record"], changed);
    let amendment_id = am["amendment_id"].as_str().unwrap().to_string();
    assert!(am["stored_at"].is_string(), "{am}");
    // A retry (even with other provenance) and the original's own content: 409 identical, nothing added.
    let changed_retry = with(&changed, "trigger", json!("deletion"));
    for (again, existing_id) in [(&changed_retry, Some(amendment_id.as_str())), (&at_deletion(&a), None)] {
        let (s, _, p) = svc.post_json(&amendments, again).await;
        assert_eq!(s, 409, "{p}");
        assert_eq!(p["identical"], true, "{p}");
        assert_eq!(p["existing"]["amendment_id"].as_str(), existing_id, "{p}");
    }
    let (s, _, second) = svc.post_json(&amendments, &with(&a, "status", json!("incomplete"))).await;
    assert_eq!(s, 201, "{second}");
    // The id in the path and in the body must agree; an unknown original cannot be amended.
    let (s, _, p) = svc.post_json(&format!("{BASE}/rec-c/amendments"), &changed).await;
    assert_eq!((s, p["field"].clone()), (400, json!("id")), "{p}");
    let stray = with(&changed, "id", json!("nobody"));
    let (s, _, p) = svc.post_json(&format!("{BASE}/nobody/amendments"), &stray).await;
    assert_eq!(s, 404, "{p}");
    let (s, got) = svc.get(&format!("{BASE}/rec-a")).await;
    assert_eq!(s, 200);
    let listed = got["amendments"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{got}");
    assert_eq!(listed[0]["amendment_id"], amendment_id.as_str());
    assert_eq!(listed[0]["status"], "failed");
    assert_eq!(listed[1]["status"], "incomplete");
    let mut original = got.clone();
    original.as_object_mut().unwrap().remove("amendments");
    assert_eq!(original, a);
    let (_, page) = svc.get(&format!("{BASE}?remediation_id=rr-rec-a")).await;
    assert_eq!(page["items"][0]["amendments"].as_array().unwrap().len(), 2, "{page}");
    let (_, page) = svc.get(&format!("{BASE}?remediation_id=rr-rec-c")).await;
    assert!(page["items"][0].get("amendments").is_none(), "{page}");
}

async fn a_record_keeps_its_anomalies(svc: &DataStorage) {
    let odd = rec_odd();
    let (s, _, body) = svc.post_json(BASE, &odd).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(svc.get(&format!("{BASE}/rec-odd")).await.1["anomalies"], odd["anomalies"]);
}

async fn break_glass_events_are_append_only_idempotent_and_listed_newest_first(svc: &DataStorage) {
    let e1 = break_glass_event("review-1", "bob", "rec-a", &ago(20));
    let e2 = break_glass_event("review-2", "carol", "rec-c", &ago(10));
    for e in [&e1, &e2] {
        let (s, h, body) = svc.post_json(BREAK_GLASS, e).await;
        assert_eq!(s, 201, "{body}");
        assert_eq!(body, *e);
        assert!(h["location"].to_str().unwrap().ends_with(e["id"].as_str().unwrap()));
    }
    let forged = with(&e1, "user", json!("mallory"));
    for (again, identical) in [(&e1, true), (&forged, false)] {
        let (s, _, p) = svc.post_json(BREAK_GLASS, again).await;
        assert_eq!((s, p["identical"].clone()), (409, json!(identical)), "{p}");
        assert_eq!(p["existing"], e1);
    }
    let (s, page) = svc.get(&format!("{BREAK_GLASS}?limit=1")).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"], json!([e2]));
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, page) = svc.get(&format!("{BREAK_GLASS}?limit=1&cursor={cursor}")).await;
    assert_eq!(page["items"], json!([e1]));
    assert_eq!(svc.get(&format!("{BREAK_GLASS}/review-1")).await, (200, e1.clone()));
    assert_eq!(svc.get(&format!("{BREAK_GLASS}/nope")).await.0, 404);
}

/// A claim (a break-glass review no peer certificate vouches for) is stored apart and listed
/// with its status; a confirmation turns the one claim on a removed CR into a chained event
/// naming its user (same id, saying what confirmed it), never an update of the claim; several
/// claims on one CR confirm none; no claim: 404. The chain verifies intact afterwards.
async fn a_break_glass_claim_becomes_an_event_only_when_it_is_the_one_claim_on_a_removal(svc: &DataStorage) {
    const CLAIMS: &str = "/api/v1/audit/break-glass-claims";
    let confirm = |uid: &str| json!({"uid": uid, "observed_at": ago(1)});
    let c1 = break_glass_event("review-c1", "bob", "cr-1", &ago(20));
    let (s, _, body) = svc.post_json(CLAIMS, &c1).await;
    assert_eq!((s, &body), (201, &c1), "{body}");
    let (s, _, p) = svc.post_json(CLAIMS, &c1).await;
    assert_eq!((s, &p["identical"]), (409, &json!(true)), "{p}");
    let claimed_confirmed = with(
        &break_glass_event("review-c0", "bob", "cr-0", &ago(20)),
        "confirmed",
        json!({"claim": "review-c0", "by": "me", "at": ago(1)}),
    );
    let (s, _, p) = svc.post_json(CLAIMS, &claimed_confirmed).await;
    assert_eq!((s, &p["field"]), (400, &json!("confirmed")), "{p}");
    let status_of = |page: &Value, id: &str| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] == id)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (s, page) = svc.get(CLAIMS).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(status_of(&page, "review-c1"), ["unconfirmed"]);
    assert_eq!(svc.get(&format!("{BREAK_GLASS}/review-c1")).await.0, 404, "a claim is no event");

    let (s, _, p) = svc.post_json(&format!("{CLAIMS}/confirmations"), &confirm("cr-nobody")).await;
    assert_eq!(s, 404, "{p}");
    let (s, _, event) = svc.post_json(&format!("{CLAIMS}/confirmations"), &confirm("cr-1")).await;
    assert_eq!(s, 201, "{event}");
    assert_eq!(
        (
            &event["id"],
            &event["user"],
            &event["uid"],
            &event["confirmed"]["claim"],
            &event["confirmed"]["by"]
        ),
        (
            &json!("review-c1"),
            &json!("bob"),
            &json!("cr-1"),
            &json!("review-c1"),
            &json!("controller-watch")
        )
    );
    assert_eq!(svc.get(&format!("{BREAK_GLASS}/review-c1")).await, (200, event.clone()));
    let (s, _, again) = svc.post_json(&format!("{CLAIMS}/confirmations"), &confirm("cr-1")).await;
    assert_eq!((s, &again), (200, &event), "a retried confirmation");
    let (_, page) = svc.get(CLAIMS).await;
    assert_eq!(status_of(&page, "review-c1"), ["confirmed"]);

    for (id, user) in [("review-c2", "mallory"), ("review-c3", "bob")] {
        let (s, _, body) = svc.post_json(CLAIMS, &break_glass_event(id, user, "cr-2", &ago(15))).await;
        assert_eq!(s, 201, "{body}");
    }
    let (s, _, p) = svc.post_json(&format!("{CLAIMS}/confirmations"), &confirm("cr-2")).await;
    assert_eq!((s, &p["existing"]["ambiguous"]), (409, &json!(["review-c2", "review-c3"])), "{p}");
    let (_, page) = svc.get(CLAIMS).await;
    for id in ["review-c2", "review-c3"] {
        assert_eq!(status_of(&page, id), ["ambiguous"], "{page}");
        assert_eq!(svc.get(&format!("{BREAK_GLASS}/{id}")).await.0, 404);
    }
    let (s, report) = svc.get(&format!("{BASE}/verify")).await;
    assert_eq!((s, &report["result"]), (200, &json!("intact")), "{report}");
    assert_eq!(report["checked"]["break_glass_events"], 1, "{report}");
}

/// userInfo.extra is stored whole and exactly (the JSON column keeps the text; no column needed),
/// and is part of the event's content.
async fn a_break_glass_event_keeps_the_reviews_user_info_extra(svc: &DataStorage) {
    let plain = break_glass_event("review-x", "alice", "rec-a", &ago(20));
    let extra = json!({
        "authentication.kubernetes.io/credential-id": ["JTI=7f3c9a"],
        "authentication.kubernetes.io/pod-name": ["debug-pod"],
        "ticket": ["INC-1", "INC-2"]
    });
    let e = with(&plain, "extra", extra.clone());
    let (s, _, body) = svc.post_json(BREAK_GLASS, &e).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body, e);
    let (s, got) = svc.get(&format!("{BREAK_GLASS}/review-x")).await;
    assert_eq!((s, &got["extra"]), (200, &extra), "{got}");
    let (s, _, p) = svc.post_json(BREAK_GLASS, &plain).await;
    assert_eq!(
        (s, p["identical"].clone()),
        (409, json!(false)),
        "the same event without its extra is another: {p}"
    );
    let (s, _, p) = svc.post_json(BREAK_GLASS, &with(&plain, "extra", json!({"k": "not a list"}))).await;
    assert_eq!(s, 400, "{p}");
}

async fn classification_stats_average_confidence_per_environment(svc: &DataStorage) {
    store_four(svc).await;
    created(svc, BASE, &rec_odd()).await;
    let (s, stats) = svc.get(&format!("{BASE}/stats/classification")).await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(
        stats["items"],
        json!([
            {"environment": "development", "avg_confidence": 0.7, "total_signals": 1},
            {"environment": "production", "avg_confidence": 0.9, "total_signals": 2},
            {"environment": "staging", "avg_confidence": 0.7, "total_signals": 2},
        ])
    );
}

async fn priority_stats_count_and_average_score_per_priority(svc: &DataStorage) {
    store_four(svc).await;
    created(svc, BASE, &rec_odd()).await;
    let (s, stats) = svc.get(&format!("{BASE}/stats/priority")).await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(
        stats["items"],
        json!([
            {"priority": "P0", "count": 2, "avg_score": 100.0},
            {"priority": "P2", "count": 2, "avg_score": 50.0},
            {"priority": "P3", "count": 1, "avg_score": 50.0},
        ])
    );
}

async fn slow_phase_stats_list_the_phases_over_the_minimum_duration(svc: &DataStorage) {
    store_four(svc).await;
    created(svc, BASE, &rec_odd()).await;
    let (s, slow) = svc.get(&format!("{BASE}/stats/slow-phases?phase=enriching&min_duration=2s")).await;
    assert_eq!(s, 200, "{slow}");
    let slow_ids: Vec<_> = slow["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["duration"].clone()))
        .collect();
    assert_eq!(slow_ids, [(json!("rec-c"), json!("3m0s")), (json!("rec-b"), json!("2.5s"))]);
}

/// The rest are told it exists.
async fn concurrent_posts_of_one_new_id_store_exactly_one(svc: &DataStorage) {
    let racer = record("rec-race", "fp-3", "staging", "P2", &ago(400), json!(1));
    let answers = futures::future::join_all((0..8).map(|_| svc.post_json(BASE, &racer))).await;
    let mut codes: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    codes.sort();
    assert_eq!(codes, [201, 409, 409, 409, 409, 409, 409, 409]);
}

async fn health_and_metrics_need_no_token(svc: &DataStorage) {
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(svc.http.get(svc.endpoint(path)).send().await.unwrap().status(), 200);
    }
}

/// Four single POSTs stored (rec-a, rec-b, rec-odd, the one racer of eight that won), six rows
/// (and rec-c, rec-d from a batch), two conflicts (a changed rec-a alone and a changed rec-b in
/// the batch; the same content again and the racers that lost are none), two amendments, two
/// break-glass events.
async fn metrics_count_requests_rows_conflicts_amendments_and_break_glass_events(svc: &DataStorage) {
    let (a, b) = (rec_a(), rec_b());
    for r in [&a, &b, &rec_odd()] {
        created(svc, BASE, r).await;
    }
    let racer = record("rec-race", "fp-3", "staging", "P2", &ago(400), json!(1));
    futures::future::join_all((0..8).map(|_| svc.post_json(BASE, &racer))).await;
    let batch = json!([rec_c(), at_deletion(&a), rec_d(), with(&b, "confidence", json!(0.1))]);
    let (s, _, res) = svc.post_json(&format!("{BASE}/batch"), &batch).await;
    assert!(s == 200 || s == 201, "{res}");
    let changed = with(&a, "status", json!("failed"));
    assert_eq!(svc.post_json(BASE, &changed).await.0, 409);
    let amendments = format!("{BASE}/rec-a/amendments");
    created(svc, &amendments, &changed).await;
    created(svc, &amendments, &with(&a, "status", json!("incomplete"))).await;
    created(svc, BREAK_GLASS, &break_glass_event("review-1", "bob", "rec-a", &ago(20))).await;
    created(svc, BREAK_GLASS, &break_glass_event("review-2", "carol", "rec-c", &ago(10))).await;

    let metrics = svc.http.get(svc.endpoint("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("datastorage_http_requests_total{method=\"POST\",route=\"/api/v1/audit/signal-processing\",status=\"201\"} 4"));
    assert!(metrics.contains("datastorage_rows_written_total 6"), "{metrics}");
    assert!(metrics.contains("datastorage_store_duration_seconds_bucket"));
    assert!(metrics.contains("datastorage_record_conflicts_total 2"), "{metrics}");
    assert!(metrics.contains("datastorage_amendments_total 2"), "{metrics}");
    assert!(metrics.contains("datastorage_break_glass_events_total 2"), "{metrics}");
}

/// The file is in WAL mode, and its rows are immutable there too.
#[tokio::test]
async fn on_sqlite_the_file_is_in_wal_mode_and_its_rows_are_immutable() {
    let svc = DataStorage::launch(Options::sqlite()).await;
    created(&svc, BASE, &rec_a()).await;
    let file = svc.data_dir().join("audit.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(mode, "wal");
    for sql in [
        "UPDATE signal_processing_audit SET status = 'failed' WHERE id = 'rec-a'",
        "DELETE FROM signal_processing_audit WHERE id = 'rec-a'",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.expect_err(sql);
        assert!(err.to_string().contains("immutable"), "{sql}: {err}");
    }
}

/// Only TLS is spoken, and only a client trusting the CA gets an answer.
#[tokio::test]
async fn on_postgres_as_deployed_only_tls_with_the_issued_ca_is_answered() {
    let running = start(Backend::Postgres).await;
    let svc = &running.svc;
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", svc.port))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let stranger = reqwest::Client::builder()
        .resolve(DS_HOST, ([127, 0, 0, 1], svc.port).into())
        .build()
        .unwrap()
        .get(format!("https://{DS_HOST}:{}/healthz", svc.port))
        .send()
        .await;
    assert!(stranger.is_err(), "a client without the CA accepted the certificate: {stranger:?}");
    running.finish().await;
}
