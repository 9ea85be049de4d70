//! The Data Storage client: reqwest + rustls (trusting only the configured CA when one is
//! given), bearer token from a file that may rotate, and a plain classification of every
//! answer: stored (created, or the same content already there), a conflict (a different
//! record holds the id: not stored), or a failure of a kind ([`FailureKind`]): transient,
//! queued (202), refused for good (400/413/422), unauthenticated (401) or forbidden (403).
//! What is written where is the business of the API spoken over it: audit-guard's own
//! ([`crate::own_api`]) or Kubernaut's events API ([`crate::kubernaut_api`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{header, StatusCode};
use serde_json::Value;

use crate::filewatch::StampedFile;
use crate::metrics;
use crate::wire::Duplicate;

/// What kind of failure an answer (or its absence) is. Only `Rejected` is permanent; every
/// kind delays a deletion and none releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Network trouble, a timeout before anything was sent, 5xx, 429, 404 ...: retry.
    Transient,
    /// Sent, but no answer came (a timeout): it may have been stored or queued.
    NoAnswer,
    /// 202 from the events API: queued in Data Storage's dead-letter queue, not stored yet.
    Queued,
    /// 400, 413, 422: Data Storage refuses this request as it is.
    Rejected,
    /// 401: Data Storage does not accept audit-guard's token.
    Unauthenticated,
    /// 403: the token is accepted but its identity may not do this.
    Forbidden,
}

impl FailureKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::NoAnswer => "no_answer",
            Self::Queued => "queued",
            Self::Rejected => "rejected",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
        }
    }

    /// A refusal that a retry alone will not change (the install or the record must be fixed).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Rejected | Self::Unauthenticated | Self::Forbidden)
    }
}

/// Why a write did not go through, with what the server said about retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub permanent: bool,
    pub message: String,
    /// From a Retry-After header (seconds form).
    pub retry_after: Option<Duration>,
    pub kind: FailureKind,
}

impl ClientError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self::of(FailureKind::Transient, message)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::of(FailureKind::Rejected, message)
    }

    pub fn of(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            permanent: kind == FailureKind::Rejected,
            message: message.into(),
            retry_after: None,
            kind,
        }
    }
}

/// The last refusal Data Storage answered (401, 403, or a permanent rejection), until an
/// answer that is not one: what `/readyz/datastorage` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: FailureKind,
    pub since: DateTime<Utc>,
    pub message: String,
}

/// What Data Storage answered to something it was asked to store under an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Stored now.
    Created,
    /// The same content was already stored (a retry, another replica, the buffered writer).
    AlreadyStored,
    /// A different record holds this id: nothing was stored. `existing` is what is stored.
    Conflict { existing: Value },
}

impl Stored {
    /// Whether Data Storage now holds this content.
    pub fn is_stored(&self) -> bool {
        !matches!(self, Self::Conflict { .. })
    }
}

/// The per-record results of a batch write, by record id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Created, or the same content already stored.
    pub stored: Vec<String>,
    /// A different record holds the id: not stored, not to be retried (the deletion path amends).
    pub conflicts: Vec<String>,
    /// No result for these (an answer without per-record results, or one that skipped them):
    /// not confirmed, so not counted as stored.
    pub unconfirmed: Vec<String>,
    /// Events mode: queued in Data Storage's dead-letter queue (202), or waiting for an earlier
    /// copy to be replayed. Not stored yet and not to be POSTed again: the deletion path polls.
    pub queued: Vec<String>,
}

/// What an HTTP answer to a write means. `accepted_is_stored` is false for Kubernaut's
/// events API, whose 202 means "queued in a dead-letter queue, not in the database".
pub fn classify(status: u16, retry_after: Option<&str>, body: &str, accepted_is_stored: bool) -> Result<Stored, ClientError> {
    let snippet: String = body.chars().take(300).collect();
    match status {
        200 | 201 => Ok(Stored::Created),
        202 if accepted_is_stored => Ok(Stored::Created),
        202 => Err(ClientError::of(
            FailureKind::Queued,
            "Data Storage queued the record in its dead-letter queue (202) but has not stored it yet",
        )),
        409 => match serde_json::from_str::<Duplicate>(body) {
            Ok(Duplicate { identical: true, .. }) => Ok(Stored::AlreadyStored),
            Ok(Duplicate {
                identical: false,
                existing,
            }) => Ok(Stored::Conflict { existing }),
            // An id is taken, by what is not said: never taken as stored.
            _ => Err(ClientError::transient(format!(
                "Data Storage answered 409 without saying whether the stored record is identical: {snippet}"
            ))),
        },
        _ => Err(ClientError {
            retry_after: retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs),
            ..failure(status, &snippet)
        }),
    }
}

