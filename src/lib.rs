//! audit-guard: no SignalProcessing leaves the cluster before its audit record is stored.
//!
//! Data flows one way: CR ([`crd`]) → audit record ([`audit`]) → Data Storage client
//! ([`client`], via the buffered [`writer`] or synchronously on deletion, in a [`group_commit`])
//! → Data Storage server ([`datastorage`]) → store backend. The [`auditor`]'s tools check that
//! trail from outside: the chain, signed exports, the period report, the API server's own audit
//! log.

pub mod api_paths;
pub mod audit;
pub mod auditor;
pub mod body;
pub mod certs;
pub mod client;
pub mod config;
pub mod confirmed;
pub mod conflict;
pub mod controller;
pub mod crd;
pub mod datastorage;
pub mod duration;
pub mod evidence;
pub mod filewatch;
pub mod group_commit;
pub mod https;
pub mod kubernaut_api;
pub mod leader;
pub mod metrics;
pub mod own_api;
pub mod patch;
pub mod pre_delete;
pub mod retention;
pub mod retry;
pub mod serve;
pub mod shutdown;
pub mod sink;
pub mod telemetry;
pub mod webhook;
pub mod wire;
pub mod writer;
