//! Signed exports for auditors: `GET .../export?since=&until=&format=ndjson|csv` streams every
//! record (by when Data Storage stored it, `stored_at`), amendment (by `amended_at`) and break-glass event (by `at`) of
//! the period, each with its chain link, in constant memory (keyset pages through a bounded
//! channel).
//!
//! **How the signature reaches the client.** Ed25519 signs a message it reads twice (the nonce
//! is derived from the whole message), so it cannot sign a stream of millions of rows as it
//! goes. The service hashes the content (SHA-256) while streaming and, after the last row,
//! signs a small manifest — the export's id, period, format, content SHA-256 and byte count,
//! counts, the chain's heads, who asked, and (when Data Storage signs checkpoints) the
//! transparency log's evidence for the rows: a checkpoint covering them with its cosignatures
//! and a range proof (src/evidence/export_log.rs; each row carries its log index and leaf) —
//! and stores it (append-only) *before* the body ends.
//! The response's `audit-guard-export-id` header names it; `GET .../exports/{id}` returns the
//! manifest's exact bytes and the signature from any replica. A body cut short never gets a
//! manifest. The public key is served at [`PUBLIC_KEY_PATH`](crate::api_paths::PUBLIC_KEY_PATH);
//! `audit-guard verify-export` (or `openssl pkeyutl -verify -rawin` and `sha256sum`) checks both
//! offline.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::auth::User;
use super::http::{db_problem, AppState};
use super::problem::Problem;
use super::query;
use super::store::{DbError, Store, StoredCheckpoint, StoredManifest, TimeRange};
use super::{tlog, witnesses};
use crate::api_paths::{BASE, EXPORT_ID_HEADER};
use crate::evidence::chain::{self, Link};
use crate::evidence::entry::Kind;
use crate::evidence::export_log::{self, b64_hashes, FirstEntry, LogEvidence, OtherEntry, PreviousProof, RangeProof, FORMAT as LOG_FORMAT};
use crate::evidence::manifest::{Counts, Format, Manifest, SignedManifest, MANIFEST_FORMAT};
use crate::evidence::merkle::{consistency_proof, inclusion_proof, leaf_hash, CompactRange, Hash};
use crate::evidence::rows::{AmendmentRow, EventRow, RecordColumns, RecordRow};
use crate::evidence::signing::Signer;

/// Rows per page read from the database.
const PAGE: u32 = 1_000;
/// Chunks buffered between the database reader and the client: memory is bounded by this
/// many pages, whatever the export's size.
const CHANNEL: usize = 4;
/// A client that reads nothing for this long loses its export (and its permit).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The CSV columns, one row per record, amendment or break-glass event.
pub const CSV_COLUMNS: &[&str] = &[
    "kind",
    "id",
    "record_id",
    "at",
    "stored_at",
    "status",
    "trigger",
    "namespace",
    "name",
    "uid",
    "environment",
    "confidence",
    "priority",
    "priority_score",
    "routed_to_service",
    "routing_priority",
    "deleted_at",
    "user",
    "groups",
    "chain_shard",
    "chain_seq",
    "chain_key_id",
    "chain_hash",
    "json",
    "log_index",
    "log_leaf",
];

/// A row's place in the transparency log: its index and leaf hash.
pub type LogRef = (u64, Hash);

fn log_json(log: Option<&LogRef>) -> serde_json::Value {
    log.map_or(
        serde_json::Value::Null,
        |(i, leaf)| json!({"index": i, "leaf": base64::engine::general_purpose::STANDARD.encode(leaf)}),
    )
}

/// A whole CSV row: the row's own cells, then its log index and leaf hash.
fn csv_row<R: ExportRow>(r: &R, log: Option<&LogRef>) -> Vec<String> {
    let mut cells = r.csv().to_vec();
    match log {
        Some((i, leaf)) => cells.extend([i.to_string(), base64::engine::general_purpose::STANDARD.encode(leaf)]),
        None => cells.extend([String::new(), String::new()]),
    }
    cells
}

