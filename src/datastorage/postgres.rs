//! PostgreSQL backend: monthly partitions created on demand, bulk inserts through UNNEST,
//! id uniqueness through a side table, retention by dropping whole partitions.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use super::store::*;

const PARENT: &str = "signal_processing_audit";

pub struct PgStore {
    pool: PgPool,
    /// Months whose partition exists (or whose creation was already attempted).
    months: Arc<Mutex<HashSet<(i32, u32)>>>,
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// `signal_processing_audit_y2025m11`
pub fn partition_name(year: i32, month: u32) -> String {
    format!("{PARENT}_y{year:04}m{month:02}")
}

fn parse_partition_name(name: &str) -> Option<(i32, u32)> {
    let rest = name.strip_prefix(PARENT)?.strip_prefix("_y")?;
    let (y, m) = rest.split_once('m')?;
    let (y, m) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then_some((y, m))
}

fn next_month(year: i32, month: u32) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

fn month_start(year: i32, month: u32) -> Option<DateTime<Utc>> {
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

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Records exceed the TOAST threshold; lz4 compresses them far cheaper than the
                    // default pglz. Servers built without lz4 keep their default.
                    if let Err(e) = sqlx::query("SET default_toast_compression = 'lz4'").execute(conn).await {
                        tracing::debug!(error = %e, "lz4 TOAST compression unavailable");
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let store = Self {
            pool,
            months: Arc::new(Mutex::new(HashSet::new())),
        };
        let now = Utc::now();
        let this = (now.year(), now.month());
        store
            .ensure_partitions([this, next_month(this.0, this.1)].into_iter().collect())
            .await;
        Ok(store)
    }

    /// Creates missing monthly partitions. Failure is not fatal: rows then land in the
    /// DEFAULT partition, which is why nothing is ever refused.
    async fn ensure_partitions(&self, wanted: BTreeSet<(i32, u32)>) {
        let missing: Vec<_> = match self.months.lock() {
            Ok(known) => wanted.into_iter().filter(|m| !known.contains(m)).collect(),
            Err(_) => return,
        };
        for (y, m) in missing {
            let (ny, nm) = next_month(y, m);
            let (Some(from), Some(to)) = (month_start(y, m), month_start(ny, nm)) else {
                continue;
            };
            let name = partition_name(y, m);
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {PARENT} FOR VALUES FROM ('{}') TO ('{}')",
                from.to_rfc3339(),
                to.to_rfc3339()
            );
            match sqlx::query(&sql).execute(&self.pool).await {
                Ok(_) => tracing::debug!(partition = %name, "partition ready"),
                // A concurrent creator, or rows of that month already in DEFAULT.
                Err(e) => tracing::warn!(partition = %name, error = %e, "could not create partition; rows go to the default partition"),
            }
            if let Ok(mut known) = self.months.lock() {
                known.insert((y, m));
            }
        }
    }

    /// Drops monthly partitions older than the retention, hourly. Deliberate and logged.
    pub fn spawn_retention(&self, keep_months: u32) {
        let pool = self.pool.clone();
        let months = self.months.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                if let Err(e) = drop_old_partitions(&pool, &months, keep_months).await {
                    tracing::error!(error = %e, "retention run failed");
                }
            }
        });
    }
}

pub async fn drop_old_partitions(pool: &PgPool, months: &Mutex<HashSet<(i32, u32)>>, keep_months: u32) -> DbResult<Vec<String>> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
    )
    .bind(PARENT)
    .fetch_all(pool)
    .await?;
    let doomed = partitions_to_drop(names.iter().map(|(n,)| n.as_str()), Utc::now(), keep_months);
    for name in &doomed {
        tracing::warn!(partition = %name, keep_months, "retention: dropping audit partition");
        sqlx::query(&format!("DROP TABLE {name}")).execute(pool).await?;
        if let (Some(ym), Ok(mut known)) = (parse_partition_name(name), months.lock()) {
            known.remove(&ym);
        }
    }
    Ok(doomed)
}

