//! Every bad input gets its status and a problem+json body naming the field, and changes nothing.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::datastorage::*;

fn assert_problem(what: &str, got: (u16, &reqwest::header::HeaderMap, &Value), status: u16, field: Option<&str>) {
    let (s, h, body) = got;
    assert_eq!(s, status, "{what}: {body}");
    assert_eq!(h["content-type"], "application/problem+json", "{what}");
    assert_eq!(body["status"], status, "{what}: {body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {body}");
    if let Some(f) = field {
        assert_eq!(body["field"], f, "{what}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(f.rsplit('.').next().unwrap()),
            "{what}: {body}"
        );
    }
}

/// (what, path, content type, body, expected status, expected field)
type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, Option<&'a str>);

/// With the small limits below.
async fn start(backend: Backend) -> Running {
    Running::start(backend, |o| o.args(LIMITS)).await
}

const LIMITS: &[&str] = &["--max-batch", "5", "--max-body-bytes", "65536"];

behaviours_on!(
    start,
    [sqlite = Sqlite, postgres = Postgres],
    bad_records_answer_their_status_and_a_problem_naming_the_field,
    a_missing_or_wrong_token_answers_401_with_a_bearer_challenge,
    a_reader_reads_but_may_not_write_and_an_outsider_may_do_neither,
    times_outside_the_window_are_refused_on_every_time_field,
    wrong_methods_unknown_paths_and_bad_query_parameters_are_refused,
    an_oversized_chunked_body_is_cut_off_at_the_limit,
    an_early_413_reaches_a_client_that_is_still_sending,
    the_tokens_file_is_reread_when_it_changes_and_a_broken_one_refuses_every_token,
);

/// A good record, and that record with one key set or removed.
fn good() -> Value {
    record("g1", "fp", "production", "P0", &ago(10), json!("1s"))
}

fn with(good: &Value, key: &str, value: Value) -> Value {
    let mut v = good.clone();
    v[key] = value;
    v
}

fn without(good: &Value, key: &str) -> Value {
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove(key);
    v
}

/// Nothing but `ids` is stored: through the API, and on PostgreSQL in both tables.
async fn only_stored(svc: &DataStorage, ids: &[&str]) {
    assert_eq!(svc.all_ids().await, ids);
    if let Some(url) = svc.database_url() {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for table in ["signal_processing_audit", "signal_processing_audit_ids"] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(n, ids.len() as i64, "{table} holds only {ids:?}");
        }
        pool.close().await;
    }
}

/// Malformed, mistyped, incomplete and oversized records.
async fn bad_records_answer_their_status_and_a_problem_naming_the_field(svc: &DataStorage) {
    let single = BASE.to_string();
    let batch = format!("{BASE}/batch");
    let good = good();
    let json_ct = "application/json";
    let cases: Vec<Case> = vec![
        ("malformed JSON", &single, json_ct, b"{\"id\": \"x\",".to_vec(), 400, None),
        (
            "wrong type",
            &single,
            json_ct,
            with(&good, "priority_score", json!("high")).to_string().into(),
            400,
            Some("priority_score"),
        ),
        (
            "wrong nested type",
            &single,
            json_ct,
            {
                let mut v = good.clone();
                v["processing_phases"][0]["duration"] = json!(true);
                v.to_string().into()
            },
            400,
            Some("processing_phases[0].duration"),
        ),
        (
            "missing key",
            &single,
            json_ct,
            without(&good, "status").to_string().into(),
            400,
            Some("status"),
        ),
        (
            "bad enum",
            &single,
            json_ct,
            with(&good, "status", json!("done")).to_string().into(),
            400,
            Some("status"),
        ),
        (
            "out of range",
            &single,
            json_ct,
            with(&good, "confidence", json!(1.5)).to_string().into(),
            400,
            Some("confidence"),
        ),
        ("array to single", &single, json_ct, json!([good]).to_string().into(), 400, None),
        ("object to batch", &batch, json_ct, good.to_string().into(), 400, None),
        ("empty batch", &batch, json_ct, b"[]".to_vec(), 400, None),
        (
            "invalid record in batch",
            &batch,
            json_ct,
            {
                let mut bad = record("b3", "fp", "production", "P0", &ago(10), json!("1s"));
                bad["status"] = json!("done");
                json!([
                    record("b0", "fp", "staging", "P1", &ago(10), json!(1)),
                    record("b1", "fp", "staging", "P1", &ago(10), json!(1)),
                    record("b2", "fp", "staging", "P1", &ago(10), json!(1)),
                    bad
                ])
                .to_string()
                .into()
            },
            400,
            Some("[3].status"),
        ),
        (
            "missing key in batch",
            &batch,
            json_ct,
            json!([good, without(&good, "remediation_id")]).to_string().into(),
            400,
            Some("[1].remediation_id"),
        ),
        (
            "duplicate id in batch",
            &batch,
            json_ct,
            json!([good, record("g2", "fp", "staging", "P1", &ago(5), json!(1)), good])
                .to_string()
                .into(),
            400,
            Some("[2].id"),
        ),
        ("wrong content type", &single, "text/plain", good.to_string().into(), 415, None),
        ("no content type", &single, "", good.to_string().into(), 415, None),
        (
            "oversized body",
            &single,
            json_ct,
            with(&good, "error_message", json!("x".repeat(70_000))).to_string().into(),
            413,
            None,
        ),
        (
            "oversized batch",
            &batch,
            json_ct,
            {
                let v: Vec<Value> = (0..6)
                    .map(|i| record(&format!("o{i}"), "fp", "staging", "P1", &ago(5), json!(1)))
                    .collect();
                json!(v).to_string().into()
            },
            413,
            None,
        ),
    ];
    for (what, path, ct, body, status, field) in cases {
        let mut req = svc.http.post(svc.endpoint(path)).bearer_auth(TOKEN).body(body);
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let (s, h, v) = split(req.send().await.unwrap()).await;
        assert_problem(what, (s, &h, &v), status, field);
    }
    only_stored(svc, &[]).await;
}

