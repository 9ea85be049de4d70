//! Shared helpers for the Data Storage tests: the real binary on a free port, a fresh
//! PostgreSQL database per test binary, and audit records to send.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

/// A member of the writers group (create, get, list).
pub const TOKEN: &str = "ds-test-token";
/// A member of the readers group (get, list).
pub const READER_TOKEN: &str = "ds-reader-token";
/// Authenticated, in neither group.
pub const OUTSIDER_TOKEN: &str = "ds-outsider-token";
pub const BASE: &str = "/api/v1/audit/signal-processing";
pub const BREAK_GLASS: &str = "/api/v1/audit/break-glass-events";
/// The runtime role scripts/postgres.sh creates (INSERT and SELECT once `migrate` granted them).
pub const RUNTIME_ROLE: &str = "audit_guard_app";

pub fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| "postgres://audit_guard:audit_guard@127.0.0.1:5432/audit_guard".into())
}

/// The runtime role's credentials on the same server (`postgres://user:pass@host:port`).
pub fn pg_runtime_server() -> String {
    std::env::var("DATABASE_URL_TEST_RUNTIME").unwrap_or_else(|_| format!("postgres://{RUNTIME_ROLE}:{RUNTIME_ROLE}@127.0.0.1:5432"))
}

/// A database of its own, created through the audit_guard role and dropped by `drop_db`.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!("audit_guard_t_{:08x}", rand::rng().random::<u32>());
        let admin = pg_admin_url();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let (prefix, _) = admin.rsplit_once('/').unwrap();
        TestDb {
            url: format!("{prefix}/{name}"),
            name,
        }
    }

    /// The owner's pool (the role that created the database).
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.unwrap()
    }

    /// The same database as the runtime role.
    pub fn runtime_url(&self) -> String {
        format!("{}/{}", pg_runtime_server(), self.name)
    }

    pub async fn runtime_pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.runtime_url()).await.unwrap()
    }

    /// `audit-guard datastorage migrate` as the owner, granting the runtime role; its stdout.
    pub fn migrate(&self, extra: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_audit-guard"))
            .args([
                "datastorage",
                "migrate",
                "--database-url",
                &self.url,
                "--runtime-role",
                RUNTIME_ROLE,
            ])
            .args(extra)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "migrate failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Drops the database. FORCE ends the runtime role's sessions too when the owner may signal
    /// them (scripts/postgres.sh grants pg_signal_backend); a killed service's sessions may also
    /// take a moment to end, so a few tries.
    pub async fn drop_db(self) {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg_admin_url()).await.unwrap();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        for attempt in 1..=20 {
            match sqlx::query(&sql).execute(&mut conn).await {
                Ok(_) => return,
                Err(e) if attempt == 20 => panic!("dropping {}: {e}", self.name),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// The real `audit-guard datastorage` binary as a child process; killed on drop.
pub struct Service {
    pub base: String,
    pub http: reqwest::Client,
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    audit_guard_harness::free_port().unwrap()
}

/// A chain key file in `dir` (generated at run time, never committed).
pub fn chain_key_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("chain.key");
    if !path.exists() {
        std::fs::write(&path, audit_guard::datastorage::chain::generate_key_line("test-1").unwrap()).unwrap();
    }
    path
}

/// An export signing key in `dir` (and its public key beside it as `signing-key.pem.pub`).
pub fn signing_key_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("signing-key.pem");
    if !path.exists() {
        let (private, public) = audit_guard::datastorage::export::generate_signing_key().unwrap();
        std::fs::write(&path, private).unwrap();
        std::fs::write(dir.join("signing-key.pem.pub"), public).unwrap();
    }
    path
}

pub fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens.csv");
    std::fs::write(&path, tokens_csv()).unwrap();
    path
}

