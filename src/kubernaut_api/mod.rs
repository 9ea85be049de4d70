//! `serve --datastorage-api events`: audit records written to Kubernaut's own Data Storage
//! through its unified audit-events API (`/api/v1/audit/events`).
//!
//! What that API does differently from audit-guard's Data Storage, and where it is handled:
//! - it keeps only the fields of its `SignalProcessingAuditPayload` and checks their enums and a
//!   7-day `event_timestamp` window: [`payload`] maps the record, with the [`facts`] its CR
//!   gave when the record was built, into those fields of the typed [`event`];
//! - it is not idempotent and has no amendment endpoint: [`matching`] finds the CR's event before
//!   a write and tells ours from a different one (stored beside it, linked by `parent_event_id`);
//! - its `202` queues the event in a dead-letter queue that replays every copy: [`queue`] polls
//!   instead of POSTing again, and [`mark`] keeps that across restarts on the CR itself.
//!
//! [`KubernautApi`] is its [`RecordSink`]; the HTTP side is [`api`], over the one
//! [`crate::client::DataStorageClient`].

mod api;
pub mod event;
pub mod facts;
pub mod mark;
pub mod matching;
#[cfg(test)]
mod openapi_check;
pub mod payload;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::SignalProcessingAudit;
use crate::client::{BatchOutcome, ClaimConfirmation, ClientError, DataStorageClient, FailureKind, Stored};
use crate::crd::SignalProcessing;
use crate::sink::RecordSink;
use crate::writer::BatchSink;
use facts::{CrFacts, InFlight};
use queue::QueuedEvents;

/// Kubernaut's unified audit-events API as a [`RecordSink`].
pub struct KubernautApi {
    http: DataStorageClient,
    /// The events Data Storage queued (202) and this process waits for.
    queued: QueuedEvents,
    /// What the CRs of the records on their way said beyond the record.
    facts: InFlight,
}

impl KubernautApi {
    /// `replay_window`: how long after a 202 an event is POSTed again (see [`QueuedEvents`]).
    pub fn new(http: DataStorageClient, replay_window: Duration) -> Self {
        Self {
            http,
            queued: QueuedEvents::new(replay_window),
            facts: InFlight::default(),
        }
    }

    /// The events queued in Data Storage's dead-letter queue that this process waits for.
    pub fn queued_events(&self) -> &QueuedEvents {
        &self.queued
    }
}

impl BatchSink for KubernautApi {
    fn store_batch<'a>(&'a self, records: &'a [SignalProcessingAudit]) -> BoxFuture<'a, Result<BatchOutcome, ClientError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(BatchOutcome::default());
            }
            self.events_store_batch(records).await
        })
    }
    fn store_one<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(self.events_store_one(record))
    }
    fn amend<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(self.events_amend(record))
    }
}

impl RecordSink for KubernautApi {
    fn client(&self) -> &DataStorageClient {
        &self.http
    }

    /// An event another process met a 202 for is polled for, not POSTed again: the CR's mark
    /// is handed to this process's memory. What the CR says beyond the record is kept for the
    /// writes of the record's event.
    fn prepare(&self, sp: &SignalProcessing, record: &SignalProcessingAudit) {
        mark::seed(&self.queued, sp);
        self.facts.capture(record, CrFacts::of(sp));
    }

