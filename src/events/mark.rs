//! The CR's own memory of a queued event: the annotation [`ANNOTATION_QUEUED_AT`] holds when
//! Data Storage queued (202) the CR's event, so that a restarted process or a new leader keeps
//! polling rather than POSTing a second copy. Set by whoever met the 202 (the controller, the
//! buffered writer, the webhook); read back before every write of the CR's record.

use chrono::{DateTime, SecondsFormat, Utc};
use json_patch::{AddOperation, Patch, PatchOperation, TestOperation};
use kube::api::{Api, Patch as KubePatch, PatchParams};
use serde_json::Value;

use crate::client::DataStorageClient;
use crate::controller::decisions::escape;
use crate::crd::SignalProcessing;

pub const ANNOTATION_QUEUED_AT: &str = "audit.kubernaut.ai/event-queued-at";

/// When the CR says its event was queued; None when it does not say, or says nonsense.
pub fn queued_at(sp: &SignalProcessing) -> Option<DateTime<Utc>> {
    let v = sp.metadata.annotations.as_ref()?.get(ANNOTATION_QUEUED_AT)?;
    DateTime::parse_from_rfc3339(v.trim()).ok().map(|t| t.with_timezone(&Utc))
}

/// Hands the CR's mark to the client's memory, so that its next write of the record polls.
pub fn seed(ds: &DataStorageClient, sp: &SignalProcessing) {
    if let (Some(queue), Some(uid), Some(at)) = (ds.queued_events(), sp.metadata.uid.as_deref(), queued_at(sp)) {
        queue.note(uid, at);
    }
}

fn ptr(path: &str) -> json_patch::jsonptr::PointerBuf {
    json_patch::jsonptr::PointerBuf::parse(path).unwrap_or_default()
}

/// JSON Patch that sets the mark on exactly this object (its uid is tested, so a namesake
/// created since is never marked).
pub fn mark_patch(sp: &SignalProcessing, at: DateTime<Utc>) -> Option<Patch> {
    let uid = sp.metadata.uid.clone()?;
    let mut ops = vec![PatchOperation::Test(TestOperation {
        path: ptr("/metadata/uid"),
        value: Value::from(uid),
    })];
    if sp.metadata.annotations.is_none() {
        ops.push(PatchOperation::Add(AddOperation {
            path: ptr("/metadata/annotations"),
            value: Value::Object(Default::default()),
        }));
    }
    ops.push(PatchOperation::Add(AddOperation {
        path: ptr(&format!("/metadata/annotations/{}", escape(ANNOTATION_QUEUED_AT))),
        value: Value::from(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    }));
    Some(Patch(ops))
}

/// Whether the CR must be (re)marked: the client remembers a later queueing than the CR says.
pub fn needs_mark(sp: &SignalProcessing, remembered: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let at = remembered?;
    match queued_at(sp) {
        Some(marked) if marked >= at => None,
        _ => Some(at),
    }
}

/// Marks `sp` (as read by the caller) with the time the client remembers; nothing when the
/// client remembers nothing newer. Errors are the caller's to log: the process still remembers.
pub async fn mark(client: &kube::Client, ds: &DataStorageClient, sp: &SignalProcessing) -> Result<(), kube::Error> {
    let (Some(queue), Some(ns), Some(uid)) = (ds.queued_events(), sp.metadata.namespace.as_deref(), sp.metadata.uid.as_deref()) else {
        return Ok(());
    };
    let Some(at) = needs_mark(sp, queue.queued_at(uid)) else {
        return Ok(());
    };
    let Some(patch) = mark_patch(sp, at) else { return Ok(()) };
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), ns);
    let name = sp.metadata.name.clone().unwrap_or_default();
    match api.patch(&name, &PatchParams::default(), &KubePatch::Json::<()>(patch)).await {
        Ok(_) => Ok(()),
        // Gone, or a namesake: nothing left to mark.
        Err(kube::Error::Api(ae)) if ae.code == 404 || ae.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

/// As [`mark`], for a CR known by namespace, name and uid only (the buffered writer's records).
pub async fn mark_by_name(client: &kube::Client, ds: &DataStorageClient, ns: &str, name: &str, uid: &str) -> Result<(), kube::Error> {
    let api: Api<SignalProcessing> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(sp) if sp.metadata.uid.as_deref() == Some(uid) => mark(client, ds, &sp).await,
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sp(annotations: Option<Value>) -> SignalProcessing {
        let mut meta = json!({ "name": "a", "namespace": "ns", "uid": "u-1" });
        if let Some(a) = annotations {
            meta["annotations"] = a;
        }
        serde_json::from_value(json!({ "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": meta, "spec": {} }))
            .unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_mark_is_read_back_and_set_on_this_object_only() {
        assert_eq!(queued_at(&sp(None)), None);
        assert_eq!(queued_at(&sp(Some(json!({ ANNOTATION_QUEUED_AT: "yesterday" })))), None);
        let marked = sp(Some(json!({ ANNOTATION_QUEUED_AT: "2026-01-01T10:00:00.000Z", "k": "v" })));
        assert_eq!(queued_at(&marked), Some(t("2026-01-01T10:00:00Z")));

        for obj in [sp(None), marked.clone()] {
            let mut doc = serde_json::to_value(&obj).unwrap();
            json_patch::patch(&mut doc, &mark_patch(&obj, t("2026-01-01T11:00:00Z")).unwrap()).unwrap();
            assert_eq!(doc["metadata"]["annotations"][ANNOTATION_QUEUED_AT], "2026-01-01T11:00:00.000Z");
        }
        // A namesake (another uid) is not marked.
        let mut namesake = serde_json::to_value(sp(None)).unwrap();
        namesake["metadata"]["uid"] = json!("u-2");
        assert!(json_patch::patch(&mut namesake, &mark_patch(&sp(None), t("2026-01-01T11:00:00Z")).unwrap()).is_err());
    }

    #[test]
    fn only_a_later_queueing_than_the_cr_says_is_written() {
        let marked = sp(Some(json!({ ANNOTATION_QUEUED_AT: "2026-01-01T10:00:00Z" })));
        assert_eq!(needs_mark(&marked, None), None);
        assert_eq!(needs_mark(&marked, Some(t("2026-01-01T10:00:00Z"))), None);
        assert_eq!(
            needs_mark(&marked, Some(t("2026-01-01T10:20:00Z"))),
            Some(t("2026-01-01T10:20:00Z"))
        );
        assert_eq!(
            needs_mark(&sp(None), Some(t("2026-01-01T10:00:00Z"))),
            Some(t("2026-01-01T10:00:00Z"))
        );
    }
}
