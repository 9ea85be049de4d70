//! The Data Storage client's `events` mode: Kubernaut's `/api/v1/audit/events` (and `/batch`).
//! Every write first reads the events of the CR's remediation ([`matching`]); an event not yet
//! stored is POSTed only when the 202 rule allows it ([`queue`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::event::AuditEvent;
use super::matching::{self, find_record, Found};
use super::payload::{amendment, break_glass_event_for, event_for, EVENT_TYPE};
use super::queue::Step;
use super::KubernautApi;
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::SignalProcessingAudit;
use crate::client::{BatchOutcome, ClientError, FailureKind, Stored};

const EVENTS_PATH: &str = "/api/v1/audit/events";
const EVENTS_BATCH_PATH: &str = "/api/v1/audit/events/batch";
/// The query API's largest page.
const PAGE: usize = 1000;
/// Pages read at most for one remediation (it has a handful of SignalProcessings and events).
const MAX_PAGES: usize = 50;

#[derive(Deserialize)]
struct EventsPage {
    #[serde(default)]
    data: Vec<Value>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(default)]
    has_more: bool,
}

impl KubernautApi {
    /// Notes what a failed write says about the queue: a 202 (or a write whose answer never
    /// came, which may have been queued) marks `uids` as queued; any trouble delays re-POSTs.
    fn after_failed_write(&self, uids: &[&str], e: &ClientError, now: DateTime<Utc>) {
        let q = &self.queued;
        match e.kind {
            FailureKind::Queued | FailureKind::NoAnswer => {
                for uid in uids {
                    q.note(uid, now);
                }
                q.trouble(now);
            }
            FailureKind::Transient => q.trouble(now),
            FailureKind::Rejected | FailureKind::Unauthenticated | FailureKind::Forbidden => {}
        }
    }

