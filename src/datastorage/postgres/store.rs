//! [`PgStore`]: the [`Store`] on PostgreSQL, with chain shards locked per transaction and
//! the transparency log's queue written in the same statements.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};

use crate::datastorage::store::*;
use crate::datastorage::tlog::{self, LogTx, Pending, Round};
use crate::evidence::chain::{self, ChainKeys, Head, Link};
use crate::evidence::entry::Kind;
use crate::evidence::note::SignerKey;
use crate::evidence::rows::{trigger_str, AmendmentRow, ClaimListed, EventRow, RecordRow};
use crate::evidence::tiles::Tile;

use super::partitions::{
    create_next_partitions, month_start, parse_partition_name, partition_name, partition_names, LONG_HOLD, UPKEEP_EVERY,
};
use super::pool::ddl_backoff;
use super::pool::{pool, pool_with, DdlLimits, PgSettings, READ_SESSION};

/// What appending to the chain needs.
#[derive(Debug, Clone)]
pub struct ChainWriter {
    pub keys: std::sync::Arc<ChainKeys>,
    /// Chains written side by side; a writer takes whichever is free.
    pub shards: u32,
}

/// Advisory lock class of the chain shards (`pg_advisory_xact_lock(CHAIN_LOCK, shard)`).
const CHAIN_LOCK: i32 = 0x6167_6368;
/// Attempts of a batch whose ids another writer claimed between the check and the insert.
const INSERT_ATTEMPTS: u32 = 5;

/// Takes a free shard for the rest of the transaction, or waits for a random one when all
/// are taken. The lock ends with the transaction, so a writer that dies releases it.
async fn lock_shard(conn: &mut PgConnection, shards: u32) -> DbResult<i32> {
    let shards = i32::try_from(shards.max(1)).unwrap_or(i32::MAX);
    let free: Option<i32> =
        sqlx::query_scalar("SELECT s FROM generate_series(0, $1 - 1) AS s WHERE pg_try_advisory_xact_lock($2, s) LIMIT 1")
            .bind(shards)
            .bind(CHAIN_LOCK)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(s) = free {
        return Ok(s);
    }
    let s = rand::random_range(0..shards);
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(CHAIN_LOCK)
        .bind(s)
        .execute(&mut *conn)
        .await?;
    Ok(s)
}

/// The last link of `shard` over all three kinds. Read after the lock, in a statement of its
/// own: its snapshot then includes whatever the lock's previous holder committed.
const HEAD: &str = "SELECT chain_seq, chain_hash FROM (
    (SELECT chain_seq, chain_hash FROM signal_processing_audit_ids WHERE chain_shard = $1 ORDER BY chain_seq DESC LIMIT 1)
    UNION ALL (SELECT chain_seq, chain_hash FROM signal_processing_audit_amendments WHERE chain_shard = $1 ORDER BY chain_seq DESC LIMIT 1)
    UNION ALL (SELECT chain_seq, chain_hash FROM break_glass_events WHERE chain_shard = $1 ORDER BY chain_seq DESC LIMIT 1)
) h ORDER BY chain_seq DESC LIMIT 1";

async fn read_head<'e, E: sqlx::PgExecutor<'e>>(conn: E, shard: i32) -> DbResult<Option<Head>> {
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(HEAD).bind(shard).fetch_optional(conn).await?;
    Ok(row.map(|(seq, hash)| Head {
        shard,
        seq,
        hash: chain::hash_from(&hash).unwrap_or(chain::GENESIS),
    }))
}

/// Whether a database error is a unique violation (another writer claimed the id first).
fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Binds a link's columns, in [`LINK_COLUMNS`] order.
trait BindLink<'q> {
    fn bind_link(self, link: &'q Link) -> Self;
}

impl<'q> BindLink<'q> for sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn bind_link(self, link: &'q Link) -> Self {
        self.bind(link.shard)
            .bind(link.seq)
            .bind(&link.key_id)
            .bind(link.stored_at)
            .bind(link.digest.to_vec())
            .bind(link.hash.to_vec())
    }
}

/// An open range's ends inside PostgreSQL's timestamp range, so the range stays an index condition.
fn range_ends(r: &TimeRange) -> (DateTime<Utc>, DateTime<Utc>) {
    let far_past = month_start(1, 1).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let far_future = month_start(9999, 12).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    (r.since.unwrap_or(far_past), r.until.unwrap_or(far_future))
}

/// Page position: strictly after `after`, or from the start of the range.
fn page_start(r: &TimeRange, after: Option<(DateTime<Utc>, String)>) -> (DateTime<Utc>, String) {
    after.unwrap_or_else(|| (range_ends(r).0, String::new()))
}

pub struct PgStore {
    write: PgPool,
    read: PgPool,
    /// Auditors' long reads (verify, export, report): a pool of their own, with a longer
    /// statement timeout, so they never take a connection from the lanes.
    audit: PgPool,
    /// Keys and shard count for appending to the chain; None: a read-only store (the
    /// auditor's `verify` on a read-only role).
    chain: Option<ChainWriter>,
    /// Months that have their own partition (refreshed from the catalog when a new one shows up).
    months: Mutex<HashSet<(i32, u32)>>,
    /// Months without a partition already reported, so a past month is not looked up per insert.
    missing_reported: Mutex<HashSet<(i32, u32)>>,
    ddl: DdlLimits,
    /// Failed partition upkeep attempts in a row (0: the last one succeeded).
    upkeep_failures: std::sync::atomic::AtomicU32,
}

