//! The storage seam: one trait both backends implement, and the plain data that crosses it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;

use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::SignalProcessingAudit;
use crate::evidence::chain::{self, EntryKind, Hash, Head, Link};
use crate::evidence::entry::Kind;
use crate::evidence::note::SignerKey;
use crate::evidence::rows::{AmendmentRow, ClaimListed, ColumnTexts, EventRow, RecordRow, Stamp};
use crate::evidence::tiles::Tile;

/// A validated record ready to be written: the typed record plus its JSON texts, serialised
/// once here so neither the HTTP layer nor the database driver does it again.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub rec: SignalProcessingAudit,
    /// The normalised posted record (what GET returns).
    pub record_text: String,
    /// `processing_phases` with each duration as ISO 8601 text, for `::interval`.
    pub phases_text: String,
    pub sources_text: Option<String>,
    /// The anomalies list, or None when there are none (a NULL column is cheap to count).
    pub anomalies_text: Option<String>,
    /// SHA-256 of `record_text`: what the chain links (computed here, outside any lock).
    pub digest: Hash,
}

impl Prepared {
    pub fn new(rec: SignalProcessingAudit) -> Result<Self, serde_json::Error> {
        let record_text = serde_json::to_string(&rec)?;
        let ColumnTexts {
            phases_text,
            sources_text,
            anomalies_text,
        } = ColumnTexts::of(&rec)?;
        Ok(Self {
            digest: chain::content_digest(record_text.as_bytes()),
            record_text,
            phases_text,
            sources_text,
            anomalies_text,
            rec,
        })
    }
}

/// What the database did with one record of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The id was already taken; nothing was written for it.
    Exists,
}

impl Outcome {
    /// For an `INSERT ... ON CONFLICT DO NOTHING` of one row.
    pub fn of_rows_affected(rows: u64) -> Self {
        if rows == 1 {
            Self::Created
        } else {
            Self::Exists
        }
    }
}

/// Which connection pool a call uses. The write lane (the deletion path's inserts and the
/// lookups they need) has its own pool, so readers saturating the read lane never delay it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Write,
    Read,
    /// Auditors' long requests (verify, export, report): permits and a pool of their own.
    Audit,
}

/// An amendment as stored: a full record under an existing id, linked to the original.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredAmendment {
    pub amendment_id: String,
    pub record_id: String,
    #[sqlx(try_from = "Stamp")]
    pub amended_at: DateTime<Utc>,
    pub record: serde_json::Value,
}

impl StoredAmendment {
    /// The record with `amendment_id` and `amended_at` added, as GET and listings show it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.record.clone();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("amendment_id".into(), self.amendment_id.clone().into());
            obj.insert("amended_at".into(), serde_json::json!(self.amended_at));
        }
        v
    }
}

/// An amendment ready to be written.
#[derive(Debug, Clone)]
pub struct NewAmendment {
    pub amendment_id: String,
    pub amended_at: DateTime<Utc>,
    /// SHA-256 of the record's content without provenance (unique per original).
    pub digest: String,
    pub prepared: Prepared,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AmendmentOutcome {
    Created(StoredAmendment),
    /// The same content was already stored as an amendment of this record (a retry).
    Duplicate(StoredAmendment),
}

/// A validated break-glass event ready to be written.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub event: BreakGlassEvent,
    pub event_text: String,
    pub groups_text: String,
    pub digest: Hash,
}

impl PreparedEvent {
    pub fn new(event: BreakGlassEvent) -> Result<Self, serde_json::Error> {
        let event_text = serde_json::to_string(&event)?;
        Ok(Self {
            digest: chain::content_digest(event_text.as_bytes()),
            event_text,
            groups_text: serde_json::to_string(&event.groups)?,
            event,
        })
    }
}

/// The moment an entry is stored, as every backend keeps it (microseconds).
pub fn stored_now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// `[since, until)` of a period: on when Data Storage stored a record (`stored_at`, never the
/// `completed_at` it claims), an amendment's amended_at (when it was stored), an event's at;
/// either end open.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeRange {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A signed checkpoint as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    pub sequenced: u64,
    pub size: u64,
    pub signed: bool,
}

/// How far the log is behind: the oldest entry waiting for an index and the newest checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogLag {
    pub oldest_pending: Option<DateTime<Utc>>,
    pub newest_checkpoint: Option<DateTime<Utc>>,
}

