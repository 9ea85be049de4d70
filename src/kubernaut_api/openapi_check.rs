//! Every event the client can build, validated against Kubernaut's Data Storage OpenAPI file —
//! the real file, read at test time (`KUBERNAUT_OPENAPI`, else
//! `shared/reference/kubernaut-data-storage-v1.openapi.yaml` in a folder above the repository).
//! The file is not part of the repository (it is Kubernaut's, not ours to copy): where it is
//! absent — a clone outside the workspace, a CI checkout without shared/ — the test says so
//! loudly and checks nothing; the test double in tests/support enforces the same rules there.
//!
//! OpenAPI 3.0 schemas are read as JSON Schema with the two differences made explicit: a
//! `nullable: true` schema also admits null, and a `discriminator` picks the one schema its
//! mapping names for the payload's `event_type` (as Kubernaut's decoder does) instead of `oneOf`.
//! Beyond the schema: every key sent must be a property the schema declares (Kubernaut's
//! decoder drops the rest), and `event_timestamp` must lie within the last 7 days.

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::event::AuditEvent;
use super::facts::CrFacts;
use super::payload::{amendment, break_glass_event_for, event_for};
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::from_cr::build_record;
use crate::audit::Trigger;
use crate::crd::SignalProcessing;

const OPENAPI_IN_SHARED: &str = "shared/reference/kubernaut-data-storage-v1.openapi.yaml";

/// `KUBERNAUT_OPENAPI`, else `shared/reference/…` in the nearest folder above the repository
/// that has it (beside a clone, or two levels up from a worktree).
fn openapi_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBERNAUT_OPENAPI") {
        return PathBuf::from(p);
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    repo.ancestors()
        .skip(1)
        .map(|dir| dir.join(OPENAPI_IN_SHARED))
        .find(|p| p.is_file())
        .unwrap_or_else(|| repo.join("..").join(OPENAPI_IN_SHARED))
}

/// OpenAPI 3.0's `nullable` as JSON Schema: `type: X` becomes `type: [X, "null"]`.
fn to_json_schema(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = m.get("type").cloned() {
                    m.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = m.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            m.values_mut().for_each(to_json_schema);
        }
        Value::Array(a) => a.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

struct Spec {
    root: Value,
}

impl Spec {
    fn load() -> Option<Self> {
        let path = openapi_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                // Straight to the process's stderr: the test harness captures eprintln! of a passing test.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                     !!! SKIPPED: Kubernaut's Data Storage OpenAPI file is not at {} ({e}).\n\
                     !!! The events audit-guard builds are NOT validated against Kubernaut's schema.\n\
                     !!! Set KUBERNAUT_OPENAPI to the file (kubernaut-data-storage-v1.openapi.yaml).\n\
                     !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
                    path.display()
                );
                return None;
            }
        };
        let mut root: Value = serde_yaml::from_str(&text).expect("the OpenAPI file parses as YAML");
        to_json_schema(&mut root);
        Some(Self { root })
    }

    fn schema(&self, name: &str) -> &Value {
        let s = &self.root["components"]["schemas"][name];
        assert!(s.is_object(), "the OpenAPI file has no schema {name}");
        s
    }

    fn properties(&self, name: &str) -> Vec<String> {
        self.schema(name)["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The schema the event's payload is decoded with: its discriminator's mapping for the
    /// payload's `event_type`.
    fn payload_schema(&self, event: &Value) -> String {
        let data = &self.schema("AuditEventRequest")["properties"]["event_data"];
        let prop = data["discriminator"]["propertyName"]
            .as_str()
            .expect("event_data has a discriminator");
        let value = event["event_data"][prop].as_str().unwrap_or_default();
        let target = data["discriminator"]["mapping"][value]
            .as_str()
            .unwrap_or_else(|| panic!("the discriminator maps no schema for {prop} {value:?} (Kubernaut answers 400)"));
        target.rsplit('/').next().unwrap_or_default().to_string()
    }

    /// Every violation of the schema and of the rules beyond it; empty when Kubernaut takes the event.
    fn violations(&self, event: &Value, now: DateTime<Utc>) -> Vec<String> {
        let payload = self.payload_schema(event);
        let mut request = self.schema("AuditEventRequest").clone();
        request["properties"]["event_data"] = json!({ "$ref": format!("#/components/schemas/{payload}") });
        let schema = json!({ "allOf": [request], "components": self.root["components"] });
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the OpenAPI schema compiles");
        let mut out: Vec<String> = validator
            .iter_errors(event)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        let envelope = self.properties("AuditEventRequest");
        let fields = self.properties(&payload);
        for key in event.as_object().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
            if !envelope.contains(key) {
                out.push(format!("{key}: not a field of AuditEventRequest (dropped by Kubernaut)"));
            }
        }
        for key in event["event_data"]
            .as_object()
            .map(|m| m.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !fields.contains(key) {
                out.push(format!("event_data.{key}: not a field of {payload} (dropped by Kubernaut)"));
            }
        }
        match event["event_timestamp"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
            Some(t) if t >= now - Duration::days(7) && t <= now + Duration::minutes(5) => {}
            other => out.push(format!("event_timestamp {other:?} is outside Kubernaut's 7-day window")),
        }
        out
    }
}