/// The failure an error status is: 400/413/422 refused for good, 401 and 403 refusals of
/// audit-guard's identity (retried: fixing the install releases the waiting deletions), the
/// rest transient.
pub fn failure(status: u16, snippet: &str) -> ClientError {
    match status {
        400 | 413 | 422 => ClientError::permanent(format!("Data Storage rejected the record ({status}): {snippet}")),
        401 => ClientError::of(
            FailureKind::Unauthenticated,
            format!("Data Storage refused audit-guard's token (401; check the token's audience): {snippet}"),
        ),
        403 => ClientError::of(
            FailureKind::Forbidden,
            format!("Data Storage forbids audit-guard this request (403; check its RBAC): {snippet}"),
        ),
        _ => ClientError::transient(format!("Data Storage answered {status}: {snippet}")),
    }
}

/// How `serve` reaches the Data Storage Service (from its flags, see [`crate::config`]).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Base URL.
    pub url: String,
    /// When given, the only CA trusted for an https URL.
    pub ca_file: Option<PathBuf>,
    /// Bearer token file; the kubelet rotates a projected ServiceAccount token in place.
    pub token_file: Option<PathBuf>,
    /// Send the token over a plain `http` URL too (see [`token_transport`]).
    pub allow_plain_http_token: bool,
    /// Timeout of one request.
    pub timeout: Duration,
}

/// Whether a bearer token may go to `url`: never over anything but https unless explicitly
/// allowed, since whoever reads the traffic holds the token and every right of its identity.
pub fn token_transport(url: &reqwest::Url, has_token: bool, allow_plain_http: bool) -> Result<(), String> {
    if !has_token || url.scheme() == "https" || allow_plain_http {
        return Ok(());
    }
    Err(format!(
        "refusing to send the Data Storage token (--datastorage-token-file) to {url} over plain {}: whoever can read that \
         traffic would hold the token and every right of its identity. Use an https URL, or pass \
         --datastorage-allow-plain-http-token (DATASTORAGE_ALLOW_PLAIN_HTTP_TOKEN=true) with a token whose identity may \
         only write to Data Storage",
        url.scheme()
    ))
}

