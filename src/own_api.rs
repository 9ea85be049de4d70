//! audit-guard's own Data Storage API (`--datastorage-api signal-processing`): records under
//! `/api/v1/audit/signal-processing` (one, a batch, amendments), break-glass events and
//! claims. Idempotent by record id: a 409 says whether the stored content is identical.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::api_paths::{BASE, BATCH, BREAK_GLASS, BREAK_GLASS_CLAIMS, BREAK_GLASS_CONFIRMATIONS, LOG_INDEX};
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::SignalProcessingAudit;
use crate::client::{failure, unreachable, BatchOutcome, ClaimConfirmation, ClientError, DataStorageClient, Stored};
use crate::sink::RecordSink;
use crate::wire::{AmbiguousClaims, BatchItem, BatchResult, Duplicate, RemovalObserved};
use crate::writer::BatchSink;

/// How long the release waits for a stored record's log index (a sequencing round is 500 ms by
/// default; an index within a second is the log's promise).
const RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How often the release asks again while the record is not yet under a checkpoint.
const RECEIPT_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// What Data Storage said, once, about a record's place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReceiptAnswer {
    Index(u64),
    /// 404: not sequenced, or not under a checkpoint, yet.
    NotYet,
    /// No answer in time, or the connection failed.
    NoAnswer,
    /// Any other status, or a 200 without an index.
    Unexpected(u16),
}

