//! Bounds on the work one caller can cause: two lanes of concurrency (writes and reads, each
//! with its own permits and its own database pool, so readers saturating the service never
//! delay the deletion path's writes), a bounded wait for a permit and a per-request timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::metrics;
use super::problem::Problem;
use super::store::Lane;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneSettings {
    pub max_concurrent_writes: usize,
    pub max_concurrent_reads: usize,
    /// How long a write may wait for a permit (writes are the deletion path: they wait longer).
    pub write_wait: Duration,
    /// How long a read may wait for a permit before a 503 with Retry-After.
    pub read_wait: Duration,
    /// Whole-request bound once admitted.
    pub request_timeout: Duration,
}

pub struct Lanes {
    writes: Semaphore,
    reads: Semaphore,
    settings: LaneSettings,
}

/// Writes (every POST) and reads (everything else) go through different lanes.
pub fn lane_for(method: &Method) -> Lane {
    if method == Method::POST {
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
            settings,
        }
    }
}

fn busy(lane: Lane) -> Response {
    let what = match lane {
        Lane::Write => "writes",
        Lane::Read => "reads",
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
    let lane = lane_for(req.method());
    let (sem, wait, label) = match lane {
        Lane::Write => (&lanes.writes, lanes.settings.write_wait, "write"),
        Lane::Read => (&lanes.reads, lanes.settings.read_wait, "read"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_write_everything_else_reads() {
        assert_eq!(lane_for(&Method::POST), Lane::Write);
        assert_eq!(lane_for(&Method::GET), Lane::Read);
        assert_eq!(lane_for(&Method::HEAD), Lane::Read);
    }
}
