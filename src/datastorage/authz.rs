//! Authorization — what an authenticated caller may do. Every `/api/` call is one verb on the
//! resource `signalprocessingaudits` of API group `audit.kubernaut.ai` (a resource that exists
//! only for RBAC: Kubernetes never serves it): any POST is `create`, reading one item by id is
//! `get`, listings and statistics are `list`.
//!
//! With TokenReview, a SubjectAccessReview asks the API server (the kube-rbac-proxy pattern),
//! so ClusterRoles decide: `audit-guard-datastorage-writer` (create, get, list; bound to the
//! controller only) and `audit-guard-datastorage-reader` (get, list; bound by admins to their
//! auditors). With a tokens file, its groups column decides.

use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

use super::auth::User;
use super::cache::TtlCache;

pub const API_GROUP: &str = "audit.kubernaut.ai";
pub const RESOURCE: &str = "signalprocessingaudits";
/// The audience Data Storage's tokens are minted for (the manifests project it for `serve`).
pub const DEFAULT_TOKEN_AUDIENCE: &str = "audit-guard-datastorage";
/// Tokens-file mode: members may create, get and list.
pub const DEFAULT_WRITERS_GROUP: &str = "audit-guard:datastorage-writers";
/// Tokens-file mode: members may get and list.
pub const DEFAULT_READERS_GROUP: &str = "audit-guard:datastorage-readers";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Create,
    Get,
    List,
}

impl Verb {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::List => "list",
        }
    }
}

/// The verb of a call, from its method and matched route: any POST creates; a route ending in
/// `/{id}` gets one item; every other read lists.
pub fn verb_for(method: &axum::http::Method, route: &str) -> Verb {
    if method == axum::http::Method::POST {
        Verb::Create
    } else if route.ends_with("/{id}") {
        Verb::Get
    } else {
        Verb::List
    }
}

/// Tokens-file mode's rule: writers may do everything, readers may read, nobody else anything.
pub fn group_allows(user: &User, verb: Verb, writers: &str, readers: &str) -> bool {
    let member = |g: &str| user.groups.iter().any(|x| x == g);
    member(writers) || (verb != Verb::Create && member(readers))
}

