//! Which stored event is a CR's record, and is it ours? The events API is not idempotent and
//! has no ids of the caller's choosing, so before writing, audit-guard reads the events of the
//! CR's remediation and looks for one about the CR (its uid as `resource_id`, not a break-glass
//! event). "Conflict ≠ stored": only an event with the same content counts as our record; one
//! with other content is a conflict (audit-guard then stores its own, linked to it).

use serde_json::{Map, Value};

use super::event::AuditEvent;
use super::payload::{BREAK_GLASS_ACTION, EVENT_TYPE};

/// What the stored events say about a CR's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// No event for the CR.
    Nothing,
    /// An event with our content (the original, or our amendment of another).
    Same,
    /// Events for the CR, none with our content; the first one written.
    Different(Box<AuditEvent>),
}

/// Whether `ev` is a record event of the CR `uid` (not a break-glass event, not another type).
pub fn is_about(ev: &AuditEvent, uid: &str) -> bool {
    ev.resource_id.as_deref() == Some(uid) && ev.event_type == EVENT_TYPE && ev.event_action != BREAK_GLASS_ACTION
}

/// The record events of the CR `uid` (see [`is_about`]) among `events` as the query API
/// answered them. Only the events whose `resource_id` is `uid` are decoded: one about another
/// object, in whatever form, cannot be this CR's record. Err names an event of the CR that is
/// not an event as Kubernaut's schema defines it (the API validates what it stores, so only a
/// schema this client does not know yet can produce one): what it says cannot be compared, so
/// nothing is to be written until it can be.
pub fn record_events(events: &[Value], uid: &str) -> Result<Vec<AuditEvent>, String> {
    let mut out = Vec::new();
    for raw in events
        .iter()
        .filter(|ev| ev.get("resource_id").and_then(Value::as_str) == Some(uid))
    {
        let ev: AuditEvent = serde_json::from_value(raw.clone()).map_err(|e| {
            let id = raw.get("event_id").and_then(Value::as_str).unwrap_or("(no event_id)");
            format!("event {id} of {uid} is not one Kubernaut's schema defines: {e}")
        })?;
        if is_about(&ev, uid) {
            out.push(ev);
        }
    }
    Ok(out)
}

/// The envelope fields that are the record's content, by name. Not `event_timestamp` (the
/// write time), not `version`, not the parent fields (an amendment says what it amends, not
/// something else).
fn content(ev: &AuditEvent) -> [(&'static str, Value); 8] {
    let v = |x: Option<&str>| x.map_or(Value::Null, |s| Value::String(s.to_string()));
    [
        ("event_action", v(Some(&ev.event_action))),
        ("event_outcome", serde_json::to_value(ev.event_outcome).unwrap_or_default()),
        ("actor_type", v(ev.actor_type.as_deref())),
        ("actor_id", v(ev.actor_id.as_deref())),
        ("resource_type", v(ev.resource_type.as_deref())),
        ("correlation_id", v(Some(&ev.correlation_id))),
        ("namespace", v(ev.namespace.as_deref())),
        ("error_message", v(ev.error_message.as_deref())),
    ]
}

/// The payload as sent: its present fields by name.
fn payload_fields(ev: &AuditEvent) -> Map<String, Value> {
    match serde_json::to_value(&ev.event_data) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The keys (`event_data.<key>` for the payload) whose values differ between two events.
pub fn differing_keys(stored: &AuditEvent, ours: &AuditEvent) -> Vec<String> {
    let mut keys: Vec<String> = content(stored)
        .into_iter()
        .zip(content(ours))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((k, _), _)| k.to_string())
        .collect();
    let (a, b) = (payload_fields(stored), payload_fields(ours));
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
pub fn find_record(events: &[AuditEvent], ours: &AuditEvent) -> Found {
    let uid = ours.resource_id.as_deref().unwrap_or_default();
    let mut about: Vec<&AuditEvent> = events.iter().filter(|ev| is_about(ev, uid)).collect();
    if about.iter().any(|ev| differing_keys(ev, ours).is_empty()) {
        return Found::Same;
    }
    // The original is the one that amends nothing; among several, the earliest.
    about.sort_by_key(|ev| (ev.parent_event_id.is_some(), ev.event_timestamp.clone()));
    match about.first() {
        Some(ev) => Found::Different(Box::new((*ev).clone())),
        None => Found::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours() -> AuditEvent {
        serde_json::from_value(ours_sent()).unwrap()
    }

    fn ours_sent() -> Value {
        json!({
            "version": "1.0", "event_type": EVENT_TYPE, "event_timestamp": "2026-01-02T00:00:00.000Z",
            "event_category": "signalprocessing", "event_action": "completed", "event_outcome": "success",
            "actor_type": "service", "actor_id": "audit-guard", "resource_type": "SignalProcessing",
            "resource_id": "u-1", "correlation_id": "rr-1", "namespace": "prod",
            "event_data": { "event_type": EVENT_TYPE, "phase": "Completed", "signal": "HighMemory", "priority": "P1" }
        })
    }

    fn stored(f: impl Fn(&mut Value)) -> AuditEvent {
        let mut v = ours_sent();
        v["event_id"] = json!("e-1");
        v["event_timestamp"] = json!("2026-01-01T00:00:00Z");
        v["event_data"]["severity"] = Value::Null;
        f(&mut v);
        serde_json::from_value(v).unwrap()
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
        let cases: Vec<(&str, Vec<AuditEvent>, Found)> = vec![
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
                Found::Different(Box::new(other_priority.clone())),
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
        assert_eq!(got, Found::Different(Box::new(first)));
    }
    #[test]
    fn only_the_crs_own_events_are_read_and_they_must_be_readable() {
        let sent = |f: &dyn Fn(&mut Value)| {
            let mut v = ours_sent();
            v["event_id"] = json!("e-1");
            f(&mut v);
            v
        };
        let other_object = sent(&|v| {
            v["resource_id"] = json!("sp-1");
            v["event_data"]["phase"] = json!("Validating");
        });
        let break_glass = sent(&|v| v["event_action"] = json!(BREAK_GLASS_ACTION));
        let ours_stored = sent(&|_| {});
        let read = record_events(&[other_object.clone(), break_glass, ours_stored], "u-1").unwrap();
        assert_eq!(
            read.len(),
            1,
            "another object's event, whatever it holds, and a break-glass event are not read"
        );
        assert_eq!(read[0].event_id.as_deref(), Some("e-1"));
        let unreadable = sent(&|v| v["event_data"]["phase"] = json!("Validating"));
        let e = record_events(&[other_object, unreadable], "u-1").unwrap_err();
        assert!(e.contains("e-1") && e.contains("Validating"), "{e}");
    }
}
