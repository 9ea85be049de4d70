//! The period report: what the audit trail says about a period, built in one pass over the
//! rows verification reads anyway (so the report carries the chain's verdict on exactly the
//! rows it counted), and rendered as JSON, Markdown or HTML with server-side SVG charts (no
//! scripts, fonts or anything fetched from elsewhere).
//!
//! Deletions that waited on Data Storage: a record with trigger `deletion` was first stored
//! while its CR was being deleted (had it been stored at completion, the deletion-time post
//! would have been a 409 and no such record would exist), and the finalizer came off only
//! after that store. So the wait is `stored_at − deleted_at` (the CR's deletionTimestamp,
//! second precision; `stored_at` is Data Storage's clock, chained with the record).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::datastorage::store::{AmendmentRow, EventRow, RecordRow};
use crate::datastorage::verify::{Observer, VerifyReport};

/// Most items listed by name per section (all are counted).
pub const MAX_LISTED: usize = 200;

/// Upper bounds (seconds) of the deletion-wait histogram.
pub const WAIT_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeriodReport {
    pub generated_at: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub records: RecordTotals,
    pub classification_by_day: Vec<ClassificationDay>,
    pub priority_by_day: Vec<PriorityDay>,
    pub routing: Routing,
    pub forced_removals: ForcedRemovals,
    /// Break-glass claims of the period (absent from reports made before claims existed).
    #[serde(default)]
    pub break_glass_claims: BreakGlassClaims,
    pub amendments: Amendments,
    pub anomalies: Anomalies,
    pub deletion_waits: DeletionWaits,
    pub writer_drops: WriterDrops,
    pub chain: VerifyReport,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RecordTotals {
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_trigger: BTreeMap<String, u64>,
    pub by_status_and_trigger: Vec<StatusTrigger>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatusTrigger {
    pub status: String,
    pub trigger: Option<String>,
    pub count: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClassificationDay {
    pub day: NaiveDate,
    pub environment: Option<String>,
    pub count: u64,
    pub avg_confidence: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PriorityDay {
    pub day: NaiveDate,
    pub priority: Option<String>,
    pub count: u64,
    pub avg_score: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Count<T> {
    pub value: Option<T>,
    pub count: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Routing {
    pub by_service: Vec<Count<String>>,
    pub by_priority: Vec<Count<i64>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BreakGlassUse {
    pub at: DateTime<Utc>,
    pub user: String,
    pub groups: Vec<String>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ForcedRemovals {
    /// Break-glass events of the period (each a forced removal, with its actor).
    pub events_total: u64,
    pub events: Vec<BreakGlassUse>,
    /// Records of the period with status or trigger `forced`.
    pub forced_records: u64,
    /// Users by number of forced removals.
    pub by_user: BTreeMap<String, u64>,
}

/// Break-glass removals reviewed for a peer that did not prove it is the API server: what the
/// caller claimed, which names nobody until the removal is observed (then it is also one of
/// the forced removals' events, under the same id).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct BreakGlassClaims {
    /// Claims nothing confirmed: a forged review, or a removal never observed.
    pub unconfirmed_total: u64,
    /// Claims on an object several claims name: none confirmed.
    pub ambiguous_total: u64,
    pub confirmed_total: u64,
    /// The unconfirmed and ambiguous ones (the confirmed ones are listed as events).
    pub unconfirmed: Vec<ClaimEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClaimEntry {
    pub status: String,
    /// The review's uid.
    pub review: String,
    pub at: DateTime<Utc>,
    pub claimed_user: String,
    pub claimed_groups: Vec<String>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AmendmentEntry {
    pub record_id: String,
    pub amendment_id: String,
    pub amended_at: DateTime<Utc>,
    /// Keys whose value differs from the original (filled in when the original is read).
    pub changed: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Amendments {
    /// Amendments stored in the period: each is a conflict (different content posted under a
    /// stored id) that was kept beside the original rather than taken as stored.
    pub total: u64,
    /// Distinct records amended.
    pub records_amended: u64,
    pub items: Vec<AmendmentEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AnomalyEntry {
    pub id: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub field: String,
    pub value: serde_json::Value,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Anomalies {
    /// Records of the period carrying at least one out-of-range value.
    pub records: u64,
    pub by_field: BTreeMap<String, u64>,
    pub items: Vec<AnomalyEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Wait {
    pub id: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub deleted_at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
    pub seconds: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Upper bound in seconds; None: above the last bound.
    pub le_seconds: Option<f64>,
    pub count: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct DeletionWaits {
    /// Records first stored while their CR was being deleted.
    pub deletions: u64,
    pub mean_seconds: Option<f64>,
    pub longest: Option<Wait>,
    pub histogram: Vec<Bucket>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WriterDrops {
    /// Records the buffered writers dropped in the period (they are stored at deletion
    /// instead); None when no Prometheus was asked.
    pub dropped: Option<f64>,
    pub note: String,
}

/// Accumulates the report from the rows verification reads; bounded by days × values.
#[derive(Debug, Default)]
pub struct ReportBuilder {
    status_trigger: BTreeMap<(String, Option<String>), u64>,
    classification: BTreeMap<(NaiveDate, Option<String>), (u64, f64, u64)>,
    priority: BTreeMap<(NaiveDate, Option<String>), (u64, f64, u64)>,
    by_service: BTreeMap<Option<String>, u64>,
    by_routing_priority: BTreeMap<Option<i64>, u64>,
    forced: ForcedRemovals,
    claims: BreakGlassClaims,
    amendments: Amendments,
    amended: BTreeSet<String>,
    /// The stored text of each listed amendment, to compare with its original at the end.
    amendment_texts: Vec<String>,
    anomalies: Anomalies,
    waits: DeletionWaits,
    wait_sum: f64,
    wait_counts: Vec<u64>,
}

impl Observer for ReportBuilder {
    fn record(&mut self, row: &RecordRow) {
        let c = &row.columns;
        *self.status_trigger.entry((c.status.clone(), c.trigger.clone())).or_default() += 1;
        let day = c.completed_at.date_naive();
        let e = self.classification.entry((day, c.environment.clone())).or_default();
        e.0 += 1;
        if let Some(v) = c.confidence {
            e.1 += v;
            e.2 += 1;
        }
        let p = self.priority.entry((day, c.priority.clone())).or_default();
        p.0 += 1;
        if let Some(v) = c.priority_score {
            p.1 += v as f64;
            p.2 += 1;
        }
        *self.by_service.entry(c.routed_to_service.clone()).or_default() += 1;
        *self.by_routing_priority.entry(c.routing_priority).or_default() += 1;
        if c.status == "forced" || c.trigger.as_deref() == Some("forced") {
            self.forced.forced_records += 1;
        }
        if let Some(serde_json::Value::Array(list)) = &c.anomalies {
            self.anomalies.records += 1;
            for a in list {
                let field = a.get("field").and_then(|f| f.as_str()).unwrap_or("?").to_string();
                *self.anomalies.by_field.entry(field.clone()).or_default() += 1;
                if self.anomalies.items.len() < MAX_LISTED {
                    self.anomalies.items.push(AnomalyEntry {
                        id: row.id.clone(),
                        namespace: c.namespace.clone(),
                        name: c.name.clone(),
                        field,
                        value: a.get("value").cloned().unwrap_or_default(),
                    });
                }
            }
        }
        if let (Some("deletion"), Some(deleted_at)) = (c.trigger.as_deref(), c.deleted_at) {
            let seconds = ((c.stored_at - deleted_at).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0);
            self.add_wait(Wait {
                id: row.id.clone(),
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                deleted_at,
                stored_at: c.stored_at,
                seconds,
            });
        }
    }

    fn amendment(&mut self, row: &AmendmentRow) {
        self.amendments.total += 1;
        self.amended.insert(row.record_id.clone());
        if self.amendments.items.len() < MAX_LISTED {
            self.amendments.items.push(AmendmentEntry {
                record_id: row.record_id.clone(),
                amendment_id: row.amendment_id.clone(),
                amended_at: row.amended_at,
                changed: vec![],
            });
            self.amendment_texts.push(row.record_text.clone());
        }
    }

    fn event(&mut self, row: &EventRow) {
        self.forced.events_total += 1;
        *self.forced.by_user.entry(row.user_name.clone()).or_default() += 1;
        if self.forced.events.len() < MAX_LISTED {
            self.forced.events.push(BreakGlassUse {
                at: row.at,
                user: row.user_name.clone(),
                groups: serde_json::from_value(row.groups.clone()).unwrap_or_default(),
                namespace: row.namespace.clone(),
                name: row.name.clone(),
                uid: row.uid.clone(),
            });
        }
    }
}

fn avg(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

impl ReportBuilder {
    fn add_wait(&mut self, w: Wait) {
        if self.wait_counts.is_empty() {
            self.wait_counts = vec![0; WAIT_BUCKETS.len() + 1];
        }
        let i = WAIT_BUCKETS.iter().position(|b| w.seconds <= *b).unwrap_or(WAIT_BUCKETS.len());
        self.wait_counts[i] += 1;
        self.waits.deletions += 1;
        self.wait_sum += w.seconds;
        if self.waits.longest.as_ref().is_none_or(|l| w.seconds > l.seconds) {
            self.waits.longest = Some(w);
        }
    }

    /// One stored claim of the period, with its status (see [`crate::datastorage::store::ClaimListed`]).
    pub fn claim(&mut self, row: &crate::datastorage::store::ClaimListed) {
        let c = &mut self.claims;
        match row.status.as_str() {
            "confirmed" => {
                c.confirmed_total += 1;
                return;
            }
            "ambiguous" => c.ambiguous_total += 1,
            _ => c.unconfirmed_total += 1,
        }
        if c.unconfirmed.len() < MAX_LISTED {
            let claim: Option<crate::audit::break_glass::BreakGlassEvent> = serde_json::from_value(row.json.clone()).ok();
            c.unconfirmed.push(ClaimEntry {
                status: row.status.clone(),
                review: row.id.clone(),
                at: row.at,
                claimed_user: claim.as_ref().map(|e| e.user.clone()).unwrap_or_default(),
                claimed_groups: claim.as_ref().map(|e| e.groups.clone()).unwrap_or_default(),
                namespace: claim.as_ref().map(|e| e.namespace.clone()).unwrap_or_default(),
                name: claim.as_ref().map(|e| e.name.clone()).unwrap_or_default(),
                uid: claim.map(|e| e.uid).unwrap_or_default(),
            });
        }
    }

    /// The record ids whose originals the amendments listed are compared with.
    pub fn amended_ids(&self) -> Vec<String> {
        self.amendments
            .items
            .iter()
            .map(|a| a.record_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The report; `originals` are the stored originals of [`Self::amended_ids`].
    pub fn finish(
        mut self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        chain: VerifyReport,
        originals: &std::collections::HashMap<String, serde_json::Value>,
        now: DateTime<Utc>,
    ) -> PeriodReport {
        for (item, text) in self.amendments.items.iter_mut().zip(&self.amendment_texts) {
            let amendment: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            item.changed = match originals.get(&item.record_id) {
                Some(original) => changed_keys(original, &amendment),
                None => vec!["(original not readable)".into()],
            };
        }
        self.amendments.records_amended = self.amended.len() as u64;
        let mut totals = RecordTotals::default();
        for ((status, trigger), n) in &self.status_trigger {
            totals.total += n;
            *totals.by_status.entry(status.clone()).or_default() += n;
            *totals
                .by_trigger
                .entry(trigger.clone().unwrap_or_else(|| "(none)".into()))
                .or_default() += n;
            totals.by_status_and_trigger.push(StatusTrigger {
                status: status.clone(),
                trigger: trigger.clone(),
                count: *n,
            });
        }
        if self.waits.deletions > 0 {
            self.waits.mean_seconds = avg(self.wait_sum, self.waits.deletions);
            self.waits.histogram = self
                .wait_counts
                .iter()
                .enumerate()
                .map(|(i, n)| Bucket {
                    le_seconds: WAIT_BUCKETS.get(i).copied(),
                    count: *n,
                })
                .collect();
        }
        PeriodReport {
            generated_at: now,
            since,
            until,
            records: totals,
            classification_by_day: self
                .classification
                .into_iter()
                .map(|((day, environment), (count, sum, n))| ClassificationDay {
                    day,
                    environment,
                    count,
                    avg_confidence: avg(sum, n),
                })
                .collect(),
            priority_by_day: self
                .priority
                .into_iter()
                .map(|((day, priority), (count, sum, n))| PriorityDay {
                    day,
                    priority,
                    count,
                    avg_score: avg(sum, n),
                })
                .collect(),
            routing: Routing {
                by_service: self.by_service.into_iter().map(|(value, count)| Count { value, count }).collect(),
                by_priority: self
                    .by_routing_priority
                    .into_iter()
                    .map(|(value, count)| Count { value, count })
                    .collect(),
            },
            forced_removals: self.forced,
            break_glass_claims: self.claims,
            amendments: self.amendments,
            anomalies: self.anomalies,
            deletion_waits: self.waits,
            writer_drops: WriterDrops {
                dropped: None,
                note: "not measured: the buffered writers' drops live in Prometheus (audit_events_dropped_total); \
                       run `audit-guard report --prometheus-url <url>` to include them"
                    .into(),
            },
            chain,
        }
    }
}

/// Top-level keys whose values differ between two stored records.
pub fn changed_keys(original: &serde_json::Value, amendment: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (original.as_object(), amendment.as_object()) else {
        return vec!["(whole record)".into()];
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// The PromQL asking how many records the buffered writers dropped over a period ending at
/// the query's evaluation time.
pub fn drops_query(since: DateTime<Utc>, until: DateTime<Utc>) -> String {
    let secs = (until - since).num_seconds().max(1);
    format!("sum(increase(audit_events_dropped_total[{secs}s]))")
}

/// The value of a Prometheus instant-query answer (`/api/v1/query`): the first sample's value,
/// 0 when the vector is empty (the series did not exist: nothing was dropped).
pub fn prometheus_scalar(answer: &serde_json::Value) -> Result<f64, String> {
    if answer.get("status").and_then(|s| s.as_str()) != Some("success") {
        return Err(format!(
            "Prometheus answered {}",
            answer.get("error").and_then(|e| e.as_str()).unwrap_or("an error")
        ));
    }
    let result = answer
        .pointer("/data/result")
        .and_then(|r| r.as_array())
        .ok_or("Prometheus' answer has no data.result")?;
    match result.first() {
        None => Ok(0.0),
        Some(sample) => sample
            .pointer("/value/1")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| "Prometheus' sample has no numeric value".to_string()),
    }
}

fn label(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".into())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn fmt_le(b: &Bucket) -> String {
    match b.le_seconds {
        Some(s) => format!("≤ {s} s"),
        None => format!("> {} s", WAIT_BUCKETS.last().copied().unwrap_or(0.0)),
    }
}

/// ASCII punctuation that means something to Markdown (CommonMark and GitHub's extensions)
/// wherever it stands in a line: code, emphasis, links and images, HTML and entities, headings,
/// quote markers, ordered-list dots, tables, strikethrough, math, and the bare autolinks
/// (`scheme:`, `www.`, `user@host`). CommonMark renders any escaped ASCII punctuation as itself.
const MD_SPECIAL: &[char] = &[
    '\\', '`', '*', '_', '{', '}', '[', ']', '<', '>', '#', '.', '!', '|', '~', '&', ':', '@', '$',
];

/// Markers that mean something only at the start of a line (a bullet, a setext underline, a
/// thematic break): escaped there, left alone inside words such as `team-a`.
const MD_LEADING: &[char] = &['-', '+', '='];

/// Text from a user or a CR's status, made inert for a Markdown table cell or line: each
/// character of [`MD_SPECIAL`] backslash-escaped, a leading [`MD_LEADING`] marker too, control
/// characters (line breaks, tabs) turned into spaces, so it can neither start a construct nor
/// leave its cell or line.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    let mut leading = true;
    for c in s.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.push(' ');
            continue;
        }
        if MD_SPECIAL.contains(&c) || (leading && MD_LEADING.contains(&c)) {
            out.push('\\');
        }
        out.push(c);
        leading &= c == ' ';
    }
    out
}

pub fn to_markdown(r: &PeriodReport) -> String {
    let mut o = String::new();
    let line = |o: &mut String, s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(
        &mut o,
        format!("# Audit report {} – {}\n", r.since.to_rfc3339(), r.until.to_rfc3339()),
    );
    line(&mut o, format!("Generated {} by Data Storage. Period: `since` inclusive, `until` exclusive, on each entry's own time (records: when Data Storage stored them, stored_at; their days: completed_at).\n", r.generated_at.to_rfc3339()));
    line(&mut o, "## Chain verification\n".into());
    line(&mut o, format!("**{}**\n", md(&r.chain.summary())));
    for f in r.chain.findings.iter().take(20) {
        line(
            &mut o,
            format!(
                "- {:?} {} {} — {}",
                f.problem,
                f.kind.map_or("", |k| k.as_str()),
                md(f.id.as_deref().unwrap_or("")),
                md(&f.detail)
            ),
        );
    }
    line(&mut o, format!("\n## Records ({})\n", r.records.total));
    line(&mut o, "| status | trigger | records |\n|---|---|---|".into());
    for st in &r.records.by_status_and_trigger {
        line(
            &mut o,
            format!("| {} | {} | {} |", md(&st.status), md(&label(&st.trigger)), st.count),
        );
    }
    line(&mut o, "\n## Classification by environment, per day\n".into());
    line(&mut o, "| day | environment | records | avg confidence |\n|---|---|---|---|".into());
    for c in &r.classification_by_day {
        line(
            &mut o,
            format!(
                "| {} | {} | {} | {} |",
                c.day,
                md(&label(&c.environment)),
                c.count,
                fmt_opt(c.avg_confidence, 3)
            ),
        );
    }
    line(&mut o, "\n## Priority distribution, per day\n".into());
    line(&mut o, "| day | priority | records | avg score |\n|---|---|---|---|".into());
    for p in &r.priority_by_day {
        line(
            &mut o,
            format!(
                "| {} | {} | {} | {} |",
                p.day,
                md(&label(&p.priority)),
                p.count,
                fmt_opt(p.avg_score, 1)
            ),
        );
    }
    line(&mut o, "\n## Routing decisions\n".into());
    line(&mut o, "| routed_to_service | records |\n|---|---|".into());
    for c in &r.routing.by_service {
        line(&mut o, format!("| {} | {} |", md(&label(&c.value)), c.count));
    }
    line(&mut o, "\n| routing_priority | records |\n|---|---|".into());
    for c in &r.routing.by_priority {
        line(
            &mut o,
            format!("| {} | {} |", c.value.map_or("(none)".into(), |v| v.to_string()), c.count),
        );
    }
    let f = &r.forced_removals;
    line(
        &mut o,
        format!(
            "\n## Forced removals (break-glass): {} events, {} forced records\n",
            f.events_total, f.forced_records
        ),
    );
    if !f.events.is_empty() {
        line(&mut o, forced_removals_table(f).to_markdown());
    }
    let c = &r.break_glass_claims;
    line(
        &mut o,
        format!(
            "\n## Break-glass claims (not evidence): {} unconfirmed, {} ambiguous, {} confirmed\n",
            c.unconfirmed_total, c.ambiguous_total, c.confirmed_total
        ),
    );
    if !c.unconfirmed.is_empty() {
        line(
            &mut o,
            "Reviews from a peer that did not prove it is the API server; the user is what the caller claimed, \
             and no removal by that user was observed.\n"
                .into(),
        );
        line(&mut o, claims_table(c).to_markdown());
    }
    let a = &r.amendments;
    line(
        &mut o,
        format!(
            "\n## Conflicts and amendments: {} amendments of {} records\n",
            a.total, a.records_amended
        ),
    );
    if !a.items.is_empty() {
        line(&mut o, amendments_table(a).to_markdown());
    }
    let an = &r.anomalies;
    line(&mut o, format!("\n## Anomalies: {} records with out-of-range values\n", an.records));
    if !an.items.is_empty() {
        line(&mut o, anomalies_table(an).to_markdown());
    }
    let w = &r.deletion_waits;
    line(&mut o, format!("\n## Deletions that waited on Data Storage: {}\n", w.deletions));
    line(&mut o, "A record with trigger `deletion` was first stored while its CR was being deleted; the wait is its stored time minus the CR's deletionTimestamp.\n".into());
    if let Some(l) = &w.longest {
        line(
            &mut o,
            format!(
                "Mean {} s; longest {:.3} s: {} ({}/{}), deleted {}, stored {}.\n",
                fmt_opt(w.mean_seconds, 3),
                l.seconds,
                md(&l.id),
                md(&label(&l.namespace)),
                md(&label(&l.name)),
                l.deleted_at.to_rfc3339(),
                l.stored_at.to_rfc3339()
            ),
        );
        line(&mut o, "| wait | deletions |\n|---|---|".into());
        for b in &w.histogram {
            line(&mut o, format!("| {} | {} |", fmt_le(b), b.count));
        }
    }
    line(&mut o, "\n## Buffered-writer drops\n".into());
    line(
        &mut o,
        match r.writer_drops.dropped {
            Some(d) => format!("{d:.0} records dropped by the buffered writers ({}).", md(&r.writer_drops.note)),
            None => format!("Omitted: {}", md(&r.writer_drops.note)),
        },
    );
    o
}

/// HTML text: nothing a user name or a namespace carries can become markup.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The series colours of every chart, in order.
pub const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A stacked bar chart as inline SVG: one bar per category, one colour per series.
pub fn stacked_bars(title: &str, categories: &[String], series: &[(String, Vec<f64>)]) -> String {
    const W: f64 = 860.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 50.0;
    const BOTTOM: f64 = 40.0;
    const TOP: f64 = 30.0;
    let totals: Vec<f64> = (0..categories.len())
        .map(|i| series.iter().map(|(_, v)| v.get(i).copied().unwrap_or(0.0)).sum())
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max).max(1.0);
    let plot_w = W - LEFT - 10.0;
    let plot_h = H - BOTTOM - TOP;
    let slot = plot_w / categories.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" role=\"img\" aria-label=\"{}\" font-family=\"sans-serif\" font-size=\"11\">",
        H + 20.0 * (series.len() as f64 / 4.0).ceil(),
        esc(title)
    );
    svg.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title)
    ));
    svg.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>",
        H - BOTTOM,
        W - 10.0,
        H - BOTTOM
    ));
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.0}</text>",
        LEFT - 4.0,
        TOP + 4.0
    ));
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
        LEFT - 4.0,
        H - BOTTOM
    ));
    let every = (categories.len() / 12).max(1);
    for (i, cat) in categories.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let mut y = H - BOTTOM;
        for (s, (_, values)) in series.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let h = v / max * plot_h;
            y -= h;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {v}</title></rect>",
                PALETTE[s % PALETTE.len()],
                esc(cat)
            ));
        }
        if i % every == 0 {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                H - BOTTOM + 14.0,
                esc(cat)
            ));
        }
    }
    for (s, (name, _)) in series.iter().enumerate() {
        let x = LEFT + (s % 4) as f64 * 200.0;
        let y = H + 20.0 * (s / 4) as f64;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{}</text>",
            y - 10.0,
            PALETTE[s % PALETTE.len()],
            x + 16.0,
            esc(name)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Categories (days) and one series per value, from per-day counts.
fn per_day_series<'a>(rows: impl Iterator<Item = (NaiveDate, String, u64)> + Clone + 'a) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let days: Vec<NaiveDate> = rows.clone().map(|(d, _, _)| d).collect::<BTreeSet<_>>().into_iter().collect();
    let names: Vec<String> = rows.clone().map(|(_, n, _)| n).collect::<BTreeSet<_>>().into_iter().collect();
    let series = names
        .iter()
        .map(|name| {
            let values = days
                .iter()
                .map(|d| {
                    rows.clone()
                        .filter(|(rd, rn, _)| rd == d && rn == name)
                        .map(|(_, _, c)| c as f64)
                        .sum()
                })
                .collect();
            (name.clone(), values)
        })
        .collect();
    (days.iter().map(|d| d.format("%m-%d").to_string()).collect(), series)
}