/// Authentication: missing and wrong tokens, on writes and reads.
async fn a_missing_or_wrong_token_answers_401_with_a_bearer_challenge(svc: &DataStorage) {
    let good = good();
    for (what, req) in [
        (
            "no token, POST",
            svc.http
                .post(svc.endpoint(BASE))
                .header("content-type", "application/json")
                .body(good.to_string()),
        ),
        (
            "wrong token, POST",
            svc.http
                .post(svc.endpoint(BASE))
                .bearer_auth("nope")
                .header("content-type", "application/json")
                .body(good.to_string()),
        ),
        ("no token, GET", svc.http.get(svc.endpoint(&format!("{BASE}/g1")))),
        ("wrong token, GET", svc.http.get(svc.endpoint(BASE)).bearer_auth("nope")),
        ("basic auth, GET", svc.http.get(svc.endpoint(BASE)).basic_auth(TOKEN, Some("x"))),
    ] {
        let (s, h, v) = split(req.send().await.unwrap()).await;
        assert_problem(what, (s, &h, &v), 401, None);
        assert_eq!(h["www-authenticate"], "Bearer", "{what}");
    }
    only_stored(svc, &[]).await;
}

/// Authorization: a reader reads but may not write; an outsider may do neither (403 naming
/// user, verb and resource); the writer may do both.
async fn a_reader_reads_but_may_not_write_and_an_outsider_may_do_neither(svc: &DataStorage) {
    let single = BASE.to_string();
    let batch = format!("{BASE}/batch");
    let good = good();
    let batch_body = json!([record("z1", "fp", "staging", "P1", &ago(5), json!(1))]);
    let amend_body = record("g1", "fp", "production", "P0", &ago(10), json!("2s"));
    for (token, user) in [(READER_TOKEN, "ds-auditor"), (OUTSIDER_TOKEN, "ds-outsider")] {
        for (path, body) in [
            (single.clone(), &good),
            (batch.clone(), &batch_body),
            (format!("{BASE}/g1/amendments"), &amend_body),
            (BREAK_GLASS.to_string(), &break_glass_event("rv-x", "bob", "g1", &ago(1))),
        ] {
            let (s, h, v) = svc.post_as(token, &path, body).await;
            assert_problem(&format!("{user} POST {path}"), (s, &h, &v), 403, None);
            let detail = v["detail"].as_str().unwrap();
            assert!(
                detail.contains(user) && detail.contains("create signalprocessingaudits.audit.kubernaut.ai"),
                "{detail}"
            );
        }
    }
    for path in [
        BASE.to_string(),
        format!("{BASE}/g1"),
        format!("{BASE}/stats/priority"),
        BREAK_GLASS.to_string(),
        format!("{BREAK_GLASS}/rv-x"),
    ] {
        let (s, v) = svc.get_as(READER_TOKEN, &path).await;
        assert!(s == 200 || s == 404, "reader GET {path}: {s} {v}");
        let (s, v) = svc.get_as(OUTSIDER_TOKEN, &path).await;
        assert_eq!(s, 403, "outsider GET {path}: {v}");
        let verb = if path.ends_with("/g1") || path.ends_with("/rv-x") {
            "get"
        } else {
            "list"
        };
        assert!(v["detail"].as_str().unwrap().contains(&format!("may not {verb} ")), "{v}");
    }
    only_stored(svc, &[]).await;
}

