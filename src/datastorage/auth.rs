//! Authentication — who is calling: a kube-apiserver style tokens file, Kubernetes
//! TokenReview (with the audience Data Storage's tokens are minted for), or (explicitly)
//! nobody. What a caller may do is decided in [`super::authz`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
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
    /// Too many tokens not seen before are being reviewed: this one was not sent to the API
    /// server (retry shortly; tokens already known are not held back).
    #[error("too many unknown bearer tokens are being reviewed; retry shortly")]
    Throttled,
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

/// How long an accepted token is reused without asking the API server again.
pub const REVIEW_TTL_ALLOWED: Duration = Duration::from_secs(10);
/// Most cached answers (of each kind); the oldest go first when full.
pub const REVIEW_CACHE_CAPACITY: usize = 4096;
/// A call to the API server that takes longer is given up (503, the caller retries).
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Reviews in flight at once.
pub const REVIEWS_IN_FLIGHT: usize = 32;
/// A token accepted within this long is *known*: when its cached answer expires, its next
/// review is not held back by the rate limit for unknown tokens.
pub const KNOWN_FOR: Duration = Duration::from_secs(3600);

/// Bounds on what unknown tokens may cost (flags, see `DataStorageArgs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReviewLimits {
    /// How long a refused token is refused again without a review.
    pub refused_ttl: Duration,
    /// Reviews per second of tokens that are not known (a token bucket's refill rate).
    pub unknown_per_second: f64,
    /// The bucket's size: that many such reviews at once after a quiet spell.
    pub unknown_burst: u32,
}

pub const DEFAULT_REVIEW_LIMITS: ReviewLimits = ReviewLimits {
    refused_ttl: Duration::from_secs(10),
    unknown_per_second: 10.0,
    unknown_burst: 20,
};

/// A token bucket: `burst` tokens, refilled at `per_second`; each admitted call takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_second: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: per_second.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token if one is there at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with a token, from what the caches say about its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Accepted(User),
    /// Refused within `refused_ttl`: refused again, no review.
    Refused,
    /// Review it; `known`: it was accepted recently, so the rate limit does not apply.
    Review {
        known: bool,
    },
}

/// Kubernetes' TokenReview, behind a seam so that tests can count calls.
pub trait ReviewBackend: Send + Sync {
    /// The review's status for `token` checked for `audience`, or why the API server could not answer.
    fn review<'a>(&'a self, token: &'a str, audience: &'a str) -> BoxFuture<'a, Result<Option<TokenReviewStatus>, String>>;
}

impl ReviewBackend for kube::Client {
    fn review<'a>(&'a self, token: &'a str, audience: &'a str) -> BoxFuture<'a, Result<Option<TokenReviewStatus>, String>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: Some(vec![audience.to_string()]),
                },
                ..Default::default()
            };
            let api: Api<TokenReview> = Api::all(self.clone());
            let answer = api.create(&PostParams::default(), &review).await.map_err(|e| e.to_string())?;
            Ok(answer.status)
        })
    }
}

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

