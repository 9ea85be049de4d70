//! The one Data Storage launcher of the tests: the real `audit-guard datastorage` binary,
//! either as a child this process owns (killed on drop) or supervised by a control plane
//! (named, stopped and resumed on the same port and data directory); plus a fresh PostgreSQL
//! database per test, the records the tests send, and `audit-guard serve --disable-webhook`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::Rng;
use serde_json::{json, Value};

use super::controlplane::{free_port, ControlPlane};
use super::wait_for;

/// The binary under test; AUDIT_GUARD_BIN overrides it (a private copy, when several
/// worktrees share one target directory and rebuild it under a running test).
pub fn binary() -> String {
    std::env::var("AUDIT_GUARD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_audit-guard").to_string())
}

async fn wait_healthy(url: String, what: &str) -> Result<()> {
    wait_healthy_with(reqwest::Client::new(), url, what).await
}

async fn wait_healthy_with(http: reqwest::Client, url: String, what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(60), || {
        let http = http.clone();
        let url = url.clone();
        async move { Ok(http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
    })
    .await
}

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
/// The name Data Storage's certificate is issued for (`audit-guard certs`); the TLS test
/// client resolves it to 127.0.0.1, so the name check is real.
pub const DS_HOST: &str = "audit-guard-datastorage.audit-guard.svc";

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
        let out = Command::new(binary())
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

/// A chain key file in `dir` (generated at run time, never committed).
pub fn chain_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("chain.key");
    if !path.exists() {
        std::fs::write(&path, audit_guard::evidence::chain::generate_key_line("test-1").unwrap()).unwrap();
    }
    path
}

/// An export signing key in `dir` (and its public key beside it as `signing-key.pem.pub`).
pub fn signing_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("signing-key.pem");
    if !path.exists() {
        let (private, public) = audit_guard::evidence::signing::generate_signing_key().unwrap();
        std::fs::write(&path, private).unwrap();
        std::fs::write(dir.join("signing-key.pem.pub"), public).unwrap();
    }
    path
}