    /// Every `signalprocessing.signal.processed` event of one remediation, as answered (each is
    /// decoded by [`matching::record_events`] only when it is about the CR in question).
    pub(crate) async fn events_of(&self, correlation_id: &str) -> Result<Vec<Value>, ClientError> {
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let query = [
                ("event_type", EVENT_TYPE.to_string()),
                ("correlation_id", correlation_id.to_string()),
                ("limit", PAGE.to_string()),
                ("offset", all.len().to_string()),
            ];
            let found = self
                .http
                .get_json(self.http.url(EVENTS_PATH, &[])?, &query, "querying existing events")
                .await
                .inspect_err(|e| self.after_failed_write(&[], e, Utc::now()))?;
            let page: EventsPage = serde_json::from_value(found.unwrap_or(Value::Null))
                .map_err(|e| ClientError::transient(format!("querying existing events: {e}")))?;
            let more = page.pagination.is_some_and(|p| p.has_more) && !page.data.is_empty();
            all.extend(page.data);
            if !more {
                return Ok(all);
            }
        }
        Err(ClientError::transient("too many events to search for an existing one"))
    }

    /// POSTs one event of the CR `uid` if the 202 rule allows it.
    async fn post_event(&self, uid: &str, event: &AuditEvent, now: DateTime<Utc>) -> Result<Stored, ClientError> {
        if let Step::Wait { queued_at, repost_at } = self.queued.step(uid, now) {
            return Err(ClientError::of(
                FailureKind::Queued,
                format!(
                    "Data Storage queued the event of {uid} at {queued_at} (202) and has not stored it yet; polling until its \
                     dead-letter queue replays it (no new POST before {repost_at})"
                ),
            ));
        }
        match self.http.post(self.http.url(EVENTS_PATH, &[])?, &sent(event)?, false).await {
            Ok((stored, _)) => Ok(stored),
            Err(e) => {
                self.after_failed_write(&[uid], &e, now);
                Err(e)
            }
        }
    }

    /// The record events of the CR `uid` among its remediation's.
    async fn record_events(&self, correlation_id: &str, uid: &str) -> Result<Vec<AuditEvent>, ClientError> {
        decoded(&self.events_of(correlation_id).await?, uid)
    }

    /// The record's event as written now, with the facts captured from its CR.
    pub(crate) fn event_of(&self, record: &SignalProcessingAudit, now: DateTime<Utc>) -> AuditEvent {
        event_for(record, &self.facts.of(record), now)
    }

    /// The record's event is stored: nothing to wait for, no facts to keep for it.
    fn stored(&self, record: &SignalProcessingAudit) {
        self.queued.clear(&record.id);
        self.facts.settled(record);
    }

    /// A POST that stored the event settles the record.
    fn posted(&self, record: &SignalProcessingAudit, result: Result<Stored, ClientError>) -> Result<Stored, ClientError> {
        if result.is_ok() {
            self.facts.settled(record);
        }
        result
    }

    pub(crate) async fn events_store_one(&self, record: &SignalProcessingAudit) -> Result<Stored, ClientError> {
        let now = Utc::now();
        let ours = self.event_of(record, now);
        match find_record(&self.record_events(&record.remediation_id, &record.id).await?, &ours) {
            Found::Same => {
                self.stored(record);
                Ok(Stored::AlreadyStored)
            }
            Found::Different(existing) => Ok(Stored::Conflict {
                existing: sent(&existing)?,
            }),
            Found::Nothing => self.posted(record, self.post_event(&record.id, &ours, now).await),
        }
    }

    /// Stores our event linked to the different one already stored (its `parent_event_id`).
    pub(crate) async fn events_amend(&self, record: &SignalProcessingAudit) -> Result<Stored, ClientError> {
        let now = Utc::now();
        let ours = self.event_of(record, now);
        match find_record(&self.record_events(&record.remediation_id, &record.id).await?, &ours) {
            Found::Same => {
                self.stored(record);
                Ok(Stored::AlreadyStored)
            }
            Found::Different(existing) => {
                let amended = amendment(ours, &existing);
                self.posted(record, self.post_event(&record.id, &amended, now).await)
            }
            Found::Nothing => self.posted(record, self.post_event(&record.id, &ours, now).await),
        }
    }

    /// Whether an event of the CR `id` (not a break-glass one) is stored.
    pub(crate) async fn events_record_held(&self, id: &str, remediation_id: &str) -> Result<bool, ClientError> {
        Ok(!self.record_events(remediation_id, id).await?.is_empty())
    }

    /// A break-glass event: one per use (per admission review), so no search and no queue rule;
    /// a 202 leaves the removal refused, and the user's retry is another use.
    pub(crate) async fn events_store_break_glass(
        &self,
        event: &BreakGlassEvent,
        forced: &SignalProcessingAudit,
    ) -> Result<Stored, ClientError> {
        let now = Utc::now();
        match self
            .http
            .post(
                self.http.url(EVENTS_PATH, &[])?,
                &sent(&break_glass_event_for(event, forced, &self.facts.of(forced)))?,
                false,
            )
            .await
        {
            Ok((stored, _)) => Ok(stored),
            Err(e) => {
                self.after_failed_write(&[], &e, now);
                Err(e)
            }
        }
    }

    pub(crate) async fn events_store_batch(&self, records: &[SignalProcessingAudit]) -> Result<BatchOutcome, ClientError> {
        let now = Utc::now();
        let q = &self.queued;
        let mut outcome = BatchOutcome::default();
        let mut pages: HashMap<&str, Vec<Value>> = HashMap::new();
        let mut posting: Vec<(&SignalProcessingAudit, AuditEvent)> = Vec::new();
        let mut seen = HashSet::new();
        for r in records {
            if !seen.insert(r.id.as_str()) {
                continue;
            }
            if !pages.contains_key(r.remediation_id.as_str()) {
                let events = self.events_of(&r.remediation_id).await?;
                pages.insert(r.remediation_id.as_str(), events);
            }
            let events = pages.get(r.remediation_id.as_str()).map(Vec::as_slice).unwrap_or_default();
            let ours = self.event_of(r, now);
            let theirs = match matching::record_events(events, &r.id) {
                Ok(theirs) => theirs,
                Err(e) => {
                    // Left to be stored alone, where the error is the record's, not the batch's.
                    tracing::warn!(id = %r.id, error = %e, "an existing event of the CR cannot be read; not writing its record in the batch");
                    outcome.unconfirmed.push(r.id.clone());
                    continue;
                }
            };
            match find_record(&theirs, &ours) {
                Found::Same => {
                    self.stored(r);
                    outcome.stored.push(r.id.clone());
                }
                Found::Different(_) => outcome.conflicts.push(r.id.clone()),
                Found::Nothing => match q.step(&r.id, now) {
                    Step::Wait { .. } => outcome.queued.push(r.id.clone()),
                    Step::Post => posting.push((r, ours)),
                },
            }
        }
        if posting.is_empty() {
            return Ok(outcome);
        }
        let uids: Vec<&str> = posting.iter().map(|(r, _)| r.id.as_str()).collect();
        let events: Vec<&AuditEvent> = posting.iter().map(|(_, ev)| ev).collect();
        match self.http.post(self.http.url(EVENTS_BATCH_PATH, &[])?, &sent(&events)?, false).await {
            Ok(_) => {
                for (r, _) in &posting {
                    self.facts.settled(r);
                }
                outcome.stored.extend(uids.iter().map(|s| s.to_string()));
            }
            Err(e) => {
                self.after_failed_write(&uids, &e, now);
                if !matches!(e.kind, FailureKind::Queued | FailureKind::NoAnswer) {
                    return Err(e);
                }
                outcome.queued.extend(uids.iter().map(|s| s.to_string()));
            }
        }
        Ok(outcome)
    }
}

/// An event (or a batch of them) as the request body.
fn sent(body: &impl serde::Serialize) -> Result<Value, ClientError> {
    serde_json::to_value(body).map_err(|e| ClientError::of(FailureKind::Rejected, format!("encoding the event: {e}")))
}

/// [`matching::record_events`], an event it cannot read failing the query like an answer that
/// is not JSON (retried; nothing is written meanwhile).
fn decoded(events: &[Value], uid: &str) -> Result<Vec<AuditEvent>, ClientError> {
    matching::record_events(events, uid).map_err(|e| ClientError::transient(format!("querying existing events: {e}")))
}