fn cr(f: impl Fn(&mut Value)) -> SignalProcessing {
    let mut v: Value = serde_json::from_str(include_str!("../../tests/fixtures/kubernaut-today.json")).expect("fixture");
    v["metadata"] = json!({ "name": "sp-1", "namespace": "prod", "uid": "6f1c2a0e-0000-4000-8000-000000000001" });
    f(&mut v);
    serde_json::from_value(v).expect("a SignalProcessing")
}

fn days_ago(now: DateTime<Utc>, d: i64) -> String {
    (now - Duration::days(d)).to_rfc3339()
}

/// Every kind of event the client builds, from CRs of every shape it meets, written `now`.
fn events_built(now: DateTime<Utc>) -> Vec<(&'static str, Value)> {
    let recent = days_ago(now, 1);
    let moved = |v: &mut Value| {
        let text = v.to_string().replace("2025-11-27T", &recent[..11]);
        *v = serde_json::from_str(&text).expect("json");
    };
    let completed = cr(moved);
    let failed = cr(|v| {
        moved(v);
        v["status"]["phase"] = json!("Failed");
        v["status"]["failureInfo"]["error"] = json!("enrichment timed out");
    });
    let pending = cr(|v| {
        v.as_object_mut().map(|o| o.remove("status"));
    });
    let old = cr(|v| {
        let text = v.to_string().replace("2025-11-27T", &days_ago(now, 8)[..11]);
        *v = serde_json::from_str(&text).expect("json");
    });
    let anomalous = cr(|v| {
        moved(v);
        v["status"]["phase"] = json!("Classifying");
        v["status"]["environmentClassification"] =
            json!({ "environment": "Test", "confidence": 5, "classifiedAt": "9999-01-01T00:00:00Z", "source": "?" });
        v["status"]["priorityAssignment"]["priority"] = json!("P9");
        v["status"]["businessClassification"]["criticality"] = json!("Medium");
        v["status"]["signalClassification"] = json!({ "severity": "Sev1", "signalMode": "predictive", "policyHash": "abc" });
        v["status"]["startTime"] = json!("1999-01-01T00:00:00Z");
    });
    let unknown_phase = cr(|v| {
        moved(v);
        v["status"]["phase"] = json!("Validating");
    });
    let deleting = |sp: &SignalProcessing| {
        let mut sp = sp.clone();
        sp.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        sp
    };
    let built = |sp: &SignalProcessing, trigger: Trigger| event_for(&build_record(sp, trigger, now), &CrFacts::of(sp), now);
    let sent = |ev: &AuditEvent| serde_json::to_value(ev).expect("an event is JSON");
    let at_deletion = built(&deleting(&completed), Trigger::Deletion);
    let mut cases: Vec<(&str, Value)> = vec![
        ("completed, at completion", sent(&built(&completed, Trigger::Completion))),
        ("completed, at deletion", sent(&at_deletion)),
        ("failed", sent(&built(&failed, Trigger::Completion))),
        (
            "incomplete (Pending, no status)",
            sent(&built(&deleting(&pending), Trigger::Deletion)),
        ),
        ("forced", sent(&built(&deleting(&completed), Trigger::Forced))),
        ("forced, no status", sent(&built(&deleting(&pending), Trigger::Forced))),
        ("anomalous", sent(&built(&deleting(&anomalous), Trigger::Deletion))),
        ("unknown phase", sent(&built(&deleting(&unknown_phase), Trigger::Deletion))),
        ("completed 8 days ago", sent(&built(&deleting(&old), Trigger::Deletion))),
    ];
    let mut existing = at_deletion.clone();
    existing.event_id = Some("0b7c5a4e-8f55-4f53-9d0c-0d2f7e3f1a11".into());
    existing.event_timestamp = days_ago(now, 2);
    cases.push(("an amendment", sent(&amendment(at_deletion, &existing))));
    let bg = BreakGlassEvent {
        id: "review-1".into(),
        user: "bob".into(),
        groups: vec!["audit-guard:break-glass".into()],
        extra: Default::default(),
        namespace: "prod".into(),
        name: "sp-1".into(),
        uid: "6f1c2a0e-0000-4000-8000-000000000001".into(),
        at: now,
        confirmed: None,
    };
    let removed = deleting(&pending);
    cases.push((
        "break-glass",
        sent(&break_glass_event_for(
            &bg,
            &build_record(&removed, Trigger::Forced, now),
            &CrFacts::of(&removed),
        )),
    ));
    cases
}