/// Times outside the window, on every time field of a record and on a break-glass event.
async fn times_outside_the_window_are_refused_on_every_time_field(svc: &DataStorage) {
    let single = BASE.to_string();
    let batch = format!("{BASE}/batch");
    let good = good();
    let mut phase_in_future = good.clone();
    phase_in_future["processing_phases"][1]["start_time"] = json!(ago(-3600));
    let window_cases: Vec<(&str, Value, &str)> = vec![
        (
            "completed_at in 9999",
            with(&good, "completed_at", json!("9999-01-01T00:00:00Z")),
            "completed_at",
        ),
        (
            "completed_at in 0001",
            with(&good, "completed_at", json!("0001-01-01T00:00:00Z")),
            "completed_at",
        ),
        (
            "deleted_at 401 days ago",
            with(&good, "deleted_at", json!(ago(401 * 86_400))),
            "deleted_at",
        ),
        ("a phase an hour ahead", phase_in_future, "processing_phases[1].start_time"),
    ];
    for (what, body, field) in window_cases {
        let (s, h, v) = svc.post_json(&single, &body).await;
        assert_problem(what, (s, &h, &v), 400, Some(field));
        let (s, h, v) = svc.post_json(&batch, &json!([body])).await;
        assert_problem(what, (s, &h, &v), 400, Some(&format!("[0].{field}")));
    }
    let mut ancient_event = break_glass_event("rv-old", "bob", "g1", "2001-01-01T00:00:00Z");
    let (s, h, v) = svc.post_json(BREAK_GLASS, &ancient_event).await;
    assert_problem("break-glass event in 2001", (s, &h, &v), 400, Some("at"));
    ancient_event["at"] = json!(ago(1));
    ancient_event.as_object_mut().unwrap().remove("user");
    let (s, h, v) = svc.post_json(BREAK_GLASS, &ancient_event).await;
    assert_problem("break-glass event without user", (s, &h, &v), 400, Some("user"));
    only_stored(svc, &[]).await;
}

/// Wrong method, unknown path, bad query parameters.
async fn wrong_methods_unknown_paths_and_bad_query_parameters_are_refused(svc: &DataStorage) {
    let good = good();
    let get = |path: String| svc.http.get(svc.endpoint(&path)).bearer_auth(TOKEN);
    let checks = [
        (
            "DELETE",
            svc.http.delete(svc.endpoint(&format!("{BASE}/g1"))).bearer_auth(TOKEN),
            405,
            None,
        ),
        ("unknown path", get("/api/v2/nothing".into()), 404, None),
        ("limit=abc", get(format!("{BASE}?limit=abc")), 400, Some("limit")),
        ("limit=5000", get(format!("{BASE}?limit=5000")), 400, Some("limit")),
        ("cursor=zz", get(format!("{BASE}?cursor=zz")), 400, Some("cursor")),
        ("since=yesterday", get(format!("{BASE}?since=yesterday")), 400, Some("since")),
        (
            "misspelt sinse",
            get(format!("{BASE}?sinse=2026-01-01T00:00:00Z")),
            400,
            Some("sinse"),
        ),
        ("repeated limit", get(format!("{BASE}?limit=1&limit=2")), 400, Some("limit")),
        ("parameter on GET by id", get(format!("{BASE}/g1?verbose=1")), 400, Some("verbose")),
        (
            "unknown stats parameter",
            get(format!("{BASE}/stats/priority?limit=5")),
            400,
            Some("limit"),
        ),
        (
            "stats over all time",
            get(format!("{BASE}/stats/classification?since=1970-01-01T00:00:00Z")),
            400,
            Some("since"),
        ),
        (
            "slow phases over all time",
            get(format!("{BASE}/stats/slow-phases?since=1970-01-01T00:00:00Z")),
            400,
            Some("since"),
        ),
        (
            "unknown break-glass parameter",
            get(format!("{BREAK_GLASS}?user=bob")),
            400,
            Some("user"),
        ),
        (
            "a parameter on a POST",
            svc.http
                .post(svc.endpoint(&format!("{BASE}?dry_run=true")))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(good.to_string()),
            400,
            Some("dry_run"),
        ),
        (
            "min_duration",
            get(format!("{BASE}/stats/slow-phases?min_duration=2parsecs")),
            400,
            Some("min_duration"),
        ),
    ];
    for (what, req, status, field) in checks {
        let (s, h, v) = split(req.send().await.unwrap()).await;
        assert_problem(what, (s, &h, &v), status, field);
    }
    only_stored(svc, &[]).await;
}

