//! Every bad input gets its status and a problem+json body naming the field, and changes nothing.

mod datastorage_common;

use std::time::{Duration, Instant};

use datastorage_common::*;
use serde_json::{json, Value};

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

async fn suite(svc: &Service) {
    let single = BASE.to_string();
    let batch = format!("{BASE}/batch");
    let good = record("g1", "fp", "production", "P0", &ago(10), json!("1s"));
    let without = |key: &str| {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(key);
        v
    };
    let with = |key: &str, value: Value| {
        let mut v = good.clone();
        v[key] = value;
        v
    };
    let json_ct = "application/json";
    let cases: Vec<Case> = vec![
        ("malformed JSON", &single, json_ct, b"{\"id\": \"x\",".to_vec(), 400, None),
        (
            "wrong type",
            &single,
            json_ct,
            with("priority_score", json!("high")).to_string().into(),
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
            without("status").to_string().into(),
            400,
            Some("status"),
        ),
        (
            "bad enum",
            &single,
            json_ct,
            with("status", json!("done")).to_string().into(),
            400,
            Some("status"),
        ),
        (
            "out of range",
            &single,
            json_ct,
            with("confidence", json!(1.5)).to_string().into(),
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
            json!([good, without("remediation_id")]).to_string().into(),
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
            with("error_message", json!("x".repeat(70_000))).to_string().into(),
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
        let mut req = svc.http.post(svc.url(path)).bearer_auth(TOKEN).body(body);
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let (s, h, v) = split(req.send().await.unwrap()).await;
        assert_problem(what, (s, &h, &v), status, field);
    }

    // Authentication: missing and wrong tokens, on writes and reads.
    for (what, req) in [
        (
            "no token, POST",
            svc.http
                .post(svc.url(BASE))
                .header("content-type", "application/json")
                .body(good.to_string()),
        ),
        (
            "wrong token, POST",
            svc.http
                .post(svc.url(BASE))
                .bearer_auth("nope")
                .header("content-type", "application/json")
                .body(good.to_string()),
        ),
        ("no token, GET", svc.http.get(svc.url(&format!("{BASE}/g1")))),
        ("wrong token, GET", svc.http.get(svc.url(BASE)).bearer_auth("nope")),
        ("basic auth, GET", svc.http.get(svc.url(BASE)).basic_auth(TOKEN, Some("x"))),
    ] {
        let (s, h, v) = split(req.send().await.unwrap()).await;
        assert_problem(what, (s, &h, &v), 401, None);
        assert_eq!(h["www-authenticate"], "Bearer", "{what}");
    }

    // Wrong method, unknown path, bad query parameters.
    let get = |path: String| svc.http.get(svc.url(&path)).bearer_auth(TOKEN);
    let checks = [
        (
            "DELETE",
            svc.http.delete(svc.url(&format!("{BASE}/g1"))).bearer_auth(TOKEN),
            405,
            None,
        ),
        ("unknown path", get("/api/v2/nothing".into()), 404, None),
        ("limit=abc", get(format!("{BASE}?limit=abc")), 400, Some("limit")),
        ("limit=5000", get(format!("{BASE}?limit=5000")), 400, Some("limit")),
        ("cursor=zz", get(format!("{BASE}?cursor=zz")), 400, Some("cursor")),
        ("since=yesterday", get(format!("{BASE}?since=yesterday")), 400, Some("since")),
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

    // An oversized body without Content-Length (chunked) is cut off at the limit too.
    let status_line = chunked_post(svc, &with("error_message", json!("y".repeat(70_000))).to_string()).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    // Nothing was written by any of it.
    assert_eq!(svc.all_ids().await, Vec::<String>::new());

    // The tokens file is re-read when it changes: a new token starts working, the old one stops.
    std::fs::write(svc.dir().join("tokens.csv"), "rotated-token,ds-tester,9001\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = svc.http.get(svc.url(BASE)).bearer_auth("rotated-token").send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "rotated token never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(svc.http.get(svc.url(BASE)).bearer_auth(TOKEN).send().await.unwrap().status(), 401);
    std::fs::write(svc.dir().join("tokens.csv"), format!("{TOKEN},ds-tester,9001\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.http.get(svc.url(BASE)).bearer_auth(TOKEN).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "restored token never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // And the service still works.
    let (s, _, v) = svc.post_json(BASE, &good).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(svc.all_ids().await, ["g1"]);
}

/// POSTs `body` with Transfer-Encoding: chunked over a raw connection; returns the status line.
async fn chunked_post(svc: &Service, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = svc.base.trim_start_matches("http://");
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

const LIMITS: &[&str] = &["--max-batch", "5", "--max-body-bytes", "65536"];

#[tokio::test]
async fn bad_input_on_sqlite() {
    let svc = Service::start_with(None, LIMITS, &[]).await;
    suite(&svc).await;
}

#[tokio::test]
async fn bad_input_on_postgres() {
    let db = TestDb::create().await;
    let svc = Service::start_with(Some(&db.url), LIMITS, &[]).await;
    suite(&svc).await;
    let pool = db.pool().await;
    for table in ["signal_processing_audit", "signal_processing_audit_ids"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "{table} holds only the one good record");
    }
    pool.close().await;
    drop(svc);
    db.drop_db().await;
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
