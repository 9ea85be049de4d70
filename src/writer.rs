//! The buffered audit writer (ADR-038): enqueue never blocks, one worker batches and
//! retries. A record it drops is not lost: the deletion path stores it synchronously later.
//! Only what Data Storage confirms per record counts as written. A conflict (a different
//! record under the id: typically the deletion path already stored the CR's record from a
//! later status) is counted and the writer's record is stored as an amendment of it, like
//! the deletion path does, so the completion-time content is kept too; an identical
//! amendment already stored is the same content, not a second copy.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::SignalProcessingAudit;
use crate::client::{BatchOutcome, ClientError, Stored};
use crate::metrics;
use crate::retry::backoff;

/// Where the writer sends its batches.
pub trait BatchSink: Send + Sync + 'static {
    fn store_batch<'a>(&'a self, records: &'a [SignalProcessingAudit]) -> BoxFuture<'a, Result<BatchOutcome, ClientError>>;
    fn store_one<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>>;
    /// Stores `record` as an amendment of the different record held under its id
    /// (append-only: both stay visible).
    fn amend<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>>;
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub buffer_size: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            buffer_size: 10_000,
            batch_size: 500,
            flush_interval: Duration::from_secs(1),
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(30),
        }
    }
}

/// This writer's own counts (the Prometheus metrics are process-wide).
#[derive(Debug, Default)]
pub struct Stats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub batches_failed: AtomicU64,
    /// Records refused because a different record holds their id.
    pub conflicts: AtomicU64,
    /// Of those, stored as amendments (now, or found already stored with the same content).
    pub amended: AtomicU64,
    /// Records accepted and not yet settled (stored, conflicted or dropped): queued, or in the
    /// batch being written. What an aborted worker leaves behind. Changed only through
    /// [`Stats::add_pending`] and [`Stats::take_pending`], which move the process-wide
    /// `audit_buffer_size` gauge by the same amount, so the two cannot drift apart.
    pub pending: AtomicI64,
}

impl Stats {
    fn add_pending(&self, n: i64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
        metrics::BUFFER_SIZE.add(n);
    }

    /// Everything still pending, now counted out.
    fn take_pending(&self) -> i64 {
        let left = self.pending.swap(0, Ordering::Relaxed).max(0);
        metrics::BUFFER_SIZE.sub(left);
        left
    }
}

pub struct AuditWriter {
    tx: mpsc::Sender<SignalProcessingAudit>,
    stats: Arc<Stats>,
    started: std::time::Instant,
    /// Milliseconds after `started` of the last drop warning (0: none yet).
    last_drop_log_ms: AtomicU64,
    stop: CancellationToken,
    worker: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl AuditWriter {
    /// Starts the worker.
    pub fn start(sink: Arc<dyn BatchSink>, cfg: WriterConfig) -> Self {
        let (tx, rx) = mpsc::channel(cfg.buffer_size.max(1));
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let worker = Worker {
            sink,
            cfg,
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let handle = tokio::spawn(worker.run(rx));
        Self {
            tx,
            stats,
            started: std::time::Instant::now(),
            last_drop_log_ms: AtomicU64::new(0),
            stop,
            worker: tokio::sync::Mutex::new(Some(handle)),
        }
    }

    /// Hands a record to the worker; never waits. False (and counted) when the buffer is full.
    pub fn enqueue(&self, record: SignalProcessingAudit) -> bool {
        // Counted before the send: the worker may settle the record before this returns.
        self.stats.add_pending(1);
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(e) => {
                self.stats.add_pending(-1);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "buffer full",
                    mpsc::error::TrySendError::Closed(_) => "writer stopped",
                };
                self.count_dropped(1);
                // One warning per second at most: a full buffer during a mass deletion would
                // otherwise format and write a log line per record, on the reconcile's time.
                let now = self.started.elapsed().as_millis() as u64;
                let last = self.last_drop_log_ms.load(Ordering::Relaxed);
                if (last == 0 || now.saturating_sub(last) >= 1_000)
                    && self
                        .last_drop_log_ms
                        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    let dropped_total = self.stats.dropped.load(Ordering::Relaxed);
                    tracing::warn!(
                        why,
                        dropped_total,
                        "audit record dropped by the buffered writer; the deletion path will store it"
                    );
                }
                false
            }
        }
    }

    fn count_dropped(&self, n: u64) {
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        metrics::DROPPED.inc_by(n);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops taking records and flushes what is buffered, for at most `bound`; whatever is
    /// still unwritten then is counted as dropped.
    pub async fn shutdown(&self, bound: Duration) {
        self.stop.cancel();
        let Some(mut handle) = self.worker.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(bound, &mut handle).await.is_err() {
            handle.abort();
            // Wait for the aborted worker to be dropped, so the buffer is closed from here on.
            let _ = handle.await;
            // What is still queued and the batch the aborted worker held: neither will be
            // written by this writer, and both were counted into the buffer gauge. (The queue
            // itself cannot tell: dropping the receiver emptied it.)
            let left = self.stats.take_pending();
            tracing::warn!(left, "buffered writer did not flush within the shutdown bound");
            self.count_dropped(left as u64);
        }
    }
}