/// A writer, a reader and an outsider, in the service's default groups.
pub fn tokens_csv() -> String {
    format!(
        "{TOKEN},ds-tester,9001,\"audit-guard:datastorage-writers\"\n\
         {READER_TOKEN},ds-auditor,9002,\"audit-guard:datastorage-readers,auditors\"\n\
         {OUTSIDER_TOKEN},ds-outsider,9003,\"system:authenticated\"\n"
    )
}

/// `audit-guard certs` into `dir`: a CA, the webhook's and Data Storage's certificates, for
/// their Service names and 127.0.0.1.
pub fn issue_certs(dir: &Path) -> audit_guard::certs::Issued {
    audit_guard::certs::issue(&audit_guard::certs::IssueSettings {
        out_dir: dir.to_path_buf(),
        service: "audit-guard-webhook".into(),
        namespace: "audit-guard".into(),
        extra_san: vec!["127.0.0.1".into()],
        days: 2,
        reuse_ca: false,
    })
    .unwrap()
}

/// The name Data Storage's certificate is issued for (`audit-guard certs`); the TLS test
/// client resolves it to 127.0.0.1, so the name check is real.
pub const DS_HOST: &str = "audit-guard-datastorage.audit-guard.svc";

impl Service {
    /// Starts with the given database URL (None: SQLite in a temp dir) and a tokens file.
    pub async fn start(database_url: Option<&str>) -> Service {
        Self::start_with(database_url, &[], &[]).await
    }

    /// Plain HTTP (`--plain-http`).
    pub async fn start_with(database_url: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Service {
        Self::launch(database_url, extra, env, false).await
    }

    /// TLS with a certificate from `audit-guard certs`; the client trusts only that CA.
    pub async fn start_tls(database_url: Option<&str>, extra: &[&str]) -> Service {
        Self::launch(database_url, extra, &[], true).await
    }

    async fn launch(database_url: Option<&str>, extra: &[&str], env: &[(&str, &str)], tls: bool) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_audit-guard"));
        cmd.arg("datastorage")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("DATABASE_URL")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("log")).unwrap()));
        let mut ca_pem = None;
        if tls {
            let issued = issue_certs(&dir.path().join("certs"));
            ca_pem = Some(issued.ca_pem);
            cmd.arg("--tls-cert-dir")
                .arg(dir.path().join("certs").join(audit_guard::certs::DATASTORAGE_DIR));
        } else {
            cmd.arg("--plain-http");
        }
        if !extra.contains(&"--token-review") && !extra.contains(&"--insecure-no-auth") {
            cmd.arg("--tokens-file").arg(tokens_file(dir.path()));
        }
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
            if !extra.contains(&"--chain-key-file") {
                cmd.arg("--chain-key-file").arg(chain_key_file(dir.path()));
            }
            if !extra.contains(&"--signing-key-file") {
                cmd.arg("--signing-key-file").arg(signing_key_file(dir.path()));
            }
        }
        cmd.args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        // Idle connections are dropped before the service's own idle bound (10 s) closes them, so
        // a request never races that close on a pooled connection (hyper: IncompleteMessage).
        let client = || reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(5));
        let (base, http) = match &ca_pem {
            Some(ca) => (
                format!("https://{DS_HOST}:{port}"),
                client()
                    .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
                    .tls_built_in_root_certs(false)
                    .resolve(DS_HOST, ([127, 0, 0, 1], port).into())
                    .build()
                    .unwrap(),
            ),
            None => (format!("http://127.0.0.1:{port}"), client().build().unwrap()),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
                panic!("datastorage exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "datastorage did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Service {
            base,
            http,
            port,
            child,
            _dir: dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The chain key file the service runs with (PostgreSQL; SQLite keeps its own beside the
    /// database: [`Service::data_dir`]`/chain.key`).
    pub fn chain_key_file(&self) -> std::path::PathBuf {
        let pg = self._dir.path().join("chain.key");
        if pg.exists() {
            pg
        } else {
            self.data_dir().join("chain.key")
        }
    }

    /// The export signing public key (PEM) of the service.
    pub fn public_key_file(&self) -> std::path::PathBuf {
        let pg = self._dir.path().join("signing-key.pem.pub");
        if pg.exists() {
            return pg;
        }
        // SQLite: the key beside the database; its public half derived here.
        let private = std::fs::read_to_string(self.data_dir().join("signing-key.pem")).unwrap();
        let signer = audit_guard::datastorage::export::Signer::from_pem(&private).unwrap();
        let path = self._dir.path().join("sqlite-signing-key.pub");
        std::fs::write(&path, &signer.public_pem).unwrap();
        path
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// The CA of a TLS service's certificate (`start_tls`).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self._dir.path().join("certs").join("ca.crt")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        self.post_raw(path, "application/json", body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, path: &str, ct: &str, body: Vec<u8>) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        split(r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(TOKEN, path).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        let (s, _, v) = split(r).await;
        (s, v)
    }

    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        split(r).await
    }

    /// Every stored record, through the API (pages followed).
    pub async fn all_ids(&self) -> Vec<String> {
        let mut ids = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("{BASE}?limit=1000&cursor={c}"),
                None => format!("{BASE}?limit=1000"),
            };
            let (s, v) = self.get(&q).await;
            assert_eq!(s, 200, "{v}");
            ids.extend(v["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()));
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return ids,
            }
        }
    }
}

pub async fn split(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, v)
}

