//! The log's evidence an export carries (docs/transparency-log.md, "Exports"), and the
//! decisions of checking it offline: do the exported rows, with the entries listed beside
//! them, make up the log's index range `[first, end)`, does that range lead to the signed
//! checkpoint, which indexes of the range does the export lack, and does the checkpoint
//! extend the one the auditor saved.
//!
//! The proof is a *range proof*, bounded whatever the export's size: the compact range of
//! `[0, first)` (at most 64 hashes), every entry of the range that is not an exported row
//! (listed with its bytes), and the consistency proof from `end` to the checkpoint's size.
//! The verifier recomputes each row's entry from the row, so its leaf is the row's own; it
//! keeps 33 bytes per index of the range (a hash and a flag), never a row's text; a range
//! wider than its rows and listed entries by more than [`MAX_GAPS`] is refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::entry::{time_text, Entry, Kind};
use super::merkle::{leaf_hash, verify_consistency, verify_inclusion, CompactRange, Hash};
use super::note::Checkpoint;

pub const FORMAT: &str = "audit-guard-export-log/v1";
/// Problems named one by one per kind (all are counted).
const NAMED: usize = 20;
/// How many more indexes than its rows and listed entries a range may span (each one missing,
/// to be named): the verifier keeps 33 bytes per index, so memory follows the export's size.
pub const MAX_GAPS: u64 = 1 << 20;

/// What a manifest carries of the log (its `log` member), signed with it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogEvidence {
    pub format: String,
    /// The checkpoint signed by the log's key, with the witnesses' cosignature lines, as served.
    pub checkpoint: String,
    /// Every item stored before this instant had its log index when the export was read:
    /// only a row stored at or after it may come without one.
    pub sequenced_before: DateTime<Utc>,
    /// Absent when no exported row has a log index.
    pub range: Option<RangeProof>,
    /// The consistency proof from an earlier checkpoint's size the request named.
    pub previous: Option<PreviousProof>,
    /// The log's first entry with its inclusion proof: a row without an index stored before
    /// it predates the log (the HMAC chain covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_entry: Option<FirstEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FirstEntry {
    /// Base64 of the entry at index 0.
    pub entry: String,
    /// Base64 hashes: its inclusion proof in the checkpoint's tree.
    pub proof: Vec<String>,
}

/// The exported rows' indexes lie in `[first, end)`; with `left` and the listed `others` they
/// give the tree of `end` leaves, which `consistency` proves is a prefix of the checkpoint's.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RangeProof {
    pub first: u64,
    pub end: u64,
    /// Base64 hashes of the complete subtrees covering `[0, first)`, largest first.
    pub left: Vec<String>,
    /// Base64 hashes: the consistency proof from `end` to the checkpoint's size.
    pub consistency: Vec<String>,
    /// The entries of the range that are not exported rows, in index order.
    pub others: Vec<OtherEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OtherEntry {
    pub index: u64,
    /// Base64 of the entry's bytes.
    pub entry: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PreviousProof {
    pub size: u64,
    /// Base64 hashes: the consistency proof from `size` to the checkpoint's size.
    pub consistency: Vec<String>,
}

pub fn b64_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

pub fn hash_b64(s: &str) -> Option<Hash> {
    B64.decode(s).ok()?.try_into().ok()
}

fn hashes(v: &[String], what: &str) -> Result<Vec<Hash>, String> {
    v.iter()
        .map(|s| hash_b64(s).ok_or_else(|| format!("{what}: {s:?} is not a base64 SHA-256 hash")))
        .collect()
}

/// The runs `[start, end)` of `[first, end)` that `sorted` (ascending, distinct) leaves out:
/// where Data Storage lists the range's other entries.
pub fn gaps(first: u64, end: u64, sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out = vec![];
    let mut at = first;
    for &i in sorted.iter().filter(|i| (first..end).contains(*i)) {
        if i > at {
            out.push((at, i));
        }
        at = i + 1;
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// An exported row as the verifier sees it: the entry recomputed from its fields and stored
/// text, and the log index and leaf hash it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedRow {
    pub entry: Entry,
    pub log: Option<(u64, Hash)>,
}

fn kind_of(name: &str) -> Result<Kind, String> {
    match name {
        "record" => Ok(Kind::Record),
        "amendment" => Ok(Kind::Amendment),
        "break_glass" => Ok(Kind::BreakGlass),
        other => Err(format!("a row of unknown kind {other:?}")),
    }
}

pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Record => "record",
        Kind::Amendment => "amendment",
        Kind::BreakGlass => "break-glass event",
    }
}

/// How an entry reads in a problem: kind, id, CR uid and when it was stored.
pub fn describe(e: &Entry) -> String {
    format!(
        "{} {:?} (CR uid {:?}, stored at {})",
        kind_name(e.kind),
        e.id,
        e.cr_uid,
        time_text(e.stored_at)
    )
}

