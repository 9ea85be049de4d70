//! The Data Storage Service: audit records over REST, stored in PostgreSQL or embedded SQLite.

pub mod api;
pub mod auth;
pub mod authz;
pub mod break_glass;
pub mod cache;
pub mod db_url;
pub mod export;
pub mod failover;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod migrate;
pub mod postgres;
pub mod problem;
pub mod query;
pub mod records;
pub mod report;
pub mod sqlite;
pub mod stats;
pub mod store;
pub mod tlog;
pub mod tlog_api;
pub mod verify;
pub mod witnesses;

pub use db_url::database_url;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::TimeWindow;
use crate::evidence::chain;
use crate::evidence::note::{SignerKey, ALG_ED25519};
use crate::evidence::signing::{generate_signing_key, Signer};
use crate::{certs, https};
use auth::{Authenticator, TokenReviewer, TokensFile};
use authz::{AccessReviewer, Authorizer};
use limits::{LaneSettings, Lanes};
use store::Store;

/// Which authenticator the flags and environment ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChoice {
    Insecure,
    TokensFile(std::path::PathBuf),
    TokenReview,
}

/// What `audit-guard datastorage` runs with: one field a flag (the flags are documented where
/// they are parsed, `config.rs`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls_cert_dir: Option<PathBuf>,
    pub plain_http: bool,
    pub max_client_connections: usize,
    pub header_read_timeout: Duration,
    pub max_client_connections_per_peer: usize,
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connection_age: Duration,
    pub database_url: Option<String>,
    pub database_url_file: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub tokens_file: Option<PathBuf>,
    pub token_review: bool,
    pub token_audience: String,
    pub token_review_refused_ttl: Duration,
    pub token_review_rate: f64,
    pub token_review_burst: u32,
    pub writers_group: String,
    pub readers_group: String,
    pub insecure_no_auth: bool,
    pub max_batch: usize,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub time_window_past: Duration,
    pub time_window_future: Duration,
    pub stats_max_range: Duration,
    pub statement_timeout: Duration,
    pub request_timeout: Duration,
    pub max_concurrent_writes: usize,
    pub max_concurrent_reads: usize,
    pub retention_months: u32,
    pub max_connections: u32,
    pub max_read_connections: u32,
    pub chain_key_file: Option<PathBuf>,
    pub chain_shards: u32,
    pub signing_key_file: Option<PathBuf>,
    pub log_signing_key_file: Option<PathBuf>,
    pub log_sequence_interval: Duration,
    pub witness_policy_file: Option<PathBuf>,
    pub max_concurrent_audits: usize,
    pub audit_request_timeout: Duration,
    pub audit_statement_timeout: Duration,
    pub report_max_range: Duration,
    pub ddl: postgres::DdlLimits,
}

impl Settings {
    pub fn review_limits(&self) -> auth::ReviewLimits {
        auth::ReviewLimits {
            refused_ttl: self.token_review_refused_ttl,
            unknown_per_second: self.token_review_rate,
            unknown_burst: self.token_review_burst,
        }
    }
}

pub fn choose_auth(args: &Settings, in_cluster: bool) -> anyhow::Result<AuthChoice> {
    let chosen = [args.insecure_no_auth, args.tokens_file.is_some(), args.token_review]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen > 1 {
        anyhow::bail!("choose one of --insecure-no-auth, --tokens-file and --token-review");
    }
    if args.insecure_no_auth {
        return Ok(AuthChoice::Insecure);
    }
    if let Some(path) = &args.tokens_file {
        return Ok(AuthChoice::TokensFile(path.clone()));
    }
    if args.token_review || in_cluster {
        return Ok(AuthChoice::TokenReview);
    }
    anyhow::bail!(
        "no authentication configured: pass --tokens-file <csv> (token,user,uid[,\"groups\"]), or --token-review \
         (Kubernetes TokenReview), or --insecure-no-auth to accept unauthenticated requests (never in production)"
    )
}

fn window(args: &Settings) -> TimeWindow {
    TimeWindow {
        past: args.time_window_past,
        future: args.time_window_future,
    }
}

/// A key file beside the SQLite database, created when absent (local use: the file lives on
/// the same disk as the records, so it protects less than a key mounted from elsewhere).
fn local_key_file(
    dir: &Path,
    name: &str,
    what: &str,
    create: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    if !path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(create()?.as_bytes())?;
        tracing::warn!(
            file = %path.display(),
            "created a {what} beside the SQLite database; keep a copy elsewhere (an auditor's verify needs it), and in production mount one from outside"
        );
    }
    Ok(path)
}

