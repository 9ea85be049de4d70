//! Connections: the service's pools (write, read, auditors'), the owner's DDL session, and the
//! bounds every DDL attempt runs under.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use crate::datastorage::failover;
use crate::datastorage::metrics;
use crate::datastorage::store::*;

/// Bounds on the owner's DDL: creating and dropping partitions, migrations. DDL on the audit
/// table waits for an ACCESS EXCLUSIVE lock, and while it waits every INSERT queues behind
/// it; so each attempt waits at most `lock_timeout` for a lock and runs at most
/// `statement_timeout` (0: no bound), and an attempt that gave up is retried with backoff
/// (by `migrate` for at most `retry_for`; by the service's upkeep until it succeeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdlLimits {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub retry_for: Duration,
}

pub const DDL_LOCK_TIMEOUT: Duration = Duration::from_millis(50);
pub const DDL_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DDL_RETRY_FOR: Duration = Duration::from_secs(300);
const DDL_BACKOFF_FIRST: Duration = Duration::from_secs(1);
const DDL_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Default for DdlLimits {
    fn default() -> Self {
        Self {
            lock_timeout: DDL_LOCK_TIMEOUT,
            statement_timeout: DDL_STATEMENT_TIMEOUT,
            retry_for: DDL_RETRY_FOR,
        }
    }
}

impl DdlLimits {
    /// The settings that bound one session's (or, with `LOCAL`, one transaction's) waits.
    /// lock_timeout 0 would mean "wait forever": it is at least a millisecond.
    pub fn settings(&self, scope: &str) -> [String; 2] {
        [
            format!("SET {scope} lock_timeout = {}", self.lock_timeout.as_millis().max(1)),
            format!("SET {scope} statement_timeout = {}", self.statement_timeout.as_millis()),
        ]
    }
}

/// The wait after `failures` failed attempts in a row: doubling from a second, at most a minute.
pub fn ddl_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    DDL_BACKOFF_FIRST.saturating_mul(1 << doublings).min(DDL_BACKOFF_MAX)
}

/// After `failures` failed attempts, `elapsed` since the first began: the wait before the
/// next, or None when that next attempt would start after `retry_for`.
pub fn ddl_retry_after(failures: u32, elapsed: Duration, retry_for: Duration) -> Option<Duration> {
    let wait = ddl_backoff(failures);
    (elapsed + wait <= retry_for).then_some(wait)
}

/// Whether a SQLSTATE says the statement gave up waiting for a lock (lock_timeout: 55P03).
/// Nothing was changed (the transaction rolled back), so the attempt may be repeated. A
/// statement over statement_timeout (57014) did work for that long: it is not repeated.
pub fn gave_up_waiting(sqlstate: Option<&str>) -> bool {
    sqlstate == Some("55P03")
}

