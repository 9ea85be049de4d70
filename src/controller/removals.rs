//! Observed removals of the audit finalizer: the one fact that turns a break-glass claim (a
//! review whose sender did not prove it is the API server) into a break-glass event. The
//! leader watches SignalProcessings and remembers which deleting ones still carry the
//! finalizer; when one of them loses it (or disappears) and this controller did not release
//! it, Data Storage is told, and confirms that object's claim if exactly one exists. It reads
//! the controller's own watch (one watch, objects decoded slim), see [`Observer`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use tokio_util::sync::CancellationToken;

use crate::client::ClaimConfirmation;
use crate::confirmed::UidSet;
use crate::crd::cached::{unwrap_event, SlimSignalProcessing};
use crate::crd::{SignalProcessing, ANNOTATION_PERSISTED_AT, ANNOTATION_RECORD_ID};
use crate::metrics;
use crate::retry::backoff;
use crate::sink::RecordSink;

/// Uids this controller released, remembered for the watch (older ones are forgotten: a
/// release reaches the watch within seconds, long before 10 000 more releases).
pub const RELEASED_MEMORY: usize = 10_000;
/// Tries to report one observed removal before giving up (logged, counted as `error`).
const CONFIRM_TRIES: u32 = 8;

/// What one watch event says about an object's finalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Deleting and still carrying the finalizer.
    Guarded,
    /// Present without the finalizer, or not being deleted.
    Unguarded,
    /// Gone (a Delete event, or absent from a relist).
    Gone,
}

/// What an object's new sighting means, given whether it was guarded at last sight and
/// whether this controller released it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Nothing came off (or it was never ours to watch).
    Nothing,
    /// The finalizer came off through this controller's own release.
    OwnRelease,
    /// The finalizer came off and this controller did not take it: someone else did.
    ForeignRemoval,
}

pub fn observe(was_guarded: bool, now: Seen, released_by_us: bool) -> Observation {
    match (was_guarded, now) {
        (false, _) | (true, Seen::Guarded) => Observation::Nothing,
        (true, Seen::Unguarded | Seen::Gone) if released_by_us => Observation::OwnRelease,
        (true, Seen::Unguarded | Seen::Gone) => Observation::ForeignRemoval,
    }
}

fn seen(meta: &ObjectMeta) -> Seen {
    if meta.deletion_timestamp.is_some() && crate::crd::has_finalizer(meta.finalizers.as_deref()) {
        Seen::Guarded
    } else {
        Seen::Unguarded
    }
}

/// Whether the object carries the annotations a controller's release writes in the same patch
/// that removes the finalizer: a release by another replica (before a leader handover) is one
/// too, though this process never made it. Someone with edit rights could copy them, which
/// only leaves their claim unconfirmed; nobody without API rights can.
fn release_marked(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_RECORD_ID) && a.contains_key(ANNOTATION_PERSISTED_AT))
}

/// The watch's memory: the uids guarded at last sight, and those met during a relist.
#[derive(Default)]
struct Guarded {
    uids: HashSet<String>,
    relisted: Option<HashSet<String>>,
    /// Set once the first listing is through: every later change is seen in order.
    synced: bool,
}

impl Guarded {
    /// Applies one sighting (`marked`: the object carries a controller's release mark);
    /// returns the uid and what came off there, if anything did.
    fn sight(&mut self, uid: &str, now: Seen, released: &UidSet, marked: bool) -> Option<(String, Observation)> {
        let was = match now {
            Seen::Guarded => !self.uids.insert(uid.to_string()),
            Seen::Unguarded | Seen::Gone => self.uids.remove(uid),
        };
        match observe(was, now, marked || released.contains(uid)) {
            Observation::Nothing => None,
            seen => Some((uid.to_string(), seen)),
        }
    }

