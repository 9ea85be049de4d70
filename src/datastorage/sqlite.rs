//! Embedded SQLite backend: one file, WAL mode, same behaviour as PostgreSQL through the API.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::store::*;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", data_dir.display()))?;
        let file = data_dir.join("audit.db");
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL keeps committed transactions across a process crash.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn parse_ts(s: &str) -> DbResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Value(format!("timestamp {s:?}: {e}")))
}

const INSERT: &str = "INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, \
     enrichment_quality, enrichment_sources, context_size_bytes, environment, confidence, business_criticality, sla_requirement, \
     priority, priority_score, routed_to_service, routing_priority, completed_at, status, error_message, namespace, name, uid, \
     trigger, deleted_at, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING";

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
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
            let mut tx = self.pool.begin().await?;
            let mut created = HashSet::new();
            for p in records {
                let r = &p.rec;
                let done = sqlx::query(INSERT)
                    .bind(&r.id)
                    .bind(&r.remediation_id)
                    .bind(&r.signal_fingerprint)
                    .bind(&p.phases_text)
                    .bind(r.enrichment_quality)
                    .bind(&p.sources_text)
                    .bind(r.context_size_bytes)
                    .bind(&r.environment)
                    .bind(r.confidence)
                    .bind(&r.business_criticality)
                    .bind(&r.sla_requirement)
                    .bind(&r.priority)
                    .bind(r.priority_score)
                    .bind(&r.routed_to_service)
                    .bind(r.routing_priority)
                    .bind(fixed_ts(r.completed_at))
                    .bind(r.status.as_str())
                    .bind(&r.error_message)
                    .bind(&r.namespace)
                    .bind(&r.name)
                    .bind(&r.uid)
                    .bind(r.trigger.map(trigger_str))
                    .bind(r.deleted_at.map(fixed_ts))
                    .bind(&p.record_text)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 1 {
                    created.insert(r.id.clone());
                }
            }
            tx.commit().await?;
            Ok(outcomes(records, &created))
        }
        .boxed()
    }

    fn get(&self, id: String) -> BoxFuture<'_, DbResult<Option<serde_json::Value>>> {
        async move {
            let row: Option<(String,)> = sqlx::query_as("SELECT record FROM signal_processing_audit WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(match row {
                Some((text,)) => Some(serde_json::from_str(&text)?),
                None => None,
            })
        }
        .boxed()
    }

    fn list(&self, q: ListQuery) -> BoxFuture<'_, DbResult<Vec<Listed>>> {
        async move {
            let (after_ts, after_id) = match &q.after {
                Some((t, id)) => (Some(fixed_ts(*t)), Some(id.clone())),
                None => (None, None),
            };
            let rows = sqlx::query(
                "SELECT record, completed_at, id FROM signal_processing_audit \
                 WHERE (?1 IS NULL OR signal_fingerprint = ?1) AND (?2 IS NULL OR remediation_id = ?2) \
                 AND (?3 IS NULL OR environment = ?3) AND (?4 IS NULL OR priority = ?4) AND (?5 IS NULL OR status = ?5) \
                 AND (?6 IS NULL OR completed_at >= ?6) AND (?7 IS NULL OR completed_at < ?7) \
                 AND (?8 IS NULL OR (completed_at, id) < (?8, ?9)) \
                 ORDER BY completed_at DESC, id DESC LIMIT ?10",
            )
            .bind(&q.signal_fingerprint)
            .bind(&q.remediation_id)
            .bind(&q.environment)
            .bind(&q.priority)
            .bind(&q.status)
            .bind(q.since.map(fixed_ts))
            .bind(q.until.map(fixed_ts))
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(Listed {
                        record: serde_json::from_str(row.try_get::<&str, _>(0)?)?,
                        completed_at: parse_ts(row.try_get::<&str, _>(1)?)?,
                        id: row.try_get(2)?,
                    })
                })
                .collect()
        }
        .boxed()
    }

    fn classification(&self, since: DateTime<Utc>) -> BoxFuture<'_, DbResult<Vec<ClassificationStat>>> {
        async move {
            let rows: Vec<(Option<String>, Option<f64>, i64)> = sqlx::query_as(
                "SELECT environment, AVG(confidence), COUNT(*) FROM signal_processing_audit \
                 WHERE completed_at > ? GROUP BY environment ORDER BY environment",
            )
            .bind(fixed_ts(since))
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
                "SELECT priority, COUNT(*), AVG(priority_score) FROM signal_processing_audit \
                 WHERE completed_at > ? GROUP BY priority ORDER BY priority",
            )
            .bind(fixed_ts(since))
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
            let rows = sqlx::query(
                "SELECT a.id, a.remediation_id, a.signal_fingerprint, a.completed_at, json_extract(p.value, '$.duration') AS d \
                 FROM signal_processing_audit a, json_each(a.record, '$.processing_phases') p \
                 WHERE json_extract(p.value, '$.phase') = ?1 AND json_type(p.value, '$.duration') = 'integer' \
                 AND json_extract(p.value, '$.duration') > ?2 \
                 AND (?3 IS NULL OR a.completed_at >= ?3) ORDER BY d DESC, a.id LIMIT ?4",
            )
            .bind(&q.phase)
            .bind(q.min_duration_nanos)
            .bind(q.since.map(fixed_ts))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(SlowPhase {
                        id: row.try_get(0)?,
                        remediation_id: row.try_get(1)?,
                        signal_fingerprint: row.try_get(2)?,
                        completed_at: parse_ts(row.try_get::<&str, _>(3)?)?,
                        duration_nanos: row.try_get(4)?,
                    })
                })
                .collect()
        }
        .boxed()
    }
}
