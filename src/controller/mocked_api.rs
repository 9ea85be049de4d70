//! One reconcile against a scripted API server: a `tower` service stands in for kube-apiserver,
//! answering the requests the reconcile is expected to make in order and keeping what it was
//! sent, and a sink in memory stands in for Data Storage. What is asserted is the wire: which
//! requests, to which paths, with which JSON patches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::*;
use crate::audit::break_glass::BreakGlassEvent;
use crate::audit::SignalProcessingAudit;
use crate::client::{BatchOutcome, ClaimConfirmation, ClientSettings, DataStorageClient, Stored};
use crate::confirmed::confirmed_records;
use crate::crd::FINALIZER;
use crate::writer::{BatchSink, WriterConfig};

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client whose API server answers `answers` (status, body) in order, and what it was sent
/// (method, path, JSON body or null).
fn scripted_api(answers: Vec<(u16, Value)>) -> (kube::Client, Seen) {
    let seen: Seen = Arc::default();
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let log = seen.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (log, answers) = (log.clone(), answers.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)?
            };
            log.lock()
                .expect("request log")
                .push((parts.method.to_string(), parts.uri.path().to_string(), body));
            let next = answers.lock().expect("answers").pop_front();
            let (status, answer) = next.unwrap_or((500, status_body(500, "a request the script did not expect")));
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(serde_json::to_vec(&answer)?))?;
            Ok::<_, BoxError>(response)
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn status_body(code: u16, message: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": "Invalid", "code": code })
}

/// Data Storage in memory: every single store is created and kept.
struct InMemory {
    http: DataStorageClient,
    stored: Mutex<Vec<SignalProcessingAudit>>,
}

fn not_on_this_path<T: Send + 'static>() -> BoxFuture<'static, Result<T, ClientError>> {
    Box::pin(async { Err(ClientError::permanent("not called on the deletion path")) })
}

impl BatchSink for InMemory {
    fn store_batch<'a>(&'a self, _records: &'a [SignalProcessingAudit]) -> BoxFuture<'a, Result<BatchOutcome, ClientError>> {
        not_on_this_path()
    }
    fn store_one<'a>(&'a self, record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        self.stored.lock().expect("stored").push(record.clone());
        Box::pin(async { Ok(Stored::Created) })
    }
    fn amend<'a>(&'a self, _record: &'a SignalProcessingAudit) -> BoxFuture<'a, Result<Stored, ClientError>> {
        not_on_this_path()
    }
}

impl RecordSink for InMemory {
    fn client(&self) -> &DataStorageClient {
        &self.http
    }
    fn record_held<'a>(&'a self, _id: &'a str, _remediation_id: &'a str) -> BoxFuture<'a, Result<bool, ClientError>> {
        not_on_this_path()
    }
    fn store_break_glass<'a>(
        &'a self,
        _event: &'a BreakGlassEvent,
        _forced: &'a SignalProcessingAudit,
    ) -> BoxFuture<'a, Result<Stored, ClientError>> {
        not_on_this_path()
    }
    fn store_claim<'a>(&'a self, _claim: &'a BreakGlassEvent) -> BoxFuture<'a, Result<Option<Stored>, ClientError>> {
        not_on_this_path()
    }
    fn confirm_removal<'a>(
        &'a self,
        _uid: &'a str,
        _observed_at: chrono::DateTime<Utc>,
    ) -> BoxFuture<'a, Result<ClaimConfirmation, ClientError>> {
        not_on_this_path()
    }
    fn differing(&self, _existing: &Value, _record: &SignalProcessingAudit) -> Vec<String> {
        Vec::new()
    }
    fn groups_deletions(&self) -> bool {
        false
    }
    fn unanswered_may_be_queued(&self) -> bool {
        false
    }
    fn batch_sink(self: Arc<Self>) -> Arc<dyn BatchSink> {
        self
    }
}

fn context(client: kube::Client) -> (Arc<Context>, Arc<InMemory>) {
    let settings = ClientSettings {
        // Never dialled: the sink answers from memory.
        url: "http://127.0.0.1:9".into(),
        ca_file: None,
        token_file: None,
        allow_plain_http_token: false,
        timeout: Duration::from_secs(1),
    };
    let sink = Arc::new(InMemory {
        http: DataStorageClient::new(&settings).expect("client"),
        stored: Mutex::default(),
    });
    let writer = Arc::new(AuditWriter::start(sink.clone().batch_sink(), WriterConfig::default()));
    let ds: Arc<dyn RecordSink> = sink.clone();
    let ctx = Context::new(client, ds, writer, Arc::new(confirmed_records()), "test");
    (Arc::new(ctx), sink)
}