impl ReceiptAnswer {
    fn of(status: u16, body: Option<&Value>) -> Self {
        match status {
            200 => body
                .and_then(|b| b.get("index"))
                .and_then(Value::as_u64)
                .map_or(Self::Unexpected(200), Self::Index),
            404 => Self::NotYet,
            other => Self::Unexpected(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReceiptStep {
    Done(u64),
    AskAgain,
    GiveUp(&'static str),
}

/// Whether to ask again after `answer`: only while Data Storage says "not yet" and time is left.
fn receipt_step(answer: ReceiptAnswer, out_of_time: bool) -> ReceiptStep {
    match answer {
        ReceiptAnswer::Index(i) => ReceiptStep::Done(i),
        ReceiptAnswer::NotYet if out_of_time => ReceiptStep::GiveUp("not under a checkpoint in time"),
        ReceiptAnswer::NotYet => ReceiptStep::AskAgain,
        ReceiptAnswer::NoAnswer => ReceiptStep::GiveUp("Data Storage did not answer"),
        ReceiptAnswer::Unexpected(_) => ReceiptStep::GiveUp("Data Storage answered the lookup with an error"),
    }
}

pub struct OwnApi {
    http: DataStorageClient,
}

impl OwnApi {
    pub fn new(http: DataStorageClient) -> Self {
        Self { http }
    }

    /// Stores one record: created, already stored with the same content, or a conflict.
    pub async fn store_one(&self, record: &SignalProcessingAudit) -> Result<Stored, ClientError> {
        Ok(self.http.post(self.http.url(BASE, &[])?, &to_json(record)?, true).await?.0)
    }

    /// Stores `record` as an amendment of the different record already held under its id:
    /// append-only, both stay visible. Created, or AlreadyStored when a retry finds this very
    /// content already there; anything else is an error.
    pub async fn amend(&self, record: &SignalProcessingAudit) -> Result<Stored, ClientError> {
        let url = self.http.url(BASE, &[&record.id, "amendments"])?;
        match self.http.post(url, &to_json(record)?, true).await?.0 {
            Stored::Conflict { .. } => Err(ClientError::permanent(format!(
                "Data Storage refused the amendment of {} as a conflict",
                record.id
            ))),
            stored => Ok(stored),
        }
    }

    /// Whether Data Storage holds a record under `id`.
    pub async fn record_held(&self, id: &str) -> Result<bool, ClientError> {
        let found = self
            .http
            .get_json(self.http.url(BASE, &[id])?, &[], &format!("looking up record {id}"))
            .await?;
        Ok(found.is_some())
    }

    /// The record's log index once a checkpoint covers it, asked again every [`RECEIPT_POLL`]
    /// while Data Storage answers "not yet", for up to [`RECEIPT_WAIT`] in all. A Data Storage
    /// that does not answer, or answers anything else, ends the wait at once: the release must
    /// not be held up by the receipt, which the witness can also find through the record id.
    pub async fn log_receipt(&self, id: &str) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + RECEIPT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = self.receipt_answer(id, left.max(RECEIPT_POLL)).await;
            match receipt_step(answer, left.is_zero()) {
                ReceiptStep::Done(index) => return Some(index),
                ReceiptStep::AskAgain => tokio::time::sleep(RECEIPT_POLL.min(left)).await,
                ReceiptStep::GiveUp(why) => {
                    tracing::warn!(%id, why, "the CR is released without its transparency-log receipt");
                    return None;
                }
            }
        }
    }

    /// One answer of the log-index endpoint about record `id`, within `timeout`.
    async fn receipt_answer(&self, id: &str, timeout: std::time::Duration) -> ReceiptAnswer {
        let sent = match self.http.url(LOG_INDEX, &["record", id]) {
            Ok(url) => match self.http.request(reqwest::Method::GET, url).await {
                Ok(req) => req.timeout(timeout).send().await.ok(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        let Some(resp) = sent else { return ReceiptAnswer::NoAnswer };
        let status = resp.status().as_u16();
        let body = if status == 200 { resp.json::<Value>().await.ok() } else { None };
        ReceiptAnswer::of(status, body.as_ref())
    }

    /// Stores a break-glass event (the forced record is stored on its own).
    pub async fn store_break_glass(&self, event: &BreakGlassEvent) -> Result<Stored, ClientError> {
        let body = serde_json::to_value(event).map_err(|e| ClientError::transient(e.to_string()))?;
        Ok(self.http.post(self.http.url(BREAK_GLASS, &[])?, &body, true).await?.0)
    }

    /// Stores an unconfirmed break-glass claim (a review from a peer not proven to be the API
    /// server).
    pub async fn store_claim(&self, claim: &BreakGlassEvent) -> Result<Stored, ClientError> {
        let body = serde_json::to_value(claim).map_err(|e| ClientError::transient(e.to_string()))?;
        Ok(self.http.post(self.http.url(BREAK_GLASS_CLAIMS, &[])?, &body, true).await?.0)
    }

    /// Reports that the finalizer of SignalProcessing `uid` was seen removed by someone other
    /// than this controller; Data Storage confirms its one claim, if it holds exactly one.
    pub async fn confirm_removal(&self, uid: &str, observed_at: DateTime<Utc>) -> Result<ClaimConfirmation, ClientError> {
        let body = RemovalObserved {
            uid: uid.to_owned(),
            observed_at,
        };
        let result = async {
            let resp = self
                .http
                .request(reqwest::Method::POST, self.http.url(BREAK_GLASS_CONFIRMATIONS, &[])?)
                .await?
                .json(&body)
                .send()
                .await
                .map_err(unreachable)?;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            match status {
                200 | 201 => Ok(ClaimConfirmation::Confirmed),
                404 => Ok(ClaimConfirmation::NoClaim),
                409 => {
                    let ids = serde_json::from_str::<Duplicate>(&text)
                        .ok()
                        .and_then(|d| serde_json::from_value::<AmbiguousClaims>(d.existing).ok())
                        .unwrap_or_default();
                    Ok(ClaimConfirmation::Ambiguous(ids.ambiguous))
                }
                _ => Err(failure(status, &text.chars().take(300).collect::<String>())),
            }
        }
        .await;
        self.http.observe(result.as_ref().map(|_| ()));
        result
    }

    /// Stores a batch (the buffered writer's path) and says, per record, what happened.
    pub async fn store_batch(&self, records: &[SignalProcessingAudit]) -> Result<BatchOutcome, ClientError> {
        if records.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let body = serde_json::to_value(records).map_err(|e| ClientError::transient(e.to_string()))?;
        let (_, answer) = self.http.post(self.http.url(BATCH, &[])?, &body, true).await?;
        Ok(batch_outcome(&answer, records))
    }
}

impl BatchSink for OwnApi {
    fn store_batch<'a>(&'a self, records: &'a [SignalProcessingAudit]) -> BoxFuture<'a, Result<BatchOutcome, ClientError>> {
        Box::pin(OwnApi::store_batch(self, records))
    }
    fn store_one<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(OwnApi::store_one(self, record))
    }
    fn amend<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(OwnApi::amend(self, record))
    }
}

impl RecordSink for OwnApi {
    fn client(&self) -> &DataStorageClient {
        &self.http
    }

    fn record_held<'a>(&'a self, id: &'a str, _remediation_id: &'a str) -> BoxFuture<'a, Result<bool, ClientError>> {
        Box::pin(OwnApi::record_held(self, id))
    }

    fn store_break_glass<'a>(
        &'a self,
        event: &'a BreakGlassEvent,
        _forced: &'a SignalProcessingAudit,
    ) -> BoxFuture<'a, Result<Stored, ClientError>> {
        Box::pin(OwnApi::store_break_glass(self, event))
    }

    fn store_claim<'a>(&'a self, claim: &'a BreakGlassEvent) -> BoxFuture<'a, Result<Option<Stored>, ClientError>> {
        Box::pin(async move { OwnApi::store_claim(self, claim).await.map(Some) })
    }

    fn confirm_removal<'a>(&'a self, uid: &'a str, observed_at: DateTime<Utc>) -> BoxFuture<'a, Result<ClaimConfirmation, ClientError>> {
        Box::pin(OwnApi::confirm_removal(self, uid, observed_at))
    }

