//! A break-glass event: someone outside the controller forced the audit finalizer off a
//! SignalProcessing. Stored append-only by Data Storage as evidence of who did it, when, to
//! which CR — also when the CR's own record already exists.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{check_id, FieldError, TimeWindow};

/// Longest user, group, namespace, name or uid accepted (Kubernetes names are far shorter).
pub const MAX_TEXT_LEN: usize = 1024;
/// Most groups one event may name; also most values of one `extra` key.
pub const MAX_GROUPS: usize = 256;
/// Most `extra` keys one event may carry.
pub const MAX_EXTRA_KEYS: usize = 64;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BreakGlassEvent {
    /// The admission review's uid: one event per review, so a retried store is idempotent.
    pub id: String,
    /// Who removed the finalizer (the review's userInfo.username).
    pub user: String,
    /// That user's groups.
    pub groups: Vec<String>,
    /// The review's userInfo.extra, whole: what the authenticator attached to the identity
    /// (for a ServiceAccount token `authentication.kubernetes.io/credential-id`, `.../pod-name`,
    /// `.../node-name`), and with impersonation the `Impersonate-Extra-*` values sent. Absent
    /// from the stored JSON when empty, so events without it keep their exact text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
    /// The SignalProcessing's namespace, name and uid.
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// When the removal was admitted.
    pub at: DateTime<Utc>,
    /// Set on an event made from a claim (see [`Confirmation`]); absent from an event whose
    /// review came from a peer that proved it is the API server, so those keep their text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<Confirmation>,
}

/// Why an event made from a claim names its user: the claim (same id, same content) and what
/// saw the finalizer actually come off the object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Confirmation {
    /// The claim's id (its review's uid).
    pub claim: String,
    /// What observed the removal, e.g. [`OBSERVED_BY_CONTROLLER`].
    pub by: String,
    /// When the removal was observed.
    pub at: DateTime<Utc>,
}

/// The controller's watch saw the finalizer leave the object without having released it.
pub const OBSERVED_BY_CONTROLLER: &str = "controller-watch";

/// What one observed removal makes of the pending claims on its object.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimVerdict {
    /// Exactly one claim, not yet confirmed: it becomes the event.
    Confirm(usize),
    /// The one claim is already an event (a retried confirmation).
    AlreadyConfirmed,
    /// No claim names this object: someone removed the finalizer without a review we stored.
    NoClaim,
    /// Several claims: whoever removed it, the others are forgeries or retries under other
    /// review uids, and nothing says which is which, so none names anyone.
    Ambiguous(Vec<String>),
}

/// Judges the claims stored for one object uid (`confirmed[i]`: whether claim `i` already has
/// its event).
pub fn judge_claims(claims: &[BreakGlassEvent], confirmed: &[bool]) -> ClaimVerdict {
    match claims {
        [] => ClaimVerdict::NoClaim,
        [_] if confirmed.first().copied().unwrap_or(false) => ClaimVerdict::AlreadyConfirmed,
        [_] => ClaimVerdict::Confirm(0),
        many => ClaimVerdict::Ambiguous(many.iter().map(|c| c.id.clone()).collect()),
    }
}

impl BreakGlassEvent {
    /// The event a confirmed claim becomes: the claim's content, same id, with why.
    pub fn confirmed_from(claim: &BreakGlassEvent, by: &str, at: DateTime<Utc>) -> Self {
        Self {
            confirmed: Some(Confirmation {
                claim: claim.id.clone(),
                by: by.to_string(),
                at,
            }),
            ..claim.clone()
        }
    }
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_text(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(error(field, "must not be empty"));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(error(field, format!("must be at most {MAX_TEXT_LEN} bytes")));
    }
    Ok(())
}