fn link_json(link: Option<&Link>) -> serde_json::Value {
    link.map_or(
        serde_json::Value::Null,
        |l| json!({"shard": l.shard, "seq": l.seq, "key_id": l.key_id, "hash": chain::hex(&l.hash)}),
    )
}

/// A JSON string literal (serialising a `&str` cannot fail).
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// One NDJSON line; the stored JSON goes in verbatim, byte for byte.
fn ndjson_line(head: serde_json::Value, key: &str, stored_json: &str) -> String {
    let mut head = head.to_string();
    head.pop(); // the closing brace: the stored JSON goes in before it
    format!("{head},{}:{stored_json}}}\n", js(key))
}

/// What an export needs of each kind's rows.
trait ExportRow {
    /// The kind of its log entry.
    const KIND: Kind;
    /// The id its log entry carries.
    fn item_id(&self) -> &str;
    /// Its keyset position: its own time and id.
    fn position(&self) -> Position;
    fn link(&self) -> Option<&Link>;
    fn csv(&self) -> [String; 24];
    /// The NDJSON line's own fields (`chain` and `log` are added to them), the stored JSON's key and text.
    fn ndjson_parts(&self) -> (serde_json::Value, &'static str, &str);

    fn ndjson(&self, log: Option<&LogRef>) -> String {
        let (mut head, key, stored_json) = self.ndjson_parts();
        if let Some(fields) = head.as_object_mut() {
            fields.insert("chain".into(), link_json(self.link()));
            fields.insert("log".into(), log_json(log));
        }
        ndjson_line(head, key, stored_json)
    }
}

fn ts(t: DateTime<Utc>) -> String {
    chain::fixed_ts(t)
}

fn chain_cells(link: Option<&Link>) -> [String; 4] {
    match link {
        Some(l) => [l.shard.to_string(), l.seq.to_string(), l.key_id.clone(), chain::hex(&l.hash)],
        None => Default::default(),
    }
}

/// A cell a spreadsheet opens as text, never as a formula: one starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return (OWASP's list) gets a leading `'`. Any cell may hold a user's or a
/// CR status's text, so every cell is checked; a cell that is a plain finite number (a negative
/// score, say) is a number to a spreadsheet too and is left as it is. The `json` column starts
/// with `{` and so is never touched: the stored JSON stays byte for byte.
pub fn spreadsheet_safe(cell: &str) -> Cow<'_, str> {
    let formula_start = matches!(cell.chars().next(), Some('=' | '+' | '-' | '@' | '\t' | '\r'));
    if formula_start && !cell.parse::<f64>().is_ok_and(f64::is_finite) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

fn csv_bytes<R: AsRef<[String]>>(rows: &[R], header: bool) -> Result<Vec<u8>, DbError> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(rows.len() * 2048));
    let err = |e: csv::Error| DbError::Value(format!("writing CSV: {e}"));
    if header {
        w.write_record(CSV_COLUMNS).map_err(err)?;
    }
    for r in rows {
        w.write_record(r.as_ref().iter().map(|c| match spreadsheet_safe(c) {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        }))
        .map_err(err)?;
    }
    w.into_inner().map_err(|e| DbError::Value(format!("writing CSV: {e}")))
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// A CSV row of a record or an amendment: `head` (kind, id, record_id, at, stored_at), then
/// the record's columns (empty when an amendment's text is not a record).
fn record_csv(head: [String; 5], c: Option<&RecordColumns>, link: Option<&Link>, text: &str) -> [String; 24] {
    let cell = |f: fn(&RecordColumns) -> String| c.map(f).unwrap_or_default();
    let [kind, id, record_id, at, stored_at] = head;
    let [shard, seq, key, hash] = chain_cells(link);
    [
        kind,
        id,
        record_id,
        at,
        stored_at,
        cell(|c| c.status.clone()),
        cell(|c| opt(&c.trigger)),
        cell(|c| opt(&c.namespace)),
        cell(|c| opt(&c.name)),
        cell(|c| opt(&c.uid)),
        cell(|c| opt(&c.environment)),
        cell(|c| opt(&c.confidence)),
        cell(|c| opt(&c.priority)),
        cell(|c| opt(&c.priority_score)),
        cell(|c| opt(&c.routed_to_service)),
        cell(|c| opt(&c.routing_priority)),
        cell(|c| c.deleted_at.map(ts).unwrap_or_default()),
        String::new(),
        String::new(),
        shard,
        seq,
        key,
        hash,
        text.to_string(),
    ]
}

