//! The CR's own memory of a queued event: the annotation [`ANNOTATION_QUEUED_AT`] holds when
//! Data Storage queued (202) the CR's event, so that a restarted process or a new leader keeps
//! polling rather than POSTing a second copy. Set by whoever met the 202 (the controller, the
//! buffered writer, the webhook); read back before every write of the CR's record.

use chrono::{DateTime, SecondsFormat, Utc};
use json_patch::Patch;
use kube::api::{Api, Patch as KubePatch, PatchParams};

use super::queue::QueuedEvents;
use crate::crd::cached::SlimSignalProcessing;
use crate::crd::SignalProcessing;
use crate::patch::PatchBuilder;

pub use crate::crd::ANNOTATION_QUEUED_AT;

/// How far ahead of this process's clock a mark may lie (another replica's clock, the API
/// server's): the same allowance Data Storage gives a record's times.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Why a mark on the CR is not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not an RFC 3339 time.
    Unparseable,
    /// Later than now (beyond [`CLOCK_SKEW`]): it would hold the POST back until then.
    Future,
    /// Before the CR was created (beyond [`CLOCK_SKEW`]): no event of it was queued then.
    BeforeCreation,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unparseable => "unparseable",
            Self::Future => "future",
            Self::BeforeCreation => "before_creation",
        }
    }
}

/// Judges what the annotation says, as plain data: `Ok(None)` when there is no mark, `Ok(t)`
/// when it can be true, else why not. Anyone who may edit the CR's annotations can set it, so
/// a mark is believed only between the CR's creation and now; an impossible one counts as
/// none (the record is POSTed, or polled for only as this process itself remembers).
pub fn judge_mark(raw: Option<&str>, created: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, Ignored> {
    let Some(raw) = raw else { return Ok(None) };
    let at = DateTime::parse_from_rfc3339(raw.trim())
        .map_err(|_| Ignored::Unparseable)?
        .with_timezone(&Utc);
    if at > now + CLOCK_SKEW {
        return Err(Ignored::Future);
    }
    if created.is_some_and(|c| at < c - CLOCK_SKEW) {
        return Err(Ignored::BeforeCreation);
    }
    Ok(Some(at))
}

fn judged(sp: &SignalProcessing, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, Ignored> {
    let raw = sp.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_QUEUED_AT));
    let created = sp.metadata.creation_timestamp.as_ref().map(|t| t.0);
    judge_mark(raw.map(String::as_str), created, now)
}

/// When the CR says its event was queued; None when it does not say, or says what cannot be
/// true (see [`judge_mark`]).
pub fn queued_at(sp: &SignalProcessing) -> Option<DateTime<Utc>> {
    judged(sp, Utc::now()).ok().flatten()
}

/// Hands the CR's mark to this process's memory, so that its next write of the record polls.
/// An impossible mark is logged, counted and not handed on.
pub fn seed(queue: &QueuedEvents, sp: &SignalProcessing) {
    let Some(uid) = sp.metadata.uid.as_deref() else {
        return;
    };
    match judged(sp, Utc::now()) {
        Ok(Some(at)) => queue.note(uid, at),
        Ok(None) => {}
        Err(why) => {
            crate::metrics::EVENT_MARKS_IGNORED.with_label_values(&[why.as_str()]).inc();
            tracing::warn!(
                namespace = sp.metadata.namespace.as_deref().unwrap_or_default(),
                name = sp.metadata.name.as_deref().unwrap_or_default(),
                %uid,
                value = sp.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_QUEUED_AT)).map(String::as_str).unwrap_or_default(),
                reason = why.as_str(),
                "ignoring the CR's {ANNOTATION_QUEUED_AT} annotation: it cannot be true"
            );
        }
    }
}

/// JSON Patch that sets the mark on exactly this object (its uid is tested, so a namesake
/// created since is never marked).
pub fn mark_patch(sp: &SignalProcessing, at: DateTime<Utc>) -> Option<Patch> {
    let uid = sp.metadata.uid.clone()?;
    let patch = PatchBuilder::new().test("/metadata/uid", uid).annotate(
        sp.metadata.annotations.is_some(),
        [(ANNOTATION_QUEUED_AT, at.to_rfc3339_opts(SecondsFormat::Millis, true))],
    );
    Some(patch.build())
}

/// Whether the CR must be (re)marked: the client remembers a later queueing than the CR says.
pub fn needs_mark(sp: &SignalProcessing, remembered: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let at = remembered?;
    match queued_at(sp) {
        Some(marked) if marked >= at => None,
        _ => Some(at),
    }
}

