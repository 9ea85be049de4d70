//! Embedded SQLite backend: one file, WAL mode with `synchronous=FULL` (a commit is on disk
//! before the answer, so a power loss cannot roll back a record the controller already acted
//! on), one writer connection and a few readers; same behaviour as PostgreSQL through the API.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::store::*;
use super::tlog::{self, LogTx, Pending, Round};
use crate::evidence::chain::{self, fixed_ts, ChainKeys, Head, Link};
use crate::evidence::entry::Kind;
use crate::evidence::note::SignerKey;
use crate::evidence::rows::{trigger_str, AmendmentRow, ClaimListed, EventRow, RecordRow};
use crate::evidence::tiles::Tile;

/// SQLite's one chain: there is one writer, so one shard is never a bottleneck.
const SHARD: i32 = 0;

pub struct SqliteStore {
    /// SQLite has one writer at a time: one connection, so writes queue here, not on busy_timeout.
    write: SqlitePool,
    read: SqlitePool,
    /// None: opened read-only (an auditor's `verify`).
    keys: Option<std::sync::Arc<ChainKeys>>,
}

impl SqliteStore {
    pub async fn open(data_dir: &Path, read_connections: u32, keys: std::sync::Arc<ChainKeys>) -> anyhow::Result<Self> {
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
        Ok(Self {
            write,
            read,
            keys: Some(keys),
        })
    }

    /// An existing file, opened for reading only (no migrations, no writes).
    pub async fn open_read_only(file: &Path) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(file)
            .read_only(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        Ok(Self {
            write: pool.clone(),
            read: pool,
            keys: None,
        })
    }

    fn key(&self) -> DbResult<&chain::ChainKey> {
        self.keys
            .as_ref()
            .map(|k| k.active())
            .ok_or_else(|| DbError::Value("this store was opened read-only".into()))
    }

    fn pool(&self, lane: Lane) -> &SqlitePool {
        match lane {
            Lane::Write => &self.write,
            Lane::Read | Lane::Audit => &self.read,
        }
    }

    /// A statistic's rows: `completed_at` after `range.since` (?1), up to `range.until` (?2).
    async fn stats<T>(&self, sql: &'static str, range: StatsRange) -> DbResult<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        Ok(sqlx::query_as(sql)
            .bind(fixed_ts(range.since))
            .bind(fixed_ts(range.until))
            .fetch_all(&self.read)
            .await?)
    }

    /// One keyset page of a kind's rows: its time in `range`, strictly after `after` by (time,
    /// id), oldest first.
    async fn page<T>(&self, k: Keyset, range: TimeRange, after: Option<(DateTime<Utc>, String)>, limit: u32) -> DbResult<Vec<T>>
    where
        T: Chained,
        Linked<T>: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let (until, after_ts, after_id) = range_text(&range, after);
        let Keyset {
            columns,
            text,
            table,
            at,
            id,
        } = k;
        let rows: Vec<Linked<T>> = sqlx::query_as(&format!(
            "SELECT {columns}, {text}, {LINK_COLUMNS} FROM {table} WHERE {at} < ?1 AND ({at}, {id}) > (?2, ?3) \
             ORDER BY {at}, {id} LIMIT ?4"
        ))
        .bind(until)
        .bind(after_ts)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(Linked::into_row).collect())
    }
}

/// `?1, ?2, …` for binding a list of ids.
fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

const INSERT: &str = "INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, \
     enrichment_quality, enrichment_sources, context_size_bytes, environment, confidence, business_criticality, sla_requirement, \
     priority, priority_score, routed_to_service, routing_priority, completed_at, status, error_message, namespace, name, uid, \
     trigger, deleted_at, record, anomalies, stored_at, chain_shard, chain_seq, chain_key_id, chain_stored_at, chain_digest, chain_hash) \
     VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

/// The last link of the shard over all three kinds (read inside the writer's transaction).
const HEAD: &str = "SELECT chain_seq, chain_hash FROM ( \
    SELECT chain_seq, chain_hash FROM signal_processing_audit WHERE chain_shard = ?1 \
    UNION ALL SELECT chain_seq, chain_hash FROM signal_processing_audit_amendments WHERE chain_shard = ?1 \
    UNION ALL SELECT chain_seq, chain_hash FROM break_glass_events WHERE chain_shard = ?1) ORDER BY chain_seq DESC LIMIT 1";

async fn read_head(conn: &mut sqlx::SqliteConnection) -> DbResult<Option<Head>> {
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(HEAD).bind(SHARD).fetch_optional(conn).await?;
    Ok(row.map(|(seq, hash)| Head {
        shard: SHARD,
        seq,
        hash: chain::hash_from(&hash).unwrap_or(chain::GENESIS),
    }))
}