/// An HTTP client builder (rustls) that, given a CA file, trusts that CA and nothing else (a
/// certificate any public CA issued for the name must not pass), following the file as it is
/// rotated ([`crate::certs::ReloadingServerVerifier`]).
pub fn http_builder(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::ClientBuilder> {
    let builder = reqwest::Client::builder().use_rustls_tls();
    let Some(ca) = ca_file else {
        return Ok(builder);
    };
    let verifier = crate::certs::ReloadingServerVerifier::load(ca)?;
    Ok(builder.use_preconfigured_tls(crate::certs::client_config(verifier)?))
}

pub struct DataStorageClient {
    http: reqwest::Client,
    base: reqwest::Url,
    /// Read at every request (a `stat`; re-read when it changed), so a rotated token is sent
    /// from the first request after the rotation.
    token: Option<StampedFile>,
    refusal: std::sync::Mutex<Option<Refusal>>,
}

impl DataStorageClient {
    pub fn new(settings: &ClientSettings) -> anyhow::Result<Self> {
        let builder = http_builder(settings.ca_file.as_deref())?
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        let base = reqwest::Url::parse(settings.url.trim_end_matches('/'))
            .map_err(|e| anyhow::anyhow!("--datastorage-url {:?}: {e}", settings.url))?;
        token_transport(&base, settings.token_file.is_some(), settings.allow_plain_http_token).map_err(anyhow::Error::msg)?;
        if base.scheme() != "https" {
            tracing::warn!(
                url = %base,
                token_sent = settings.token_file.is_some(),
                "Data Storage is reached over plain HTTP: whoever can intercept it can answer for it, and read any token sent"
            );
        }
        Ok(Self {
            http: builder.build()?,
            base,
            token: settings.token_file.clone().map(StampedFile::new),
            refusal: std::sync::Mutex::new(None),
        })
    }

    /// The URL of `path` under the base, each of `segments` appended percent-encoded.
    pub(crate) fn url(&self, path: &str, segments: &[&str]) -> Result<reqwest::Url, ClientError> {
        let mut url = self.base.clone();
        {
            let mut parts = url
                .path_segments_mut()
                .map_err(|()| ClientError::permanent(format!("Data Storage URL {} cannot take a path", self.base)))?;
            parts.pop_if_empty();
            parts.extend(path.trim_start_matches('/').split('/'));
            for s in segments {
                // A dot segment would climb out of the collection.
                if s.is_empty() || *s == "." || *s == ".." {
                    return Err(ClientError::permanent(format!("invalid record id {s:?}")));
                }
                parts.push(s);
            }
        }
        Ok(url)
    }

    pub(crate) async fn request(&self, method: reqwest::Method, url: reqwest::Url) -> Result<reqwest::RequestBuilder, ClientError> {
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            let token = t
                .read()
                .await
                .map_err(|e| ClientError::transient(format!("reading token file {}: {e}", t.path().display())))?;
            req = req.bearer_auth(token);
        }
        Ok(req)
    }

    /// The refusal Data Storage keeps answering, if its last answer was one.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal.lock().ok().and_then(|r| r.clone())
    }

    /// Counts an answer: a refusal in its own metric (and remembered for readiness), a 202 as
    /// queued; any answer that is not a refusal clears the remembered one.
    pub(crate) fn observe(&self, result: Result<(), &ClientError>) {
        let kind = result.err().map(|e| e.kind);
        match kind {
            Some(FailureKind::Unauthenticated) => metrics::DS_UNAUTHENTICATED.inc(),
            Some(FailureKind::Forbidden) => metrics::DS_FORBIDDEN.inc(),
            Some(FailureKind::Rejected) => metrics::DS_REJECTED.inc(),
            Some(FailureKind::Queued) => metrics::EVENTS_QUEUED.inc(),
            _ => {}
        }
        let Ok(mut refusal) = self.refusal.lock() else { return };
        match result {
            Err(e) if e.kind.is_refusal() => {
                let since = match refusal.as_ref() {
                    Some(r) if r.kind == e.kind => r.since,
                    _ => Utc::now(),
                };
                *refusal = Some(Refusal {
                    kind: e.kind,
                    since,
                    message: e.message.clone(),
                });
            }
            // No answer at all says nothing about whether Data Storage still refuses.
            Err(e) if matches!(e.kind, FailureKind::Transient | FailureKind::NoAnswer) => {}
            _ => *refusal = None,
        }
    }

    /// POSTs `body` and classifies the answer, counting the attempt in the design document's metrics.
    pub(crate) async fn post(&self, url: reqwest::Url, body: &Value, accepted_is_stored: bool) -> Result<(Stored, Value), ClientError> {
        let started = Instant::now();
        let result = self.post_inner(url.clone(), body, accepted_is_stored).await;
        metrics::observe_attempt(result.is_ok(), started.elapsed().as_secs_f64());
        self.observe(result.as_ref().map(|_| ()));
        if let Err(e) = &result {
            if e.kind.is_refusal() {
                tracing::error!(path = url.path(), kind = e.kind.as_str(), error = %e, "Data Storage refused an audit write");
            }
        }
        result
    }

    async fn post_inner(&self, url: reqwest::Url, body: &Value, accepted_is_stored: bool) -> Result<(Stored, Value), ClientError> {
        let resp = self
            .request(reqwest::Method::POST, url)
            .await?
            .json(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let stored = classify(status, retry_after.as_deref(), &text, accepted_is_stored)?;
        Ok((stored, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// GETs `url` (with `query`): the body of a 200, None for a 404, else the failure.
    pub(crate) async fn get_json(&self, url: reqwest::Url, query: &[(&str, String)], what: &str) -> Result<Option<Value>, ClientError> {
        let result = async {
            let resp = self
                .request(reqwest::Method::GET, url)
                .await?
                .query(query)
                .send()
                .await
                .map_err(unreachable)?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let text = resp.text().await.unwrap_or_default();
            if status != StatusCode::OK {
                let snippet: String = text.chars().take(300).collect();
                let e = failure(status.as_u16(), &snippet);
                // A read Data Storage cannot answer is never the record's fault.
                let e = if e.permanent { ClientError::transient(e.message) } else { e };
                return Err(ClientError {
                    message: format!("{what}: {}", e.message),
                    ..e
                });
            }
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ClientError::transient(format!("{what}: {e}")))
        }
        .await;
        self.observe(result.as_ref().map(|_| ()));
        result
    }

    /// Whether Data Storage answers its /readyz.
    pub async fn ready(&self) -> bool {
        let Ok(url) = self.base.join("/readyz") else { return false };
        match self.http.get(url).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

/// What Data Storage made of an observed removal's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimConfirmation {
    /// Its one claim is now a break-glass event naming the claimed user.
    Confirmed,
    /// No claim names the object.
    NoClaim,
    /// Several claims name it; none is confirmed (their review ids).
    Ambiguous(Vec<String>),
    /// Events mode keeps no claims.
    NotKept,
}

/// A request that got no answer, with the whole cause chain (reqwest's own message does not
/// say *why*, e.g. that Data Storage's certificate is not signed by the trusted CA).
pub(crate) fn unreachable(e: reqwest::Error) -> ClientError {
    let mut message = format!("Data Storage unreachable: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    // A timeout after the connection was made: the request may have been received and acted on.
    let kind = if e.is_timeout() && !e.is_connect() {
        FailureKind::NoAnswer
    } else {
        FailureKind::Transient
    };
    ClientError::of(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_paths::BASE;
    use serde_json::json;

    #[test]
    fn classification_follows_the_spec() {
        for s in [200, 201] {
            assert_eq!(classify(s, None, "", false), Ok(Stored::Created));
        }
        assert_eq!(classify(202, None, "", true), Ok(Stored::Created));
        assert!(!classify(202, None, "", false).unwrap_err().permanent);
        for s in [400, 413, 422] {
            assert!(classify(s, None, "bad", true).unwrap_err().permanent, "{s}");
        }
        for s in [401, 403, 404, 429, 500, 502, 503] {
            assert!(!classify(s, None, "", true).unwrap_err().permanent, "{s}");
        }
        let kind = |s: u16, accepted_is_stored: bool| classify(s, None, "", accepted_is_stored).unwrap_err().kind;
        let kinds = [
            (202, false, FailureKind::Queued),
            (400, true, FailureKind::Rejected),
            (413, true, FailureKind::Rejected),
            (422, true, FailureKind::Rejected),
            (401, true, FailureKind::Unauthenticated),
            (403, true, FailureKind::Forbidden),
            (404, true, FailureKind::Transient),
            (500, true, FailureKind::Transient),
        ];
        for (s, accepted_is_stored, want) in kinds {
            assert_eq!(kind(s, accepted_is_stored), want, "{s}");
        }
        assert_eq!(
            classify(429, Some("7"), "", true).unwrap_err().retry_after,
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            classify(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), "", true)
                .unwrap_err()
                .retry_after,
            None
        );
    }

    /// A 409 is "stored" only when Data Storage says the stored content is identical.
    #[test]
    fn an_existing_id_is_stored_only_when_identical() {
        let existing = json!({ "id": "u", "status": "completed" });
        let cases: Vec<(Value, Result<Stored, bool>)> = vec![
            (
                json!({ "status": 409, "identical": true, "existing": existing }),
                Ok(Stored::AlreadyStored),
            ),
            (
                json!({ "status": 409, "identical": false, "existing": existing }),
                Ok(Stored::Conflict {
                    existing: existing.clone(),
                }),
            ),
            // Says nothing about the content: not stored, retried (transient).
            (json!({ "status": 409, "title": "exists" }), Err(false)),
            (json!({ "identical": "yes" }), Err(false)),
            (json!("not an object"), Err(false)),
        ];
        for (body, want) in cases {
            let got = classify(409, None, &body.to_string(), true).map_err(|e| e.permanent);
            assert_eq!(got, want, "{body}");
        }
        assert!(Stored::AlreadyStored.is_stored() && Stored::Created.is_stored());
        assert!(!Stored::Conflict { existing: Value::Null }.is_stored());
    }

    #[test]
    fn a_token_goes_over_plain_http_only_when_explicitly_allowed() {
        let http: reqwest::Url = "http://data-storage-service.kubernaut.svc:8080".parse().unwrap();
        let https: reqwest::Url = "https://ds.example:8085".parse().unwrap();
        let refused = token_transport(&http, true, false).unwrap_err();
        assert!(refused.contains("--datastorage-allow-plain-http-token"), "{refused}");
        assert!(refused.contains("plain http"), "{refused}");
        assert_eq!(token_transport(&http, true, true), Ok(()));
        assert_eq!(token_transport(&http, false, false), Ok(()), "no token, nothing to leak");
        assert_eq!(token_transport(&https, true, false), Ok(()));
        let settings = |allow| ClientSettings {
            url: http.to_string(),
            ca_file: None,
            token_file: Some("/nonexistent/token".into()),
            allow_plain_http_token: allow,
            timeout: Duration::from_secs(1),
        };
        assert!(DataStorageClient::new(&settings(false)).is_err());
        assert!(DataStorageClient::new(&settings(true)).is_ok());
    }

    #[test]
    fn record_urls_encode_the_id_and_refuse_dot_segments() {
        let client = DataStorageClient::new(&ClientSettings {
            url: "https://ds.example:8085/prefix/".into(),
            ca_file: None,
            token_file: None,
            allow_plain_http_token: false,
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        assert_eq!(
            client.url(BASE, &["u-1", "amendments"]).unwrap().as_str(),
            "https://ds.example:8085/prefix/api/v1/audit/signal-processing/u-1/amendments"
        );
        assert_eq!(
            client.url(BASE, &["a/b?c#d"]).unwrap().as_str(),
            "https://ds.example:8085/prefix/api/v1/audit/signal-processing/a%2Fb%3Fc%23d"
        );
        for bad in ["", ".", ".."] {
            assert!(client.url(BASE, &[bad]).unwrap_err().permanent, "{bad:?}");
        }
    }
}