    /// One watch event; returns the removals it shows (own releases and foreign removals).
    fn apply(&mut self, event: &Event<SignalProcessing>, released: &UidSet) -> Vec<(String, Observation)> {
        let uid_of = |sp: &SignalProcessing| sp.metadata.uid.clone().unwrap_or_default();
        match event {
            Event::Init => {
                self.relisted = Some(HashSet::new());
                vec![]
            }
            Event::InitApply(sp) => {
                let uid = uid_of(sp);
                if let Some(r) = self.relisted.as_mut() {
                    r.insert(uid.clone());
                }
                self.sight(&uid, seen(&sp.metadata), released, release_marked(&sp.metadata))
                    .into_iter()
                    .collect()
            }
            Event::InitDone => {
                // Guarded at last sight and absent from the relist: gone while we were away.
                let met = self.relisted.take().unwrap_or_default();
                let gone: Vec<String> = self.uids.iter().filter(|u| !met.contains(*u)).cloned().collect();
                self.synced = true;
                gone.iter().filter_map(|u| self.sight(u, Seen::Gone, released, false)).collect()
            }
            Event::Apply(sp) => {
                let uid = uid_of(sp);
                self.sight(&uid, seen(&sp.metadata), released, release_marked(&sp.metadata))
                    .into_iter()
                    .collect()
            }
            Event::Delete(sp) => {
                let uid = uid_of(sp);
                self.sight(&uid, Seen::Gone, released, release_marked(&sp.metadata))
                    .into_iter()
                    .collect()
            }
        }
    }
}

/// Follows one watch of SignalProcessings and reports every removal of the finalizer this
/// controller did not make (`released` holds the uids it released) to Data Storage.
pub struct Observer {
    guarded: Guarded,
    ds: Arc<dyn RecordSink>,
    released: Arc<UidSet>,
    /// Counts the watches whose first listing is through (from then on every change of their
    /// objects is seen, in order).
    synced: Arc<AtomicUsize>,
}

impl Observer {
    pub fn new(ds: Arc<dyn RecordSink>, released: Arc<UidSet>, synced: Arc<AtomicUsize>) -> Self {
        Self {
            guarded: Guarded::default(),
            ds,
            released,
            synced,
        }
    }

    /// One event of the watch; the reports run in the background.
    pub fn see(&mut self, event: &Event<SignalProcessing>) {
        let was_synced = self.guarded.synced;
        for (uid, seen) in self.guarded.apply(event, &self.released) {
            match seen {
                Observation::ForeignRemoval => {
                    tokio::spawn(report(self.ds.clone(), uid));
                }
                Observation::OwnRelease => metrics::REMOVALS_OBSERVED.with_label_values(&["own_release"]).inc(),
                Observation::Nothing => {}
            }
        }
        if self.guarded.synced && !was_synced {
            self.synced.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A removal watch of its own over `apis` until `stop`, for a process that runs no controller
/// (the controller feeds an [`Observer`] from its watch).
pub async fn watch_alone(
    apis: Vec<Api<SlimSignalProcessing>>,
    ds: Arc<dyn RecordSink>,
    released: Arc<UidSet>,
    stop: CancellationToken,
    synced: Arc<AtomicUsize>,
) {
    let watches = apis.into_iter().map(|api| {
        let mut observer = Observer::new(ds.clone(), released.clone(), synced.clone());
        let stop = stop.clone();
        async move {
            let mut stream = watcher(api, watcher::Config::default().any_semantic()).map_ok(unwrap_event).boxed();
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    e = stream.next() => e,
                };
                match event {
                    None => return,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "finalizer-removal watch: error (the watcher retries)");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Some(Ok(event)) => observer.see(&event),
                }
            }
        }
    });
    futures::future::join_all(watches).await;
}