impl PgStore {
    /// Opens the pools on a schema that is already migrated (see [`super::migrate::prepare`]).
    pub async fn connect(settings: &PgSettings, chain: ChainWriter) -> anyhow::Result<Self> {
        let store = Self::open(settings, Some(chain)).await?;
        store.refresh_partitions().await;
        Ok(store)
    }

    /// For reading only (an auditor's role may hold nothing but SELECT): no partition upkeep,
    /// and every write fails.
    pub async fn connect_read_only(url: &str, statement_timeout: Duration) -> anyhow::Result<Self> {
        let settings = PgSettings {
            url: url.to_string(),
            write_connections: 1,
            read_connections: 1,
            statement_timeout,
            audit_connections: 1,
            audit_statement_timeout: statement_timeout,
            ddl: DdlLimits::default(),
        };
        Self::open(&settings, None).await
    }

    async fn open(settings: &PgSettings, chain: Option<ChainWriter>) -> anyhow::Result<Self> {
        let write = pool(&settings.url, settings.write_connections, settings.statement_timeout).await?;
        let read = pool_with(
            &settings.url,
            settings.read_connections,
            settings.statement_timeout,
            vec![READ_SESSION.into()],
        )
        .await?;
        let audit = pool_with(
            &settings.url,
            settings.audit_connections,
            settings.audit_statement_timeout,
            vec![READ_SESSION.into()],
        )
        .await?;
        Ok(Self {
            write,
            read,
            audit,
            chain,
            months: Mutex::new(HashSet::new()),
            missing_reported: Mutex::new(HashSet::new()),
            ddl: settings.ddl,
            upkeep_failures: std::sync::atomic::AtomicU32::new(0),
        })
    }

    fn writer(&self) -> DbResult<&ChainWriter> {
        self.chain
            .as_ref()
            .ok_or_else(|| DbError::Value("this store was opened read-only".into()))
    }

    /// A transaction holding a shard of the chain, and that shard's head.
    async fn chain_tx(&self) -> DbResult<(sqlx::Transaction<'_, sqlx::Postgres>, i32, Option<Head>)> {
        let shards = self.writer()?.shards;
        let mut tx = self.write.begin().await?;
        let shard = lock_shard(&mut tx, shards).await?;
        let head = read_head(&mut *tx, shard).await?;
        Ok((tx, shard, head))
    }