struct Worker {
    sink: Arc<dyn BatchSink>,
    cfg: WriterConfig,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<SignalProcessingAudit>) {
        let max = self.cfg.batch_size.max(1);
        let mut batch: Vec<SignalProcessingAudit> = Vec::with_capacity(max);
        let mut tick = tokio::time::interval(self.cfg.flush_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                received = rx.recv() => match received {
                    Some(r) => {
                        batch.push(r);
                        if batch.len() >= max {
                            self.flush(&mut batch).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.flush(&mut batch).await;
                    }
                }
            }
        }
        // Shutdown: no new records are taken; write what is buffered.
        rx.close();
        while let Some(r) = rx.recv().await {
            batch.push(r);
            if batch.len() >= max {
                self.flush(&mut batch).await;
            }
        }
        if !batch.is_empty() {
            self.flush(&mut batch).await;
        }
    }

    /// Writes the batch, retrying transient failures with jittered backoff until Data Storage
    /// answers for it; records it answers without confirming, and every record of a permanently
    /// rejected batch, are then stored one by one, so one bad record does not take its
    /// neighbours down with it.
    async fn flush(&self, batch: &mut Vec<SignalProcessingAudit>) {
        let n = batch.len() as u64;
        let mut attempt = 0u32;
        loop {
            match self.sink.store_batch(batch).await {
                Ok(outcome) => {
                    self.written(&outcome.stored);
                    if !outcome.queued.is_empty() {
                        // Queued by Data Storage (202): POSTing again would store a second copy
                        // once its dead-letter queue replays; the deletion path polls for them.
                        tracing::info!(
                            records = outcome.queued.len(),
                            "Data Storage queued audit events in its dead-letter queue; left to the deletion path, which polls for them"
                        );
                    }
                    let rest: Vec<&SignalProcessingAudit> = batch.iter().filter(|r| outcome.unconfirmed.contains(&r.id)).collect();
                    let conflicts: Vec<&SignalProcessingAudit> = batch.iter().filter(|r| outcome.conflicts.contains(&r.id)).collect();
                    self.settle(n - (rest.len() + conflicts.len()) as u64);
                    for r in conflicts {
                        self.amend(r).await;
                        self.settle(1);
                    }
                    if !rest.is_empty() {
                        tracing::warn!(
                            records = rest.len(),
                            "Data Storage answered a batch without confirming some records; storing those one by one"
                        );
                        self.one_by_one(rest).await;
                    }
                    break;
                }
                Err(e) if e.permanent => {
                    self.failed_batch();
                    tracing::error!(error = %e, records = n, "Data Storage rejected an audit batch; storing its records one by one");
                    self.one_by_one(batch.iter().collect()).await;
                    break;
                }
                Err(e) => {
                    self.failed_batch();
                    let jitter = rand::random::<f64>();
                    let delay = e
                        .retry_after
                        .unwrap_or_else(|| backoff(attempt, self.cfg.retry_base, self.cfg.retry_cap, jitter));
                    tracing::warn!(error = %e, records = n, ?delay, "audit batch not stored; retrying");
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
        batch.clear();
    }

    /// `n` records of the batch are answered for: out of the buffer gauge and no longer pending.
    fn settle(&self, n: u64) {
        self.stats.add_pending(-(n as i64));
    }

    async fn one_by_one(&self, records: Vec<&SignalProcessingAudit>) {
        for r in records {
            let answer = self.sink.store_one(r).await;
            match answer {
                Ok(Stored::Conflict { .. }) => self.amend(r).await,
                Ok(_) => self.written(std::slice::from_ref(&r.id)),
                Err(e) if e.kind == crate::client::FailureKind::Queued => {
                    tracing::info!(id = %r.id, "Data Storage queued the audit event; left to the deletion path, which polls for it");
                }
                Err(e) => {
                    self.dropped();
                    tracing::error!(id = %r.id, error = %e, "audit record not stored by the buffered writer; the deletion path will retry it");
                }
            }
            self.settle(1);
        }
    }

    fn written(&self, ids: &[String]) {
        self.stats.written.fetch_add(ids.len() as u64, Ordering::Relaxed);
        metrics::WRITTEN.inc_by(ids.len() as u64);
    }

    /// A different record holds the id: counted, and ours stored as its amendment, retrying
    /// what may pass later with backoff (as a batch is) so that its content is not lost.
    async fn amend(&self, r: &SignalProcessingAudit) {
        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        metrics::RECORD_CONFLICTS.with_label_values(&["writer"]).inc();
        let mut attempt = 0u32;
        loop {
            match self.sink.amend(r).await {
                Ok(stored) => {
                    self.stats.amended.fetch_add(1, Ordering::Relaxed);
                    let new = stored == Stored::Created;
                    tracing::warn!(id = %r.id, new, "Data Storage held a different record under this id; the buffered writer's record is stored as its amendment, both are kept");
                    return;
                }
                Err(e) if e.kind == crate::client::FailureKind::Queued => {
                    tracing::info!(id = %r.id, "Data Storage queued the amendment event; left to the deletion path, which polls for it");
                    return;
                }
                Err(e) if e.permanent => {
                    self.dropped();
                    tracing::error!(id = %r.id, error = %e, "Data Storage rejected the buffered writer's amendment for good");
                    return;
                }
                Err(e) => {
                    let delay = e
                        .retry_after
                        .unwrap_or_else(|| backoff(attempt, self.cfg.retry_base, self.cfg.retry_cap, rand::random::<f64>()));
                    tracing::warn!(id = %r.id, error = %e, ?delay, "amendment not stored; retrying");
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn dropped(&self) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::DROPPED.inc();
    }

    fn failed_batch(&self) {
        self.stats.batches_failed.fetch_add(1, Ordering::Relaxed);
        metrics::BATCHES_FAILED.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    /// Scripted answers per batch call, then success; remembers what it stored. Ids in
    /// `conflict_ids` get "conflict", ids in `unanswered_ids` no result at all in a batch (and
    /// "conflict" on their own when in both). Amendments
    /// get the scripted answers of `amend_script`, then are stored (once per id: a second one
    /// is "already stored").
    #[derive(Default)]
    struct FakeSink {
        script: Mutex<Vec<Result<(), ClientError>>>,
        batches: Mutex<Vec<Vec<String>>>,
        singles: Mutex<Vec<String>>,
        amend_script: Mutex<Vec<ClientError>>,
        amend_calls: Mutex<usize>,
        amendments: Mutex<Vec<String>>,
        reject_id: Option<String>,
        conflict_ids: Vec<String>,
        unanswered_ids: Vec<String>,
        gate: Option<tokio::sync::Semaphore>,
    }

    impl BatchSink for FakeSink {
        fn store_batch<'a>(&'a self, records: &'a [SignalProcessingAudit]) -> BoxFuture<'a, Result<BatchOutcome, ClientError>> {
            Box::pin(async move {
                if let Some(g) = &self.gate {
                    let _ = g.acquire().await;
                }
                let next = {
                    let mut s = self.script.lock().unwrap();
                    if s.is_empty() {
                        None
                    } else {
                        Some(s.remove(0))
                    }
                };
                if let Some(Err(e)) = next {
                    return Err(e);
                }
                if let Some(bad) = &self.reject_id {
                    if records.iter().any(|r| &r.id == bad) {
                        return Err(perm());
                    }
                }
                let mut outcome = BatchOutcome::default();
                for r in records {
                    if self.unanswered_ids.contains(&r.id) {
                        outcome.unconfirmed.push(r.id.clone());
                    } else if self.conflict_ids.contains(&r.id) {
                        outcome.conflicts.push(r.id.clone());
                    } else {
                        outcome.stored.push(r.id.clone());
                    }
                }
                self.batches.lock().unwrap().push(outcome.stored.clone());
                Ok(outcome)
            })
        }
        fn store_one<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
            Box::pin(async move {
                if self.reject_id.as_ref() == Some(&record.id) {
                    return Err(perm());
                }
                if self.conflict_ids.contains(&record.id) {
                    return Ok(Stored::Conflict {
                        existing: serde_json::Value::Null,
                    });
                }
                self.singles.lock().unwrap().push(record.id.clone());
                Ok(Stored::Created)
            })
        }
        fn amend<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
            Box::pin(async move {
                *self.amend_calls.lock().unwrap() += 1;
                let scripted = {
                    let mut s = self.amend_script.lock().unwrap();
                    (!s.is_empty()).then(|| s.remove(0))
                };
                if let Some(e) = scripted {
                    return Err(e);
                }
                let mut stored = self.amendments.lock().unwrap();
                if stored.contains(&record.id) {
                    return Ok(Stored::AlreadyStored);
                }
                stored.push(record.id.clone());
                Ok(Stored::Created)
            })
        }
    }

    fn perm() -> ClientError {
        ClientError::permanent("bad")
    }

    fn transient(retry_after: Option<Duration>) -> ClientError {
        ClientError {
            retry_after,
            ..ClientError::transient("down")
        }
    }

    fn rec(i: usize) -> SignalProcessingAudit {
        serde_json::from_value(json!({
            "id": format!("id-{i}"), "remediation_id": "rr", "signal_fingerprint": "fp", "processing_phases": [],
            "completed_at": "2025-11-27T10:00:02Z", "status": "completed"
        }))
        .unwrap()
    }

    fn cfg(buffer: usize, batch: usize) -> WriterConfig {
        WriterConfig {
            buffer_size: buffer,
            batch_size: batch,
            flush_interval: Duration::from_secs(1),
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_bounded_and_everything_is_written() {
        let sink = Arc::new(FakeSink::default());
        let w = AuditWriter::start(sink.clone(), cfg(100, 4));
        for i in 0..10 {
            assert!(w.enqueue(rec(i)));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let batches = sink.batches.lock().unwrap().clone();
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        assert_eq!(batches.concat().len(), 10);
        assert_eq!(w.stats().written.load(Ordering::Relaxed), 10);
        w.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_is_flushed_by_the_interval() {
        let sink = Arc::new(FakeSink::default());
        let w = AuditWriter::start(sink.clone(), cfg(100, 500));
        w.enqueue(rec(1));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(sink.batches.lock().unwrap().clone(), vec![vec!["id-1".to_string()]]);
        w.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_honouring_retry_after() {
        let sink = Arc::new(FakeSink {
            script: Mutex::new(vec![Err(transient(None)), Err(transient(Some(Duration::from_secs(60))))]),
            ..Default::default()
        });
        let w = AuditWriter::start(sink.clone(), cfg(100, 500));
        w.enqueue(rec(1));
        tokio::time::sleep(Duration::from_secs(30)).await;
        // Still inside the 60 s Retry-After.
        assert!(sink.batches.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(sink.batches.lock().unwrap().len(), 1);
        assert_eq!(w.stats().batches_failed.load(Ordering::Relaxed), 2);
        w.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_rejection_is_not_retried_and_spares_the_neighbours() {
        let sink = Arc::new(FakeSink {
            reject_id: Some("id-2".into()),
            ..Default::default()
        });
        let w = AuditWriter::start(sink.clone(), cfg(100, 500));
        for i in 1..=3 {
            w.enqueue(rec(i));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sink.singles.lock().unwrap().clone(), vec!["id-1".to_string(), "id-3".to_string()]);
        assert_eq!(w.stats().dropped.load(Ordering::Relaxed), 1);
        assert_eq!(w.stats().batches_failed.load(Ordering::Relaxed), 1);
        w.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn full_buffer_drops_without_blocking() {
        // The sink never answers, so nothing leaves the buffer.
        let sink = Arc::new(FakeSink {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..Default::default()
        });
        let w = AuditWriter::start(sink, cfg(3, 1));
        tokio::task::yield_now().await;
        let accepted = (0..10).filter(|i| w.enqueue(rec(*i))).count();
        assert!(accepted <= 4, "accepted {accepted}");
        assert_eq!(w.stats().dropped.load(Ordering::Relaxed), (10 - accepted) as u64);
        // Shutdown is bounded even though the sink hangs.
        w.shutdown(Duration::from_secs(2)).await;
        assert_eq!(
            w.stats().dropped.load(Ordering::Relaxed),
            10,
            "the accepted ones too, once the worker is aborted"
        );
        assert!(!w.enqueue(rec(99)));
    }

    /// Leadership lost mid-flush: the batch the aborted worker held is counted as dropped and
    /// leaves the buffer gauge with what was still queued (it used to stay in the gauge).
    #[tokio::test(start_paused = true)]
    async fn an_aborted_flush_counts_its_batch_as_dropped() {
        let sink = Arc::new(FakeSink {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..Default::default()
        });
        let w = AuditWriter::start(sink, cfg(100, 2));
        for i in 0..5 {
            assert!(w.enqueue(rec(i)));
        }
        // The worker takes the first batch of 2 and hangs on the sink; 3 stay queued.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.stats().pending.load(Ordering::Relaxed), 5);
        w.shutdown(Duration::from_secs(1)).await;
        assert_eq!(w.stats().dropped.load(Ordering::Relaxed), 5, "2 in flight + 3 queued");
        assert_eq!(w.stats().pending.load(Ordering::Relaxed), 0);
        assert_eq!(w.stats().written.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_settled_flush_leaves_nothing_in_flight() {
        let sink = Arc::new(FakeSink {
            reject_id: Some("id-2".into()),
            unanswered_ids: vec!["id-3".into()],
            ..Default::default()
        });
        let w = AuditWriter::start(sink, cfg(100, 500));
        for i in 1..=4 {
            w.enqueue(rec(i));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(w.stats().pending.load(Ordering::Relaxed), 0);
        w.shutdown(Duration::from_secs(1)).await;
        assert_eq!(w.stats().pending.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_what_is_buffered() {
        let sink = Arc::new(FakeSink::default());
        let w = AuditWriter::start(sink.clone(), cfg(100, 500));
        for i in 0..5 {
            w.enqueue(rec(i));
        }
        w.shutdown(Duration::from_secs(5)).await;
        assert_eq!(sink.batches.lock().unwrap().concat().len(), 5);
    }

    /// A conflict is not written: the record is stored as an amendment of what Data Storage
    /// holds (so its content is kept); a record the answer did not confirm is stored on its
    /// own before it counts.
    #[tokio::test(start_paused = true)]
    async fn conflicts_are_amended_and_unanswered_records_are_stored_one_by_one() {
        let sink = Arc::new(FakeSink {
            conflict_ids: vec!["id-2".into()],
            unanswered_ids: vec!["id-3".into()],
            ..Default::default()
        });
        let w = AuditWriter::start(sink.clone(), cfg(100, 500));
        for i in 1..=3 {
            w.enqueue(rec(i));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            sink.batches.lock().unwrap().clone(),
            vec![vec!["id-1".to_string()]],
            "one batch, no retry"
        );
        assert_eq!(sink.singles.lock().unwrap().clone(), vec!["id-3".to_string()]);
        assert_eq!(sink.amendments.lock().unwrap().clone(), vec!["id-2".to_string()]);
        assert_eq!(w.stats().written.load(Ordering::Relaxed), 2);
        assert_eq!(w.stats().conflicts.load(Ordering::Relaxed), 1);
        assert_eq!(w.stats().amended.load(Ordering::Relaxed), 1);
        assert_eq!(w.stats().dropped.load(Ordering::Relaxed), 0);
        assert_eq!(w.stats().pending.load(Ordering::Relaxed), 0);
        w.shutdown(Duration::from_secs(1)).await;
    }

    /// An amendment Data Storage could not take now is retried until it is stored; one already
    /// stored with the same content is done (no second copy); one refused for good is dropped
    /// and counted. A conflict met storing one by one is amended the same way.
    #[tokio::test(start_paused = true)]
    async fn amendments_are_retried_never_duplicated() {
        let sink = Arc::new(FakeSink {
            conflict_ids: vec!["id-1".into(), "id-2".into()],
            amend_script: Mutex::new(vec![transient(None), transient(None)]),
            ..Default::default()
        });
        let w = AuditWriter::start(sink.clone(), cfg(100, 500));
        w.enqueue(rec(1));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*sink.amend_calls.lock().unwrap(), 3, "two failures, then stored");
        assert_eq!(sink.amendments.lock().unwrap().clone(), vec!["id-1".to_string()]);
        // The same record again (a new leader meets the completed CR): already amended.
        w.enqueue(rec(1));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sink.amendments.lock().unwrap().clone(), vec!["id-1".to_string()], "no second copy");
        assert_eq!(w.stats().amended.load(Ordering::Relaxed), 2);
        sink.amend_script.lock().unwrap().push(perm());
        w.enqueue(rec(2));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(w.stats().dropped.load(Ordering::Relaxed), 1);
        assert_eq!(w.stats().conflicts.load(Ordering::Relaxed), 3);
        assert_eq!(w.stats().pending.load(Ordering::Relaxed), 0);
        w.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_met_one_by_one_is_amended() {
        let sink = Arc::new(FakeSink {
            conflict_ids: vec!["id-2".into()],
            unanswered_ids: vec!["id-2".into()],
            ..Default::default()
        });
        let w = AuditWriter::start(sink.clone(), cfg(100, 500));
        w.enqueue(rec(2));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sink.amendments.lock().unwrap().clone(), vec!["id-2".to_string()]);
        assert_eq!(w.stats().pending.load(Ordering::Relaxed), 0);
        w.shutdown(Duration::from_secs(1)).await;
    }
}
