//! The controller's decisions as plain functions over plain data.
use chrono::{DateTime, Utc};
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, TestOperation};
use serde_json::Value;

use crate::crd::{json_pointer, SignalProcessing, ANNOTATION_PERSISTED_AT, ANNOTATION_RECORD_ID, FINALIZER};

/// What one reconcile of a SignalProcessing should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Not being deleted and our finalizer is missing: add it.
    AddFinalizer,
    /// Finished (Completed/Failed), saying when, and not yet handed to the writer by this process.
    EnqueueRecord,
    /// Being deleted with our finalizer on: store the record, then remove the finalizer.
    PersistAndRelease,
    Nothing,
}

/// A finished CR that does not say when it finished is left to the deletion path: a record
/// written now would carry a completed_at of now, differ from the deletion-time record, and
/// raise a false conflict.
pub fn decide(sp: &SignalProcessing, already_enqueued: bool, now: DateTime<Utc>) -> Action {
    use crate::audit::from_cr::finished_at;
    match (sp.is_deleting(), sp.has_finalizer()) {
        (true, true) => Action::PersistAndRelease,
        (true, false) => Action::Nothing,
        (false, false) => Action::AddFinalizer,
        (false, true) if sp.is_terminal() && !already_enqueued && finished_at(sp, now).is_some() => Action::EnqueueRecord,
        (false, true) => Action::Nothing,
    }
}

/// JSON Patch that removes our finalizer at its index (testing that it is still there, so
/// another party's finalizer is never removed) and records where the audit record went.
/// None when the finalizer is not present.
pub fn release_patch(sp: &SignalProcessing, record_id: &str, persisted_at: DateTime<Utc>) -> Option<Patch> {
    let index = sp.metadata.finalizers.as_deref()?.iter().position(|f| f == FINALIZER)?;
    let path = format!("/metadata/finalizers/{index}");
    let mut ops = vec![
        PatchOperation::Test(TestOperation {
            path: json_pointer(&path),
            value: Value::from(FINALIZER),
        }),
        PatchOperation::Remove(RemoveOperation { path: json_pointer(&path) }),
    ];
    if sp.metadata.annotations.is_none() {
        ops.push(PatchOperation::Add(AddOperation {
            path: json_pointer("/metadata/annotations"),
            value: Value::Object(Default::default()),
        }));
    }
    let persisted = persisted_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (key, value) in [(ANNOTATION_RECORD_ID, record_id.to_string()), (ANNOTATION_PERSISTED_AT, persisted)] {
        ops.push(PatchOperation::Add(AddOperation {
            path: json_pointer(&format!("/metadata/annotations/{}", escape(key))),
            value: Value::from(value),
        }));
    }
    Some(Patch(ops))
}