    /// One attempt at storing a batch: under a shard's lock, finds which ids are new, chains
    /// them and writes ids and records in one statement. `Ok(None)`: another writer claimed one
    /// of the ids meanwhile (retry).
    async fn try_insert(&self, records: &[Prepared]) -> DbResult<Option<HashSet<String>>> {
        let writer = self.writer()?;
        let (mut tx, shard, head) = self.chain_tx().await?;
        let ids: Vec<&str> = records.iter().map(|p| p.rec.id.as_str()).collect();
        let taken: Vec<String> = sqlx::query_scalar("SELECT id FROM signal_processing_audit_ids WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        let taken: HashSet<String> = taken.into_iter().collect();
        let new: Vec<&Prepared> = records.iter().filter(|p| !taken.contains(&p.rec.id)).collect();
        if new.is_empty() {
            tx.rollback().await?;
            return Ok(Some(HashSet::new()));
        }
        let stored_at = stored_now();
        let entries = record_entries(new.iter().copied(), stored_at);
        let log = tlog::record_entries(new.iter().copied(), stored_at)?;
        let key = writer.keys.active();
        let links = chain::extend(key, shard, head.as_ref(), &entries);
        let text = |f: fn(&Prepared) -> &str| new.iter().map(|p| f(p)).collect::<Vec<_>>();
        let opt = |f: fn(&Prepared) -> Option<&str>| new.iter().map(|p| f(p)).collect::<Vec<_>>();
        let done = sqlx::query(INSERT)
            .bind(text(|p| &p.rec.id))
            .bind(text(|p| &p.rec.remediation_id))
            .bind(text(|p| &p.rec.signal_fingerprint))
            .bind(text(|p| &p.phases_text))
            .bind(new.iter().map(|p| p.rec.enrichment_quality).collect::<Vec<_>>())
            .bind(opt(|p| p.sources_text.as_deref()))
            .bind(new.iter().map(|p| p.rec.context_size_bytes).collect::<Vec<_>>())
            .bind(opt(|p| p.rec.environment.as_deref()))
            .bind(new.iter().map(|p| p.rec.confidence).collect::<Vec<_>>())
            .bind(opt(|p| p.rec.business_criticality.as_deref()))
            .bind(opt(|p| p.rec.sla_requirement.as_deref()))
            .bind(opt(|p| p.rec.priority.as_deref()))
            .bind(new.iter().map(|p| p.rec.priority_score).collect::<Vec<_>>())
            .bind(opt(|p| p.rec.routed_to_service.as_deref()))
            .bind(new.iter().map(|p| p.rec.routing_priority).collect::<Vec<_>>())
            .bind(new.iter().map(|p| p.rec.completed_at).collect::<Vec<_>>())
            .bind(text(|p| p.rec.status.as_str()))
            .bind(opt(|p| p.rec.error_message.as_deref()))
            .bind(opt(|p| p.rec.namespace.as_deref()))
            .bind(opt(|p| p.rec.name.as_deref()))
            .bind(opt(|p| p.rec.uid.as_deref()))
            .bind(opt(|p| p.rec.trigger.map(trigger_str)))
            .bind(new.iter().map(|p| p.rec.deleted_at).collect::<Vec<_>>())
            .bind(text(|p| &p.record_text))
            .bind(opt(|p| p.anomalies_text.as_deref()))
            .bind(links.iter().map(|l| l.seq).collect::<Vec<_>>())
            .bind(links.iter().map(|l| l.digest.to_vec()).collect::<Vec<_>>())
            .bind(links.iter().map(|l| l.hash.to_vec()).collect::<Vec<_>>())
            .bind(shard)
            .bind(&key.id)
            .bind(stored_at)
            .bind(log.iter().map(|p| p.entry.as_slice()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await;
        match done {
            Ok(_) => {
                tx.commit().await?;
                Ok(Some(new.iter().map(|p| p.rec.id.clone()).collect()))
            }
            Err(e) if unique_violation(&e) => {
                tx.rollback().await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn write_pool(&self) -> &PgPool {
        &self.write
    }

    fn pool(&self, lane: Lane) -> &PgPool {
        match lane {
            Lane::Write => &self.write,
            Lane::Read => &self.read,
            Lane::Audit => &self.audit,
        }
    }

    /// A statistic's rows: `completed_at` after `range.since` ($1), up to `range.until` ($2).
    async fn stats<T>(&self, sql: &'static str, range: StatsRange) -> DbResult<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        Ok(sqlx::query_as(sql)
            .bind(range.since)
            .bind(range.until)
            .fetch_all(&self.read)
            .await?)
    }

    /// One keyset page of a kind's rows on the auditors' pool: its time in `range`, strictly
    /// after `after` by (time, id), oldest first.
    async fn page<T>(&self, k: Keyset, range: TimeRange, after: Option<(DateTime<Utc>, String)>, limit: u32) -> DbResult<Vec<T>>
    where
        T: Chained,
        Linked<T>: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let (_, until) = range_ends(&range);
        let (after_ts, after_id) = page_start(&range, after);
        let Keyset {
            columns,
            text,
            table,
            at,
            id,
        } = k;
        let rows: Vec<Linked<T>> = sqlx::query_as(&format!(
            "SELECT {columns}, {text}::text AS {text}, {LINK_COLUMNS} FROM {table} WHERE {at} < $1 AND ({at}, {id}) > ($2, $3) \
             ORDER BY {at}, {id} LIMIT $4"
        ))
        .bind(until)
        .bind(after_ts)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.audit)
        .await?;
        Ok(rows.into_iter().map(Linked::into_row).collect())
    }
}

/// Partition upkeep: this and next month's partitions, created as records arrive for them.
impl PgStore {
    /// Creates this and next month's partition if missing (through the owner's function) and
    /// reloads the known months. One attempt, not made while a long reader holds a lock on the
    /// table and its lock wait bounded (`DdlLimits`), so it never queues every INSERT behind a
    /// reader for long; the upkeep task retries. Failure is not fatal: rows then land in the DEFAULT partition.
    pub async fn refresh_partitions(&self) {
        use std::sync::atomic::Ordering;
        match create_next_partitions(&self.write, &self.ddl).await {
            Ok(None) => {
                let failures = self.upkeep_failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    failures,
                    "a transaction has held a lock on the audit table for {LONG_HOLD:?} or more (a long read): partition upkeep \
                     waits for it without queueing INSERTs (retrying with backoff); new months go to the default partition meanwhile"
                );
            }
            Ok(Some(created)) => {
                self.upkeep_failures.store(0, Ordering::Relaxed);
                for name in created {
                    tracing::info!(partition = %name, "partition created");
                }
            }
            Err(e) => {
                let failures = self.upkeep_failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(error = %e, failures, "could not create the next partitions (retrying with backoff); new months go to the default partition meanwhile");
            }
        }
        match partition_names(&self.write).await {
            Ok(names) => {
                if let Ok(mut months) = self.months.lock() {
                    *months = names.iter().filter_map(|n| parse_partition_name(n)).collect();
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list partitions"),
        }
    }

    /// Hourly: keeps next month's partition in place before its first record arrives; after
    /// a failed attempt, again after a backoff (a second, doubling, at most a minute).
    pub fn spawn_partition_upkeep(self: &std::sync::Arc<Self>) {
        let me = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let failures = match me.upgrade() {
                    Some(store) => store.upkeep_failures.load(std::sync::atomic::Ordering::Relaxed),
                    None => return,
                };
                let wait = if failures == 0 { UPKEEP_EVERY } else { ddl_backoff(failures) };
                tokio::time::sleep(wait).await;
                let Some(store) = me.upgrade() else { return };
                store.refresh_partitions().await;
            }
        });
    }

    /// Before an insert: months not seen yet get one refresh; months still without a
    /// partition (older than the window `migrate` prepared) are reported once.
    async fn ensure_months(&self, wanted: BTreeSet<(i32, u32)>) {
        let unknown = |months: &HashSet<(i32, u32)>| wanted.iter().filter(|m| !months.contains(m)).copied().collect::<Vec<_>>();
        let missing = match self.months.lock() {
            Ok(months) => unknown(&months),
            Err(_) => return,
        };
        let missing: Vec<_> = match self.missing_reported.lock() {
            Ok(reported) => missing.into_iter().filter(|m| !reported.contains(m)).collect(),
            Err(_) => return,
        };
        if missing.is_empty() {
            return;
        }
        self.refresh_partitions().await;
        let still = match self.months.lock() {
            Ok(months) => missing.into_iter().filter(|m| !months.contains(m)).collect::<Vec<_>>(),
            Err(_) => return,
        };
        for (y, m) in still {
            tracing::warn!(
                partition = %partition_name(y, m),
                "no partition for this month; its records go to the default partition (run `audit-guard datastorage migrate` as the owner)"
            );
            if let Ok(mut reported) = self.missing_reported.lock() {
                reported.insert((y, m));
            }
        }
    }
}

/// One statement, so atomic: the new ids with their links into the ids table (the chain of
/// records lives there, so it outlives partitions that retention drops), their log entries
/// into the sequencer's queue, the records into
/// their partitions (by `stored_at`, the moment of this statement's transaction). Only ids found new under the shard's lock are sent; one claimed by
/// another writer meanwhile fails the statement (unique violation) and the batch is retried.
/// JSON travels as text and is cast here.
const INSERT: &str = "WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::int8[], $8::text[],
        $9::float8[], $10::text[], $11::text[], $12::text[], $13::int8[], $14::text[], $15::int8[], $16::timestamptz[],
        $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::timestamptz[], $24::text[], $25::text[],
        $26::int8[], $27::bytea[], $28::bytea[], $32::bytea[])
    AS t(id, remediation_id, signal_fingerprint, processing_phases, enrichment_quality, enrichment_sources, context_size_bytes,
         environment, confidence, business_criticality, sla_requirement, priority, priority_score, routed_to_service,
         routing_priority, completed_at, status, error_message, namespace, name, uid, trigger, deleted_at, record, anomalies,
         chain_seq, chain_digest, chain_hash, log_entry)
), ids AS (
    INSERT INTO signal_processing_audit_ids (id, completed_at, stored_at, chain_shard, chain_seq, chain_key_id, chain_stored_at, chain_digest, chain_hash)
    SELECT id, completed_at, $31, $29, chain_seq, $30, $31, chain_digest, chain_hash FROM u
), pending AS (
    INSERT INTO tlog_pending (kind, item_id, stored_at, entry) SELECT 1, id, $31, log_entry FROM u
)
INSERT INTO signal_processing_audit (id, remediation_id, signal_fingerprint, processing_phases, enrichment_quality,
    enrichment_sources, context_size_bytes, environment, confidence, business_criticality, sla_requirement, priority,
    priority_score, routed_to_service, routing_priority, completed_at, status, error_message, namespace, name, uid,
    trigger, deleted_at, record, anomalies, stored_at)
