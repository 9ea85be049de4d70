//! The controller's decisions as plain functions over plain data.
use chrono::{DateTime, Utc};
use json_patch::Patch;

use crate::crd::{
    SignalProcessing, ANNOTATION_LOG_INDEX, ANNOTATION_LOG_RECORD_ID, ANNOTATION_PERSISTED_AT, ANNOTATION_RECORD_ID, FINALIZER,
};
use crate::patch::PatchBuilder;

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
/// another party's finalizer is never removed) and records where the audit record went. It
/// first tests `/metadata/resourceVersion`: the record was built from `sp`, so the object is
/// released only as it was when the record was built; any change since (a status write)
/// fails the patch, and the record is built again ([`after_failed_release`]). With the
/// record's transparency-log index, the CR also carries its receipt (index and record id), so
/// a deletion in the API server's audit log names its log entry. None when the finalizer is
/// not present.
pub fn release_patch(sp: &SignalProcessing, record_id: &str, persisted_at: DateTime<Utc>, log_index: Option<u64>) -> Option<Patch> {
    let index = sp.metadata.finalizers.as_deref()?.iter().position(|f| f == FINALIZER)?;
    let path = format!("/metadata/finalizers/{index}");
    let persisted = persisted_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = PatchBuilder::new()
        // Without a resourceVersion (never from the API server) the test fails: nothing is
        // released unchecked.
        .test("/metadata/resourceVersion", sp.metadata.resource_version.clone())
        .test(&path, FINALIZER)
        .remove(&path);
    let mut annotations = vec![(ANNOTATION_RECORD_ID, record_id.to_string()), (ANNOTATION_PERSISTED_AT, persisted)];
    if let Some(index) = log_index {
        annotations.push((ANNOTATION_LOG_INDEX, index.to_string()));
        annotations.push((ANNOTATION_LOG_RECORD_ID, record_id.to_string()));
    }
    Some(patch.annotate(sp.metadata.annotations.is_some(), annotations).build())
}

/// What to do after the API server refused the release patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRelease {
    /// The object is gone: someone (another replica) finished the job.
    Gone,
    /// The object changed since the record was built (a failed `test`: 422; or 409): read
    /// it again, store its record (an amendment when it differs) and release that version.
    Rebuild,
    /// Anything else: the reconcile fails and is retried with backoff.
    Fail,
}

/// [`AfterRelease`] for the HTTP status of the refused patch (None: no answer).
pub fn after_failed_release(code: Option<u16>) -> AfterRelease {
    match code {
        Some(404) => AfterRelease::Gone,
        Some(409 | 422) => AfterRelease::Rebuild,
        _ => AfterRelease::Fail,
    }
}

