//! AdmissionReview on the wire (`admission.k8s.io/v1`): the full parse into a [`Review`] for
//! the validating path, and the metadata-only wire types the mutating fast path decodes
//! ([`super::policy::parse_mutate`]). No decisions here: those are [`super::policy`]'s.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::crd::has_finalizer;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview we can answer (answered with HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

pub(super) fn bad(msg: impl Into<String>) -> BadReview {
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
    /// request.namespace and request.name: where the live object is read.
    pub namespace: String,
    pub name: String,
    pub username: String,
    pub groups: Vec<String>,
    /// userInfo.extra, whole (see [`crate::audit::break_glass::BreakGlassEvent::extra`]).
    pub extra: BTreeMap<String, Vec<String>>,
    pub dry_run: bool,
    /// Present only when the request is about a SignalProcessing.
    pub object: Option<ReviewObject>,
    pub old_object: Option<ReviewObject>,
    /// False for any other resource: those are allowed unchanged.
    pub is_signalprocessing: bool,
}

/// What the decisions read of a review's object or oldObject: its metadata's identity,
/// finalizers and deletion. Everything else in the object (spec, status, labels, annotations,
/// managedFields) is skipped while decoding, never built, so a review of the largest object
/// the API server holds costs its bytes, not their expansion. What is stored is built from the
/// live object, never from a review.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ReviewObject {
    #[serde(default)]
    pub metadata: ReviewMeta,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub finalizers: Option<Vec<String>>,
    #[serde(default)]
    pub deletion_timestamp: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl ReviewObject {
    pub fn has_finalizer(&self) -> bool {
        has_finalizer(self.metadata.finalizers.as_deref())
    }

    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// Decodes `request.object` (`request.oldObject`), naming the field when it is not one.
fn review_object<'de, D: serde::Deserializer<'de>>(field: &str, d: D) -> Result<Option<ReviewObject>, D::Error> {
    use serde::de::Error;
    Option::<ReviewObject>::deserialize(d).map_err(|e| D::Error::custom(format!("{field} is not a SignalProcessing: {e}")))
}

fn object_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ReviewObject>, D::Error> {
    review_object("request.object", d)
}

fn old_object_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ReviewObject>, D::Error> {
    review_object("request.oldObject", d)
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
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user_info: WireUser,
    #[serde(default)]
    dry_run: Option<bool>,
    /// Decoded as the object of any kind would be: only a SignalProcessing's is looked at.
    #[serde(default, deserialize_with = "object_field")]
    object: Option<ReviewObject>,
    #[serde(default, deserialize_with = "old_object_field")]
    old_object: Option<ReviewObject>,
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
    #[serde(default)]
    extra: Option<BTreeMap<String, Vec<String>>>,
}

/// A review body decoded into `T` (empty or malformed bodies named as such).
pub(super) fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BadReview> {
    if body.is_empty() {
        return Err(bad("empty body: expected an admission.k8s.io/v1 AdmissionReview"));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("malformed AdmissionReview JSON: {e}")))
}

pub(super) fn check_envelope(api_version: Option<&str>, kind: Option<&str>) -> Result<(), BadReview> {
    if api_version != Some(API_VERSION) {
        return Err(bad(format!(
            "apiVersion must be {API_VERSION}, got {}",
            api_version.unwrap_or("nothing")
        )));
    }
    if kind != Some(KIND) {
        return Err(bad(format!("kind must be {KIND}, got {}", kind.unwrap_or("nothing"))));
    }
    Ok(())
}

pub(super) fn operation(op: Option<&str>) -> Result<Operation, BadReview> {
    match op {
        Some("CREATE") => Ok(Operation::Create),
        Some("UPDATE") => Ok(Operation::Update),
        Some("DELETE") => Ok(Operation::Delete),
        Some("CONNECT") => Ok(Operation::Connect),
        other => Err(bad(format!(
            "request.operation must be CREATE, UPDATE, DELETE or CONNECT, got {other:?}"
        ))),
    }
}

pub(super) fn is_signalprocessing(group: &str, kind: &str) -> bool {
    group == "kubernaut.ai" && kind == "SignalProcessing"
}

/// Parses an `admission.k8s.io/v1` AdmissionReview request body.
pub fn parse_review(body: &[u8]) -> Result<Review, BadReview> {
    let wire: WireReview = decode(body)?;
    check_envelope(wire.api_version.as_deref(), wire.kind.as_deref())?;
    let req = wire.request.ok_or_else(|| bad("AdmissionReview has no request"))?;
    let uid = req.uid.filter(|u| !u.is_empty()).ok_or_else(|| bad("request.uid is missing"))?;
    let operation = operation(req.operation.as_deref())?;
    let is_signalprocessing = req.kind.as_ref().is_some_and(|k| is_signalprocessing(&k.group, &k.kind));
    let (mut object, mut old_object) = (None, None);
    if is_signalprocessing {
        let needs_object = matches!(operation, Operation::Create | Operation::Update);
        let needs_old = matches!(operation, Operation::Update | Operation::Delete);
        object = required(req.object, "request.object", needs_object)?;
        old_object = required(req.old_object, "request.oldObject", needs_old)?;
    }
    let meta = |f: fn(&ReviewObject) -> Option<&String>| old_object.as_ref().or(object.as_ref()).and_then(f).cloned();
    Ok(Review {
        uid,
        operation,
        namespace: req
            .namespace
            .filter(|n| !n.is_empty())
            .or_else(|| meta(|o| o.metadata.namespace.as_ref()))
            .unwrap_or_default(),
        name: req
            .name
            .filter(|n| !n.is_empty())
            .or_else(|| meta(|o| o.metadata.name.as_ref()))
            .unwrap_or_default(),
        username: req.user_info.username.unwrap_or_default(),
        groups: req.user_info.groups.unwrap_or_default(),
        extra: req.user_info.extra.unwrap_or_default(),
        dry_run: req.dry_run.unwrap_or(false),
        object,
        old_object,
        is_signalprocessing,
    })
}

fn required(object: Option<ReviewObject>, field: &str, required: bool) -> Result<Option<ReviewObject>, BadReview> {
    match object {
        None if required => Err(bad(format!("{field} is missing"))),
        other => Ok(other),
    }
}

/// The mutating fast path's wire form: the envelope, the request's identity and kind, and only
/// the metadata of its object.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MutateWire<'a> {
    #[serde(borrow, default)]
    pub(super) api_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) request: Option<MutateWireRequest<'a>>,
}

#[derive(Deserialize)]
pub(super) struct MutateWireRequest<'a> {
    #[serde(borrow, default)]
    pub(super) uid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) kind: Option<MutateGvk<'a>>,
    #[serde(borrow, default)]
    pub(super) operation: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub(super) object: Option<MetadataOnly>,
}

#[derive(Deserialize)]
pub(super) struct MutateGvk<'a> {
    #[serde(borrow, default)]
    pub(super) group: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) kind: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct MetadataOnly {
    #[serde(default)]
    pub(super) metadata: MetadataFields,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct MetadataFields {
    #[serde(default)]
    pub(super) finalizers: Option<Vec<String>>,
    #[serde(default)]
    pub(super) deletion_timestamp: Option<serde::de::IgnoredAny>,
}