impl LogLag {
    /// (seconds the oldest pending entry has waited, seconds since the newest checkpoint) at
    /// `now`; 0 for what does not exist. A checkpoint is only stale while entries wait: with
    /// nothing stored there is nothing to sign.
    pub fn ages(&self, now: DateTime<Utc>) -> (i64, i64) {
        let age = |t: Option<DateTime<Utc>>| t.map_or(0, |t| (now - t).num_seconds().max(0));
        let pending = age(self.oldest_pending);
        let checkpoint = if self.oldest_pending.is_some() {
            age(self.newest_checkpoint)
        } else {
            0
        };
        (pending, checkpoint)
    }
}

/// Chained records whose rows are gone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MissingRecords {
    /// (year, month, how many, whether that month still has its own partition).
    pub by_month: Vec<(i32, u32, u64, bool)>,
    /// The first of them in chain order, each with the (year, month) of the partition it was in.
    pub sample: Vec<((i32, u32), Link)>,
}

/// The chain entry of a new amendment (stored at the moment it is amended).
pub fn amendment_entry(a: &NewAmendment) -> chain::NewEntry {
    chain::NewEntry {
        kind: chain::EntryKind::Amendment,
        id: a.amendment_id.clone(),
        at: a.amended_at,
        stored_at: a.amended_at,
        digest: a.prepared.digest,
    }
}

/// The chain entry of a new break-glass event.
pub fn event_entry(e: &PreparedEvent, stored_at: DateTime<Utc>) -> chain::NewEntry {
    chain::NewEntry {
        kind: chain::EntryKind::BreakGlass,
        id: e.event.id.clone(),
        at: e.event.at,
        stored_at,
        digest: e.digest,
    }
}

/// The chain entries of new records, all stored at one moment.
pub fn record_entries<'a>(records: impl IntoIterator<Item = &'a Prepared>, stored_at: DateTime<Utc>) -> Vec<chain::NewEntry> {
    records
        .into_iter()
        .map(|p| chain::NewEntry {
            kind: chain::EntryKind::Record,
            id: p.rec.id.clone(),
            at: p.rec.completed_at,
            stored_at,
            digest: p.digest,
        })
        .collect()
}

/// The chain columns of every kind's table, as [`LinkColumns`] reads them.
pub const LINK_COLUMNS: &str = "chain_shard, chain_seq, chain_key_id, chain_stored_at, chain_digest, chain_hash";

/// Every kind's entries with their chain columns as one table (`kind, id, at`, then
/// [`LINK_COLUMNS`]); `records` is where a backend keeps the records' links.
pub fn chain_entries(records: &str) -> String {
    format!(
        "SELECT 'record' AS kind, id, completed_at AS at, {LINK_COLUMNS} FROM {records} \
         UNION ALL SELECT 'amendment', amendment_id, amended_at, {LINK_COLUMNS} FROM signal_processing_audit_amendments \
         UNION ALL SELECT 'break_glass', id, at, {LINK_COLUMNS} FROM break_glass_events"
    )
}

/// The chain columns of a row ([`LINK_COLUMNS`]); all NULL when no link points at it.
#[derive(Debug, sqlx::FromRow)]
pub struct LinkColumns {
    chain_shard: Option<i32>,
    chain_seq: Option<i64>,
    chain_key_id: Option<String>,
    chain_stored_at: Stamp,
    chain_digest: Option<Vec<u8>>,
    chain_hash: Option<Vec<u8>>,
}

impl LinkColumns {
    /// The link of entry `id` at `at`. A malformed value cannot verify; it is reported, never
    /// a crash.
    pub fn link(self, kind: EntryKind, id: String, at: DateTime<Utc>) -> Option<Link> {
        let shard = self.chain_shard?;
        Some(Link {
            shard,
            seq: self.chain_seq.unwrap_or(0),
            kind,
            id,
            at,
            stored_at: Option::<DateTime<Utc>>::try_from(self.chain_stored_at)
                .ok()
                .flatten()
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            key_id: self.chain_key_id.unwrap_or_default(),
            digest: self.chain_digest.as_deref().and_then(chain::hash_from).unwrap_or(chain::GENESIS),
            hash: self.chain_hash.as_deref().and_then(chain::hash_from).unwrap_or(chain::GENESIS),
        })
    }
}

