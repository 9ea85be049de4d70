//! Building the period report in one pass over the rows verification reads.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};

use super::model::*;
use crate::evidence::rows::{AmendmentRow, ClaimListed, EventRow, RecordRow};
use crate::evidence::verify::{Observer, VerifyReport};

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

    /// One stored claim of the period, with its status (see [`ClaimListed`]).
    pub fn claim(&mut self, row: &ClaimListed) {
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