/// The 403 detail: who, which verb, on what.
pub fn forbidden_detail(user: &User, verb: Verb) -> String {
    format!(
        "user {:?} may not {} {RESOURCE}.{API_GROUP} (ask an admin for the ClusterRole audit-guard-datastorage-{})",
        user.name,
        verb.as_str(),
        if verb == Verb::Create { "writer" } else { "reader" }
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authorization unavailable: {0}")]
pub struct AuthzUnavailable(pub String);

pub enum Authorizer {
    /// Authentication is off (`--insecure-no-auth`): nobody to authorize.
    AllowAll,
    Groups {
        writers: String,
        readers: String,
    },
    AccessReview(AccessReviewer),
}

impl Authorizer {
    pub async fn allows(&self, user: &User, verb: Verb) -> Result<bool, AuthzUnavailable> {
        match self {
            Self::AllowAll => Ok(true),
            Self::Groups { writers, readers } => Ok(group_allows(user, verb, writers, readers)),
            Self::AccessReview(r) => r.allows(user, verb).await,
        }
    }
}

pub const ACCESS_TTL_ALLOWED: Duration = Duration::from_secs(10);
pub const ACCESS_TTL_DENIED: Duration = Duration::from_secs(1);
pub const ACCESS_CACHE_CAPACITY: usize = 4096;
pub const ACCESS_TIMEOUT: Duration = Duration::from_secs(5);

/// The SubjectAccessReview for `user` doing `verb` on the audit records.
pub fn access_review(user: &User, verb: Verb) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(API_GROUP.into()),
                resource: Some(RESOURCE.into()),
                verb: Some(verb.as_str().into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// SubjectAccessReview, answers cached per (user, verb).
pub struct AccessReviewer {
    client: kube::Client,
    cache: TtlCache<(User, Verb), bool>,
    in_flight: tokio::sync::Semaphore,
}

impl AccessReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: TtlCache::new(ACCESS_CACHE_CAPACITY),
            in_flight: tokio::sync::Semaphore::new(super::auth::REVIEWS_IN_FLIGHT),
        }
    }

    async fn allows(&self, user: &User, verb: Verb) -> Result<bool, AuthzUnavailable> {
        let key = (user.clone(), verb);
        if let Some(allowed) = self.cache.get(&key, Instant::now()) {
            return Ok(allowed);
        }
        let unavailable = |e: String| AuthzUnavailable(format!("SubjectAccessReview: {e}"));
        let _permit = tokio::time::timeout(ACCESS_TIMEOUT, self.in_flight.acquire())
            .await
            .map_err(|_| unavailable("too many reviews in flight".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = tokio::time::timeout(ACCESS_TIMEOUT, api.create(&PostParams::default(), &access_review(user, verb)))
            .await
            .map_err(|_| unavailable("timed out".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let allowed = answer.status.is_some_and(|s| s.allowed && s.denied != Some(true));
        let ttl = if allowed { ACCESS_TTL_ALLOWED } else { ACCESS_TTL_DENIED };
        self.cache.insert(key, allowed, ttl, Instant::now());
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn user(groups: &[&str]) -> User {
        User {
            name: "u".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn verbs_follow_method_and_route() {
        let base = "/api/v1/audit/signal-processing";
        assert_eq!(verb_for(&Method::POST, base), Verb::Create);
        assert_eq!(verb_for(&Method::POST, &format!("{base}/batch")), Verb::Create);
        assert_eq!(verb_for(&Method::POST, &format!("{base}/{{id}}/amendments")), Verb::Create);
        assert_eq!(verb_for(&Method::POST, "/api/v1/audit/break-glass-events"), Verb::Create);
        assert_eq!(verb_for(&Method::GET, &format!("{base}/{{id}}")), Verb::Get);
        assert_eq!(verb_for(&Method::GET, "/api/v1/audit/break-glass-events/{id}"), Verb::Get);
        assert_eq!(verb_for(&Method::GET, base), Verb::List);
        assert_eq!(verb_for(&Method::GET, &format!("{base}/stats/slow-phases")), Verb::List);
        assert_eq!(verb_for(&Method::GET, "/api/v1/audit/break-glass-events"), Verb::List);
    }

    #[test]
    fn groups_decide_in_tokens_file_mode() {
        let (w, r) = (DEFAULT_WRITERS_GROUP, DEFAULT_READERS_GROUP);
        for verb in [Verb::Create, Verb::Get, Verb::List] {
            assert!(group_allows(&user(&[w]), verb, w, r), "{verb:?}");
            assert!(group_allows(&user(&["x", w]), verb, w, r), "{verb:?}");
            assert!(!group_allows(&user(&[]), verb, w, r), "{verb:?}");
            assert!(!group_allows(&user(&["audit-writers"]), verb, w, r), "{verb:?}");
        }
        assert!(!group_allows(&user(&[r]), Verb::Create, w, r));
        assert!(group_allows(&user(&[r]), Verb::Get, w, r));
        assert!(group_allows(&user(&[r]), Verb::List, w, r));
    }

    #[test]
    fn the_access_review_names_the_whole_user_and_the_resource() {
        let mut u = user(&["system:serviceaccounts"]);
        u.uid = "uid-1".into();
        u.extra.insert("k".into(), vec!["v".into()]);
        let sar = access_review(&u, Verb::Get);
        let spec = sar.spec;
        assert_eq!(spec.user.as_deref(), Some("u"));
        assert_eq!(spec.uid.as_deref(), Some("uid-1"));
        assert_eq!(spec.groups, Some(vec!["system:serviceaccounts".to_string()]));
        assert_eq!(spec.extra.unwrap()["k"], vec!["v"]);
        let ra = spec.resource_attributes.unwrap();
        assert_eq!(
            (ra.group.as_deref(), ra.resource.as_deref(), ra.verb.as_deref(), ra.namespace),
            (Some(API_GROUP), Some(RESOURCE), Some("get"), None)
        );
        assert!(forbidden_detail(&u, Verb::Create).contains("\"u\" may not create signalprocessingaudits.audit.kubernaut.ai"));
    }

    /// The token the manifests project for `serve` must be minted for the audience this server checks.
    #[test]
    fn the_manifests_project_the_default_audience() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/webhook-deployment.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut audiences = vec![];
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            let volumes = &v["spec"]["template"]["spec"]["volumes"];
            for vol in volumes.as_sequence().into_iter().flatten() {
                for src in vol["projected"]["sources"].as_sequence().into_iter().flatten() {
                    if let Some(a) = src["serviceAccountToken"]["audience"].as_str() {
                        audiences.push(a.to_string());
                    }
                }
            }
        }
        assert_eq!(audiences, vec![DEFAULT_TOKEN_AUDIENCE.to_string()]);
    }

    use serde::Deserialize;
}
