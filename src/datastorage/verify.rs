//! Verification of what Data Storage holds: the chain walked link by link (every shard, from
//! its first entry), and every stored row in the period held against its link and against
//! itself — its content must hash to the link's digest, and every column must say what the
//! content says (a query reads the columns; a change to `status` alone must not go unseen).
//!
//! The checks are plain functions over rows; [`verify`] only pages through a [`Store`].

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use super::store::{AmendmentRow, DbResult, EventRow, Prepared, RecordColumns, RecordRow, Store, TimeRange};
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::SignalProcessingAudit;
use crate::evidence::chain::{self, ChainKeys, ChainWalk, EntryKind, Finding, Findings, Head, Link, Problem};

/// Rows per page: big enough that 1,000,000 records take a few hundred round trips, small
/// enough that a page stays well under the statement timeout and a few MiB of memory.
pub const PAGE: u32 = 5_000;
/// Missing records listed by name (all are counted).
const MISSING_SAMPLE: u32 = 100;

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The columns a record's text says it has (what the service wrote beside it).
pub fn columns_of(rec: &SignalProcessingAudit, stored_at: DateTime<Utc>) -> Result<RecordColumns, serde_json::Error> {
    let p = Prepared::new(rec.clone())?;
    let parse = |t: &Option<String>| t.as_deref().map(serde_json::from_str).transpose();
    Ok(RecordColumns {
        remediation_id: rec.remediation_id.clone(),
        signal_fingerprint: rec.signal_fingerprint.clone(),
        processing_phases: serde_json::from_str(&p.phases_text)?,
        enrichment_quality: rec.enrichment_quality,
        enrichment_sources: parse(&p.sources_text)?,
        context_size_bytes: rec.context_size_bytes,
        environment: rec.environment.clone(),
        confidence: rec.confidence,
        business_criticality: rec.business_criticality.clone(),
        sla_requirement: rec.sla_requirement.clone(),
        priority: rec.priority.clone(),
        priority_score: rec.priority_score,
        routed_to_service: rec.routed_to_service.clone(),
        routing_priority: rec.routing_priority,
        completed_at: micros(rec.completed_at),
        status: rec.status.as_str().to_string(),
        error_message: rec.error_message.clone(),
        namespace: rec.namespace.clone(),
        name: rec.name.clone(),
        uid: rec.uid.clone(),
        trigger: rec.trigger.map(|t| super::store::trigger_str(t).to_string()),
        deleted_at: rec.deleted_at.map(micros),
        anomalies: parse(&p.anomalies_text)?,
        stored_at: micros(stored_at),
    })
}

/// The names of the columns in which `stored` differs from `expected`.
pub fn differing_columns(stored: &RecordColumns, expected: &RecordColumns) -> Vec<&'static str> {
    let mut out = vec![];
    macro_rules! cmp {
        ($($f:ident),*) => {
            $( if stored.$f != expected.$f { out.push(stringify!($f)); } )*
        };
    }
    cmp!(
        remediation_id,
        signal_fingerprint,
        processing_phases,
        enrichment_quality,
        enrichment_sources,
        context_size_bytes,
        environment,
        confidence,
        business_criticality,
        sla_requirement,
        priority,
        priority_score,
        routed_to_service,
        routing_priority,
        completed_at,
        status,
        error_message,
        namespace,
        name,
        uid,
        trigger,
        deleted_at,
        anomalies,
        stored_at
    );
    out
}

fn finding(problem: Problem, link: Option<&Link>, kind: EntryKind, id: &str, detail: String) -> Finding {
    Finding {
        problem,
        shard: link.map(|l| l.shard),
        seq: link.map(|l| l.seq),
        kind: Some(kind),
        id: Some(id.to_string()),
        detail,
    }
}