/// A list section's table as plain-text cells, rendered (and escaped) by either format.
struct Table {
    head: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    fn to_markdown(&self) -> String {
        let mut t = format!("| {} |\n|{}", self.head.join(" | "), "---|".repeat(self.head.len()));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| md(c)).collect();
            t.push_str(&format!("\n| {} |", cells.join(" | ")));
        }
        t
    }

    fn to_html(&self) -> String {
        html_table(self.head, self.rows.clone())
    }
}

fn forced_removals_table(f: &ForcedRemovals) -> Table {
    Table {
        head: &["at", "user", "groups", "namespace", "name", "uid"],
        rows: f
            .events
            .iter()
            .map(|e| {
                vec![
                    e.at.to_rfc3339(),
                    e.user.clone(),
                    e.groups.join(", "),
                    e.namespace.clone(),
                    e.name.clone(),
                    e.uid.clone(),
                ]
            })
            .collect(),
    }
}

fn claims_table(c: &BreakGlassClaims) -> Table {
    Table {
        head: &[
            "status",
            "at",
            "claimed user",
            "claimed groups",
            "namespace",
            "name",
            "uid",
            "review",
        ],
        rows: c
            .unconfirmed
            .iter()
            .map(|e| {
                vec![
                    e.status.clone(),
                    e.at.to_rfc3339(),
                    e.claimed_user.clone(),
                    e.claimed_groups.join(", "),
                    e.namespace.clone(),
                    e.name.clone(),
                    e.uid.clone(),
                    e.review.clone(),
                ]
            })
            .collect(),
    }
}

