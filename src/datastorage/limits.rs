//! Bounds on the work one caller can cause: three lanes of concurrency (writes, reads, and the
//! auditors' long requests — each with its own permits and its own database pool, so readers
//! or an export of millions of rows never delay the deletion path's writes), a bounded wait
//! for a permit and a per-request timeout.
//!
//! The deletion path is every POST and every lookup of one item by id (the webhook's "is this
//! uid's record held" check, the 409 comparison reads): they share the write lane and its
//! pool. A lookup is one primary-key read, as cheap as the comparison reads a write already
//! makes there, and it is the deletion's own: it must not queue behind statistics, listings
//! and exports, which sit in the read and audit lanes, wait at most a second for a permit and
//! are answered 503 with Retry-After first when the service is busy.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::authz;
use super::metrics;
use super::problem::Problem;
use super::store::Lane;
use crate::api_paths::BASE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneSettings {
    pub max_concurrent_writes: usize,
    pub max_concurrent_reads: usize,
    pub max_concurrent_audits: usize,
    /// How long a write may wait for a permit (writes are the deletion path: they wait longer).
    pub write_wait: Duration,
    /// How long a read may wait for a permit before a 503 with Retry-After.
    pub read_wait: Duration,
    /// Whole-request bound once admitted.
    pub request_timeout: Duration,
    /// The same for auditors' requests, until their answer starts (an export then streams,
    /// holding its permit until the last byte).
    pub audit_request_timeout: Duration,
}

pub struct Lanes {
    writes: Semaphore,
    reads: Semaphore,
    audits: Arc<Semaphore>,
    settings: LaneSettings,
}

/// The auditors' endpoints (they read everything of a period: their own lane and pool).
pub const AUDIT_PATHS: &[&str] = &["verify", "export", "report", "exports/"];

/// Writes (every POST) and lookups of one item by id (`route`, the matched route, ends in
/// `/{id}`) take the write lane, auditors' requests theirs, and reads (statistics, listings)
/// the read lane.
pub fn lane_for(method: &Method, path: &str, route: &str) -> Lane {
    if method == Method::POST {
        return Lane::Write;
    }
    let audit = path
        .strip_prefix(BASE)
        .and_then(|p| p.strip_prefix('/'))
        .is_some_and(|p| AUDIT_PATHS.iter().any(|a| p == *a || (a.ends_with('/') && p.starts_with(a))));
    if audit {
        Lane::Audit
    } else if authz::verb_for(method, route) == authz::Verb::Get {
        Lane::Write
    } else {
        Lane::Read
    }
}

impl Lanes {
    pub fn new(settings: LaneSettings) -> Self {
        Self {
            writes: Semaphore::new(settings.max_concurrent_writes.max(1)),
            reads: Semaphore::new(settings.max_concurrent_reads.max(1)),
            audits: Arc::new(Semaphore::new(settings.max_concurrent_audits.max(1))),
            settings,
        }
    }
}

fn busy(lane: Lane) -> Response {
    let what = match lane {
        Lane::Write => "writes",
        Lane::Read => "reads",
        Lane::Audit => "verifications, exports and reports",
    };
    let mut resp = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("too many concurrent {what}; retry shortly"),
    )
    .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Middleware: a permit of the request's lane, then the request under the timeout.
pub async fn admit(State(lanes): State<Arc<Lanes>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str()).unwrap_or_default();
    let lane = lane_for(req.method(), req.uri().path(), route);
    if lane == Lane::Audit {
        return admit_audit(&lanes, req, next).await;
    }
    let (sem, wait, label) = match lane {
        Lane::Write => (&lanes.writes, lanes.settings.write_wait, "write"),
        _ => (&lanes.reads, lanes.settings.read_wait, "read"),
    };
    let permit = match tokio::time::timeout(wait, sem.acquire()).await {
        Ok(Ok(p)) => p,
        _ => {
            metrics::SHED.with_label_values(&[label, "busy"]).inc();
            return busy(lane);
        }
    };
    let resp = match tokio::time::timeout(lanes.settings.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            metrics::SHED.with_label_values(&[label, "timeout"]).inc();
            // A write may have committed just before the timeout: the retry gets 409 identical.
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {:?} and was abandoned; retry (a write that did commit answers 409 with identical: true)",
                    lanes.settings.request_timeout
                ),
            )
            .into_response()
        }
    };
    drop(permit);
    resp
}

/// An auditor's request: its permit is held until the body has been sent in full (an export
/// streams long after its head), so at most `max_concurrent_audits` run, streams included.
async fn admit_audit(lanes: &Lanes, req: Request, next: Next) -> Response {
    let permit = match tokio::time::timeout(lanes.settings.read_wait, lanes.audits.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            metrics::SHED.with_label_values(&["audit", "busy"]).inc();
            return busy(Lane::Audit);
        }
    };
    let timeout = lanes.settings.audit_request_timeout;
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp.map(|body| {
            let stream = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
                let _held = &permit;
                chunk
            });
            axum::body::Body::from_stream(stream)
        }),
        Err(_) => {
            metrics::SHED.with_label_values(&["audit", "timeout"]).inc();
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than {timeout:?} (--audit-request-timeout) and was abandoned; ask for a shorter period"),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_paths::BREAK_GLASS;

    /// The lane of a request to `path`, matched by the route of the same shape.
    fn lane(method: Method, path: &str, route: &str) -> Lane {
        lane_for(&method, path, route)
    }

    #[test]
    fn posts_write_auditors_have_their_lane_everything_else_reads() {
        assert_eq!(lane(Method::POST, BASE, BASE), Lane::Write);
        assert_eq!(lane(Method::GET, BASE, BASE), Lane::Read);
        let stats = format!("{BASE}/stats/priority");
        assert_eq!(lane(Method::HEAD, &stats, &stats), Lane::Read);
        for p in ["verify", "export", "report"] {
            let path = format!("{BASE}/{p}");
            assert_eq!(lane(Method::GET, &path, &path), Lane::Audit, "{p}");
        }
        let manifest = format!("{BASE}/exports/{{id}}");
        assert_eq!(lane(Method::GET, &format!("{BASE}/exports/abc"), &manifest), Lane::Audit);
        let by_id = format!("{BASE}/{{id}}");
        assert_eq!(lane(Method::GET, &format!("{BASE}/exportx"), &by_id), Lane::Write);
        assert_eq!(lane(Method::GET, &format!("{BASE}/verify-abc"), &by_id), Lane::Write);
    }

    /// The webhook's "is this uid's record held" lookup and the break-glass event lookup are
    /// the deletion path's: they never wait behind statistics and listings.
    #[test]
    fn lookups_by_id_take_the_write_lane_listings_and_statistics_the_read_lane() {
        let by_id = format!("{BASE}/{{id}}");
        assert_eq!(lane(Method::GET, &format!("{BASE}/uid-1"), &by_id), Lane::Write);
        let event = format!("{BREAK_GLASS}/{{id}}");
        assert_eq!(lane(Method::GET, &format!("{BREAK_GLASS}/e-1"), &event), Lane::Write);
        assert_eq!(lane(Method::GET, BREAK_GLASS, BREAK_GLASS), Lane::Read);
        for s in ["classification", "priority", "slow-phases"] {
            let path = format!("{BASE}/stats/{s}");
            assert_eq!(lane(Method::GET, &path, &path), Lane::Read, "{s}");
        }
    }
}
