//! Where Data Storage's API answers: the paths and headers its router serves and its clients
//! (audit-guard's writer, the auditor's commands) call, named once for both ends.

/// Records; under it the batch, the statistics, `verify`, `report`, `export` and `exports/{id}`.
pub const BASE: &str = "/api/v1/audit/signal-processing";
pub const BATCH: &str = "/api/v1/audit/signal-processing/batch";
pub const BREAK_GLASS: &str = "/api/v1/audit/break-glass-events";
pub const BREAK_GLASS_CLAIMS: &str = "/api/v1/audit/break-glass-claims";
/// The transparency log (C2SP tlog-tiles and the proofs).
pub const LOG: &str = "/api/v1/log";
/// Where the export signing public key is published (no token needed).
pub const PUBLIC_KEY_PATH: &str = "/.well-known/audit-guard/export-signing-key.pem";
/// Header naming the export's id in the streamed answer.
pub const EXPORT_ID_HEADER: &str = "audit-guard-export-id";
