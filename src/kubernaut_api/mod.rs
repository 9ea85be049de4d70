//! `serve --datastorage-api events`: audit records written to Kubernaut's own Data Storage
//! through its unified audit-events API (`/api/v1/audit/events`).
//!
//! What that API does differently from audit-guard's Data Storage, and where it is handled:
//! - it keeps only the fields of its `SignalProcessingAuditPayload` and checks their enums and a
//!   7-day `event_timestamp` window: [`payload`] maps the record into those fields;
//! - it is not idempotent and has no amendment endpoint: [`matching`] finds the CR's event before
//!   a write and tells ours from a different one (stored beside it, linked by `parent_event_id`);
//! - its `202` queues the event in a dead-letter queue that replays every copy: [`queue`] polls
//!   instead of POSTing again, and [`mark`] keeps that across restarts on the CR itself.
//!
//! The HTTP side is [`api`] (methods of the one [`crate::client::DataStorageClient`]).

mod api;
pub mod facts;
pub mod mark;
pub mod matching;
#[cfg(test)]
mod openapi_check;
pub mod payload;
pub mod queue;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::audit::SignalProcessingAudit;
use crate::client::{BatchOutcome, ClientError, DataStorageClient, FailureKind, Stored};
use crate::writer::BatchSink;

/// The buffered writer's sink in events mode: the client, plus the CR mark for every event
/// Data Storage queued, so that a new leader polls for it rather than POSTing it again.
pub struct MarkingSink {
    pub ds: Arc<DataStorageClient>,
    pub kube: kube::Client,
}

impl MarkingSink {
    async fn mark(&self, records: &[SignalProcessingAudit], ids: &[String]) {
        for r in records.iter().filter(|r| ids.contains(&r.id)) {
            let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) else {
                continue;
            };
            if let Err(e) = mark::mark_by_name(&self.kube, &self.ds, ns, name, &r.id).await {
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
            let outcome = self.ds.store_batch(records).await?;
            self.mark(records, &outcome.queued).await;
            Ok(outcome)
        })
    }

    fn store_one<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(async move { self.marked(record, self.ds.store_one(record).await).await })
    }

    fn amend<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(async move { self.marked(record, self.ds.amend(record).await).await })
    }
}
