//! The auditor's side of the period report: its writer drops, asked of Prometheus. The report
//! itself (model, builder, renderers) is [`crate::evidence::report`], shared with Data Storage.

use chrono::{DateTime, Utc};

pub use crate::evidence::report::*;

/// The PromQL asking how many records the buffered writers dropped over a period ending at
/// the query's evaluation time.
pub fn drops_query(since: DateTime<Utc>, until: DateTime<Utc>) -> String {
    let secs = (until - since).num_seconds().max(1);
    format!("sum(increase(audit_events_dropped_total[{secs}s]))")
}

/// The value of a Prometheus instant-query answer (`/api/v1/query`): the first sample's value,
/// 0 when the vector is empty (the series did not exist: nothing was dropped).
pub fn prometheus_scalar(answer: &serde_json::Value) -> Result<f64, String> {
    if answer.get("status").and_then(|s| s.as_str()) != Some("success") {
        return Err(format!(
            "Prometheus answered {}",
            answer.get("error").and_then(|e| e.as_str()).unwrap_or("an error")
        ));
    }
    let result = answer
        .pointer("/data/result")
        .and_then(|r| r.as_array())
        .ok_or("Prometheus' answer has no data.result")?;
    match result.first() {
        None => Ok(0.0),
        Some(sample) => sample
            .pointer("/value/1")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| "Prometheus' sample has no numeric value".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prometheus_answers_are_read_or_refused_plainly() {
        let ok = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "7"]}]}});
        assert_eq!(prometheus_scalar(&ok), Ok(7.0));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(prometheus_scalar(&empty), Ok(0.0));
        let bad = json!({"status": "error", "error": "parse error"});
        assert!(prometheus_scalar(&bad).unwrap_err().contains("parse error"));
        assert_eq!(
            drops_query("2026-01-01T00:00:00Z".parse().unwrap(), "2026-01-02T00:00:00Z".parse().unwrap()),
            "sum(increase(audit_events_dropped_total[86400s]))"
        );
    }
}