/// A row of the chain's listing: an entry of any kind, by its kind's name.
#[derive(Debug, sqlx::FromRow)]
pub struct ChainRow {
    kind: String,
    id: String,
    #[sqlx(try_from = "Stamp")]
    at: DateTime<Utc>,
    #[sqlx(flatten)]
    link: LinkColumns,
}

impl ChainRow {
    pub fn link(self) -> Option<Link> {
        let kind = EntryKind::parse(&self.kind).unwrap_or(EntryKind::Record);
        self.link.link(kind, self.id, self.at)
    }
}

/// What a keyset page of one kind reads: its columns, the stored JSON (`text`, which
/// PostgreSQL casts), the table, and the (time, id) it is ordered and positioned by.
#[derive(Debug, Clone, Copy)]
pub struct Keyset {
    pub columns: &'static str,
    pub text: &'static str,
    pub table: &'static str,
    pub at: &'static str,
    pub id: &'static str,
}

pub const RECORD_KEYSET: Keyset = Keyset {
    columns: "id, remediation_id, signal_fingerprint, processing_phases, enrichment_quality, enrichment_sources, \
        context_size_bytes, environment, confidence, business_criticality, sla_requirement, priority, priority_score, \
        routed_to_service, routing_priority, completed_at, status, error_message, namespace, name, uid, trigger, deleted_at, \
        anomalies, stored_at",
    text: "record",
    table: "signal_processing_audit",
    at: "stored_at",
    id: "id",
};

pub const AMENDMENT_KEYSET: Keyset = Keyset {
    columns: "amendment_id, record_id, amended_at, content_sha256, anomalies",
    text: "record",
    table: "signal_processing_audit_amendments",
    at: "amended_at",
    id: "amendment_id",
};

pub const EVENT_KEYSET: Keyset = Keyset {
    columns: "id, user_name, groups, namespace, name, uid, at, stored_at",
    text: "event",
    table: "break_glass_events",
    at: "at",
    id: "id",
};

/// A row of a keyset page: the entry's own columns, then its chain columns.
#[derive(Debug, sqlx::FromRow)]
pub struct Linked<T> {
    #[sqlx(flatten)]
    row: T,
    #[sqlx(flatten)]
    link: LinkColumns,
}

/// A stored entry that carries its chain link.
pub trait Chained {
    /// Its kind, id and own time: what its link is about.
    fn entry(&self) -> (EntryKind, String, DateTime<Utc>);
    fn link_mut(&mut self) -> &mut Option<Link>;
}

impl<T: Chained> Linked<T> {
    pub fn into_row(self) -> T {
        let mut row = self.row;
        let (kind, id, at) = row.entry();
        *row.link_mut() = self.link.link(kind, id, at);
        row
    }
}

impl Chained for RecordRow {
    fn entry(&self) -> (EntryKind, String, DateTime<Utc>) {
        (EntryKind::Record, self.id.clone(), self.columns.completed_at)
    }
    fn link_mut(&mut self) -> &mut Option<Link> {
        &mut self.link
    }
}

impl Chained for AmendmentRow {
    fn entry(&self) -> (EntryKind, String, DateTime<Utc>) {
        (EntryKind::Amendment, self.amendment_id.clone(), self.amended_at)
    }
    fn link_mut(&mut self) -> &mut Option<Link> {
        &mut self.link
    }
}

impl Chained for EventRow {
    fn entry(&self) -> (EntryKind, String, DateTime<Utc>) {
        (EntryKind::BreakGlass, self.id.clone(), self.at)
    }
    fn link_mut(&mut self) -> &mut Option<Link> {
        &mut self.link
    }
}

/// A signed export manifest as kept by Data Storage.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredManifest {
    pub export_id: String,
    #[sqlx(try_from = "Stamp")]
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The exact bytes that were signed.
    pub manifest: String,
    /// Base64 of the Ed25519 signature over `manifest`.
    pub signature: String,
}

/// A time range and keyset position shared by the record and event listings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
    /// Strictly older than this (time, id) position.
    pub after: Option<(DateTime<Utc>, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub signal_fingerprint: Option<String>,
    pub remediation_id: Option<String>,
    pub environment: Option<String>,
    pub priority: Option<String>,
    pub status: Option<String>,
    pub page: Page,
}

/// One row of a listing: the stored JSON and its position for the next cursor.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Listed {
    pub json: serde_json::Value,
    #[sqlx(try_from = "Stamp")]
    pub at: DateTime<Utc>,
    pub id: String,
}

