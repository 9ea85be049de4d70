//! `audit-guard pre-delete-check`: the chart's opt-in pre-delete hook. It refuses an uninstall
//! while a SignalProcessing is being deleted with audit-guard's finalizer on it, since once the
//! controller is gone nothing would store its record or take the finalizer off.

use anyhow::{Context, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};

use crate::crd::{has_finalizer, SignalProcessing};

/// `namespace/name` of each object being deleted that still waits on audit-guard's finalizer.
pub fn waiting(objects: &[ObjectMeta]) -> Vec<String> {
    objects
        .iter()
        .filter(|m| m.deletion_timestamp.is_some() && has_finalizer(m.finalizers.as_deref()))
        .map(|m| {
            format!(
                "{}/{}",
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

/// Lists every SignalProcessing's metadata (only `list` is needed, and no spec can fail to
/// parse), prints the verdict; `Ok(false)` when the uninstall must stop.
pub async fn run() -> Result<bool> {
    let client = kube::Client::try_default().await.context("building the Kubernetes client")?;
    let api: Api<SignalProcessing> = Api::all(client);
    let mut metas = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list_metadata(&params).await.context("listing SignalProcessings")?;
        metas.extend(page.items.into_iter().map(|o| o.metadata));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let waiting = waiting(&metas);
    if waiting.is_empty() {
        println!("no SignalProcessing waits for audit-guard: uninstall may proceed");
        return Ok(true);
    }
    println!("refusing uninstall: these SignalProcessings are being deleted and wait for audit-guard to store their audit record:");
    for w in &waiting {
        println!("{w}");
    }
    println!("let audit-guard release them (they go once Data Storage holds their records), then uninstall again");
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FINALIZER;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(name: &str, deleting: bool, finalizers: &[&str]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            deletion_timestamp: deleting.then(|| Time(chrono::Utc::now())),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn only_objects_being_deleted_with_our_finalizer_wait() {
        let objects = [
            meta("deleting-ours", true, &["other.io/f", FINALIZER]),
            meta("deleting-other", true, &["other.io/f"]),
            meta("live-ours", false, &[FINALIZER]),
            meta("deleting-none", true, &[]),
        ];
        assert_eq!(waiting(&objects), vec!["team-a/deleting-ours".to_string()]);
        assert!(waiting(&[]).is_empty());
    }
}
