//! The database owner's side of PostgreSQL: migrations, partitions, grants, retention.
//!
//! Two roles: the **owner** owns the tables; `audit-guard datastorage migrate` runs as the
//! owner (a Job or init container), applies the migrations, creates the monthly partitions of
//! the whole accepted time window plus the next month, grants the **runtime** role INSERT and
//! SELECT on the four parent tables (and nothing on any partition), and drops partitions past
//! the retention. The service runs as the runtime role: it cannot UPDATE, DELETE, TRUNCATE,
//! DROP, ALTER or write into a partition directly; the one thing it may create is this and
//! next month's partition, through the owner's SECURITY DEFINER function.
//!
//! Single-URL mode, for local use: when the service's own role owns the tables (or the
//! database is empty), the service migrates at start like `migrate` would, and says loudly
//! that its role could alter or drop the audit trail.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, Utc};
use sqlx::PgPool;

use futures::FutureExt;

use super::postgres::{self, check_retention, month_start, DdlLimits};
use super::store::DbError;

/// The migrations this binary carries.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The parent tables the runtime role writes and reads (through the parent only).
pub const RUNTIME_TABLES: &[&str] = &[
    "signal_processing_audit",
    "signal_processing_audit_ids",
    "signal_processing_audit_amendments",
    "break_glass_events",
    "export_manifests",
    "break_glass_claims",
    "tlog_pending",
    "tlog_entries",
    "tlog_hashes",
    "tlog_checkpoints",
    "tlog_cosignatures",
];

/// What the service found in the database at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// (version, checksum) of every migration recorded as applied; None: no migrations table.
    pub applied: Option<BTreeMap<i64, Vec<u8>>>,
    /// Whether the connecting role owns the audit table; None: the table does not exist yet.
    pub owns: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The schema is current (or newer); use it as is.
    Use,
    /// Migrations are pending and this role may apply them (single-URL mode).
    Migrate,
    Refuse(String),
}

/// The service's start decision from the schema state and the migrations it carries.
pub fn plan(state: &SchemaState, embedded: &BTreeMap<i64, Vec<u8>>) -> Plan {
    let applied = state.applied.clone().unwrap_or_default();
    for (version, checksum) in &applied {
        if embedded.get(version).is_some_and(|c| c != checksum) {
            return Plan::Refuse(format!(
                "migration {version} in the database differs from this binary's; the schema was changed by hand or by another build"
            ));
        }
    }
    let pending: Vec<i64> = embedded.keys().filter(|v| !applied.contains_key(v)).copied().collect();
    if pending.is_empty() {
        return Plan::Use;
    }
    match state.owns {
        Some(false) => Plan::Refuse(format!(
            "the database schema lacks migrations {pending:?} and this role does not own the tables: \
             run `audit-guard datastorage migrate` with the owner's database URL first"
        )),
        _ => Plan::Migrate,
    }
}

/// Whether the service's role is the owner (single-URL mode) once the plan ran.
pub fn single_role(state: &SchemaState) -> bool {
    state.owns != Some(false)
}

pub fn embedded() -> BTreeMap<i64, Vec<u8>> {
    MIGRATOR.iter().map(|m| (m.version, m.checksum.to_vec())).collect()
}

pub async fn schema_state(pool: &PgPool) -> anyhow::Result<SchemaState> {
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let applied = if has_table {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .context("reading _sqlx_migrations (the runtime role needs SELECT on it: run `audit-guard datastorage migrate --runtime-role <role>`)")?;
        Some(rows.into_iter().collect())
    } else {
        None
    };
    let owns: Option<bool> = sqlx::query_scalar(
        "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = to_regclass('signal_processing_audit')",
    )
    .fetch_optional(pool)
    .await?;
    Ok(SchemaState { applied, owns })
}

