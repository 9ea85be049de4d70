//! Child processes of the real binary for end-to-end tests: `audit-guard datastorage`
//! (embedded SQLite without auth, or with the arguments a test gives) and
//! `audit-guard serve --disable-webhook`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

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

/// A real Data Storage Service on a fixed port and data directory, so it can be stopped and
/// started again with its records intact.
pub struct DataStorage {
    pub name: String,
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    /// Storage and auth arguments; empty means SQLite in `dir` without auth.
    backend: Vec<String>,
    /// Environment of the child (e.g. KUBECONFIG for TokenReview).
    env: Vec<(String, String)>,
    /// Bearer token for the test's own reads, when Data Storage wants one.
    pub token: Option<String>,
}

impl DataStorage {
    pub async fn start(cp: &ControlPlane, name: &str) -> Result<Self> {
        Self::start_with(cp, name, &[]).await
    }

    /// As [`DataStorage::start`], with other storage and auth arguments, e.g.
    /// `--database-url <url> --tokens-file <file>`.
    pub async fn start_with(cp: &ControlPlane, name: &str, backend: &[&str]) -> Result<Self> {
        Self::start_with_env(cp, name, backend, &[]).await
    }

    /// As [`DataStorage::start_with`], with environment variables for the child. Without a
    /// `--database-url` in `backend`, the records go to SQLite in the data directory; without
    /// `--tls-cert-dir <dir>`, it serves plain HTTP (with it, the test trusts `<dir>/ca.crt`).
    pub async fn start_with_env(cp: &ControlPlane, name: &str, backend: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let port = free_port()?;
        let tls_dir = backend.iter().position(|a| *a == "--tls-cert-dir").and_then(|i| backend.get(i + 1));
        let (url, http) = match tls_dir {
            Some(dir) => {
                let ca = std::fs::read(std::path::Path::new(dir).join("ca.crt"))?;
                let http = reqwest::Client::builder()
                    .use_rustls_tls()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
                    .build()?;
                (format!("https://127.0.0.1:{port}"), http)
            }
            None => (format!("http://127.0.0.1:{port}"), reqwest::Client::new()),
        };
        let ds = Self {
            name: name.to_string(),
            port,
            url,
            dir: tempfile::tempdir()?,
            http,
            backend: backend.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            token: None,
        };
        ds.resume(cp).await?;
        Ok(ds)
    }

    /// Starts the process (again) on the same port and data directory.
    pub async fn resume(&self, cp: &ControlPlane) -> Result<()> {
        let mut cmd = Command::new(binary());
        cmd.arg("datastorage")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .env_remove("DATABASE_URL");
        if !self.backend.iter().any(|a| a == "--tls-cert-dir") {
            cmd.arg("--plain-http");
        }
        if self.backend.is_empty() {
            cmd.arg("--data-dir").arg(self.dir.path()).arg("--insecure-no-auth");
        } else {
            if !self.backend.iter().any(|a| a == "--database-url") {
                cmd.arg("--data-dir").arg(self.dir.path());
            } else if !self.backend.iter().any(|a| a == "--chain-key-file") {
                // PostgreSQL needs the chain's key from outside the database.
                cmd.arg("--chain-key-file").arg(self.chain_key_file());
                cmd.arg("--signing-key-file").arg(self.signing_key_file());
            }
            cmd.args(&self.backend);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cp.spawn(&self.name, cmd)?;
        wait_healthy_with(self.http.clone(), format!("{}/readyz", self.url), "datastorage ready").await
    }

    /// SIGKILL: Data Storage is simply gone.
    pub fn stop(&self, cp: &ControlPlane) -> Result<()> {
        cp.kill(&self.name)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.url));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POSTs `body` to `path` with `token` (Data Storage's CA trusted); the answer's status.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Result<u16> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        Ok(resp.status().as_u16())
    }

    /// The stored record with this id (with its `amendments`, if any), if any.
    pub async fn record(&self, id: &str) -> Result<Option<Value>> {
        let resp = self.get(&format!("/api/v1/audit/signal-processing/{id}")).send().await?;
        match resp.status().as_u16() {
            200 => Ok(Some(resp.json().await?)),
            404 => Ok(None),
            s => bail!("GET record {id}: {s}: {}", resp.text().await.unwrap_or_default()),
        }
    }

    /// The break-glass events stored for a SignalProcessing uid.
    pub async fn break_glass_events(&self, uid: &str) -> Result<Vec<Value>> {
        let resp = self.get("/api/v1/audit/break-glass-events").send().await?;
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

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The chain key file: the one SQLite creates in the data directory, or (PostgreSQL) one
    /// generated here at first start.
    pub fn chain_key_file(&self) -> PathBuf {
        let path = self.dir.path().join("chain.key");
        if !path.exists() {
            let _ = std::fs::write(
                &path,
                audit_guard::datastorage::chain::generate_key_line("test-1").unwrap_or_default(),
            );
        }
        path
    }

    /// The export signing key: SQLite's in the data directory, or (PostgreSQL) one generated here.
    pub fn signing_key_file(&self) -> PathBuf {
        let path = self.dir.path().join("signing-key.pem");
        if !path.exists() {
            if let Ok((private, _)) = audit_guard::datastorage::export::generate_signing_key() {
                let _ = std::fs::write(&path, private);
            }
        }
        path
    }

    /// The export signing public key (PEM), written beside the private one.
    pub fn public_key_file(&self) -> PathBuf {
        let path = self.dir.path().join("signing-key.pub");
        if let Ok(private) = std::fs::read_to_string(self.signing_key_file()) {
            if let Ok(signer) = audit_guard::datastorage::export::Signer::from_pem(&private) {
                let _ = std::fs::write(&path, signer.public_pem);
            }
        }
        path
    }

    /// A client trusting this Data Storage (its CA when it serves TLS).
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }
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
