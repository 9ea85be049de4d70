//! The JSON bodies that both audit-guard's Data Storage client and the Data Storage server
//! read or write: one serde type per format, so the two ends cannot drift apart. Neither
//! side's internals are imported here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The batch endpoint's answer for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchResult {
    Created,
    /// The same content was already stored under this id.
    Exists,
    /// Different content is stored under this id; the batch did not store this record.
    Conflict,
}

/// One element of the batch endpoint's answer (a JSON array of these, in the posted order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    pub id: String,
    pub result: BatchResult,
    /// A conflict whose original is gone while its id stays taken (blocked, see the server).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
}

/// The extension members of a 409 answer: whether what is stored under the id says the same
/// as what was posted, and what is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Duplicate {
    pub identical: bool,
    #[serde(default)]
    pub existing: Value,
}

/// The body of a break-glass claim confirmation: the SignalProcessing uid whose finalizer was
/// seen removed by someone other than the controller, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovalObserved {
    pub uid: String,
    pub observed_at: DateTime<Utc>,
}

/// What a 409 to a claim confirmation holds under `existing`: the ids of the claims that
/// name the same object (none of them confirmed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmbiguousClaims {
    #[serde(default)]
    pub ambiguous: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batch_items_round_trip_and_blocked_is_written_only_when_set() {
        let plain = BatchItem {
            id: "a".into(),
            result: BatchResult::Exists,
            blocked: false,
        };
        assert_eq!(serde_json::to_value(&plain).unwrap(), json!({"id": "a", "result": "exists"}));
        let blocked = BatchItem {
            result: BatchResult::Conflict,
            blocked: true,
            ..plain.clone()
        };
        let v = serde_json::to_value(&blocked).unwrap();
        assert_eq!(v, json!({"id": "a", "result": "conflict", "blocked": true}));
        assert_eq!(serde_json::from_value::<BatchItem>(v).unwrap(), blocked);
        assert!(serde_json::from_value::<BatchItem>(json!({"id": "a", "result": "maybe"})).is_err());
    }

    #[test]
    fn a_duplicate_must_say_whether_it_is_identical() {
        let d: Duplicate = serde_json::from_value(json!({"status": 409, "identical": true})).unwrap();
        assert_eq!(
            d,
            Duplicate {
                identical: true,
                existing: Value::Null
            }
        );
        for bad in [json!({"existing": {}}), json!({"identical": null}), json!({"identical": "yes"})] {
            assert!(serde_json::from_value::<Duplicate>(bad.clone()).is_err(), "{bad}");
        }
    }
}
