//! The period report: what the audit trail says about a period, built in one pass over the
//! rows verification reads anyway (so the report carries the chain's verdict on exactly the
//! rows it counted), and rendered as JSON, Markdown or HTML with server-side SVG charts (no
//! scripts, fonts or anything fetched from elsewhere).
//!
//! Deletions that waited on Data Storage: a record with trigger `deletion` was first stored
//! while its CR was being deleted (had it been stored at completion, the deletion-time post
//! would have been a 409 and no such record would exist), and the finalizer came off only
//! after that store. So the wait is `stored_at − deleted_at` (the CR's deletionTimestamp,
//! second precision; `stored_at` is Data Storage's clock, chained with the record).

mod build;
mod html;
mod markdown;
mod model;
mod table;

pub use build::{changed_keys, ReportBuilder};
pub use html::{esc, stacked_bars, to_html, PALETTE};
pub use markdown::to_markdown;
pub use model::*;

#[cfg(test)]
mod tests;