impl ExportRow for RecordRow {
    const KIND: Kind = Kind::Record;

    fn item_id(&self) -> &str {
        &self.id
    }

    fn position(&self) -> Position {
        (self.columns.stored_at, self.id.clone())
    }

    fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    fn ndjson_parts(&self) -> (serde_json::Value, &'static str, &str) {
        let c = &self.columns;
        let head = json!({"kind": "record", "id": self.id, "at": c.completed_at, "stored_at": c.stored_at});
        (head, "record", &self.record_text)
    }

    fn csv(&self) -> [String; 24] {
        let c = &self.columns;
        let head = [
            "record".into(),
            self.id.clone(),
            self.id.clone(),
            ts(c.completed_at),
            ts(c.stored_at),
        ];
        record_csv(head, Some(c), self.link(), &self.record_text)
    }
}

impl ExportRow for AmendmentRow {
    const KIND: Kind = Kind::Amendment;

    fn item_id(&self) -> &str {
        &self.amendment_id
    }

    fn position(&self) -> Position {
        (self.amended_at, self.amendment_id.clone())
    }

    fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    fn ndjson_parts(&self) -> (serde_json::Value, &'static str, &str) {
        let head = json!({"kind": "amendment", "id": self.amendment_id, "record_id": self.record_id, "at": self.amended_at});
        (head, "record", &self.record_text)
    }

    fn csv(&self) -> [String; 24] {
        // The amended record's columns, as if stored at the moment it was amended.
        let columns = serde_json::from_str(&self.record_text)
            .ok()
            .and_then(|rec| crate::evidence::verify::columns_of(&rec, self.amended_at).ok());
        let head = [
            "amendment".into(),
            self.amendment_id.clone(),
            self.record_id.clone(),
            ts(self.amended_at),
            ts(self.amended_at),
        ];
        record_csv(head, columns.as_ref(), self.link(), &self.record_text)
    }
}

impl ExportRow for EventRow {
    const KIND: Kind = Kind::BreakGlass;

    fn item_id(&self) -> &str {
        &self.id
    }

    fn position(&self) -> Position {
        (self.at, self.id.clone())
    }

    fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    fn ndjson_parts(&self) -> (serde_json::Value, &'static str, &str) {
        let head = json!({"kind": "break_glass", "id": self.id, "at": self.at, "stored_at": self.stored_at});
        (head, "event", &self.event_text)
    }

    fn csv(&self) -> [String; 24] {
        let groups = self
            .groups
            .as_array()
            .map(|g| g.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(";"))
            .unwrap_or_default();
        let [shard, seq, key, hash] = chain_cells(self.link());
        let mut row: [String; 24] = Default::default();
        let cells = [
            (0, "break_glass".to_string()),
            (1, self.id.clone()),
            (3, ts(self.at)),
            (4, ts(self.stored_at)),
            (7, self.namespace.clone()),
            (8, self.name.clone()),
            (9, self.uid.clone()),
            (17, self.user_name.clone()),
            (18, groups),
            (19, shard),
            (20, seq),
            (21, key),
            (22, hash),
            (23, self.event_text.clone()),
        ];
        for (i, v) in cells {
            row[i] = v;
        }
        row
    }
}

