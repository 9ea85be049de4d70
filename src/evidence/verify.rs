//! The checks of verification, as plain functions over stored rows: every row held against its
//! chain link and against itself — its content must hash to the link's digest, and every
//! column must say what the content says (a query reads the columns; a change to `status`
//! alone must not go unseen) — and the report verification answers with. Walking a store's
//! pages through them is the store's side (`datastorage::verify`).

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use super::chain::{self, EntryKind, Finding, Head, Link, Problem};
use super::rows::{trigger_str, AmendmentRow, ColumnTexts, EventRow, RecordColumns, RecordRow};
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::SignalProcessingAudit;

/// Times as the stores keep them (microseconds).
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The columns a record's text says it has (what the service wrote beside it).
pub fn columns_of(rec: &SignalProcessingAudit, stored_at: DateTime<Utc>) -> Result<RecordColumns, serde_json::Error> {
    let p = ColumnTexts::of(rec)?;
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
        trigger: rec.trigger.map(|t| trigger_str(t).to_string()),
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

/// A finding about one entry, at its link when it has one.
pub fn finding(problem: Problem, link: Option<&Link>, kind: EntryKind, id: &str, detail: String) -> Finding {
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

/// Sees every row verification reads (the period report is built in the same pass).
pub trait Observer: Send {
    fn record(&mut self, _row: &RecordRow) {}
    fn amendment(&mut self, _row: &AmendmentRow) {}
    fn event(&mut self, _row: &EventRow) {}
}

impl Observer for () {}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// The link the service chains an entry's stored text with.
    fn link_of(kind: EntryKind, id: &str, at: DateTime<Utc>, stored_at: DateTime<Utc>, text: &str) -> Link {
        let entry = NewEntry {
            kind,
            id: id.into(),
            at,
            stored_at,
            digest: chain::content_digest(text.as_bytes()),
        };
        extend(keys().active(), 0, None, &[entry]).remove(0)
    }

    /// A record row as a backend returns it after the service stored it.
    fn stored(id: &str) -> RecordRow {
        let r = rec(id);
        let record_text = serde_json::to_string(&r).unwrap();
        let stored_at: DateTime<Utc> = "2026-01-01T00:00:05.5Z".parse().unwrap();
        RecordRow {
            id: id.into(),
            columns: columns_of(&r, stored_at).unwrap(),
            link: Some(link_of(EntryKind::Record, id, r.completed_at, stored_at, &record_text)),
            record_text,
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
        let record_text = serde_json::to_string(&r).unwrap();
        let at: DateTime<Utc> = "2026-01-02T00:00:00Z".parse().unwrap();
        let link = link_of(EntryKind::Amendment, "am", at, at, &record_text);
        let row = AmendmentRow {
            amendment_id: "am".into(),
            record_id: "a".into(),
            amended_at: at,
            content_sha256: r.content_digest(),
            record_text,
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
        let event_text = serde_json::to_string(&ev).unwrap();
        let row = EventRow {
            id: "rev".into(),
            user_name: "bob".into(),
            groups: json!(["g"]),
            namespace: "ns".into(),
            name: "sp".into(),
            uid: "u".into(),
            at: micros(ev.at),
            stored_at: at,
            link: Some(link_of(EntryKind::BreakGlass, "rev", ev.at, at, &event_text)),
            event_text,
        };
        assert_eq!(check_event(&row), vec![]);
        let mut bad = row.clone();
        bad.user_name = "mallory".into();
        let f = check_event(&bad);
        assert_eq!(problems(&f), [Problem::ColumnChanged]);
        assert!(f[0].detail.contains("user_name"));
    }
}