/// The chain's keys: `--chain-key-file`, or (SQLite only) one beside the database.
pub fn chain_keys(args: &Settings, sqlite: bool) -> anyhow::Result<chain::ChainKeys> {
    let path = match (&args.chain_key_file, sqlite) {
        (Some(p), _) => p.clone(),
        (None, true) => local_key_file(&args.data_dir, "chain.key", "chain key", || {
            chain::generate_key_line("local-1").map_err(anyhow::Error::msg)
        })?,
        (None, false) => anyhow::bail!(
            "PostgreSQL needs --chain-key-file: the key of the records' hash chain, kept outside the database \
             (create one with `audit-guard keys --chain-key <file>` and mount it as a Secret)"
        ),
    };
    let keys = chain::ChainKeys::load(&path)?;
    tracing::info!(file = %path.display(), active = %keys.active().id, keys = ?keys.ids(), "hash chain keys loaded");
    Ok(keys)
}

/// The export signing key: `--signing-key-file`, or (SQLite only) one beside the database.
fn signer(args: &Settings, sqlite: bool) -> anyhow::Result<Option<Signer>> {
    let path = match (&args.signing_key_file, sqlite) {
        (Some(p), _) => p.clone(),
        (None, true) => local_key_file(&args.data_dir, "signing-key.pem", "export signing key", || {
            Ok(generate_signing_key()?.0)
        })?,
        (None, false) => {
            tracing::warn!("no --signing-key-file: exports are refused (503) until Data Storage has a signing key");
            return Ok(None);
        }
    };
    let signer = Signer::load(&path)?;
    tracing::info!(file = %path.display(), key_id = %signer.key_id, "export signing key loaded");
    Ok(Some(signer))
}

