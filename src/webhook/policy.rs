//! What the webhook decides, as plain functions over plain data: no I/O here.
//!
//! The HTTP layer parses an AdmissionReview ([`super::review`]) into a [`Review`], asks [`mutate`] or
//! [`validate`], and performs what the verdict asks for. A review body is never trusted for
//! what is stored: anyone who can reach the port can post one. So before storing anything
//! the webhook reads the live object from the API server and [`judge_live`] decides whether
//! it is the object the review describes; the record is built from the live object.
//!
//! | verdict of [`validate`] | the webhook then | outcome |
//! |---|---|---|
//! | `Allow` / `Deny` | — | as given |
//! | `StoreThenAllow` (DELETE of a CR without the finalizer) | reads the live object; [`judge_live`]; stores its record (amending a different one under the uid) | allow once stored; deny 503 (retry) if Data Storage does not confirm; deny 409 if the live object is not what the review says |
//! | `RecordBreakGlassThenAllow` (break-glass removal) | reads the live object; [`judge_live`]; by [`break_glass_path`]: from the API server (client certificate), stores the break-glass event, then the `forced` record; from an unauthenticated peer, stores an unconfirmed claim, then the live object's deletion record | [`break_glass_verdict`], [`claim_verdict`] |
//! | `AllowIfRecordHeld` (the controller's identity removes the finalizer) | this process's confirmed set (uid and resourceVersion), else reads the live object; [`judge_live`]; stores its record (amending a different one under the uid, alarmed) | [`record_check_verdict`] |

use crate::crd::{add_finalizer_patch, has_finalizer, ListGuard, SignalProcessing, FINALIZER};

use super::review::{self, bad, check_envelope, decode, is_signalprocessing, operation, BadReview, Operation, Review};

/// The mutating path's view of a review: only what [`mutate`] decides on, decoded straight
/// from the body without building the object (the hot path of every CREATE in the cluster).
/// The same structural checks as [`review::parse_review`]; the object's metadata must still decode
/// (a malformed finalizer list is refused), the rest of it is skipped, not checked: the
/// API server validates the object against the CRD schema after mutation anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutateReview {
    pub uid: String,
    pub operation: Operation,
    /// The base64 of the JSON Patch to answer with, or None to allow unchanged.
    pub patch: Option<&'static str>,
}

/// The two patches [`mutate`] can answer (to an absent or empty list, and to any other list),
/// serialised and base64-encoded once.
fn encoded_patches() -> &'static (String, String) {
    use base64::Engine;
    static PATCHES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    PATCHES.get_or_init(|| {
        let enc = |list: Option<&[String]>| {
            let patch = add_finalizer_patch(list, ListGuard::None);
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&patch).unwrap_or_default())
        };
        (enc(None), enc(Some(&[String::new()])))
    })
}

/// Parses a review for the mutating path and decides it: [`review::parse_review`] + [`mutate`] without
/// the object model.
pub fn parse_mutate(body: &[u8]) -> Result<MutateReview, BadReview> {
    let wire: review::MutateWire = decode(body)?;
    check_envelope(wire.api_version.as_deref(), wire.kind.as_deref())?;
    let req = wire.request.ok_or_else(|| bad("AdmissionReview has no request"))?;
    let uid = req.uid.filter(|u| !u.is_empty()).ok_or_else(|| bad("request.uid is missing"))?;
    let operation = operation(req.operation.as_deref())?;
    let is_signalprocessing = req.kind.as_ref().is_some_and(|k| is_signalprocessing(&k.group, &k.kind));
    let mut patch = None;
    if is_signalprocessing && matches!(operation, Operation::Create | Operation::Update) {
        let meta = req.object.ok_or_else(|| bad("request.object is missing"))?.metadata;
        let finalizers = meta.finalizers.unwrap_or_default();
        if adds_finalizer(is_signalprocessing, operation, meta.deletion_timestamp.is_some(), &finalizers) {
            let (new_list, append) = encoded_patches();
            patch = Some(if finalizers.is_empty() {
                new_list.as_str()
            } else {
                append.as_str()
            });
        }
    }
    Ok(MutateReview {
        uid: uid.into_owned(),
        operation,
        patch,
    })
}

