//! What a SignalProcessing says that Kubernaut's event payload has a field for but the audit
//! record has no key for (the CR's own phase, the signal's name, its severity ...). Taken from
//! the CR when its record is built and kept by the events sink beside the record's write
//! ([`InFlight`]), never in the record: the record (and so audit-guard's own Data Storage, its
//! comparisons and its chain) knows nothing of Kubernaut's payload.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::Value;

use crate::audit::{SignalProcessingAudit, Trigger};
use crate::crd::SignalProcessing;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrFacts {
    /// `status.phase`, as the CR gives it.
    pub phase: Option<String>,
    /// `spec.signal.name`.
    pub signal_name: Option<String>,
    /// `spec.signal.severity`: the monitoring system's own value (free text).
    pub external_severity: Option<String>,
    /// `status.signalClassification.severity`: the normalised severity.
    pub severity: Option<String>,
    /// `status.signalClassification.policyHash`.
    pub policy_hash: Option<String>,
    /// `status.signalClassification.signalMode`.
    pub signal_mode: Option<String>,
    /// `status.signalClassification.sourceSignalName`.
    pub source_signal_name: Option<String>,
    /// `status.businessClassification.businessUnit`.
    pub business_unit: Option<String>,
    /// Number of entries of `status.kubernetesContext.ownerChain`, when the CR has that list.
    pub owner_chain_length: Option<i64>,
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn non_empty(v: Option<&String>) -> Option<String> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string)
}

impl CrFacts {
    pub fn of(sp: &SignalProcessing) -> Self {
        let status = sp.status.as_ref();
        let signal = sp.spec.signal.as_ref();
        let classification = status.and_then(|s| s.signal_classification.as_ref());
        let business = status.and_then(|s| s.business_classification.as_ref());
        Self {
            phase: non_empty(status.and_then(|s| s.phase.as_ref())),
            signal_name: non_empty(signal.and_then(|s| s.name.as_ref())),
            external_severity: non_empty(signal.and_then(|s| s.severity.as_ref())),
            severity: text(classification.and_then(|c| c.get("severity"))),
            policy_hash: text(classification.and_then(|c| c.get("policyHash"))),
            signal_mode: text(classification.and_then(|c| c.get("signalMode"))),
            source_signal_name: text(classification.and_then(|c| c.get("sourceSignalName"))),
            business_unit: non_empty(business.and_then(|b| b.business_unit.as_ref())),
            owner_chain_length: status.and_then(|s| s.owner_chain_length()).map(|n| n as i64),
        }
    }
}

/// Most records whose facts are kept at once; past it the oldest captured are forgotten
/// (their events would go out without them). The buffered writer holds at most its buffer
/// (10,000 by default) and the deletion paths a record per CR being released.
pub const CAPACITY: usize = 100_000;

/// Which record a capture belongs to: the CR's uid and what built the record. A completion
/// record waiting in the buffered writer keeps the facts of the CR as it was at completion,
/// whatever a later deletion-time record of the same CR captures.
type Key = (String, Option<Trigger>);

#[derive(Debug)]
struct Entry {
    facts: CrFacts,
    /// Captures not yet settled by a stored event: the entry goes with the last of them.
    holders: u32,
    /// Capture order, for forgetting the oldest past [`CAPACITY`].
    seq: u64,
}

/// The facts of the records on their way to Kubernaut's Data Storage: captured when a record
/// is built from its CR ([`InFlight::capture`]), read by every write of the record's event
/// (a retry, a batch, an amendment), and let go when its event is stored
/// ([`InFlight::settled`]). A record whose write is given up on leaves its entry until
/// [`CAPACITY`] pushes it out: memory is bounded by the count, and each entry holds the few
/// strings above, never the object.
#[derive(Debug)]
pub struct InFlight {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    /// The keys by capture order: the oldest is found without a scan.
    order: BTreeMap<u64, Key>,
    next: u64,
}

fn key(record: &SignalProcessingAudit) -> Key {
    (record.id.clone(), record.trigger)
}