/// One statement, so atomic: claim new ids in the id table, then store only the rows whose
/// id was claimed. Existing ids come back as `exists`. JSON travels as text and is cast here.
const INSERT: &str = "WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::int8[], $8::text[],
        $9::float8[], $10::text[], $11::text[], $12::text[], $13::int8[], $14::text[], $15::int8[], $16::timestamptz[],
        $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::timestamptz[], $24::text[])
    AS t(id, remediation_id, signal_fingerprint, processing_phases, enrichment_quality, enrichment_sources, context_size_bytes,
         environment, confidence, business_criticality, sla_requirement, priority, priority_score, routed_to_service,
         routing_priority, completed_at, status, error_message, namespace, name, uid, trigger, deleted_at, record)
), claimed AS (
    INSERT INTO signal_processing_audit_ids (id, completed_at) SELECT id, completed_at FROM u
    ON CONFLICT (id) DO NOTHING RETURNING id
)
INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, enrichment_quality,
    enrichment_sources, context_size_bytes, environment, confidence, business_criticality, sla_requirement, priority,
    priority_score, routed_to_service, routing_priority, completed_at, status, error_message, namespace, name, uid,
    trigger, deleted_at, record)
SELECT u.id, u.remediation_id, u.signal_fingerprint, u.processing_phases::jsonb, u.enrichment_quality,
    u.enrichment_sources::jsonb, u.context_size_bytes, u.environment, u.confidence, u.business_criticality, u.sla_requirement,
    u.priority, u.priority_score, u.routed_to_service, u.routing_priority, u.completed_at, u.status, u.error_message,
    u.namespace, u.name, u.uid, u.trigger, u.deleted_at, u.record::json
