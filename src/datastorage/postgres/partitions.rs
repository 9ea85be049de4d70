//! The audit table's monthly partitions: their names, this and next month's creation (the
//! service's hourly upkeep, through the owner's function), and partition drops past the
//! retention months (the owner's; not the CR cleanup of [`crate::retention`]).

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use futures::FutureExt;
use sqlx::PgPool;

use crate::datastorage::metrics;
use crate::datastorage::store::*;

use super::pool::{bounded_ddl, DdlLimits};

pub(super) const PARENT: &str = "signal_processing_audit";
/// How often partition upkeep runs when the last run succeeded.
pub(super) const UPKEEP_EVERY: Duration = Duration::from_secs(3600);

/// `signal_processing_audit_y2025m11`
pub fn partition_name(year: i32, month: u32) -> String {
    format!("{PARENT}_y{year:04}m{month:02}")
}

pub fn parse_partition_name(name: &str) -> Option<(i32, u32)> {
    let rest = name.strip_prefix(PARENT)?.strip_prefix("_y")?;
    let (y, m) = rest.split_once('m')?;
    let (y, m) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then_some((y, m))
}

pub fn month_start(year: i32, month: u32) -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Utc.from_utc_datetime(&t))
}

/// Monthly partitions that ended before the first day of the month `keep_months` before `now`.
pub fn partitions_to_drop<'a>(names: impl IntoIterator<Item = &'a str>, now: DateTime<Utc>, keep_months: u32) -> Vec<String> {
    if keep_months == 0 {
        return vec![];
    }
    let total = now.year() * 12 + now.month0() as i32 - keep_months as i32;
    let cutoff = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| parse_partition_name(n).is_some_and(|ym| ym < cutoff))
        .map(String::from)
        .collect();
    out.sort();
    out
}

/// The names of the parent's partitions, from the catalog (readable by every role).
pub async fn partition_names(pool: &PgPool) -> DbResult<Vec<String>> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass($1)",
    )
    .bind(PARENT)
    .fetch_all(pool)
    .await?;
    Ok(names.into_iter().map(|(n,)| n).collect())
}

/// How far apart upkeep's two looks at the audit table's lock holders are. A transaction seen
/// at both is a long reader (a report, an export, a held LOCK TABLE), not one of the deletion
/// path's inserts (milliseconds each); its ACCESS SHARE outlasts any lock wait upkeep would
/// make, and while that wait lasts every INSERT queues behind it.
pub(super) const LONG_HOLD: Duration = Duration::from_millis(500);

/// Whether a transaction held a lock on the audit table at both looks (the virtual transaction
/// ids of the holders seen at each).
pub fn held_throughout(first: &[String], second: &[String]) -> bool {
    first.iter().any(|t| second.contains(t))
}

/// Other sessions' transactions holding a lock on the audit table now (pg_locks is readable
/// by every role, the runtime role included).
async fn lock_holders(pool: &PgPool) -> DbResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT virtualtransaction FROM pg_locks \
         WHERE locktype = 'relation' AND granted AND pid <> pg_backend_pid() \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND relation = to_regclass($1)",
    )
    .bind(PARENT)
    .fetch_all(pool)
    .await?)
}

/// Asks the owner's SECURITY DEFINER function for this and next month's partitions: one
/// attempt, its lock wait and run bounded by `limits` (the caller retries). None: not
/// attempted, because a transaction has held a lock on the table for [`LONG_HOLD`] or more
/// (counted as a lock wait given up): asking for ACCESS EXCLUSIVE then would only queue the
/// INSERTs behind the request until it gave up.
pub async fn create_next_partitions(pool: &PgPool, limits: &DdlLimits) -> DbResult<Option<Vec<String>>> {
    const WHAT: &str = "create_next_partitions";
    let first = lock_holders(pool).await?;
    if !first.is_empty() {
        tokio::time::sleep(LONG_HOLD).await;
        if held_throughout(&first, &lock_holders(pool).await?) {
            metrics::DDL_GAVE_UP.with_label_values(&[WHAT]).inc();
            return Ok(None);
        }
    }
    let once = DdlLimits {
        retry_for: Duration::ZERO,
        ..*limits
    };
    bounded_ddl(pool, &once, WHAT, |c| {
        async move {
            let created: Vec<(String,)> = sqlx::query_as("SELECT * FROM signal_processing_audit_create_next_partitions()")
                .fetch_all(c)
                .await?;
            Ok(created.into_iter().map(|(n,)| n).collect())
        }
        .boxed()
    })
    .await
    .map(Some)
}

