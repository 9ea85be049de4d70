//! Authentication — who is calling: a kube-apiserver style tokens file, Kubernetes
//! TokenReview (with the audience Data Storage's tokens are minted for), or (explicitly)
//! nobody. What a caller may do is decided in [`super::authz`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::cache::TtlCache;
use super::metrics;
use crate::filewatch;

/// An authenticated caller, as Kubernetes describes users.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    Missing,
    #[error("invalid or unknown bearer token")]
    Unknown,
    /// The component that judges tokens cannot answer now (retry).
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Tokens are kept in caches only as digests.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Parses kube-apiserver's --token-auth-file CSV: `token,user,uid[,"group1,group2"]`.
pub fn parse_tokens(text: &str) -> Result<HashMap<String, User>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if fields.len() < 3 || fields[0].is_empty() || fields[1].is_empty() {
            return Err(format!("line {}: expected token,user,uid[,\"groups\"]", n + 1));
        }
        let groups = fields
            .get(3)
            .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        let user = User {
            name: fields[1].clone(),
            uid: fields[2].clone(),
            groups,
            extra: BTreeMap::new(),
        };
        if out.insert(fields[0].clone(), user).is_some() {
            return Err(format!("line {}: a token listed twice", n + 1));
        }
    }
    Ok(out)
}

fn split_csv(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let cur = fields.last_mut().ok_or("internal")?;
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote");
    }
    Ok(fields.into_iter().map(|f| f.trim().to_string()).collect())
}

pub enum Authenticator {
    Insecure,
    Tokens(TokensFile),
    TokenReview(Box<TokenReviewer>),
}

impl Authenticator {
    /// The caller, or None when authentication is switched off.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Option<User>, AuthError> {
        let token = || bearer(header).ok_or(AuthError::Missing);
        match self {
            Self::Insecure => Ok(None),
            Self::Tokens(t) => t.lookup(token()?).map(Some),
            Self::TokenReview(r) => r.review(token()?).await.map(Some),
        }
    }

    /// Why the service is not ready from authentication's point of view, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        match self {
            Self::Tokens(t) => t.invalid_reason(),
            _ => None,
        }
    }
}

/// The tokens file as last read: a valid set, or why the file is unusable now.
#[derive(Debug, Clone, PartialEq)]
pub enum TokensState {
    Valid(HashMap<String, User>),
    Invalid(String),
}

/// Reads and parses the tokens file; an unreadable or broken file is a state, not an error.
pub fn read_tokens(path: &std::path::Path) -> (Option<String>, TokensState) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let state = match parse_tokens(&text) {
                Ok(tokens) => TokensState::Valid(tokens),
                Err(e) => TokensState::Invalid(format!("tokens file {} invalid: {e}", path.display())),
            };
            (Some(text), state)
        }
        Err(e) => (
            None,
            TokensState::Invalid(format!("tokens file {} unreadable: {e}", path.display())),
        ),
    }
}

/// A tokens file, followed through [`filewatch`] (a mounted Secret swaps a symlink in the
/// directory) and re-parsed when what it says changes.
///
/// When the file becomes unreadable or invalid, no token is accepted until it is fixed
/// (every `/api/` call gets 503, /readyz fails, `datastorage_tokens_file_valid` drops to 0,
/// an error is logged): keeping the old set would let a revoked token keep working unseen.
pub struct TokensFile {
    path: PathBuf,
    state: Arc<RwLock<TokensState>>,
}

impl TokensFile {
    /// Loads the file once: the service does not start with a broken one.
    pub fn load(path: PathBuf) -> anyhow::Result<Self> {
        let (_, state) = read_tokens(&path);
        let users = match &state {
            TokensState::Valid(t) => t.len(),
            TokensState::Invalid(reason) => anyhow::bail!("{reason}"),
        };
        tracing::info!(path = %path.display(), users, "loaded bearer tokens");
        metrics::TOKENS_FILE_VALID.set(1);
        Ok(Self {
            path,
            state: Arc::new(RwLock::new(state)),
        })
    }

    /// Re-reads the file whenever it may have changed, until `shutdown`.
    pub fn spawn_reloader(&self, shutdown: CancellationToken) {
        let (path, shared) = (self.path.clone(), self.state.clone());
        filewatch::watch(&filewatch::dir_of(&self.path), filewatch::POLL_INTERVAL, shutdown, move || {
            let (_, state) = read_tokens(&path);
            // Unchanged (the same tokens, or broken for the same reason): nothing to say again.
            if shared.read().is_ok_and(|current| *current == state) {
                return;
            }
            match &state {
                TokensState::Valid(tokens) => {
                    tracing::info!(path = %path.display(), users = tokens.len(), "reloaded bearer tokens");
                    metrics::TOKENS_FILE_VALID.set(1);
                }
                TokensState::Invalid(reason) => {
                    tracing::error!(error = %reason, "refusing every token until the tokens file is fixed");
                    metrics::TOKENS_FILE_VALID.set(0);
                }
            }
            if let Ok(mut guard) = shared.write() {
                *guard = state;
            }
        });
    }

    fn lookup(&self, token: &str) -> Result<User, AuthError> {
        let state = self
            .state
            .read()
            .map_err(|_| AuthError::Unavailable("tokens state poisoned".into()))?;
        match &*state {
            TokensState::Valid(tokens) => tokens.get(token).cloned().ok_or(AuthError::Unknown),
            TokensState::Invalid(reason) => Err(AuthError::Unavailable(reason.clone())),
        }
    }

