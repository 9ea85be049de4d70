//! Embedded SQLite backend: one file, WAL mode with `synchronous=FULL` (a commit is on disk
//! before the answer, so a power loss cannot roll back a record the controller already acted
//! on), one writer connection and a few readers; same behaviour as PostgreSQL through the API.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::store::*;

pub struct SqliteStore {
    /// SQLite has one writer at a time: one connection, so writes queue here, not on busy_timeout.
    write: SqlitePool,
    read: SqlitePool,
}

impl SqliteStore {
    pub async fn open(data_dir: &Path, read_connections: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", data_dir.display()))?;
        let file = data_dir.join("audit.db");
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(read_connections.max(1))
            .connect_with(opts)
            .await?;
        Ok(Self { write, read })
    }

    fn pool(&self, lane: Lane) -> &SqlitePool {
        match lane {
            Lane::Write => &self.write,
            Lane::Read => &self.read,
        }
    }
}

fn parse_ts(s: &str) -> DbResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Value(format!("timestamp {s:?}: {e}")))
}

/// `?1, ?2, …` for binding a list of ids.
fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

const INSERT: &str = "INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, \
     enrichment_quality, enrichment_sources, context_size_bytes, environment, confidence, business_criticality, sla_requirement, \
     priority, priority_score, routed_to_service, routing_priority, completed_at, status, error_message, namespace, name, uid, \
     trigger, deleted_at, record, anomalies) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING";

const AMENDMENT_COLUMNS: &str = "amendment_id, record_id, amended_at, record";

fn amendment_row(row: &SqliteRow) -> DbResult<StoredAmendment> {
    Ok(StoredAmendment {
        amendment_id: row.try_get(0)?,
        record_id: row.try_get(1)?,
        amended_at: parse_ts(row.try_get::<&str, _>(2)?)?,
        record: serde_json::from_str(row.try_get::<&str, _>(3)?)?,
    })
}

