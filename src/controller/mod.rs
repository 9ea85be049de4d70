//! The finalizer controller: kube-runtime wiring around the decisions in [`decisions`].

pub mod decisions;
pub mod persist_failure;
pub mod removals;

#[cfg(test)]
mod mocked_api;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::audit::from_cr::build_record;
use crate::audit::Trigger;
use crate::client::ClientError;
use crate::confirmed::{release_key, ConfirmedRecords, UidSet};
use crate::conflict::{persist, Persisted};
use crate::crd::cached::{unwrap_event, SlimSignalProcessing};
use crate::crd::{add_finalizer_patch, ListGuard, SignalProcessing};
use crate::group_commit::GroupCommit;
use crate::metrics;
use crate::retry::backoff;
use crate::sink::RecordSink;
use crate::writer::AuditWriter;
use decisions::{after_failed_release, decide, release_patch, still_ours, waiting_summary, Action, AfterRelease};

const MANAGER: &str = "audit-guard";
/// Uids remembered as already handed to the writer; older ones are forgotten (a repeat
/// enqueue is harmless: the record id makes the write idempotent).
const ENQUEUED_MEMORY: usize = 100_000;
/// Uids whose conflict this process has already counted and evented (a retry after a failed
/// release meets the same conflict again; a restart may alarm once more, never less).
const ALARMED_MEMORY: usize = 10_000;
/// Reconciles in flight at once: enough to keep Data Storage's batch-free single POSTs busy
/// during a mass deletion without opening thousands of connections to it.
const RECONCILE_CONCURRENCY: u16 = 64;
/// Deletion-time stores per batch POST, batch POSTs at once, and how long a batch gathers after
/// its first record: a mass cleanup's deletions, a few ms apart, ride batches of several; a
/// lone deletion waits the linger more (its reconcile slot is one of 64).
const GROUP_COMMIT_BATCH: usize = 100;
const GROUP_COMMIT_IN_FLIGHT: usize = 4;
const GROUP_COMMIT_LINGER: Duration = Duration::from_millis(20);
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Data Storage did not confirm the record; `permanent` says whether retrying can help.
    #[error("audit record {}: {}", store_failure(.0), .0)]
    Store(#[from] ClientError),
    #[error("object has no namespace or uid")]
    Incomplete,
    /// The object kept changing between building its record and releasing it.
    #[error("the object changed between building its audit record and every release attempt")]
    Changing,
}

fn store_failure(e: &ClientError) -> &'static str {
    if e.permanent {
        "rejected"
    } else {
        "not stored yet"
    }
}

pub struct Context {
    pub client: kube::Client,
    pub ds: Arc<dyn RecordSink>,
    pub writer: Arc<AuditWriter>,
    pub recorder: Recorder,
    /// Shared with the webhook: an object version here (uid and resourceVersion) lets it allow
    /// our release of that version without asking Data Storage.
    pub confirmed: Arc<ConfirmedRecords>,
    /// Whether a Normal `AuditPersisted` Event follows every stored record (`--success-events`).
    pub success_events: bool,
    enqueued: UidSet,
    alarmed: UidSet,
    /// Uids this controller released: the removal watch tells them from foreign removals.
    released: Arc<UidSet>,
    attempts: RetryCounts,
    /// The deletion path's group commit (SignalProcessing mode).
    group: Option<GroupCommit>,
}

/// Failed reconciles in a row, per uid: the exponent of the next retry's backoff. Any
/// successful reconcile of the uid ends the run, so failures of an earlier episode (a
/// finalizer patch refused last week) never lengthen the backoff of a later one.
///
/// A uid whose object went away while failing (someone else removed the finalizer) is never
/// reconciled again, so it is never reset: entries untouched for [`RETRY_STALE`] (far beyond
/// the longest backoff, so no live retry run is cut) are forgotten whenever the map has grown
/// to twice its size after the last such sweep.
#[derive(Default)]
struct RetryCounts(Mutex<RetryMap>);

#[derive(Default)]
struct RetryMap {
    runs: HashMap<String, (u32, Instant)>,
    sweep_at: usize,
}

/// Retries come at most [`RETRY_CAP`] apart; an entry this old belongs to no live run.
const RETRY_STALE: Duration = Duration::from_secs(600);
const RETRY_SWEEP_MIN: usize = 1024;

impl RetryCounts {
    /// The number of failures before this one, counting this one for the next call.
    fn next(&self, uid: &str) -> u32 {
        self.next_at(uid, Instant::now())
    }