/// The link of a row must exist and its digest must be the content's.
fn check_link(kind: EntryKind, id: &str, link: Option<&Link>, content: &str) -> Option<Finding> {
    let Some(link) = link else {
        return Some(finding(
            Problem::Unchained,
            None,
            kind,
            id,
            format!("the {} {id:?} has no chain link: it was written around the service", kind.as_str()),
        ));
    };
    (chain::content_digest(content.as_bytes()) != link.digest).then(|| {
        finding(
            Problem::ContentChanged,
            Some(link),
            kind,
            id,
            format!("the stored content of the {} {id:?} is not what was chained", kind.as_str()),
        )
    })
}

/// Every finding about one stored record.
pub fn check_record(row: &RecordRow) -> Vec<Finding> {
    let kind = EntryKind::Record;
    let mut out: Vec<Finding> = check_link(kind, &row.id, row.link.as_ref(), &row.record_text).into_iter().collect();
    let link = row.link.as_ref();
    let changed = |what: String| finding(Problem::ColumnChanged, link, kind, &row.id, what);
    match serde_json::from_str::<SignalProcessingAudit>(&row.record_text) {
        Err(e) => out.push(changed(format!("the stored record {:?} is not a record: {e}", row.id))),
        Ok(rec) => {
            if rec.id != row.id {
                out.push(changed(format!("the record stored under {:?} names the id {:?}", row.id, rec.id)));
            }
            match columns_of(&rec, link.map_or(row.columns.stored_at, |l| l.stored_at)) {
                Err(e) => out.push(changed(format!("the stored record {:?} cannot be re-derived: {e}", row.id))),
                Ok(expected) => {
                    let cols = differing_columns(&row.columns, &expected);
                    if !cols.is_empty() {
                        out.push(changed(format!(
                            "the columns {} of record {:?} no longer say what its stored record says (changed in the database)",
                            cols.join(", "),
                            row.id
                        )));
                    }
                }
            }
        }
    }
    out
}

/// Every finding about one stored amendment.
pub fn check_amendment(row: &AmendmentRow) -> Vec<Finding> {
    let kind = EntryKind::Amendment;
    let id = &row.amendment_id;
    let mut out: Vec<Finding> = check_link(kind, id, row.link.as_ref(), &row.record_text).into_iter().collect();
    let link = row.link.as_ref();
    let mut cols = vec![];
    match serde_json::from_str::<SignalProcessingAudit>(&row.record_text) {
        Err(_) => cols.push("record"),
        Ok(rec) => {
            if rec.id != row.record_id {
                cols.push("record_id");
            }
            if rec.content_digest() != row.content_sha256 {
                cols.push("content_sha256");
            }
            let anomalies = (!rec.anomalies.is_empty())
                .then(|| serde_json::to_value(&rec.anomalies).ok())
                .flatten();
            if anomalies != row.anomalies {
                cols.push("anomalies");
            }
        }
    }
    if link.is_some_and(|l| micros(l.stored_at) != micros(row.amended_at)) {
        cols.push("amended_at");
    }
    if !cols.is_empty() {
        out.push(finding(
            Problem::ColumnChanged,
            link,
            kind,
            id,
            format!(
                "the columns {} of amendment {id:?} no longer agree with its stored record",
                cols.join(", ")
            ),
        ));
    }
    out
}

