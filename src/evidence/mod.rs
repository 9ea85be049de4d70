//! Evidence that a third party can check, used by Data Storage and the auditor's commands alike
//! and importing neither: the HMAC chain over every stored entry ([`chain`]), the stored rows
//! as the database holds them ([`rows`]), verification's checks of those rows and its report
//! ([`verify`]), the export signing key and the signed manifest ([`signing`], [`manifest`]);
//! the transparency log of every stored item (a Merkle tree, RFC 9162), its signed checkpoints
//! (C2SP signed notes), its tiles (C2SP tlog-tiles) and the entry encoding that ties a log leaf
//! to an exported item; and the period report (its model, builder and renderers), which Data
//! Storage serves and the auditor renders. Plain functions over plain data; the stores and the
//! auditor's commands do the I/O.

pub mod chain;
pub mod entry;
pub mod export_log;
pub mod manifest;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod report;
pub mod rows;
pub mod signing;
pub mod tiles;
pub mod verify;
pub mod witness;