/// The claims' statuses, computed by both backends in the same SQL.
pub const CLAIM_STATUS: &str = "CASE WHEN EXISTS (SELECT 1 FROM break_glass_events e WHERE e.id = c.id) THEN 'confirmed' \
     WHEN (SELECT count(*) FROM break_glass_claims d WHERE d.uid = c.uid) > 1 THEN 'ambiguous' ELSE 'unconfirmed' END";

/// The time range a statistic covers: `since` exclusive (as the design document's
/// `completed_at > NOW() - INTERVAL '7 days'`), `until` inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsRange {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ClassificationStat {
    pub environment: Option<String>,
    pub avg_confidence: Option<f64>,
    pub total_signals: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PriorityStat {
    pub priority: Option<String>,
    pub count: i64,
    pub avg_score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlowPhaseQuery {
    pub phase: String,
    pub min_duration_nanos: i64,
    /// `completed_at` from `since` (inclusive) to `until` (inclusive).
    pub range: StatsRange,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SlowPhase {
    pub id: String,
    pub remediation_id: String,
    pub signal_fingerprint: String,
    #[sqlx(try_from = "Stamp")]
    pub completed_at: DateTime<Utc>,
    pub duration_nanos: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database returned a record that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database value out of range: {0}")]
    Value(String),
}

pub type DbResult<T> = Result<T, DbError>;

/// Both backends behave the same through this trait; the API layer sees nothing else.
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    fn ping(&self) -> BoxFuture<'_, DbResult<()>>;
    /// Atomically stores every record whose id is new; returns one outcome per input, in order.
    fn insert<'a>(&'a self, records: &'a [Prepared]) -> BoxFuture<'a, DbResult<Vec<Outcome>>>;
    /// The stored originals of these ids (absent ids are left out).
    fn records<'a>(&'a self, ids: &'a [String], lane: Lane) -> BoxFuture<'a, DbResult<HashMap<String, serde_json::Value>>>;
    /// The amendments of these ids, each list oldest first (ids without any are left out).
    fn amendments<'a>(&'a self, ids: &'a [String], lane: Lane) -> BoxFuture<'a, DbResult<HashMap<String, Vec<StoredAmendment>>>>;
    /// Appends an amendment to an existing original, unless the same content is already one.
    fn insert_amendment<'a>(&'a self, amendment: &'a NewAmendment) -> BoxFuture<'a, DbResult<AmendmentOutcome>>;
    fn list(&self, q: ListQuery) -> BoxFuture<'_, DbResult<Vec<Listed>>>;
    fn classification(&self, range: StatsRange) -> BoxFuture<'_, DbResult<Vec<ClassificationStat>>>;
    fn priorities(&self, range: StatsRange) -> BoxFuture<'_, DbResult<Vec<PriorityStat>>>;
    fn slow_phases(&self, q: SlowPhaseQuery) -> BoxFuture<'_, DbResult<Vec<SlowPhase>>>;
    /// Stores a break-glass event unless its id is taken.
    fn insert_event<'a>(&'a self, event: &'a PreparedEvent) -> BoxFuture<'a, DbResult<Outcome>>;
    fn event(&self, id: String, lane: Lane) -> BoxFuture<'_, DbResult<Option<serde_json::Value>>>;
    /// Break-glass events, newest `at` first.
    fn list_events(&self, page: Page) -> BoxFuture<'_, DbResult<Vec<Listed>>>;
    /// Stores a break-glass claim unless its id is taken (claims are not chained: they are
    /// what a caller said, not evidence; the event a confirmation makes of one is).
    fn insert_claim<'a>(&'a self, claim: &'a PreparedEvent) -> BoxFuture<'a, DbResult<Outcome>>;
    /// The claims naming one SignalProcessing uid, oldest first, each with whether its event
    /// is stored.
    fn claims_for_uid(&self, uid: String) -> BoxFuture<'_, DbResult<Vec<(serde_json::Value, bool)>>>;
    /// Break-glass claims with their status, newest `at` first.
    fn list_claims(&self, page: Page) -> BoxFuture<'_, DbResult<Vec<ClaimListed>>>;

    // The chain, read for verification and export (the read lane's pool for auditors).

    /// Links of every kind in (shard, seq) order, strictly after `after`.
    fn chain_links(&self, after: Option<(i32, i64)>, limit: u32) -> BoxFuture<'_, DbResult<Vec<Link>>>;
    /// The last link of every shard.
    fn chain_heads(&self) -> BoxFuture<'_, DbResult<Vec<Head>>>;
    /// Records stored (`stored_at`) in `range`, oldest first (then id), strictly after `after`.
    fn record_rows(&self, range: TimeRange, after: Option<(DateTime<Utc>, String)>, limit: u32) -> BoxFuture<'_, DbResult<Vec<RecordRow>>>;
    /// Amendments with `amended_at` in `range`, oldest first (then amendment id).
    fn amendment_rows(
        &self,
        range: TimeRange,
        after: Option<(DateTime<Utc>, String)>,
        limit: u32,
    ) -> BoxFuture<'_, DbResult<Vec<AmendmentRow>>>;
    /// Break-glass events with `at` in `range`, oldest first (then id).
    fn event_rows(&self, range: TimeRange, after: Option<(DateTime<Utc>, String)>, limit: u32) -> BoxFuture<'_, DbResult<Vec<EventRow>>>;
    /// Chained records in `range` whose row is gone (SQLite keeps a record and its link in
    /// one row, so there a deleted record is a gap in the chain instead: always empty).
    fn records_without_rows(&self, range: TimeRange, sample: u32) -> BoxFuture<'_, DbResult<MissingRecords>>;
    /// Unchained id rows with neither a record nor a log entry (how many, and the first
    /// `sample` ids): written around the service, they block their record for good. SQLite
    /// has no separate id rows (the record's row is the claim): always none.
    fn bare_ids(&self, sample: u32) -> BoxFuture<'_, DbResult<(u64, Vec<String>)>>;

    /// Keeps a signed export manifest (append-only).
    fn insert_manifest<'a>(&'a self, m: &'a StoredManifest) -> BoxFuture<'a, DbResult<()>>;
    fn manifest(&self, export_id: String) -> BoxFuture<'_, DbResult<Option<StoredManifest>>>;

    // The transparency log (see [`super::tlog`]).

    /// One sequencing round; None: another process's round holds the log right now.
    fn log_round(&self, signer: Option<Arc<SignerKey>>, limit: u32) -> BoxFuture<'_, DbResult<Option<RoundReport>>>;
    /// Entries in the log.
    fn log_size(&self) -> BoxFuture<'_, DbResult<u64>>;
    /// When the oldest pending entry was stored and the newest checkpoint signed.
    fn log_lag(&self) -> BoxFuture<'_, DbResult<LogLag>>;
    /// Each complete tile among `tiles` (absent: not stored yet).
    fn log_tiles(&self, tiles: Vec<Tile>) -> BoxFuture<'_, DbResult<HashMap<Tile, Vec<u8>>>>;
    /// The entries at indexes `first..first + count` that exist, in order.
    fn log_entries(&self, first: u64, count: u64) -> BoxFuture<'_, DbResult<Vec<Vec<u8>>>>;
    /// The checkpoint at `size`, or the latest one.
    fn log_checkpoint(&self, size: Option<u64>) -> BoxFuture<'_, DbResult<Option<StoredCheckpoint>>>;
    /// The log index of a stored item, once sequenced.
    fn log_index(&self, kind: Kind, id: String) -> BoxFuture<'_, DbResult<Option<u64>>>;
    /// The log index and entry of each of these items of one kind that has been sequenced.
    fn log_items(&self, kind: Kind, ids: Vec<String>) -> BoxFuture<'_, DbResult<LogItems>>;
    /// Keeps a witness's cosignature line of the checkpoint of `size` (once per witness key).
    fn log_add_cosignature<'a>(&'a self, size: u64, witness: &'a str, key_id: u32, line: &'a str) -> BoxFuture<'a, DbResult<()>>;
    /// The cosignature lines kept for the checkpoint of `size`.
    fn log_cosignatures(&self, size: u64) -> BoxFuture<'_, DbResult<Vec<String>>>;
    /// The largest checkpoint a witness key cosigned.
    fn log_cosigned_size<'a>(&'a self, witness: &'a str, key_id: u32) -> BoxFuture<'a, DbResult<Option<u64>>>;
}

