//! The storage seam: one trait both backends implement, and the plain data that crosses it.

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use serde::Serialize;

use crate::audit::SignalProcessingAudit;

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
}

impl Prepared {
    pub fn new(rec: SignalProcessingAudit) -> Result<Self, serde_json::Error> {
        let record_text = serde_json::to_string(&rec)?;
        let mut phases = serde_json::to_value(&rec.processing_phases)?;
        if let serde_json::Value::Array(items) = &mut phases {
            for (item, phase) in items.iter_mut().zip(&rec.processing_phases) {
                if let (Some(obj), Some(d)) = (item.as_object_mut(), phase.duration) {
                    obj.insert("duration".into(), serde_json::Value::String(d.to_iso8601()));
                }
            }
        }
        let sources_text = rec.enrichment_sources.as_ref().map(serde_json::to_string).transpose()?;
        Ok(Self {
            record_text,
            phases_text: phases.to_string(),
            sources_text,
            rec,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Exists,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub signal_fingerprint: Option<String>,
    pub remediation_id: Option<String>,
    pub environment: Option<String>,
    pub priority: Option<String>,
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
    /// Strictly older than this (completed_at, id) position.
    pub after: Option<(DateTime<Utc>, String)>,
}

/// One row of a listing: the stored record and its position for the next cursor.
#[derive(Debug, Clone)]
pub struct Listed {
    pub record: serde_json::Value,
    pub completed_at: DateTime<Utc>,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationStat {
    pub environment: Option<String>,
    pub avg_confidence: Option<f64>,
    pub total_signals: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriorityStat {
    pub priority: Option<String>,
    pub count: i64,
    pub avg_score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlowPhaseQuery {
    pub phase: String,
    pub min_duration_nanos: i64,
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlowPhase {
    pub id: String,
    pub remediation_id: String,
    pub signal_fingerprint: String,
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
    fn get(&self, id: String) -> BoxFuture<'_, DbResult<Option<serde_json::Value>>>;
    fn list(&self, q: ListQuery) -> BoxFuture<'_, DbResult<Vec<Listed>>>;
    fn classification(&self, since: DateTime<Utc>) -> BoxFuture<'_, DbResult<Vec<ClassificationStat>>>;
    fn priorities(&self, since: DateTime<Utc>) -> BoxFuture<'_, DbResult<Vec<PriorityStat>>>;
    fn slow_phases(&self, q: SlowPhaseQuery) -> BoxFuture<'_, DbResult<Vec<SlowPhase>>>;
}

/// Fixed-width UTC timestamps, so text comparison is time comparison (SQLite) and both
/// backends keep the same (microsecond) precision.
pub fn fixed_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn trigger_str(t: crate::audit::Trigger) -> &'static str {
    match t {
        crate::audit::Trigger::Completion => "completion",
        crate::audit::Trigger::Deletion => "deletion",
        crate::audit::Trigger::Forced => "forced",
    }
}

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
    }

    #[test]
    fn fixed_timestamps_sort_as_text() {
        let a = fixed_ts("2025-01-01T00:00:00Z".parse().unwrap());
        let b = fixed_ts("2025-01-01T00:00:00.5Z".parse().unwrap());
        assert_eq!(a, "2025-01-01T00:00:00.000000Z");
        assert!(a < b);
    }
}
