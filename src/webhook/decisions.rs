//! What the webhook decides, as plain functions over plain data: no I/O here.
//!
//! The HTTP layer parses an AdmissionReview into a [`Review`], asks [`mutate`] or
//! [`validate`], performs any store the decision asks for, and writes the response.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::Trigger;
use crate::crd::{SignalProcessing, FINALIZER};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview we can answer (answered with HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

fn bad(msg: impl Into<String>) -> BadReview {
    BadReview(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// The parts of an admission request the decisions need.
#[derive(Debug, Clone)]
pub struct Review {
    pub uid: String,
    pub operation: Operation,
    pub username: String,
    pub groups: Vec<String>,
    pub dry_run: bool,
    /// Present only when the request is about a SignalProcessing.
    pub object: Option<SignalProcessing>,
    pub old_object: Option<SignalProcessing>,
    /// False for any other resource: those are allowed unchanged.
    pub is_signalprocessing: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReview {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<WireRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    uid: Option<String>,
    kind: Option<WireGvk>,
    operation: Option<String>,
    #[serde(default)]
    user_info: WireUser,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
}

#[derive(Deserialize)]
struct WireGvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize, Default)]
struct WireUser {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

/// Parses an `admission.k8s.io/v1` AdmissionReview request body.
pub fn parse_review(body: &[u8]) -> Result<Review, BadReview> {
    if body.is_empty() {
        return Err(bad("empty body: expected an admission.k8s.io/v1 AdmissionReview"));
    }
    let wire: WireReview = serde_json::from_slice(body).map_err(|e| bad(format!("malformed AdmissionReview JSON: {e}")))?;
    if wire.api_version.as_deref() != Some(API_VERSION) {
        return Err(bad(format!(
            "apiVersion must be {API_VERSION}, got {}",
            wire.api_version.as_deref().unwrap_or("nothing")
        )));
    }
    if wire.kind.as_deref() != Some(KIND) {
        return Err(bad(format!(
            "kind must be {KIND}, got {}",
            wire.kind.as_deref().unwrap_or("nothing")
        )));
    }
    let req = wire.request.ok_or_else(|| bad("AdmissionReview has no request"))?;
    let uid = req.uid.filter(|u| !u.is_empty()).ok_or_else(|| bad("request.uid is missing"))?;
    let operation = match req.operation.as_deref() {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        Some("DELETE") => Operation::Delete,
        Some("CONNECT") => Operation::Connect,
        other => {
            return Err(bad(format!(
                "request.operation must be CREATE, UPDATE, DELETE or CONNECT, got {other:?}"
            )))
        }
    };
    let is_signalprocessing = req
        .kind
        .as_ref()
        .is_some_and(|k| k.group == "kubernaut.ai" && k.kind == "SignalProcessing");
    let (mut object, mut old_object) = (None, None);
    if is_signalprocessing {
        let needs_object = matches!(operation, Operation::Create | Operation::Update);
        let needs_old = matches!(operation, Operation::Update | Operation::Delete);
        object = typed(req.object, "request.object", needs_object)?;
        old_object = typed(req.old_object, "request.oldObject", needs_old)?;
    }
    Ok(Review {
        uid,
        operation,
        username: req.user_info.username.unwrap_or_default(),
        groups: req.user_info.groups.unwrap_or_default(),
        dry_run: req.dry_run.unwrap_or(false),
        object,
        old_object,
        is_signalprocessing,
    })
}

fn typed(value: Option<Value>, field: &str, required: bool) -> Result<Option<SignalProcessing>, BadReview> {
    match value {
        None | Some(Value::Null) if required => Err(bad(format!("{field} is missing"))),
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| bad(format!("{field} is not a SignalProcessing: {e}"))),
    }
}

/// The JSON Patch that adds our finalizer, or None when nothing must change.
pub fn mutate(review: &Review) -> Option<Vec<Value>> {
    if !review.is_signalprocessing || !matches!(review.operation, Operation::Create | Operation::Update) {
        return None;
    }
    let obj = review.object.as_ref()?;
    // A deleting object may only lose finalizers; adding one would be refused and would stall deletion.
    if obj.is_deleting() || obj.has_finalizer() {
        return None;
    }
    Some(match &obj.metadata.finalizers {
        Some(list) if !list.is_empty() => vec![json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})],
        _ => vec![json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})],
    })
}

/// Who may take the finalizer off a deleting object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub controller_identity: String,
    pub break_glass_group: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    Deny {
        code: u16,
        reason: DenyReason,
        message: String,
    },
    /// Store the record built from `old_object` with this trigger; allow if confirmed.
    StoreThenAllow,
    /// Allow, and store a `forced` record from `old_object` (break-glass).
    AllowAndRecordForced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    FinalizerRemoval,
    StoreUnavailable,
}

impl DenyReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::FinalizerRemoval => "finalizer_removal",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

