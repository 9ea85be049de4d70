//! One API suite, run against the embedded SQLite backend and against PostgreSQL.

mod support;

use serde_json::json;
use support::datastorage::*;

async fn suite(svc: &DataStorage) {
    // Single POST: 201, Location, the stored record back.
    let a = record("rec-a", "fp-1", "production", "P0", &ago(300), json!(1_500_000_000i64));
    let (s, h, body) = svc.post_json(BASE, &a).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(h["location"], format!("{BASE}/rec-a").as_str());
    assert_eq!(body, a);

    // The same id again: 409 problem saying whether the stored original has the same content
    // (provenance keys aside), with the original attached; the record is unchanged.
    let mut at_deletion = a.clone();
    at_deletion["trigger"] = json!("deletion");
    at_deletion["deleted_at"] = json!(ago(1));
    let mut changed = a.clone();
    changed["status"] = json!("failed");
    for (again, identical) in [(&a, true), (&at_deletion, true), (&changed, false)] {
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

    // Go duration strings come back as integer nanoseconds (the design document's wire form).
    let b = record("rec-b", "fp-1", "staging", "P2", &ago(200), json!("2.5s"));
    let (s, _, body) = svc.post_json(BASE, &b).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["processing_phases"][0]["duration"], json!(2_500_000_000i64));

    // Batch: per-record results in order; an id already holding the same content "exists",
    // one holding different content is a "conflict" and is not stored.
    let mut b_changed = b.clone();
    b_changed["confidence"] = json!(0.1);
    let batch = json!([
        record("rec-c", "fp-2", "production", "P0", &ago(100), json!("3m")),
        at_deletion.clone(),
        record("rec-d", "fp-2", "development", "P3", &ago(50), json!(null)),
        b_changed.clone(),
    ]);
    let (s, _, res) = svc.post_json(&format!("{BASE}/batch"), &batch).await;
    assert!(s == 200 || s == 201, "{res}");
    assert_eq!(
        res,
        json!([{"id": "rec-c", "result": "created"}, {"id": "rec-a", "result": "exists"}, {"id": "rec-d", "result": "created"},
               {"id": "rec-b", "result": "conflict"}])
    );
    let (_, got) = svc.get(&format!("{BASE}/rec-b")).await;
    assert_eq!(got["confidence"], b["confidence"], "the conflicting record was not stored");

    // Unknown id: 404 problem.
    let (s, p) = svc.get(&format!("{BASE}/nope")).await;
    assert_eq!((s, p["status"].clone()), (404, json!(404)));

    // Listing: newest first, filters, keyset pagination with an opaque cursor.
    let (s, page) = svc.get(&format!("{BASE}?limit=10")).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["rec-d", "rec-c", "rec-b", "rec-a"]);
    assert!(page["next_cursor"].is_null());

    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{BASE}?limit=3&cursor={c}"),
            None => format!("{BASE}?limit=3"),
        };
        let (s, page) = svc.get(&q).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["rec-d", "rec-c", "rec-b", "rec-a"]);

    let filtered = |q: &'static str| async move {
        let (s, page) = svc.get(&format!("{BASE}?{q}")).await;
        assert_eq!(s, 200, "{page}");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(filtered("signal_fingerprint=fp-1").await, ["rec-b", "rec-a"]);
    assert_eq!(filtered("remediation_id=rr-rec-c").await, ["rec-c"]);
    assert_eq!(filtered("environment=production&priority=P0").await, ["rec-c", "rec-a"]);
    assert_eq!(filtered("status=failed").await, Vec::<String>::new());
    let since = ago(150).replace('+', "%2B");
    let (_, page) = svc.get(&format!("{BASE}?since={since}")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "since keeps rec-c and rec-d");

    // Amendments: a different record under a stored id is appended beside the original, once.
    let amendments = format!("{BASE}/rec-a/amendments");
    let (s, h, am) = svc.post_json(&amendments, &changed).await;
    assert_eq!(s, 201, "{am}");
    assert_eq!(h["location"], format!("{BASE}/rec-a").as_str());
    assert_eq!(am["record_id"], "rec-a");
    assert_eq!(am["record"], changed);
    let amendment_id = am["amendment_id"].as_str().unwrap().to_string();
    assert!(am["stored_at"].is_string(), "{am}");
    // A retry (even with other provenance) and the original's own content: 409 identical, nothing added.
    let mut changed_retry = changed.clone();
    changed_retry["trigger"] = json!("deletion");
    for (again, existing_id) in [(&changed_retry, Some(amendment_id.as_str())), (&at_deletion, None)] {
        let (s, _, p) = svc.post_json(&amendments, again).await;
        assert_eq!(s, 409, "{p}");
        assert_eq!(p["identical"], true, "{p}");
        assert_eq!(p["existing"]["amendment_id"].as_str(), existing_id, "{p}");
    }
    let mut incomplete = a.clone();
    incomplete["status"] = json!("incomplete");
    let (s, _, second) = svc.post_json(&amendments, &incomplete).await;
    assert_eq!(s, 201, "{second}");
    // The id in the path and in the body must agree; an unknown original cannot be amended.
    let (s, _, p) = svc.post_json(&format!("{BASE}/rec-c/amendments"), &changed).await;
    assert_eq!((s, p["field"].clone()), (400, json!("id")), "{p}");
    let mut stray = changed.clone();
    stray["id"] = json!("nobody");
    let (s, _, p) = svc.post_json(&format!("{BASE}/nobody/amendments"), &stray).await;
    assert_eq!(s, 404, "{p}");
    // GET shows the original as stored and its amendments in order.
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

    // A record with anomalies keeps them.
    let mut odd = record("rec-odd", "fp-odd", "staging", "P2", &ago(30), json!(1));
    odd["confidence"] = json!(null);
    odd["anomalies"] = json!([{"field": "confidence", "value": 5}, {"field": "processing_phases[0].duration", "value": -3}]);
    let (s, _, body) = svc.post_json(BASE, &odd).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(svc.get(&format!("{BASE}/rec-odd")).await.1["anomalies"], odd["anomalies"]);

    // Break-glass events: append-only, idempotent by id, listed newest first.
    let e1 = break_glass_event("review-1", "bob", "rec-a", &ago(20));
    let e2 = break_glass_event("review-2", "carol", "rec-c", &ago(10));
    for e in [&e1, &e2] {
        let (s, h, body) = svc.post_json(BREAK_GLASS, e).await;
        assert_eq!(s, 201, "{body}");
        assert_eq!(body, *e);
        assert!(h["location"].to_str().unwrap().ends_with(e["id"].as_str().unwrap()));
    }
    let mut forged = e1.clone();
    forged["user"] = json!("mallory");
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

    // Use-case queries.
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
    let (s, slow) = svc.get(&format!("{BASE}/stats/slow-phases?phase=enriching&min_duration=2s")).await;
    assert_eq!(s, 200, "{slow}");
    let slow_ids: Vec<_> = slow["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["duration"].clone()))
        .collect();
    assert_eq!(slow_ids, [(json!("rec-c"), json!("3m0s")), (json!("rec-b"), json!("2.5s"))]);

    // Concurrent POSTs of one new id: exactly one is stored, the rest are told it exists.
    let racer = record("rec-race", "fp-3", "staging", "P2", &ago(400), json!(1));
    let answers = futures::future::join_all((0..8).map(|_| svc.post_json(BASE, &racer))).await;
    let mut codes: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    codes.sort();
    assert_eq!(codes, [201, 409, 409, 409, 409, 409, 409, 409]);

    // Health and metrics need no token.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(svc.http.get(svc.endpoint(path)).send().await.unwrap().status(), 200);
    }
    let metrics = svc.http.get(svc.endpoint("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("datastorage_http_requests_total{method=\"POST\",route=\"/api/v1/audit/signal-processing\",status=\"201\"} 4"));
    assert!(metrics.contains("datastorage_rows_written_total 6"), "{metrics}");
    assert!(metrics.contains("datastorage_store_duration_seconds_bucket"));
    // a, changed b in the batch, and the 7 racers that lost are not conflicts; changed a and b are.
    assert!(metrics.contains("datastorage_record_conflicts_total 2"), "{metrics}");
    assert!(metrics.contains("datastorage_amendments_total 2"), "{metrics}");
    assert!(metrics.contains("datastorage_break_glass_events_total 2"), "{metrics}");
}

#[tokio::test]
async fn api_suite_on_sqlite() {
    let svc = DataStorage::launch(Options::sqlite()).await;
    suite(&svc).await;

    // The file is in WAL mode, and its rows are immutable there too.
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

/// As deployed: migrated by the owner, served by the runtime role (INSERT and SELECT only),
/// over TLS with a certificate from `audit-guard certs`.
#[tokio::test]
async fn api_suite_on_postgres() {
    let db = TestDb::create().await;
    db.migrate(&[]);
    let svc = DataStorage::launch(Options::postgres(&db.runtime_url()).tls(Tls::Issued)).await;
    suite(&svc).await;

    // Only TLS is spoken, and only a client trusting the CA gets an answer.
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
    drop(svc);
    db.drop_db().await;
}

/// Single-URL mode (local use): the service's role owns the tables and migrates them itself.
#[tokio::test]
async fn api_suite_on_postgres_single_role() {
    let db = TestDb::create().await;
    let svc = DataStorage::launch(Options::postgres(&db.url)).await;
    suite(&svc).await;
    drop(svc);
    db.drop_db().await;
}