fn entry_of(kind: Kind, id: String, stored_at: &str, stored: &str) -> Result<Entry, String> {
    let stored_at: DateTime<Utc> = stored_at.parse().map_err(|e| format!("stored_at {stored_at:?}: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(stored).map_err(|e| format!("the stored JSON: {e}"))?;
    let cr_uid = json.get("uid").and_then(|u| u.as_str()).unwrap_or_default().to_string();
    Ok(Entry {
        kind,
        id,
        cr_uid,
        stored_at,
        content_sha256: Sha256::digest(stored.as_bytes()).into(),
    })
}

fn log_ref(index: Option<u64>, leaf: Option<&str>) -> Result<Option<(u64, Hash)>, String> {
    match (index, leaf) {
        (None, None) => Ok(None),
        (Some(i), Some(l)) => Ok(Some((
            i,
            hash_b64(l).ok_or_else(|| format!("log leaf {l:?} is not a base64 hash"))?,
        ))),
        _ => Err("a log index without its leaf hash, or a leaf without its index".into()),
    }
}

/// The entry an item must have, and the log reference it carries, from its line in an NDJSON
/// export: the stored JSON text is the line's last member (`"record"` or `"event"`), byte for
/// byte, so its SHA-256 is taken from the line as written, never from a re-serialisation.
pub fn ndjson_row(line: &str) -> Result<ExportedRow, String> {
    let line = line.trim_end_matches(['\n', '\r']);
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    let kind = kind_of(text("kind").as_deref().unwrap_or_default())?;
    let (member, time) = match kind {
        Kind::Record => ("record", "stored_at"),
        Kind::Amendment => ("record", "at"),
        Kind::BreakGlass => ("event", "stored_at"),
    };
    // Members before the stored JSON are strings, and objects of strings and numbers, so the
    // first `,"<member>":` is where the stored text starts: inside a string its quotes would
    // be escaped.
    let marker = format!(",\"{member}\":");
    let start = line.find(&marker).ok_or_else(|| format!("no {member:?} member"))? + marker.len();
    let stored = line
        .get(start..line.len().saturating_sub(1))
        .filter(|_| line.ends_with('}'))
        .ok_or("the line does not end with its stored JSON")?;
    let id = text("id").ok_or("no id")?;
    let entry = entry_of(kind, id, &text(time).ok_or_else(|| format!("no {time}"))?, stored)?;
    let log = &v["log"];
    let log = if log.is_null() {
        None
    } else {
        let index = log["index"].as_u64().ok_or("log: no index")?;
        Some(log_ref(Some(index), log["leaf"].as_str())?.ok_or("log: no leaf")?)
    };
    Ok(ExportedRow { entry, log })
}

/// A CSV cell as Data Storage had it before making it safe for spreadsheets (a leading `'`
/// before `=`, `+`, `-`, `@`, a tab or a carriage return, unless the cell is a plain number:
/// `spreadsheet_safe` in src/datastorage/export.rs). A cell that itself began with `'` and
/// such a character reads the same after both, so it cannot be told apart: its row is then
/// named as differing from its entry, never passed wrongly.
pub fn unescape_cell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest)
            if matches!(rest.chars().next(), Some('=' | '+' | '-' | '@' | '\t' | '\r'))
                && !rest.parse::<f64>().is_ok_and(f64::is_finite) =>
        {
            rest
        }
        _ => cell,
    }
}

/// Where a CSV export's columns are (by its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvColumns {
    kind: usize,
    id: usize,
    stored_at: usize,
    json: usize,
    log_index: usize,
    log_leaf: usize,
}

impl CsvColumns {
    pub fn find<'a>(headers: impl IntoIterator<Item = &'a str> + Clone) -> Result<Self, String> {
        let col = |name: &str| {
            headers
                .clone()
                .into_iter()
                .position(|h| h == name)
                .ok_or(format!("the CSV has no {name} column"))
        };
        Ok(Self {
            kind: col("kind")?,
            id: col("id")?,
            stored_at: col("stored_at")?,
            json: col("json")?,
            log_index: col("log_index")?,
            log_leaf: col("log_leaf")?,
        })
    }

    /// A CSV row's entry (its `stored_at` column is when the item was stored, for every kind)
    /// and log reference.
    pub fn row<'a>(&self, cell: impl Fn(usize) -> Option<&'a str>) -> Result<ExportedRow, String> {
        let get = |i: usize| unescape_cell(cell(i).unwrap_or_default());
        let kind = kind_of(get(self.kind))?;
        // The stored JSON starts with `{`: never escaped, taken verbatim.
        let json = cell(self.json).unwrap_or_default();
        let entry = entry_of(kind, get(self.id).to_string(), get(self.stored_at), json)?;
        let index = match get(self.log_index) {
            "" => None,
            s => Some(s.parse::<u64>().map_err(|_| format!("log_index {s:?} is not a number"))?),
        };
        let leaf = Some(get(self.log_leaf)).filter(|s| !s.is_empty());
        Ok(ExportedRow {
            entry,
            log: log_ref(index, leaf)?,
        })
    }
}