/// Marks `sp` (as read by the caller) with the time `queue` remembers; nothing when it
/// remembers nothing newer. Errors are the caller's to log: the process still remembers.
pub async fn mark(client: &kube::Client, queue: &QueuedEvents, sp: &SignalProcessing) -> Result<(), kube::Error> {
    let (Some(ns), Some(uid)) = (sp.metadata.namespace.as_deref(), sp.metadata.uid.as_deref()) else {
        return Ok(());
    };
    let Some(at) = needs_mark(sp, queue.queued_at(uid)) else {
        return Ok(());
    };
    let Some(patch) = mark_patch(sp, at) else { return Ok(()) };
    let api: Api<SlimSignalProcessing> = Api::namespaced(client.clone(), ns);
    let name = sp.metadata.name.clone().unwrap_or_default();
    match api.patch(&name, &PatchParams::default(), &KubePatch::Json::<()>(patch)).await {
        Ok(_) => Ok(()),
        // Gone, or a namesake: nothing left to mark.
        Err(kube::Error::Api(ae)) if ae.code == 404 || ae.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

/// As [`mark`], for a CR known by namespace, name and uid only (the buffered writer's records).
pub async fn mark_by_name(client: &kube::Client, queue: &QueuedEvents, ns: &str, name: &str, uid: &str) -> Result<(), kube::Error> {
    let api: Api<SlimSignalProcessing> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await?.map(SlimSignalProcessing::into_inner) {
        Some(sp) if sp.metadata.uid.as_deref() == Some(uid) => mark(client, queue, &sp).await,
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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
    fn an_impossible_mark_counts_as_none() {
        let now = t("2026-01-01T10:00:00Z");
        let created = Some(t("2026-01-01T09:00:00Z"));
        let judge = |raw: &str| judge_mark(Some(raw), created, now);
        assert_eq!(judge_mark(None, created, now), Ok(None));
        assert_eq!(judge("2026-01-01T09:30:00Z"), Ok(Some(t("2026-01-01T09:30:00Z"))));
        // Within the clock-skew allowance on either side.
        assert_eq!(judge("2026-01-01T10:04:00Z"), Ok(Some(t("2026-01-01T10:04:00Z"))));
        assert_eq!(judge("2026-01-01T08:56:00Z"), Ok(Some(t("2026-01-01T08:56:00Z"))));
        assert_eq!(judge("someday"), Err(Ignored::Unparseable));
        assert_eq!(judge(""), Err(Ignored::Unparseable));
        // A far-future mark would hold the POST back until then.
        assert_eq!(judge("9999-12-31T23:59:59Z"), Err(Ignored::Future));
        assert_eq!(judge("2026-01-01T10:06:00Z"), Err(Ignored::Future));
        assert_eq!(judge("2025-12-31T10:00:00Z"), Err(Ignored::BeforeCreation));
        assert_eq!(
            judge_mark(Some("1970-01-01T00:00:00Z"), None, now),
            Ok(Some(t("1970-01-01T00:00:00Z")))
        );

        // The CR's reading: a future mark is no mark, so the record is POSTed now ...
        let mut future = sp(Some(json!({ ANNOTATION_QUEUED_AT: "9999-12-31T23:59:59Z" })));
        future.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t("2026-01-01T09:00:00Z")));
        assert_eq!(queued_at(&future), None);
        assert_eq!(
            crate::kubernaut_api::queue::next_step(queued_at(&future), None, now, std::time::Duration::from_secs(600)),
            crate::kubernaut_api::queue::Step::Post
        );
        // ... and what this process remembers overwrites it.
        assert_eq!(
            needs_mark(&future, Some(t("2026-01-01T09:30:00Z"))),
            Some(t("2026-01-01T09:30:00Z"))
        );
    }

    #[test]
    fn an_impossible_mark_is_counted_and_not_seeded() {
        let queue = QueuedEvents::new(std::time::Duration::from_secs(600));
        let counter = || crate::metrics::EVENT_MARKS_IGNORED.with_label_values(&["future"]).get();
        let before = counter();
        seed(&queue, &sp(Some(json!({ ANNOTATION_QUEUED_AT: "9999-12-31T23:59:59Z" }))));
        assert_eq!(queue.queued_at("u-1"), None);
        assert!(counter() > before);
        seed(&queue, &sp(Some(json!({ ANNOTATION_QUEUED_AT: "2020-01-01T00:00:00Z" }))));
        assert_eq!(queue.queued_at("u-1"), Some(t("2020-01-01T00:00:00Z")));
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
