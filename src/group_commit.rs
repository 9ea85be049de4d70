//! Group commit on the deletion path: deletion-time stores that come within a short `linger` of
//! each other ride one batch POST (one Data Storage transaction, one PostgreSQL commit) instead
//! of one POST each. Every caller waits for its own record's confirmation. The linger is what
//! makes batches form in a mass cleanup: deletions there arrive a few milliseconds apart, about
//! as far as one POST takes, so without it most batches would hold one record. It costs a lone
//! deletion that much time, and a cleanup's throughput nothing (many reconciles are in flight).
//!
//! The batch is only a faster way to the same answer. Whatever it does not confirm as stored —
//! a conflict (the amendment needs the stored record), a record without a result, a batch that
//! failed as a whole (one bad record, or one unlucky request, must not hold back the others), a
//! second record under an id already in the batch — is stored on its own, exactly as without
//! group commit. Only the failure of a batch of one is its caller's answer at once. Data
//! Storage's idempotency by id makes a record stored twice over (a batch that failed after
//! storing, then the record alone) one record.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::audit::SignalProcessingAudit;
use crate::client::{ClientError, Stored};
use crate::writer::BatchSink;

/// What the batch said of one record.
#[derive(Debug)]
enum Answer {
    Stored,
    /// Not confirmed by the batch: the caller stores it on its own.
    Alone,
    Failed(ClientError),
}

struct Waiting {
    record: SignalProcessingAudit,
    answer: oneshot::Sender<Answer>,
}

/// Batches of the deletion path. Dropping it ends its worker once the batches in flight are
/// answered.
pub struct GroupCommit {
    sink: Arc<dyn BatchSink>,
    queue: mpsc::Sender<Waiting>,
}

impl GroupCommit {
    /// At most `in_flight` batch POSTs at once, each of at most `max_batch` records gathered
    /// for at most `linger` after the first.
    pub fn start(sink: Arc<dyn BatchSink>, max_batch: usize, in_flight: usize, linger: Duration) -> Self {
        let (queue, waiting) = mpsc::channel(max_batch.max(1) * in_flight.max(1) * 4);
        tokio::spawn(run(sink.clone(), waiting, max_batch.max(1), in_flight.max(1), linger));
        Self { sink, queue }
    }

    /// Stores `record`: Created/AlreadyStored, a Conflict with what is stored, or the error of
    /// its attempt — what [`BatchSink::store_one`] answers, in fewer round trips.
    pub async fn store(&self, record: &SignalProcessingAudit) -> Result<Stored, ClientError> {
        let (answer, answered) = oneshot::channel();
        let sent = self
            .queue
            .send(Waiting {
                record: record.clone(),
                answer,
            })
            .await
            .is_ok();
        match if sent { answered.await.ok() } else { None } {
            // The batch does not say whether it was created now or earlier; callers treat both alike.
            Some(Answer::Stored) => Ok(Stored::AlreadyStored),
            Some(Answer::Failed(e)) => Err(e),
            Some(Answer::Alone) | None => self.sink.store_one(record).await,
        }
    }
}

async fn run(sink: Arc<dyn BatchSink>, mut waiting: mpsc::Receiver<Waiting>, max_batch: usize, in_flight: usize, linger: Duration) {
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        // Wait for a free slot first: while every slot is busy, arrivals gather into the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = waiting.recv().await else { return };
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < max_batch {
            // What is already queued is taken even when the linger is zero or over.
            match tokio::time::timeout_at(until, waiting.recv()).await {
                Ok(Some(w)) => batch.push(w),
                Ok(None) | Err(_) => break,
            }
        }
        let sink = sink.clone();
        tokio::spawn(async move {
            answer(sink.as_ref(), batch).await;
            drop(slot);
        });
    }
}