    fn next_at(&self, uid: &str, now: Instant) -> u32 {
        let Ok(mut map) = self.0.lock() else { return 0 };
        if map.runs.len() >= map.sweep_at.max(RETRY_SWEEP_MIN) {
            map.runs.retain(|_, (_, last)| now.saturating_duration_since(*last) < RETRY_STALE);
            map.sweep_at = map.runs.len() * 2;
        }
        let (n, last) = map.runs.entry(uid.to_string()).or_insert((0, now));
        let current = *n;
        *n = n.saturating_add(1);
        *last = now;
        current
    }

    fn reset(&self, uid: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.runs.remove(uid);
        }
    }
}

impl Context {
    pub fn new(
        client: kube::Client,
        ds: Arc<dyn RecordSink>,
        writer: Arc<AuditWriter>,
        confirmed: Arc<ConfirmedRecords>,
        identity: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(identity.to_string()),
        };
        let group = ds.groups_deletions().then(|| {
            GroupCommit::start(
                ds.clone().batch_sink(),
                GROUP_COMMIT_BATCH,
                GROUP_COMMIT_IN_FLIGHT,
                GROUP_COMMIT_LINGER,
            )
        });
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            ds,
            writer,
            confirmed,
            success_events: false,
            enqueued: UidSet::new(ENQUEUED_MEMORY),
            alarmed: UidSet::new(ALARMED_MEMORY),
            released: Arc::new(UidSet::new(removals::RELEASED_MEMORY)),
            attempts: RetryCounts::default(),
            group,
        }
    }

    /// Turns the per-record success Event on or off (off unless `--success-events true`).
    pub fn with_success_events(mut self, on: bool) -> Self {
        self.success_events = on;
        self
    }

    async fn event(&self, sp: &SignalProcessing, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "PersistAudit".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &sp.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

fn outcome(label: &str) {
    metrics::RECONCILES.with_label_values(&[label]).inc();
}

/// One reconcile, in a span naming the object, so that everything it logs (the Data Storage
/// request included) can be followed by uid; `action` is what [`decide`] chose.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(
        uid = sp.metadata.uid.as_deref().unwrap_or_default(),
        namespace = sp.metadata.namespace.as_deref().unwrap_or_default(),
        name = sp.metadata.name.as_deref().unwrap_or_default(),
        action = tracing::field::Empty,
    )
)]
async fn reconcile(sp: Arc<SignalProcessing>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    let result = reconcile_once(sp.clone(), ctx.clone()).await;
    if let (Ok(_), Some(uid)) = (&result, sp.uid()) {
        ctx.attempts.reset(&uid);
    }
    result
}

async fn reconcile_once(sp: Arc<SignalProcessing>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    let (Some(ns), Some(uid)) = (sp.namespace(), sp.uid()) else {
        return Err(ReconcileError::Incomplete);
    };
    let name = sp.name_any();
    let api: Api<SlimSignalProcessing> = Api::namespaced(ctx.client.clone(), &ns);
    let action = decide(&sp, ctx.enqueued.contains(&uid), Utc::now());
    tracing::Span::current().record("action", tracing::field::debug(&action));
    match action {
        Action::Nothing => {
            outcome("noop");
            Ok(Requeue::await_change())
        }
        Action::AddFinalizer => {
            let patch = add_finalizer_patch(sp.metadata.finalizers.as_deref(), ListGuard::TestFirst);
            // The answer is decoded slim: the whole object may be a megabyte.
            api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch)).await?;
            tracing::debug!(%ns, %name, "finalizer added");
            outcome("finalizer_added");
            Ok(Requeue::await_change())
        }
        Action::EnqueueRecord => {
            // A new leader meets every completed CR at start: whatever the sink needs of the
            // object (a write another process's writer left queued) it learns here.
            let record = build_record(&sp, Trigger::Completion, Utc::now());
            ctx.ds.prepare(&sp, &record);
            if ctx.writer.enqueue(record) {
                ctx.enqueued.insert(&uid);
                outcome("enqueued");
            } else {
                outcome("enqueue_dropped");
            }
            Ok(Requeue::await_change())
        }
        Action::PersistAndRelease => persist_and_release(&ctx, &api, sp, &uid).await,
    }
}

/// Rounds of "store the record, release that version" within one reconcile before it fails
/// and is retried with backoff (each extra round follows a change to the object).
const RELEASE_ROUNDS: usize = 5;