/// Drops monthly partitions older than the retention. Deliberate and logged; needs the owner.
/// The months are those records were stored in, whatever time they claim. Each DROP waits for
/// its lock within `limits` (see [`bounded_ddl`]).
pub async fn drop_old_partitions(pool: &PgPool, keep_months: u32, limits: &DdlLimits) -> DbResult<Vec<String>> {
    drop_old_partitions_at(pool, keep_months, Utc::now(), limits).await
}

/// [`drop_old_partitions`] as a run at `now` would (a later run, in tests).
pub async fn drop_old_partitions_at(pool: &PgPool, keep_months: u32, now: DateTime<Utc>, limits: &DdlLimits) -> DbResult<Vec<String>> {
    let names = partition_names(pool).await?;
    let doomed = partitions_to_drop(names.iter().map(String::as_str), now, keep_months);
    for name in &doomed {
        tracing::warn!(partition = %name, keep_months, "retention: dropping audit partition");
        let stmt = format!("DROP TABLE {name}");
        bounded_ddl(pool, limits, "drop_partition", |c| {
            let stmt = stmt.clone();
            async move {
                sqlx::query(&stmt).execute(c).await?;
                Ok(())
            }
            .boxed()
        })
        .await?;
    }
    Ok(doomed)
}

/// The fewest retention months that never drop a month the time window still accepts: a
/// partition goes when its month ended before the first day of the month `keep` months back,
/// which is at least `keep` × 28 days ago.
pub fn min_retention_months(past: Duration) -> u32 {
    let days = past.as_secs().div_ceil(86_400);
    u32::try_from(days.div_ceil(28)).unwrap_or(u32::MAX)
}

pub fn check_retention(keep_months: u32, past: Duration) -> anyhow::Result<()> {
    let min = min_retention_months(past);
    if keep_months > 0 && keep_months < min {
        anyhow::bail!(
            "--retention-months {keep_months} would drop months that the time window (--time-window-past {}) still accepts \
             records for; use at least {min}",
            humantime::format_duration(past)
        );
    }
    Ok(())
}

/// Hourly partition drops past the retention months, as the owner (single-role mode).
/// Deliberate and logged.
pub fn spawn_partition_drops(pool: PgPool, keep_months: u32, limits: DdlLimits) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(e) = drop_old_partitions(&pool, keep_months, &limits).await {
                tracing::error!(error = %e, "retention run failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_drops_only_whole_months_past_the_cutoff() {
        let now: DateTime<Utc> = "2025-03-15T12:00:00Z".parse().unwrap();
        let names = [
            "signal_processing_audit_y2024m12",
            "signal_processing_audit_y2025m01",
            "signal_processing_audit_y2025m02",
            "signal_processing_audit_default",
            "signal_processing_audit_y2025m03",
        ];
        assert_eq!(partitions_to_drop(names, now, 2), vec!["signal_processing_audit_y2024m12"]);
        assert_eq!(partitions_to_drop(names, now, 3).len(), 0);
        assert_eq!(partitions_to_drop(names, now, 0).len(), 0);
        assert_eq!(partitions_to_drop(names, now, 14).len(), 0);
    }

    #[test]
    fn only_a_transaction_seen_at_both_looks_holds_the_table_long() {
        let t = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            held_throughout(&t(&["3/7", "4/9"]), &t(&["5/2", "4/9"])),
            "the reader's 4/9 outlasted the look"
        );
        assert!(!held_throughout(&t(&["3/7", "4/9"]), &t(&["3/8", "4/10"])), "inserts come and go");
        assert!(!held_throughout(&t(&[]), &t(&["4/9"])));
        assert!(!held_throughout(&t(&["4/9"]), &t(&[])));
    }

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(parse_partition_name(&partition_name(2025, 11)), Some((2025, 11)));
        assert_eq!(parse_partition_name("signal_processing_audit_default"), None);
        assert_eq!(month_start(2025, 2), Some("2025-02-01T00:00:00Z".parse().unwrap()));
    }
}
