//! The stored rows that verification, the export and the period report read: each entry as
//! the database holds it (its text, its columns, its chain link). Both stores produce them, and
//! `audit-guard verify --database-url` reads them straight from the database, so they decode
//! from either backend's rows here; which SQL selects them is the stores' business.

use chrono::{DateTime, Utc};

use super::chain::Link;
use crate::audit::SignalProcessingAudit;

/// The JSON columns a record is written with beside its text: what the store binds and what
/// verification expects the columns to say.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnTexts {
    /// `processing_phases` with each duration as ISO 8601 text, for `::interval`.
    pub phases_text: String,
    pub sources_text: Option<String>,
    /// The anomalies list, or None when there are none (a NULL column is cheap to count).
    pub anomalies_text: Option<String>,
}

impl ColumnTexts {
    pub fn of(rec: &SignalProcessingAudit) -> Result<Self, serde_json::Error> {
        let mut phases = serde_json::to_value(&rec.processing_phases)?;
        if let serde_json::Value::Array(items) = &mut phases {
            for (item, phase) in items.iter_mut().zip(&rec.processing_phases) {
                if let (Some(obj), Some(d)) = (item.as_object_mut(), phase.duration) {
                    obj.insert("duration".into(), serde_json::Value::String(d.to_iso8601()));
                }
            }
        }
        Ok(Self {
            phases_text: phases.to_string(),
            sources_text: rec.enrichment_sources.as_ref().map(serde_json::to_string).transpose()?,
            anomalies_text: (!rec.anomalies.is_empty())
                .then(|| serde_json::to_string(&rec.anomalies))
                .transpose()?,
        })
    }
}

/// The `trigger` column's text.
pub fn trigger_str(t: crate::audit::Trigger) -> &'static str {
    match t {
        crate::audit::Trigger::Completion => "completion",
        crate::audit::Trigger::Deletion => "deletion",
        crate::audit::Trigger::Forced => "forced",
    }
}

/// Every column of a stored record, as the database returns it (JSON columns parsed), so
/// verification can hold each against the record text it was written from.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RecordColumns {
    pub remediation_id: String,
    pub signal_fingerprint: String,
    pub processing_phases: serde_json::Value,
    pub enrichment_quality: Option<f64>,
    pub enrichment_sources: Option<serde_json::Value>,
    pub context_size_bytes: Option<i64>,
    pub environment: Option<String>,
    pub confidence: Option<f64>,
    pub business_criticality: Option<String>,
    pub sla_requirement: Option<String>,
    pub priority: Option<String>,
    pub priority_score: Option<i64>,
    pub routed_to_service: Option<String>,
    pub routing_priority: Option<i64>,
    #[sqlx(try_from = "Stamp")]
    pub completed_at: DateTime<Utc>,
    pub status: String,
    pub error_message: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub trigger: Option<String>,
    #[sqlx(try_from = "Stamp")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub anomalies: Option<serde_json::Value>,
    #[sqlx(try_from = "Stamp")]
    pub stored_at: DateTime<Utc>,
}

#[cfg(test)]
impl RecordColumns {
    /// A completed record's columns with every optional one empty, for tests to fill in.
    pub fn sample(completed_at: DateTime<Utc>) -> Self {
        Self {
            remediation_id: "rr".into(),
            signal_fingerprint: "fp".into(),
            processing_phases: serde_json::json!([]),
            enrichment_quality: None,
            enrichment_sources: None,
            context_size_bytes: None,
            environment: None,
            confidence: None,
            business_criticality: None,
            sla_requirement: None,
            priority: None,
            priority_score: None,
            routed_to_service: None,
            routing_priority: None,
            completed_at,
            status: "completed".into(),
            error_message: None,
            namespace: None,
            name: None,
            uid: None,
            trigger: None,
            deleted_at: None,
            anomalies: None,
            stored_at: completed_at,
        }
    }
}

/// A stored record with its link (None: no link points at it).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RecordRow {
    pub id: String,
    #[sqlx(rename = "record")]
    pub record_text: String,
    #[sqlx(flatten)]
    pub columns: RecordColumns,
    /// Read apart, from the chain columns.
    #[sqlx(skip)]
    pub link: Option<Link>,
}

/// A stored amendment with its link.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AmendmentRow {
    pub amendment_id: String,
    pub record_id: String,
    #[sqlx(try_from = "Stamp")]
    pub amended_at: DateTime<Utc>,
    pub content_sha256: String,
    #[sqlx(rename = "record")]
    pub record_text: String,
    pub anomalies: Option<serde_json::Value>,
    #[sqlx(skip)]
    pub link: Option<Link>,
}

/// A stored break-glass event with its link.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    pub user_name: String,
    pub groups: serde_json::Value,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    #[sqlx(try_from = "Stamp")]
    pub at: DateTime<Utc>,
    #[sqlx(try_from = "Stamp")]
    pub stored_at: DateTime<Utc>,
    #[sqlx(rename = "event")]
    pub event_text: String,
    #[sqlx(skip)]
    pub link: Option<Link>,
}

/// A stored break-glass claim with what became of it: `confirmed` (its event is stored under
/// the same id), `ambiguous` (other claims name the same object, so none can be confirmed) or
/// `unconfirmed` (no removal observed yet, or never: a forged review, or a removal that did
/// not happen).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimListed {
    pub json: serde_json::Value,
    #[sqlx(try_from = "Stamp")]
    pub at: DateTime<Utc>,
    pub id: String,
    pub status: String,
}

/// A stored time as the backends keep it: `timestamptz` in PostgreSQL, the text of
/// [`fixed_ts`](super::chain::fixed_ts) in SQLite, read strictly as RFC 3339 (another spelling is not what was
/// written). The parse's outcome is kept: an entry's own time fails the read, while a chain
/// column reads a malformed one as no time, so verification reports that link instead.
#[derive(Debug)]
pub struct Stamp(Result<Option<DateTime<Utc>>, String>);

impl TryFrom<Stamp> for Option<DateTime<Utc>> {
    type Error = String;
    fn try_from(s: Stamp) -> Result<Self, String> {
        s.0
    }
}

impl TryFrom<Stamp> for DateTime<Utc> {
    type Error = String;
    fn try_from(s: Stamp) -> Result<Self, String> {
        s.0?.ok_or_else(|| "unexpected NULL".to_string())
    }
}

impl sqlx::Type<sqlx::Sqlite> for Stamp {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <str as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
    fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        <str as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for Stamp {
    fn decode(v: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let Some(s) = <Option<&str> as sqlx::Decode<sqlx::Sqlite>>::decode(v)? else {
            return Ok(Self(Ok(None)));
        };
        Ok(Self(
            DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| format!("timestamp {s:?}: {e}")),
        ))
    }
}

impl sqlx::Type<sqlx::Postgres> for Stamp {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Stamp {
    fn decode(v: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Self(Ok(<Option<DateTime<Utc>> as sqlx::Decode<sqlx::Postgres>>::decode(v)?)))
    }
}