/// Streams one export into `tx`: content chunks, then (once the manifest is signed and
/// stored) the end of the stream. Errors end the stream with an error, so the client sees a
/// broken body rather than a short file that looks whole.
pub struct ExportJob {
    pub store: Arc<dyn Store>,
    pub signer: Arc<Signer>,
    pub range: TimeRange,
    pub format: Format,
    pub export_id: String,
    pub created_by: String,
    /// Set when Data Storage signs checkpoints: the export then carries the log's evidence.
    pub log: Option<LogSettings>,
}

/// What an export proves of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// How many witnesses cosign checkpoints: the export waits a little for a cosigned one.
    pub witnesses: usize,
    /// An earlier checkpoint's size: the export carries the consistency proof from it.
    pub previous: Option<u64>,
}

/// How long an export waits for the log to sequence what was stored before it began, and for
/// a checkpoint covering its rows (a round runs every second).
const LOG_WAIT: Duration = Duration::from_secs(10);
const LOG_POLL: Duration = Duration::from_millis(100);

struct Sink {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    hasher: Sha256,
    bytes: u64,
}

impl Sink {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), DbError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.hasher.update(&chunk);
        self.bytes += chunk.len() as u64;
        match tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Ok(Bytes::from(chunk)))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(DbError::Value("the client went away".into())),
            Err(_) => Err(DbError::Value(format!("the client read nothing for {SEND_TIMEOUT:?}"))),
        }
    }
}

impl ExportJob {
    pub async fn run(self, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) {
        let id = self.export_id.clone();
        let fail = tx.clone();
        match self.produce(tx).await {
            Ok(m) => tracing::info!(
                export_id = %id, records = m.counts.records, amendments = m.counts.amendments,
                events = m.counts.break_glass_events, bytes = m.content_bytes, "export signed and stored"
            ),
            Err(e) => {
                tracing::warn!(export_id = %id, error = %e, "export abandoned; no manifest stored");
                let _ = fail.send(Err(std::io::Error::other(e.to_string()))).await;
            }
        }
    }

    async fn produce(&self, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Result<Manifest, DbError> {
        let mut sink = Sink {
            tx,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let mut counts = Counts::default();
        let csv = self.format == Format::Csv;
        if csv {
            sink.send(csv_bytes::<Vec<String>>(&[], true)?).await?;
        }
        let (store, range) = (&self.store, self.range);
        let sequenced_before = match self.log {
            Some(_) => Some(wait_sequenced(store.as_ref()).await?),
            None => None,
        };
        let mut pages = Pages {
            sink: &mut sink,
            store: store.as_ref(),
            csv,
            unchained: &mut counts.unchained,
            indexes: self.log.map(|_| Vec::new()),
        };
        pages
            .stream(|after| store.record_rows(range, after, PAGE), &mut counts.records)
            .await?;
        pages
            .stream(|after| store.amendment_rows(range, after, PAGE), &mut counts.amendments)
            .await?;
        pages
            .stream(|after| store.event_rows(range, after, PAGE), &mut counts.break_glass_events)
            .await?;
        let log = match (self.log, sequenced_before, pages.indexes.take()) {
            (Some(settings), Some(before), Some(indexes)) => Some(evidence(store.as_ref(), settings, before, indexes).await?),
            _ => None,
        };
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            export_id: self.export_id.clone(),
            created_at: super::store::stored_now(),
            created_by: self.created_by.clone(),
            since: self.range.since,
            until: self.range.until,
            content_format: self.format,
            content_sha256: chain::hex(&sink.hasher.clone().finalize()),
            content_bytes: sink.bytes,
            counts,
            chain_heads: self.store.chain_heads().await?,
            signing_key_id: self.signer.key_id.clone(),
            log,
        };
        let text = serde_json::to_string(&manifest)?;
        let signature = base64::engine::general_purpose::STANDARD.encode(self.signer.sign(text.as_bytes()));
        // Stored before the body ends: a client that saw the whole body can fetch the signature.
        self.store
            .insert_manifest(&StoredManifest {
                export_id: manifest.export_id.clone(),
                created_at: manifest.created_at,
                created_by: manifest.created_by.clone(),
                manifest: text,
                signature,
            })
            .await?;
        Ok(manifest)
    }
}

/// Keyset position of a row: its own time and id.
type Position = (DateTime<Utc>, String);

/// Where pages go: the sink, the row counts and, when the log is proven, every exported
/// row's log index (8 bytes a row, to list the entries of the range that are not exported).
struct Pages<'a> {
    sink: &'a mut Sink,
    store: &'a dyn Store,
    csv: bool,
    unchained: &'a mut u64,
    indexes: Option<Vec<u64>>,
}