    fn differing(&self, existing: &Value, record: &SignalProcessingAudit) -> Vec<String> {
        crate::conflict::differing_fields(existing, record)
    }

    fn log_receipt<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(OwnApi::log_receipt(self, id))
    }

    /// Every record is answered by Data Storage itself: deletions share batches.
    fn groups_deletions(&self) -> bool {
        true
    }

    fn unanswered_may_be_queued(&self) -> bool {
        false
    }

    fn batch_sink(self: Arc<Self>) -> Arc<dyn BatchSink> {
        self
    }
}

fn to_json(record: &SignalProcessingAudit) -> Result<Value, ClientError> {
    serde_json::to_value(record).map_err(|e| ClientError::transient(e.to_string()))
}

/// Sorts a batch answer's per-record results; a record without one (or with one this client
/// cannot read) is not confirmed.
fn batch_outcome(answer: &Value, records: &[SignalProcessingAudit]) -> BatchOutcome {
    let results: Vec<BatchItem> = answer
        .as_array()
        .or_else(|| answer.get("results").and_then(Value::as_array))
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| BatchItem::deserialize(r).ok())
        .collect();
    let mut outcome = BatchOutcome::default();
    for r in records {
        let id = r.id.clone();
        match results.iter().find(|item| item.id == r.id).map(|item| item.result) {
            Some(BatchResult::Created | BatchResult::Exists) => outcome.stored.push(id),
            Some(BatchResult::Conflict) => outcome.conflicts.push(id),
            None => outcome.unconfirmed.push(id),
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_receipt_is_asked_again_only_while_data_storage_says_not_yet() {
        let index = json!({"index": 41, "size": 42});
        assert_eq!(ReceiptAnswer::of(200, Some(&index)), ReceiptAnswer::Index(41));
        assert_eq!(ReceiptAnswer::of(200, Some(&json!({}))), ReceiptAnswer::Unexpected(200));
        assert_eq!(ReceiptAnswer::of(200, None), ReceiptAnswer::Unexpected(200));
        assert_eq!(ReceiptAnswer::of(404, None), ReceiptAnswer::NotYet);
        // The index endpoint says "not yet" with 404 only; a 400 is a request it refuses.
        assert_eq!(ReceiptAnswer::of(400, None), ReceiptAnswer::Unexpected(400));
        assert_eq!(ReceiptAnswer::of(503, None), ReceiptAnswer::Unexpected(503));
        assert_eq!(ReceiptAnswer::of(403, None), ReceiptAnswer::Unexpected(403));

        assert_eq!(receipt_step(ReceiptAnswer::Index(7), true), ReceiptStep::Done(7));
        assert_eq!(receipt_step(ReceiptAnswer::NotYet, false), ReceiptStep::AskAgain);
        assert!(matches!(receipt_step(ReceiptAnswer::NotYet, true), ReceiptStep::GiveUp(_)));
        // Data Storage down or refusing: the release goes on at once, with time left or not.
        for answer in [
            ReceiptAnswer::NoAnswer,
            ReceiptAnswer::Unexpected(500),
            ReceiptAnswer::Unexpected(401),
        ] {
            assert!(matches!(receipt_step(answer, false), ReceiptStep::GiveUp(_)));
        }
    }

    fn record(id: &str) -> SignalProcessingAudit {
        serde_json::from_value(json!({
            "id": id, "remediation_id": "rr", "signal_fingerprint": "fp", "processing_phases": [],
            "completed_at": "2025-11-27T10:00:02Z", "status": "completed"
        }))
        .unwrap()
    }

    #[test]
    fn batch_results_are_sorted_per_record_and_missing_ones_are_unconfirmed() {
        let recs = [record("a"), record("b"), record("c")];
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = json!([{"id": "a", "result": "created"}, {"id": "b", "result": "exists"}, {"id": "c", "result": "conflict"}]);
        let want = BatchOutcome {
            stored: ids(&["a", "b"]),
            conflicts: ids(&["c"]),
            ..Default::default()
        };
        assert_eq!(batch_outcome(&all, &recs), want);
        assert_eq!(batch_outcome(&json!({ "results": all }), &recs), want);
        // A result missing, unknown, or no per-record results at all: not counted as stored.
        let partial = json!([{"id": "a", "result": "created"}, {"id": "b", "result": "maybe"}]);
        assert_eq!(
            batch_outcome(&partial, &recs),
            BatchOutcome {
                stored: ids(&["a"]),
                unconfirmed: ids(&["b", "c"]),
                ..Default::default()
            }
        );
        for bare in [Value::Null, json!({}), json!({ "created": 3 })] {
            assert_eq!(batch_outcome(&bare, &recs).unconfirmed, ids(&["a", "b", "c"]), "{bare}");
        }
    }
}