/// The outcome of a check: what it established and every problem (none: it holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Rows whose entries the checkpoint covers.
    pub proven: u64,
    /// Rows stored after the export was read from the log (no index yet).
    pub after_start: u64,
    /// Rows stored before the log's first entry (the log does not hold them).
    pub before_log: u64,
    /// Other entries of the range, listed and outside the export's selection.
    pub others: u64,
    pub problems: Vec<String>,
}

impl Findings {
    fn name_all(&mut self, what: &str, lines: Vec<String>, total: u64) {
        if total == 0 {
            return;
        }
        self.problems.push(format!("{total} {what}"));
        self.problems.extend(lines.into_iter().take(NAMED));
        if total > NAMED as u64 {
            self.problems.push(format!("... and {} more", total - NAMED as u64));
        }
    }
}

/// The export's period, to tell an entry the export should hold from one of another period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Period {
    fn holds(&self, t: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

/// Checks rows one at a time against the evidence's range, then [`RangeCheck::finish`]es.
#[derive(Debug)]
pub struct RangeCheck {
    evidence: LogEvidence,
    period: Period,
    /// `leaves[i - first]`, and whether a row or a listed entry gave it.
    leaves: Vec<Hash>,
    given: Vec<bool>,
    rows: u64,
    after_start: u64,
    /// When the log's first entry was stored, as the evidence claims (proven in `finish`).
    log_began: Option<DateTime<Utc>>,
    before_log: u64,
    changed: (Vec<String>, u64),
    unindexed: (Vec<String>, u64),
    misplaced: (Vec<String>, u64),
}

fn note(list: &mut (Vec<String>, u64), line: impl FnOnce() -> String) {
    list.1 += 1;
    if list.0.len() < NAMED {
        list.0.push(line());
    }
}

impl RangeCheck {
    /// `rows`: how many rows the signed manifest counts.
    pub fn new(evidence: LogEvidence, period: Period, rows: u64) -> Result<Self, String> {
        if evidence.format != FORMAT {
            return Err(format!("unknown log evidence format {:?}", evidence.format));
        }
        let width = match &evidence.range {
            None => 0,
            Some(r) if r.first < r.end && r.end - r.first <= rows + r.others.len() as u64 + MAX_GAPS => r.end - r.first,
            Some(r) => {
                return Err(format!(
                    "the range [{}, {}) is empty, or wider than its {rows} rows and {} listed entries with {MAX_GAPS} missing",
                    r.first,
                    r.end,
                    r.others.len()
                ))
            }
        };
        let width = usize::try_from(width).map_err(|_| "the range does not fit in memory".to_string())?;
        let log_began = match &evidence.first_entry {
            Some(f) => {
                let bytes = B64
                    .decode(&f.entry)
                    .map_err(|_| "the log's first entry is not base64".to_string())?;
                Some(Entry::decode(&bytes).map_err(|e| format!("the log's first entry: {e}"))?.stored_at)
            }
            None => None,
        };
        Ok(Self {
            evidence,
            period,
            leaves: vec![[0; 32]; width],
            given: vec![false; width],
            rows: 0,
            after_start: 0,
            log_began,
            before_log: 0,
            changed: Default::default(),
            unindexed: Default::default(),
            misplaced: Default::default(),
        })
    }

    fn slot(&self, index: u64) -> Option<usize> {
        let r = self.evidence.range.as_ref()?;
        (r.first..r.end).contains(&index).then(|| usize::try_from(index - r.first).ok())?
    }

    /// One exported row (`line` names it in problems).
    pub fn row(&mut self, line: u64, row: &ExportedRow) {
        self.rows += 1;
        let Some((index, leaf)) = row.log else {
            if row.entry.stored_at >= self.evidence.sequenced_before {
                self.after_start += 1;
            } else if self.log_began.is_some_and(|t| row.entry.stored_at < t) {
                self.before_log += 1;
            } else {
                note(&mut self.unindexed, || {
                    format!(
                        "row {line}: the {} has no log index, yet everything stored before {} was in the log",
                        describe(&row.entry),
                        time_text(self.evidence.sequenced_before)
                    )
                });
            }
            return;
        };
        match row.entry.leaf_hash() {
            Ok(h) if h == leaf => {}
            Ok(_) => note(&mut self.changed, || {
                format!(
                    "row {line}: the {} is not what log entry {index} holds: changed after it was logged",
                    describe(&row.entry)
                )
            }),
            Err(e) => note(&mut self.changed, || format!("row {line}: {e}")),
        }
        match self.slot(index) {
            Some(s) if !self.given[s] => {
                self.leaves[s] = leaf;
                self.given[s] = true;
            }
            Some(_) => note(&mut self.misplaced, || format!("row {line}: log index {index} is carried twice")),
            None => note(&mut self.misplaced, || {
                format!("row {line}: log index {index} is outside the range the export proves")
            }),
        }
    }

    /// The judgement, once every row was given: `checkpoint` is the evidence's, its log
    /// signature already checked; `saved` the checkpoint the auditor trusts, if any.
    pub fn finish(mut self, checkpoint: &Checkpoint, saved: Option<&Checkpoint>) -> Findings {
        let mut f = Findings {
            after_start: self.after_start,
            before_log: self.before_log,
            ..Default::default()
        };
        if let Some(first) = &self.evidence.first_entry {
            if let Err(e) = first_entry_included(first, checkpoint) {
                f.problems.push(e);
            }
        }
        let mut missing_from_export: (Vec<String>, u64) = Default::default();
        let mut bad_others: (Vec<String>, u64) = Default::default();
        if let Some(r) = self.evidence.range.clone() {
            for o in &r.others {
                let Some(s) = self.slot(o.index).filter(|s| !self.given[*s]) else {
                    note(&mut bad_others, || {
                        format!("listed entry {} is outside the range or an exported row's index", o.index)
                    });
                    continue;
                };
                let Ok(bytes) = B64.decode(&o.entry) else {
                    note(&mut bad_others, || format!("listed entry {} is not base64", o.index));
                    continue;
                };
                self.leaves[s] = leaf_hash(&bytes);
                self.given[s] = true;
                match Entry::decode(&bytes) {
                    // Records and amendments are exported by when they were stored, the
                    // entry's time; break-glass events by their own `at`, which the entry lacks.
                    Ok(e) if e.kind != Kind::BreakGlass && self.period.holds(e.stored_at) => note(&mut missing_from_export, || {
                        format!(
                            "log entry {}: the {} is in the log and in the export's period, but not in the export",
                            o.index,
                            describe(&e)
                        )
                    }),
                    Ok(_) => f.others += 1,
                    Err(e) => note(&mut bad_others, || format!("listed entry {}: {e}", o.index)),
                }
            }
            let gaps: Vec<u64> = (r.first..r.end).zip(&self.given).filter(|(_, g)| !**g).map(|(i, _)| i).collect();
            let lines = gaps
                .iter()
                .take(NAMED)
                .map(|i| {
                    format!(
                        "log index {i} is inside the exported range [{}, {}) but the export neither carries nor lists it",
                        r.first, r.end
                    )
                })
                .collect();
            f.name_all("indexes of the range are missing from the export", lines, gaps.len() as u64);
            if gaps.is_empty() {
                if let Err(e) = range_leads_to(&r, &self.leaves, checkpoint) {
                    f.problems.push(e);
                } else {
                    f.proven = self.rows - self.after_start - self.before_log - self.unindexed.1;
                }
            }
        } else if self.rows > self.after_start + self.before_log + self.unindexed.1 {
            f.problems
                .push("rows carry log indexes but the export carries no range proof for them".into());
        }
        f.name_all("rows differ from their log entries", self.changed.0, self.changed.1);
        f.name_all("rows lack a log index", self.unindexed.0, self.unindexed.1);
        f.name_all("rows carry misplaced log indexes", self.misplaced.0, self.misplaced.1);
        f.name_all(
            "entries the log holds for the export's period are missing from the export",
            missing_from_export.0,
            missing_from_export.1,
        );
        f.name_all("listed entries are malformed", bad_others.0, bad_others.1);
        if let Some(saved) = saved {
            if let Err(e) = extends(&self.evidence, checkpoint, saved) {
                f.problems.push(e);
            }
        }
        if !f.problems.is_empty() {
            f.proven = 0;
        }
        f
    }
}

/// Whether the leaves of `[first, end)`, after the compact range of `[0, first)`, give a tree
/// of `end` leaves that the consistency proof extends to the checkpoint.
pub fn range_leads_to(r: &RangeProof, leaves: &[Hash], checkpoint: &Checkpoint) -> Result<(), String> {
    let left = hashes(&r.left, "the range's left hashes")?;
    let proof = hashes(&r.consistency, "the range's consistency proof")?;
    if r.end > checkpoint.size {
        return Err(format!(
            "the exported range ends at {} but the checkpoint covers only {} entries",
            r.end, checkpoint.size
        ));
    }
    let mut range = CompactRange::from_peaks(r.first, left)
        .ok_or_else(|| format!("the range's left hashes are not the compact range of {} entries", r.first))?;
    for leaf in leaves {
        range.append(*leaf);
    }
    verify_consistency(r.end, checkpoint.size, &proof, &range.root(), &checkpoint.root).map_err(|e| {
        format!(
            "the exported entries do not lead to the signed checkpoint of {} entries ({e}): an entry of the range was changed, removed or reordered",
            checkpoint.size
        )
    })
}

/// Whether the listed first entry is the checkpoint's entry at index 0.
pub fn first_entry_included(first: &FirstEntry, checkpoint: &Checkpoint) -> Result<(), String> {
    let bytes = B64
        .decode(&first.entry)
        .map_err(|_| "the log's first entry is not base64".to_string())?;
    let proof = hashes(&first.proof, "the first entry's inclusion proof")?;
    verify_inclusion(&leaf_hash(&bytes), 0, checkpoint.size, &proof, &checkpoint.root)
        .map_err(|e| format!("the log's first entry is not entry 0 of the signed checkpoint: {e}"))
}

/// Whether the evidence's checkpoint extends `saved`, the checkpoint the auditor trusts.
pub fn extends(ev: &LogEvidence, checkpoint: &Checkpoint, saved: &Checkpoint) -> Result<(), String> {
    if saved.origin != checkpoint.origin {
        return Err(format!(
            "the saved checkpoint is of log {:?}, not {:?}",
            saved.origin, checkpoint.origin
        ));
    }
    if saved.size > checkpoint.size {
        return Err(format!(
            "the saved checkpoint covers {} entries, more than the export's {}: check exports in order, with the checkpoint saved before this one",
            saved.size, checkpoint.size
        ));
    }
    if saved.size == checkpoint.size {
        return (saved.root == checkpoint.root).then_some(()).ok_or_else(|| {
            format!(
                "the saved checkpoint and the export's both cover {} entries with different roots: the log shows two histories",
                saved.size
            )
        });
    }
    let Some(prev) = ev.previous.as_ref().filter(|p| p.size == saved.size) else {
        return Err(format!(
            "the export carries no consistency proof from the saved checkpoint's {} entries (export with --previous-checkpoint)",
            saved.size
        ));
    };
    let proof = hashes(&prev.consistency, "the previous consistency proof")?;
    verify_consistency(saved.size, checkpoint.size, &proof, &saved.root, &checkpoint.root).map_err(|e| {
        format!(
            "the export's checkpoint does not extend the saved one of {} entries (a fork or rewritten history): {e}",
            saved.size
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::merkle::{consistency_proof, inclusion_proof, root_at, MemoryTree};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Items 0..n, one per second from midnight; item i's stored JSON is {"i":i,"uid":"u"}.
    fn items(n: usize) -> Vec<(Entry, String)> {
        let kinds = [Kind::Record, Kind::Amendment, Kind::BreakGlass];
        (0..n)
            .map(|i| {
                let text = format!("{{\"i\":{i},\"uid\":\"u\"}}");
                let t = at("2026-12-01T00:00:00Z") + chrono::Duration::seconds(i as i64);
                (Entry::new(kinds[i % 3], &format!("item-{i}"), "u", t, text.as_bytes()), text)
            })
            .collect()
    }

    fn tree(items: &[(Entry, String)]) -> MemoryTree {
        items.iter().map(|(e, _)| e.leaf_hash().unwrap()).collect()
    }

    fn checkpoint(t: &MemoryTree, size: u64) -> Checkpoint {
        Checkpoint {
            origin: "example.com/log".into(),
            size,
            root: root_at(t, size).unwrap(),
            extensions: vec![],
        }
    }

    /// The evidence Data Storage would send for rows at `exported` of the tree's first `n`.
    fn evidence(t: &MemoryTree, all: &[(Entry, String)], exported: &[u64], n: u64, previous: Option<u64>) -> LogEvidence {
        let (first, end) = (exported[0], exported[exported.len() - 1] + 1);
        let others = (first..end)
            .filter(|i| !exported.contains(i))
            .map(|i| OtherEntry {
                index: i,
                entry: B64.encode(all[i as usize].0.encode().unwrap()),
            })
            .collect();
        LogEvidence {
            format: FORMAT.into(),
            checkpoint: String::new(),
            sequenced_before: at("2026-12-02T00:00:00Z"),
            range: Some(RangeProof {
                first,
                end,
                left: b64_hashes(CompactRange::from_reader(t, first).unwrap().peaks()),
                consistency: b64_hashes(&consistency_proof(t, end, n).unwrap()),
                others,
            }),
            previous: previous.map(|m| PreviousProof {
                size: m,
                consistency: b64_hashes(&consistency_proof(t, m, n).unwrap()),
            }),
            first_entry: Some(FirstEntry {
                entry: B64.encode(all[0].0.encode().unwrap()),
                proof: b64_hashes(&inclusion_proof(t, 0, n).unwrap()),
            }),
        }
    }

    fn row(all: &[(Entry, String)], i: u64) -> ExportedRow {
        let e = all[i as usize].0.clone();
        let leaf = e.leaf_hash().unwrap();
        ExportedRow {
            entry: e,
            log: Some((i, leaf)),
        }
    }

    fn check(ev: &LogEvidence, period: Period, rows: &[ExportedRow], cp: &Checkpoint, saved: Option<&Checkpoint>) -> Findings {
        let mut c = RangeCheck::new(ev.clone(), period, rows.len() as u64).unwrap();
        for (n, r) in rows.iter().enumerate() {
            c.row(n as u64 + 1, r);
        }
        c.finish(cp, saved)
    }

    /// Records and amendments of items 10..40 (break-glass events in between are listed).
    fn setup() -> (Vec<(Entry, String)>, MemoryTree, Vec<u64>, Period) {
        let all = items(60);
        let t = tree(&all);
        let exported: Vec<u64> = (10..40).filter(|i| i % 3 != 2).collect();
        let period = Period {
            since: Some(at("2026-12-01T00:00:10Z")),
            until: Some(at("2026-12-01T00:00:40Z")),
        };
        (all, t, exported, period)
    }

    #[test]
    fn an_honest_export_is_proven_in_any_row_order() {
        let (all, t, exported, period) = setup();
        let cp = checkpoint(&t, 60);
        let saved = checkpoint(&t, 7);
        let ev = evidence(&t, &all, &exported, 60, Some(7));
        let mut rows: Vec<ExportedRow> = exported.iter().map(|i| row(&all, *i)).collect();
        rows.reverse();
        let f = check(&ev, period, &rows, &cp, Some(&saved));
        assert_eq!(f.problems, Vec::<String>::new());
        assert_eq!((f.proven, f.others), (exported.len() as u64, 10));
        // Up to the checkpoint's own size, and from a saved checkpoint of the same size.
        let ev = evidence(&t, &all, &exported, 40, None);
        let f = check(&ev, period, &rows, &checkpoint(&t, 40), Some(&checkpoint(&t, 40)));
        assert_eq!(f.problems, Vec::<String>::new());
    }

    #[test]
    fn a_row_changed_by_one_byte_is_named() {
        let (all, t, exported, period) = setup();
        let cp = checkpoint(&t, 60);
        let ev = evidence(&t, &all, &exported, 60, None);
        let mut rows: Vec<ExportedRow> = exported.iter().map(|i| row(&all, *i)).collect();
        rows[3].entry.content_sha256[0] ^= 1;
        let f = check(&ev, period, &rows, &cp, None);
        assert_eq!(f.proven, 0);
        assert!(
            f.problems
                .iter()
                .any(|p| p.contains("row 4") && p.contains("item-15") && p.contains("log entry 15")),
            "{f:?}"
        );
        // The leaf it claims changed too: then the range does not lead to the root.
        rows[3].log = Some((15, rows[3].entry.leaf_hash().unwrap()));
        let f = check(&ev, period, &rows, &cp, None);
        assert!(
            f.problems.iter().any(|p| p.contains("do not lead to the signed checkpoint")),
            "{f:?}"
        );
    }

    #[test]
    fn every_byte_of_the_evidence_matters() {
        let (all, t, exported, period) = setup();
        let cp = checkpoint(&t, 60);
        let saved = checkpoint(&t, 7);
        let ev = evidence(&t, &all, &exported, 60, Some(7));
        let rows: Vec<ExportedRow> = exported.iter().map(|i| row(&all, *i)).collect();
        let flip = |s: &mut String| {
            let mut h = hash_b64(s).unwrap();
            h[31] ^= 1;
            *s = B64.encode(h);
        };
        let r = ev.range.clone().unwrap();
        for i in 0..r.left.len() {
            let mut bad = ev.clone();
            flip(&mut bad.range.as_mut().unwrap().left[i]);
            assert!(!check(&bad, period, &rows, &cp, None).problems.is_empty(), "left {i}");
        }
        for i in 0..r.consistency.len() {
            let mut bad = ev.clone();
            flip(&mut bad.range.as_mut().unwrap().consistency[i]);
            assert!(!check(&bad, period, &rows, &cp, None).problems.is_empty(), "consistency {i}");
        }
        for i in 0..ev.previous.as_ref().unwrap().consistency.len() {
            let mut bad = ev.clone();
            flip(&mut bad.previous.as_mut().unwrap().consistency[i]);
            assert!(!check(&bad, period, &rows, &cp, Some(&saved)).problems.is_empty(), "previous {i}");
        }
        let mut bad = ev.clone();
        let o = &mut bad.range.as_mut().unwrap().others[0];
        let mut bytes = B64.decode(&o.entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        o.entry = B64.encode(bytes);
        assert!(check(&bad, period, &rows, &cp, None).problems[0].contains("do not lead"));
        let mut cp2 = cp.clone();
        cp2.root[0] ^= 1;
        assert!(!check(&ev, period, &rows, &cp2, None).problems.is_empty());
    }

    #[test]
    fn entries_the_export_lacks_are_named() {
        let (all, t, exported, period) = setup();
        let cp = checkpoint(&t, 60);
        // Data Storage lost record 16's row: its entry is listed, inside the period.
        let kept: Vec<u64> = exported.iter().copied().filter(|i| *i != 16).collect();
        let mut ev = evidence(&t, &all, &exported, 60, None);
        ev.range.as_mut().unwrap().others.push(OtherEntry {
            index: 16,
            entry: B64.encode(all[16].0.encode().unwrap()),
        });
        let rows: Vec<ExportedRow> = kept.iter().map(|i| row(&all, *i)).collect();
        let f = check(&ev, period, &rows, &cp, None);
        assert!(
            f.problems.iter().any(|p| p.starts_with("log entry 16: the amendment \"item-16\"")),
            "{f:?}"
        );
        // Neither carried nor listed: the index is named.
        let ev = evidence(&t, &all, &exported, 60, None);
        let f = check(&ev, period, &rows, &cp, None);
        assert!(
            f.problems
                .iter()
                .any(|p| p.starts_with("log index 16 is inside the exported range")),
            "{f:?}"
        );
        // A row stored before the log's cut-off without an index is named; one after is not.
        let mut rows: Vec<ExportedRow> = exported.iter().map(|i| row(&all, *i)).collect();
        let mut late = row(&all, 41);
        late.log = None;
        late.entry.stored_at = at("2026-12-02T00:00:01Z");
        let mut early = row(&all, 42);
        early.log = None;
        let mut before = row(&all, 43);
        before.log = None;
        before.entry.stored_at = at("2026-11-30T00:00:00Z");
        rows.extend([late, early, before]);
        let f = check(&ev, period, &rows, &cp, None);
        assert_eq!((f.after_start, f.before_log), (1, 1));
        assert!(
            f.problems.iter().any(|p| p.contains("item-42") && p.contains("no log index")),
            "{f:?}"
        );
        // Two rows claiming one index.
        let mut rows: Vec<ExportedRow> = exported.iter().map(|i| row(&all, *i)).collect();
        rows.push(row(&all, 10));
        assert!(check(&ev, period, &rows, &cp, None)
            .problems
            .iter()
            .any(|p| p.contains("carried twice")));
    }

    #[test]
    fn the_saved_checkpoint_must_be_extended() {
        let (all, t, exported, period) = setup();
        let cp = checkpoint(&t, 60);
        let rows: Vec<ExportedRow> = exported.iter().map(|i| row(&all, *i)).collect();
        let ev = evidence(&t, &all, &exported, 60, Some(7));
        // A forged saved checkpoint: same size, another root.
        let mut forged = checkpoint(&t, 7);
        forged.root[5] ^= 1;
        let f = check(&ev, period, &rows, &cp, Some(&forged));
        assert!(f.problems.iter().any(|p| p.contains("does not extend the saved one of 7")), "{f:?}");
        // No proof from the saved size, a larger saved tree, another log.
        let f = check(&ev, period, &rows, &cp, Some(&checkpoint(&t, 8)));
        assert!(
            f.problems[0].contains("no consistency proof from the saved checkpoint's 8"),
            "{f:?}"
        );
        let f = check(&ev, period, &rows, &cp, Some(&checkpoint(&t, 60)));
        assert_eq!(f.problems, Vec::<String>::new());
        let bigger = Checkpoint { size: 61, ..cp.clone() };
        assert!(check(&ev, period, &rows, &cp, Some(&bigger)).problems[0].contains("more than the export's"));
        let other = Checkpoint {
            origin: "other/log".into(),
            ..checkpoint(&t, 7)
        };
        assert!(check(&ev, period, &rows, &cp, Some(&other)).problems[0].contains("of log"));
        let mut same_size = cp.clone();
        same_size.root[0] ^= 1;
        assert!(check(&ev, period, &rows, &cp, Some(&same_size)).problems[0].contains("two histories"));
    }

    #[test]
    fn rows_are_read_from_ndjson_and_csv() {
        let text = r#"{"id":"r1","uid":"u-1","status":"ok"}"#;
        let e = Entry::new(Kind::Record, "r1", "u-1", at("2026-12-01T00:00:00.5Z"), text.as_bytes());
        let leaf = B64.encode(e.leaf_hash().unwrap());
        let line = format!(
            "{{\"at\":\"x\",\"chain\":null,\"id\":\"r1\",\"kind\":\"record\",\"log\":{{\"index\":7,\"leaf\":\"{leaf}\"}},\"stored_at\":\"2026-12-01T00:00:00.500000Z\",\"record\":{text}}}\n"
        );
        let r = ndjson_row(&line).unwrap();
        assert_eq!(r.entry, e);
        assert_eq!(r.log, Some((7, e.leaf_hash().unwrap())));
        assert!(ndjson_row(&line.replace("\"index\":7,", "")).is_err());
        let no_log = line.replace(&format!("{{\"index\":7,\"leaf\":\"{leaf}\"}}"), "null");
        assert_eq!(ndjson_row(&no_log).unwrap().log, None);
        let event = r#"{"kind":"break_glass","id":"bg","stored_at":"2026-12-01T00:00:00Z","event":{"uid":"u2"}}"#;
        assert_eq!(ndjson_row(event).unwrap().entry.cr_uid, "u2");
        assert!(ndjson_row(r#"{"kind":"chain","id":"x"}"#).is_err());

        let headers = ["kind", "id", "stored_at", "json", "log_index", "log_leaf"];
        let cols = CsvColumns::find(headers.iter().copied()).unwrap();
        let cells = ["record", "r1", "2026-12-01T00:00:00.500000Z", text, "7", leaf.as_str()];
        assert_eq!(cols.row(|i| cells.get(i).copied()).unwrap(), r);
        let cells = ["record", "r1", "2026-12-01T00:00:00.500000Z", text, "", ""];
        assert_eq!(cols.row(|i| cells.get(i).copied()).unwrap().log, None);
        let cells = ["record", "r1", "2026-12-01T00:00:00.500000Z", text, "7", ""];
        assert!(cols.row(|i| cells.get(i).copied()).is_err());
        assert!(CsvColumns::find(["kind", "id"].iter().copied()).is_err());
        // A leaf or an id a spreadsheet would have run carries a leading quote: read without it.
        let plus = Entry::new(Kind::Record, "=r1", "u-1", at("2026-12-01T00:00:00.5Z"), text.as_bytes());
        let leaf = format!("'+{}", &B64.encode(plus.leaf_hash().unwrap())[1..]);
        let cells = ["record", "'=r1", "2026-12-01T00:00:00.500000Z", text, "7", leaf.as_str()];
        let got = cols.row(|i| cells.get(i).copied()).unwrap();
        assert_eq!(got.entry.id, "=r1");
        assert_eq!(B64.encode(got.log.unwrap().1)[..1], *"+");
    }

    #[test]
    fn the_first_entry_must_be_the_logs() {
        let (all, t, exported, period) = setup();
        let cp = checkpoint(&t, 60);
        let rows: Vec<ExportedRow> = exported.iter().map(|i| row(&all, *i)).collect();
        let mut ev = evidence(&t, &all, &exported, 60, None);
        // Claiming a later first entry would excuse rows without an index: refused.
        ev.first_entry.as_mut().unwrap().entry = B64.encode(all[1].0.encode().unwrap());
        let f = check(&ev, period, &rows, &cp, None);
        assert!(f.problems[0].contains("not entry 0 of the signed checkpoint"), "{f:?}");
    }

    #[test]
    fn gaps_are_the_runs_left_out() {
        assert_eq!(gaps(10, 20, &[10, 11, 14, 19]), vec![(12, 14), (15, 19)]);
        assert_eq!(gaps(10, 13, &[]), vec![(10, 13)]);
        assert_eq!(gaps(10, 13, &[10, 11, 12]), vec![]);
        assert_eq!(gaps(10, 13, &[5, 12, 30]), vec![(10, 12)]);
    }

    #[test]
    fn evidence_of_another_format_or_an_unbounded_range_is_refused() {
        let (all, t, exported, period) = setup();
        let mut ev = evidence(&t, &all, &exported, 60, None);
        ev.format = "v2".into();
        assert!(RangeCheck::new(ev, period, 20).is_err());
        let mut ev = evidence(&t, &all, &exported, 60, None);
        let r = ev.range.as_mut().unwrap();
        r.end = r.first + 20 + r.others.len() as u64 + MAX_GAPS;
        assert!(RangeCheck::new(ev.clone(), period, 20).is_ok());
        assert!(RangeCheck::new(ev, period, 19).is_err());
    }
}
