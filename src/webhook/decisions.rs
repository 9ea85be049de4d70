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
