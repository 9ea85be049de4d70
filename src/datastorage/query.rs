//! Query strings, strictly: every endpoint names the parameters it takes, and an unknown,
//! misspelt or repeated one is a 400 naming it (a silently ignored `sinse=` would answer a
//! different question than the one asked).

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::Uri;
use chrono::{DateTime, Utc};

use super::problem::Problem;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(HashMap<String, String>);

/// The query string of `uri`, checked against the `allowed` parameter names.
pub fn params(uri: &Uri, allowed: &[&str]) -> Result<Params, Problem> {
    let Query(pairs) =
        Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|e| Problem::bad_request(format!("invalid query string: {e}")))?;
    from_pairs(pairs, allowed)
}

pub fn from_pairs(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Params, Problem> {
    let mut out = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        if !allowed.contains(&key.as_str()) {
            let known = if allowed.is_empty() {
                "this endpoint takes no query parameters".to_string()
            } else {
                format!("this endpoint takes {}", allowed.join(", "))
            };
            return Err(Problem::field(key.clone(), format!("{key}: unknown query parameter; {known}")));
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(Problem::field(key.clone(), format!("{key}: given more than once")));
        }
    }
    Ok(Params(out))
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn text(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    pub fn time(&self, key: &str) -> Result<Option<DateTime<Utc>>, Problem> {
        self.get(key)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| Problem::field(key, format!("{key}: expected an RFC 3339 timestamp: {e}")))
            })
            .transpose()
    }

    pub fn limit(&self) -> Result<u32, Problem> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(Problem::field("limit", format!("limit: expected an integer from 1 to {MAX_LIMIT}"))),
            },
        }
    }

    /// The keyset position of `cursor`, if given.
    pub fn cursor(&self) -> Result<Option<(DateTime<Utc>, String)>, Problem> {
        self.get("cursor")
            .map(|c| decode_cursor(c).ok_or_else(|| Problem::field("cursor", "cursor: not a cursor this service issued")))
            .transpose()
    }
}

/// The opaque keyset cursor: hex of `<time micros>:<id>`.
pub fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    format!("{}:{id}", at.timestamp_micros())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    if cursor.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| cursor.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (micros, id) = text.split_once(':')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(q: &str) -> Uri {
        format!("/x?{q}").parse().unwrap()
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let allowed = ["since", "limit"];
        let p = params(&uri("since=2025-01-01T00:00:00Z&limit=5"), &allowed).unwrap();
        assert_eq!(p.limit().unwrap(), 5);
        assert!(p.time("since").unwrap().is_some());
        let e = params(&uri("sinse=2025-01-01T00:00:00Z"), &allowed).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (400, Some("sinse")));
        assert!(e.detail.contains("since, limit"), "{}", e.detail);
        let e = params(&uri("limit=1&limit=2"), &allowed).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limit"));
        let e = params(&uri("a=1"), &[]).unwrap_err();
        assert!(e.detail.contains("no query parameters"));
        assert_eq!(params(&"/x".parse().unwrap(), &[]).unwrap(), Params::default());
    }

    #[test]
    fn limits_and_times_are_checked() {
        for bad in ["limit=0", "limit=1001", "limit=abc"] {
            assert_eq!(
                params(&uri(bad), &["limit"]).unwrap().limit().unwrap_err().field.as_deref(),
                Some("limit")
            );
        }
        assert_eq!(params(&uri(""), &["limit"]).unwrap().limit().unwrap(), DEFAULT_LIMIT);
        let e = params(&uri("since=yesterday"), &["since"]).unwrap().time("since").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("since"));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let t: DateTime<Utc> = "2025-03-01T10:00:00.123456Z".parse().unwrap();
        assert_eq!(decode_cursor(&encode_cursor(t, "a:b")), Some((t, "a:b".to_string())));
        // Odd length, not hex, no separator, empty timestamp.
        for bad in ["abc", "zz", "3132", "3a78"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
        let e = params(&uri("cursor=nothex"), &["cursor"]).unwrap().cursor().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("cursor"));
    }
}