SELECT u.id, u.remediation_id, u.signal_fingerprint, u.processing_phases::jsonb, u.enrichment_quality,
    u.enrichment_sources::jsonb, u.context_size_bytes, u.environment, u.confidence, u.business_criticality, u.sla_requirement,
    u.priority, u.priority_score, u.routed_to_service, u.routing_priority, u.completed_at, u.status, u.error_message,
    u.namespace, u.name, u.uid, u.trigger, u.deleted_at, u.record::json, u.anomalies::jsonb, $31
FROM u";

const AMENDMENT_COLUMNS: &str = "amendment_id, record_id, amended_at, record";

/// Records read their links from the ids table (USING keeps `id`, `completed_at` and
/// `stored_at` unqualified: in a LEFT JOIN they are the record's own columns).
const RECORD_KEYSET_PG: Keyset = Keyset {
    table: "signal_processing_audit LEFT JOIN signal_processing_audit_ids USING (id, completed_at, stored_at)",
    ..RECORD_KEYSET
};

/// A gone record's link and the time that placed it in its partition.
#[derive(sqlx::FromRow)]
struct Placed {
    #[sqlx(flatten)]
    row: ChainRow,
    placed: DateTime<Utc>,
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn ping(&self) -> BoxFuture<'_, DbResult<()>> {
        async move {
            sqlx::query("SELECT 1").execute(&self.write).await?;
            Ok(())
        }
        .boxed()
    }

    fn insert<'a>(&'a self, records: &'a [Prepared]) -> BoxFuture<'a, DbResult<Vec<Outcome>>> {
        async move {
            // Records go to the partition of the month they are stored in, whatever they claim.
            let now = Utc::now();
            self.ensure_months(BTreeSet::from([(now.year(), now.month())])).await;
            for attempt in 1..=INSERT_ATTEMPTS {
                if let Some(created) = self.try_insert(records).await? {
                    return Ok(outcomes(records, &created));
                }
                tracing::debug!(attempt, "an id of the batch was stored by another writer meanwhile; retrying");
            }
            Err(DbError::Value(format!(
                "the batch's ids kept being claimed by other writers ({INSERT_ATTEMPTS} attempts)"
            )))
        }
        .boxed()
    }

    fn records<'a>(&'a self, ids: &'a [String], lane: Lane) -> BoxFuture<'a, DbResult<HashMap<String, serde_json::Value>>> {
        async move {
            // Through the ids table, so each id finds its partition by stored_at.
            let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
                "SELECT i.id, a.record FROM signal_processing_audit_ids i JOIN signal_processing_audit a \
                 ON a.id = i.id AND a.stored_at = i.stored_at WHERE i.id = ANY($1)",
            )
            .bind(ids)
            .fetch_all(self.pool(lane))
            .await?;
            Ok(rows.into_iter().collect())
        }
        .boxed()
    }

    fn amendments<'a>(&'a self, ids: &'a [String], lane: Lane) -> BoxFuture<'a, DbResult<HashMap<String, Vec<StoredAmendment>>>> {
        async move {
            let rows = sqlx::query_as(&format!(
                "SELECT {AMENDMENT_COLUMNS} FROM signal_processing_audit_amendments WHERE record_id = ANY($1) \
                 ORDER BY record_id, amended_at, amendment_id"
            ))
            .bind(ids)
            .fetch_all(self.pool(lane))
            .await?;
            Ok(group_amendments(rows))
        }
        .boxed()
    }

    fn insert_amendment<'a>(&'a self, a: &'a NewAmendment) -> BoxFuture<'a, DbResult<AmendmentOutcome>> {
        async move {
            let key = self.writer()?.keys.active();
            let log = tlog::amendment_entry(a)?;
            let (mut tx, shard, head) = self.chain_tx().await?;
            let links = chain::extend(key, shard, head.as_ref(), &[amendment_entry(a)]);
            let link = &links[0];
            // A repeat of the same content inserts nothing, so its link is never written.
            let inserted = sqlx::query(&format!(
                "INSERT INTO signal_processing_audit_amendments (amendment_id, record_id, content_sha256, record, anomalies, amended_at, \
                 {LINK_COLUMNS}) VALUES ($1, $2, $3, $4::json, $5::jsonb, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (record_id, content_sha256) DO NOTHING RETURNING {AMENDMENT_COLUMNS}"
            ))
            .bind(&a.amendment_id)
            .bind(&a.prepared.rec.id)
            .bind(&a.digest)
            .bind(&a.prepared.record_text)
            .bind(a.prepared.anomalies_text.as_deref())
            .bind(a.amended_at)
            .bind_link(link)
            .fetch_optional(&mut *tx)
            .await?;
            if inserted.is_some() {
                enqueue(&mut tx, &log).await?;
            }
            tx.commit().await?;
            if let Some(row) = inserted {
                return Ok(AmendmentOutcome::Created(sqlx::FromRow::from_row(&row)?));
            }
            let stored = sqlx::query_as(&format!(
                "SELECT {AMENDMENT_COLUMNS} FROM signal_processing_audit_amendments WHERE record_id = $1 AND content_sha256 = $2"
            ))
            .bind(&a.prepared.rec.id)
            .bind(&a.digest)
            .fetch_one(&self.write)
            .await?;
            Ok(AmendmentOutcome::Duplicate(stored))
        }
        .boxed()
    }

    fn list(&self, q: ListQuery) -> BoxFuture<'_, DbResult<Vec<Listed>>> {
        async move {
            let (after_ts, after_id) = match q.page.after {
                Some((t, id)) => (Some(t), Some(id)),
                None => (None, None),
            };
            Ok(sqlx::query_as(
                "SELECT record AS json, completed_at AS at, id FROM signal_processing_audit \
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
            .bind(q.page.since)
            .bind(q.page.until)
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(q.page.limit))
            .fetch_all(&self.read)
            .await?)
        }
        .boxed()
    }

    fn classification(&self, range: StatsRange) -> BoxFuture<'_, DbResult<Vec<ClassificationStat>>> {
        self.stats(
            "SELECT environment, AVG(confidence)::float8 AS avg_confidence, COUNT(*) AS total_signals FROM signal_processing_audit \
             WHERE completed_at > $1 AND completed_at <= $2 GROUP BY environment ORDER BY environment",
            range,
        )
        .boxed()
    }

    fn priorities(&self, range: StatsRange) -> BoxFuture<'_, DbResult<Vec<PriorityStat>>> {
        self.stats(
            "SELECT priority, COUNT(*) AS count, AVG(priority_score)::float8 AS avg_score FROM signal_processing_audit \
             WHERE completed_at > $1 AND completed_at <= $2 GROUP BY priority ORDER BY priority",
            range,
        )
        .boxed()
    }

    fn slow_phases(&self, q: SlowPhaseQuery) -> BoxFuture<'_, DbResult<Vec<SlowPhase>>> {
        async move {
            // Filter and order on the JSONB phases (ISO durations, already parsed; compared as
            // intervals, i.e. to the microsecond); only the rows returned read their exact
            // nanoseconds from the record text.
            Ok(sqlx::query_as(
                "SELECT a.id, a.remediation_id, a.signal_fingerprint, a.completed_at, \
                        (a.record->'processing_phases'->(s.n::int - 1)->>'duration')::int8 AS duration_nanos \
                 FROM (SELECT a.id, a.stored_at, p.n, (p.v->>'duration')::interval AS iv \
                       FROM signal_processing_audit a, jsonb_array_elements(a.processing_phases) WITH ORDINALITY AS p(v, n) \
                       WHERE a.completed_at >= $3 AND a.completed_at <= $4 AND p.v->>'phase' = $1 \
                         AND jsonb_typeof(p.v->'duration') = 'string' \
                         AND (p.v->>'duration')::interval > make_interval(secs => $2::float8 / 1e9) \
                       ORDER BY iv DESC, a.id LIMIT $5) s \
                 JOIN signal_processing_audit a ON a.id = s.id AND a.stored_at = s.stored_at \
                 ORDER BY duration_nanos DESC, a.id",
            )
            .bind(q.phase)
            .bind(q.min_duration_nanos)
            .bind(q.range.since)
            .bind(q.range.until)
            .bind(i64::from(q.limit))
            .fetch_all(&self.read)
            .await?)
        }
        .boxed()
    }

    fn insert_event<'a>(&'a self, e: &'a PreparedEvent) -> BoxFuture<'a, DbResult<Outcome>> {
        async move {
            let ev = &e.event;
            let key = self.writer()?.keys.active();
            let stored_at = stored_now();
            let log = tlog::event_entry(e, stored_at)?;
            let (mut tx, shard, head) = self.chain_tx().await?;
            let links = chain::extend(key, shard, head.as_ref(), &[event_entry(e, stored_at)]);
            let link = &links[0];
            let done = sqlx::query(&format!(
                "INSERT INTO break_glass_events (id, user_name, groups, namespace, name, uid, at, event, stored_at, {LINK_COLUMNS}) \
                 VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8::json, $12, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING"
            ))
            .bind(&ev.id)
            .bind(&ev.user)
            .bind(&e.groups_text)
            .bind(&ev.namespace)
            .bind(&ev.name)
            .bind(&ev.uid)
            .bind(ev.at)
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
            let row: Option<(serde_json::Value,)> = sqlx::query_as("SELECT event FROM break_glass_events WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool(lane))
                .await?;
            Ok(row.map(|(v,)| v))
        }
        .boxed()
    }

    fn list_events(&self, page: Page) -> BoxFuture<'_, DbResult<Vec<Listed>>> {
        async move {
            let (after_ts, after_id) = match page.after {
                Some((t, id)) => (Some(t), Some(id)),
                None => (None, None),
            };
            Ok(sqlx::query_as(
                "SELECT event AS json, at, id FROM break_glass_events \
                 WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2) \
                 AND ($3::timestamptz IS NULL OR (at, id) < ($3, $4::text)) \
                 ORDER BY at DESC, id DESC LIMIT $5",
            )
            .bind(page.since)
            .bind(page.until)
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(page.limit))
            .fetch_all(&self.read)
            .await?)
        }
        .boxed()
    }

    fn insert_claim<'a>(&'a self, c: &'a PreparedEvent) -> BoxFuture<'a, DbResult<Outcome>> {
        async move {
            let ev = &c.event;
            let done = sqlx::query(
                "INSERT INTO break_glass_claims (id, user_name, groups, namespace, name, uid, at, claim) \
                 VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8::json) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&ev.id)
            .bind(&ev.user)
            .bind(&c.groups_text)
            .bind(&ev.namespace)
            .bind(&ev.name)
            .bind(&ev.uid)
            .bind(ev.at)
            .bind(&c.event_text)
            .execute(&self.write)
            .await?;
            Ok(Outcome::of_rows_affected(done.rows_affected()))
        }
        .boxed()
    }

    fn claims_for_uid(&self, uid: String) -> BoxFuture<'_, DbResult<Vec<(serde_json::Value, bool)>>> {
        async move {
            Ok(sqlx::query_as(
                "SELECT c.claim, EXISTS (SELECT 1 FROM break_glass_events e WHERE e.id = c.id) \
                 FROM break_glass_claims c WHERE c.uid = $1 ORDER BY c.at, c.id",
            )
            .bind(uid)
            .fetch_all(&self.write)
            .await?)
        }
        .boxed()
    }

    fn list_claims(&self, page: Page) -> BoxFuture<'_, DbResult<Vec<ClaimListed>>> {
        async move {
            let (after_ts, after_id) = match page.after {
                Some((t, id)) => (Some(t), Some(id)),
                None => (None, None),
            };
            Ok(sqlx::query_as(&format!(
                "SELECT c.claim AS json, c.at, c.id, {CLAIM_STATUS} AS status FROM break_glass_claims c \
                 WHERE ($1::timestamptz IS NULL OR c.at >= $1) AND ($2::timestamptz IS NULL OR c.at < $2) \
                 AND ($3::timestamptz IS NULL OR (c.at, c.id) < ($3, $4::text)) \
                 ORDER BY c.at DESC, c.id DESC LIMIT $5"
            ))
            .bind(page.since)
            .bind(page.until)
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(page.limit))
            .fetch_all(&self.read)
            .await?)
        }
        .boxed()
    }

    fn chain_links(&self, after: Option<(i32, i64)>, limit: u32) -> BoxFuture<'_, DbResult<Vec<Link>>> {
        async move {
            let (shard, seq) = after.unwrap_or((i32::MIN, 0));
            let rows: Vec<ChainRow> = sqlx::query_as(&format!(
                "SELECT kind, id, at, {LINK_COLUMNS} FROM ({}) c \
                 WHERE (chain_shard, chain_seq) > ($1, $2) ORDER BY chain_shard, chain_seq LIMIT $3",
                chain_entries("signal_processing_audit_ids")
            ))
            .bind(shard)
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&self.audit)
            .await?;
            Ok(rows.into_iter().filter_map(ChainRow::link).collect())
        }
        .boxed()
    }

    fn chain_heads(&self) -> BoxFuture<'_, DbResult<Vec<Head>>> {
        async move {
            // The highest shard number through each index, then each shard's head through it.
            let max: Option<i32> = sqlx::query_scalar(
                "SELECT max(s) FROM (SELECT max(chain_shard) AS s FROM signal_processing_audit_ids \
                 UNION ALL SELECT max(chain_shard) FROM signal_processing_audit_amendments \
                 UNION ALL SELECT max(chain_shard) FROM break_glass_events) m",
            )
            .fetch_one(&self.audit)
            .await?;
            let mut heads = vec![];
            for shard in 0..=max.unwrap_or(-1) {
                if let Some(h) = read_head(&self.audit, shard).await? {
                    heads.push(h);
                }
            }
            Ok(heads)
        }
        .boxed()
    }

    fn record_rows(&self, range: TimeRange, after: Option<(DateTime<Utc>, String)>, limit: u32) -> BoxFuture<'_, DbResult<Vec<RecordRow>>> {
        self.page(RECORD_KEYSET_PG, range, after, limit).boxed()
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

    fn bare_ids(&self, sample: u32) -> BoxFuture<'_, DbResult<(u64, Vec<String>)>> {
        async move {
            // Unchained (the chain index covers `chain_shard IS NULL`), no record, no entry.
            const BARE: &str = "FROM signal_processing_audit_ids i WHERE i.chain_shard IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM signal_processing_audit a WHERE a.id = i.id AND a.stored_at = i.stored_at) \
                 AND NOT EXISTS (SELECT 1 FROM tlog_pending p WHERE p.kind = 1 AND p.item_id = i.id) \
                 AND NOT EXISTS (SELECT 1 FROM tlog_entries e WHERE e.kind = 1 AND e.item_id = i.id)";
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) {BARE}"))
                .fetch_one(&self.audit)
                .await?;
            let ids: Vec<String> = sqlx::query_scalar(&format!("SELECT i.id {BARE} ORDER BY i.id LIMIT $1"))
                .bind(i64::from(sample))
                .fetch_all(&self.audit)
                .await?;
            Ok((u64::try_from(n).unwrap_or(0), ids))
        }
        .boxed()
    }

    fn records_without_rows(&self, range: TimeRange, sample: u32) -> BoxFuture<'_, DbResult<MissingRecords>> {
        async move {
            let (since, until) = range_ends(&range);
            // The time that placed the record in its partition: when it was stored (a record
            // already gone when the table was partitioned by stored_at: its completed_at).
            const GONE: &str = "FROM signal_processing_audit_ids i \
                 CROSS JOIN LATERAL (SELECT COALESCE(i.stored_at, i.completed_at) AS placed) p \
                 WHERE p.placed >= $1 AND p.placed < $2 AND i.chain_shard IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM signal_processing_audit a WHERE a.id = i.id AND a.stored_at = i.stored_at)";
            let months: Vec<(f64, f64, i64)> = sqlx::query_as(&format!(
                "SELECT extract(year FROM p.placed AT TIME ZONE 'UTC')::float8 AS y, \
                        extract(month FROM p.placed AT TIME ZONE 'UTC')::float8 AS m, count(*) {GONE} GROUP BY 1, 2 ORDER BY 1, 2"
            ))
            .bind(since)
            .bind(until)
            .fetch_all(&self.audit)
            .await?;
            if months.is_empty() {
                return Ok(MissingRecords::default());
            }
            let present: HashSet<(i32, u32)> = partition_names(&self.audit)
                .await?
                .iter()
                .filter_map(|n| parse_partition_name(n))
                .collect();
            let rows: Vec<Placed> = sqlx::query_as(&format!(
                "SELECT 'record'::text AS kind, i.id, i.completed_at AS at, {}, p.placed {GONE} \
                 ORDER BY i.chain_shard, i.chain_seq LIMIT $3",
                LINK_COLUMNS.replace("chain_", "i.chain_")
            ))
            .bind(since)
            .bind(until)
            .bind(i64::from(sample))
            .fetch_all(&self.audit)
            .await?;
            let sample = rows
                .into_iter()
                .filter_map(|r| {
                    let month = (r.placed.year(), r.placed.month());
                    r.row.link().map(|l| (month, l))
                })
                .collect();
            Ok(MissingRecords {
                by_month: months
                    .into_iter()
                    .map(|(y, m, n)| {
                        let ym = (y as i32, m as u32);
                        (ym.0, ym.1, n.max(0) as u64, present.contains(&ym))
                    })
                    .collect(),
                sample,
            })
        }
        .boxed()
    }

    fn insert_manifest<'a>(&'a self, m: &'a StoredManifest) -> BoxFuture<'a, DbResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO export_manifests (export_id, created_at, created_by, manifest, signature) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&m.export_id)
            .bind(m.created_at)
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
                sqlx::query_as("SELECT export_id, created_at, created_by, manifest, signature FROM export_manifests WHERE export_id = $1")
                    .bind(export_id)
                    .fetch_optional(&self.read)
                    .await?,
            )
        }
        .boxed()
    }

    fn log_round(&self, signer: Option<Arc<SignerKey>>, limit: u32) -> BoxFuture<'_, DbResult<Option<RoundReport>>> {
        async move {
            let mut tx = self.write.begin().await?;
            // One round at a time across every process on this database, so two replicas
            // never give one index twice; writers never take this lock.
            let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, 0)")
                .bind(LOG_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !ours {
                tx.rollback().await?;
                return Ok(None);
            }
            let report = tlog::round(&mut *tx, signer.as_deref(), limit).await?;
            tx.commit().await?;
            Ok(Some(report))
        }
        .boxed()
    }

    fn log_items(&self, kind: Kind, ids: Vec<String>) -> BoxFuture<'_, DbResult<LogItems>> {
        async move {
            let rows: Vec<(String, i64, Vec<u8>)> =
                sqlx::query_as("SELECT item_id, idx, entry FROM tlog_entries WHERE kind = $1 AND item_id = ANY($2)")
                    .bind(i16::from(kind.byte()))
                    .bind(&ids)
                    .fetch_all(&self.read)
                    .await?;
            tlog::log_items(rows)
        }
        .boxed()
    }

    tlog::shared_log_reads!();
    crate::datastorage::witnesses::shared_cosignatures!();
}