impl Default for InFlight {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl InFlight {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Entries::default()),
        }
    }

    /// `record` was just built from a CR that says `facts`; the latest capture of a record
    /// (its CR read again) is the one its writes use.
    pub fn capture(&self, record: &SignalProcessingAudit, facts: CrFacts) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let inner = &mut *inner;
        let k = key(record);
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&k) {
            if let Some((_, oldest)) = inner.order.pop_first() {
                inner.map.remove(&oldest);
            }
        }
        let seq = inner.next;
        inner.next += 1;
        let entry = inner.map.entry(k.clone()).or_insert(Entry {
            facts: CrFacts::default(),
            holders: 0,
            seq,
        });
        inner.order.remove(&entry.seq);
        inner.order.insert(seq, k);
        entry.facts = facts;
        entry.holders = entry.holders.saturating_add(1);
        entry.seq = seq;
    }

    /// The facts captured for `record`; none (all absent) when nothing was captured, as for a
    /// record read back from Data Storage.
    pub fn of(&self, record: &SignalProcessingAudit) -> CrFacts {
        self.inner
            .lock()
            .ok()
            .and_then(|i| i.map.get(&key(record)).map(|e| e.facts.clone()))
            .unwrap_or_default()
    }

    /// `record`'s event is stored: one capture fewer waits for it.
    pub fn settled(&self, record: &SignalProcessingAudit) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let k = key(record);
        if let Some(e) = inner.map.get_mut(&k) {
            e.holders = e.holders.saturating_sub(1);
            if e.holders == 0 {
                let seq = e.seq;
                inner.map.remove(&k);
                inner.order.remove(&seq);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn facts_come_from_kubernauts_crd_and_blanks_are_absent() {
        let sp: SignalProcessing = serde_json::from_value(json!({
            "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing",
            "metadata": { "name": "a" },
            "spec": { "signal": { "name": "HighMemory", "severity": "Sev2", "fingerprint": "fp" } },
            "status": {
                "phase": "Categorizing",
                "signalClassification": { "severity": "high", "policyHash": "ab", "signalMode": "proactive", "sourceSignalName": " " },
                "businessClassification": { "businessUnit": "payments" },
                "kubernetesContext": { "ownerChain": [{ "kind": "ReplicaSet", "name": "x" }, { "kind": "Deployment", "name": "y" }] }
            }
        }))
        .unwrap();
        let f = CrFacts::of(&sp);
        assert_eq!(f.phase.as_deref(), Some("Categorizing"));
        assert_eq!(f.signal_name.as_deref(), Some("HighMemory"));
        assert_eq!(f.external_severity.as_deref(), Some("Sev2"));
        assert_eq!(f.severity.as_deref(), Some("high"));
        assert_eq!(f.policy_hash.as_deref(), Some("ab"));
        assert_eq!(f.signal_mode.as_deref(), Some("proactive"));
        assert_eq!(f.source_signal_name, None, "blank is absent");
        assert_eq!(f.business_unit.as_deref(), Some("payments"));
        assert_eq!(f.owner_chain_length, Some(2));

        let bare: SignalProcessing = serde_json::from_value(json!({
            "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": { "name": "b" }, "spec": {}
        }))
        .unwrap();
        assert_eq!(CrFacts::of(&bare), CrFacts::default());
    }

    fn record(id: &str, trigger: Trigger) -> SignalProcessingAudit {
        serde_json::from_value(json!({
            "id": id, "remediation_id": "rr", "signal_fingerprint": "fp", "processing_phases": [],
            "completed_at": "2026-01-01T00:00:00Z", "status": "completed", "trigger": trigger
        }))
        .unwrap()
    }

    fn named(signal: &str) -> CrFacts {
        CrFacts {
            signal_name: Some(signal.into()),
            ..Default::default()
        }
    }

    #[test]
    fn facts_stay_with_their_record_until_its_event_is_stored() {
        let kept = InFlight::new(10);
        let at_completion = record("u-1", Trigger::Completion);
        let at_deletion = record("u-1", Trigger::Deletion);
        assert_eq!(kept.of(&at_completion), CrFacts::default(), "nothing captured");
        kept.capture(&at_completion, named("a"));
        kept.capture(&at_deletion, named("b"));
        assert_eq!(kept.of(&at_completion), named("a"), "a later record of the CR does not change it");
        assert_eq!(kept.of(&at_deletion), named("b"));
        kept.capture(&at_deletion, named("c"));
        assert_eq!(kept.of(&at_deletion), named("c"), "the CR read again");
        kept.settled(&at_deletion);
        assert_eq!(kept.of(&at_deletion), named("c"), "a second capture still waits");
        kept.settled(&at_deletion);
        assert_eq!(kept.of(&at_deletion), CrFacts::default());
        kept.settled(&at_completion);
        assert!(kept.is_empty());
        kept.settled(&at_completion);
        assert!(kept.is_empty(), "settling what is gone is nothing");
    }

    #[test]
    fn past_the_capacity_the_oldest_capture_is_forgotten() {
        let kept = InFlight::new(2);
        let (a, b, c) = (
            record("a", Trigger::Completion),
            record("b", Trigger::Completion),
            record("c", Trigger::Completion),
        );
        kept.capture(&a, named("a"));
        kept.capture(&b, named("b"));
        kept.capture(&a, named("a2"));
        kept.capture(&c, named("c"));
        assert_eq!(kept.len(), 2);
        assert_eq!(kept.of(&b), CrFacts::default(), "b was captured longest ago");
        assert_eq!(kept.of(&a), named("a2"));
        assert_eq!(kept.of(&c), named("c"));
    }
}
