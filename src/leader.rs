//! Leader election on a coordination.k8s.io/v1 Lease, with optimistic concurrency: every
//! write carries the resourceVersion we read, so two replicas can never both win a round.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// What to do with the Lease as we last read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it: renew.
    Renew,
    /// Free, released or expired: take it (a new term).
    Acquire,
    /// Someone else holds a live lease.
    Wait,
}

/// The decision, from the Lease's spec and the current time.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: DateTime<Utc>) -> LeaseDecision {
    let Some(spec) = spec else { return LeaseDecision::Acquire };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return LeaseDecision::Acquire;
    };
    let duration = chrono::Duration::seconds(spec.lease_duration_seconds.unwrap_or(15).max(1).into());
    if renewed.0 + duration < now {
        LeaseDecision::Acquire
    } else {
        LeaseDecision::Wait
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One round: Ok(true) while we hold the Lease after this call.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Utc::now();
        let current = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let old = lease.spec.clone().unwrap_or_default();
        let new_spec = match decide(Some(&old), &self.identity, now) {
            LeaseDecision::Wait => return Ok(false),
            LeaseDecision::Renew => {
                let acquired = old.acquire_time.map(|t| t.0).unwrap_or(now);
                self.spec(acquired, now, old.lease_transitions.unwrap_or(0))
            }
            LeaseDecision::Acquire => self.spec(now, now, old.lease_transitions.unwrap_or(0).saturating_add(1)),
        };
        lease.spec = Some(new_spec);
        // replace() sends the resourceVersion we read: a concurrent writer makes this 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: DateTime<Utc>, renewed: DateTime<Utc>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_secs()),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the Lease up (clears holderIdentity) if we still hold it, so a successor need
    /// not wait for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        self.api.replace(&self.name, &PostParams::default(), &lease).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: Option<&str>, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            renew_time: renewed.map(|t| MicroTime(t.parse().unwrap())),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now: DateTime<Utc> = "2025-11-27T10:00:20Z".parse().unwrap();
        assert_eq!(decide(None, "a", now), LeaseDecision::Acquire);
        assert_eq!(
            decide(Some(&spec(Some("a"), Some("2025-11-27T10:00:00Z"), 15)), "a", now),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), Some("2025-11-27T10:00:10Z"), 15)), "a", now),
            LeaseDecision::Wait
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), Some("2025-11-27T10:00:00Z"), 15)), "a", now),
            LeaseDecision::Acquire
        );
        assert_eq!(decide(Some(&spec(None, None, 15)), "a", now), LeaseDecision::Acquire);
        assert_eq!(
            decide(Some(&spec(Some(""), Some("2025-11-27T10:00:19Z"), 15)), "a", now),
            LeaseDecision::Acquire
        );
    }
}