/// `held` in `team-a`, being deleted with our finalizer (after another party's) on, at
/// `resource_version`, in `phase`.
fn in_deletion(resource_version: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
        "metadata": {
            "name": "held", "namespace": "team-a", "uid": "uid-held", "resourceVersion": resource_version,
            "creationTimestamp": "2025-11-27T10:00:00Z", "deletionTimestamp": "2025-11-27T11:00:00Z",
            "finalizers": ["example.com/other", FINALIZER]
        },
        "spec": { "remediationRequestRef": { "name": "rr-held" }, "signal": { "fingerprint": "fp-held" } },
        "status": { "phase": phase }
    })
}

fn released(mut obj: Value) -> Value {
    obj["metadata"]["finalizers"] = json!(["example.com/other"]);
    obj
}

const PATH: &str = "/apis/kubernaut.ai/v1alpha1/namespaces/team-a/signalprocessings/held";

/// The release patch of version `rv`: tests that version and our finalizer at index 1, removes
/// it, and annotates where the record went.
fn assert_release_patch(patch: &Value, rv: &str) {
    let ops = patch.as_array().expect("a JSON patch");
    assert_eq!(
        ops[0],
        json!({ "op": "test", "path": "/metadata/resourceVersion", "value": rv }),
        "{patch}"
    );
    assert_eq!(
        ops[1],
        json!({ "op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER }),
        "{patch}"
    );
    assert_eq!(ops[2], json!({ "op": "remove", "path": "/metadata/finalizers/1" }), "{patch}");
    let annotated: Vec<&str> = ops[3..].iter().filter_map(|op| op["path"].as_str()).collect();
    assert!(
        annotated.iter().any(|p| p.contains("record-id")) && annotated.iter().any(|p| p.contains("persisted-at")),
        "{patch}"
    );
}

fn object(v: Value) -> Arc<SignalProcessing> {
    Arc::new(serde_json::from_value(v).expect("a SignalProcessing"))
}

#[tokio::test]
async fn a_signalprocessing_in_deletion_is_stored_then_released_by_one_patch() {
    let (client, seen) = scripted_api(vec![(200, released(in_deletion("42", "Completed")))]);
    let (ctx, sink) = context(client);

    let requeue = reconcile_once(object(in_deletion("42", "Completed")), ctx)
        .await
        .expect("reconciled");

    assert_eq!(requeue, Requeue::await_change());
    let stored = sink.stored.lock().expect("stored").clone();
    assert_eq!(stored.len(), 1, "one record stored before the release");
    assert_eq!(stored[0].remediation_id, "rr-held");
    let seen = seen.lock().expect("requests").clone();
    assert_eq!(seen.len(), 1, "one request, the release: {seen:?}");
    let (method, path, patch) = &seen[0];
    assert_eq!((method.as_str(), path.as_str()), ("PATCH", PATH));
    assert_release_patch(patch, "42");
}

#[tokio::test]
async fn a_release_refused_for_a_changed_object_reads_it_stores_it_again_and_releases_that_version() {
    let (client, seen) = scripted_api(vec![
        (422, status_body(422, "the resourceVersion test failed")),
        (200, in_deletion("43", "Failed")),
        (200, released(in_deletion("43", "Failed"))),
    ]);
    let (ctx, sink) = context(client);

    reconcile_once(object(in_deletion("42", "Completed")), ctx)
        .await
        .expect("reconciled");

    let stored = sink.stored.lock().expect("stored").clone();
    let statuses: Vec<String> = stored.iter().map(|r| r.status.as_str().to_string()).collect();
    assert_eq!(
        statuses,
        ["completed", "failed"],
        "the record of each version, the changed one last"
    );
    let seen = seen.lock().expect("requests").clone();
    let calls: Vec<(&str, &str)> = seen.iter().map(|(m, p, _)| (m.as_str(), p.as_str())).collect();
    assert_eq!(calls, [("PATCH", PATH), ("GET", PATH), ("PATCH", PATH)], "{seen:?}");
    assert_release_patch(&seen[0].2, "42");
    assert_release_patch(&seen[2].2, "43");
}