impl Pages<'_> {
    /// Reads `fetch` page by page (each page strictly after the last row's position) until a
    /// short page, sending each page rendered as CSV or NDJSON, each row with its log index and
    /// leaf hash, and counting its rows and those without a link.
    async fn stream<R: ExportRow, Fut>(&mut self, mut fetch: impl FnMut(Option<Position>) -> Fut, count: &mut u64) -> Result<(), DbError>
    where
        Fut: std::future::Future<Output = Result<Vec<R>, DbError>>,
    {
        let mut after = None;
        loop {
            let page = fetch(after).await?;
            *count += page.len() as u64;
            *self.unchained += page.iter().filter(|r| r.link().is_none()).count() as u64;
            let logged = match &self.indexes {
                Some(_) if !page.is_empty() => {
                    let ids = page.iter().map(|r| r.item_id().to_string()).collect();
                    self.store.log_items(R::KIND, ids).await?
                }
                _ => HashMap::new(),
            };
            let log_of = |r: &R| logged.get(r.item_id()).map(|(i, e)| (*i, leaf_hash(e)));
            if let Some(indexes) = &mut self.indexes {
                indexes.extend(logged.values().map(|(i, _)| *i));
            }
            let chunk = if self.csv {
                csv_bytes(&page.iter().map(|r| csv_row(r, log_of(r).as_ref())).collect::<Vec<_>>(), false)?
            } else {
                page.iter().map(|r| r.ndjson(log_of(r).as_ref())).collect::<String>().into_bytes()
            };
            self.sink.send(chunk).await?;
            match page.last() {
                Some(r) if page.len() == PAGE as usize => after = Some(r.position()),
                _ => return Ok(()),
            }
        }
    }
}

/// Waits until the log has sequenced every item stored before now; returns the instant
/// before which every stored item has its index (now, or the oldest still pending after
/// [`LOG_WAIT`]).
async fn wait_sequenced(store: &dyn Store) -> Result<DateTime<Utc>, DbError> {
    let start = super::store::stored_now();
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    loop {
        match store.log_lag().await?.oldest_pending {
            Some(t) if t < start && tokio::time::Instant::now() < deadline => tokio::time::sleep(LOG_POLL).await,
            Some(t) if t < start => return Ok(t),
            _ => return Ok(start),
        }
    }
}