FROM u JOIN claimed c ON c.id = u.id
RETURNING id";

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn ping(&self) -> BoxFuture<'_, DbResult<()>> {
        async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        }
        .boxed()
    }

    fn insert<'a>(&'a self, records: &'a [Prepared]) -> BoxFuture<'a, DbResult<Vec<Outcome>>> {
        async move {
            self.ensure_partitions(
                records
                    .iter()
                    .map(|p| (p.rec.completed_at.year(), p.rec.completed_at.month()))
                    .collect(),
            )
            .await;
            let text = |f: fn(&Prepared) -> &str| records.iter().map(f).collect::<Vec<_>>();
            let opt = |f: fn(&Prepared) -> Option<&str>| records.iter().map(f).collect::<Vec<_>>();
            let rows = sqlx::query(INSERT)
                .bind(text(|p| &p.rec.id))
                .bind(text(|p| &p.rec.remediation_id))
                .bind(text(|p| &p.rec.signal_fingerprint))
                .bind(text(|p| &p.phases_text))
                .bind(records.iter().map(|p| p.rec.enrichment_quality).collect::<Vec<_>>())
                .bind(opt(|p| p.sources_text.as_deref()))
                .bind(records.iter().map(|p| p.rec.context_size_bytes).collect::<Vec<_>>())
                .bind(opt(|p| p.rec.environment.as_deref()))
                .bind(records.iter().map(|p| p.rec.confidence).collect::<Vec<_>>())
                .bind(opt(|p| p.rec.business_criticality.as_deref()))
                .bind(opt(|p| p.rec.sla_requirement.as_deref()))
                .bind(opt(|p| p.rec.priority.as_deref()))
                .bind(records.iter().map(|p| p.rec.priority_score).collect::<Vec<_>>())
                .bind(opt(|p| p.rec.routed_to_service.as_deref()))
                .bind(records.iter().map(|p| p.rec.routing_priority).collect::<Vec<_>>())
                .bind(records.iter().map(|p| p.rec.completed_at).collect::<Vec<_>>())
                .bind(text(|p| p.rec.status.as_str()))
                .bind(opt(|p| p.rec.error_message.as_deref()))
                .bind(opt(|p| p.rec.namespace.as_deref()))
                .bind(opt(|p| p.rec.name.as_deref()))
                .bind(opt(|p| p.rec.uid.as_deref()))
                .bind(opt(|p| p.rec.trigger.map(trigger_str)))
                .bind(records.iter().map(|p| p.rec.deleted_at).collect::<Vec<_>>())
                .bind(text(|p| &p.record_text))
                .fetch_all(&self.pool)
                .await?;
            let created: HashSet<String> = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?;
            Ok(outcomes(records, &created))
        }
        .boxed()
    }

    fn get(&self, id: String) -> BoxFuture<'_, DbResult<Option<serde_json::Value>>> {
        async move {
            let row: Option<(serde_json::Value,)> = sqlx::query_as(
                "SELECT a.record FROM signal_processing_audit_ids i JOIN signal_processing_audit a \
                 ON a.id = i.id AND a.completed_at = i.completed_at WHERE i.id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(v,)| v))
        }
        .boxed()
    }

    fn list(&self, q: ListQuery) -> BoxFuture<'_, DbResult<Vec<Listed>>> {
        async move {
            let (after_ts, after_id) = match q.after {
                Some((t, id)) => (Some(t), Some(id)),
                None => (None, None),
            };
            let rows: Vec<(serde_json::Value, DateTime<Utc>, String)> = sqlx::query_as(
                "SELECT record, completed_at, id FROM signal_processing_audit \
                 WHERE ($1::text IS NULL OR signal_fingerprint = $1) AND ($2::text IS NULL OR remediation_id = $2) \
                 AND ($3::text IS NULL OR environment = $3) AND ($4::text IS NULL OR priority = $4) \
                 AND ($5::text IS NULL OR status = $5) AND ($6::timestamptz IS NULL OR completed_at >= $6) \
                 AND ($7::timestamptz IS NULL OR completed_at < $7) \
                 AND ($8::timestamptz IS NULL OR (completed_at, id) < ($8, $9::text)) \
                 ORDER BY completed_at DESC, id DESC LIMIT $10",
            )
            .bind(q.signal_fingerprint)
            .bind(q.remediation_id)
            .bind(q.environment)
            .bind(q.priority)
            .bind(q.status)
            .bind(q.since)
            .bind(q.until)
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(record, completed_at, id)| Listed { record, completed_at, id })
                .collect())
        }
        .boxed()
    }

    fn classification(&self, since: DateTime<Utc>) -> BoxFuture<'_, DbResult<Vec<ClassificationStat>>> {
        async move {
            let rows: Vec<(Option<String>, Option<f64>, i64)> = sqlx::query_as(
                "SELECT environment, AVG(confidence)::float8, COUNT(*) FROM signal_processing_audit \
                 WHERE completed_at > $1 GROUP BY environment ORDER BY environment",
            )
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(environment, avg_confidence, total_signals)| ClassificationStat {
                    environment,
                    avg_confidence,
                    total_signals,
                })
                .collect())
        }
        .boxed()
    }

    fn priorities(&self, since: DateTime<Utc>) -> BoxFuture<'_, DbResult<Vec<PriorityStat>>> {
        async move {
            let rows: Vec<(Option<String>, i64, Option<f64>)> = sqlx::query_as(
                "SELECT priority, COUNT(*), AVG(priority_score)::float8 FROM signal_processing_audit \
                 WHERE completed_at > $1 GROUP BY priority ORDER BY priority",
            )
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(priority, count, avg_score)| PriorityStat {
                    priority,
                    count,
                    avg_score,
                })
                .collect())
        }
        .boxed()
    }

    fn slow_phases(&self, q: SlowPhaseQuery) -> BoxFuture<'_, DbResult<Vec<SlowPhase>>> {
        async move {
            // The record column keeps durations as integer nanoseconds: compare those.
            let rows: Vec<(String, String, String, DateTime<Utc>, i64)> = sqlx::query_as(
                "SELECT a.id, a.remediation_id, a.signal_fingerprint, a.completed_at, (p->>'duration')::int8 AS d \
                 FROM signal_processing_audit a, json_array_elements(a.record->'processing_phases') p \
                 WHERE p->>'phase' = $1 AND json_typeof(p->'duration') = 'number' AND (p->>'duration')::int8 > $2 \
                 AND ($3::timestamptz IS NULL OR a.completed_at >= $3) ORDER BY d DESC, a.id LIMIT $4",
            )
            .bind(q.phase)
            .bind(q.min_duration_nanos)
            .bind(q.since)
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, remediation_id, signal_fingerprint, completed_at, duration_nanos)| SlowPhase {
                    id,
                    remediation_id,
                    signal_fingerprint,
                    completed_at,
                    duration_nanos,
                })
                .collect())
        }
        .boxed()
    }
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
    fn partition_names_round_trip() {
        assert_eq!(parse_partition_name(&partition_name(2025, 11)), Some((2025, 11)));
        assert_eq!(parse_partition_name("signal_processing_audit_default"), None);
        assert_eq!(next_month(2025, 12), (2026, 1));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
