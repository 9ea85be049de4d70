//! Retention cleaner: deletes finished SignalProcessings whose completionTime is older than
//! the retention, for clusters where nothing else does. The finalizer still guards each delete,
//! and each carries the uid it judged as a precondition: a namesake created since is not touched.

use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::ResourceExt;
use tokio_util::sync::CancellationToken;

use crate::controller::decisions::should_expire;
use crate::crd::SignalProcessing;
use crate::metrics;

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