#[test]
fn every_event_the_client_builds_is_one_kubernauts_data_storage_accepts() {
    let Some(spec) = Spec::load() else { return };
    let now = Utc::now();
    let cases = events_built(now);
    let mut failures = Vec::new();
    for (name, event) in &cases {
        for v in spec.violations(event, now) {
            failures.push(format!("{name}: {v}\n  in {event}"));
        }
    }
    assert!(
        failures.is_empty(),
        "events Kubernaut would refuse or prune:\n{}",
        failures.join("\n")
    );

    // The check can fail: what the old client sent (phase null, the record under audit_record,
    // a timestamp 8 days old) is refused on every count.
    let mut old_style = cases[0].1.clone();
    old_style["event_data"]["phase"] = Value::Null;
    old_style["event_data"]["audit_record"] = json!({ "id": "x" });
    old_style["event_timestamp"] = json!(days_ago(now, 8));
    let v = spec.violations(&old_style, now);
    for what in ["/event_data/phase", "event_data.audit_record", "7-day window"] {
        assert!(v.iter().any(|x| x.contains(what)), "{what} not caught: {v:?}");
    }
}

/// The backticked names in the first cell of each row of the table under `### {heading}` in the
/// events section of docs/audit-mapping.md.
fn documented(doc: &str, heading: &str) -> BTreeSet<String> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("In Kubernaut's unified events API"))
        .expect("docs/audit-mapping.md has the events section");
    let table = section
        .split("\n### ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("the events section has no ### {heading}"));
    table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .skip(1)
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// docs/audit-mapping.md lists, field by field, what the events mode
/// stores — every key of every event the client builds has its row, and (with Kubernaut's
/// OpenAPI file) every field the payload schema has is either mapped or said never to be sent,
/// and no row names a field the schema does not have.
#[test]
fn the_mapping_doc_lists_every_field_the_events_mode_stores() {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/audit-mapping.md")).expect("docs/audit-mapping.md");
    let envelope = documented(&doc, "Envelope");
    let payload = documented(&doc, "Payload");
    let mut missing = BTreeSet::new();
    for (name, event) in events_built(Utc::now()) {
        for key in event.as_object().into_iter().flat_map(|m| m.keys()) {
            if !envelope.contains(key) {
                missing.insert(format!("{key} (envelope, sent in {name})"));
            }
        }
        for key in event["event_data"].as_object().into_iter().flat_map(|m| m.keys()) {
            if !payload.contains(key) {
                missing.insert(format!("event_data.{key} (sent in {name})"));
            }
        }
    }
    assert!(missing.is_empty(), "sent but not in docs/audit-mapping.md: {missing:?}");
    let Some(spec) = Spec::load() else { return };
    let fields: BTreeSet<String> = spec.properties("SignalProcessingAuditPayload").into_iter().collect();
    let undocumented: Vec<&String> = fields.difference(&payload).collect();
    assert!(
        undocumented.is_empty(),
        "payload fields the doc does not account for: {undocumented:?}"
    );
    let invented: Vec<&String> = payload.difference(&fields).collect();
    assert!(
        invented.is_empty(),
        "the doc's payload table names fields the schema lacks: {invented:?}"
    );
    let request: BTreeSet<String> = spec.properties("AuditEventRequest").into_iter().collect();
    let invented: Vec<&String> = envelope.difference(&request).collect();
    assert!(
        invented.is_empty(),
        "the doc's envelope table names fields the request lacks: {invented:?}"
    );
}

/// The events built from the fixtures at a fixed time, as the client sends them, kept in
/// tests/fixtures: the bytes on the wire (key order aside) change only on purpose. Written
/// afresh with `AUDIT_GUARD_WRITE_GOLDEN=1`.
#[test]
fn the_events_sent_are_the_recorded_ones() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubernaut-events.golden.json");
    let now: DateTime<Utc> = "2026-01-10T12:00:00Z".parse().expect("time");
    let mut built = events_built(now);
    let every_fact = cr(|v| {
        v["status"]["signalClassification"]["policyHash"] = json!("0123456789abcdef".repeat(4));
        v["status"]["signalClassification"]["signalMode"] = json!("proactive");
        v["status"]["signalClassification"]["sourceSignalName"] = json!("PredictedOOMKill");
    });
    let every_fact = event_for(&build_record(&every_fact, Trigger::Completion, now), &CrFacts::of(&every_fact), now);
    built.push(("every fact", serde_json::to_value(every_fact).expect("json")));
    let got: serde_json::Map<String, Value> = built
        .into_iter()
        .map(|(name, ev)| (name.to_string(), serde_json::to_value(ev).expect("an event is JSON")))
        .collect();
    if std::env::var_os("AUDIT_GUARD_WRITE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&got).expect("json") + "\n";
        std::fs::write(&path, text).expect("write the golden file");
    }
    let want: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the golden file")).expect("the golden file is JSON");
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (name, ev) in &got {
        assert_eq!(Some(ev), want.get(name), "{name}");
    }
}
