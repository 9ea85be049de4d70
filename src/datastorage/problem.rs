//! RFC 7807 `application/problem+json` errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::wire::Duplicate;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The JSON path of the offending field, e.g. `[3].status` (an RFC 7807 extension member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Further RFC 7807 extension members, e.g. a 409's `identical` and `existing`.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(key.to_string(), value);
        self
    }

    /// 409: the id is taken. `identical` says whether the stored original says the same
    /// (see `same_content`); `existing` is what is stored.
    pub fn conflict(detail: impl Into<String>, identical: bool, existing: serde_json::Value) -> Self {
        let members = match serde_json::to_value(Duplicate { identical, existing }) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        Self {
            extensions: members,
            ..Self::new(StatusCode::CONFLICT, detail)
        }
    }

    pub fn field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, detail)
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        // These are answered before the request body is read; closing the connection keeps a
        // client from reusing it while the unread body is still in flight.
        if matches!(status.as_u16(), 401 | 405 | 408 | 413 | 415) {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The JSON path serde_path_to_error reports, with the root spelled out.
pub fn json_path(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." {
        "$".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conflict_carries_extension_members() {
        let p = Problem::conflict("taken", true, json!({"id": "a"}));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["status"], 409);
        assert_eq!(v["identical"], true);
        assert_eq!(v["existing"], json!({"id": "a"}));
        assert!(v.get("field").is_none());
        let v = serde_json::to_value(Problem::field("limit", "bad")).unwrap();
        assert_eq!(
            v,
            json!({"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "bad", "field": "limit"})
        );
    }
}