/// Stores the record of the object as it is and releases exactly that version (the release
/// patch tests its `resourceVersion`). When the object changed in between, it is read
/// again and its record stored too (an amendment when it differs), so whatever the object
/// said when it was released is recorded.
async fn persist_and_release(
    ctx: &Arc<Context>,
    api: &Api<SlimSignalProcessing>,
    mut sp: Arc<SignalProcessing>,
    uid: &str,
) -> Result<Requeue, ReconcileError> {
    let name = sp.name_any();
    let ns = sp.namespace().unwrap_or_default();
    for _ in 0..RELEASE_ROUNDS {
        let record = build_record(&sp, Trigger::Deletion, Utc::now());
        ctx.ds.prepare(&sp, &record);
        let persisted = match persist(ctx.ds.as_ref(), ctx.group.as_ref(), &record).await {
            Ok(p) => p,
            Err(e) => return persist_failure::on_failure(ctx, &sp, &record.id, e).await,
        };
        if let Persisted::Amended { differing, new } = &persisted {
            // Counted once per CR, also when an earlier attempt stored the amendment but
            // failed to release: the alarm must not depend on which attempt got through.
            if *new || !ctx.alarmed.contains(uid) {
                ctx.alarmed.insert(uid);
                metrics::RECORD_CONFLICTS.with_label_values(&["deletion"]).inc();
                let note = format!(
                    "Data Storage already held a different audit record under {} (differing: {}); audit-guard stored its own as an amendment, both are kept",
                    record.id,
                    differing.join(", ")
                );
                tracing::warn!(%ns, %name, id = %record.id, differing = ?differing, "audit record conflict; amendment stored");
                ctx.event(&sp, EventType::Warning, "AuditRecordConflict", note).await;
            }
        }
        if let Some(version) = sp.resource_version() {
            ctx.confirmed.insert(&release_key(uid, &version));
        }
        let log_index = ctx.ds.log_receipt(&record.id).await;
        let persisted_at = Utc::now();
        ctx.released.insert(uid);
        if let Some(patch) = release_patch(&sp, &record.id, persisted_at, log_index) {
            if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
                let code = match &e {
                    kube::Error::Api(ae) => Some(ae.code),
                    _ => None,
                };
                match after_failed_release(code) {
                    AfterRelease::Gone => {}
                    AfterRelease::Fail => {
                        outcome("release_failed");
                        return Err(e.into());
                    }
                    AfterRelease::Rebuild => {
                        let current = api.get_opt(&name).await?.map(SlimSignalProcessing::into_inner);
                        if !still_ours(current.as_ref(), uid) {
                            outcome("noop");
                            return Ok(Requeue::await_change());
                        }
                        tracing::info!(%ns, %name, id = %record.id, "the object changed since its record was built; storing its record again");
                        if let Some(current) = current {
                            sp = Arc::new(current);
                        }
                        continue;
                    }
                }
            }
        }
        // The success Event is for people reading `kubectl describe`; the reconcile (and a
        // mass cleanup behind it) need not wait for the API server to take it.
        if let Some(note) = success_event_note(ctx.success_events, &persisted, &record) {
            let (event_ctx, event_sp) = (ctx.clone(), sp.clone());
            tokio::spawn(async move { event_ctx.event(&event_sp, EventType::Normal, "AuditPersisted", note).await });
        }
        outcome("persisted");
        tracing::info!(%ns, %name, id = %record.id, status = record.status.as_str(), "audit record stored, finalizer removed");
        return Ok(Requeue::await_change());
    }
    outcome("release_failed");
    Err(ReconcileError::Changing)
}

/// The note of the Normal `AuditPersisted` Event after a stored record, or None when success
/// Events are off (the default: one Event per record is one more API write per deleted object).
fn success_event_note(enabled: bool, persisted: &Persisted, record: &crate::audit::SignalProcessingAudit) -> Option<String> {
    if !enabled {
        return None;
    }
    Some(match persisted {
        Persisted::Stored => format!("audit record {} stored ({})", record.id, record.status.as_str()),
        Persisted::Amended { .. } => format!("audit record {} stored as an amendment ({})", record.id, record.status.as_str()),
    })
}

fn error_policy(sp: Arc<SignalProcessing>, err: &ReconcileError, ctx: Arc<Context>) -> Requeue {
    let uid = sp.uid().unwrap_or_default();
    let delay = backoff(ctx.attempts.next(&uid), RETRY_BASE, RETRY_CAP, rand::random::<f64>());
    tracing::warn!(ns = ?sp.namespace(), name = %sp.name_any(), error = %err, ?delay, "reconcile failed; retrying");
    Requeue::requeue(delay)
}