/// The latest checkpoint of at least `need` entries — with witnesses, one they cosigned when
/// one comes within [`LOG_WAIT`].
async fn covering_checkpoint(store: &dyn Store, need: u64, witnesses: usize) -> Result<StoredCheckpoint, DbError> {
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    let mut seen: Vec<StoredCheckpoint> = Vec::new();
    loop {
        if let Some(cp) = store.log_checkpoint(None).await?.filter(|cp| cp.size >= need) {
            if witnesses == 0 {
                return Ok(cp);
            }
            if !seen.iter().any(|s| s.size == cp.size) {
                seen.push(cp);
            }
            // Witnesses cosign a little after signing: the newest cosigned one seen wins.
            for cp in seen.iter().rev() {
                if !store.log_cosignatures(cp.size).await?.is_empty() {
                    return Ok(cp.clone());
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return seen.pop().ok_or_else(|| {
                DbError::Value(format!(
                    "no checkpoint covering the exported entries ({need}) was signed within {LOG_WAIT:?}"
                ))
            });
        }
        tokio::time::sleep(LOG_POLL).await;
    }
}

/// The log's evidence for rows at `indexes`, read before `sequenced_before` was passed.
async fn evidence(
    store: &dyn Store,
    settings: LogSettings,
    sequenced_before: DateTime<Utc>,
    mut indexes: Vec<u64>,
) -> Result<LogEvidence, DbError> {
    indexes.sort_unstable();
    indexes.dedup();
    let bounds = indexes.first().zip(indexes.last()).map(|(a, b)| (*a, b + 1));
    let need = bounds.map_or(0, |(_, end)| end).max(settings.previous.unwrap_or(0));
    let cp = covering_checkpoint(store, need, settings.witnesses).await?;
    let n = cp.size;
    let checkpoint = witnesses::with_cosignatures(&cp.note, &store.log_cosignatures(n).await?);
    let range = match bounds {
        Some((first, end)) => {
            let (left, consistency) = tlog::over_tiles(store, n, |r| {
                Ok((CompactRange::from_reader(r, first)?.peaks().to_vec(), consistency_proof(r, end, n)?))
            })
            .await?;
            Some(RangeProof {
                first,
                end,
                left: b64_hashes(&left),
                consistency: b64_hashes(&consistency),
                others: others(store, &export_log::gaps(first, end, &indexes)).await?,
            })
        }
        None => None,
    };
    let first_entry = match store.log_entries(0, 1).await?.pop() {
        Some(entry) if n > 0 => Some(FirstEntry {
            entry: base64::engine::general_purpose::STANDARD.encode(entry),
            proof: b64_hashes(&tlog::over_tiles(store, n, |r| inclusion_proof(r, 0, n)).await?),
        }),
        _ => None,
    };
    let previous = match settings.previous {
        Some(m) => Some(PreviousProof {
            size: m,
            consistency: b64_hashes(&tlog::over_tiles(store, n, |r| consistency_proof(r, m, n)).await?),
        }),
        None => None,
    };
    Ok(LogEvidence {
        format: LOG_FORMAT.into(),
        checkpoint,
        sequenced_before,
        range,
        previous,
        first_entry,
    })
}

/// The entries the log holds at the indexes of `runs` (`[start, end)` each). An index whose
/// entry the log lacks is left out: the verifier names it.
async fn others(store: &dyn Store, runs: &[(u64, u64)]) -> Result<Vec<OtherEntry>, DbError> {
    let b64 = |index: u64, entry: &[u8]| OtherEntry {
        index,
        entry: base64::engine::general_purpose::STANDARD.encode(entry),
    };
    let mut out = Vec::new();
    for &(start, end) in runs {
        let mut at = start;
        while at < end {
            let n = (end - at).min(u64::from(PAGE));
            let got = store.log_entries(at, n).await?;
            if got.len() as u64 == n {
                out.extend((at..).zip(&got).map(|(i, e)| b64(i, e)));
            } else {
                // Some are missing: which, only index by index tells.
                for i in at..at + n {
                    if let Some(e) = store.log_entries(i, 1).await?.pop() {
                        out.push(b64(i, &e));
                    }
                }
            }
            at += n;
        }
    }
    Ok(out)
}

/// `since` (inclusive) and `until` (exclusive), both optional, RFC 3339.
pub fn period(p: &query::Params) -> Result<TimeRange, Problem> {
    let range = TimeRange {
        since: p.time("since")?,
        until: p.time("until")?,
    };
    if let (Some(s), Some(u)) = (range.since, range.until) {
        if s >= u {
            return Err(Problem::field("since", "since: must be before until"));
        }
    }
    Ok(range)
}

/// `previous_size`: an earlier checkpoint's size to prove consistency from.
fn previous_size(p: &query::Params) -> Result<Option<u64>, Problem> {
    p.get("previous_size")
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| Problem::field("previous_size", format!("previous_size: expected a tree size, got {v:?}")))
        })
        .transpose()
}

