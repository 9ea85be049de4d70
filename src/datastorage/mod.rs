//! The Data Storage Service: audit records over REST, stored in PostgreSQL or embedded SQLite.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod postgres;
pub mod problem;
pub mod sqlite;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::DataStorageArgs;
use auth::{Authenticator, TokenReviewer, TokensFile};
use store::Store;

/// Which authenticator the flags and environment ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChoice {
    Insecure,
    TokensFile(std::path::PathBuf),
    TokenReview,
}

pub fn choose_auth(args: &DataStorageArgs, in_cluster: bool) -> anyhow::Result<AuthChoice> {
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

async fn open_store(args: &DataStorageArgs) -> anyhow::Result<Arc<dyn Store>> {
    match args.database_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let store = postgres::PgStore::connect(url, args.max_connections).await?;
            tracing::info!(
                database = %postgres::redact(url),
                "storing audit records in PostgreSQL table signal_processing_audit; query with: psql \"$DATABASE_URL\" -c \
                 'SELECT id, status, completed_at FROM signal_processing_audit ORDER BY completed_at DESC LIMIT 10'"
            );
            if args.retention_months > 0 {
                store.spawn_retention(args.retention_months);
            }
            Ok(Arc::new(store))
        }
        None => {
            let store = sqlite::SqliteStore::open(&args.data_dir).await?;
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

pub async fn run(args: DataStorageArgs) -> anyhow::Result<()> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let auth = match choose_auth(&args, in_cluster)? {
        AuthChoice::Insecure => {
            tracing::warn!("AUTHENTICATION DISABLED (--insecure-no-auth): anyone who can reach this port can read and write audit records");
            Authenticator::Insecure
        }
        AuthChoice::TokensFile(path) => Authenticator::Tokens(TokensFile::load(path)?),
        AuthChoice::TokenReview => {
            let client = kube::Client::try_default()
                .await
                .context("--token-review needs a Kubernetes client (in-cluster config or KUBECONFIG)")?;
            tracing::info!("authenticating bearer tokens with the Kubernetes TokenReview API");
            Authenticator::TokenReview(TokenReviewer::new(client))
        }
    };
    metrics::init();
    let store = open_store(&args).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        backend = store.backend(),
        "Data Storage listening; try: curl -H 'Authorization: Bearer <token>' http://{addr}{}?limit=10",
        api::BASE
    );
    let state = Arc::new(api::AppState {
        store,
        auth,
        max_batch: args.max_batch,
        max_body_bytes: args.max_body_bytes,
    });
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("Data Storage stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> DataStorageArgs {
        let argv = ["audit-guard", "datastorage"].iter().chain(extra).copied();
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Datastorage(a)) => *a,
            other => panic!("{other:?}"),
        }
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
}