fn amendments_table(a: &Amendments) -> Table {
    Table {
        head: &["record", "amendment", "at", "changed"],
        rows: a
            .items
            .iter()
            .map(|i| {
                vec![
                    i.record_id.clone(),
                    i.amendment_id.clone(),
                    i.amended_at.to_rfc3339(),
                    i.changed.join(", "),
                ]
            })
            .collect(),
    }
}

fn anomalies_table(an: &Anomalies) -> Table {
    Table {
        head: &["record", "namespace", "name", "field", "value"],
        rows: an
            .items
            .iter()
            .map(|i| {
                vec![
                    i.id.clone(),
                    label(&i.namespace),
                    label(&i.name),
                    i.field.clone(),
                    i.value.to_string(),
                ]
            })
            .collect(),
    }
}

fn html_table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = String::from("<table><tr>");
    for h in head {
        t.push_str(&format!("<th>{}</th>", esc(h)));
    }
    t.push_str("</tr>");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            t.push_str(&format!("<td>{}</td>", esc(&c)));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

pub fn to_html(r: &PeriodReport) -> String {
    let mut body = String::new();
    let verdict_class = if r.chain.first_broken.is_none() { "ok" } else { "bad" };
    body.push_str(&format!(
        "<h1>Audit report</h1><p class=\"period\">{} – {} (generated {})</p>",
        esc(&r.since.to_rfc3339()),
        esc(&r.until.to_rfc3339()),
        esc(&r.generated_at.to_rfc3339())
    ));
    body.push_str(&format!(
        "<h2>Chain verification</h2><p class=\"{verdict_class}\">{}</p>",
        esc(&r.chain.summary())
    ));
    if !r.chain.findings.is_empty() {
        body.push_str(&html_table(
            &["problem", "kind", "id", "shard", "seq", "detail"],
            r.chain
                .findings
                .iter()
                .take(50)
                .map(|f| {
                    vec![
                        format!("{:?}", f.problem),
                        f.kind.map_or("".into(), |k| k.as_str().into()),
                        f.id.clone().unwrap_or_default(),
                        f.shard.map_or("".into(), |s| s.to_string()),
                        f.seq.map_or("".into(), |s| s.to_string()),
                        f.detail.clone(),
                    ]
                })
                .collect(),
        ));
    }
    body.push_str(&format!("<h2>Records: {}</h2>", r.records.total));
    let statuses: Vec<String> = r.records.by_status.keys().cloned().collect();
    let triggers: Vec<String> = r.records.by_trigger.keys().cloned().collect();
    let series: Vec<(String, Vec<f64>)> = triggers
        .iter()
        .map(|t| {
            let values = statuses
                .iter()
                .map(|s| {
                    r.records
                        .by_status_and_trigger
                        .iter()
                        .filter(|st| &st.status == s && &label(&st.trigger) == t)
                        .map(|st| st.count as f64)
                        .sum()
                })
                .collect();
            (format!("trigger {t}"), values)
        })
        .collect();
    body.push_str(&stacked_bars("Records by status and trigger", &statuses, &series));
    body.push_str(&html_table(
        &["status", "trigger", "records"],
        r.records
            .by_status_and_trigger
            .iter()
            .map(|st| vec![st.status.clone(), label(&st.trigger), st.count.to_string()])
            .collect(),
    ));
    body.push_str("<h2>Classification by environment, per day</h2>");
    let (days, series) = per_day_series(r.classification_by_day.iter().map(|c| (c.day, label(&c.environment), c.count)));
    body.push_str(&stacked_bars("Records per day by environment", &days, &series));
    body.push_str(&html_table(
        &["day", "environment", "records", "avg confidence"],
        r.classification_by_day
            .iter()
            .map(|c| {
                vec![
                    c.day.to_string(),
                    label(&c.environment),
                    c.count.to_string(),
                    fmt_opt(c.avg_confidence, 3),
                ]
            })
            .collect(),
    ));
    body.push_str("<h2>Priority distribution, per day</h2>");
    let (days, series) = per_day_series(r.priority_by_day.iter().map(|p| (p.day, label(&p.priority), p.count)));
    body.push_str(&stacked_bars("Records per day by priority", &days, &series));
    body.push_str(&html_table(
        &["day", "priority", "records", "avg score"],
        r.priority_by_day
            .iter()
            .map(|p| vec![p.day.to_string(), label(&p.priority), p.count.to_string(), fmt_opt(p.avg_score, 1)])
            .collect(),
    ));
    body.push_str("<h2>Routing decisions</h2>");
    body.push_str(&html_table(
        &["routed_to_service", "records"],
        r.routing
            .by_service
            .iter()
            .map(|c| vec![label(&c.value), c.count.to_string()])
            .collect(),
    ));
    body.push_str(&html_table(
        &["routing_priority", "records"],
        r.routing
            .by_priority
            .iter()
            .map(|c| vec![c.value.map_or("(none)".into(), |v| v.to_string()), c.count.to_string()])
            .collect(),
    ));
    let f = &r.forced_removals;
    body.push_str(&format!(
        "<h2>Forced removals (break-glass): {} events, {} forced records</h2>",
        f.events_total, f.forced_records
    ));
    body.push_str(&forced_removals_table(f).to_html());
    let c = &r.break_glass_claims;
    body.push_str(&format!(
        "<h2>Break-glass claims (not evidence): {} unconfirmed, {} ambiguous, {} confirmed</h2>",
        c.unconfirmed_total, c.ambiguous_total, c.confirmed_total
    ));
    body.push_str(&claims_table(c).to_html());
    let a = &r.amendments;
    body.push_str(&format!(
        "<h2>Conflicts and amendments: {} amendments of {} records</h2>",
        a.total, a.records_amended
    ));
    body.push_str(&amendments_table(a).to_html());
    let an = &r.anomalies;
    body.push_str(&format!("<h2>Anomalies: {} records with out-of-range values</h2>", an.records));
    body.push_str(&anomalies_table(an).to_html());
    let w = &r.deletion_waits;
    body.push_str(&format!("<h2>Deletions that waited on Data Storage: {}</h2>", w.deletions));
    if let Some(l) = &w.longest {
        body.push_str(&format!(
            "<p>Mean {} s; longest {:.3} s: {} ({}/{}), deleted {}, stored {}.</p>",
            fmt_opt(w.mean_seconds, 3),
            l.seconds,
            esc(&l.id),
            esc(&label(&l.namespace)),
            esc(&label(&l.name)),
            esc(&l.deleted_at.to_rfc3339()),
            esc(&l.stored_at.to_rfc3339())
        ));
        let labels: Vec<String> = w.histogram.iter().map(fmt_le).collect();
        let values = w.histogram.iter().map(|b| b.count as f64).collect();
        body.push_str(&stacked_bars(
            "Deletions by time waited on Data Storage",
            &labels,
            &[("deletions".into(), values)],
        ));
    }
    body.push_str("<h2>Buffered-writer drops</h2>");
    body.push_str(&format!(
        "<p>{}</p>",
        esc(&match r.writer_drops.dropped {
            Some(d) => format!("{d:.0} records dropped by the buffered writers ({}).", r.writer_drops.note),
            None => format!("Omitted: {}", r.writer_drops.note),
        })
    ));
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audit report {}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 16px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}th{{background:#f2f2f2}}\
         .ok{{color:#1a7f37;font-weight:bold}}.bad{{color:#c62828;font-weight:bold}}.period{{color:#555}}\
         </style></head><body>{body}</body></html>\n",
        esc(&r.since.to_rfc3339())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastorage::store::RecordColumns;
    use crate::datastorage::verify::{Checked, Verdict};
    use serde_json::json;

    #[test]
    fn claims_are_counted_by_status_and_only_the_unconfirmed_ones_listed_as_claims() {
        let mut b = ReportBuilder::default();
        let claim = |id: &str, user: &str, status: &str| crate::datastorage::store::ClaimListed {
            json: serde_json::json!({"id": id, "user": user, "groups": ["audit-guard:break-glass"], "namespace": "ns",
                "name": "sp", "uid": format!("cr-{id}"), "at": "2026-01-01T10:00:00Z"}),
            at: "2026-01-01T10:00:00Z".parse().unwrap(),
            id: id.into(),
            status: status.into(),
        };
        b.claim(&claim("r-1", "not-a-real-user", "unconfirmed"));
        b.claim(&claim("r-2", "mallory", "ambiguous"));
        b.claim(&claim("r-3", "bob", "confirmed"));
        let r = b.finish(
            "2026-01-01T00:00:00Z".parse().unwrap(),
            "2026-01-03T00:00:00Z".parse().unwrap(),
            chain(),
            &Default::default(),
            "2026-01-03T00:00:00Z".parse().unwrap(),
        );
        let c = &r.break_glass_claims;
        assert_eq!((c.unconfirmed_total, c.ambiguous_total, c.confirmed_total), (1, 1, 1));
        let listed: Vec<(&str, &str)> = c.unconfirmed.iter().map(|e| (e.claimed_user.as_str(), e.status.as_str())).collect();
        assert_eq!(listed, [("not-a-real-user", "unconfirmed"), ("mallory", "ambiguous")]);
        assert_eq!(r.forced_removals.events_total, 0, "a claim is no event");
        let md = to_markdown(&r);
        assert!(
            md.contains("Break-glass claims (not evidence): 1 unconfirmed, 1 ambiguous, 1 confirmed"),
            "{md}"
        );
        // Every cell is escaped, times too (their colons render as colons).
        assert!(
            md.contains("| unconfirmed | 2026-01-01T10\\:00\\:00+00\\:00 | not-a-real-user |"),
            "{md}"
        );
        assert!(to_html(&r).contains("not-a-real-user"));
        // A report written before claims existed still reads.
        let mut v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("break_glass_claims");
        let old: PeriodReport = serde_json::from_value(v).unwrap();
        assert_eq!(old.break_glass_claims, BreakGlassClaims::default());
    }

    fn chain() -> VerifyReport {
        VerifyReport {
            result: Verdict::Intact,
            verified_at: "2026-01-03T00:00:00Z".parse().unwrap(),
            since: None,
            until: None,
            retention_months: 0,
            chain_entries: 0,
            heads: vec![],
            checked: Checked::default(),
            expired_by_retention: 0,
            anchors_checked: 0,
            findings_total: 0,
            findings_by_problem: Default::default(),
            first_broken: None,
            findings: vec![],
        }
    }

    fn row(id: &str, status: &str, trigger: &str, env: &str, conf: f64, day: u32) -> RecordRow {
        let completed_at: DateTime<Utc> = format!("2026-01-0{day}T10:00:00Z").parse().unwrap();
        RecordRow {
            id: id.into(),
            record_text: "{}".into(),
            link: None,
            columns: RecordColumns {
                environment: Some(env.into()),
                confidence: Some(conf),
                priority: Some("P1".into()),
                priority_score: Some(60),
                routed_to_service: Some("ai-analysis".into()),
                routing_priority: Some(1),
                status: status.into(),
                namespace: Some("ns".into()),
                name: Some(format!("sp-{id}")),
                uid: Some(id.into()),
                trigger: Some(trigger.into()),
                deleted_at: (trigger == "deletion").then(|| completed_at + chrono::Duration::seconds(5)),
                stored_at: completed_at + chrono::Duration::seconds(7),
                ..RecordColumns::sample(completed_at)
            },
        }
    }

    #[test]
    fn one_pass_counts_everything_by_day_and_value() {
        let mut b = ReportBuilder::default();
        b.record(&row("a", "completed", "completion", "production", 0.9, 1));
        b.record(&row("b", "completed", "deletion", "production", 0.7, 1));
        let mut forced = row("c", "forced", "forced", "staging", 0.5, 2);
        forced.columns.anomalies = Some(json!([{"field": "confidence", "value": 5}]));
        forced.columns.routed_to_service = None;
        b.record(&forced);
        let r = b.finish(
            "2026-01-01T00:00:00Z".parse().unwrap(),
            "2026-01-03T00:00:00Z".parse().unwrap(),
            chain(),
            &Default::default(),
            "2026-01-03T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(r.records.total, 3);
        assert_eq!(r.records.by_status["completed"], 2);
        assert_eq!(r.records.by_trigger["forced"], 1);
        let prod = &r.classification_by_day[0];
        assert_eq!((prod.environment.as_deref(), prod.count), (Some("production"), 2));
        assert!((prod.avg_confidence.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(r.priority_by_day.len(), 2, "one priority on two days");
        assert_eq!(
            r.routing.by_service,
            vec![
                Count { value: None, count: 1 },
                Count {
                    value: Some("ai-analysis".into()),
                    count: 2
                }
            ]
        );
        assert_eq!(r.forced_removals.forced_records, 1);
        assert_eq!((r.anomalies.records, r.anomalies.by_field["confidence"]), (1, 1));
        assert_eq!(r.deletion_waits.deletions, 1);
        let longest = r.deletion_waits.longest.as_ref().unwrap();
        assert_eq!((longest.id.as_str(), longest.seconds), ("b", 2.0));
        assert_eq!(r.deletion_waits.histogram.iter().map(|b| b.count).sum::<u64>(), 1);
        let md = to_markdown(&r);
        assert!(md.contains("| completed | deletion | 1 |"), "{md}");
        let html = to_html(&r);
        assert!(html.contains("<svg") && html.contains(PALETTE[0]));
        assert!(
            !html.contains("http://") || html.matches("http://").count() == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "nothing fetched from elsewhere"
        );
    }

    #[test]
    fn amendments_name_what_changed_and_events_their_actor() {
        let mut b = ReportBuilder::default();
        let am = AmendmentRow {
            amendment_id: "am-1".into(),
            record_id: "a".into(),
            amended_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            content_sha256: String::new(),
            record_text: json!({"id": "a", "status": "failed", "confidence": 0.9, "error_message": "x"}).to_string(),
            anomalies: None,
            link: None,
        };
        b.amendment(&am);
        b.amendment(&AmendmentRow {
            amendment_id: "am-2".into(),
            ..am.clone()
        });
        assert_eq!(b.amended_ids(), ["a"]);
        b.event(&EventRow {
            id: "rev".into(),
            user_name: "bob<script>".into(),
            groups: json!(["audit-guard:break-glass"]),
            namespace: "ns".into(),
            name: "sp".into(),
            uid: "u".into(),
            at: "2026-01-02T00:00:00Z".parse().unwrap(),
            stored_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            event_text: String::new(),
            link: None,
        });
        let originals = [("a".to_string(), json!({"id": "a", "status": "completed", "confidence": 0.9}))].into();
        let r = b.finish(
            "2026-01-01T00:00:00Z".parse().unwrap(),
            "2026-01-03T00:00:00Z".parse().unwrap(),
            chain(),
            &originals,
            "2026-01-03T00:00:00Z".parse().unwrap(),
        );
        assert_eq!((r.amendments.total, r.amendments.records_amended), (2, 1));
        assert_eq!(r.amendments.items[0].changed, ["error_message", "status"]);
        assert_eq!(r.forced_removals.by_user["bob<script>"], 1);
        let html = to_html(&r);
        assert!(html.contains("bob&lt;script&gt;") && !html.contains("bob<script>"));
    }

    /// Every character of [`MD_SPECIAL`] in `out`, and a leading [`MD_LEADING`] marker, is
    /// preceded by an escaping backslash, and nothing in it breaks a line.
    fn inert(out: &str) -> bool {
        if out.trim_start().starts_with(MD_LEADING) {
            return false;
        }
        let mut chars = out.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if !chars.next().is_some_and(|n| MD_SPECIAL.contains(&n) || MD_LEADING.contains(&n)) {
                    return false;
                }
            } else if MD_SPECIAL.contains(&c) || c.is_control() {
                return false;
            }
        }
        true
    }

    const HOSTILE: &[&str] = &[
        "[click](https://evil.example/x)",
        "![img](https://evil.example/i.png)",
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "a|b|c",
        "line\n# heading\r\n---",
        "`code` and ``more``",
        "*bold* _em_ __strong__ ~~gone~~",
        "- item",
        "+ item",
        "  --- ",
        "===",
        "1. item",
        "> quote",
        "https://evil.example www.evil.example bob@evil.example",
        "&lt;b&gt; &#60;",
        "\\[escaped\\]",
        "tab\there",
        "$x^2$",
        "[ref]: https://evil.example",
        "bob\u{2028}# heading",
    ];

    #[test]
    fn hostile_text_is_inert_in_markdown_and_reads_back_as_itself() {
        for s in HOSTILE {
            let out = md(s);
            assert!(inert(&out), "{s:?} -> {out:?}");
            let mut back = String::new();
            let mut chars = out.chars();
            while let Some(c) = chars.next() {
                back.push(if c == '\\' { chars.next().unwrap() } else { c });
            }
            let expected: String = s.chars().map(|c| if c.is_control() || c == '\u{2028}' { ' ' } else { c }).collect();
            assert_eq!(back, expected, "the text itself is kept");
        }
        assert_eq!(md("team-a"), "team-a");
        assert_eq!(md("- item"), "\\- item");
        assert_eq!(md("  += x"), "  \\+= x");
        assert_eq!(md("(none)"), "(none)");
    }

    #[test]
    fn a_hostile_actor_cannot_leave_its_cell_in_the_report() {
        let mut b = ReportBuilder::default();
        for (i, user) in HOSTILE.iter().enumerate() {
            b.event(&EventRow {
                id: format!("rev-{i}"),
                user_name: (*user).into(),
                groups: json!([user, "audit-guard:break-glass"]),
                namespace: format!("ns{user}"),
                name: (*user).into(),
                uid: "u".into(),
                at: "2026-01-02T00:00:00Z".parse().unwrap(),
                stored_at: "2026-01-02T00:00:00Z".parse().unwrap(),
                event_text: String::new(),
                link: None,
            });
        }
        let r = b.finish(
            "2026-01-01T00:00:00Z".parse().unwrap(),
            "2026-01-03T00:00:00Z".parse().unwrap(),
            chain(),
            &std::collections::HashMap::new(),
            "2026-01-03T00:00:00Z".parse().unwrap(),
        );
        let md = to_markdown(&r);
        let rows: Vec<&str> = md.lines().filter(|l| l.contains("| u |")).collect();
        assert_eq!(rows.len(), HOSTILE.len(), "one line per event:\n{md}");
        for row in rows {
            // What Markdown sees as syntax: the row without its escaped characters.
            let mut bare = String::new();
            let mut chars = row.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    chars.next();
                } else {
                    bare.push(c);
                }
            }
            // Six cells: seven pipes; no link, image, HTML, code or emphasis left.
            assert_eq!(bare.matches('|').count(), 7, "{row}");
            for syntax in ['[', ']', '<', '>', '`', '*', '_', '!', '#', '&', '~'] {
                assert!(!bare.contains(syntax), "{syntax} unescaped in {row}");
            }
        }
        assert!(
            !md.contains("\n# heading") && !md.contains("\n- item") && !md.contains("\n1. item"),
            "{md}"
        );
    }

    #[test]
    fn prometheus_answers_are_read_or_refused_plainly() {
        let ok = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "7"]}]}});
        assert_eq!(prometheus_scalar(&ok), Ok(7.0));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(prometheus_scalar(&empty), Ok(0.0));
        let bad = json!({"status": "error", "error": "parse error"});
        assert!(prometheus_scalar(&bad).unwrap_err().contains("parse error"));
        assert_eq!(
            drops_query("2026-01-01T00:00:00Z".parse().unwrap(), "2026-01-02T00:00:00Z".parse().unwrap()),
            "sum(increase(audit_events_dropped_total[86400s]))"
        );
    }
}
