//! SignalProcessings read from the API server straight into the slim form the controller keeps
//! ([`super::slim`]). What nothing reads (managedFields, labels, annotations other than
//! audit-guard's own, the signal's labels and annotations, each contextSources entry) is
//! skipped by the parser, never built: reading a megabyte object costs its bytes, not their
//! expansion into maps and values (for 20,000 labels, several times the bytes).
//!
//! The status is decoded whole and then slimmed: only holders of the status subresource (the
//! Kubernaut controller) write it, not the users who create SignalProcessings.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::runtime::watcher::Event;
use kube::Resource;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{
    slim, EnrichmentConfig, RemediationRequestRef, Signal, SignalProcessing, SignalProcessingSpec, SignalProcessingStatus, OWN_ANNOTATIONS,
};

/// A SignalProcessing as the API returns it, decoded slim: the type to read objects with
/// (`Api<SlimSignalProcessing>`) wherever only the record and the decisions need them.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct SlimSignalProcessing(pub SignalProcessing);

impl SlimSignalProcessing {
    pub fn into_inner(self) -> SignalProcessing {
        self.0
    }
}

impl Resource for SlimSignalProcessing {
    type DynamicType = ();
    type Scope = <SignalProcessing as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        SignalProcessing::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        SignalProcessing::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        SignalProcessing::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        SignalProcessing::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// A watch event of slim objects as one of the SignalProcessings they hold.
pub fn unwrap_event(event: Event<SlimSignalProcessing>) -> Event<SignalProcessing> {
    match event {
        Event::Apply(o) => Event::Apply(o.0),
        Event::Delete(o) => Event::Delete(o.0),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(o.0),
        Event::InitDone => Event::InitDone,
    }
}

impl<'de> Deserialize<'de> for SlimSignalProcessing {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        let mut sp = SignalProcessing {
            metadata: wire.metadata.into(),
            spec: wire.spec.into(),
            status: wire.status,
        };
        slim(&mut sp);
        Ok(Self(sp))
    }
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: MetaWire,
    #[serde(default)]
    spec: SpecWire,
    #[serde(default)]
    status: Option<SignalProcessingStatus>,
}

/// The metadata fields the slim object keeps; labels and managedFields are not among them.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct MetaWire {
    annotations: Option<OwnAnnotations>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<FirstRemediationRequest>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<MetaWire> for ObjectMeta {
    fn from(m: MetaWire) -> Self {
        ObjectMeta {
            annotations: m.annotations.map(|a| a.0),
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            generate_name: m.generate_name,
            generation: m.generation,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references.map(|o| o.0.into_iter().collect()),
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
            ..Default::default()
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SpecWire {
    remediation_request_ref: Option<NameOnly>,
    signal: Option<SignalWire>,
    enrichment_config: Option<EnrichmentWire>,
}

#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SignalWire {
    fingerprint: Option<String>,
    name: Option<String>,
    severity: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EnrichmentWire {
    context_sources: Option<Counted>,
}

impl From<SpecWire> for SignalProcessingSpec {
    fn from(s: SpecWire) -> Self {
        SignalProcessingSpec {
            remediation_request_ref: s.remediation_request_ref.map(|r| RemediationRequestRef {
                name: r.name,
                ..Default::default()
            }),
            signal: s.signal.map(|s| Signal {
                fingerprint: s.fingerprint,
                name: s.name,
                severity: s.severity,
                ..Default::default()
            }),
            enrichment_config: s.enrichment_config.map(|c| EnrichmentConfig {
                context_sources_dropped: c.context_sources.map(|n| n.0),
                ..Default::default()
            }),
            times_out_at: None,
        }
    }
}

/// audit-guard's own annotations; every other value is skipped unread.
struct OwnAnnotations(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for OwnAnnotations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Own;
        impl<'de> Visitor<'de> for Own {
            type Value = OwnAnnotations;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut kept = BTreeMap::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if OWN_ANNOTATIONS.contains(&key.as_ref()) {
                        kept.insert(key.into_owned(), map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(OwnAnnotations(kept))
            }
        }
        d.deserialize_map(Own)
    }
}

/// The first owner reference of kind RemediationRequest (the one the record names); the
/// others are decoded one at a time and dropped.
struct FirstRemediationRequest(Option<OwnerReference>);

impl<'de> Deserialize<'de> for FirstRemediationRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct First;
        impl<'de> Visitor<'de> for First {
            type Value = FirstRemediationRequest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of owner references")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut first = None;
                while let Some(owner) = seq.next_element::<OwnerReference>()? {
                    if first.is_none() && owner.kind == "RemediationRequest" {
                        first = Some(owner);
                    }
                }
                Ok(FirstRemediationRequest(first))
            }
        }
        d.deserialize_seq(First)
    }
}

/// How many entries a list has; the entries are skipped unread.
struct Counted(usize);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = Counted;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Counted(n))
            }
        }
        d.deserialize_seq(Count)
    }
}