/// Every finding about one stored break-glass event.
pub fn check_event(row: &EventRow) -> Vec<Finding> {
    let kind = EntryKind::BreakGlass;
    let mut out: Vec<Finding> = check_link(kind, &row.id, row.link.as_ref(), &row.event_text).into_iter().collect();
    let link = row.link.as_ref();
    let mut cols = vec![];
    match serde_json::from_str::<BreakGlassEvent>(&row.event_text) {
        Err(_) => cols.push("event"),
        Ok(e) => {
            let groups = serde_json::to_value(&e.groups).unwrap_or_default();
            for (name, same) in [
                ("id", e.id == row.id),
                ("user_name", e.user == row.user_name),
                ("groups", groups == row.groups),
                ("namespace", e.namespace == row.namespace),
                ("name", e.name == row.name),
                ("uid", e.uid == row.uid),
                ("at", micros(e.at) == micros(row.at)),
            ] {
                if !same {
                    cols.push(name);
                }
            }
        }
    }
    if link.is_some_and(|l| micros(l.stored_at) != micros(row.stored_at)) {
        cols.push("stored_at");
    }
    if !cols.is_empty() {
        out.push(finding(
            Problem::ColumnChanged,
            link,
            kind,
            &row.id,
            format!(
                "the columns {} of break-glass event {:?} no longer agree with the stored event",
                cols.join(", "),
                row.id
            ),
        ));
    }
    out
}

/// Whether a month's partition is past the retention the verifier was told to expect.
pub fn expired(year: i32, month: u32, retention_months: u32, now: DateTime<Utc>) -> bool {
    let name = super::postgres::partition_name(year, month);
    !super::postgres::partitions_to_drop([name.as_str()], now, retention_months).is_empty()
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Intact,
    Broken,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    pub records: u64,
    pub amendments: u64,
    pub break_glass_events: u64,
}