/// Advisory lock class of the log's sequencer (`pg_try_advisory_xact_lock(LOG_LOCK, 0)`).
const LOG_LOCK: i32 = 0x746c_6f67;

/// An item's pending log entry, written in the transaction that stores the item.
async fn enqueue(conn: &mut PgConnection, p: &Pending) -> DbResult<()> {
    sqlx::query("INSERT INTO tlog_pending (kind, item_id, stored_at, entry) VALUES ($1, $2, $3, $4)")
        .bind(p.kind)
        .bind(&p.id)
        .bind(p.stored_at)
        .bind(&p.entry)
        .execute(conn)
        .await?;
    Ok(())
}

impl LogTx for PgConnection {
    tlog::shared_log_tx!();

    async fn pending(&mut self, limit: u32) -> DbResult<Vec<Pending>> {
        // An item already in the log (a pending row written again by hand) is skipped and
        // cleared, never sequenced twice.
        let rows: Vec<(i16, String, DateTime<Utc>, Vec<u8>)> = sqlx::query_as(
            "SELECT kind, item_id, stored_at, entry FROM tlog_pending p WHERE NOT EXISTS \
             (SELECT 1 FROM tlog_entries e WHERE e.kind = p.kind AND e.item_id = p.item_id) \
             ORDER BY stored_at, kind, item_id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *self)
        .await?;
        Ok(rows.into_iter().map(tlog::pending_row).collect())
    }

    async fn append(&mut self, round: &Round) -> DbResult<()> {
        let e = &round.entries;
        sqlx::query(
            "INSERT INTO tlog_entries (idx, kind, item_id, entry) SELECT * FROM UNNEST($1::int8[], $2::int2[], $3::text[], $4::bytea[])",
        )
        .bind(e.iter().map(|e| tlog::db_i64(e.index)).collect::<DbResult<Vec<_>>>()?)
        .bind(e.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.entry.as_slice()).collect::<Vec<_>>())
        .execute(&mut *self)
        .await?;
        let h = &round.hashes;
        sqlx::query("INSERT INTO tlog_hashes (level, idx, hash) SELECT * FROM UNNEST($1::int2[], $2::int8[], $3::bytea[])")
            .bind(h.iter().map(|(l, _, _)| i16::from(*l)).collect::<Vec<_>>())
            .bind(h.iter().map(|(_, i, _)| tlog::db_i64(*i)).collect::<DbResult<Vec<_>>>()?)
            .bind(h.iter().map(|(_, _, h)| h.as_slice()).collect::<Vec<_>>())
            .execute(&mut *self)
            .await?;
        // The runtime role holds no DELETE: the owner's function clears only what is logged.
        sqlx::query("SELECT tlog_clear_sequenced()").execute(&mut *self).await?;
        Ok(())
    }
}
