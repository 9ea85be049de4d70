//! Where Data Storage's API answers: the paths and headers its router serves and its clients
//! (audit-guard's writer, the auditor's commands) call, named once for both ends.

/// Records; under it the batch, the statistics, `verify`, `report`, `export` and `exports/{id}`.
pub const BASE: &str = "/api/v1/audit/signal-processing";
pub const BATCH: &str = "/api/v1/audit/signal-processing/batch";
pub const BREAK_GLASS: &str = "/api/v1/audit/break-glass-events";
pub const BREAK_GLASS_CLAIMS: &str = "/api/v1/audit/break-glass-claims";
/// The controller's word that a claim's removal was seen on the object.
pub const BREAK_GLASS_CONFIRMATIONS: &str = "/api/v1/audit/break-glass-claims/confirmations";
/// The transparency log (C2SP tlog-tiles and the proofs).
pub const LOG: &str = "/api/v1/log";
/// One item's log index, under it as `<kind>/<id>` (the receipt on the CR).
pub const LOG_INDEX: &str = "/api/v1/log/index";
/// Where the export signing public key is published (no token needed).
pub const PUBLIC_KEY_PATH: &str = "/.well-known/audit-guard/export-signing-key.pem";
/// Header naming the export's id in the streamed answer.
pub const EXPORT_ID_HEADER: &str = "audit-guard-export-id";