impl BreakGlassEvent {
    /// Rules beyond the JSON shape; `at` must lie within `window` around `now`.
    pub fn validate(&self, window: &TimeWindow, now: DateTime<Utc>) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        check_text("user", &self.user)?;
        if self.groups.len() > MAX_GROUPS {
            return Err(error("groups", format!("must name at most {MAX_GROUPS} groups")));
        }
        for (i, g) in self.groups.iter().enumerate() {
            check_text(&format!("groups[{i}]"), g)?;
        }
        if self.extra.len() > MAX_EXTRA_KEYS {
            return Err(error("extra", format!("must hold at most {MAX_EXTRA_KEYS} keys")));
        }
        for (key, values) in &self.extra {
            check_text(&format!("extra[{key:?}]"), key)?;
            if values.len() > MAX_GROUPS {
                return Err(error(format!("extra[{key:?}]"), format!("must hold at most {MAX_GROUPS} values")));
            }
            for (i, v) in values.iter().enumerate() {
                if v.len() > MAX_TEXT_LEN {
                    return Err(error(
                        format!("extra[{key:?}][{i}]"),
                        format!("must be at most {MAX_TEXT_LEN} bytes"),
                    ));
                }
            }
        }
        check_text("namespace", &self.namespace)?;
        check_text("name", &self.name)?;
        check_id("uid", &self.uid)?;
        window.check("at", self.at, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> serde_json::Value {
        json!({"id": "0f6c-review", "user": "bob", "groups": ["audit-guard:break-glass", "system:authenticated"],
               "namespace": "team-a", "name": "sp-1", "uid": "5d1e-cr", "at": "2025-11-27T10:00:00Z"})
    }

    #[test]
    fn valid_event_passes_and_each_rule_names_its_field() {
        let now: DateTime<Utc> = "2025-11-27T10:01:00Z".parse().unwrap();
        let w = TimeWindow::default();
        let e: BreakGlassEvent = serde_json::from_value(event()).unwrap();
        assert_eq!(e.validate(&w, now), Ok(()));
        let cases = [
            ("id", json!("")),
            ("id", json!("a b")),
            ("user", json!("")),
            ("groups[1]", json!(["g", ""])),
            ("namespace", json!("")),
            ("name", json!("x".repeat(MAX_TEXT_LEN + 1))),
            ("uid", json!("")),
            ("at", json!("9999-01-01T00:00:00Z")),
        ];
        for (field, value) in cases {
            let mut v = event();
            let key = field.split('[').next().unwrap();
            v[key] = value;
            let e: BreakGlassEvent = serde_json::from_value(v).unwrap();
            assert_eq!(e.validate(&w, now).unwrap_err().field, field);
        }
    }

    #[test]
    fn extra_is_kept_whole_and_bounded() {
        let now: DateTime<Utc> = "2025-11-27T10:01:00Z".parse().unwrap();
        let w = TimeWindow::default();
        // Without extra: parses to an empty map and serialises exactly as before.
        let plain: BreakGlassEvent = serde_json::from_value(event()).unwrap();
        assert!(plain.extra.is_empty());
        assert_eq!(serde_json::to_value(&plain).unwrap(), event());
        let mut v = event();
        v["extra"] = json!({"authentication.kubernetes.io/credential-id": ["JTI=abc"], "ticket": ["INC-1", "INC-2"]});
        let e: BreakGlassEvent = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(e.extra["ticket"], ["INC-1", "INC-2"]);
        assert_eq!(e.validate(&w, now), Ok(()));
        assert_eq!(serde_json::to_value(&e).unwrap(), v);
        assert_ne!(e, plain, "the extra is part of the event's content");
        for (bad, field) in [
            (json!({"": ["x"]}), "extra[\"\"]"),
            (json!({"k": ["x".repeat(MAX_TEXT_LEN + 1)]}), "extra[\"k\"][0]"),
            (json!({"k": vec!["x"; MAX_GROUPS + 1]}), "extra[\"k\"]"),
            (
                json!((0..=MAX_EXTRA_KEYS).map(|i| (i.to_string(), vec!["x"])).collect::<BTreeMap<_, _>>()),
                "extra",
            ),
        ] {
            let mut v = event();
            v["extra"] = bad;
            let e: BreakGlassEvent = serde_json::from_value(v).unwrap();
            assert_eq!(e.validate(&w, now).unwrap_err().field, field);
        }
    }

    fn claim(id: &str) -> BreakGlassEvent {
        let mut v = event();
        v["id"] = json!(id);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn one_claim_is_confirmed_several_are_ambiguous_none_is_nothing() {
        assert_eq!(judge_claims(&[], &[]), ClaimVerdict::NoClaim);
        assert_eq!(judge_claims(&[claim("r-1")], &[false]), ClaimVerdict::Confirm(0));
        assert_eq!(judge_claims(&[claim("r-1")], &[true]), ClaimVerdict::AlreadyConfirmed);
        assert_eq!(
            judge_claims(&[claim("r-1"), claim("r-2")], &[false, false]),
            ClaimVerdict::Ambiguous(vec!["r-1".into(), "r-2".into()])
        );
    }

    #[test]
    fn a_confirmed_event_is_the_claim_plus_why_and_plain_events_keep_their_text() {
        let c = claim("r-1");
        assert!(!serde_json::to_value(&c).unwrap().as_object().unwrap().contains_key("confirmed"));
        let at: DateTime<Utc> = "2025-11-27T10:02:00Z".parse().unwrap();
        let e = BreakGlassEvent::confirmed_from(&c, OBSERVED_BY_CONTROLLER, at);
        assert_eq!((e.id.as_str(), e.user.as_str(), e.uid.as_str()), ("r-1", "bob", "5d1e-cr"));
        assert_eq!(
            serde_json::to_value(&e).unwrap()["confirmed"],
            json!({"claim": "r-1", "by": "controller-watch", "at": "2025-11-27T10:02:00Z"})
        );
        assert_eq!(e.validate(&TimeWindow::default(), at), Ok(()));
    }

    #[test]
    fn missing_keys_do_not_parse() {
        for key in ["id", "user", "groups", "namespace", "name", "uid", "at"] {
            let mut v = event();
            v.as_object_mut().unwrap().remove(key);
            assert!(serde_json::from_value::<BreakGlassEvent>(v).is_err(), "{key}");
        }
    }
}