fn caller(user: Option<Extension<User>>) -> String {
    user.map_or_else(|| "anonymous (authentication disabled)".to_string(), |Extension(u)| u.name)
}

pub async fn export(State(state): State<Arc<AppState>>, user: Option<Extension<User>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["since", "until", "format", "previous_size"])?;
    let range = period(&p)?;
    let format = match p.get("format") {
        None => Format::Ndjson,
        Some(f) => Format::parse(f).ok_or_else(|| Problem::field("format", "format: expected ndjson or csv"))?,
    };
    let Some(signer) = state.signer.clone() else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "exports are signed, and this Data Storage has no signing key: start it with --signing-key-file",
        ));
    };
    let previous = previous_size(&p)?;
    if let Some(m) = previous {
        let held = state.store.log_size().await.map_err(|e| db_problem("log_size", e))?;
        if m > held || state.log_key.is_none() {
            return Err(Problem::field(
                "previous_size",
                format!("previous_size: the log holds {held} entries (and proves them only with a log signing key), not {m}"),
            ));
        }
    }
    let log = state.log_key.as_ref().map(|_| LogSettings {
        witnesses: state.witnesses,
        previous,
    });
    let export_id = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = mpsc::channel(CHANNEL);
    let job = ExportJob {
        store: state.store.clone(),
        signer,
        range,
        format,
        export_id: export_id.clone(),
        created_by: caller(user),
        log,
    };
    tokio::spawn(job.run(tx));
    let body = Body::from_stream(tokio_stream_from(rx));
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    for (name, value) in [
        (EXPORT_ID_HEADER.to_string(), export_id.clone()),
        ("audit-guard-export-manifest".to_string(), format!("{BASE}/exports/{export_id}")),
        (
            header::CONTENT_DISPOSITION.to_string(),
            format!("attachment; filename=\"audit-export-{export_id}.{}\"", format.extension()),
        ),
    ] {
        if let (Ok(n), Ok(v)) = (axum::http::HeaderName::try_from(name.as_str()), HeaderValue::from_str(&value)) {
            headers.insert(n, v);
        }
    }
    Ok(resp)
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub async fn manifest(State(state): State<Arc<AppState>>, Path(id): Path<String>, uri: Uri) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    match state.store.manifest(id.clone()).await.map_err(|e| db_problem("manifest", e))? {
        Some(m) => Ok(Json(SignedManifest {
            export_id: m.export_id,
            manifest: m.manifest,
            signature: m.signature,
        })
        .into_response()),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("no export {id:?}: it never existed, or its body did not complete (no manifest is stored then)"),
        )),
    }
}

