//! Same id, different content is never "stored": when Data Storage holds a different record
//! under a CR's uid (planted, or written from a CR that changed since), audit-guard stores
//! its own record as an amendment linked to the first, and says what differs. Both records
//! stay in Data Storage; the caller alarms (metric, Event) and only then releases the CR.

use serde_json::Value;

use crate::audit::SignalProcessingAudit;
use crate::client::{ClientError, Stored};
use crate::group_commit::GroupCommit;
use crate::sink::RecordSink;

/// Keys that say where a record came from rather than what it says; Data Storage compares
/// records without them (a completion-time and a deletion-time record of one CR match).
pub const PROVENANCE_KEYS: &[&str] = &["trigger", "deleted_at"];

/// How a record came to be held by Data Storage.
#[derive(Debug, Clone, PartialEq)]
pub enum Persisted {
    /// Created now, or the same content was already there.
    Stored,
    /// A different record holds the id; ours is stored as its amendment (`new`: now, rather
    /// than by an earlier attempt). `differing` names the keys that differ.
    Amended { differing: Vec<String>, new: bool },
}

/// Stores `record` (through `group`, the deletion path's group commit, when given); on a
/// conflict, stores it as an amendment of what is there. The span names
/// the record, so the Data Storage requests made for it (and their retries) can be followed.
#[tracing::instrument(
    name = "persist",
    skip_all,
    fields(
        id = %record.id,
        namespace = record.namespace.as_deref().unwrap_or_default(),
        name = record.name.as_deref().unwrap_or_default(),
        trigger = ?record.trigger,
    )
)]
pub async fn persist(ds: &dyn RecordSink, group: Option<&GroupCommit>, record: &SignalProcessingAudit) -> Result<Persisted, ClientError> {
    let first = match group {
        Some(group) => group.store(record).await?,
        None => ds.store_one(record).await?,
    };
    match first {
        Stored::Created | Stored::AlreadyStored => Ok(Persisted::Stored),
        Stored::Conflict { existing } => {
            let differing = ds.differing(&existing, record);
            let new = ds.amend(record).await? == Stored::Created;
            Ok(Persisted::Amended { differing, new })
        }
    }
}

/// The top-level keys whose values differ between the stored record and ours (provenance
/// keys aside), compared in the record's normal form so that encodings (a duration as a Go
/// string or as nanoseconds, `Z` or `+00:00`) do not count as differences.
pub fn differing_fields(existing: &Value, ours: &SignalProcessingAudit) -> Vec<String> {
    let normal = |v: &Value| {
        serde_json::from_value::<SignalProcessingAudit>(v.clone())
            .ok()
            .and_then(|r| serde_json::to_value(r).ok())
    };
    let (Some(Value::Object(theirs)), Ok(Value::Object(mine))) = (normal(existing), serde_json::to_value(ours)) else {
        return vec!["(the stored record is not a SignalProcessing audit record)".into()];
    };
    let mut keys: Vec<String> = theirs
        .keys()
        .chain(mine.keys())
        .filter(|k| !PROVENANCE_KEYS.contains(&k.as_str()))
        .filter(|k| theirs.get(*k) != mine.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours() -> SignalProcessingAudit {
        serde_json::from_value(json!({
            "id": "u-1", "remediation_id": "rr", "signal_fingerprint": "fp",
            "processing_phases": [{ "phase": "enriching", "duration": 1_500_000_000i64 }],
            "completed_at": "2025-11-27T10:00:02Z", "status": "completed", "confidence": 0.9,
            "trigger": "deletion", "deleted_at": "2025-11-27T11:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn names_what_differs_and_ignores_provenance_and_encoding() {
        let base = serde_json::to_value(ours()).unwrap();
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            ("same", base.clone(), vec![]),
            (
                "other provenance",
                with(&|v| {
                    v["trigger"] = json!("completion");
                    v["deleted_at"] = Value::Null;
                }),
                vec![],
            ),
            (
                "other encodings",
                with(&|v| {
                    v["processing_phases"][0]["duration"] = json!("1.5s");
                    v["completed_at"] = json!("2025-11-27T10:00:02+00:00");
                }),
                vec![],
            ),
            (
                "forged status and confidence",
                with(&|v| {
                    v["status"] = json!("failed");
                    v["confidence"] = json!(0.1);
                }),
                vec!["confidence", "status"],
            ),
            (
                "a key only one side has",
                with(&|v| v["environment"] = json!("production")),
                vec!["environment"],
            ),
            (
                "not a record",
                json!({ "hello": "world" }),
                vec!["(the stored record is not a SignalProcessing audit record)"],
            ),
        ];
        for (name, existing, want) in cases {
            assert_eq!(differing_fields(&existing, &ours()), want, "{name}");
        }
    }
}