/// Binds a link's columns, in [`LINK_COLUMNS`] order.
trait BindLink<'q> {
    fn bind_link(self, link: &'q Link) -> Self;
}

impl<'q> BindLink<'q> for sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    fn bind_link(self, link: &'q Link) -> Self {
        self.bind(link.shard)
            .bind(link.seq)
            .bind(&link.key_id)
            .bind(fixed_ts(link.stored_at))
            .bind(link.digest.to_vec())
            .bind(link.hash.to_vec())
    }
}

/// Range bounds as fixed-width text (an open end compares below or above every time).
fn range_text(range: &TimeRange, after: Option<(DateTime<Utc>, String)>) -> (String, String, String) {
    let until = range.until.map(fixed_ts).unwrap_or_else(|| "~".into());
    let (at, id) = match after {
        Some((t, id)) => (fixed_ts(t), id),
        None => (range.since.map(fixed_ts).unwrap_or_default(), String::new()),
    };
    (until, at, id)
}

const AMENDMENT_COLUMNS: &str = "amendment_id, record_id, amended_at, record";

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
            let key = self.key()?;
            // One writer connection: nobody else can claim an id or extend the chain meanwhile.
            let mut tx = self.write.begin().await?;
            let mut taken = HashSet::new();
            for chunk in records.chunks(500) {
                let sql = format!("SELECT id FROM signal_processing_audit WHERE id IN ({})", placeholders(chunk.len()));
                let mut q = sqlx::query_scalar::<_, String>(&sql);
                for p in chunk {
                    q = q.bind(&p.rec.id);
                }
                taken.extend(q.fetch_all(&mut *tx).await?);
            }
            let new: Vec<&Prepared> = records.iter().filter(|p| !taken.contains(&p.rec.id)).collect();
            let head = read_head(&mut tx).await?;
            let stored_at = stored_now();
            let links = chain::extend(key, SHARD, head.as_ref(), &record_entries(new.iter().copied(), stored_at));
            let log = tlog::record_entries(new.iter().copied(), stored_at)?;
            for ((p, link), entry) in new.iter().zip(&links).zip(&log) {
                let r = &p.rec;
                sqlx::query(INSERT)
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
                    .bind(fixed_ts(stored_at))
                    .bind_link(link)
                    .execute(&mut *tx)
                    .await?;
                enqueue(&mut tx, entry).await?;
            }
            tx.commit().await?;
            let created: HashSet<String> = new.iter().map(|p| p.rec.id.clone()).collect();
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
                let mut q = sqlx::query_as(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                rows.extend(q.fetch_all(self.pool(lane)).await?);
            }
            Ok(group_amendments(rows))
        }
        .boxed()
    }

    fn insert_amendment<'a>(&'a self, a: &'a NewAmendment) -> BoxFuture<'a, DbResult<AmendmentOutcome>> {
        async move {
            let key = self.key()?;
            let log = tlog::amendment_entry(a)?;
            let mut tx = self.write.begin().await?;
            let head = read_head(&mut tx).await?;
            let links = chain::extend(key, SHARD, head.as_ref(), &[amendment_entry(a)]);
            let link = &links[0];
            // A repeat of the same content inserts nothing, so its link is never written.
            let done = sqlx::query(&format!(
                "INSERT INTO signal_processing_audit_amendments (amendment_id, record_id, content_sha256, record, anomalies, amended_at, \
                 {LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (record_id, content_sha256) DO NOTHING"
            ))
            .bind(&a.amendment_id)
            .bind(&a.prepared.rec.id)
            .bind(&a.digest)
            .bind(&a.prepared.record_text)
            .bind(&a.prepared.anomalies_text)
            .bind(fixed_ts(a.amended_at))
            .bind_link(link)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                enqueue(&mut tx, &log).await?;
            }
            tx.commit().await?;
            let stored = sqlx::query_as(&format!(
                "SELECT {AMENDMENT_COLUMNS} FROM signal_processing_audit_amendments WHERE record_id = ? AND content_sha256 = ?"
            ))
            .bind(&a.prepared.rec.id)
            .bind(&a.digest)
            .fetch_one(&self.write)
            .await?;
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
            let rows = sqlx::query_as(
                "SELECT record AS json, completed_at AS at, id FROM signal_processing_audit \
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
            Ok(rows)
        }
        .boxed()
    }

    fn classification(&self, range: StatsRange) -> BoxFuture<'_, DbResult<Vec<ClassificationStat>>> {
        self.stats(
            "SELECT environment, AVG(confidence) AS avg_confidence, COUNT(*) AS total_signals FROM signal_processing_audit \
             WHERE completed_at > ?1 AND completed_at <= ?2 GROUP BY environment ORDER BY environment",
            range,
        )
        .boxed()
    }

    fn priorities(&self, range: StatsRange) -> BoxFuture<'_, DbResult<Vec<PriorityStat>>> {
        self.stats(
            "SELECT priority, COUNT(*) AS count, AVG(priority_score) AS avg_score FROM signal_processing_audit \
             WHERE completed_at > ?1 AND completed_at <= ?2 GROUP BY priority ORDER BY priority",
            range,
        )
        .boxed()
    }

    fn slow_phases(&self, q: SlowPhaseQuery) -> BoxFuture<'_, DbResult<Vec<SlowPhase>>> {
        async move {
            // The record column keeps durations as integer nanoseconds: compare those.
            Ok(sqlx::query_as(
                "SELECT a.id, a.remediation_id, a.signal_fingerprint, a.completed_at, \
                        json_extract(p.value, '$.duration') AS duration_nanos \
                 FROM signal_processing_audit a, json_each(a.record, '$.processing_phases') p \
                 WHERE a.completed_at >= ?3 AND a.completed_at <= ?4 \
                 AND json_extract(p.value, '$.phase') = ?1 AND json_type(p.value, '$.duration') = 'integer' \
                 AND json_extract(p.value, '$.duration') > ?2 \
                 ORDER BY duration_nanos DESC, a.id LIMIT ?5",
            )
            .bind(&q.phase)
            .bind(q.min_duration_nanos)
            .bind(fixed_ts(q.range.since))
            .bind(fixed_ts(q.range.until))
            .bind(i64::from(q.limit))
            .fetch_all(&self.read)
            .await?)
        }
        .boxed()
    }

    fn insert_event<'a>(&'a self, e: &'a PreparedEvent) -> BoxFuture<'a, DbResult<Outcome>> {
        async move {
            let ev = &e.event;
            let key = self.key()?;
            let stored_at = stored_now();
            let log = tlog::event_entry(e, stored_at)?;
            let mut tx = self.write.begin().await?;
            let head = read_head(&mut tx).await?;
            let links = chain::extend(key, SHARD, head.as_ref(), &[event_entry(e, stored_at)]);
            let link = &links[0];
            let done = sqlx::query(&format!(
                "INSERT INTO break_glass_events (id, user_name, groups, namespace, name, uid, at, event, stored_at, {LINK_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?12, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT (id) DO NOTHING"
            ))
            .bind(&ev.id)
            .bind(&ev.user)
            .bind(&e.groups_text)
            .bind(&ev.namespace)
            .bind(&ev.name)
            .bind(&ev.uid)
            .bind(fixed_ts(ev.at))
            .bind(&e.event_text)
            .bind_link(link)
            .execute(&mut *tx)
            .await?;
            let outcome = Outcome::of_rows_affected(done.rows_affected());
            if outcome == Outcome::Created {
                enqueue(&mut tx, &log).await?;
            }
            tx.commit().await?;
            Ok(outcome)
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
            let rows = sqlx::query_as(
                "SELECT event AS json, at, id FROM break_glass_events \
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
            Ok(rows)
        }
        .boxed()
    }

    fn insert_claim<'a>(&'a self, c: &'a PreparedEvent) -> BoxFuture<'a, DbResult<Outcome>> {
        async move {
            let ev = &c.event;
            let done = sqlx::query(
                "INSERT INTO break_glass_claims (id, user_name, groups, namespace, name, uid, at, claim, stored_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&ev.id)
            .bind(&ev.user)
            .bind(&c.groups_text)
            .bind(&ev.namespace)
            .bind(&ev.name)
            .bind(&ev.uid)
            .bind(fixed_ts(ev.at))
            .bind(&c.event_text)
            .bind(fixed_ts(stored_now()))
            .execute(&self.write)
            .await?;
            Ok(Outcome::of_rows_affected(done.rows_affected()))
        }
        .boxed()
    }

    fn claims_for_uid(&self, uid: String) -> BoxFuture<'_, DbResult<Vec<(serde_json::Value, bool)>>> {
        async move {
            let rows: Vec<(String, bool)> = sqlx::query_as(
                "SELECT c.claim, EXISTS (SELECT 1 FROM break_glass_events e WHERE e.id = c.id) \
                 FROM break_glass_claims c WHERE c.uid = ? ORDER BY c.at, c.id",
            )
            .bind(uid)
            .fetch_all(&self.write)
            .await?;
            rows.into_iter()
                .map(|(text, confirmed)| Ok((serde_json::from_str(&text)?, confirmed)))
                .collect()
        }
        .boxed()
    }

    fn list_claims(&self, page: Page) -> BoxFuture<'_, DbResult<Vec<ClaimListed>>> {
        async move {
            let (after_ts, after_id) = match &page.after {
                Some((t, id)) => (Some(fixed_ts(*t)), Some(id.clone())),
                None => (None, None),
            };
            let rows = sqlx::query_as(&format!(
                "SELECT c.claim AS json, c.at, c.id, {CLAIM_STATUS} AS status FROM break_glass_claims c \
                 WHERE (?1 IS NULL OR c.at >= ?1) AND (?2 IS NULL OR c.at < ?2) AND (?3 IS NULL OR (c.at, c.id) < (?3, ?4)) \
                 ORDER BY c.at DESC, c.id DESC LIMIT ?5"
            ))
            .bind(page.since.map(fixed_ts))
            .bind(page.until.map(fixed_ts))
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(page.limit))
            .fetch_all(&self.read)
            .await?;
            Ok(rows)
        }
        .boxed()
    }

    fn chain_links(&self, after: Option<(i32, i64)>, limit: u32) -> BoxFuture<'_, DbResult<Vec<Link>>> {
        async move {
            let (shard, seq) = after.unwrap_or((i32::MIN, 0));
            let rows: Vec<ChainRow> = sqlx::query_as(&format!(
                "SELECT kind, id, at, {LINK_COLUMNS} FROM ({}) \
                 WHERE chain_shard IS NOT NULL AND (chain_shard, chain_seq) > (?1, ?2) ORDER BY chain_shard, chain_seq LIMIT ?3",
                chain_entries("signal_processing_audit")
            ))
            .bind(shard)
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
            Ok(rows.into_iter().filter_map(ChainRow::link).collect())
        }
        .boxed()
    }

    fn chain_heads(&self) -> BoxFuture<'_, DbResult<Vec<Head>>> {
        async move {
            let mut conn = self.read.acquire().await?;
            Ok(read_head(&mut conn).await?.into_iter().collect())
        }
        .boxed()
    }

    fn record_rows(&self, range: TimeRange, after: Option<(DateTime<Utc>, String)>, limit: u32) -> BoxFuture<'_, DbResult<Vec<RecordRow>>> {
        self.page(RECORD_KEYSET, range, after, limit).boxed()
    }

    fn amendment_rows(
        &self,
        range: TimeRange,
        after: Option<(DateTime<Utc>, String)>,
        limit: u32,
    ) -> BoxFuture<'_, DbResult<Vec<AmendmentRow>>> {
        self.page(AMENDMENT_KEYSET, range, after, limit).boxed()
    }

    fn event_rows(&self, range: TimeRange, after: Option<(DateTime<Utc>, String)>, limit: u32) -> BoxFuture<'_, DbResult<Vec<EventRow>>> {
        self.page(EVENT_KEYSET, range, after, limit).boxed()
    }

    fn records_without_rows(&self, _range: TimeRange, _sample: u32) -> BoxFuture<'_, DbResult<MissingRecords>> {
        async move { Ok(MissingRecords::default()) }.boxed()
    }

    fn bare_ids(&self, _sample: u32) -> BoxFuture<'_, DbResult<(u64, Vec<String>)>> {
        async move { Ok((0, vec![])) }.boxed()
    }

    fn insert_manifest<'a>(&'a self, m: &'a StoredManifest) -> BoxFuture<'a, DbResult<()>> {
        async move {
            sqlx::query("INSERT INTO export_manifests (export_id, created_at, created_by, manifest, signature) VALUES (?, ?, ?, ?, ?)")
                .bind(&m.export_id)
                .bind(fixed_ts(m.created_at))
                .bind(&m.created_by)
                .bind(&m.manifest)
                .bind(&m.signature)
                .execute(&self.write)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn manifest(&self, export_id: String) -> BoxFuture<'_, DbResult<Option<StoredManifest>>> {
        async move {
            Ok(
                sqlx::query_as("SELECT export_id, created_at, created_by, manifest, signature FROM export_manifests WHERE export_id = ?")
                    .bind(export_id)
                    .fetch_optional(&self.read)
                    .await?,
            )
        }
        .boxed()
    }

    fn log_round(&self, signer: Option<Arc<SignerKey>>, limit: u32) -> BoxFuture<'_, DbResult<Option<RoundReport>>> {
        async move {
            // The one writer connection: a round and the writes take turns.
            let mut tx = self.write.begin().await?;
            let report = tlog::round(&mut *tx, signer.as_deref(), limit).await?;
            tx.commit().await?;
            Ok(Some(report))
        }
        .boxed()
    }

    fn log_items(&self, kind: Kind, ids: Vec<String>) -> BoxFuture<'_, DbResult<LogItems>> {
        async move {
            let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
                "SELECT item_id, idx, entry FROM tlog_entries WHERE kind = ?1 AND item_id IN (SELECT value FROM json_each(?2))",
            )
            .bind(i16::from(kind.byte()))
            .bind(serde_json::to_string(&ids)?)
            .fetch_all(&self.read)
            .await?;
            tlog::log_items(rows)
        }
        .boxed()
    }

    tlog::shared_log_reads!();
    super::witnesses::shared_cosignatures!();
}