/// The months whose partitions should exist: from the month of `now - past` to next month.
pub fn window_months(now: DateTime<Utc>, past: Duration) -> Vec<(i32, u32)> {
    let earliest = now - chrono::Duration::from_std(past).unwrap_or(chrono::Duration::zero());
    let (mut y, mut m) = (earliest.year(), earliest.month());
    let last = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let mut out = vec![];
    while (y, m) <= last {
        out.push((y, m));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    out
}

/// Creates the window's partitions as the owner; months whose rows already sit in the
/// DEFAULT partition cannot get their own and are reported (their records stay queryable).
/// Each creation waits for its lock within `limits` ([`postgres::bounded_ddl`]); one that
/// still cannot get it fails the whole run (partitions created so far stay; a re-run converges).
pub async fn create_window_partitions(
    pool: &PgPool,
    now: DateTime<Utc>,
    past: Duration,
    limits: &DdlLimits,
) -> anyhow::Result<Vec<String>> {
    let mut created = vec![];
    for (y, m) in window_months(now, past) {
        let Some(start) = month_start(y, m) else { continue };
        let day = start.date_naive();
        let made = postgres::bounded_ddl(pool, limits, "create_partition", |c| {
            async move {
                Ok(
                    sqlx::query_scalar::<_, Option<String>>("SELECT signal_processing_audit_create_partition($1::date)")
                        .bind(day)
                        .fetch_one(c)
                        .await?,
                )
            }
            .boxed()
        })
        .await;
        let name = postgres::partition_name(y, m);
        match made {
            Ok(Some(name)) => created.push(name),
            Ok(None) => {}
            Err(e) if lock_wait(&e) => return Err(locked(&e, &format!("create partition {name}"), limits)),
            Err(e) => tracing::warn!(partition = %name, error = %e, "could not create partition"),
        }
    }
    Ok(created)
}

/// Whether an error is a lock (or statement) wait given up under [`DdlLimits`].
fn lock_wait(e: &DbError) -> bool {
    matches!(e, DbError::Sqlx(sqlx::Error::Database(d)) if postgres::gave_up_waiting(d.code().as_deref()))
}

/// The error of a step that could not get its lock within the bound.
fn locked(e: &DbError, what: &str, limits: &DdlLimits) -> anyhow::Error {
    anyhow::anyhow!(
        "could not {what}: another session holds a conflicting lock on the audit tables (a long query or an open \
         transaction; see pg_locks and pg_stat_activity); gave up after retrying for {} with each lock wait bounded by {} \
         (--ddl-retry-for, --ddl-lock-timeout) so that no INSERT queues behind this command; run it again once the lock is \
         released: {e}",
        humantime::format_duration(limits.retry_for),
        humantime::format_duration(limits.lock_timeout),
    )
}

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The runtime role's grants: INSERT and SELECT on the parents, the migrations table to read,
/// the next-months function; everything else revoked first (a re-run converges).
pub fn grant_statements(role: &str, schema: &str) -> Vec<String> {
    let role = quote_ident(role);
    let schema = quote_ident(schema);
    let tables = RUNTIME_TABLES.join(", ");
    vec![
        format!("REVOKE ALL ON {tables}, _sqlx_migrations FROM {role}"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT, INSERT ON {tables} TO {role}"),
        format!("GRANT SELECT ON _sqlx_migrations TO {role}"),
        format!("REVOKE ALL ON FUNCTION signal_processing_audit_create_partition(date) FROM {role}"),
        format!("GRANT EXECUTE ON FUNCTION signal_processing_audit_create_next_partitions() TO {role}"),
        format!("GRANT EXECUTE ON FUNCTION tlog_clear_sequenced() TO {role}"),
    ]
}

pub async fn grant_runtime(pool: &PgPool, role: &str) -> anyhow::Result<()> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text").fetch_one(pool).await?;
    let mut tx = pool.begin().await?;
    for stmt in grant_statements(role, &schema) {
        sqlx::query(&stmt).execute(&mut *tx).await.with_context(|| stmt.clone())?;
    }
    tx.commit().await?;
    Ok(())
}

/// What a role may do to the audit tables, as the catalog says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivilegeFacts {
    pub role: String,
    pub superuser: bool,
    pub bypass_rls: bool,
    pub member_of_owner: bool,
    pub create_on_schema: bool,
    pub create_partition_function: bool,
    /// (table, privilege) pairs the role holds, over the parents, the partitions and the migrations table.
    pub table_privileges: Vec<(String, String)>,
}

const PRIVILEGES: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"];