/// RFC 6901 escaping of one path segment.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Number of CRs waiting in deletion on their audit and the age of the oldest, in seconds.
pub fn waiting_summary(deletion_times: impl IntoIterator<Item = DateTime<Utc>>, now: DateTime<Utc>) -> (i64, i64) {
    let mut count = 0;
    let mut oldest = 0;
    for t in deletion_times {
        count += 1;
        oldest = oldest.max(now.signed_duration_since(t).num_seconds().max(0));
    }
    (count, oldest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::test_support::sp;
    use crate::crd::{add_finalizer_patch, ListGuard};
    use serde_json::json;

    fn apply(obj: &SignalProcessing, patch: &Patch) -> Result<Value, json_patch::PatchError> {
        let mut doc = serde_json::to_value(obj).unwrap();
        json_patch::patch(&mut doc, patch).map(|_| doc)
    }

    #[test]
    fn decisions() {
        let now: DateTime<Utc> = "2025-01-02T00:00:00Z".parse().unwrap();
        let finished = |phase: &str, meta: Value| {
            let mut o = sp(meta, Some(phase));
            o.status.as_mut().unwrap().completion_time = Some("2025-01-01T00:00:00Z".parse().unwrap());
            o
        };
        let deleting = json!({ "name": "a", "deletionTimestamp": "2025-01-01T00:00:00Z", "finalizers": [FINALIZER] });
        let gone = json!({ "name": "a", "deletionTimestamp": "2025-01-01T00:00:00Z", "finalizers": ["other"] });
        let with = json!({ "name": "a", "finalizers": [FINALIZER] });
        let cases: Vec<(&str, SignalProcessing, bool, Action)> = vec![
            ("deleting, ours on", sp(deleting, None), false, Action::PersistAndRelease),
            ("deleting, ours off", sp(gone, Some("Completed")), false, Action::Nothing),
            ("live, ours missing", sp(json!({ "name": "a" }), None), false, Action::AddFinalizer),
            ("completed", finished("Completed", with.clone()), false, Action::EnqueueRecord),
            ("failed", finished("Failed", with.clone()), false, Action::EnqueueRecord),
            ("already enqueued", finished("Completed", with.clone()), true, Action::Nothing),
            ("still running", sp(with.clone(), Some("Enriching")), false, Action::Nothing),
            // Says it completed but not when: its record would depend on when it is built.
            ("completed, no time", sp(with, Some("Completed")), false, Action::Nothing),
        ];
        for (name, obj, enqueued, want) in cases {
            assert_eq!(decide(&obj, enqueued, now), want, "{name}");
        }
    }

    #[test]
    fn add_finalizer_keeps_others_and_handles_absent_list() {
        let none = sp(json!({ "name": "a" }), None);
        let out = apply(&none, &add_finalizer_patch(None, ListGuard::TestFirst)).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
        let some = sp(json!({ "name": "a", "finalizers": ["x"] }), None);
        let out = apply(&some, &add_finalizer_patch(Some(&["x".to_string()]), ListGuard::TestFirst)).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["x", FINALIZER]));
        // The list changed since we read it: the test op fails instead of clobbering.
        assert!(apply(&some, &add_finalizer_patch(Some(&[]), ListGuard::TestFirst)).is_err());
    }

    #[test]
    fn release_removes_only_ours_and_sets_annotations() {
        let at: DateTime<Utc> = "2025-11-27T10:00:00Z".parse().unwrap();
        let obj = sp(json!({ "name": "a", "finalizers": ["x", FINALIZER, "y"] }), None);
        let patch = release_patch(&obj, "uid-1", at).unwrap();
        let out = apply(&obj, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(out["metadata"]["annotations"][ANNOTATION_RECORD_ID], "uid-1");
        assert_eq!(out["metadata"]["annotations"][ANNOTATION_PERSISTED_AT], "2025-11-27T10:00:00Z");
        assert!(serde_json::to_string(&patch).unwrap().contains("audit.kubernaut.ai~1record-id"));

        let annotated = sp(json!({ "name": "a", "finalizers": [FINALIZER], "annotations": { "k": "v" } }), None);
        let out = apply(&annotated, &release_patch(&annotated, "u", at).unwrap()).unwrap();
        assert_eq!(out["metadata"]["annotations"]["k"], "v");
        assert!(out["metadata"]["finalizers"].as_array().unwrap().is_empty());

        // Someone reordered the list since we read it: the patch fails rather than remove theirs.
        let moved = sp(json!({ "name": "a", "finalizers": ["x", "y"] }), None);
        assert!(apply(&moved, &patch).is_err());
        assert!(release_patch(&moved, "u", at).is_none());
    }

    #[test]
    fn waiting() {
        let now: DateTime<Utc> = "2025-11-28T12:00:00Z".parse().unwrap();
        let times = ["2025-11-28T11:59:00Z", "2025-11-28T11:00:00Z"].map(|t| t.parse().unwrap());
        assert_eq!(waiting_summary(times, now), (2, 3600));
        assert_eq!(waiting_summary([], now), (0, 0));
    }
}