/// Items' log indexes and entries, by item id.
pub type LogItems = HashMap<String, (u64, Vec<u8>)>;

/// Maps each input position to its outcome given the set of ids the database created.
pub fn outcomes(records: &[Prepared], created: &std::collections::HashSet<String>) -> Vec<Outcome> {
    records
        .iter()
        .map(|r| {
            if created.contains(&r.rec.id) {
                Outcome::Created
            } else {
                Outcome::Exists
            }
        })
        .collect()
}

/// Groups amendment rows (already ordered oldest first) by record id.
pub fn group_amendments(rows: Vec<StoredAmendment>) -> HashMap<String, Vec<StoredAmendment>> {
    let mut out: HashMap<String, Vec<StoredAmendment>> = HashMap::new();
    for a in rows {
        out.entry(a.record_id.clone()).or_default().push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn phases_carry_iso_durations_while_record_keeps_nanos() {
        let rec: SignalProcessingAudit = serde_json::from_value(json!({
            "id": "a", "remediation_id": "r", "signal_fingerprint": "f",
            "processing_phases": [{"phase": "enriching", "duration": "1.5s"}, {"phase": "classifying", "duration": null}],
            "completed_at": "2025-01-01T00:00:00Z", "status": "completed"
        }))
        .unwrap();
        let p = Prepared::new(rec).unwrap();
        let phases: serde_json::Value = serde_json::from_str(&p.phases_text).unwrap();
        let record: serde_json::Value = serde_json::from_str(&p.record_text).unwrap();
        assert_eq!(phases[0]["duration"], json!("PT1.5S"));
        assert_eq!(phases[1]["duration"], json!(null));
        assert_eq!(record["processing_phases"][0]["duration"], json!(1_500_000_000i64));
        assert_eq!(p.anomalies_text, None);
    }

    #[test]
    fn anomalies_are_kept_in_the_record_and_their_own_column() {
        let rec: SignalProcessingAudit = serde_json::from_value(json!({
            "id": "a", "remediation_id": "r", "signal_fingerprint": "f", "processing_phases": [],
            "completed_at": "2025-01-01T00:00:00Z", "status": "completed", "confidence": null,
            "anomalies": [{"field": "confidence", "value": 5}]
        }))
        .unwrap();
        let p = Prepared::new(rec).unwrap();
        assert_eq!(p.anomalies_text.as_deref(), Some(r#"[{"field":"confidence","value":5}]"#));
        let record: serde_json::Value = serde_json::from_str(&p.record_text).unwrap();
        assert_eq!(record["anomalies"], json!([{"field": "confidence", "value": 5}]));
    }

    #[test]
    fn amendments_show_their_id_and_time() {
        let a = StoredAmendment {
            amendment_id: "am-1".into(),
            record_id: "r".into(),
            amended_at: "2025-01-01T00:00:00Z".parse().unwrap(),
            record: json!({"id": "r", "status": "failed"}),
        };
        assert_eq!(
            a.to_json(),
            json!({"id": "r", "status": "failed", "amendment_id": "am-1", "amended_at": "2025-01-01T00:00:00Z"})
        );
        let grouped = group_amendments(vec![
            a.clone(),
            StoredAmendment {
                amendment_id: "am-2".into(),
                ..a.clone()
            },
        ]);
        assert_eq!(
            grouped["r"].iter().map(|a| a.amendment_id.as_str()).collect::<Vec<_>>(),
            ["am-1", "am-2"]
        );
    }

    /// SQLite keeps times as text: an entry's own time in another spelling fails the read, a
    /// link's malformed `chain_stored_at` reads as the epoch (verification then reports it).
    #[tokio::test]
    async fn sqlite_times_are_read_strictly_and_links_leniently() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let row = |at: &str, stored: &str| {
            format!(
                "SELECT 'break_glass' AS kind, 'e' AS id, '{at}' AS at, 0 AS chain_shard, 7 AS chain_seq, 'k' AS chain_key_id, \
                 '{stored}' AS chain_stored_at, NULL AS chain_digest, NULL AS chain_hash"
            )
        };
        let good = "2025-01-01T00:00:00.000000Z";
        let link = sqlx::query_as::<_, ChainRow>(&row(good, "not a time"))
            .fetch_one(&pool)
            .await
            .unwrap()
            .link()
            .unwrap();
        assert_eq!((link.kind, link.seq, link.at), (EntryKind::BreakGlass, 7, good.parse().unwrap()));
        assert_eq!(link.stored_at, DateTime::<Utc>::UNIX_EPOCH);
        let other_spelling = sqlx::query_as::<_, ChainRow>(&row("2025-01-01 00:00:00", good))
            .fetch_one(&pool)
            .await;
        assert!(other_spelling.is_err());
    }
}
