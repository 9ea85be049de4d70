//! The period report's model: what it says, as serialized (the API's JSON and the auditor's
//! `--format json`).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::evidence::verify::VerifyReport;

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
