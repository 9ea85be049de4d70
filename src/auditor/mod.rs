//! The auditor's tools: evidence an auditor can check without trusting audit-guard's word.
//!
//! - [`cli`]: `verify` (the hash chain and every row of a period, through Data Storage's API or
//!   straight from the database), `export` (a signed NDJSON/CSV export), `verify-export`
//!   (offline: the file against its signed manifest and a public key), `report` (the period
//!   report), `witness` (the API server's own audit log against the records) and `keys`.
//! - [`report`]: the period report and its Markdown/HTML renderings.
//! - [`witness`]: the completeness witness.
//! - [`exportfile`]: checking an export file against its manifest and signature.
//! - [`logwitness`]: `log-witness`, a C2SP tlog-witness that cosigns the log's checkpoints.
//! - [`logcheck`]: `verify-log`, the transparency log against a saved checkpoint and public key.
//!
//! The chain itself lives in the evidence module ([`crate::evidence::chain`]), its verification
//! in [`crate::datastorage::verify`], and the export's signing in [`crate::datastorage::export`].

pub mod cli;
pub mod exportfile;
pub mod logcheck;
pub mod logwitness;
pub mod report;
pub mod witness;