pub(super) fn sqlstate(e: &DbError) -> Option<String> {
    match e {
        DbError::Sqlx(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// One attempt at `op` in a transaction whose lock waits and statements are bounded by `limits`.
async fn ddl_attempt<T, F>(pool: &PgPool, limits: &DdlLimits, op: &F) -> DbResult<T>
where
    F: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, DbResult<T>>,
{
    let mut tx = pool.begin().await?;
    // LOCAL: only this transaction; the pool's session settings stay as they are.
    for stmt in limits.settings("LOCAL") {
        sqlx::query(&stmt).execute(&mut *tx).await?;
    }
    let out = op(&mut tx).await?;
    tx.commit().await?;
    Ok(out)
}

/// `op` under `limits`, retried with backoff while it gives up waiting for a lock, for at most
/// `limits.retry_for`; then the last error. `what` names it in logs and metrics.
pub async fn bounded_ddl<T, F>(pool: &PgPool, limits: &DdlLimits, what: &'static str, op: F) -> DbResult<T>
where
    F: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, DbResult<T>>,
{
    let started = std::time::Instant::now();
    let mut failures = 0;
    loop {
        let err = match ddl_attempt(pool, limits, &op).await {
            Ok(out) => return Ok(out),
            Err(e) if gave_up_waiting(sqlstate(&e).as_deref()) => e,
            Err(e) => return Err(e),
        };
        failures += 1;
        metrics::DDL_GAVE_UP.with_label_values(&[what]).inc();
        let Some(wait) = ddl_retry_after(failures, started.elapsed(), limits.retry_for) else {
            return Err(err);
        };
        tracing::warn!(what, failures, error = %err, retry_in = ?wait, "another session holds a conflicting lock; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Connection settings of the service's pools.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub url: String,
    pub write_connections: u32,
    pub read_connections: u32,
    /// Every statement of the service is cancelled by PostgreSQL after this long.
    pub statement_timeout: Duration,
    pub audit_connections: u32,
    /// The same bound for the auditors' pool (a report's aggregates over a quarter take longer).
    pub audit_statement_timeout: Duration,
    /// Bounds on partition upkeep.
    pub ddl: DdlLimits,
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    if !url.contains("://") {
        return failover::redact_keywords(url);
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// One pool; every session gets the statement timeout and cheap TOAST compression.
pub async fn pool(url: &str, max: u32, statement_timeout: Duration) -> anyhow::Result<PgPool> {
    pool_with(url, max, statement_timeout, vec![]).await
}

/// One connection for the owner's DDL (`migrate`, single-role start): every lock wait and
/// statement of the session is bounded by `limits`.
pub async fn ddl_pool(url: &str, limits: &DdlLimits) -> anyhow::Result<PgPool> {
    pool_with(url, 1, limits.statement_timeout, limits.settings("SESSION").to_vec()).await
}

/// Sessions of the read pool run their queries in one process each: parallel workers would let
/// a few heavy statistics take every core from the write path.
pub(super) const READ_SESSION: &str = "SET max_parallel_workers_per_gather = 0";

pub(super) async fn pool_with(url: &str, max: u32, statement_timeout: Duration, session: Vec<String>) -> anyhow::Result<PgPool> {
    let session = std::sync::Arc::new(session);
    let urls = failover::split_hosts(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Several servers: only the primary may serve (a connection opened on a stale choice is refused).
    let servers = match urls.len() {
        1 => None,
        _ => Some(Arc::new(failover::Servers::new(&urls)?)),
    };
    let (options, probe) = match &servers {
        None => (urls[0].parse::<PgConnectOptions>()?, None),
        Some(s) => {
            let conn = s.locate().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            (s.current(), Some(conn))
        }
    };
    let primary_only = servers.is_some();
    // 0 switches the timeout off (migrations).
    let timeout_ms = statement_timeout.as_millis();
    let pool = PgPoolOptions::new()
        .max_connections(max.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            let session = session.clone();
            Box::pin(async move {
                if primary_only && !failover::is_primary(&mut *conn).await? {
                    return Err(sqlx::Error::Protocol(
                        "the server is a standby (in recovery), not the primary".into(),
                    ));
                }
                sqlx::query(&format!("SET statement_timeout = {timeout_ms}"))
                    .execute(&mut *conn)
                    .await?;
                for stmt in session.iter() {
                    sqlx::query(stmt).execute(&mut *conn).await?;
                }
                // Records exceed the TOAST threshold; lz4 compresses them far cheaper than the
                // default pglz. Servers built without lz4 keep their default.
                if let Err(e) = sqlx::query("SET default_toast_compression = 'lz4'").execute(conn).await {
                    tracing::debug!(error = %e, "lz4 TOAST compression unavailable");
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    if let Some(servers) = servers {
        servers.watch(pool.clone(), probe);
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_retries_back_off_and_stop_at_the_bound() {
        let s = Duration::from_secs;
        assert_eq!((ddl_backoff(1), ddl_backoff(2), ddl_backoff(3)), (s(1), s(2), s(4)));
        assert_eq!(ddl_backoff(7), s(60), "at most a minute");
        assert_eq!(ddl_backoff(u32::MAX), s(60));
        assert_eq!(ddl_retry_after(1, s(0), s(10)), Some(s(1)));
        assert_eq!(ddl_retry_after(3, s(6), s(10)), Some(s(4)));
        assert_eq!(ddl_retry_after(3, s(7), s(10)), None, "the next attempt would start past the bound");
        assert_eq!(ddl_retry_after(1, s(0), Duration::ZERO), None, "no bound: one attempt");
    }

    #[test]
    fn only_giving_up_on_a_wait_is_retried() {
        assert!(gave_up_waiting(Some("55P03")), "lock_timeout");
        assert!(!gave_up_waiting(Some("57014")), "statement_timeout: the work itself took that long");
        assert!(!gave_up_waiting(Some("42501")), "insufficient privilege");
        assert!(!gave_up_waiting(None));
        let d = DdlLimits {
            lock_timeout: Duration::ZERO,
            statement_timeout: Duration::from_secs(60),
            retry_for: Duration::ZERO,
        };
        assert_eq!(
            d.settings("LOCAL"),
            [
                "SET LOCAL lock_timeout = 1".to_string(),
                "SET LOCAL statement_timeout = 60000".to_string()
            ],
            "a lock_timeout of 0 would wait forever"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("host=h password=secret"), "host=h password=***");
    }
}