/// Whether the mutating webhook adds the finalizer: to a SignalProcessing being created or
/// updated that is not deleting and does not carry it. The one rule both [`parse_mutate`] (the
/// fast path serve runs) and [`mutate`] (over a fully parsed [`Review`]) apply.
pub fn adds_finalizer(is_signalprocessing: bool, operation: Operation, deleting: bool, finalizers: &[String]) -> bool {
    // A deleting object may only lose finalizers; adding one would be refused and would stall deletion.
    is_signalprocessing && matches!(operation, Operation::Create | Operation::Update) && !deleting && !has_finalizer(Some(finalizers))
}

/// The JSON Patch that adds our finalizer, or None when nothing must change.
pub fn mutate(review: &Review) -> Option<json_patch::Patch> {
    let obj = review.object.as_ref()?;
    let finalizers = obj.metadata.finalizers.as_deref();
    adds_finalizer(
        review.is_signalprocessing,
        review.operation,
        obj.is_deleting(),
        finalizers.unwrap_or_default(),
    )
    .then(|| add_finalizer_patch(finalizers, ListGuard::None))
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
    /// A DELETE of a CR without the finalizer: store the live object's record, then allow.
    StoreThenAllow,
    /// A break-glass removal: store the break-glass event and the live object's `forced`
    /// record, then allow.
    RecordBreakGlassThenAllow,
    /// The controller's identity removes the finalizer: allow only once Data Storage holds the
    /// record of the live object, as is or as an amendment (stored now if it does not).
    AllowIfRecordHeld,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// Someone without the right took the finalizer off.
    FinalizerRemoval,
    /// Data Storage refused for good the record of the CR the controller's identity is releasing.
    RecordNotHeld,
    /// The live object is not what the review describes (changed since, or a forged review).
    ObjectChanged,
    /// Data Storage or the API server could not confirm in time: retry.
    StoreUnavailable,
}

impl DenyReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::FinalizerRemoval => "finalizer_removal",
            Self::RecordNotHeld => "record_not_held",
            Self::ObjectChanged => "object_changed",
            Self::StoreUnavailable => "store_unavailable",
        }
    }

    /// The `status.reason` of the AdmissionReview response.
    pub fn status_reason(&self) -> &'static str {
        match self {
            Self::FinalizerRemoval | Self::RecordNotHeld => "Forbidden",
            Self::ObjectChanged => "Conflict",
            Self::StoreUnavailable => "ServiceUnavailable",
        }
    }
}

fn deny(code: u16, reason: DenyReason, message: String) -> Verdict {
    Verdict::Deny { code, reason, message }
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
    if !removes {
        return Verdict::Allow;
    }
    // The controller's identity gets no pass of its own: whoever holds a token for it (the
    // same token writes to Data Storage) must still find the record of the live object's
    // content stored, not just some record under its uid. Dry runs are checked the same way.
    if review.username == policy.controller_identity {
        return Verdict::AllowIfRecordHeld;
    }
    if review.groups.iter().any(|g| g == &policy.break_glass_group) {
        return if review.dry_run {
            Verdict::Allow
        } else {
            Verdict::RecordBreakGlassThenAllow
        };
    }
    deny(
        403,
        DenyReason::FinalizerRemoval,
        format!(
            "{user} may not remove finalizer {FINALIZER}: the audit record of this SignalProcessing must be stored by Data Storage \
             first. audit-guard's controller ({controller}) removes this finalizer itself once Data Storage confirms the record. \
             If the deletion is stuck, check the audit-guard controller's logs and Events (reason AuditPersistFailed) and that \
             Data Storage is reachable; to force it, ask a member of group {group} (the removal is stored as a break-glass event \
             naming you, and as a forced audit record).",
            user = if review.username.is_empty() {
                "this user"
            } else {
                &review.username
            },
            controller = policy.controller_identity,
            group = policy.break_glass_group,
        ),
    )
}

/// What the API server's live object looked like when the webhook read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    NotFound,
    Found { uid: String, deleting: bool, has_finalizer: bool },
}

impl Live {
    pub fn of(sp: Option<&SignalProcessing>) -> Self {
        match sp {
            None => Self::NotFound,
            Some(o) => Self::Found {
                uid: o.metadata.uid.clone().unwrap_or_default(),
                deleting: o.is_deleting(),
                has_finalizer: o.has_finalizer(),
            },
        }
    }
}

