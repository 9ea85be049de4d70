//! The suites that need a real control plane, one module each, in one test binary so that they
//! share one kube-apiserver, etcd and kube-controller-manager (booting one is the slow part).
//!
//! Suites run concurrently on that control plane, so each keeps to its own namespaces, webhook
//! configurations scoped by a namespace label or name, and uniquely named cluster-wide objects.
//! A test that changes what every other test relies on (stops the API server, registers
//! webhooks for every namespace, counts requests cluster-wide, loads the machine) holds
//! [`support::cluster_exclusive`]; every other test holds [`support::cluster_shared`].
//! docs/testing.md says how to add a suite.

#[path = "../support/mod.rs"]
mod support;
#[path = "../support/tools.rs"]
mod tools;
#[path = "../support/webhook.rs"]
mod webhook_support;

mod backdate;
mod ca_rotation;
mod cloudnative_pg_overlay;
mod controller;
mod crd;
mod dashboard;
mod datastorage_load;
mod datastorage_token_flood;
mod datastorage_tokenreview;
mod events_api;
mod helm;
mod hostile_network;
mod manifests;
mod object_size;
mod receipt;
mod release;
mod webhook;
