//! The finalizer protocol's floor, for `examples/bench_cleanup.rs` regime (b): a controller that
//! removes `kubernaut.ai/audit-persistence` from every deleting SignalProcessing and does nothing
//! else (no record, no annotations, no Events). Same kube-runtime Controller and concurrency (64)
//! as audit-guard's, and the same JSON Patch shape (test the finalizer at its index, remove it).
//!
//! `KUBECONFIG=… floor_controller` (runs until killed). Not part of the product.

use std::sync::Arc;
use std::time::Duration;

use audit_guard::crd::{SignalProcessing, FINALIZER};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Error(#[from] kube::Error);

async fn reconcile(sp: Arc<SignalProcessing>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let finalizers = sp.metadata.finalizers.as_deref().unwrap_or_default();
    let Some(index) = finalizers.iter().position(|f| f == FINALIZER) else {
        return Ok(Action::await_change());
    };
    if sp.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let ns = sp.namespace().unwrap_or_default();
    let api: Api<SignalProcessing> = Api::namespaced((*client).clone(), &ns);
    let path = format!("/metadata/finalizers/{index}");
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]))
    .map_err(|e| Error(kube::Error::SerdeError(e)))?;
    match api.patch(&sp.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(ae)) if ae.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

fn error_policy(_: Arc<SignalProcessing>, err: &Error, _: Arc<kube::Client>) -> Action {
    eprintln!("floor controller: {err}; retrying");
    Action::requeue(Duration::from_millis(200))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let api: Api<SignalProcessing> = Api::all(client.clone());
    println!("floor controller: watching SignalProcessings");
    Controller::new(api, watcher::Config::default().any_semantic())
        .with_config(Config::default().concurrency(64))
        .shutdown_on_signal()
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| futures::future::ready(()))
        .await;
    Ok(())
}
