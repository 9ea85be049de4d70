//! The one way audit-guard builds a JSON Patch (RFC 6902) against an object's metadata: the
//! finalizer list, the uid and resourceVersion tests, the annotations it writes.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, TestOperation};
use serde_json::Value;

/// RFC 6901 escaping of one path segment.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer to one of our own paths.
fn pointer(path: &str) -> PointerBuf {
    // Every path we build starts with '/', so parsing cannot fail; fall back to root otherwise.
    PointerBuf::parse(path).unwrap_or_default()
}

/// A patch under construction, operation by operation.
#[derive(Debug, Default)]
pub struct PatchBuilder(Vec<PatchOperation>);

impl PatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The patch fails unless `path` holds `value`.
    pub fn test(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.0.push(PatchOperation::Test(TestOperation {
            path: pointer(path),
            value: value.into(),
        }));
        self
    }

    pub fn add(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.0.push(PatchOperation::Add(AddOperation {
            path: pointer(path),
            value: value.into(),
        }));
        self
    }

    pub fn remove(mut self, path: &str) -> Self {
        self.0.push(PatchOperation::Remove(RemoveOperation { path: pointer(path) }));
        self
    }

    /// Sets annotations on an object whose metadata has annotations or not (`has_annotations`):
    /// a missing map is created first, since adding under it would fail.
    pub fn annotate<K: AsRef<str>, V: Into<Value>>(mut self, has_annotations: bool, pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        if !has_annotations {
            self = self.add("/metadata/annotations", Value::Object(Default::default()));
        }
        for (key, value) in pairs {
            self = self.add(&format!("/metadata/annotations/{}", escape(key.as_ref())), value);
        }
        self
    }

    pub fn build(self) -> Patch {
        Patch(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotations_are_escaped_and_created_when_missing() {
        let patch = PatchBuilder::new()
            .test("/metadata/uid", "u")
            .annotate(false, [("a.io/b~c", "v")])
            .build();
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "test", "path": "/metadata/uid", "value": "u"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/a.io~1b~0c", "value": "v"},
            ])
        );
        let mut doc = json!({"metadata": {"uid": "u"}});
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["annotations"]["a.io/b~c"], "v");
        let mut other = json!({"metadata": {"uid": "w"}});
        assert!(json_patch::patch(&mut other, &patch).is_err());
    }

    #[test]
    fn removal_is_a_plain_remove() {
        let patch = PatchBuilder::new().remove("/metadata/finalizers/0").build();
        let mut doc = json!({"metadata": {"finalizers": ["x", "y"]}});
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["y"]));
    }
}