/// Whether the object read again after a refused release still waits for us (same uid, in
/// deletion, our finalizer on): then its record is built and stored again before the next
/// release; otherwise there is nothing left to release.
pub fn still_ours(current: Option<&SignalProcessing>, uid: &str) -> bool {
    current.is_some_and(|o| o.metadata.uid.as_deref() == Some(uid) && o.is_deleting() && o.has_finalizer())
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
    use serde_json::{json, Value};

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
        let obj = sp(
            json!({ "name": "a", "resourceVersion": "7", "finalizers": ["x", FINALIZER, "y"] }),
            None,
        );
        let patch = release_patch(&obj, "uid-1", at, None).unwrap();
        let out = apply(&obj, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(out["metadata"]["annotations"][ANNOTATION_RECORD_ID], "uid-1");
        assert_eq!(out["metadata"]["annotations"][ANNOTATION_PERSISTED_AT], "2025-11-27T10:00:00Z");
        assert!(serde_json::to_string(&patch).unwrap().contains("audit.kubernaut.ai~1record-id"));

        let annotated = sp(
            json!({ "name": "a", "resourceVersion": "7", "finalizers": [FINALIZER], "annotations": { "k": "v" } }),
            None,
        );
        let out = apply(&annotated, &release_patch(&annotated, "u", at, Some(42)).unwrap()).unwrap();
        assert_eq!(out["metadata"]["annotations"]["k"], "v");
        assert!(out["metadata"]["finalizers"].as_array().unwrap().is_empty());
        // The log receipt rides the same patch.
        assert_eq!(out["metadata"]["annotations"][ANNOTATION_LOG_INDEX], "42");
        assert_eq!(out["metadata"]["annotations"][ANNOTATION_LOG_RECORD_ID], "u");
        let plain = apply(&obj, &release_patch(&obj, "u", at, None).unwrap()).unwrap();
        assert!(plain["metadata"]["annotations"].get(ANNOTATION_LOG_INDEX).is_none());

        // Someone reordered the list since we read it: the patch fails rather than remove theirs.
        let moved = sp(json!({ "name": "a", "resourceVersion": "7", "finalizers": ["x", "y"] }), None);
        assert!(apply(&moved, &patch).is_err());
        assert!(release_patch(&moved, "u", at, Some(1)).is_none());
    }

    /// The release tests the version the record was built from: a status write since (a new
    /// resourceVersion) fails the patch, and so does an object without a version.
    #[test]
    fn release_is_of_the_version_the_record_was_built_from() {
        let at: DateTime<Utc> = "2025-11-27T10:00:00Z".parse().unwrap();
        let built_from = sp(json!({ "name": "a", "resourceVersion": "7", "finalizers": [FINALIZER] }), None);
        let patch = release_patch(&built_from, "u", at, None).unwrap();
        let first = serde_json::to_value(&patch.0[0]).unwrap();
        assert_eq!(first, json!({ "op": "test", "path": "/metadata/resourceVersion", "value": "7" }));
        assert!(apply(&built_from, &patch).is_ok());
        let mut changed = sp(
            json!({ "name": "a", "resourceVersion": "8", "finalizers": [FINALIZER] }),
            Some("Completed"),
        );
        assert!(
            apply(&changed, &patch).is_err(),
            "a status change since the build fails the release"
        );
        changed.metadata.resource_version = None;
        let unversioned = release_patch(&changed, "u", at, None).unwrap();
        assert!(apply(&changed, &unversioned).is_err(), "no version, no release");
    }

    #[test]
    fn a_refused_release_is_rebuilt_only_when_the_object_changed() {
        let cases = [
            (Some(422), AfterRelease::Rebuild),
            (Some(409), AfterRelease::Rebuild),
            (Some(404), AfterRelease::Gone),
            (Some(403), AfterRelease::Fail),
            (Some(500), AfterRelease::Fail),
            (None, AfterRelease::Fail),
        ];
        for (code, want) in cases {
            assert_eq!(after_failed_release(code), want, "{code:?}");
        }
        let deleting = |uid: &str, finalizers: Value| {
            sp(
                json!({ "name": "a", "uid": uid, "deletionTimestamp": "2025-01-01T00:00:00Z", "finalizers": finalizers }),
                None,
            )
        };
        assert!(still_ours(Some(&deleting("u-1", json!([FINALIZER]))), "u-1"));
        assert!(!still_ours(Some(&deleting("u-1", json!(["other"]))), "u-1"), "released already");
        assert!(!still_ours(Some(&deleting("u-2", json!([FINALIZER]))), "u-1"), "a namesake");
        assert!(!still_ours(None, "u-1"), "gone");
    }

    #[test]
    fn waiting() {
        let now: DateTime<Utc> = "2025-11-28T12:00:00Z".parse().unwrap();
        let times = ["2025-11-28T11:59:00Z", "2025-11-28T11:00:00Z"].map(|t| t.parse().unwrap());
        assert_eq!(waiting_summary(times, now), (2, 3600));
        assert_eq!(waiting_summary([], now), (0, 0));
    }
}