pub fn tokens_file(dir: &Path) -> PathBuf {
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

/// Where the records go.
#[derive(Clone, Debug)]
pub enum Store {
    /// Embedded SQLite in the launcher's data directory.
    Sqlite,
    /// PostgreSQL at this URL; the chain and signing keys are generated beside the launcher.
    Postgres(String),
}

/// Who may call.
#[derive(Clone, Debug)]
pub enum Auth {
    /// The writer, reader and outsider of [`tokens_csv`].
    TestTokens,
    /// `--insecure-no-auth`.
    Insecure,
    /// `--tokens-file <file>`, the test's own.
    TokensFile(PathBuf),
    /// `--token-review` (give the child a KUBECONFIG through [`Options::env`]).
    TokenReview,
}

/// How it serves.
#[derive(Clone, Debug)]
pub enum Tls {
    /// `--plain-http`.
    Plain,
    /// A certificate from `audit-guard certs`, issued here; the client trusts only that CA and
    /// reaches the service by its Service name ([`DS_HOST`]).
    Issued,
    /// `--tls-cert-dir <dir>`, the test's own; the client trusts `<dir>/ca.crt` at 127.0.0.1.
    Dir(PathBuf),
}

/// What to start: [`Options::sqlite`] or [`Options::postgres`], then the builders below.
#[derive(Clone, Debug)]
pub struct Options {
    pub store: Store,
    pub auth: Auth,
    pub tls: Tls,
    /// Further arguments, after the launcher's own.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn sqlite() -> Options {
        Options {
            store: Store::Sqlite,
            auth: Auth::TestTokens,
            tls: Tls::Plain,
            args: vec![],
            env: vec![],
        }
    }

    pub fn postgres(url: &str) -> Options {
        Options {
            store: Store::Postgres(url.to_string()),
            ..Options::sqlite()
        }
    }

    pub fn auth(mut self, auth: Auth) -> Options {
        self.auth = auth;
        self
    }

    pub fn tls(mut self, tls: Tls) -> Options {
        self.tls = tls;
        self
    }

    pub fn args(mut self, args: &[&str]) -> Options {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Options {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn given(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }
}

/// A real Data Storage Service on a fixed port and data directory: started by
/// [`DataStorage::launch`] (a child of this process, killed on drop) or
/// [`DataStorage::launch_on`] (under a control plane, which can stop it and start it again
/// with its records intact).
pub struct DataStorage {
    pub name: String,
    pub port: u16,
    /// `http(s)://<host>:<port>`; [`DataStorage::endpoint`] appends a path.
    pub url: String,
    /// A client trusting this Data Storage (its CA when it serves TLS).
    pub http: reqwest::Client,
    /// Bearer token for [`DataStorage::record`] and [`DataStorage::break_glass_events`].
    pub token: Option<String>,
    options: Options,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Drop for DataStorage {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl DataStorage {
    /// Starts a child of this test process and waits until it is ready; panics (with its log)
    /// when it does not get there.
    pub async fn launch(options: Options) -> DataStorage {
        let mut ds = Self::prepare("datastorage", options).unwrap();
        let log = std::fs::File::create(ds.dir.path().join("log")).unwrap();
        let mut cmd = ds.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log));
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = ds.http.get(ds.endpoint("/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(ds.dir.path().join("log")).unwrap_or_default();
                panic!("datastorage exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "datastorage did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ds.child = Some(child);
        ds
    }

    /// Starts it under `cp` as `name` (its log is the control plane's `<name>.log`).
    pub async fn launch_on(cp: &ControlPlane, name: &str, options: Options) -> Result<DataStorage> {
        let ds = Self::prepare(name, options)?;
        ds.resume(cp).await?;
        Ok(ds)
    }

    fn prepare(name: &str, options: Options) -> Result<DataStorage> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        // Idle connections are dropped before the service's own idle bound (10 s) closes them, so
        // a request never races that close on a pooled connection (hyper: IncompleteMessage).
        let client = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .pool_idle_timeout(Duration::from_secs(5))
        };
        let trusting = |ca: &[u8]| -> Result<reqwest::ClientBuilder> {
            Ok(client()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca)?))
        };
        let (url, http) = match &options.tls {
            Tls::Plain => (format!("http://127.0.0.1:{port}"), client().build()?),
            Tls::Issued => {
                let issued = issue_certs(&dir.path().join("certs"));
                let http = trusting(issued.ca_pem.as_bytes())?
                    .resolve(DS_HOST, ([127, 0, 0, 1], port).into())
                    .build()?;
                (format!("https://{DS_HOST}:{port}"), http)
            }
            Tls::Dir(certs) => {
                let http = trusting(&std::fs::read(certs.join("ca.crt"))?)?.build()?;
                (format!("https://127.0.0.1:{port}"), http)
            }
        };
        if let Auth::TestTokens = options.auth {
            tokens_file(dir.path());
        }
        if let Store::Postgres(_) = options.store {
            // PostgreSQL needs the chain's key (and the export signing key) from outside the database.
            if !options.given("--chain-key-file") {
                chain_key_file(dir.path());
            }
            if !options.given("--signing-key-file") {
                signing_key_file(dir.path());
            }
        }
        Ok(DataStorage {
            name: name.to_string(),
            port,
            url,
            http,
            token: matches!(options.auth, Auth::TestTokens).then(|| TOKEN.to_string()),
            options,
            dir,
            child: None,
        })
    }

    fn command(&self) -> Command {
        let o = &self.options;
        let mut cmd = Command::new(binary());
        cmd.arg("datastorage")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("DATABASE_URL")
            .env_remove("KUBERNETES_SERVICE_HOST");
        match &o.tls {
            Tls::Plain => cmd.arg("--plain-http"),
            Tls::Issued => cmd
                .arg("--tls-cert-dir")
                .arg(self.dir.path().join("certs").join(audit_guard::certs::DATASTORAGE_DIR)),
            Tls::Dir(certs) => cmd.arg("--tls-cert-dir").arg(certs),
        };
        match &o.auth {
            Auth::TestTokens => cmd.arg("--tokens-file").arg(self.dir.path().join("tokens.csv")),
            Auth::Insecure => cmd.arg("--insecure-no-auth"),
            Auth::TokensFile(file) => cmd.arg("--tokens-file").arg(file),
            Auth::TokenReview => cmd.arg("--token-review"),
        };
        if let Store::Postgres(url) = &o.store {
            cmd.arg("--database-url").arg(url);
            if !o.given("--chain-key-file") {
                cmd.arg("--chain-key-file").arg(self.dir.path().join("chain.key"));
            }
            if !o.given("--signing-key-file") {
                cmd.arg("--signing-key-file").arg(self.dir.path().join("signing-key.pem"));
            }
        }
        cmd.args(&o.args);
        cmd.envs(o.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the process (again) under `cp`, on the same port and data directory.
    pub async fn resume(&self, cp: &ControlPlane) -> Result<()> {
        cp.spawn(&self.name, self.command())?;
        wait_healthy_with(self.http.clone(), self.endpoint("/readyz"), "datastorage ready").await
    }

    /// SIGKILL: Data Storage is simply gone.
    pub fn stop(&self, cp: &ControlPlane) -> Result<()> {
        cp.kill(&self.name)
    }

    /// The launcher's own directory (keys, tokens, certificates, the child's log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--data-dir` (SQLite's database and, without key files, its keys).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The chain key file the service runs with (PostgreSQL: generated here; SQLite keeps its
    /// own beside the database).
    pub fn chain_key_file(&self) -> PathBuf {
        let pg = self.dir.path().join("chain.key");
        if pg.exists() {
            pg
        } else {
            self.data_dir().join("chain.key")
        }
    }

    /// The export signing public key (PEM) of the service.
    pub fn public_key_file(&self) -> PathBuf {
        let pg = self.dir.path().join("signing-key.pem.pub");
        if pg.exists() {
            return pg;
        }
        // SQLite: the key beside the database; its public half derived here.
        let private = std::fs::read_to_string(self.data_dir().join("signing-key.pem")).unwrap();
        let signer = audit_guard::evidence::signing::Signer::from_pem(&private).unwrap();
        let path = self.dir.path().join("sqlite-signing-key.pub");
        std::fs::write(&path, &signer.public_pem).unwrap();
        path
    }

    /// The CA of a TLS service's certificate.
    pub fn ca_file(&self) -> PathBuf {
        match &self.options.tls {
            Tls::Dir(certs) => certs.join("ca.crt"),
            _ => self.dir.path().join("certs").join("ca.crt"),
        }
    }

    /// The PostgreSQL URL it serves from, if it does.
    pub fn database_url(&self) -> Option<&str> {
        match &self.options.store {
            Store::Postgres(url) => Some(url),
            Store::Sqlite => None,
        }
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        self.post_raw(path, "application/json", body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, path: &str, ct: &str, body: Vec<u8>) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(self.endpoint(path))
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
        let r = self.http.get(self.endpoint(path)).bearer_auth(token).send().await.unwrap();
        let (s, _, v) = split(r).await;
        (s, v)
    }

    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(self.endpoint(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        split(r).await
    }

    /// POSTs `body` to `path` with `token`; the answer's status.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Result<u16> {
        let resp = self.http.post(self.endpoint(path)).bearer_auth(token).json(body).send().await?;
        Ok(resp.status().as_u16())
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

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(self.endpoint(path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The stored record with this id (with its `amendments`, if any), if any.
    pub async fn record(&self, id: &str) -> Result<Option<Value>> {
        let resp = self.request(&format!("{BASE}/{id}")).send().await?;
        match resp.status().as_u16() {
            200 => Ok(Some(resp.json().await?)),
            404 => Ok(None),
            s => bail!("GET record {id}: {s}: {}", resp.text().await.unwrap_or_default()),
        }
    }

    /// The break-glass events stored for a SignalProcessing uid.
    pub async fn break_glass_events(&self, uid: &str) -> Result<Vec<Value>> {
        let resp = self.request(BREAK_GLASS).send().await?;
        if resp.status() != 200 {
            bail!(
                "GET break-glass events: {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let page: Value = resp.json().await?;
        let items = page.get("items").unwrap_or(&page).as_array().cloned().unwrap_or_default();
        Ok(items.into_iter().filter(|e| e["uid"] == uid).collect())
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

/// A running `audit-guard serve --disable-webhook` replica.
pub struct Serve {
    pub name: String,
    pub identity: String,
    pub metrics_url: String,
    /// `http://127.0.0.1:<health port>`.
    pub health_base: String,
}

impl Serve {
    /// Starts a replica that watches `watch_ns` and campaigns on a Lease in `lease_ns`.
    pub async fn start(cp: &ControlPlane, name: &str, ds_url: &str, lease_ns: &str, watch_ns: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_kubeconfig(cp, name, &cp.kubeconfig, ds_url, lease_ns, watch_ns, extra).await
    }

    /// As [`Serve::start`], with another identity's kubeconfig (e.g. a ServiceAccount token).
    pub async fn start_with_kubeconfig(
        cp: &ControlPlane,
        name: &str,
        kubeconfig: &std::path::Path,
        ds_url: &str,
        lease_ns: &str,
        watch_ns: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let mut args = vec!["--disable-webhook"];
        args.extend_from_slice(extra);
        Self::start_full(cp, name, kubeconfig, ds_url, lease_ns, watch_ns, &args).await
    }

    /// Starts `serve` with exactly these extra arguments (the webhook is on unless they say
    /// `--disable-webhook`); `--datastorage-timeout` defaults to 2s.
    pub async fn start_full(
        cp: &ControlPlane,
        name: &str,
        kubeconfig: &std::path::Path,
        ds_url: &str,
        lease_ns: &str,
        watch_ns: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let metrics_port = free_port()?;
        let health_port = free_port()?;
        let mut cmd = Command::new(binary());
        cmd.env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,audit_guard=debug,kube=warn")
            .args(["serve", "--datastorage-url", ds_url])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(["--lease-namespace", lease_ns, "--lease-duration", "3s"])
            .args(["--namespaces", watch_ns, "--identity", name]);
        if !extra.contains(&"--datastorage-timeout") {
            cmd.args(["--datastorage-timeout", "2s"]);
        }
        cmd.args(extra);
        cp.spawn(name, cmd).context("spawn serve")?;
        wait_healthy(format!("http://127.0.0.1:{health_port}/healthz"), "serve healthy").await?;
        Ok(Self {
            name: name.to_string(),
            identity: name.to_string(),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            health_base: format!("http://127.0.0.1:{health_port}"),
        })
    }

    /// A URL on the health listener (`/healthz`, `/readyz`, `/readyz/datastorage`).
    pub fn health_url(&self, path: &str) -> String {
        format!("{}{path}", self.health_base)
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(reqwest::get(&self.metrics_url).await?.text().await?)
    }
}

/// A real `serve` as deployed beside `svc`: controller and webhook (TLS, on a port of its own),
/// writing to Data Storage over TLS with the writer's token, watching `watch_ns`.
pub struct GuardingServe {
    pub serve: Serve,
    pub webhook_addr: String,
    pub webhook_ca_pem: String,
    /// Holds the webhook's certificates and the token file.
    pub dir: tempfile::TempDir,
}

impl GuardingServe {
    pub async fn start(cp: &ControlPlane, svc: &DataStorage, lease_ns: &str, watch_ns: &str) -> Result<Self> {
        Self::start_with(cp, svc, lease_ns, watch_ns, &[]).await
    }

    /// As [`GuardingServe::start`], with these further arguments to `serve`.
    pub async fn start_with(cp: &ControlPlane, svc: &DataStorage, lease_ns: &str, watch_ns: &str, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let webhook_ca_pem = issue_certs(&dir.path().join("webhook-certs")).ca_pem;
        std::fs::write(dir.path().join("token"), TOKEN)?;
        let webhook_addr = format!("127.0.0.1:{}", free_port()?);
        let ds_url = format!("https://127.0.0.1:{}", svc.port);
        let path = |p: &str| dir.path().join(p).to_string_lossy().to_string();
        let (certs, token, ca) = (path("webhook-certs"), path("token"), svc.ca_file().to_string_lossy().to_string());
        let name = format!("serve-{watch_ns}");
        let mut args: Vec<&str> = vec![
            "--retention",
            "0",
            "--webhook-addr",
            &webhook_addr,
            "--cert-dir",
            &certs,
            "--datastorage-token-file",
            &token,
            "--datastorage-ca-file",
            &ca,
            "--datastorage-timeout",
            "5s",
        ];
        args.extend_from_slice(extra);
        let serve = Serve::start_full(cp, &name, &cp.kubeconfig, &ds_url, lease_ns, watch_ns, &args)
            .await
            .with_context(|| cp.log_tail(&name))?;
        Ok(Self {
            serve,
            webhook_addr,
            webhook_ca_pem,
            dir,
        })
    }
}

/// The backends a behaviour runs on (see [`behaviours_on`]).
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    /// As deployed: migrated by the owner, served by the runtime role (INSERT and SELECT only).
    Postgres,
    /// Single-URL mode (local use): the service's role owns the tables and migrates them itself.
    PostgresSingleRole,
}

/// A Data Storage of one test's own and its database, dropped by [`Running::finish`].
pub struct Running {
    pub svc: DataStorage,
    pub db: Option<TestDb>,
}

impl Running {
    /// A fresh SQLite file or a fresh database for `backend`; `configure` adds to the options.
    pub async fn start(backend: Backend, configure: impl FnOnce(Options) -> Options) -> Running {
        match backend {
            Backend::Sqlite => Running {
                svc: DataStorage::launch(configure(Options::sqlite())).await,
                db: None,
            },
            Backend::Postgres => {
                let db = TestDb::create().await;
                db.migrate(&[]);
                let svc = DataStorage::launch(configure(Options::postgres(&db.runtime_url()))).await;
                Running { svc, db: Some(db) }
            }
            Backend::PostgresSingleRole => {
                let db = TestDb::create().await;
                let svc = DataStorage::launch(configure(Options::postgres(&db.url))).await;
                Running { svc, db: Some(db) }
            }
        }
    }

    pub async fn finish(self) {
        let Running { svc, db } = self;
        drop(svc);
        if let Some(db) = db {
            db.drop_db().await;
        }
    }
}

/// `behaviours_on!(start, [sqlite = Sqlite, postgres = Postgres], b1, b2)`: for each behaviour
/// `async fn b(svc: &DataStorage)`, a module `b` with one `#[tokio::test]` per backend
/// (`b::sqlite`, `b::postgres`), each on a `start(Backend::…).await` ([`Running`]) of its own,
/// so a failure names both the behaviour and the backend.
#[allow(unused_macros)] // only the suites that run per backend use it
macro_rules! behaviours_on {
    (@one $start:ident, $behaviour:ident, [$($test:ident = $backend:ident),*]) => {
        mod $behaviour {
            $(
                #[tokio::test]
                async fn $test() {
                    let running = super::$start(super::Backend::$backend).await;
                    super::$behaviour(&running.svc).await;
                    running.finish().await;
                }
            )*
        }
    };
    ($start:ident, $backends:tt, $($behaviour:ident),* $(,)?) => {
        $( behaviours_on!(@one $start, $behaviour, $backends); )*
    };
}
