//! Bearer-token authentication: a kube-apiserver style tokens file, Kubernetes TokenReview,
//! or (explicitly) nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    Missing,
    #[error("invalid or unknown bearer token")]
    Unknown,
    #[error("authentication backend unavailable: {0}")]
    Backend(String),
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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
        out.insert(
            fields[0].clone(),
            User {
                name: fields[1].clone(),
                groups,
            },
        );
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
    TokenReview(TokenReviewer),
}

impl Authenticator {
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Option<User>, AuthError> {
        if let Self::Insecure = self {
            return Ok(None);
        }
        let token = bearer(header).ok_or(AuthError::Missing)?;
        match self {
            Self::Insecure => Ok(None),
            Self::Tokens(t) => t.lookup(token).map(Some).ok_or(AuthError::Unknown),
            Self::TokenReview(r) => r.review(token).await.map(Some),
        }
    }
}

/// A tokens file, re-read whenever its content changes. Polled rather than watched: a
/// mounted Secret swaps a symlink, which file watches miss.
pub struct TokensFile {
    tokens: Arc<RwLock<HashMap<String, User>>>,
}

impl TokensFile {
    pub fn load(path: PathBuf) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading tokens file {}: {e}", path.display()))?;
        let tokens = parse_tokens(&text).map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), users = tokens.len(), "loaded bearer tokens");
        let tokens = Arc::new(RwLock::new(tokens));
        let weak = Arc::downgrade(&tokens);
        tokio::spawn(async move {
            let mut last = text;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(tokens) = weak.upgrade() else { return };
                let Ok(text) = tokio::fs::read_to_string(&path).await else {
                    continue;
                };
                if text == last {
                    continue;
                }
                match parse_tokens(&text) {
                    Ok(parsed) => {
                        tracing::info!(path = %path.display(), users = parsed.len(), "reloaded bearer tokens");
                        if let Ok(mut guard) = tokens.write() {
                            *guard = parsed;
                        }
                    }
                    // Keep serving with the last good set rather than locking everyone out.
                    Err(e) => tracing::error!(path = %path.display(), error = %e, "tokens file invalid; keeping previous tokens"),
                }
                last = text;
            }
        });
        Ok(Self { tokens })
    }

    fn lookup(&self, token: &str) -> Option<User> {
        self.tokens.read().ok()?.get(token).cloned()
    }
}

const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 10_000;

/// Kubernetes TokenReview, with answers (including refusals) cached for a few seconds.
pub struct TokenReviewer {
    client: kube::Client,
    cache: Mutex<HashMap<String, (Instant, Option<User>)>>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn review(&self, token: &str) -> Result<User, AuthError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, answer)) = cache.get(token) {
                if at.elapsed() < CACHE_TTL {
                    return answer.clone().ok_or(AuthError::Unknown);
                }
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Backend(e.to_string()))?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .map(|u| User {
                name: u.username.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
            });
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(token.to_string(), (Instant::now(), user.clone()));
        }
        user.ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apiserver_token_file() {
        let t = parse_tokens("# comment\nabc,alice,1,\"g1,g2\"\n\ndef,bob,2\n").unwrap();
        assert_eq!(t["abc"].name, "alice");
        assert_eq!(t["abc"].groups, vec!["g1", "g2"]);
        assert!(t["def"].groups.is_empty());
        assert!(parse_tokens("abc,alice").is_err());
        assert!(parse_tokens("abc,alice,1,\"g1").is_err());
    }

    #[test]
    fn extracts_bearer_tokens() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
