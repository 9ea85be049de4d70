//! What both renderers share: cell text and the list sections' tables as plain text (each
//! renderer escapes the cells its own way).

use super::model::*;

pub(super) fn label(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".into())
}

pub(super) fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

pub(super) fn fmt_le(b: &Bucket) -> String {
    match b.le_seconds {
        Some(s) => format!("≤ {s} s"),
        None => format!("> {} s", WAIT_BUCKETS.last().copied().unwrap_or(0.0)),
    }
}

/// A list section's table as plain-text cells, rendered (and escaped) by either format.
pub(super) struct Table {
    pub(super) head: &'static [&'static str],
    pub(super) rows: Vec<Vec<String>>,
}

pub(super) fn forced_removals_table(f: &ForcedRemovals) -> Table {
    Table {
        head: &["at", "user", "groups", "namespace", "name", "uid"],
        rows: f
            .events
            .iter()
            .map(|e| {
                vec![
                    e.at.to_rfc3339(),
                    e.user.clone(),
                    e.groups.join(", "),
                    e.namespace.clone(),
                    e.name.clone(),
                    e.uid.clone(),
                ]
            })
            .collect(),
    }
}

pub(super) fn claims_table(c: &BreakGlassClaims) -> Table {
    Table {
        head: &[
            "status",
            "at",
            "claimed user",
            "claimed groups",
            "namespace",
            "name",
            "uid",
            "review",
        ],
        rows: c
            .unconfirmed
            .iter()
            .map(|e| {
                vec![
                    e.status.clone(),
                    e.at.to_rfc3339(),
                    e.claimed_user.clone(),
                    e.claimed_groups.join(", "),
                    e.namespace.clone(),
                    e.name.clone(),
                    e.uid.clone(),
                    e.review.clone(),
                ]
            })
            .collect(),
    }
}

pub(super) fn amendments_table(a: &Amendments) -> Table {
    Table {
        head: &["record", "amendment", "at", "changed"],
        rows: a
            .items
            .iter()
            .map(|i| {
                vec![
                    i.record_id.clone(),
                    i.amendment_id.clone(),
                    i.amended_at.to_rfc3339(),
                    i.changed.join(", "),
                ]
            })
            .collect(),
    }
}

pub(super) fn anomalies_table(an: &Anomalies) -> Table {
    Table {
        head: &["record", "namespace", "name", "field", "value"],
        rows: an
            .items
            .iter()
            .map(|i| {
                vec![
                    i.id.clone(),
                    label(&i.namespace),
                    label(&i.name),
                    i.field.clone(),
                    i.value.to_string(),
                ]
            })
            .collect(),
    }
}
