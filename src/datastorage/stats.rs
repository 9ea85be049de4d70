//! The design document's analyses: classification by environment, priority distribution,
//! slow phases. Each covers a bounded range of `completed_at` (`since`..`until`, at most
//! `--stats-max-range` wide; 7 days back by default), so no request scans all time.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::http::{db_problem, timed, AppState};
use super::problem::Problem;
use super::query::{self, Params};
use super::store::{SlowPhaseQuery, StatsRange};
use crate::duration::GoDuration;

pub const DEFAULT_RANGE: chrono::Duration = chrono::Duration::days(7);

/// `since` (default: 7 days before `until`) to `until` (default: now), no wider than `max`.
pub fn stats_range(p: &Params, now: DateTime<Utc>, max: Duration) -> Result<StatsRange, Problem> {
    let until = p.time("until")?.unwrap_or(now);
    let since = p.time("since")?.unwrap_or(until - DEFAULT_RANGE);
    if since >= until {
        return Err(Problem::field("since", "since: must be before until"));
    }
    let max_c = chrono::Duration::from_std(max).unwrap_or(chrono::Duration::MAX);
    if until - since > max_c {
        return Err(Problem::field(
            "since",
            format!(
                "since: the range since..until may span at most {} (--stats-max-range); ask for a later since or narrower pages",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(StatsRange { since, until })
}

/// `{"since", "until", "items"}`.
fn stats_body(r: &StatsRange, items: impl serde::Serialize) -> Response {
    Json(json!({ "since": r.since, "until": r.until, "items": items })).into_response()
}

pub async fn classification(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["since", "until"])?;
    let range = stats_range(&p, Utc::now(), state.limits.stats_max_range)?;
    let rows = timed("stats_classification", state.store.classification(range))
        .await
        .map_err(|e| db_problem("stats_classification", e))?;
    Ok(stats_body(&range, rows))
}

pub async fn priority(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["since", "until"])?;
    let range = stats_range(&p, Utc::now(), state.limits.stats_max_range)?;
    let rows = timed("stats_priority", state.store.priorities(range))
        .await
        .map_err(|e| db_problem("stats_priority", e))?;
    Ok(stats_body(&range, rows))
}

pub fn slow_phase_query(p: &Params, now: DateTime<Utc>, max: Duration) -> Result<SlowPhaseQuery, Problem> {
    let min = p.get("min_duration").unwrap_or("2s");
    let min = GoDuration::parse(min).map_err(|e| Problem::field("min_duration", format!("min_duration: {e}")))?;
    Ok(SlowPhaseQuery {
        phase: p.text("phase").unwrap_or_else(|| "enriching".into()),
        min_duration_nanos: min.nanos,
        range: stats_range(p, now, max)?,
        limit: p.limit()?,
    })
}

pub async fn slow_phases(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["phase", "min_duration", "since", "until", "limit"])?;
    let q = slow_phase_query(&p, Utc::now(), state.limits.stats_max_range)?;
    let phase = q.phase.clone();
    let range = q.range;
    let rows = timed("stats_slow_phases", state.store.slow_phases(q))
        .await
        .map_err(|e| db_problem("stats_slow_phases", e))?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id, "remediation_id": r.remediation_id, "signal_fingerprint": r.signal_fingerprint,
                "phase": phase, "duration": GoDuration::from_nanos(r.duration_nanos).to_go_string(),
                "duration_ns": r.duration_nanos, "completed_at": r.completed_at,
            })
        })
        .collect();
    Ok(stats_body(&range, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Params {
        query::params(
            &format!("/x?{q}").parse().unwrap(),
            &["since", "until", "min_duration", "phase", "limit"],
        )
        .unwrap()
    }

    const MONTH: Duration = Duration::from_secs(31 * 86_400);

    #[test]
    fn ranges_default_to_a_week_and_are_capped() {
        let now: DateTime<Utc> = "2025-06-30T00:00:00Z".parse().unwrap();
        let r = stats_range(&p(""), now, MONTH).unwrap();
        assert_eq!((r.since, r.until), (now - DEFAULT_RANGE, now));
        let r = stats_range(&p("until=2025-06-01T00:00:00Z"), now, MONTH).unwrap();
        assert_eq!(r.since, "2025-05-25T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert!(stats_range(&p("since=2025-06-01T00:00:00Z"), now, MONTH).is_ok());
        for bad in [
            "since=1970-01-01T00:00:00Z",
            "since=2025-05-01T00:00:00Z",
            "since=2025-07-01T00:00:00Z",
            "since=2025-06-01T00:00:00Z&until=2025-06-01T00:00:00Z",
        ] {
            let e = stats_range(&p(bad), now, MONTH).unwrap_err();
            assert_eq!((e.status, e.field.as_deref()), (400, Some("since")), "{bad}");
        }
    }

    #[test]
    fn slow_phase_queries_are_bounded_too() {
        let now: DateTime<Utc> = "2025-06-30T00:00:00Z".parse().unwrap();
        let q = slow_phase_query(&p("min_duration=1.5s&phase=classifying"), now, MONTH).unwrap();
        assert_eq!(
            (q.phase.as_str(), q.min_duration_nanos, q.limit),
            ("classifying", 1_500_000_000, 100)
        );
        assert_eq!(q.range.since, now - DEFAULT_RANGE);
        let e = slow_phase_query(&p("min_duration=2parsecs"), now, MONTH).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("min_duration"));
        let e = slow_phase_query(&p("since=1970-01-01T00:00:00Z"), now, MONTH).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("since"));
    }
}