/// Whether `namespace` and `name` can name a SignalProcessing (a DNS-1123 label and subdomain):
/// a review's names go into the API server URL the webhook reads, so anything else (a slash, a
/// dot segment) is never sent there.
pub fn valid_object_ref(namespace: &str, name: &str) -> bool {
    let dns = |s: &str, max: usize, dots: bool| {
        !s.is_empty()
            && s.len() <= max
            && s.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
            && (dots || !s.contains('.'))
    };
    dns(namespace, 63, false) && dns(name, 253, true)
}

/// Why the webhook reads the live object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The review says: a DELETE of a CR without the finalizer.
    UnguardedDelete,
    /// The review says: a break-glass user takes the finalizer off a deleting CR.
    BreakGlass,
    /// The review says: the controller's identity takes the finalizer off a deleting CR.
    ControllerRelease,
}

/// Whether the live object is the one the review describes, in the state it claims; anything
/// else (gone, replaced by a namesake, the finalizer back on or already off, not deleting)
/// stores nothing and is refused: a genuine request meets a race and is retried by its
/// client, a forged one achieves nothing.
///
/// | purpose | live object | decision |
/// |---|---|---|
/// | any | not found, another uid, or a namespace/name no object can have (never looked up) | deny 409 |
/// | unguarded DELETE | carries the finalizer | deny 409 (the finalizer guards it; a retried DELETE takes the normal path) |
/// | unguarded DELETE | lacks the finalizer | proceed: store its record |
/// | break-glass | not deleting | deny 409 |
/// | break-glass | deleting, finalizer already off | deny 409 (nothing left to force) |
/// | break-glass | deleting, carries the finalizer | proceed: break-glass event, forced record |
/// | controller release | as for break-glass | proceed: the live object's record (or its amendment) |
pub fn judge_live(purpose: Purpose, review_uid: &str, live: &Live) -> Result<(), Verdict> {
    let changed = |what: &str| {
        Err(deny(
            409,
            DenyReason::ObjectChanged,
            format!("{what}; nothing was stored and nothing changed. Retry the request against the object as it is now."),
        ))
    };
    let Live::Found {
        uid,
        deleting,
        has_finalizer,
    } = live
    else {
        return changed("this SignalProcessing no longer exists in the API server");
    };
    if review_uid.is_empty() || uid != review_uid {
        return changed("the SignalProcessing of that name in the API server is another object (its uid differs)");
    }
    match (purpose, deleting, has_finalizer) {
        (Purpose::UnguardedDelete, _, true) => changed(&format!(
            "this SignalProcessing carries finalizer {FINALIZER} now, so its deletion waits for its audit record"
        )),
        (Purpose::UnguardedDelete, _, false) => Ok(()),
        (Purpose::BreakGlass | Purpose::ControllerRelease, false, _) => changed("this SignalProcessing is not being deleted"),
        (Purpose::BreakGlass | Purpose::ControllerRelease, true, false) => {
            changed(&format!("finalizer {FINALIZER} is already off this SignalProcessing"))
        }
        (Purpose::BreakGlass | Purpose::ControllerRelease, true, true) => Ok(()),
    }
}

/// How storing the live object's record (the content check of a controller release) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordCheck {
    /// Data Storage holds the record of the object as it is: created now, already there, or
    /// as an amendment of a different record under the uid.
    Held,
    /// Data Storage refused that record for good.
    Refused(String),
    Unavailable(String),
}

/// The controller's identity may release a CR only when Data Storage holds the record of
/// the object as it is (a record under its uid is not enough: the identity that releases
/// also writes to Data Storage, and could have written any record).
pub fn record_check_verdict(check: &RecordCheck, uid: &str) -> Verdict {
    match check {
        RecordCheck::Held => Verdict::Allow,
        RecordCheck::Refused(e) => deny(
            403,
            DenyReason::RecordNotHeld,
            format!(
                "Data Storage refused the audit record of SignalProcessing {uid} as it is now ({e}), so finalizer {FINALIZER} \
                 stays on. audit-guard's identity releases an object only once Data Storage holds the record of what it says, \
                 whoever makes the request."
            ),
        ),
        RecordCheck::Unavailable(e) => deny(
            503,
            DenyReason::StoreUnavailable,
            format!("could not confirm that Data Storage holds the audit record of SignalProcessing {uid} ({e}); retry later"),
        ),
    }
}

