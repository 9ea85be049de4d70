//! The auditors' read endpoints besides the export: `GET .../verify` (the chain and every row
//! of a period, see [`super::verify`]) and `GET .../report` (the period report, see
//! [`crate::evidence::report`]), both in the auditors' lane.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};

use super::export::period;
use super::http::{db_problem, AppState};
use super::problem::Problem;
use super::query::{self, Params};
use super::store::{DbResult, Lane, Page, Store, TimeRange};
use super::verify::{self, VerifyOptions};
use crate::evidence::chain::{self, ChainKeys, Head};
use crate::evidence::report::{self, PeriodReport, ReportBuilder};
use crate::evidence::verify::{Verdict, VerifyReport};

fn retention_months(p: &Params) -> Result<u32, Problem> {
    p.get("retention_months")
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| Problem::field("retention_months", "retention_months: expected a whole number of months"))
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

/// `anchors=shard:seq:hash,...` (heads published earlier).
pub fn anchors(p: &Params) -> Result<Vec<Head>, Problem> {
    let Some(list) = p.get("anchors") else { return Ok(vec![]) };
    let bad = || {
        Problem::field(
            "anchors",
            "anchors: expected shard:seq:hash[,shard:seq:hash...] with a 64-digit hex hash",
        )
    };
    list.split(',')
        .map(|a| {
            let mut parts = a.split(':');
            let (Some(shard), Some(seq), Some(hash), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return Err(bad());
            };
            Ok(Head {
                shard: shard.parse().map_err(|_| bad())?,
                seq: seq.parse().map_err(|_| bad())?,
                hash: chain::unhex32(hash).ok_or_else(bad)?,
            })
        })
        .collect()
}

pub async fn verify(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["since", "until", "retention_months", "anchors"])?;
    let opts = VerifyOptions {
        range: period(&p)?,
        retention_months: retention_months(&p)?,
        anchors: anchors(&p)?,
    };
    let report = verify::verify(state.store.as_ref(), &state.keys, &opts, Utc::now())
        .await
        .map_err(|e| db_problem("verify", e))?;
    log_verdict(&report);
    Ok(Json(report).into_response())
}

fn log_verdict(report: &VerifyReport) {
    match report.result {
        Verdict::Intact => tracing::info!(summary = %report.summary(), "chain verified"),
        Verdict::Broken => tracing::error!(summary = %report.summary(), "CHAIN VERIFICATION FAILED"),
    }
}

/// The report of a period: one verifying pass over its rows, then the amended originals.
pub async fn build(
    store: &dyn Store,
    keys: &ChainKeys,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    retention_months: u32,
    now: DateTime<Utc>,
) -> DbResult<PeriodReport> {
    let opts = VerifyOptions {
        range: TimeRange {
            since: Some(since),
            until: Some(until),
        },
        retention_months,
        anchors: vec![],
    };
    let mut builder = ReportBuilder::default();
    let chain = verify::verify_observed(store, keys, &opts, now, &mut builder).await?;
    // Claims are not chained (see `Store::insert_claim`): read apart, newest first.
    let mut after = None;
    loop {
        let page = store
            .list_claims(Page {
                since: Some(since),
                until: Some(until),
                limit: CLAIM_PAGE,
                after: after.clone(),
            })
            .await?;
        page.iter().for_each(|c| builder.claim(c));
        match page.last() {
            Some(c) if page.len() == CLAIM_PAGE as usize => after = Some((c.at, c.id.clone())),
            _ => break,
        }
    }
    let ids = builder.amended_ids();
    let originals = if ids.is_empty() {
        Default::default()
    } else {
        store.records(&ids, Lane::Audit).await?
    };
    Ok(builder.finish(since, until, chain, &originals, now))
}

const CLAIM_PAGE: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Json,
    Markdown,
    Html,
}

impl ReportFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "markdown" | "md" => Some(Self::Markdown),
            "html" => Some(Self::Html),
            _ => None,
        }
    }
}

/// A report in a format, as an HTTP answer.
pub fn render(r: &PeriodReport, format: ReportFormat) -> Response {
    match format {
        ReportFormat::Json => Json(r).into_response(),
        ReportFormat::Markdown => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/markdown; charset=utf-8"))],
            report::to_markdown(r),
        )
            .into_response(),
        ReportFormat::Html => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
            report::to_html(r),
        )
            .into_response(),
    }
}

/// `since` and `until` are both required (a report is of a period) and at most `max` apart.
pub fn report_period(p: &Params, max: std::time::Duration) -> Result<(DateTime<Utc>, DateTime<Utc>), Problem> {
    let range = period(p)?;
    let since = range.since.ok_or_else(|| Problem::field("since", "since: required (RFC 3339)"))?;
    let until = range.until.ok_or_else(|| Problem::field("until", "until: required (RFC 3339)"))?;
    let max_c = chrono::Duration::from_std(max).unwrap_or(chrono::Duration::MAX);
    if until - since > max_c {
        return Err(Problem::field(
            "since",
            format!(
                "since: a report may span at most {} (--report-max-range)",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok((since, until))
}

pub async fn report(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["since", "until", "format", "retention_months"])?;
    let (since, until) = report_period(&p, state.limits.report_max_range)?;
    let format = match p.get("format") {
        None => ReportFormat::Json,
        Some(f) => ReportFormat::parse(f).ok_or_else(|| Problem::field("format", "format: expected json, markdown or html"))?,
    };
    let r = build(state.store.as_ref(), &state.keys, since, until, retention_months(&p)?, Utc::now())
        .await
        .map_err(|e| db_problem("report", e))?;
    log_verdict(&r.chain);
    Ok(render(&r, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Params {
        query::params(
            &format!("/x?{q}").parse().unwrap(),
            &["since", "until", "format", "retention_months"],
        )
        .unwrap()
    }

    #[test]
    fn a_report_needs_a_bounded_period() {
        let max = std::time::Duration::from_secs(400 * 86_400);
        assert!(report_period(&p("since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00Z"), max).is_ok());
        for (q, field) in [
            ("until=2026-02-01T00:00:00Z", "since"),
            ("since=2026-01-01T00:00:00Z", "until"),
            ("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
            ("since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
        ] {
            assert_eq!(report_period(&p(q), max).unwrap_err().field.as_deref(), Some(field), "{q}");
        }
        assert_eq!(retention_months(&p("retention_months=15")).unwrap(), 15);
        assert_eq!(retention_months(&p("")).unwrap(), 0);
        assert!(retention_months(&p("retention_months=x")).is_err());
    }

    #[test]
    fn anchors_parse_or_name_the_parameter() {
        let q = |s: &str| query::params(&format!("/x?anchors={s}").parse().unwrap(), &["anchors"]).unwrap();
        let h = "ab".repeat(32);
        assert_eq!(anchors(&q(&format!("0:5:{h},2:1:{h}"))).unwrap().len(), 2);
        for bad in ["0:5", "x:5:aa", &format!("0:5:{h}:9"), "0:5:zz"] {
            assert_eq!(anchors(&q(bad)).unwrap_err().field.as_deref(), Some("anchors"), "{bad}");
        }
    }
}