/// Tells Data Storage the finalizer of `uid` came off without this controller.
async fn report(ds: Arc<dyn RecordSink>, uid: String) {
    let observed_at = Utc::now();
    for attempt in 0..CONFIRM_TRIES {
        match ds.confirm_removal(&uid, observed_at).await {
            Ok(outcome) => {
                let label = match &outcome {
                    ClaimConfirmation::Confirmed => "confirmed",
                    ClaimConfirmation::NoClaim => "no_claim",
                    ClaimConfirmation::Ambiguous(_) => "ambiguous",
                    ClaimConfirmation::NotKept => "not_kept",
                };
                metrics::REMOVALS_OBSERVED.with_label_values(&[label]).inc();
                match outcome {
                    ClaimConfirmation::Confirmed => {
                        tracing::warn!(%uid, "the audit finalizer was removed by someone other than the controller; its break-glass claim is confirmed")
                    }
                    ClaimConfirmation::Ambiguous(claims) => {
                        tracing::warn!(%uid, ?claims, "the audit finalizer was removed by someone other than the controller; several break-glass claims name it, none is confirmed")
                    }
                    ClaimConfirmation::NoClaim | ClaimConfirmation::NotKept => {
                        tracing::warn!(%uid, "the audit finalizer was removed by someone other than the controller, with no stored break-glass claim (a break-glass removal reviewed for the API server is stored as an event at once; otherwise see the API server's audit log)")
                    }
                }
                return;
            }
            Err(e) => {
                tracing::warn!(%uid, attempt, error = %e, "could not report an observed finalizer removal to Data Storage; retrying");
                let delay = backoff(attempt, Duration::from_millis(500), Duration::from_secs(30), rand::random::<f64>());
                tokio::time::sleep(delay).await;
            }
        }
    }
    metrics::REMOVALS_OBSERVED.with_label_values(&["error"]).inc();
    tracing::error!(%uid, "gave up reporting an observed finalizer removal; its break-glass claim stays unconfirmed");
}

/// The removals a run of watch events shows, for tests.
#[cfg(test)]
fn removals(events: Vec<Event<SignalProcessing>>, released: &UidSet) -> Vec<(String, Observation)> {
    let mut g = Guarded::default();
    events.iter().flat_map(|e| g.apply(e, released)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FINALIZER;

    fn sp(uid: &str, deleting: bool, finalizer: bool) -> SignalProcessing {
        let mut meta = serde_json::json!({"name": "sp", "namespace": "ns", "uid": uid});
        if deleting {
            meta["deletionTimestamp"] = serde_json::json!("2025-11-27T10:00:00Z");
        }
        if finalizer {
            meta["finalizers"] = serde_json::json!([FINALIZER]);
        }
        crate::crd::test_support::sp(meta, None)
    }

    #[test]
    fn only_a_guarded_object_losing_the_finalizer_without_us_is_a_foreign_removal() {
        use Seen::*;
        assert_eq!(observe(false, Gone, false), Observation::Nothing, "never seen guarded");
        assert_eq!(observe(true, Guarded, false), Observation::Nothing);
        assert_eq!(observe(true, Gone, true), Observation::OwnRelease);
        assert_eq!(observe(true, Unguarded, true), Observation::OwnRelease);
        assert_eq!(observe(true, Gone, false), Observation::ForeignRemoval);
        assert_eq!(observe(true, Unguarded, false), Observation::ForeignRemoval);
    }

    #[test]
    fn the_watch_reports_foreign_removals_once_and_never_our_own_releases() {
        let released = UidSet::new(16);
        released.insert("ours");
        let events = vec![
            Event::Apply(sp("ours", true, true)),
            Event::Apply(sp("theirs", true, true)),
            Event::Apply(sp("live", false, true)),
            Event::Delete(sp("ours", true, false)),
            Event::Apply(sp("theirs", true, false)),
            Event::Delete(sp("theirs", true, false)),
            Event::Delete(sp("live", false, true)),
        ];
        assert_eq!(
            removals(events, &released),
            vec![
                ("ours".to_string(), Observation::OwnRelease),
                ("theirs".to_string(), Observation::ForeignRemoval)
            ]
        );
    }

    #[test]
    fn a_release_another_replica_made_carries_its_mark() {
        let released = UidSet::new(16);
        let mut marked = sp("handed-over", true, false);
        marked.metadata.annotations = Some(
            [
                (ANNOTATION_RECORD_ID, "handed-over"),
                (ANNOTATION_PERSISTED_AT, "2025-11-27T10:00:01Z"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let events = vec![Event::Apply(sp("handed-over", true, true)), Event::Delete(marked)];
        assert_eq!(
            removals(events, &released),
            vec![("handed-over".to_string(), Observation::OwnRelease)]
        );
    }

    #[test]
    fn an_object_gone_during_a_relist_while_guarded_is_a_removal() {
        let released = UidSet::new(16);
        let events = vec![
            Event::Apply(sp("a", true, true)),
            Event::Apply(sp("b", true, true)),
            Event::Init,
            Event::InitApply(sp("b", true, true)),
            Event::InitDone,
        ];
        assert_eq!(removals(events, &released), vec![("a".to_string(), Observation::ForeignRemoval)]);
    }
}