/// An item's pending log entry, written in the transaction that stores the item.
async fn enqueue(conn: &mut sqlx::SqliteConnection, p: &Pending) -> DbResult<()> {
    sqlx::query("INSERT INTO tlog_pending (kind, item_id, stored_at, entry) VALUES (?1, ?2, ?3, ?4)")
        .bind(p.kind)
        .bind(&p.id)
        .bind(fixed_ts(p.stored_at))
        .bind(&p.entry)
        .execute(conn)
        .await?;
    Ok(())
}

impl LogTx for sqlx::SqliteConnection {
    tlog::shared_log_tx!();

    async fn pending(&mut self, limit: u32) -> DbResult<Vec<Pending>> {
        // Fixed-width times: text order is time order.
        let rows: Vec<(i16, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT kind, item_id, stored_at, entry FROM tlog_pending p WHERE NOT EXISTS \
             (SELECT 1 FROM tlog_entries e WHERE e.kind = p.kind AND e.item_id = p.item_id) \
             ORDER BY stored_at, kind, item_id LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *self)
        .await?;
        rows.into_iter()
            .map(|(kind, id, at, entry)| {
                let at =
                    DateTime::parse_from_rfc3339(&at).map_err(|e| DbError::Value(format!("pending entry {id}: stored_at {at:?}: {e}")))?;
                Ok(tlog::pending_row((kind, id, at.with_timezone(&Utc), entry)))
            })
            .collect()
    }

