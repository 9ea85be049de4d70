//! The deletion path when the record is not stored: every kind of failure keeps the finalizer,
//! but each says something different to whoever watches, so each has its own Event reason and
//! metric, and a queued event (events mode, 202) is polled for rather than retried.

use std::time::Duration;

use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;

use super::{outcome, Context, ReconcileError};
use crate::client::{ClientError, FailureKind};
use crate::crd::SignalProcessing;

/// How often a queued event is looked for (plus up to as much jitter, so CRs spread out).
pub const POLL: Duration = Duration::from_secs(5);

/// What the controller does about one kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction {
    /// The Event's reason.
    pub reason: &'static str,
    /// `audit_guard_reconcile_total{outcome}`.
    pub outcome: &'static str,
    /// Poll for a queued event (no backoff, no Warning) rather than retry with backoff.
    pub poll: bool,
}

/// The reaction to a failure of `kind`. Where a write that got no answer may have been queued
/// (`unanswered_may_be_queued`, Kubernaut's events API), it is polled for like a 202.
pub fn reaction(kind: FailureKind, unanswered_may_be_queued: bool) -> Reaction {
    let (reason, outcome, poll) = match (kind, unanswered_may_be_queued) {
        (FailureKind::Queued, _) | (FailureKind::NoAnswer, true) => ("AuditEventQueued", "queued", true),
        (FailureKind::Unauthenticated, _) => ("AuditPersistUnauthenticated", "unauthenticated", false),
        (FailureKind::Forbidden, _) => ("AuditPersistForbidden", "forbidden", false),
        (FailureKind::Rejected, _) => ("AuditPersistRejected", "rejected", false),
        (FailureKind::Transient | FailureKind::NoAnswer, _) => ("AuditPersistFailed", "persist_failed", false),
    };
    Reaction { reason, outcome, poll }
}

/// Carries out the reaction: the finalizer stays in every case.
pub(super) async fn on_failure(ctx: &Context, sp: &SignalProcessing, record_id: &str, e: ClientError) -> Result<Requeue, ReconcileError> {
    let r = reaction(e.kind, ctx.ds.unanswered_may_be_queued());
    outcome(r.outcome);
    if r.poll {
        if let Some(at) = ctx.ds.mark_queued(&ctx.client, sp).await {
            let note = format!(
                "Data Storage queued the audit event of {record_id} at {at} (202, its dead-letter queue); the deletion waits, \
                 polling until it is stored, without POSTing a second copy"
            );
            ctx.event(sp, EventType::Normal, r.reason, note).await;
        }
        tracing::debug!(id = %record_id, "audit event queued by Data Storage; polling");
        return Ok(Requeue::requeue(POLL.mul_f64(1.0 + rand::random::<f64>())));
    }
    let hint = match e.kind {
        FailureKind::Unauthenticated => " (Data Storage does not accept audit-guard's token: check its audience; docs/runbook.md)",
        FailureKind::Forbidden => " (audit-guard's identity lacks Data Storage's permission: check the RoleBinding; docs/runbook.md)",
        FailureKind::Rejected => " (Data Storage refuses this record as it is; report it with the record's id)",
        _ => "",
    };
    let note = format!("audit record {record_id} not stored, deletion waits and retries: {e}{hint}");
    ctx.event(sp, EventType::Warning, r.reason, note).await;
    Err(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_own_reason_and_only_a_queued_event_is_polled() {
        use FailureKind::*;
        // Whether an unanswered write may have been queued: Kubernaut's events API, audit-guard's own.
        const EVENTS: bool = true;
        const OWN_API: bool = false;
        let cases = [
            (Transient, EVENTS, "AuditPersistFailed", false),
            (NoAnswer, OWN_API, "AuditPersistFailed", false),
            (NoAnswer, EVENTS, "AuditEventQueued", true),
            (Queued, EVENTS, "AuditEventQueued", true),
            (Rejected, EVENTS, "AuditPersistRejected", false),
            (Unauthenticated, OWN_API, "AuditPersistUnauthenticated", false),
            (Forbidden, EVENTS, "AuditPersistForbidden", false),
        ];
        for (kind, unanswered_may_be_queued, reason, poll) in cases {
            let r = reaction(kind, unanswered_may_be_queued);
            assert_eq!(
                (r.reason, r.poll),
                (reason, poll),
                "{kind:?}, unanswered may be queued: {unanswered_may_be_queued}"
            );
        }
    }
}