/// Everything beyond INSERT and SELECT on the parent tables (and SELECT on the migrations
/// table) is a problem: it would let the role change or remove audit records.
pub fn privilege_problems(f: &PrivilegeFacts) -> Vec<String> {
    let mut out = vec![];
    let r = &f.role;
    if f.superuser {
        out.push(format!("role {r} is a superuser: it can do anything to the audit trail"));
    }
    if f.bypass_rls {
        out.push(format!("role {r} has BYPASSRLS"));
    }
    if f.member_of_owner {
        out.push(format!(
            "role {r} is (a member of) the tables' owner: it can DROP, ALTER and TRUNCATE them"
        ));
    }
    if f.create_on_schema {
        out.push(format!("role {r} may CREATE in the tables' schema"));
    }
    if f.create_partition_function {
        out.push(format!(
            "role {r} may execute signal_processing_audit_create_partition(date) (any month)"
        ));
    }
    for (table, privilege) in &f.table_privileges {
        let allowed = match (table.as_str(), privilege.as_str()) {
            (t, "SELECT" | "INSERT") if RUNTIME_TABLES.contains(&t) => true,
            ("_sqlx_migrations", "SELECT") => true,
            _ => false,
        };
        if !allowed {
            out.push(format!("role {r} holds {privilege} on {table}"));
        }
    }
    out
}

pub async fn privilege_facts(pool: &PgPool, role: &str) -> anyhow::Result<PrivilegeFacts> {
    let (superuser, bypass_rls): (bool, bool) = sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(pool)
        .await?
        .with_context(|| format!("no role {role:?}"))?;
    let (member_of_owner, create_on_schema, create_partition_function): (bool, bool, bool) = sqlx::query_as(
        "SELECT pg_has_role($1, c.relowner, 'USAGE'), has_schema_privilege($1, n.oid, 'CREATE'), \
                has_function_privilege($1, 'signal_processing_audit_create_partition(date)', 'EXECUTE') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = 'signal_processing_audit'::regclass",
    )
    .bind(role)
    .fetch_one(pool)
    .await?;
    let mut tables: Vec<String> = RUNTIME_TABLES.iter().map(|t| t.to_string()).collect();
    tables.push("_sqlx_migrations".into());
    tables.extend(postgres::partition_names(pool).await?);
    let held: Vec<(String, String)> =
        sqlx::query_as("SELECT t, p FROM unnest($2::text[]) AS t, unnest($3::text[]) AS p WHERE has_table_privilege($1, t, p)")
            .bind(role)
            .bind(&tables)
            .bind(PRIVILEGES)
            .fetch_all(pool)
            .await?;
    Ok(PrivilegeFacts {
        role: role.to_string(),
        superuser,
        bypass_rls,
        member_of_owner,
        create_on_schema,
        create_partition_function,
        table_privileges: held,
    })
}

/// The service's role when the database is already migrated and owned by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The service's role owns the tables (it migrated them): local use only.
    SingleRole,
    /// The service runs as a runtime role with INSERT and SELECT only.
    TwoRoles,
}

/// At service start: migrate in single-URL mode, or check that the owner did.
pub async fn prepare(url: &str, past: Duration, limits: &DdlLimits) -> anyhow::Result<Mode> {
    let pool = postgres::ddl_pool(url, limits).await.context("connecting to PostgreSQL")?;
    let state = schema_state(&pool).await?;
    let mode = match plan(&state, &embedded()) {
        Plan::Refuse(why) => bail!("{why}"),
        Plan::Migrate => {
            apply_migrations(&pool, limits)
                .await
                .context("applying migrations (a runtime role cannot: run `audit-guard datastorage migrate` with the owner's URL first)")?;
            Mode::SingleRole
        }
        Plan::Use if single_role(&state) => Mode::SingleRole,
        Plan::Use => Mode::TwoRoles,
    };
    match mode {
        Mode::SingleRole => {
            for name in create_window_partitions(&pool, Utc::now(), past, limits).await? {
                tracing::info!(partition = %name, "partition created");
            }
            tracing::warn!(
                "single-role mode: the service's database role owns the audit tables, so it (and whoever holds its \
                 password) could ALTER, TRUNCATE or DROP them; for production run `audit-guard datastorage migrate` as \
                 the owner and the service as a role with INSERT and SELECT only (docs/datastorage.md)"
            );
        }
        Mode::TwoRoles => {
            let me: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&pool).await?;
            let facts = privilege_facts(&pool, &me).await?;
            let problems = privilege_problems(&facts);
            if problems.is_empty() {
                tracing::info!(role = %me, "runtime database role: INSERT and SELECT only");
            }
            for p in problems {
                tracing::warn!(problem = %p, "the runtime database role holds more than it needs");
            }
        }
    }
    pool.close().await;
    Ok(mode)
}

