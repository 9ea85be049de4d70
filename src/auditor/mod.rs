//! The auditor's tools: evidence an auditor can check without trusting audit-guard's word.
//!
//! - [`cli`]: `verify` (the hash chain and every row of a period, through Data Storage's API or
//!   straight from the database), `export` (a signed NDJSON/CSV export), `verify-export`
//!   (offline: the file against its signed manifest and a public key), `report` (the period
//!   report), `witness` (the API server's own audit log against the records) and `keys`.
//! - [`report`]: the writer drops the period report adds, asked of Prometheus (the report itself
//!   is [`crate::evidence::report`]).
//! - [`witness`]: the completeness witness.
//! - [`exportfile`]: checking an export file against its manifest and signature.
//! - [`logwitness`]: `log-witness`, a C2SP tlog-witness that cosigns the log's checkpoints.
//! - [`logcheck`]: `verify-log`, the transparency log against a saved checkpoint and public key.
//!
//! What these commands check is in [`crate::evidence`], which Data Storage uses too: the chain
//! ([`crate::evidence::chain`]), the row checks and verification's report
//! ([`crate::evidence::verify`]), the export's signing and manifest ([`crate::evidence::signing`],
//! [`crate::evidence::manifest`]) and the log. Data Storage is used only for the store `verify
//! --database-url` opens and walks; its API's paths are [`crate::api_paths`].

pub mod cli;
pub mod exportfile;
pub mod logcheck;
pub mod logwitness;
pub mod report;
pub mod witness;