/// An oversized body without Content-Length (chunked) is cut off at the limit too.
async fn an_oversized_chunked_body_is_cut_off_at_the_limit(svc: &DataStorage) {
    let good = good();
    let status_line = chunked_post(svc, &with(&good, "error_message", json!("y".repeat(70_000))).to_string()).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    only_stored(svc, &[]).await;
}

/// An early 413 (refused on Content-Length, before the body is read) reaches the client every
/// time while it is still sending: the listener lingers instead of resetting the connection.
async fn an_early_413_reaches_a_client_that_is_still_sending(svc: &DataStorage) {
    let good = good();
    let big = with(&good, "error_message", json!("z".repeat(2_000_000))).to_string();
    for i in 0..10 {
        let r = svc
            .http
            .post(svc.endpoint(BASE))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await;
        match r {
            Ok(r) => assert_eq!(r.status(), 413, "attempt {i}"),
            Err(e) => panic!("attempt {i}: the 413 was lost: {e:?}"),
        }
    }
    only_stored(svc, &[]).await;
}

/// The tokens file is re-read when it changes: a new token starts working, the old one stops;
/// a broken one refuses every token until it is fixed.
async fn the_tokens_file_is_reread_when_it_changes_and_a_broken_one_refuses_every_token(svc: &DataStorage) {
    let good = good();
    std::fs::write(
        svc.dir().join("tokens.csv"),
        "rotated-token,ds-tester,9001,\"audit-guard:datastorage-writers\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = svc.http.get(svc.endpoint(BASE)).bearer_auth("rotated-token").send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "rotated token never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        svc.http.get(svc.endpoint(BASE)).bearer_auth(TOKEN).send().await.unwrap().status(),
        401
    );
    // A broken tokens file does not keep the old tokens alive unseen: every token is refused
    // (503, retryable), /readyz fails and the gauge says so, until the file is fixed.
    std::fs::write(svc.dir().join("tokens.csv"), "rotated-token,ds-tester\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = svc.http.get(svc.endpoint(BASE)).bearer_auth("rotated-token").send().await.unwrap();
        if r.status() == 503 {
            let (_, h, v) = split(r).await;
            assert_eq!(h["content-type"], "application/problem+json");
            assert!(v["detail"].as_str().unwrap().contains("tokens file"), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "a broken tokens file kept the old tokens");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(svc.http.get(svc.endpoint("/readyz")).send().await.unwrap().status(), 503);
    let metrics = svc.http.get(svc.endpoint("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("datastorage_tokens_file_valid 0"), "{metrics}");
    std::fs::remove_file(svc.dir().join("tokens.csv")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        svc.http
            .get(svc.endpoint(BASE))
            .bearer_auth("rotated-token")
            .send()
            .await
            .unwrap()
            .status(),
        503,
        "unreadable"
    );
    std::fs::write(svc.dir().join("tokens.csv"), tokens_csv()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.http.get(svc.endpoint(BASE)).bearer_auth(TOKEN).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "restored token never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(svc.http.get(svc.endpoint("/readyz")).send().await.unwrap().status(), 200);
    // And the service still works.
    let (s, _, v) = svc.post_json(BASE, &good).await;
    assert_eq!(s, 201, "{v}");
    only_stored(svc, &["g1"]).await;
}

/// POSTs `body` with Transfer-Encoding: chunked over a raw connection; returns the status line.
async fn chunked_post(svc: &DataStorage, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = svc.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {BASE} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(8192) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        // The server may answer and close before the whole body is sent.
        if conn.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn refuses_to_start_without_an_auth_choice() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit-guard"))
        .args(["datastorage", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("DATASTORAGE_TOKENS_FILE")
        .env_remove("DATASTORAGE_TOKEN_REVIEW")
        .env_remove("DATASTORAGE_INSECURE_NO_AUTH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tokens-file") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}