/// What `verify` answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VerifyReport {
    pub result: Verdict,
    pub verified_at: DateTime<Utc>,
    /// The period whose rows were checked (`since` inclusive, `until` exclusive); the chain's
    /// links are always walked in full.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Months older than this many may be gone with their partition (0: none may).
    pub retention_months: u32,
    /// Links walked, over every shard and kind.
    pub chain_entries: u64,
    /// The last link of every shard: keep them, and pass them back as anchors later.
    pub heads: Vec<Head>,
    pub checked: Checked,
    /// Chained records gone with partitions the retention allowed to go.
    pub expired_by_retention: u64,
    pub anchors_checked: usize,
    pub findings_total: u64,
    pub findings_by_problem: BTreeMap<Problem, u64>,
    /// The first finding in chain order.
    pub first_broken: Option<Finding>,
    /// The first findings in chain order (at most 100).
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// One line for people: "intact: ..." or "broken: ...".
    pub fn summary(&self) -> String {
        let scope = format!(
            "{} chain entries in {} shard(s); {} records, {} amendments, {} break-glass events checked{}",
            self.chain_entries,
            self.heads.len(),
            self.checked.records,
            self.checked.amendments,
            self.checked.break_glass_events,
            if self.expired_by_retention > 0 {
                format!("; {} records gone with partitions past the retention", self.expired_by_retention)
            } else {
                String::new()
            }
        );
        match &self.first_broken {
            None => format!("intact: {scope}"),
            Some(f) => format!(
                "broken: {} finding(s); first: {:?} {} {}{} — {}",
                self.findings_total,
                f.problem,
                f.kind.map_or("entry", |k| k.as_str()),
                f.id.as_deref().map(|i| format!("{i:?}")).unwrap_or_default(),
                match (f.shard, f.seq) {
                    (Some(s), Some(q)) => format!(" (shard {s} seq {q})"),
                    _ => String::new(),
                },
                f.detail
            ),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyOptions {
    pub range: TimeRange,
    pub retention_months: u32,
    /// Heads published earlier (an earlier verify's `heads`, an export manifest's `chain_heads`).
    pub anchors: Vec<Head>,
}

/// Sees every row verification reads (the period report is built in the same pass).
pub trait Observer: Send {
    fn record(&mut self, _row: &RecordRow) {}
    fn amendment(&mut self, _row: &AmendmentRow) {}
    fn event(&mut self, _row: &EventRow) {}
}

impl Observer for () {}

/// Recomputes the chain and checks every row of the period. Memory stays bounded by a page.
pub async fn verify(store: &dyn Store, keys: &ChainKeys, opts: &VerifyOptions, now: DateTime<Utc>) -> DbResult<VerifyReport> {
    verify_observed(store, keys, opts, now, &mut ()).await
}

/// As [`verify`], showing every row of the period to `observer` as it goes by.
pub async fn verify_observed(
    store: &dyn Store,
    keys: &ChainKeys,
    opts: &VerifyOptions,
    now: DateTime<Utc>,
    observer: &mut dyn Observer,
) -> DbResult<VerifyReport> {
    let mut findings = Findings::default();

    // 1. Every link of every shard, in order.
    let anchored: HashSet<(i32, i64)> = opts.anchors.iter().map(|a| (a.shard, a.seq)).collect();
    let mut at_anchors: HashMap<(i32, i64), chain::Hash> = HashMap::new();
    let mut walk = ChainWalk::new(keys);
    let mut after = None;
    loop {
        let page = store.chain_links(after, PAGE).await?;
        for link in &page {
            walk.push(link, &mut findings);
            if anchored.contains(&(link.shard, link.seq)) {
                at_anchors.insert((link.shard, link.seq), link.hash);
            }
        }
        match page.last() {
            Some(l) if page.len() == PAGE as usize => after = Some((l.shard, l.seq)),
            _ => break,
        }
    }
    let (chain_entries, heads) = walk.finish();
    for f in chain::check_anchors(&opts.anchors, &at_anchors) {
        findings.push(f);
    }

    // 2. The period's rows against their links and themselves. The checks of a page run on a
    // blocking thread while the next page is read.
    let mut checked = Checked::default();
    let range = opts.range;
    let mut after = None;
    let mut pending: Option<tokio::task::JoinHandle<Vec<Finding>>> = None;
    loop {
        let page = store.record_rows(range, after.clone(), PAGE).await?;
        if let Some(p) = pending.take() {
            push_all(&mut findings, p.await);
        }
        checked.records += page.len() as u64;
        page.iter().for_each(|r| observer.record(r));
        let next = page.last().map(|r| (r.columns.stored_at, r.id.clone()));
        let full = page.len() == PAGE as usize;
        pending = Some(tokio::task::spawn_blocking(move || page.iter().flat_map(check_record).collect()));
        match next {
            Some(n) if full => after = Some(n),
            _ => break,
        }
    }
    if let Some(p) = pending.take() {
        push_all(&mut findings, p.await);
    }
    let mut after = None;
    loop {
        let page = store.amendment_rows(range, after, PAGE).await?;
        checked.amendments += page.len() as u64;
        for row in &page {
            observer.amendment(row);
            for f in check_amendment(row) {
                findings.push(f);
            }
        }
        match page.last() {
            Some(r) if page.len() == PAGE as usize => after = Some((r.amended_at, r.amendment_id.clone())),
            _ => break,
        }
    }
    let mut after = None;
    loop {
        let page = store.event_rows(range, after, PAGE).await?;
        checked.break_glass_events += page.len() as u64;
        for row in &page {
            observer.event(row);
            for f in check_event(row) {
                findings.push(f);
            }
        }
        match page.last() {
            Some(r) if page.len() == PAGE as usize => after = Some((r.at, r.id.clone())),
            _ => break,
        }
    }

    // 3. Chained records whose rows are gone.
    let missing = store.records_without_rows(range, MISSING_SAMPLE).await?;
    let mut expired_by_retention = 0;
    let mut listed: HashMap<(i32, u32), u64> = HashMap::new();
    for (ym, _) in &missing.sample {
        *listed.entry(*ym).or_default() += 1;
    }
    for (y, m, n, present) in &missing.by_month {
        let partition = super::postgres::partition_name(*y, *m);
        let (problem, why) = if *present {
            (
                Problem::Missing,
                format!("deleted from partition {partition}, which is still there"),
            )
        } else if opts.retention_months > 0 && expired(*y, *m, opts.retention_months, now) {
            expired_by_retention += n;
            continue;
        } else {
            (
                Problem::PartitionDropped,
                format!(
                    "gone with partition {partition}, which was dropped although the expected retention ({} months) keeps it",
                    opts.retention_months
                ),
            )
        };
        for (_, link) in missing.sample.iter().filter(|(ym, _)| *ym == (*y, *m)) {
            findings.push(Finding::at_link(
                problem,
                link,
                format!("the chained record {:?} is {why}", link.id),
            ));
        }
        let unlisted = n.saturating_sub(listed.get(&(*y, *m)).copied().unwrap_or(0));
        findings.count_more(problem, unlisted);
    }

    // 4. Id rows written around the service (they hold an id with nothing behind it).
    let (bare, named) = store.bare_ids(MISSING_SAMPLE).await?;
    for id in &named {
        findings.push(finding(
            Problem::BareId,
            None,
            EntryKind::Record,
            id,
            format!(
                "the id {id:?} is held by an id row with no record, no chain link and no log entry: written around \
                 the service, it makes every POST of that record a conflict"
            ),
        ));
    }
    findings.count_more(Problem::BareId, bare.saturating_sub(named.len() as u64));

    let total = findings.total;
    let by_problem = findings.by_problem.clone();
    let kept = findings.into_sorted();
    Ok(VerifyReport {
        result: if total == 0 { Verdict::Intact } else { Verdict::Broken },
        verified_at: now,
        since: range.since,
        until: range.until,
        retention_months: opts.retention_months,
        chain_entries,
        heads,
        checked,
        expired_by_retention,
        anchors_checked: opts.anchors.len(),
        findings_total: total,
        findings_by_problem: by_problem,
        first_broken: kept.first().cloned(),
        findings: kept,
    })
}

fn push_all(findings: &mut Findings, checked: Result<Vec<Finding>, tokio::task::JoinError>) {
    match checked {
        Ok(list) => list.into_iter().for_each(|f| findings.push(f)),
        // A panic in a check is a bug, and must not read as "intact".
        Err(e) => findings.push(Finding {
            problem: Problem::ColumnChanged,
            shard: None,
            seq: None,
            kind: None,
            id: None,
            detail: format!("a page of records could not be checked: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastorage::store::record_entries;
    use crate::evidence::chain::{extend, tests::keys, NewEntry};
    use serde_json::json;

    fn rec(id: &str) -> SignalProcessingAudit {
        serde_json::from_value(json!({
            "id": id, "remediation_id": "rr", "signal_fingerprint": "fp",
            "processing_phases": [{"phase": "enriching", "duration": "1.5s", "start_time": "2026-01-01T00:00:00.123456789Z"}],
            "environment": "production", "confidence": 0.9, "priority": "P1", "priority_score": 70,
            "enrichment_sources": ["k8s"], "completed_at": "2026-01-01T00:00:02.123456789Z", "status": "completed",
            "trigger": "deletion", "deleted_at": "2026-01-01T00:00:03Z",
            "anomalies": [{"field": "confidence", "value": 5}]
        }))
        .unwrap()
    }

    /// A record row as a backend returns it after the service stored it.
    fn stored(id: &str) -> RecordRow {
        let r = rec(id);
        let p = Prepared::new(r.clone()).unwrap();
        let stored_at: DateTime<Utc> = "2026-01-01T00:00:05.5Z".parse().unwrap();
        let link = extend(keys().active(), 0, None, &record_entries([&p], stored_at)).remove(0);
        RecordRow {
            id: id.into(),
            columns: columns_of(&r, stored_at).unwrap(),
            record_text: p.record_text,
            link: Some(link),
        }
    }

    fn problems(f: &[Finding]) -> Vec<Problem> {
        f.iter().map(|f| f.problem).collect()
    }

    #[test]
    fn a_record_as_stored_passes() {
        assert_eq!(check_record(&stored("a")), vec![]);
    }

    #[test]
    fn a_changed_column_is_named() {
        let mut row = stored("a");
        row.columns.status = "failed".into();
        let f = check_record(&row);
        assert_eq!(problems(&f), [Problem::ColumnChanged]);
        assert!(f[0].detail.contains("status"), "{}", f[0].detail);
        assert_eq!((f[0].id.as_deref(), f[0].seq), (Some("a"), Some(1)));
        let mut row = stored("a");
        row.columns.confidence = Some(0.1);
        row.columns.processing_phases[0]["duration"] = json!("PT9S");
        let f = check_record(&row);
        assert!(f[0].detail.contains("processing_phases, confidence"), "{}", f[0].detail);
        let mut row = stored("a");
        row.columns.stored_at += chrono::Duration::seconds(1);
        assert!(check_record(&row)[0].detail.contains("stored_at"));
    }

    #[test]
    fn changed_content_and_missing_links_are_found() {
        let mut row = stored("a");
        row.record_text = row.record_text.replace("\"production\"", "\"staging\"");
        let f = check_record(&row);
        assert_eq!(problems(&f), [Problem::ContentChanged, Problem::ColumnChanged], "{f:#?}");
        let mut row = stored("a");
        row.link = None;
        assert_eq!(problems(&check_record(&row)), [Problem::Unchained]);
        let mut row = stored("a");
        row.record_text = "{".into();
        assert!(problems(&check_record(&row)).contains(&Problem::ColumnChanged));
    }

    #[test]
    fn amendments_and_events_are_checked_against_their_columns() {
        let r = rec("a");
        let p = Prepared::new(r.clone()).unwrap();
        let at: DateTime<Utc> = "2026-01-02T00:00:00Z".parse().unwrap();
        let link = extend(
            keys().active(),
            0,
            None,
            &[NewEntry {
                kind: EntryKind::Amendment,
                id: "am".into(),
                at,
                stored_at: at,
                digest: p.digest,
            }],
        )
        .remove(0);
        let row = AmendmentRow {
            amendment_id: "am".into(),
            record_id: "a".into(),
            amended_at: at,
            content_sha256: r.content_digest(),
            record_text: p.record_text.clone(),
            anomalies: Some(json!([{"field": "confidence", "value": 5}])),
            link: Some(link),
        };
        assert_eq!(check_amendment(&row), vec![]);
        let mut bad = row.clone();
        bad.record_id = "b".into();
        assert!(check_amendment(&bad)[0].detail.contains("record_id"));

        let ev: BreakGlassEvent = serde_json::from_value(json!({"id": "rev", "user": "bob", "groups": ["g"],
            "namespace": "ns", "name": "sp", "uid": "u", "at": "2026-01-01T00:00:00.1234567Z"}))
        .unwrap();
        let pe = crate::datastorage::store::PreparedEvent::new(ev.clone()).unwrap();
        let row = EventRow {
            id: "rev".into(),
            user_name: "bob".into(),
            groups: json!(["g"]),
            namespace: "ns".into(),
            name: "sp".into(),
            uid: "u".into(),
            at: micros(ev.at),
            stored_at: at,
            event_text: pe.event_text.clone(),
            link: Some(extend(keys().active(), 0, None, &[crate::datastorage::store::event_entry(&pe, at)]).remove(0)),
        };
        assert_eq!(check_event(&row), vec![]);
        let mut bad = row.clone();
        bad.user_name = "mallory".into();
        let f = check_event(&bad);
        assert_eq!(problems(&f), [Problem::ColumnChanged]);
        assert!(f[0].detail.contains("user_name"));
    }

    #[test]
    fn retention_decides_which_dropped_months_are_expected() {
        let now: DateTime<Utc> = "2026-06-15T00:00:00Z".parse().unwrap();
        assert!(expired(2025, 1, 15, now));
        assert!(!expired(2025, 6, 15, now));
        assert!(!expired(2025, 1, 0, now), "0: nothing may be gone");
    }
}
