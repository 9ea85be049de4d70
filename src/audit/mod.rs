//! The audit record: the design document's `SignalProcessingAudit` / `ProcessingPhase`.
//!
//! JSON keys are binding (including the camelCase keys of the phase results). As the
//! design document's Go encoder would, every key is emitted, null where the CR does not
//! carry the value, except `error_message`, which is omitted when empty. Phase durations
//! go out as integer nanoseconds (Go's `time.Duration`) and come in as either that or a
//! Go duration string. Extra keys (namespace, name, uid, trigger, deleted_at) say where
//! the record came from; `id` is the CR's `metadata.uid`, so one CR yields one record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod break_glass;
pub mod from_cr;

use crate::duration::{self, GoDuration};

/// Every key of the design document's schema; all of them are always emitted
/// (`error_message` only when non-empty, so it is not listed).
pub const DESIGN_KEYS: &[&str] = &[
    "id",
    "remediation_id",
    "signal_fingerprint",
    "processing_phases",
    "enrichment_quality",
    "enrichment_sources",
    "context_size_bytes",
    "environment",
    "confidence",
    "business_criticality",
    "sla_requirement",
    "priority",
    "priority_score",
    "routed_to_service",
    "routing_priority",
    "completed_at",
    "status",
];

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SignalProcessingAudit {
    pub id: String,
    pub remediation_id: String,
    pub signal_fingerprint: String,
    pub processing_phases: Vec<ProcessingPhase>,

    // Enrichment results
    #[serde(default)]
    pub enrichment_quality: Option<f64>,
    #[serde(default)]
    pub enrichment_sources: Option<Vec<String>>,
    #[serde(default)]
    pub context_size_bytes: Option<i64>,

    // Classification results
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub business_criticality: Option<String>,
    #[serde(default)]
    pub sla_requirement: Option<String>,

    // Categorization results (DD-CATEGORIZATION-001)
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub priority_score: Option<i64>,

    // Routing decision
    #[serde(default)]
    pub routed_to_service: Option<String>,
    #[serde(default)]
    pub routing_priority: Option<i64>,

    // Metadata
    pub completed_at: DateTime<Utc>,
    pub status: AuditStatus,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub error_message: Option<String>,

    // Where the record came from (extra keys, not in the design document).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub trigger: Option<Trigger>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Values the CR carried that the schema cannot hold (out of range, negative, outside the
    /// accepted time window): stored as null in their field and listed here with the raw value,
    /// so that every record is storable and nothing is silently lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<Anomaly>,
}

/// One value the record could not hold as given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// JSON path of the field in the record, e.g. `confidence` or `processing_phases[1].duration`.
    pub field: String,
    /// The raw value the CR carried.
    pub value: serde_json::Value,
}

/// Times in a record must lie within this window around the moment Data Storage receives it
/// (Data Storage's defaults; the record builder keeps controller records inside it).
pub const TIME_WINDOW_PAST: std::time::Duration = std::time::Duration::from_secs(400 * 24 * 3600);
pub const TIME_WINDOW_FUTURE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

fn is_empty(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatus {
    Completed,
    Failed,
    /// Deleted before it finished processing.
    Incomplete,
    /// The finalizer was removed by break-glass, not by the controller.
    Forced,
}

impl AuditStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Incomplete => "incomplete",
            Self::Forced => "forced",
        }
    }
}

/// What made audit-guard write the record.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The CR reached Completed or Failed (buffered write).
    Completion,
    /// The CR is being deleted (synchronous write before the finalizer comes off).
    Deletion,
    /// A break-glass user removed the finalizer.
    Forced,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProcessingPhase {
    pub phase: String,
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default, with = "duration::nanos")]
    pub duration: Option<GoDuration>,
    #[serde(default, rename = "enrichmentResults", skip_serializing_if = "Option::is_none")]
    pub enrichment_results: Option<EnrichmentPhaseResults>,
    #[serde(default, rename = "classificationResults", skip_serializing_if = "Option::is_none")]
    pub classification_results: Option<ClassificationPhaseResults>,
    #[serde(default, rename = "categorizationResults", skip_serializing_if = "Option::is_none")]
    pub categorization_results: Option<CategorizationPhaseResults>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct EnrichmentPhaseResults {
    #[serde(default, rename = "contextQuality")]
    pub context_quality: Option<f64>,
    #[serde(default, rename = "contextSizeBytes")]
    pub context_size_bytes: Option<i64>,
    #[serde(default, rename = "contextSources")]
    pub context_sources: Option<i64>,
    #[serde(default, rename = "degradedMode")]
    pub degraded_mode: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ClassificationPhaseResults {
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default, rename = "businessCriticality")]
    pub business_criticality: Option<String>,
    #[serde(default, rename = "classificationMethod")]
    pub classification_method: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CategorizationPhaseResults {
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default, rename = "priorityScore")]
    pub priority_score: Option<i64>,
    #[serde(default)]
    pub source: Option<String>,
}