/// POSTs the batch and tells every waiting caller what it means for its record.
async fn answer(sink: &dyn BatchSink, batch: Vec<Waiting>) {
    // The records move into the batch (no second copy); each answer stays at its record's index.
    let mut records = Vec::with_capacity(batch.len());
    let mut answers = Vec::with_capacity(batch.len());
    let mut ids = HashSet::with_capacity(batch.len());
    for w in batch {
        if ids.insert(w.record.id.clone()) {
            records.push(w.record);
            answers.push(w.answer);
        } else {
            let _ = w.answer.send(Answer::Alone);
        }
    }
    let result = sink.store_batch(&records).await;
    let answer_of = |id: &str| match &result {
        Ok(outcome) if outcome.stored.iter().any(|s| s == id) => Answer::Stored,
        Ok(_) => Answer::Alone,
        // A batch of one failed exactly as the record alone would have: no second attempt.
        Err(e) if records.len() == 1 => Answer::Failed(e.clone()),
        // Failed as a whole: each record is tried on its own, so a failure costs no caller more
        // than its own attempt would have, and one bad record holds back only itself.
        Err(_) => Answer::Alone,
    };
    for (record, answer) in records.iter().zip(answers) {
        let _ = answer.send(answer_of(&record.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::BatchOutcome;
    use futures::future::BoxFuture;
    use std::sync::Mutex;

    fn record(id: &str) -> SignalProcessingAudit {
        let mut r: SignalProcessingAudit = serde_json::from_value(serde_json::json!({
            "id": id, "remediation_id": "rr", "signal_fingerprint": "fp", "processing_phases": [],
            "completed_at": "2026-01-01T00:00:00Z", "status": "completed"
        }))
        .unwrap();
        r.id = id.into();
        r
    }

    /// Answers batches as the script says; counts what it is asked.
    #[derive(Default)]
    struct Script {
        batches: Mutex<Vec<Vec<String>>>,
        singles: Mutex<Vec<String>>,
        refuse_batch: Option<ClientError>,
        conflict: Option<&'static str>,
        hold: Option<Arc<tokio::sync::Notify>>,
    }

    impl BatchSink for Script {
        fn store_batch<'a>(&'a self, records: &'a [SignalProcessingAudit]) -> BoxFuture<'a, Result<BatchOutcome, ClientError>> {
            Box::pin(async move {
                self.batches.lock().unwrap().push(records.iter().map(|r| r.id.clone()).collect());
                if let Some(hold) = &self.hold {
                    hold.notified().await;
                }
                if let Some(e) = &self.refuse_batch {
                    return Err(e.clone());
                }
                let mut out = BatchOutcome::default();
                for r in records {
                    if Some(r.id.as_str()) == self.conflict {
                        out.conflicts.push(r.id.clone());
                    } else {
                        out.stored.push(r.id.clone());
                    }
                }
                Ok(out)
            })
        }
        fn store_one<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
            Box::pin(async move {
                self.singles.lock().unwrap().push(record.id.clone());
                if Some(record.id.as_str()) == self.conflict {
                    return Ok(Stored::Conflict {
                        existing: serde_json::json!({"id": record.id}),
                    });
                }
                Ok(Stored::Created)
            })
        }
        fn amend<'a>(&'a self, _: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
            Box::pin(async { Err(ClientError::permanent("the group commit never amends")) })
        }
    }

    #[tokio::test]
    async fn a_lone_store_goes_out_at_once_as_a_batch_of_one() {
        let sink = Arc::new(Script::default());
        let group = GroupCommit::start(sink.clone(), 100, 1, Duration::ZERO);
        assert_eq!(group.store(&record("a")).await, Ok(Stored::AlreadyStored));
        assert_eq!(*sink.batches.lock().unwrap(), vec![vec!["a".to_string()]]);
        assert!(sink.singles.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stores_within_the_linger_share_one_batch_and_a_lone_one_waits_the_linger() {
        let sink = Arc::new(Script::default());
        let group = Arc::new(GroupCommit::start(sink.clone(), 100, 4, Duration::from_millis(20)));
        let first = tokio::spawn({
            let g = group.clone();
            async move { g.store(&record("a")).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = tokio::spawn({
            let g = group.clone();
            async move { g.store(&record("b")).await }
        });
        assert!(first.await.unwrap().is_ok() && second.await.unwrap().is_ok());
        assert_eq!(*sink.batches.lock().unwrap(), vec![vec!["a".to_string(), "b".to_string()]]);

        let started = tokio::time::Instant::now();
        assert!(group.store(&record("c")).await.is_ok());
        assert_eq!(started.elapsed(), Duration::from_millis(20), "alone, after the linger");
        assert_eq!(sink.batches.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn stores_waiting_while_a_batch_is_in_flight_share_the_next_one() {
        let hold = Arc::new(tokio::sync::Notify::new());
        let sink = Arc::new(Script {
            hold: Some(hold.clone()),
            ..Script::default()
        });
        let group = Arc::new(GroupCommit::start(sink.clone(), 100, 1, Duration::ZERO));
        let first = tokio::spawn({
            let g = group.clone();
            async move { g.store(&record("first")).await }
        });
        while sink.batches.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (0..5)
            .map(|i| {
                let g = group.clone();
                tokio::spawn(async move { g.store(&record(&format!("r{i}"))).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        hold.notify_one();
        assert!(first.await.unwrap().is_ok());
        while sink.batches.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        hold.notify_one();
        for r in rest {
            assert_eq!(r.await.unwrap(), Ok(Stored::AlreadyStored));
        }
        let batches = sink.batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[1].len(), 5, "the five waiting stores rode one batch: {batches:?}");
    }

    #[tokio::test]
    async fn a_conflict_is_stored_alone_so_the_caller_sees_what_is_stored() {
        let sink = Arc::new(Script {
            conflict: Some("c"),
            ..Script::default()
        });
        let group = GroupCommit::start(sink.clone(), 100, 1, Duration::ZERO);
        assert!(matches!(group.store(&record("c")).await, Ok(Stored::Conflict { .. })));
        assert_eq!(*sink.singles.lock().unwrap(), vec!["c".to_string()]);
    }

    /// Refused as a whole (one bad record) or failed as a whole (one unlucky request): every
    /// record is tried on its own.
    #[tokio::test]
    async fn a_shared_batch_that_fails_is_retried_record_by_record() {
        for failure in [ClientError::permanent("400"), ClientError::transient("503")] {
            let sink = Script {
                refuse_batch: Some(failure),
                ..Script::default()
            };
            let (answer_a, a) = oneshot::channel();
            let (answer_b, b) = oneshot::channel();
            answer(
                &sink,
                vec![
                    Waiting {
                        record: record("good"),
                        answer: answer_a,
                    },
                    Waiting {
                        record: record("bad"),
                        answer: answer_b,
                    },
                ],
            )
            .await;
            assert!(matches!((a.await, b.await), (Ok(Answer::Alone), Ok(Answer::Alone))));
        }
    }

    #[tokio::test]
    async fn the_failure_of_a_batch_of_one_is_its_callers_answer() {
        let sink = Arc::new(Script {
            refuse_batch: Some(ClientError::transient("503")),
            ..Script::default()
        });
        let group = GroupCommit::start(sink.clone(), 100, 1, Duration::ZERO);
        assert!(group.store(&record("a")).await.is_err_and(|e| !e.permanent));
        assert!(
            sink.singles.lock().unwrap().is_empty(),
            "no second attempt behind the caller's back"
        );
    }

    #[tokio::test]
    async fn one_id_twice_in_a_batch_is_posted_once_and_the_other_stored_alone() {
        let (answer_a, _a) = oneshot::channel();
        let (answer_b, b) = oneshot::channel();
        let sink = Script::default();
        answer(
            &sink,
            vec![
                Waiting {
                    record: record("x"),
                    answer: answer_a,
                },
                Waiting {
                    record: record("x"),
                    answer: answer_b,
                },
            ],
        )
        .await;
        assert_eq!(*sink.batches.lock().unwrap(), vec![vec!["x".to_string()]]);
        assert!(matches!(b.await, Ok(Answer::Alone)));
    }
}