    fn invalid_reason(&self) -> Option<String> {
        match self.state.read().as_deref() {
            Ok(TokensState::Valid(_)) => None,
            Ok(TokensState::Invalid(reason)) => Some(reason.clone()),
            Err(_) => Some("tokens state poisoned".into()),
        }
    }
}

/// How long TokenReview answers are reused: accepted tokens briefly, refused ones very briefly.
pub const REVIEW_TTL_ALLOWED: Duration = Duration::from_secs(10);
pub const REVIEW_TTL_REFUSED: Duration = Duration::from_secs(1);
/// Most cached answers; the oldest go first when full.
pub const REVIEW_CACHE_CAPACITY: usize = 4096;
/// A call to the API server that takes longer is given up (503, the caller retries).
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Reviews in flight at once; a flood of unknown tokens queues here instead of on the API server.
pub const REVIEWS_IN_FLIGHT: usize = 32;

/// What a TokenReview's status says about the token, for `audience`.
pub fn reviewed_user(status: Option<TokenReviewStatus>, audience: &str) -> Option<User> {
    let status = status?;
    if status.authenticated != Some(true) {
        return None;
    }
    // An audience-aware API server names the audiences it checked; one that does not, or a
    // token for another audience, is not good enough.
    if !status.audiences.unwrap_or_default().iter().any(|a| a == audience) {
        return None;
    }
    let u = status.user?;
    Some(User {
        name: u.username.filter(|n| !n.is_empty())?,
        uid: u.uid.unwrap_or_default(),
        groups: u.groups.unwrap_or_default(),
        extra: u.extra.unwrap_or_default().into_iter().collect(),
    })
}

/// Kubernetes TokenReview for tokens minted for `audience`, answers cached by token digest.
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    cache: TtlCache<[u8; 32], Option<User>>,
    in_flight: tokio::sync::Semaphore,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: String) -> Self {
        Self {
            client,
            audience,
            cache: TtlCache::new(REVIEW_CACHE_CAPACITY),
            in_flight: tokio::sync::Semaphore::new(REVIEWS_IN_FLIGHT),
        }
    }

    async fn review(&self, token: &str) -> Result<User, AuthError> {
        let key = token_digest(token);
        if let Some(answer) = self.cache.get(&key, Instant::now()) {
            return answer.ok_or(AuthError::Unknown);
        }
        let unavailable = |e: String| AuthError::Unavailable(format!("TokenReview: {e}"));
        let _permit = tokio::time::timeout(REVIEW_TIMEOUT, self.in_flight.acquire())
            .await
            .map_err(|_| unavailable("too many reviews in flight".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
            .await
            .map_err(|_| unavailable("timed out".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let user = reviewed_user(answer.status, &self.audience);
        let ttl = if user.is_some() { REVIEW_TTL_ALLOWED } else { REVIEW_TTL_REFUSED };
        self.cache.insert(key, user.clone(), ttl, Instant::now());
        user.ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    #[test]
    fn parses_apiserver_token_file() {
        let t = parse_tokens("# comment\nabc,alice,1,\"g1,g2\"\n\ndef,bob,2\n").unwrap();
        assert_eq!(t["abc"].name, "alice");
        assert_eq!(t["abc"].uid, "1");
        assert_eq!(t["abc"].groups, vec!["g1", "g2"]);
        assert!(t["def"].groups.is_empty());
        assert!(parse_tokens("abc,alice").is_err());
        assert!(parse_tokens("abc,alice,1,\"g1").is_err());
        assert!(parse_tokens("abc,alice,1\nabc,bob,2").is_err(), "one token, two users");
    }

    #[test]
    fn a_broken_or_missing_tokens_file_is_an_invalid_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        assert!(matches!(read_tokens(&path), (None, TokensState::Invalid(r)) if r.contains("unreadable")));
        std::fs::write(&path, "abc,alice").unwrap();
        assert!(matches!(read_tokens(&path), (Some(_), TokensState::Invalid(r)) if r.contains("invalid")));
        std::fs::write(&path, "abc,alice,1").unwrap();
        assert!(matches!(read_tokens(&path), (Some(_), TokensState::Valid(t)) if t.len() == 1));
    }

    #[test]
    fn extracts_bearer_tokens() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    fn status(authenticated: bool, audiences: Option<Vec<&str>>) -> Option<TokenReviewStatus> {
        Some(TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: audiences.map(|a| a.into_iter().map(String::from).collect()),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:audit-guard:audit-guard".into()),
                uid: Some("u-1".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                extra: Some([("authentication.kubernetes.io/pod-name".to_string(), vec!["p".to_string()])].into()),
            }),
            error: None,
        })
    }

    #[test]
    fn a_review_counts_only_for_the_audience_it_checked() {
        let aud = "audit-guard-datastorage";
        let user = reviewed_user(status(true, Some(vec![aud])), aud).unwrap();
        assert_eq!(user.name, "system:serviceaccount:audit-guard:audit-guard");
        assert_eq!(user.uid, "u-1");
        assert_eq!(user.extra["authentication.kubernetes.io/pod-name"], vec!["p"]);
        assert_eq!(reviewed_user(status(true, Some(vec!["https://kubernetes.default.svc"])), aud), None);
        assert_eq!(reviewed_user(status(true, None), aud), None, "an audience-unaware answer");
        assert_eq!(reviewed_user(status(false, Some(vec![aud])), aud), None);
        assert_eq!(reviewed_user(None, aud), None);
    }
}