/// How one write to Data Storage ended, as far as a decision cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// Created, or the same content already there.
    Stored,
    /// A different entry holds the id.
    Conflict,
    Transient(String),
    Permanent(String),
}

/// A break-glass removal is allowed once its event is stored: the event is the evidence of
/// who used it, so without it nothing is allowed (retryable). The `forced` record is stored
/// after it; an existing record under the uid (typically the completion record) is fine. A
/// record Data Storage rejects for good does not hold the emergency (the event, stored, names
/// the actor; the rejection is logged); one it could not take now is retried.
///
/// | break-glass event | forced record | decision |
/// |---|---|---|
/// | not stored (unreachable, error) | — | deny 503, retry |
/// | another event under this review's uid | — | deny 409 |
/// | stored | stored, or another record holds the uid | allow |
/// | stored | rejected for good (4xx) | allow, logged loudly |
/// | stored | not stored (unreachable, 5xx) | deny 503, retry |
pub fn break_glass_verdict(event: &WriteResult, record: Option<&WriteResult>) -> Verdict {
    stored_first_verdict("the break-glass event", "the forced audit record", event, record)
}

/// What a break-glass review is worth, by who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakGlassPath {
    /// The peer proved it is the API server (a client certificate the configured CA signed),
    /// so the review's userInfo is what the API server authenticated: a break-glass event
    /// naming the user, then the `forced` record.
    Event,
    /// Any pod could have sent the review (no client CA), so its userInfo is only a claim: the
    /// live object's ordinary deletion record, then an unconfirmed claim, which becomes an
    /// event only once the removal is observed on the object.
    Claim,
}

pub fn break_glass_path(peer_authenticated: bool) -> BreakGlassPath {
    if peer_authenticated {
        BreakGlassPath::Event
    } else {
        BreakGlassPath::Claim
    }
}

/// A claimed break-glass removal: the same table as [`break_glass_verdict`], with the claim in
/// the event's place and the live object's deletion record in the forced record's (a claim
/// Data Storage cannot keep, in events mode, counts as stored: it is logged instead).
pub fn claim_verdict(claim: &WriteResult, record: Option<&WriteResult>) -> Verdict {
    stored_first_verdict("the break-glass claim", "the audit record", claim, record)
}

fn stored_first_verdict(first: &str, second: &str, event: &WriteResult, record: Option<&WriteResult>) -> Verdict {
    let retry = |what: &str, e: &str| {
        deny(
            503,
            DenyReason::StoreUnavailable,
            format!(
                "break-glass removal refused: {what} could not be stored ({e}); retry. If Data Storage itself is down, \
                 a cluster admin can remove audit-guard's webhook configurations (recorded in the API server's audit log)."
            ),
        )
    };
    match (event, record) {
        (WriteResult::Transient(e) | WriteResult::Permanent(e), _) => retry(first, e),
        (WriteResult::Conflict, _) => deny(
            409,
            DenyReason::ObjectChanged,
            format!("break-glass removal refused: Data Storage holds a different entry than {first} under this request's uid"),
        ),
        (WriteResult::Stored, None) => retry(second, "not attempted"),
        (WriteResult::Stored, Some(WriteResult::Transient(e))) => retry(second, e),
        (WriteResult::Stored, Some(WriteResult::Stored | WriteResult::Conflict | WriteResult::Permanent(_))) => Verdict::Allow,
    }
}