    async fn append(&mut self, round: &Round) -> DbResult<()> {
        for e in &round.entries {
            sqlx::query("INSERT INTO tlog_entries (idx, kind, item_id, entry) VALUES (?1, ?2, ?3, ?4)")
                .bind(tlog::db_i64(e.index)?)
                .bind(e.kind)
                .bind(&e.id)
                .bind(&e.entry)
                .execute(&mut *self)
                .await?;
            sqlx::query("DELETE FROM tlog_pending WHERE kind = ?1 AND item_id = ?2")
                .bind(e.kind)
                .bind(&e.id)
                .execute(&mut *self)
                .await?;
        }
        for (level, idx, hash) in &round.hashes {
            sqlx::query("INSERT INTO tlog_hashes (level, idx, hash) VALUES (?1, ?2, ?3)")
                .bind(i16::from(*level))
                .bind(tlog::db_i64(*idx)?)
                .bind(hash.as_slice())
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection, writer and readers, commits with synchronous=FULL in WAL mode.
    #[tokio::test]
    async fn every_connection_is_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 2, std::sync::Arc::new(chain::tests::keys()))
            .await
            .unwrap();
        for pool in [&store.write, &store.read] {
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap();
            assert_eq!(sync, 2, "FULL");
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
            assert_eq!(mode, "wal");
        }
    }

    /// The log's lag reads SQLite's text times: a pending entry's and a checkpoint's.
    #[tokio::test]
    async fn the_logs_lag_reads_its_times() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1, std::sync::Arc::new(chain::tests::keys()))
            .await
            .unwrap();
        assert_eq!(store.log_lag().await.unwrap(), LogLag::default());
        let at: DateTime<Utc> = "2026-12-07T06:00:00.123456Z".parse().unwrap();
        sqlx::query("INSERT INTO tlog_pending (kind, item_id, stored_at, entry) VALUES (1, 'a', ?1, x'00')")
            .bind(fixed_ts(at))
            .execute(&store.write)
            .await
            .unwrap();
        sqlx::query("INSERT INTO tlog_checkpoints (size, root, note) VALUES (0, zeroblob(32), 'n')")
            .execute(&store.write)
            .await
            .unwrap();
        let lag = store.log_lag().await.unwrap();
        assert_eq!(lag.oldest_pending, Some(at));
        let signed = lag.newest_checkpoint.unwrap();
        assert!((Utc::now() - signed).num_seconds().abs() < 60, "{signed}");
    }
}
