//! Retention cleaner: deletes finished SignalProcessings whose completionTime is older than
//! the retention, for clusters where nothing else does. The finalizer still guards each delete,
//! and each carries the uid it judged as a precondition: a namesake created since is not touched.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::ResourceExt;
use tokio_util::sync::CancellationToken;

use crate::crd::SignalProcessing;
use crate::metrics;

/// Should the retention cleaner delete this CR now? Only a finished one past the retention,
/// not already being deleted, and already guarded by the finalizer: deleting one the
/// controller has not backfilled yet could lose its record where no webhook stands in the way.
pub fn should_expire(sp: &SignalProcessing, retention: Duration, now: DateTime<Utc>) -> bool {
    !sp.is_deleting() && sp.has_finalizer() && expired(sp.status.as_ref().and_then(|s| s.completion_time), retention, now)
}

/// Whether `completion` lies more than `retention` before `now`; a zero retention never expires.
pub fn expired(completion: Option<DateTime<Utc>>, retention: Duration, now: DateTime<Utc>) -> bool {
    if retention.is_zero() {
        return false;
    }
    let Some(done) = completion else { return false };
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return false;
    };
    now.signed_duration_since(done) > retention
}

/// Deletes what is expired now; returns how many deletions were issued.
pub async fn sweep(client: &kube::Client, namespaces: &[String], retention: Duration) -> Result<usize, kube::Error> {
    let apis: Vec<Api<SignalProcessing>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    let now = Utc::now();
    let mut deleted = 0;
    for api in apis {
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await?;
            for sp in page.items.iter().filter(|sp| should_expire(sp, retention, now)) {
                let (Some(ns), Some(uid)) = (sp.namespace(), sp.uid()) else {
                    continue;
                };
                let ns_api: Api<SignalProcessing> = Api::namespaced(client.clone(), &ns);
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match ns_api.delete(&sp.name_any(), &params).await {
                    Ok(_) => {
                        deleted += 1;
                        metrics::RETENTION_DELETES.inc();
                        tracing::info!(%ns, name = %sp.name_any(), "retention: deleted expired SignalProcessing");
                    }
                    // Gone, or replaced by a namesake (precondition failed): not ours to delete.
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => tracing::warn!(%ns, name = %sp.name_any(), error = %e, "retention: delete failed"),
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(deleted)
}

/// Sweeps every `interval` until `stop`; a zero retention disables the cleaner.
pub async fn run(client: kube::Client, namespaces: Vec<String>, retention: Duration, interval: Duration, stop: CancellationToken) {
    if retention.is_zero() {
        tracing::info!("retention cleaner disabled");
        return;
    }
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep(&client, &namespaces, retention).await {
            tracing::warn!(error = %e, "retention sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::test_support::sp;
    use crate::crd::FINALIZER;
    use serde_json::{json, Value};

    #[test]
    fn retention_expires_only_guarded_finished_crs_past_the_retention() {
        let day = Duration::from_secs(86_400);
        let now: DateTime<Utc> = "2025-01-03T00:00:00Z".parse().unwrap();
        let with_completion = |meta: Value, done: &str| {
            let mut o = sp(meta, Some("Completed"));
            o.status.as_mut().unwrap().completion_time = Some(done.parse().unwrap());
            o
        };
        let guarded = json!({ "name": "a", "finalizers": [FINALIZER] });
        assert!(should_expire(&with_completion(guarded.clone(), "2025-01-01T00:00:00Z"), day, now));
        assert!(!should_expire(&with_completion(guarded.clone(), "2025-01-02T12:00:00Z"), day, now));
        assert!(!should_expire(
            &with_completion(json!({ "name": "a" }), "2025-01-01T00:00:00Z"),
            day,
            now
        ));
        let deleting = json!({ "name": "a", "finalizers": [FINALIZER], "deletionTimestamp": "2025-01-02T00:00:00Z" });
        assert!(!should_expire(&with_completion(deleting, "2025-01-01T00:00:00Z"), day, now));
        assert!(!should_expire(&sp(guarded, Some("Completed")), day, now));
    }

    #[test]
    fn retention() {
        let now: DateTime<Utc> = "2025-11-28T12:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        assert!(expired(Some("2025-11-27T11:59:00Z".parse().unwrap()), day, now));
        assert!(!expired(Some("2025-11-27T12:01:00Z".parse().unwrap()), day, now));
        assert!(!expired(None, day, now));
        assert!(!expired(Some("2020-01-01T00:00:00Z".parse().unwrap()), Duration::ZERO, now));
    }
}
