//! Which stored event is a CR's record, and is it ours? The events API is not idempotent and
//! has no ids of the caller's choosing, so before writing, audit-guard reads the events of the
//! CR's remediation and looks for one about the CR (its uid as `resource_id`, not a break-glass
//! event). "Conflict ≠ stored": only an event with the same content counts as our record; one
//! with other content is a conflict (audit-guard then stores its own, linked to it).

use serde_json::{Map, Value};

use super::payload::{BREAK_GLASS_ACTION, EVENT_TYPE};

/// Envelope fields that are the record's content. Not `event_timestamp` (the write time), not
/// `version`, not the parent fields (an amendment says what it amends, not something else).
const CONTENT_FIELDS: &[&str] = &[
    "event_action",
    "event_outcome",
    "actor_type",
    "actor_id",
    "resource_type",
    "correlation_id",
    "namespace",
    "error_message",
];

/// What the stored events say about a CR's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// No event for the CR.
    Nothing,
    /// An event with our content (the original, or our amendment of another).
    Same,
    /// Events for the CR, none with our content; the first one written.
    Different(Value),
}

/// Whether `ev` is a record event of the CR `uid` (not a break-glass event, not another type).
pub fn is_about(ev: &Value, uid: &str) -> bool {
    ev.get("resource_id").and_then(Value::as_str) == Some(uid)
        && ev.get("event_type").and_then(Value::as_str) == Some(EVENT_TYPE)
        && ev.get("event_action").and_then(Value::as_str) != Some(BREAK_GLASS_ACTION)
}

/// A JSON object without its null members (Kubernaut may send back null where nothing was sent).
fn without_nulls(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The keys (`event_data.<key>` for the payload) whose values differ between two events.
pub fn differing_keys(stored: &Value, ours: &Value) -> Vec<String> {
    let field = |ev: &Value, k: &str| ev.get(k).filter(|v| !v.is_null()).cloned();
    let mut keys: Vec<String> = CONTENT_FIELDS
        .iter()
        .filter(|k| field(stored, k) != field(ours, k))
        .map(|k| k.to_string())
        .collect();
    let (a, b) = (without_nulls(stored.get("event_data")), without_nulls(ours.get("event_data")));
    let mut data: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("event_data.{k}"))
        .collect();
    data.sort();
    data.dedup();
    keys.extend(data);
    keys
}

/// What `events` (those of the CR's remediation) hold of the record `ours`.
pub fn find_record(events: &[Value], ours: &Value) -> Found {
    let uid = ours.get("resource_id").and_then(Value::as_str).unwrap_or_default();
    let mut about: Vec<&Value> = events.iter().filter(|ev| is_about(ev, uid)).collect();
    if about.iter().any(|ev| differing_keys(ev, ours).is_empty()) {
        return Found::Same;
    }
    // The original is the one that amends nothing; among several, the earliest.
    about.sort_by_key(|ev| {
        (
            ev.get("parent_event_id").is_some_and(|p| !p.is_null()),
            ev.get("event_timestamp").and_then(Value::as_str).unwrap_or_default().to_string(),
        )
    });
    match about.first() {
        Some(ev) => Found::Different((*ev).clone()),
        None => Found::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours() -> Value {
        json!({
            "version": "1.0", "event_type": EVENT_TYPE, "event_timestamp": "2026-01-02T00:00:00.000Z",
            "event_category": "signalprocessing", "event_action": "completed", "event_outcome": "success",
            "actor_type": "service", "actor_id": "audit-guard", "resource_type": "SignalProcessing",
            "resource_id": "u-1", "correlation_id": "rr-1", "namespace": "prod",
            "event_data": { "event_type": EVENT_TYPE, "phase": "Completed", "signal": "HighMemory", "priority": "P1" }
        })
    }

    fn stored(f: impl Fn(&mut Value)) -> Value {
        let mut v = ours();
        v["event_id"] = json!("e-1");
        v["event_timestamp"] = json!("2026-01-01T00:00:00Z");
        v["event_data"]["severity"] = Value::Null;
        f(&mut v);
        v
    }

    #[test]
    fn only_the_same_content_is_our_record() {
        let kubernauts = stored(|v| {
            v["resource_id"] = json!("sp-1");
            v["actor_id"] = json!("signalprocessing-controller");
            v["event_action"] = json!("processed");
        });
        let break_glass = stored(|v| {
            v["event_action"] = json!(BREAK_GLASS_ACTION);
            v["actor_id"] = json!("bob");
        });
        let other_priority = stored(|v| v["event_data"]["priority"] = json!("P3"));
        let our_amendment = stored(|v| {
            v["event_id"] = json!("e-2");
            v["parent_event_id"] = json!("e-1");
        });
        let cases: Vec<(&str, Vec<Value>, Found)> = vec![
            ("none", vec![], Found::Nothing),
            (
                "Kubernaut's own and a break-glass event are not the record",
                vec![kubernauts.clone(), break_glass.clone()],
                Found::Nothing,
            ),
            (
                "same content, another write time, nulls sent back",
                vec![kubernauts, stored(|_| {})],
                Found::Same,
            ),
            (
                "other content",
                vec![other_priority.clone()],
                Found::Different(other_priority.clone()),
            ),
            (
                "other content and our amendment of it",
                vec![our_amendment.clone(), other_priority.clone()],
                Found::Same,
            ),
        ];
        for (name, events, want) in cases {
            assert_eq!(find_record(&events, &ours()), want, "{name}");
        }
        assert_eq!(differing_keys(&other_priority, &ours()), vec!["event_data.priority"]);
        let forced = stored(|v| {
            v["event_action"] = json!("forced");
            v["event_data"]["phase"] = json!("Enriching");
        });
        assert_eq!(differing_keys(&forced, &ours()), vec!["event_action", "event_data.phase"]);
    }

    #[test]
    fn the_original_is_the_earliest_event_that_amends_nothing() {
        let later = stored(|v| {
            v["event_id"] = json!("e-3");
            v["event_timestamp"] = json!("2026-01-01T05:00:00Z");
            v["event_data"]["priority"] = json!("P2");
        });
        let amendment = stored(|v| {
            v["event_id"] = json!("e-0");
            v["event_timestamp"] = json!("2025-12-01T00:00:00Z");
            v["parent_event_id"] = json!("e-9");
            v["event_data"]["priority"] = json!("P4");
        });
        let first = stored(|v| v["event_data"]["priority"] = json!("P3"));
        let got = find_record(&[later, amendment, first.clone()], &ours());
        assert_eq!(got, Found::Different(first));
    }
}