/// The message a DELETE gets when its record could not be stored first.
pub fn store_unavailable_message(err: &str) -> String {
    format!(
        "the audit record of this SignalProcessing must be stored before it is deleted, and Data Storage did not confirm it \
         ({err}); nothing was deleted, retry the deletion later"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::review::{parse_review, API_VERSION, KIND};
    use serde_json::{json, Value};

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

    #[test]
    fn user_info_extra_is_parsed_whole() {
        let old = sp(Some(vec![FINALIZER]), true);
        let mut body = review_json("UPDATE", "carol", &["audit-guard:break-glass"], false, Some(old.clone()), Some(old));
        assert!(review_from(&body).extra.is_empty(), "no extra: an empty map");
        body["request"]["userInfo"]["extra"] = json!({
            "authentication.kubernetes.io/credential-id": ["JTI=7f3c"],
            "authentication.kubernetes.io/pod-name": ["kubectl-debug"],
            "ticket": ["INC-1", "INC-2"],
            "empty": []
        });
        let r = review_from(&body);
        assert_eq!(r.extra.len(), 4);
        assert_eq!(r.extra["authentication.kubernetes.io/credential-id"], ["JTI=7f3c"]);
        assert_eq!(r.extra["ticket"], ["INC-1", "INC-2"]);
        assert!(r.extra["empty"].is_empty());
        body["request"]["userInfo"]["extra"] = json!({ "k": "not a list" });
        assert!(
            parse_review(&serde_json::to_vec(&body).unwrap()).is_err(),
            "a malformed extra is a bad review"
        );
    }

    fn review_from(body: &Value) -> Review {
        parse_review(&serde_json::to_vec(body).unwrap()).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            controller_identity: "system:serviceaccount:audit-guard:audit-guard".into(),
            break_glass_group: "audit-guard:break-glass".into(),
        }
    }

    /// Applies a patch the way the API server would.
    fn apply(obj: &Value, patch: &json_patch::Patch) -> Value {
        let mut out = obj.clone();
        json_patch::patch(&mut out, patch).unwrap();
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

    /// The mutating hot path (metadata-only decode, patch encoded once) answers exactly what
    /// `mutate` over the full parse answers.
    #[test]
    fn the_mutating_fast_path_agrees_with_the_full_parse() {
        use base64::Engine;
        let mut other_kind = review_json("CREATE", "u", &[], false, Some(json!({"metadata": {}})), None);
        other_kind["request"]["kind"] = json!({ "group": "", "version": "v1", "kind": "ConfigMap" });
        let mut escaped_uid = review_json("CREATE", "u", &[], false, Some(sp(None, false)), None);
        escaped_uid["request"]["uid"] = json!("a\"b\u{e9}");
        let bodies = vec![
            review_json("CREATE", "u", &[], false, Some(sp(None, false)), None),
            review_json("CREATE", "u", &[], false, Some(sp(Some(vec![]), false)), None),
            review_json("CREATE", "u", &[], false, Some(sp(Some(vec!["a/b"]), false)), None),
            review_json("CREATE", "u", &[], false, Some(sp(Some(vec!["a/b", FINALIZER]), false)), None),
            review_json("UPDATE", "u", &[], false, Some(sp(None, false)), Some(sp(None, false))),
            review_json("UPDATE", "u", &[], false, Some(sp(None, true)), Some(sp(None, true))),
            review_json("DELETE", "u", &[], false, None, Some(sp(None, false))),
            review_json("CONNECT", "u", &[], false, None, None),
            other_kind,
            escaped_uid,
        ];
        for body in bodies {
            let bytes = serde_json::to_vec(&body).unwrap();
            let full = parse_review(&bytes).unwrap();
            let fast = parse_mutate(&bytes).unwrap();
            assert_eq!(fast.uid, full.uid);
            assert_eq!(fast.operation, full.operation);
            let want = mutate(&full).map(|p| base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&p).unwrap()));
            assert_eq!(fast.patch.map(str::to_string), want, "{body}");
        }
    }

    /// A review's object is read for its metadata only: whatever its spec and status hold
    /// (a megabyte of contextSources, values of any type), the review decides as with none.
    #[test]
    fn only_the_metadata_of_a_reviews_object_is_read() {
        let bare_old = sp(Some(vec![FINALIZER]), true);
        let bare_new = sp(None, true);
        let mut big_old = bare_old.clone();
        big_old["spec"] = json!({ "enrichmentConfig": { "contextSources": vec![json!({}); 300_000] }, "signal": { "labels": 5 } });
        big_old["status"] = json!({ "phase": ["not", "a", "string"] });
        big_old["metadata"]["labels"] = json!({ "a": "b" });
        let mut big_new = big_old.clone();
        big_new["metadata"] = bare_new["metadata"].clone();
        for user in ["alice", "system:serviceaccount:audit-guard:audit-guard"] {
            let bare = review("UPDATE", user, &[], false, Some(bare_new.clone()), Some(bare_old.clone()));
            let big = review("UPDATE", user, &[], false, Some(big_new.clone()), Some(big_old.clone()));
            assert_eq!(validate(&big, &policy()), validate(&bare, &policy()), "{user}");
            assert_eq!((&big.object, &big.old_object), (&bare.object, &bare.old_object));
        }
        let old = review("UPDATE", "u", &[], false, Some(big_new), Some(big_old)).old_object.unwrap();
        assert_eq!(old.metadata.uid.as_deref(), Some("u-1"));
        assert!(old.has_finalizer() && old.is_deleting());
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
    fn no_one_removes_the_finalizer_from_a_deleting_object_unchecked() {
        // The controller's identity: only if the record is held (checked by the caller).
        assert_eq!(
            removal("system:serviceaccount:audit-guard:audit-guard", &[], false),
            Verdict::AllowIfRecordHeld
        );
        assert_eq!(
            removal("system:serviceaccount:audit-guard:audit-guard", &[], true),
            Verdict::AllowIfRecordHeld
        );
        assert_eq!(
            removal("bob", &["audit-guard:break-glass"], false),
            Verdict::RecordBreakGlassThenAllow
        );
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
        // A similarly named group is not the break-glass group, nor a similar name the controller.
        for (user, groups) in [
            ("eve", vec!["audit-guard:break-glass-2"]),
            ("system:serviceaccount:audit-guard:audit-guard-2", vec![]),
        ] {
            assert!(matches!(removal(user, &groups, false), Verdict::Deny { .. }), "{user}");
        }
    }

    #[test]
    fn the_live_object_must_be_the_one_the_review_describes() {
        let live = |uid: &str, deleting: bool, has_finalizer: bool| Live::Found {
            uid: uid.into(),
            deleting,
            has_finalizer,
        };
        use Purpose::{BreakGlass, ControllerRelease, UnguardedDelete};
        let cases: Vec<(&str, Purpose, &str, Live, bool)> = vec![
            ("gone", UnguardedDelete, "u-1", Live::NotFound, false),
            ("a namesake", UnguardedDelete, "u-1", live("u-2", false, false), false),
            ("no uid in the review", UnguardedDelete, "", live("", false, false), false),
            ("finalizer back on", UnguardedDelete, "u-1", live("u-1", false, true), false),
            ("as described", UnguardedDelete, "u-1", live("u-1", false, false), true),
            ("deleting, other finalizers", UnguardedDelete, "u-1", live("u-1", true, false), true),
            ("break-glass, gone", BreakGlass, "u-1", Live::NotFound, false),
            ("break-glass, a namesake", BreakGlass, "u-1", live("u-2", true, true), false),
            ("break-glass, not deleting", BreakGlass, "u-1", live("u-1", false, true), false),
            ("break-glass, already released", BreakGlass, "u-1", live("u-1", true, false), false),
            ("break-glass, as described", BreakGlass, "u-1", live("u-1", true, true), true),
            ("controller, gone", ControllerRelease, "u-1", Live::NotFound, false),
            ("controller, a namesake", ControllerRelease, "u-1", live("u-2", true, true), false),
            (
                "controller, not deleting",
                ControllerRelease,
                "u-1",
                live("u-1", false, true),
                false,
            ),
            (
                "controller, already released",
                ControllerRelease,
                "u-1",
                live("u-1", true, false),
                false,
            ),
            ("controller, as described", ControllerRelease, "u-1", live("u-1", true, true), true),
        ];
        for (name, purpose, uid, live, proceeds) in cases {
            match judge_live(purpose, uid, &live) {
                Ok(()) => assert!(proceeds, "{name}: proceeded"),
                Err(Verdict::Deny {
                    code: 409,
                    reason: DenyReason::ObjectChanged,
                    message,
                }) => {
                    assert!(!proceeds, "{name}: refused");
                    assert!(
                        message.contains("nothing was stored") && message.contains("Retry"),
                        "{name}: {message}"
                    );
                }
                Err(other) => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_controller_releases_only_what_data_storage_holds() {
        assert_eq!(record_check_verdict(&RecordCheck::Held, "u-1"), Verdict::Allow);
        let cases = [
            (
                RecordCheck::Refused("422 bad record".into()),
                403,
                DenyReason::RecordNotHeld,
                "refused the audit record",
            ),
            (
                RecordCheck::Unavailable("timeout".into()),
                503,
                DenyReason::StoreUnavailable,
                "retry",
            ),
        ];
        for (check, want_code, want_reason, says) in cases {
            match record_check_verdict(&check, "u-1") {
                Verdict::Deny { code, reason, message } => {
                    assert_eq!((code, reason), (want_code, want_reason), "{check:?}");
                    assert!(message.contains("u-1") && message.contains(says), "{message}");
                }
                other => panic!("{check:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn break_glass_is_allowed_only_with_its_event_stored() {
        use WriteResult::{Conflict, Permanent, Stored, Transient};
        let down = || Transient("unreachable".into());
        let cases: Vec<(WriteResult, Option<WriteResult>, Option<u16>)> = vec![
            (down(), None, Some(503)),
            (Permanent("400".into()), None, Some(503)),
            (Conflict, None, Some(409)),
            (Stored, None, Some(503)),
            (Stored, Some(Stored), None),
            // The CR's record exists already (its completion record): fine, not a conflict alarm.
            (Stored, Some(Conflict), None),
            (Stored, Some(Permanent("400".into())), None),
            (Stored, Some(down()), Some(503)),
        ];
        for (event, record, want) in cases {
            for (verdict, first) in [
                (
                    break_glass_verdict as fn(&WriteResult, Option<&WriteResult>) -> Verdict,
                    "break-glass event",
                ),
                (claim_verdict, "break-glass claim"),
            ] {
                match (verdict(&event, record.as_ref()), want) {
                    (Verdict::Allow, None) => {}
                    (Verdict::Deny { code, message, .. }, Some(c)) => {
                        assert_eq!(code, c, "{event:?} {record:?}");
                        assert!(message.contains("break-glass removal refused"), "{message}");
                        if event != Stored {
                            assert!(message.contains(first), "{message}");
                        }
                    }
                    (got, want) => panic!("{event:?} {record:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn only_a_peer_that_proved_it_is_the_api_server_makes_a_break_glass_event() {
        assert_eq!(break_glass_path(true), BreakGlassPath::Event);
        assert_eq!(break_glass_path(false), BreakGlassPath::Claim);
    }

    #[test]
    fn only_kubernetes_names_are_looked_up() {
        for (ns, name) in [("ns", "sp"), ("team-a", "sp-0001.v2"), ("a", "b")] {
            assert!(valid_object_ref(ns, name), "{ns}/{name}");
        }
        for (ns, name) in [
            ("", "sp"),
            ("ns", ""),
            ("ns", "../../api/v1/namespaces/x/secrets/y"),
            ("ns", "a/b"),
            ("ns", ".."),
            ("ns", "Upper"),
            ("n.s", "sp"),
            ("-ns", "sp"),
            ("ns", "sp-"),
            ("ns", "a..b"),
        ] {
            assert!(!valid_object_ref(ns, name), "{ns}/{name}");
        }
        assert!(!valid_object_ref(&"a".repeat(64), "sp"));
        assert!(!valid_object_ref("ns", &"a".repeat(254)));
    }

    #[test]
    fn the_object_is_read_where_the_request_says() {
        let mut v = review_json("DELETE", "alice", &[], false, None, Some(sp(None, false)));
        let r = parse_review(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("ns", "sp"));
        v["request"]["namespace"] = json!("other");
        v["request"]["name"] = json!("named");
        let r = parse_review(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("other", "named"));
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
            let bytes = serde_json::to_vec(&body).unwrap();
            let err = parse_review(&bytes).unwrap_err();
            assert!(err.0.contains(want), "{want}: {}", err.0);
            // The mutating path's decoder refuses the same bodies (the metadata-only decode
            // names a malformed object as malformed JSON).
            let err = parse_mutate(&bytes).unwrap_err();
            let want = if want == "not a SignalProcessing" { "malformed" } else { want };
            assert!(err.0.contains(want), "mutate path, {want}: {}", err.0);
        }
        assert!(parse_mutate(b"").unwrap_err().0.contains("empty"));
        assert!(parse_mutate(b"{not json").unwrap_err().0.contains("malformed"));
        assert!(parse_review(b"").unwrap_err().0.contains("empty"));
        assert!(parse_review(b"{not json").unwrap_err().0.contains("malformed"));
    }
}