pub async fn public_key(State(state): State<Arc<AppState>>) -> Response {
    match &state.signer {
        Some(s) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file")),
                (
                    header::HeaderName::from_static("audit-guard-signing-key-id"),
                    HeaderValue::from_str(&s.key_id).unwrap_or(HeaderValue::from_static("")),
                ),
            ],
            s.public_pem.clone(),
        )
            .into_response(),
        None => Problem::new(StatusCode::NOT_FOUND, "this Data Storage signs no exports (no --signing-key-file)").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> RecordRow {
        RecordRow {
            id: "a\"b".into(),
            record_text: r#"{"id":"a\"b","status":"completed"}"#.into(),
            columns: RecordColumns {
                environment: Some("prod,\"x\"".into()),
                confidence: Some(0.5),
                stored_at: "2026-01-01T00:00:01Z".parse().unwrap(),
                ..RecordColumns::sample("2026-01-01T00:00:00Z".parse().unwrap())
            },
            link: None,
        }
    }

    #[test]
    fn ndjson_lines_carry_the_stored_json_verbatim() {
        let line = row().ndjson(None);
        assert!(line.ends_with(&format!(",\"record\":{}}}\n", row().record_text)), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "record");
        assert_eq!(v["id"], "a\"b");
        assert_eq!(v["chain"], serde_json::Value::Null);
        assert_eq!(v["record"]["status"], "completed");
    }

    #[test]
    fn csv_rows_quote_and_have_every_column() {
        let bytes = csv_bytes(&[csv_row(&row(), Some(&(7, [1; 32])))], true).unwrap();
        let mut rdr = csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(rdr.headers().unwrap().len(), CSV_COLUMNS.len());
        let rec = rdr.records().next().unwrap().unwrap();
        assert_eq!(&rec[0], "record");
        assert_eq!(&rec[10], "prod,\"x\"");
        assert_eq!(&rec[23], row().record_text);
        assert_eq!((&rec[24], &rec[25]), ("7", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="));
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
        for hostile in [
            "=HYPERLINK(\"http://evil\")",
            "+1+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
            "-inf",
            "+nan",
        ] {
            assert_eq!(spreadsheet_safe(hostile), format!("'{hostile}"), "{hostile:?}");
        }
        for kept in ["-0.5", "-12", "+3", "1e3", "prod", "", "{\"a\":1}", "a=b", "'quoted"] {
            assert_eq!(spreadsheet_safe(kept), kept, "{kept:?}");
        }
        // The auditor's side reads every cell back as it was.
        for cell in [
            "=HYPERLINK(1)",
            "+1+cmd",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "-0.5",
            "+3",
            "prod",
            "'quoted",
            "+/AbC=",
        ] {
            assert_eq!(
                crate::evidence::export_log::unescape_cell(&spreadsheet_safe(cell)),
                cell,
                "{cell:?}"
            );
        }
        // Through a whole row: every user-controlled cell, the stored JSON untouched.
        let mut r = row();
        r.columns.environment = Some("=cmd|' /C calc'!A0".into());
        r.columns.namespace = Some("@ns".into());
        r.columns.status = "-failed".into();
        let bytes = csv_bytes(&[csv_row(&r, None)], true).unwrap();
        let mut rdr = csv::Reader::from_reader(bytes.as_slice());
        let rec = rdr.records().next().unwrap().unwrap();
        assert_eq!((&rec[5], &rec[7], &rec[10]), ("'-failed", "'@ns", "'=cmd|' /C calc'!A0"));
        assert_eq!(&rec[23], r.record_text);
    }

    #[test]
    fn amendment_csv_rows_carry_their_records_columns() {
        let text = json!({
            "id": "r", "remediation_id": "rr", "signal_fingerprint": "fp", "processing_phases": [],
            "completed_at": "2026-01-01T00:00:00Z", "status": "failed", "trigger": "deletion",
            "deleted_at": "2026-01-01T00:00:05.123456789Z", "namespace": "ns", "confidence": 0.75, "priority_score": 60
        })
        .to_string();
        let mut a = AmendmentRow {
            amendment_id: "am".into(),
            record_id: "r".into(),
            amended_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            content_sha256: String::new(),
            record_text: text.clone(),
            anomalies: None,
            link: None,
        };
        let row = a.csv();
        assert_eq!(
            row[..6],
            [
                "amendment",
                "am",
                "r",
                "2026-01-02T00:00:00.000000Z",
                "2026-01-02T00:00:00.000000Z",
                "failed"
            ]
        );
        assert_eq!((row[6].as_str(), row[7].as_str()), ("deletion", "ns"));
        assert_eq!((row[11].as_str(), row[13].as_str()), ("0.75", "60"));
        assert_eq!(row[16], "2026-01-01T00:00:05.123456Z");
        assert_eq!(row[23], text);
        a.record_text = "not a record".into();
        assert!(a.csv()[5..17].iter().all(String::is_empty));
    }
}