/// Applies the pending migrations on a session whose lock waits are bounded (see
/// [`ddl_pool`](postgres::ddl_pool)); each runs in a transaction, so one that gave up waiting
/// left nothing behind and the run is repeated with backoff within `limits.retry_for`.
async fn apply_migrations(pool: &PgPool, limits: &DdlLimits) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut failures = 0;
    loop {
        let e = match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e) | sqlx::migrate::MigrateError::ExecuteMigration(e, _)) => DbError::Sqlx(e),
            Err(e) => return Err(e.into()),
        };
        if !lock_wait(&e) {
            return Err(e.into());
        }
        failures += 1;
        let Some(wait) = postgres::ddl_retry_after(failures, started.elapsed(), limits.retry_for) else {
            return Err(locked(&e, "apply the migrations", limits));
        };
        tracing::warn!(failures, error = %e, retry_in = ?wait, "another session holds a conflicting lock; retrying the migrations");
        tokio::time::sleep(wait).await;
    }
}

/// `audit-guard datastorage migrate`.
/// What `audit-guard datastorage migrate` runs with (its flags, `config.rs`).
#[derive(Debug, Clone)]
pub struct MigrateSettings {
    pub database_url: Option<String>,
    pub database_url_file: Option<std::path::PathBuf>,
    pub runtime_role: Option<String>,
    pub time_window_past: std::time::Duration,
    pub retention_months: u32,
    pub ddl: DdlLimits,
}