/// Runs one controller per watched scope (all namespaces, or each listed one) until `stop`.
pub async fn run(ctx: Arc<Context>, namespaces: &[String], stop: CancellationToken) {
    let apis: Vec<Api<SlimSignalProcessing>> = if namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(ctx.client.clone(), ns)).collect()
    };
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    for api in apis {
        // Objects are decoded slim, so what the cache (and each watch event) costs does not
        // follow what users put in objects (labels, contextSources...). The same watch feeds
        // the observer of finalizer removals.
        let (reader, writer) = reflector::store();
        let mut removals = removals::Observer::new(ctx.ds.clone(), ctx.released.clone(), Default::default());
        let objects = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .map_ok(unwrap_event)
            .inspect_ok(move |event| removals.see(event))
            .reflect(writer)
            .applied_objects();
        let controller = Controller::for_stream(objects, reader)
            .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY));
        stores.push(controller.store());
        let stop = stop.clone();
        let ctx = ctx.clone();
        runs.push(async move {
            controller
                .graceful_shutdown_on(async move { stop.cancelled().await })
                .run(reconcile, error_policy, ctx)
                .for_each(|_| futures::future::ready(()))
                .await
        });
    }
    let gauges = waiting_gauges(stores, stop.clone());
    tokio::join!(futures::future::join_all(runs), gauges);
    metrics::WAITING_DELETIONS.set(0);
    metrics::OLDEST_WAITING_SECONDS.set(0);
}

/// Keeps the "waiting on audit" gauges up to date from the controllers' caches.
async fn waiting_gauges(stores: Vec<Store<SignalProcessing>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let times = stores
            .iter()
            .flat_map(|s| s.state())
            .filter(|sp| sp.has_finalizer())
            .filter_map(|sp| sp.metadata.deletion_timestamp.as_ref().map(|t| t.0))
            .collect::<Vec<_>>();
        let (count, oldest) = waiting_summary(times, Utc::now());
        metrics::WAITING_DELETIONS.set(count);
        metrics::OLDEST_WAITING_SECONDS.set(oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> crate::audit::SignalProcessingAudit {
        serde_json::from_value(serde_json::json!({
            "id": "u-1", "remediation_id": "rr", "signal_fingerprint": "fp", "processing_phases": [],
            "completed_at": "2025-11-27T10:00:02Z", "status": "completed"
        }))
        .unwrap()
    }

    #[test]
    fn success_events_are_opt_in() {
        let rec = record();
        assert_eq!(success_event_note(false, &Persisted::Stored, &rec), None);
        let amended = Persisted::Amended {
            differing: vec!["status".into()],
            new: true,
        };
        assert_eq!(
            success_event_note(false, &amended, &rec),
            None,
            "the conflict's Warning is separate"
        );
        assert_eq!(
            success_event_note(true, &Persisted::Stored, &rec).as_deref(),
            Some("audit record u-1 stored (completed)")
        );
        assert_eq!(
            success_event_note(true, &amended, &rec).as_deref(),
            Some("audit record u-1 stored as an amendment (completed)")
        );
    }

    #[test]
    fn retry_counts_grow_per_uid_and_a_success_starts_over() {
        let counts = RetryCounts::default();
        assert_eq!((counts.next("a"), counts.next("a"), counts.next("a")), (0, 1, 2));
        assert_eq!(counts.next("b"), 0, "per uid");
        counts.reset("a");
        assert_eq!(counts.next("a"), 0, "a later failure starts from the base backoff");
    }

    #[test]
    fn retry_counts_forget_uids_that_stopped_failing_long_ago() {
        let counts = RetryCounts::default();
        let t0 = Instant::now();
        for i in 1..RETRY_SWEEP_MIN {
            counts.next_at(&format!("gone-{i}"), t0);
        }
        counts.next_at("live", t0 + RETRY_STALE / 2);
        let later = t0 + RETRY_STALE + Duration::from_secs(1);
        assert_eq!(counts.next_at("live", later), 1, "a live run keeps its count");
        let runs = counts.0.lock().map(|m| m.runs.len()).unwrap_or_default();
        assert_eq!(runs, 1, "the stale uids are forgotten once the map is full");
        assert_eq!(counts.next_at("gone-1", later), 0);
    }
}