    fn record_held<'a>(&'a self, id: &'a str, remediation_id: &'a str) -> BoxFuture<'a, Result<bool, ClientError>> {
        Box::pin(self.events_record_held(id, remediation_id))
    }

    /// The event is made one of the CR's, by the user, with the CR's state as its payload.
    fn store_break_glass<'a>(
        &'a self,
        event: &'a BreakGlassEvent,
        forced: &'a SignalProcessingAudit,
    ) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(self.events_store_break_glass(event, forced))
    }

    /// Nowhere to keep a claim that names nobody: none is stored (the webhook logs and counts
    /// the claim instead).
    fn store_claim<'a>(&'a self, _claim: &'a BreakGlassEvent) -> BoxFuture<'a, Result<Option<Stored>, ClientError>> {
        Box::pin(async { Ok(None) })
    }

    fn confirm_removal<'a>(&'a self, _uid: &'a str, _observed_at: DateTime<Utc>) -> BoxFuture<'a, Result<ClaimConfirmation, ClientError>> {
        Box::pin(async { Ok(ClaimConfirmation::NotKept) })
    }

    /// What differs between the stored event and ours.
    fn differing(&self, existing: &Value, record: &SignalProcessingAudit) -> Vec<String> {
        match serde_json::from_value::<event::AuditEvent>(existing.clone()) {
            Ok(existing) => matching::differing_keys(&existing, &self.event_of(record, Utc::now())),
            Err(e) => vec![format!("(the stored event is not one Kubernaut's schema defines: {e})")],
        }
    }

    /// A deletion-time event may be queued (202) and is then polled for, CR by CR: that path
    /// keeps one request per deletion.
    fn groups_deletions(&self) -> bool {
        false
    }

    fn unanswered_may_be_queued(&self) -> bool {
        true
    }

    fn mark_queued<'a>(&'a self, kube: &'a kube::Client, sp: &'a SignalProcessing) -> BoxFuture<'a, Option<DateTime<Utc>>> {
        Box::pin(async move {
            let remembered = sp.metadata.uid.as_deref().and_then(|uid| self.queued.queued_at(uid));
            let at = mark::needs_mark(sp, remembered)?;
            if let Err(e) = mark::mark(kube, &self.queued, sp).await {
                tracing::warn!(name = ?sp.metadata.name, error = %e, "could not mark the CR's queued event (this process still remembers it)");
            }
            Some(at)
        })
    }

    fn batch_sink(self: Arc<Self>) -> Arc<dyn BatchSink> {
        self
    }

    /// The writer marks every CR whose event Data Storage queued (202).
    fn writer_sink(self: Arc<Self>, kube: kube::Client) -> Arc<dyn BatchSink> {
        Arc::new(MarkingSink { api: self, kube })
    }
}

/// The buffered writer's sink: the events API, plus the CR mark for every event Data Storage
/// queued, so that a new leader polls for it rather than POSTing it again.
struct MarkingSink {
    api: Arc<KubernautApi>,
    kube: kube::Client,
}
impl MarkingSink {
    async fn mark(&self, records: &[SignalProcessingAudit], ids: &[String]) {
        for r in records.iter().filter(|r| ids.contains(&r.id)) {
            let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) else {
                continue;
            };
            if let Err(e) = mark::mark_by_name(&self.kube, &self.api.queued, ns, name, &r.id).await {
                tracing::warn!(%ns, %name, error = %e, "could not mark the CR's queued event (this process still remembers it)");
            }
        }
    }

    /// Marks the CR when the write of its record may have been queued; passes the answer on.
    async fn marked(&self, record: &SignalProcessingAudit, result: Result<Stored, ClientError>) -> Result<Stored, ClientError> {
        if let Err(e) = &result {
            if matches!(e.kind, FailureKind::Queued | FailureKind::NoAnswer) {
                self.mark(std::slice::from_ref(record), std::slice::from_ref(&record.id)).await;
            }
        }
        result
    }
}

impl BatchSink for MarkingSink {
    fn store_batch<'a>(&'a self, records: &'a [SignalProcessingAudit]) -> BoxFuture<'a, Result<BatchOutcome, ClientError>> {
        Box::pin(async move {
            let outcome = BatchSink::store_batch(self.api.as_ref(), records).await?;
            self.mark(records, &outcome.queued).await;
            Ok(outcome)
        })
    }

    fn store_one<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(async move { self.marked(record, BatchSink::store_one(self.api.as_ref(), record).await).await })
    }

    fn amend<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(async move { self.marked(record, BatchSink::amend(self.api.as_ref(), record).await).await })
    }
}