pub async fn run(args: &MigrateSettings) -> anyhow::Result<()> {
    let url = super::db_url::database_url(args.database_url.as_deref(), args.database_url_file.as_deref())?
        .context("migrate needs the owner's --database-url or --database-url-file")?;
    check_retention(args.retention_months, args.time_window_past)?;
    let limits = args.ddl;
    let pool = postgres::ddl_pool(&url, &limits).await.context("connecting to PostgreSQL")?;
    apply_migrations(&pool, &limits).await.context("applying migrations")?;
    let version = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    println!("schema at migration {version}");
    for name in create_window_partitions(&pool, Utc::now(), args.time_window_past, &limits).await? {
        println!("created partition {name}");
    }
    if args.retention_months > 0 {
        let dropped = postgres::drop_old_partitions(&pool, args.retention_months, &limits)
            .await
            .map_err(|e| {
                if lock_wait(&e) {
                    locked(&e, "drop old partitions", &limits)
                } else {
                    e.into()
                }
            })?;
        for name in dropped {
            println!("retention: dropped partition {name}");
        }
    }
    if let Some(role) = &args.runtime_role {
        grant_runtime(&pool, role).await?;
        let problems = privilege_problems(&privilege_facts(&pool, role).await?);
        if !problems.is_empty() {
            bail!("the runtime role holds more than INSERT and SELECT:\n  {}", problems.join("\n  "));
        }
        println!(
            "runtime role {role}: INSERT and SELECT on {}; nothing else",
            RUNTIME_TABLES.join(", ")
        );
    }
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(v: &[(i64, u8)]) -> BTreeMap<i64, Vec<u8>> {
        v.iter().map(|(k, c)| (*k, vec![*c])).collect()
    }

    #[test]
    fn start_plan() {
        let all = emb(&[(1, 1), (2, 2)]);
        let state = |applied: Option<&[(i64, u8)]>, owns| SchemaState {
            applied: applied.map(emb),
            owns,
        };
        assert_eq!(plan(&state(None, None), &all), Plan::Migrate, "empty database");
        assert_eq!(plan(&state(Some(&[(1, 1)]), Some(true)), &all), Plan::Migrate);
        assert!(matches!(plan(&state(Some(&[(1, 1)]), Some(false)), &all), Plan::Refuse(w) if w.contains("datastorage migrate")));
        assert_eq!(plan(&state(Some(&[(1, 1), (2, 2)]), Some(false)), &all), Plan::Use);
        assert_eq!(
            plan(&state(Some(&[(1, 1), (2, 2), (3, 3)]), Some(false)), &all),
            Plan::Use,
            "a newer schema"
        );
        assert!(matches!(plan(&state(Some(&[(1, 9)]), Some(true)), &all), Plan::Refuse(w) if w.contains("differs")));
        assert!(single_role(&state(None, None)));
        assert!(!single_role(&state(None, Some(false))));
    }

    #[test]
    fn the_window_spans_its_months_and_the_next() {
        let now: DateTime<Utc> = "2026-02-10T00:00:00Z".parse().unwrap();
        let months = window_months(now, Duration::from_secs(400 * 86_400));
        assert_eq!(months.first(), Some(&(2025, 1)));
        assert_eq!(months.last(), Some(&(2026, 3)));
        assert_eq!(months.len(), 15);
        let dec: DateTime<Utc> = "2025-12-31T23:00:00Z".parse().unwrap();
        assert_eq!(window_months(dec, Duration::ZERO), vec![(2025, 12), (2026, 1)]);
    }

    #[test]
    fn retention_never_drops_what_the_window_accepts() {
        let past = crate::audit::TIME_WINDOW_PAST;
        assert_eq!(postgres::min_retention_months(past), 15);
        assert!(check_retention(0, past).is_ok(), "0 keeps everything");
        assert!(check_retention(14, past).is_err());
        assert!(check_retention(15, past).is_ok());
        // The promise behind the number: at the worst moment (the first instant of a month, after
        // a run of short months) the newest dropped month ended at least `past` ago.
        for now in ["2026-03-01T00:00:00Z", "2026-07-31T23:59:59Z", "2027-03-01T00:00:00Z"] {
            let now: DateTime<Utc> = now.parse().unwrap();
            let names: Vec<String> = window_months(now, Duration::from_secs(800 * 86_400))
                .into_iter()
                .map(|(y, m)| postgres::partition_name(y, m))
                .collect();
            for name in postgres::partitions_to_drop(names.iter().map(String::as_str), now, 15) {
                let (y, m) = postgres::parse_partition_name(&name).unwrap();
                let end = if m == 12 { month_start(y + 1, 1) } else { month_start(y, m + 1) }.unwrap();
                assert!(now - end >= chrono::Duration::from_std(past).unwrap(), "{name} at {now}");
            }
        }
    }

    #[test]
    fn only_insert_and_select_on_the_parents_is_clean() {
        let mut f = PrivilegeFacts {
            role: "app".into(),
            table_privileges: vec![
                ("signal_processing_audit".into(), "INSERT".into()),
                ("signal_processing_audit".into(), "SELECT".into()),
                ("_sqlx_migrations".into(), "SELECT".into()),
            ],
            ..Default::default()
        };
        assert!(privilege_problems(&f).is_empty());
        f.table_privileges
            .push(("signal_processing_audit_y2026m11".into(), "INSERT".into()));
        f.table_privileges.push(("break_glass_events".into(), "UPDATE".into()));
        f.table_privileges.push(("_sqlx_migrations".into(), "INSERT".into()));
        f.member_of_owner = true;
        f.superuser = true;
        let problems = privilege_problems(&f);
        assert_eq!(problems.len(), 5, "{problems:#?}");
    }

    #[test]
    fn role_names_are_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"; DROP TABLE x; --"), "\"a\"\"; DROP TABLE x; --\"");
        let g = grant_statements("app", "public");
        assert!(g.contains(&"GRANT USAGE ON SCHEMA \"public\" TO \"app\"".to_string()));
        assert!(g.iter().any(|s| s == "GRANT SELECT, INSERT ON signal_processing_audit, signal_processing_audit_ids, signal_processing_audit_amendments, break_glass_events, export_manifests, break_glass_claims, tlog_pending, tlog_entries, tlog_hashes, tlog_checkpoints, tlog_cosignatures TO \"app\""));
        assert!(g[0].starts_with("REVOKE ALL"));
    }
}