/// A full design-document record; `enrich` is the enriching phase's duration in either wire form.
pub fn record(id: &str, fingerprint: &str, env: &str, priority: &str, completed_at: &str, enrich: Value) -> Value {
    json!({
        "id": id,
        "remediation_id": format!("rr-{id}"),
        "signal_fingerprint": fingerprint,
        "processing_phases": [
            {"phase": "enriching", "start_time": ago(7200), "end_time": ago(7199), "duration": enrich,
             "enrichmentResults": {"contextQuality": 0.9, "contextSizeBytes": 2048, "contextSources": 3, "degradedMode": false}},
            {"phase": "classifying", "start_time": null, "end_time": null, "duration": 250_000_000i64,
             "classificationResults": {"environment": env, "confidence": 0.8, "businessCriticality": "high", "classificationMethod": "namespace-label"}},
            {"phase": "categorizing", "start_time": null, "end_time": null, "duration": 10_000_000i64,
             "categorizationResults": {"priority": priority, "priorityScore": 80, "source": "enriched_context"}}
        ],
        "enrichment_quality": 0.9,
        "enrichment_sources": ["kubernetes", "prometheus"],
        "context_size_bytes": 2048,
        "environment": env,
        "confidence": if env == "production" { 0.9 } else { 0.7 },
        "business_criticality": "high",
        "sla_requirement": "critical",
        "priority": priority,
        "priority_score": if priority == "P0" { 100 } else { 50 },
        "routed_to_service": "ai-analysis",
        "routing_priority": 1,
        "completed_at": completed_at,
        "status": "completed",
        "namespace": "team-a",
        "name": format!("sp-{id}"),
        "uid": id,
        "trigger": "completion",
        "deleted_at": null
    })
}

/// A recent timestamp, `secs_ago` before now, to the microsecond, written the way the record
/// type writes it back (so a posted record and the stored one compare equal as JSON).
pub fn ago(secs_ago: i64) -> String {
    use chrono::SubsecRound;
    (chrono::Utc::now() - chrono::Duration::seconds(secs_ago))
        .trunc_subsecs(6)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A break-glass event for a CR, at `at`.
pub fn break_glass_event(id: &str, user: &str, cr_uid: &str, at: &str) -> Value {
    json!({"id": id, "user": user, "groups": ["audit-guard:break-glass", "system:authenticated"],
           "namespace": "team-a", "name": format!("sp-{cr_uid}"), "uid": cr_uid, "at": at})
}
