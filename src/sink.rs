//! Where the audit records go: one [`RecordSink`] per Data Storage API, chosen once by
//! `serve` from `--datastorage-api`. audit-guard's own API is [`crate::own_api::OwnApi`];
//! Kubernaut's unified audit-events API is [`crate::kubernaut_api::KubernautApi`]. The
//! controller, the webhook and the writers speak only to this trait.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::SignalProcessingAudit;
use crate::client::{ClaimConfirmation, ClientError, DataStorageClient, Stored};
use crate::crd::SignalProcessing;
use crate::writer::BatchSink;

/// A Data Storage API that audit records, break-glass events and claims are written to. The
/// batch, single and amendment writes are the [`BatchSink`] part (the buffered writer's and the
/// group commit's); the rest serves the deletion path and the webhook.
pub trait RecordSink: BatchSink {
    /// The HTTP client underneath: what readiness asks whether Data Storage answers or refuses.
    fn client(&self) -> &DataStorageClient;

    /// Called with the object and the record just built from it, before the record is handed
    /// to be stored (a record stored again once stored is prepared again): whatever the API
    /// needs to know of the object beyond the record (Kubernaut's: the CR's own mark of a
    /// queued event, and what its event payload has fields for).
    fn prepare(&self, _sp: &SignalProcessing, _record: &SignalProcessingAudit) {}

    /// Whether Data Storage holds a record under `id` (`remediation_id` finds it where the API
    /// files records by remediation).
    fn record_held<'a>(&'a self, id: &'a str, remediation_id: &'a str) -> BoxFuture<'a, Result<bool, ClientError>>;

    /// Stores a break-glass event; `forced` is the CR's forced record.
    fn store_break_glass<'a>(
        &'a self,
        event: &'a BreakGlassEvent,
        forced: &'a SignalProcessingAudit,
    ) -> BoxFuture<'a, Result<Stored, ClientError>>;

    /// Stores an unconfirmed break-glass claim; Ok(None) where the API keeps none.
    fn store_claim<'a>(&'a self, claim: &'a BreakGlassEvent) -> BoxFuture<'a, Result<Option<Stored>, ClientError>>;

    /// Reports that the finalizer of SignalProcessing `uid` was seen removed by someone other
    /// than this controller.
    fn confirm_removal<'a>(&'a self, uid: &'a str, observed_at: DateTime<Utc>) -> BoxFuture<'a, Result<ClaimConfirmation, ClientError>>;

    /// The top-level keys that differ between what the API holds (`existing`, as it answered a
    /// conflict) and `record`.
    fn differing(&self, existing: &Value, record: &SignalProcessingAudit) -> Vec<String>;

    /// Whether deletion-time stores may ride a shared batch (an API that may queue a write
    /// answers per record, and the deletion path polls for it CR by CR).
    fn groups_deletions(&self) -> bool;

    /// Whether a write that got no answer may have been queued rather than lost, so that it
    /// is polled for like a queued one.
    fn unanswered_may_be_queued(&self) -> bool;

    /// After a write that may have been queued: when this process remembers a queueing of the
    /// object's record later than the object says, marks the object (so that a restart or
    /// another replica polls rather than writes again) and returns that time; else None.
    fn mark_queued<'a>(&'a self, _kube: &'a kube::Client, _sp: &'a SignalProcessing) -> BoxFuture<'a, Option<DateTime<Utc>>> {
        Box::pin(async { None })
    }

    /// The stored record's transparency-log index, for the CR's receipt: waits briefly for Data
    /// Storage to integrate it; None where the API keeps no log, or not in time.
    fn log_receipt<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async { None })
    }

    /// This sink as the writer's and the group commit's.
    fn batch_sink(self: Arc<Self>) -> Arc<dyn BatchSink>;

    /// The buffered writer's sink: this one, or one that also marks the objects of the records
    /// the API queued (it has a Kubernetes client to do it with).
    fn writer_sink(self: Arc<Self>, _kube: kube::Client) -> Arc<dyn BatchSink> {
        self.batch_sink()
    }
}