pub fn validate(review: &Review, policy: &Policy) -> Verdict {
    if !review.is_signalprocessing {
        return Verdict::Allow;
    }
    match review.operation {
        Operation::Update => validate_update(review, policy),
        Operation::Delete => match &review.old_object {
            Some(old) if !old.has_finalizer() && !review.dry_run => Verdict::StoreThenAllow,
            _ => Verdict::Allow,
        },
        Operation::Create | Operation::Connect => Verdict::Allow,
    }
}

fn validate_update(review: &Review, policy: &Policy) -> Verdict {
    let (Some(old), Some(new)) = (&review.old_object, &review.object) else {
        return Verdict::Allow;
    };
    // Removal from a live object is undone by the mutating webhook (it runs first), so only
    // removal from a deleting object can make the CR disappear without a stored record.
    let removes = old.has_finalizer() && !new.has_finalizer() && (new.is_deleting() || old.is_deleting());
    if !removes || review.username == policy.controller_identity {
        return Verdict::Allow;
    }
    if review.groups.iter().any(|g| g == &policy.break_glass_group) {
        return if review.dry_run {
            Verdict::Allow
        } else {
            Verdict::AllowAndRecordForced
        };
    }
    Verdict::Deny {
        code: 403,
        reason: DenyReason::FinalizerRemoval,
        message: format!(
            "{user} may not remove finalizer {FINALIZER}: the audit record of this SignalProcessing must be stored by Data Storage \
             first. audit-guard's controller ({controller}) removes this finalizer itself once Data Storage confirms the record. \
             If the deletion is stuck, check the audit-guard controller's logs and Events (reason AuditPersistFailed) and that \
             Data Storage is reachable; to force it, ask a member of group {group} (the removal is recorded as a forced audit record).",
            user = if review.username.is_empty() {
                "this user"
            } else {
                &review.username
            },
            controller = policy.controller_identity,
            group = policy.break_glass_group,
        ),
    }
}

/// The message a DELETE gets when its record could not be stored first.
pub fn store_unavailable_message(err: &str) -> String {
    format!(
        "the audit record of this SignalProcessing must be stored before it is deleted, and Data Storage did not confirm it \
         ({err}); nothing was deleted, retry the deletion later"
    )
}

