//! What a SignalProcessing says that Kubernaut's event payload has a field for but the audit
//! record has no key for (the CR's own phase, the signal's name, its severity ...). Taken from
//! the CR when the record is built and carried beside it in memory, never serialised with it:
//! the record (and so audit-guard's own Data Storage, its comparisons and its chain) is unchanged.

use serde_json::Value;

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

/// The CR's facts as carried beside a record: not part of its content, so two records compare
/// equal whatever facts they carry (a record read back from Data Storage carries none).
#[derive(Debug, Clone, Default)]
pub struct Beside(pub Option<CrFacts>);

impl PartialEq for Beside {
    fn eq(&self, _: &Self) -> bool {
        true
    }
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
}
