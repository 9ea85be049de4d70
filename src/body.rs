//! The one bounded reader of HTTP request bodies, for the webhook and Data Storage alike: a
//! size cap (declared and actual), a deadline for the whole body, and optionally a budget of
//! bytes held across all requests at once.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Over the size cap (declared or sent).
    TooLarge,
    /// Not all there by the deadline.
    TooSlow,
    /// The shared byte budget had no room by the deadline.
    Busy,
    /// The connection broke mid-body.
    Broken(String),
}

/// How one body is read.
pub struct ReadBounds {
    pub max_bytes: usize,
    pub deadline: Instant,
    /// One permit per KiB held; None reads without a shared budget.
    pub budget: Option<Arc<Semaphore>>,
    /// Reads and discards up to [`DRAIN_MAX_BYTES`] of an oversized body before answering.
    pub drain: bool,
}

/// How much of an oversized body is read (and thrown away) before the 413 is sent. A client
/// still sending when the answer comes may lose it: HTTP/2 clients (curl, Go) treat the
/// reset that must follow an early answer as a failure, and HTTP/1.1 ones may see the
/// connection close under them. Reading the rest first lets the answer arrive cleanly;
/// beyond this bound (or the deadline) the client gets the early answer.
pub const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The most allocated for a body before its bytes arrive.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// The Content-Length a request declares, if it declares a readable one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads and discards the rest of a body, within the drain bound and the deadline.
async fn drain(body: &mut Body, mut read: u64, deadline: Instant) {
    while read <= DRAIN_MAX_BYTES {
        match tokio::time::timeout_at(deadline, http_body_util::BodyExt::frame(body)).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

/// Reads the whole body within `bounds`, holding budget permits for what it read (drop them
/// once the bytes are no longer held).
pub async fn read_bounded(
    mut body: Body,
    declared: Option<u64>,
    bounds: &ReadBounds,
) -> Result<(Bytes, Vec<OwnedSemaphorePermit>), BodyError> {
    let deadline = bounds.deadline;
    if let Some(n) = declared.filter(|n| *n > bounds.max_bytes as u64) {
        if bounds.drain && n <= DRAIN_MAX_BYTES {
            drain(&mut body, 0, deadline).await;
        }
        return Err(BodyError::TooLarge);
    }
    // The budget is paid as bytes arrive, not for a declared size: a client that declares a
    // large body and sends nothing holds nothing. The first allocation is bounded likewise.
    let mut permits = Vec::new();
    let mut held_kib = 0usize;
    let declared = declared.map_or(0, |n| n as usize);
    let mut buf = Vec::with_capacity(declared.clamp(8 * 1024, INITIAL_BODY_CAPACITY).min(bounds.max_bytes));
    loop {
        let frame = match tokio::time::timeout_at(deadline, http_body_util::BodyExt::frame(&mut body)).await {
            Err(_) => return Err(BodyError::TooSlow),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > bounds.max_bytes {
            let read = (buf.len() + data.len()) as u64;
            drop(buf);
            drop(permits);
            if bounds.drain {
                drain(&mut body, read, deadline).await;
            }
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&data);
        let Some(budget) = &bounds.budget else { continue };
        // Permits for every KiB now held, within the same deadline.
        let need = buf.len().div_ceil(1024).saturating_sub(held_kib);
        if need > 0 {
            let want = u32::try_from(need).unwrap_or(u32::MAX);
            match tokio::time::timeout_at(deadline, budget.clone().acquire_many_owned(want)).await {
                Ok(Ok(p)) => permits.push(p),
                _ => return Err(BodyError::Busy),
            }
            held_kib += need;
        }
    }
    Ok((Bytes::from(buf), permits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bounds(max_bytes: usize, budget: Option<Arc<Semaphore>>) -> ReadBounds {
        ReadBounds {
            max_bytes,
            deadline: Instant::now() + Duration::from_secs(30),
            budget,
            drain: false,
        }
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole_and_paid_for() {
        let budget = Arc::new(Semaphore::new(4));
        let (bytes, permits) = read_bounded(Body::from(vec![7u8; 2000]), Some(2000), &bounds(4096, Some(budget.clone())))
            .await
            .unwrap();
        assert_eq!(bytes.len(), 2000);
        assert_eq!(budget.available_permits(), 2);
        drop(permits);
        assert_eq!(budget.available_permits(), 4);
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_declared_or_sent() {
        let b = bounds(10, None);
        assert_eq!(read_bounded(Body::from("x"), Some(11), &b).await.unwrap_err(), BodyError::TooLarge);
        assert_eq!(
            read_bounded(Body::from("x".repeat(11)), None, &b).await.unwrap_err(),
            BodyError::TooLarge
        );
        assert_eq!(read_bounded(Body::from("x".repeat(10)), None, &b).await.unwrap().0.len(), 10);
    }

    #[tokio::test]
    async fn a_full_budget_answers_busy_by_the_deadline() {
        let budget = Arc::new(Semaphore::new(1));
        let b = ReadBounds {
            deadline: Instant::now() + Duration::from_millis(50),
            ..bounds(8192, Some(budget))
        };
        assert_eq!(
            read_bounded(Body::from(vec![0u8; 2048]), None, &b).await.unwrap_err(),
            BodyError::Busy
        );
    }
}