/// The transparency log's checkpoint key: `--log-signing-key-file`, or (SQLite only) one
/// beside the database; None: the log sequences but signs no checkpoint.
fn log_key(args: &Settings, sqlite: bool) -> anyhow::Result<Option<SignerKey>> {
    let path = match (&args.log_signing_key_file, sqlite) {
        (Some(p), _) => p.clone(),
        (None, true) => local_key_file(&args.data_dir, "log.key", "transparency log key", || {
            let key = SignerKey::generate(LOCAL_LOG_NAME, ALG_ED25519)?;
            Ok(format!("{}\n", key.to_secret_string()))
        })?,
        (None, false) => {
            tracing::warn!(
                "no --log-signing-key-file: the transparency log sequences every stored item but signs no checkpoint \
                 (GET /api/v1/log/checkpoint answers 503) until Data Storage has a log key"
            );
            return Ok(None);
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the log key {}", path.display()))?;
    let key = load_log_key(&text).with_context(|| format!("the log key {}", path.display()))?;
    tracing::info!(file = %path.display(), verifier_key = %key.verifier(), "transparency log key loaded");
    Ok(Some(key))
}

/// The witnesses of `--witness-policy-file` (none without it).
fn witness_policy(args: &Settings) -> anyhow::Result<Vec<witnesses::PolicyWitness>> {
    let Some(path) = &args.witness_policy_file else {
        return Ok(vec![]);
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the witness policy {}", path.display()))?;
    let policy = witnesses::parse_policy(&text).map_err(|e| anyhow::anyhow!("the witness policy {}: {e}", path.display()))?;
    for w in &policy {
        tracing::info!(witness = %w.key, url = %w.url, "checkpoints are pushed to this witness");
    }
    Ok(policy)
}

/// A signer key file's content: an Ed25519 note key (not a cosignature key).
pub fn load_log_key(text: &str) -> anyhow::Result<SignerKey> {
    let key = SignerKey::parse(text.trim())?;
    if key.verifier().alg != ALG_ED25519 {
        anyhow::bail!(
            "a log key signs checkpoints with Ed25519 (algorithm 0x01), not {:#04x}",
            key.verifier().alg
        );
    }
    Ok(key)
}

/// The log's name (origin) when SQLite creates its own key.
pub const LOCAL_LOG_NAME: &str = "audit-guard.local/datastorage";

fn is_sqlite(args: &Settings) -> anyhow::Result<bool> {
    Ok(database_url(args.database_url.as_deref(), args.database_url_file.as_deref())?.is_none())
}

async fn open_store(args: &Settings, keys: Arc<chain::ChainKeys>) -> anyhow::Result<Arc<dyn Store>> {
    match database_url(args.database_url.as_deref(), args.database_url_file.as_deref())? {
        Some(url) => {
            let ddl = args.ddl;
            let mode = migrate::prepare(&url, args.time_window_past, &ddl).await?;
            let settings = postgres::PgSettings {
                url: url.clone(),
                write_connections: args.max_connections,
                read_connections: args.max_read_connections,
                statement_timeout: args.statement_timeout,
                audit_connections: u32::try_from(args.max_concurrent_audits.max(1)).unwrap_or(u32::MAX),
                audit_statement_timeout: args.audit_statement_timeout,
                ddl,
            };
            let writer = postgres::ChainWriter {
                keys,
                shards: args.chain_shards,
            };
            let store = Arc::new(postgres::PgStore::connect(&settings, writer).await?);
            store.spawn_partition_upkeep();
            tracing::info!(
                database = %postgres::redact(&url),
                ?mode,
                "storing audit records in PostgreSQL table signal_processing_audit; query with: psql \"$DATABASE_URL\" -c \
                 'SELECT id, status, completed_at FROM signal_processing_audit ORDER BY completed_at DESC LIMIT 10'"
            );
            if args.retention_months > 0 {
                if mode == migrate::Mode::TwoRoles {
                    anyhow::bail!(
                        "--retention-months needs the tables' owner; with a runtime role run \
                         `audit-guard datastorage migrate --retention-months {}` as the owner instead (e.g. daily)",
                        args.retention_months
                    );
                }
                postgres::check_retention(args.retention_months, args.time_window_past)?;
                postgres::spawn_partition_drops(store.write_pool().clone(), args.retention_months, ddl);
            }
            Ok(store)
        }
        None => {
            let store = sqlite::SqliteStore::open(&args.data_dir, args.max_read_connections, keys).await?;
            let file = args.data_dir.join("audit.db");
            tracing::info!(
                file = %file.display(),
                "storing audit records in embedded SQLite; query with: sqlite3 {} \
                 'SELECT id, status, completed_at FROM signal_processing_audit ORDER BY completed_at DESC LIMIT 10'",
                file.display()
            );
            if args.retention_months > 0 {
                tracing::warn!("--retention-months applies to PostgreSQL partitions only; SQLite keeps every record");
            }
            Ok(Arc::new(store))
        }
    }
}

async fn authentication(args: &Settings, shutdown: &CancellationToken) -> anyhow::Result<(Authenticator, Authorizer)> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    Ok(match choose_auth(args, in_cluster)? {
        AuthChoice::Insecure => {
            tracing::warn!("AUTHENTICATION DISABLED (--insecure-no-auth): anyone who can reach this port can read and write audit records");
            (Authenticator::Insecure, Authorizer::AllowAll)
        }
        AuthChoice::TokensFile(path) => {
            tracing::info!(
                writers = %args.writers_group, readers = %args.readers_group,
                "tokens file: the groups column decides who writes and who reads"
            );
            let tokens = TokensFile::load(path)?;
            tokens.spawn_reloader(shutdown.clone());
            (
                Authenticator::Tokens(tokens),
                Authorizer::Groups {
                    writers: args.writers_group.clone(),
                    readers: args.readers_group.clone(),
                },
            )
        }
        AuthChoice::TokenReview => {
            let client = kube::Client::try_default()
                .await
                .context("--token-review needs a Kubernetes client (in-cluster config or KUBECONFIG)")?;
            tracing::info!(
                audience = %args.token_audience,
                "authenticating with TokenReview, authorizing with SubjectAccessReview ({} {})",
                authz::RESOURCE,
                authz::API_GROUP
            );
            (
                Authenticator::TokenReview(Box::new(TokenReviewer::new(
                    client.clone(),
                    args.token_audience.clone(),
                    args.review_limits(),
                ))),
                Authorizer::AccessReview(AccessReviewer::new(client)),
            )
        }
    })
}

/// TLS from `--tls-cert-dir` (reloaded like the webhook's), or plain HTTP only when asked for.
fn tls(args: &Settings, shutdown: &CancellationToken) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    match (&args.tls_cert_dir, args.plain_http) {
        (Some(dir), false) => {
            let resolver = certs::ReloadingResolver::load(dir).context("loading the Data Storage serving certificate")?;
            resolver.spawn_reloader(shutdown.clone());
            Ok(Some(Arc::new(certs::server_config(resolver)?)))
        }
        (None, true) => {
            tracing::warn!(
                "PLAIN HTTP (--plain-http): whoever can intercept this traffic can read records or answer 201 without storing; local use only"
            );
            Ok(None)
        }
        (Some(_), true) => anyhow::bail!("choose one of --tls-cert-dir and --plain-http"),
        (None, false) => anyhow::bail!(
            "Data Storage serves TLS: pass --tls-cert-dir <dir holding tls.crt and tls.key> (`audit-guard certs` writes one to \
             certs/datastorage), or --plain-http for local use"
        ),
    }
}

pub async fn run(args: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (auth, authz) = authentication(&args, &shutdown).await?;
    let tls = tls(&args, &shutdown)?;
    metrics::init();
    certs::metrics::init();
    https::metrics::init();
    let sqlite = is_sqlite(&args)?;
    let keys = Arc::new(chain_keys(&args, sqlite)?);
    let signer = signer(&args, sqlite)?.map(Arc::new);
    let log_key = log_key(&args, sqlite)?.map(Arc::new);
    let store = open_store(&args, keys.clone()).await?;
    tlog::spawn_sequencer(store.clone(), log_key.clone(), args.log_sequence_interval, shutdown.clone());
    let policy = witness_policy(&args)?;
    let witness_count = policy.len();
    witnesses::spawn_pusher(store.clone(), policy, args.log_sequence_interval, shutdown.clone());
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        %addr,
        backend = store.backend(),
        "Data Storage listening; try: curl -H 'Authorization: Bearer <token>' {scheme}://{addr}{}?limit=10",
        crate::api_paths::BASE
    );
    let state = Arc::new(http::AppState {
        store,
        auth,
        authz,
        keys,
        signer,
        log_key,
        witnesses: witness_count,
        limits: http::ApiLimits {
            max_batch: args.max_batch,
            max_body_bytes: args.max_body_bytes,
            body_read_timeout: args.body_read_timeout,
            window: window(&args),
            stats_max_range: args.stats_max_range,
            report_max_range: args.report_max_range,
        },
    });
    let lanes = Arc::new(Lanes::new(LaneSettings {
        max_concurrent_writes: args.max_concurrent_writes,
        max_concurrent_reads: args.max_concurrent_reads,
        max_concurrent_audits: args.max_concurrent_audits,
        write_wait: args.request_timeout,
        read_wait: Duration::from_secs(1),
        request_timeout: args.request_timeout,
        audit_request_timeout: args.audit_request_timeout,
    }));
    let limits = https::ListenerLimits {
        name: "datastorage",
        max_connections: args.max_client_connections,
        max_connections_per_peer: args.max_client_connections_per_peer,
        max_handshakes: args.max_handshakes,
        handshake_timeout: args.handshake_timeout,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        max_connection_age: args.max_connection_age,
        ..Default::default()
    };
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    https::serve_with(listener, tls, api::router(state, lanes), shutdown, args.request_timeout, &limits)
        .await
        .context("serving")?;
    tracing::info!("Data Storage stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `audit-guard datastorage <extra>`, as main hands it over.
    fn args(extra: &[&str]) -> Settings {
        (&crate::config::datastorage_args(extra)).into()
    }

    #[test]
    fn auth_must_be_chosen_outside_a_cluster() {
        assert!(choose_auth(&args(&[]), false).is_err());
        assert_eq!(choose_auth(&args(&[]), true).unwrap(), AuthChoice::TokenReview);
        assert_eq!(choose_auth(&args(&["--insecure-no-auth"]), true).unwrap(), AuthChoice::Insecure);
        assert_eq!(
            choose_auth(&args(&["--tokens-file", "t.csv"]), true).unwrap(),
            AuthChoice::TokensFile("t.csv".into())
        );
        assert_eq!(choose_auth(&args(&["--token-review"]), false).unwrap(), AuthChoice::TokenReview);
        assert!(choose_auth(&args(&["--token-review", "--insecure-no-auth"]), false).is_err());
    }

    #[test]
    fn the_database_url_comes_from_the_flag_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgres://u:p@h/db\n").unwrap();
        assert_eq!(database_url(None, Some(&f)).unwrap().as_deref(), Some("postgres://u:p@h/db"));
        assert_eq!(database_url(Some("postgres://x"), None).unwrap().as_deref(), Some("postgres://x"));
        assert_eq!(database_url(Some(""), None).unwrap(), None);
        assert_eq!(database_url(None, None).unwrap(), None);
        assert!(database_url(None, Some(&dir.path().join("missing"))).is_err());
        assert!(database_url(Some("x"), Some(&f)).is_err());
    }
}