/// Which trigger a stored record carries for a verdict.
pub fn trigger_for(verdict: &Verdict) -> Option<Trigger> {
    match verdict {
        Verdict::StoreThenAllow => Some(Trigger::Deletion),
        Verdict::AllowAndRecordForced => Some(Trigger::Forced),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(finalizers: Option<Vec<&str>>, deleting: bool) -> Value {
        let mut meta = json!({ "name": "sp", "namespace": "ns", "uid": "u-1" });
        if let Some(f) = finalizers {
            meta["finalizers"] = json!(f);
        }
        if deleting {
            meta["deletionTimestamp"] = json!("2025-11-27T10:00:00Z");
        }
        json!({ "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": meta, "spec": {} })
    }

    fn review_json(op: &str, user: &str, groups: &[&str], dry_run: bool, object: Option<Value>, old: Option<Value>) -> Value {
        json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "request": {
                "uid": "req-1", "operation": op, "dryRun": dry_run,
                "kind": { "group": "kubernaut.ai", "version": "v1alpha1", "kind": "SignalProcessing" },
                "userInfo": { "username": user, "groups": groups },
                "object": object, "oldObject": old
            }
        })
    }

    fn review(op: &str, user: &str, groups: &[&str], dry_run: bool, object: Option<Value>, old: Option<Value>) -> Review {
        let body = serde_json::to_vec(&review_json(op, user, groups, dry_run, object, old)).unwrap();
        parse_review(&body).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            controller_identity: "system:serviceaccount:audit-guard:audit-guard".into(),
            break_glass_group: "audit-guard:break-glass".into(),
        }
    }

    /// Applies a patch the way the API server would.
    fn apply(obj: &Value, patch: &[Value]) -> Value {
        let mut out = obj.clone();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch.to_vec())).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    #[test]
    fn mutation_adds_the_finalizer_when_absent_or_empty() {
        for fins in [None, Some(vec![])] {
            let obj = sp(fins, false);
            let patch = mutate(&review("CREATE", "alice", &[], false, Some(obj.clone()), None)).unwrap();
            assert_eq!(apply(&obj, &patch)["metadata"]["finalizers"], json!([FINALIZER]));
        }
    }

    #[test]
    fn mutation_keeps_other_finalizers_and_is_idempotent_under_reinvocation() {
        let obj = sp(Some(vec!["a/b", "c/d"]), false);
        let patch = mutate(&review("UPDATE", "alice", &[], false, Some(obj.clone()), Some(obj.clone()))).unwrap();
        let once = apply(&obj, &patch);
        assert_eq!(once["metadata"]["finalizers"], json!(["a/b", "c/d", FINALIZER]));
        // Reinvocation sees the patched object and changes nothing.
        assert_eq!(mutate(&review("UPDATE", "alice", &[], false, Some(once.clone()), Some(obj))), None);
    }

    #[test]
    fn mutation_never_touches_deleting_objects_deletes_or_other_kinds() {
        let deleting = sp(None, true);
        assert_eq!(
            mutate(&review("UPDATE", "u", &[], false, Some(deleting.clone()), Some(deleting.clone()))),
            None
        );
        assert_eq!(mutate(&review("DELETE", "u", &[], false, None, Some(sp(None, false)))), None);
        let mut other = review_json("CREATE", "u", &[], false, Some(json!({"metadata": {}})), None);
        other["request"]["kind"] = json!({ "group": "", "version": "v1", "kind": "ConfigMap" });
        assert_eq!(mutate(&parse_review(&serde_json::to_vec(&other).unwrap()).unwrap()), None);
    }

    #[test]
    fn dry_run_create_is_mutated_too() {
        assert!(mutate(&review("CREATE", "u", &[], true, Some(sp(None, false)), None)).is_some());
    }

    fn removal(user: &str, groups: &[&str], dry_run: bool) -> Verdict {
        let old = sp(Some(vec![FINALIZER, "x/y"]), true);
        let new = sp(Some(vec!["x/y"]), true);
        validate(&review("UPDATE", user, groups, dry_run, Some(new), Some(old)), &policy())
    }

    #[test]
    fn only_controller_and_break_glass_may_remove_the_finalizer_from_a_deleting_object() {
        assert_eq!(removal("system:serviceaccount:audit-guard:audit-guard", &[], false), Verdict::Allow);
        assert_eq!(removal("bob", &["audit-guard:break-glass"], false), Verdict::AllowAndRecordForced);
        assert_eq!(removal("bob", &["audit-guard:break-glass"], true), Verdict::Allow);
        match removal("alice", &["kubernaut:operators"], false) {
            Verdict::Deny {
                code: 403,
                reason: DenyReason::FinalizerRemoval,
                message,
            } => {
                assert!(message.contains("alice") && message.contains("audit-guard:break-glass") && message.contains("stored"));
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        // A similarly named group is not the break-glass group.
        assert!(matches!(
            removal("eve", &["audit-guard:break-glass-2"], false),
            Verdict::Deny { .. }
        ));
    }

    #[test]
    fn other_updates_are_allowed() {
        let with = sp(Some(vec![FINALIZER]), true);
        assert_eq!(
            validate(&review("UPDATE", "alice", &[], false, Some(with.clone()), Some(with)), &policy()),
            Verdict::Allow
        );
        // Not deleting: the mutating webhook puts it back, nothing can disappear.
        let live_old = sp(Some(vec![FINALIZER]), false);
        let live_new = sp(None, false);
        assert_eq!(
            validate(&review("UPDATE", "alice", &[], false, Some(live_new), Some(live_old)), &policy()),
            Verdict::Allow
        );
    }

    #[test]
    fn delete_without_the_finalizer_stores_first_except_on_dry_run() {
        for fins in [None, Some(vec![]), Some(vec!["x/y"])] {
            let r = review("DELETE", "alice", &[], false, None, Some(sp(fins.clone(), false)));
            assert_eq!(validate(&r, &policy()), Verdict::StoreThenAllow);
            assert_eq!(trigger_for(&Verdict::StoreThenAllow), Some(Trigger::Deletion));
            let dry = review("DELETE", "alice", &[], true, None, Some(sp(fins, false)));
            assert_eq!(validate(&dry, &policy()), Verdict::Allow);
        }
        let guarded = review("DELETE", "alice", &[], false, None, Some(sp(Some(vec![FINALIZER]), false)));
        assert_eq!(validate(&guarded, &policy()), Verdict::Allow);
    }

    #[test]
    fn bad_reviews_are_named() {
        let ok = review_json("CREATE", "u", &[], false, Some(sp(None, false)), None);
        let cases: Vec<(Value, &str)> = vec![
            (
                {
                    let mut v = ok.clone();
                    v["apiVersion"] = json!("admission.k8s.io/v1beta1");
                    v
                },
                "apiVersion",
            ),
            (
                {
                    let mut v = ok.clone();
                    v["kind"] = json!("Pod");
                    v
                },
                "kind",
            ),
            (
                {
                    let mut v = ok.clone();
                    v.as_object_mut().unwrap().remove("request");
                    v
                },
                "no request",
            ),
            (
                {
                    let mut v = ok.clone();
                    v["request"]["object"] = Value::Null;
                    v
                },
                "request.object is missing",
            ),
            (
                {
                    let mut v = ok.clone();
                    v["request"]["operation"] = json!("PATCH");
                    v
                },
                "operation",
            ),
            (
                {
                    let mut v = ok.clone();
                    v["request"]["uid"] = json!("");
                    v
                },
                "uid",
            ),
            (
                {
                    let mut v = ok.clone();
                    v["request"]["object"] = json!({"metadata": {"finalizers": "x"}});
                    v
                },
                "not a SignalProcessing",
            ),
        ];
        for (body, want) in cases {
            let err = parse_review(&serde_json::to_vec(&body).unwrap()).unwrap_err();
            assert!(err.0.contains(want), "{want}: {}", err.0);
        }
        assert!(parse_review(b"").unwrap_err().0.contains("empty"));
        assert!(parse_review(b"{not json").unwrap_err().0.contains("malformed"));
    }
}