/// Kubernetes TokenReview for tokens minted for `audience`. Answers are cached by token
/// digest (never the token): accepted ones for [`REVIEW_TTL_ALLOWED`], refused ones for
/// `refused_ttl`, each kind in a bounded cache of its own, so a flood of unknown tokens
/// cannot evict the known ones. Reviews of tokens not accepted within [`KNOWN_FOR`] pass a
/// token bucket; beyond it they are answered 429 at once, without calling the API server.
pub struct TokenReviewer {
    backend: Arc<dyn ReviewBackend>,
    audience: String,
    limits: ReviewLimits,
    accepted: TtlCache<[u8; 32], User>,
    refused: TtlCache<[u8; 32], ()>,
    known: TtlCache<[u8; 32], ()>,
    bucket: Mutex<TokenBucket>,
    in_flight: tokio::sync::Semaphore,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: String, limits: ReviewLimits) -> Self {
        Self::with_backend(Arc::new(client), audience, limits)
    }

    pub fn with_backend(backend: Arc<dyn ReviewBackend>, audience: String, limits: ReviewLimits) -> Self {
        Self {
            backend,
            audience,
            limits,
            accepted: TtlCache::new(REVIEW_CACHE_CAPACITY),
            refused: TtlCache::new(REVIEW_CACHE_CAPACITY),
            known: TtlCache::new(REVIEW_CACHE_CAPACITY),
            bucket: Mutex::new(TokenBucket::new(limits.unknown_per_second, limits.unknown_burst, Instant::now())),
            in_flight: tokio::sync::Semaphore::new(REVIEWS_IN_FLIGHT),
        }
    }

    fn lookup(&self, key: &[u8; 32], now: Instant) -> Lookup {
        if let Some(user) = self.accepted.get(key, now) {
            return Lookup::Accepted(user);
        }
        if self.refused.get(key, now).is_some() {
            return Lookup::Refused;
        }
        Lookup::Review {
            known: self.known.get(key, now).is_some(),
        }
    }

    pub async fn review(&self, token: &str) -> Result<User, AuthError> {
        let key = token_digest(token);
        let now = Instant::now();
        match self.lookup(&key, now) {
            Lookup::Accepted(user) => return Ok(user),
            Lookup::Refused => {
                metrics::TOKEN_REVIEWS.with_label_values(&["cached_refusal"]).inc();
                return Err(AuthError::Unknown);
            }
            Lookup::Review { known: true } => {}
            Lookup::Review { known: false } => {
                let admitted = self.bucket.lock().map(|mut b| b.try_take(now)).unwrap_or(false);
                if !admitted {
                    metrics::TOKEN_REVIEWS.with_label_values(&["rate_limited"]).inc();
                    return Err(AuthError::Throttled);
                }
            }
        }
        let unavailable = |e: String| AuthError::Unavailable(format!("TokenReview: {e}"));
        let _permit = tokio::time::timeout(REVIEW_TIMEOUT, self.in_flight.acquire())
            .await
            .map_err(|_| unavailable("too many reviews in flight".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let status = tokio::time::timeout(REVIEW_TIMEOUT, self.backend.review(token, &self.audience))
            .await
            .map_err(|_| unavailable("timed out".into()))?
            .map_err(unavailable)?;
        let now = Instant::now();
        match reviewed_user(status, &self.audience) {
            Some(user) => {
                metrics::TOKEN_REVIEWS.with_label_values(&["accepted"]).inc();
                self.accepted.insert(key, user.clone(), REVIEW_TTL_ALLOWED, now);
                self.known.insert(key, (), KNOWN_FOR, now);
                Ok(user)
            }
            None => {
                metrics::TOKEN_REVIEWS.with_label_values(&["refused"]).inc();
                self.refused.insert(key, (), self.limits.refused_ttl, now);
                Err(AuthError::Unknown)
            }
        }
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

    /// Accepts `good` (for the audience), refuses every other token; counts calls.
    struct FakeApiServer {
        calls: std::sync::atomic::AtomicUsize,
    }

    impl ReviewBackend for FakeApiServer {
        fn review<'a>(&'a self, token: &'a str, audience: &'a str) -> BoxFuture<'a, Result<Option<TokenReviewStatus>, String>> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = status(token == "good", Some(vec![audience]));
            Box::pin(async move { Ok(answer) })
        }
    }

    fn reviewer(limits: ReviewLimits) -> (TokenReviewer, Arc<FakeApiServer>) {
        let api = Arc::new(FakeApiServer { calls: Default::default() });
        (TokenReviewer::with_backend(api.clone(), "aud".into(), limits), api)
    }

    fn calls(api: &FakeApiServer) -> usize {
        api.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_flood_of_unknown_tokens_is_rate_limited_and_never_delays_a_known_one() {
        let limits = ReviewLimits {
            refused_ttl: Duration::from_secs(10),
            unknown_per_second: 0.0,
            unknown_burst: 5,
        };
        let (r, api) = reviewer(limits);
        assert!(r.review("good").await.is_ok());
        assert_eq!(calls(&api), 1);
        let mut answers = vec![];
        for i in 0..100 {
            answers.push(r.review(&format!("garbage-{i}")).await);
            // The known token is answered from its cache between the unknown ones, uncounted.
            assert_eq!(r.review("good").await.map(|u| u.uid), Ok("u-1".to_string()));
        }
        let unknown = answers.iter().filter(|a| **a == Err(AuthError::Unknown)).count();
        let throttled = answers.iter().filter(|a| **a == Err(AuthError::Throttled)).count();
        assert_eq!((unknown, throttled), (4, 96), "the burst (one taken by the good token) and no more");
        assert_eq!(calls(&api), 5, "the API server saw the burst only");
        // A refused token is refused again from the cache, without a review or a bucket token.
        assert_eq!(r.review("garbage-0").await, Err(AuthError::Unknown));
        assert_eq!(calls(&api), 5);
        assert_eq!(r.refused.len(), 4);
    }

    #[test]
    fn a_recently_accepted_token_is_known_when_its_answer_expires() {
        let (r, _) = reviewer(DEFAULT_REVIEW_LIMITS);
        let t0 = Instant::now();
        let (good, bad) = (token_digest("good"), token_digest("bad"));
        r.accepted.insert(good, User::default(), REVIEW_TTL_ALLOWED, t0);
        r.known.insert(good, (), KNOWN_FOR, t0);
        r.refused.insert(bad, (), DEFAULT_REVIEW_LIMITS.refused_ttl, t0);
        assert_eq!(r.lookup(&good, t0), Lookup::Accepted(User::default()));
        assert_eq!(r.lookup(&bad, t0), Lookup::Refused);
        let later = t0 + REVIEW_TTL_ALLOWED + Duration::from_secs(1);
        assert_eq!(
            r.lookup(&good, later),
            Lookup::Review { known: true },
            "re-reviewed, not rate limited"
        );
        assert_eq!(r.lookup(&bad, later), Lookup::Review { known: false });
        assert_eq!(r.lookup(&good, t0 + KNOWN_FOR), Lookup::Review { known: false });
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3, t0);
        assert_eq!((0..5).filter(|_| b.try_take(t0)).count(), 3);
        assert!(!b.try_take(t0 + Duration::from_millis(400)));
        assert!(b.try_take(t0 + Duration::from_millis(500)), "one every half second");
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!((0..5).filter(|_| b.try_take(much_later)).count(), 3, "never more than the burst");
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