fn listed(row: &SqliteRow) -> DbResult<Listed> {
    Ok(Listed {
        json: serde_json::from_str(row.try_get::<&str, _>(0)?)?,
        at: parse_ts(row.try_get::<&str, _>(1)?)?,
        id: row.try_get(2)?,
    })
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn ping(&self) -> BoxFuture<'_, DbResult<()>> {
        async move {
            // On the write connection: readers saturating theirs cannot make the service unready.
            sqlx::query("SELECT 1").execute(&self.write).await?;
            Ok(())
        }
        .boxed()
    }

    fn insert<'a>(&'a self, records: &'a [Prepared]) -> BoxFuture<'a, DbResult<Vec<Outcome>>> {
        async move {
            let mut tx = self.write.begin().await?;
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
                    .bind(&p.anomalies_text)
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

    fn records<'a>(&'a self, ids: &'a [String], lane: Lane) -> BoxFuture<'a, DbResult<HashMap<String, serde_json::Value>>> {
        async move {
            let mut out = HashMap::new();
            // SQLite's bound-parameter limit is far above a page or a batch, but chunk anyway.
            for chunk in ids.chunks(500) {
                let sql = format!(
                    "SELECT id, record FROM signal_processing_audit WHERE id IN ({})",
                    placeholders(chunk.len())
                );
                let mut q = sqlx::query(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                for row in q.fetch_all(self.pool(lane)).await? {
                    out.insert(row.try_get(0)?, serde_json::from_str(row.try_get::<&str, _>(1)?)?);
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn amendments<'a>(&'a self, ids: &'a [String], lane: Lane) -> BoxFuture<'a, DbResult<HashMap<String, Vec<StoredAmendment>>>> {
        async move {
            let mut rows = vec![];
            for chunk in ids.chunks(500) {
                let sql = format!(
                    "SELECT {AMENDMENT_COLUMNS} FROM signal_processing_audit_amendments WHERE record_id IN ({}) \
                     ORDER BY record_id, amended_at, amendment_id",
                    placeholders(chunk.len())
                );
                let mut q = sqlx::query(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                for row in q.fetch_all(self.pool(lane)).await? {
                    rows.push(amendment_row(&row)?);
                }
            }
            Ok(group_amendments(rows))
        }
        .boxed()
    }

    fn insert_amendment<'a>(&'a self, a: &'a NewAmendment) -> BoxFuture<'a, DbResult<AmendmentOutcome>> {
        async move {
            let done = sqlx::query(
                "INSERT INTO signal_processing_audit_amendments (amendment_id, record_id, content_sha256, record, anomalies, amended_at) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (record_id, content_sha256) DO NOTHING",
            )
            .bind(&a.amendment_id)
            .bind(&a.prepared.rec.id)
            .bind(&a.digest)
            .bind(&a.prepared.record_text)
            .bind(&a.prepared.anomalies_text)
            .bind(fixed_ts(a.amended_at))
            .execute(&self.write)
            .await?;
            let row = sqlx::query(&format!(
                "SELECT {AMENDMENT_COLUMNS} FROM signal_processing_audit_amendments WHERE record_id = ? AND content_sha256 = ?"
            ))
            .bind(&a.prepared.rec.id)
            .bind(&a.digest)
            .fetch_one(&self.write)
            .await?;
            let stored = amendment_row(&row)?;
            Ok(if done.rows_affected() == 1 {
                AmendmentOutcome::Created(stored)
            } else {
                AmendmentOutcome::Duplicate(stored)
            })
        }
        .boxed()
    }

    fn list(&self, q: ListQuery) -> BoxFuture<'_, DbResult<Vec<Listed>>> {
        async move {
            let (after_ts, after_id) = match &q.page.after {
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
            .bind(q.page.since.map(fixed_ts))
            .bind(q.page.until.map(fixed_ts))
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(q.page.limit))
            .fetch_all(&self.read)
            .await?;
            rows.iter().map(listed).collect()
        }
        .boxed()
    }

    fn classification(&self, range: StatsRange) -> BoxFuture<'_, DbResult<Vec<ClassificationStat>>> {
        async move {
            let rows: Vec<(Option<String>, Option<f64>, i64)> = sqlx::query_as(
                "SELECT environment, AVG(confidence), COUNT(*) FROM signal_processing_audit \
                 WHERE completed_at > ? AND completed_at <= ? GROUP BY environment ORDER BY environment",
            )
            .bind(fixed_ts(range.since))
            .bind(fixed_ts(range.until))
            .fetch_all(&self.read)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }
        .boxed()
    }

    fn priorities(&self, range: StatsRange) -> BoxFuture<'_, DbResult<Vec<PriorityStat>>> {
        async move {
            let rows: Vec<(Option<String>, i64, Option<f64>)> = sqlx::query_as(
                "SELECT priority, COUNT(*), AVG(priority_score) FROM signal_processing_audit \
                 WHERE completed_at > ? AND completed_at <= ? GROUP BY priority ORDER BY priority",
            )
            .bind(fixed_ts(range.since))
            .bind(fixed_ts(range.until))
            .fetch_all(&self.read)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }
        .boxed()
    }

    fn slow_phases(&self, q: SlowPhaseQuery) -> BoxFuture<'_, DbResult<Vec<SlowPhase>>> {
        async move {
            // The record column keeps durations as integer nanoseconds: compare those.
            let rows = sqlx::query(
                "SELECT a.id, a.remediation_id, a.signal_fingerprint, a.completed_at, json_extract(p.value, '$.duration') AS d \
                 FROM signal_processing_audit a, json_each(a.record, '$.processing_phases') p \
                 WHERE a.completed_at >= ?3 AND a.completed_at <= ?4 \
                 AND json_extract(p.value, '$.phase') = ?1 AND json_type(p.value, '$.duration') = 'integer' \
                 AND json_extract(p.value, '$.duration') > ?2 \
                 ORDER BY d DESC, a.id LIMIT ?5",
            )
            .bind(&q.phase)
            .bind(q.min_duration_nanos)
            .bind(fixed_ts(q.range.since))
            .bind(fixed_ts(q.range.until))
            .bind(i64::from(q.limit))
            .fetch_all(&self.read)
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

    fn insert_event<'a>(&'a self, e: &'a PreparedEvent) -> BoxFuture<'a, DbResult<Outcome>> {
        async move {
            let ev = &e.event;
            let done = sqlx::query(
                "INSERT INTO break_glass_events (id, user_name, groups, namespace, name, uid, at, event) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&ev.id)
            .bind(&ev.user)
            .bind(&e.groups_text)
            .bind(&ev.namespace)
            .bind(&ev.name)
            .bind(&ev.uid)
            .bind(fixed_ts(ev.at))
            .bind(&e.event_text)
            .execute(&self.write)
            .await?;
            Ok(Outcome::of_rows_affected(done.rows_affected()))
        }
        .boxed()
    }

    fn event(&self, id: String, lane: Lane) -> BoxFuture<'_, DbResult<Option<serde_json::Value>>> {
        async move {
            let row: Option<(String,)> = sqlx::query_as("SELECT event FROM break_glass_events WHERE id = ?")
                .bind(id)
                .fetch_optional(self.pool(lane))
                .await?;
            Ok(match row {
                Some((text,)) => Some(serde_json::from_str(&text)?),
                None => None,
            })
        }
        .boxed()
    }

    fn list_events(&self, page: Page) -> BoxFuture<'_, DbResult<Vec<Listed>>> {
        async move {
            let (after_ts, after_id) = match &page.after {
                Some((t, id)) => (Some(fixed_ts(*t)), Some(id.clone())),
                None => (None, None),
            };
            let rows = sqlx::query(
                "SELECT event, at, id FROM break_glass_events \
                 WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at < ?2) AND (?3 IS NULL OR (at, id) < (?3, ?4)) \
                 ORDER BY at DESC, id DESC LIMIT ?5",
            )
            .bind(page.since.map(fixed_ts))
            .bind(page.until.map(fixed_ts))
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(page.limit))
            .fetch_all(&self.read)
            .await?;
            rows.iter().map(listed).collect()
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection, writer and readers, commits with synchronous=FULL in WAL mode.
    #[tokio::test]
    async fn every_connection_is_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 2).await.unwrap();
        for pool in [&store.write, &store.read] {
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap();
            assert_eq!(sync, 2, "FULL");
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
            assert_eq!(mode, "wal");
        }
    }
}