/// A record that parsed but breaks a rule; `field` is its JSON path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is usable as a record (or event) id: 1..=MAX_ID_LEN characters of `[A-Za-z0-9-_.:]`.
pub fn check_id(field: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() {
        return Err(field_error(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(field_error(
            field,
            format!("must be at most {MAX_ID_LEN} characters of [A-Za-z0-9-_.:]"),
        ));
    }
    Ok(())
}

/// The accepted range of times around `now`: not before `now - past`, not after `now + future`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub past: std::time::Duration,
    pub future: std::time::Duration,
}

impl Default for TimeWindow {
    fn default() -> Self {
        Self {
            past: TIME_WINDOW_PAST,
            future: TIME_WINDOW_FUTURE,
        }
    }
}

impl TimeWindow {
    /// `field` must lie within the window around `now`; the error names the field and the bounds.
    pub fn check(&self, field: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), FieldError> {
        let past = chrono::Duration::from_std(self.past).unwrap_or(chrono::Duration::MAX);
        let future = chrono::Duration::from_std(self.future).unwrap_or(chrono::Duration::MAX);
        let earliest = now.checked_sub_signed(past).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let latest = now.checked_add_signed(future).unwrap_or(DateTime::<Utc>::MAX_UTC);
        if t < earliest || t > latest {
            return Err(field_error(
                field,
                format!(
                    "{} is outside the accepted window from {} to {}",
                    t.to_rfc3339(),
                    earliest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
        Ok(())
    }
}

impl SignalProcessingAudit {
    /// Rules beyond the JSON shape, checked by Data Storage before anything is written.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        if self.remediation_id.is_empty() {
            return Err(field_error("remediation_id", "must not be empty"));
        }
        for (field, value) in [("confidence", self.confidence), ("enrichment_quality", self.enrichment_quality)] {
            if let Some(v) = value {
                if !(0.0..=1.0).contains(&v) {
                    return Err(field_error(field, "must be between 0 and 1"));
                }
            }
        }
        if self.priority_score.is_some_and(|s| s < 0) {
            return Err(field_error("priority_score", "must not be negative"));
        }
        for (i, p) in self.processing_phases.iter().enumerate() {
            if p.phase.is_empty() {
                return Err(field_error(format!("processing_phases[{i}].phase"), "must not be empty"));
            }
            if p.duration.is_some_and(|d| d.nanos < 0) {
                return Err(field_error(format!("processing_phases[{i}].duration"), "must not be negative"));
            }
            if let (Some(s), Some(e)) = (p.start_time, p.end_time) {
                if e < s {
                    return Err(field_error(format!("processing_phases[{i}].end_time"), "is before start_time"));
                }
            }
        }
        for (i, a) in self.anomalies.iter().enumerate() {
            if a.field.is_empty() {
                return Err(field_error(format!("anomalies[{i}].field"), "must not be empty"));
            }
        }
        Ok(())
    }

    /// Every time the record carries must lie within `window` around `now` (Data Storage's
    /// guard against records dated far in the past or the future).
    pub fn check_times(&self, window: &TimeWindow, now: DateTime<Utc>) -> Result<(), FieldError> {
        window.check("completed_at", self.completed_at, now)?;
        if let Some(t) = self.deleted_at {
            window.check("deleted_at", t, now)?;
        }
        for (i, p) in self.processing_phases.iter().enumerate() {
            if let Some(t) = p.start_time {
                window.check(&format!("processing_phases[{i}].start_time"), t, now)?;
            }
            if let Some(t) = p.end_time {
                window.check(&format!("processing_phases[{i}].end_time"), t, now)?;
            }
        }
        Ok(())
    }

    /// The record without its provenance keys (`trigger`, `deleted_at`), normalised the way
    /// Data Storage stores it (an empty `error_message` is no error message).
    fn content(&self) -> Self {
        let mut c = self.clone();
        c.trigger = None;
        c.deleted_at = None;
        if c.error_message.as_deref() == Some("") {
            c.error_message = None;
        }
        c
    }

    /// Whether two records say the same about a CR: equal in every key except the provenance
    /// keys `trigger` and `deleted_at` (a completion record and the deletion-time record of an
    /// unchanged CR are the same record; any other difference is a conflict).
    pub fn same_content(&self, other: &Self) -> bool {
        self.content() == other.content()
    }

    /// A digest of [`Self::same_content`]'s view of the record (hex SHA-256 of its JSON), so the
    /// database can refuse a second copy of the same content.
    pub fn content_digest(&self) -> String {
        use sha2::Digest;
        // Serialising a plain struct of strings, numbers and timestamps cannot fail.
        let json = serde_json::to_vec(&self.content()).unwrap_or_default();
        sha2::Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> serde_json::Value {
        json!({
            "id": "3f1c2b8e-0000-4000-8000-000000000001",
            "remediation_id": "rr-1",
            "signal_fingerprint": "fp",
            "processing_phases": [{ "phase": "enriching", "start_time": "2025-11-27T10:00:00Z", "end_time": "2025-11-27T10:00:01.5Z", "duration": "1.5s",
                                    "enrichmentResults": { "contextQuality": 0.9, "contextSizeBytes": 10, "contextSources": 2, "degradedMode": false } }],
            "completed_at": "2025-11-27T10:00:02Z",
            "status": "completed"
        })
    }

    #[test]
    fn emits_every_design_key_and_omits_only_empty_error_message() {
        let rec: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        let out = serde_json::to_value(&rec).unwrap();
        for key in DESIGN_KEYS {
            assert!(out.get(key).is_some(), "missing {key}");
        }
        assert!(out.get("error_message").is_none());
        assert_eq!(out["processing_phases"][0]["duration"], json!(1_500_000_000i64));
        assert!(out["processing_phases"][0].get("classificationResults").is_none());
    }

    #[test]
    fn accepts_nanoseconds_and_go_strings() {
        let mut v = minimal();
        v["processing_phases"][0]["duration"] = json!(1_500_000_000i64);
        let a: SignalProcessingAudit = serde_json::from_value(v).unwrap();
        let b: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn validation_names_the_field() {
        let mut rec: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        rec.confidence = Some(1.5);
        assert_eq!(rec.validate().unwrap_err().field, "confidence");
        rec.confidence = None;
        rec.id = String::new();
        assert_eq!(rec.validate().unwrap_err().field, "id");
    }

    #[test]
    fn same_content_ignores_only_provenance() {
        let a: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        let mut b = a.clone();
        b.trigger = Some(Trigger::Deletion);
        b.deleted_at = Some("2025-11-27T10:05:00Z".parse().unwrap());
        b.error_message = Some(String::new());
        assert!(a.same_content(&b));
        assert_eq!(a.content_digest(), b.content_digest());
        // A Go string and nanoseconds are the same duration.
        let mut v = minimal();
        v["processing_phases"][0]["duration"] = json!(1_500_000_000i64);
        let c: SignalProcessingAudit = serde_json::from_value(v).unwrap();
        assert!(a.same_content(&c));

        for change in [
            json!({"status": "failed"}),
            json!({"confidence": 0.5}),
            json!({"completed_at": "2025-11-27T10:00:03Z"}),
            json!({"namespace": "other"}),
            json!({"anomalies": [{"field": "confidence", "value": 5}]}),
            json!({"error_message": "boom"}),
        ] {
            let mut v = minimal();
            for (k, val) in change.as_object().unwrap() {
                v[k] = val.clone();
            }
            let d: SignalProcessingAudit = serde_json::from_value(v).unwrap();
            assert!(!a.same_content(&d), "{change}");
            assert_ne!(a.content_digest(), d.content_digest(), "{change}");
        }
        let mut e = a.clone();
        e.processing_phases[0].duration = Some(GoDuration::from_nanos(1));
        assert!(!a.same_content(&e));
    }

    #[test]
    fn times_must_lie_in_the_window() {
        let now: DateTime<Utc> = "2025-11-27T10:00:00Z".parse().unwrap();
        let w = TimeWindow::default();
        let mut rec: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        rec.processing_phases[0].start_time = Some("2025-11-27T09:59:00Z".parse().unwrap());
        rec.processing_phases[0].end_time = Some("2025-11-27T09:59:01Z".parse().unwrap());
        rec.completed_at = now;
        assert_eq!(rec.check_times(&w, now), Ok(()));
        rec.completed_at = now + chrono::Duration::minutes(5);
        assert_eq!(rec.check_times(&w, now), Ok(()), "the future bound is inclusive");

        type Breaker = fn(&mut SignalProcessingAudit, DateTime<Utc>);
        let cases: [(&str, Breaker); 5] = [
            ("completed_at", |r, _| r.completed_at = "9999-12-31T00:00:00Z".parse().unwrap()),
            ("completed_at", |r, _| r.completed_at = "0001-01-01T00:00:00Z".parse().unwrap()),
            ("completed_at", |r, now| r.completed_at = now + chrono::Duration::minutes(6)),
            ("deleted_at", |r, now| r.deleted_at = Some(now - chrono::Duration::days(401))),
            ("processing_phases[0].end_time", |r, now| {
                r.processing_phases[0].end_time = Some(now + chrono::Duration::hours(1))
            }),
        ];
        for (field, break_it) in cases {
            let mut r = rec.clone();
            r.completed_at = now;
            break_it(&mut r, now);
            assert_eq!(r.check_times(&w, now).unwrap_err().field, field);
        }
        let mut r = rec.clone();
        r.processing_phases[0].start_time = Some(now - chrono::Duration::days(400) - chrono::Duration::seconds(1));
        assert_eq!(r.check_times(&w, now).unwrap_err().field, "processing_phases[0].start_time");
    }

    #[test]
    fn anomalies_need_a_field_name() {
        let mut rec: SignalProcessingAudit = serde_json::from_value(minimal()).unwrap();
        rec.anomalies.push(Anomaly {
            field: String::new(),
            value: json!(5),
        });
        assert_eq!(rec.validate().unwrap_err().field, "anomalies[0].field");
    }

    #[test]
    fn unknown_status_is_rejected() {
        let mut v = minimal();
        v["status"] = json!("done");
        assert!(serde_json::from_value::<SignalProcessingAudit>(v).is_err());
    }
}
