//! The integration tests: one binary (one link step) for every suite. Each suite starts the
//! real server on an ephemeral port, or the real binary, and talks to it from outside.

pub(crate) mod common;

mod bad_input;
mod blob_store;
mod blobs_http;
mod browser;
mod cli;
mod concurrency;
mod connections;
mod fuzz;
mod hostile;
mod identity_http;
mod import;
mod migrate;
mod names;
mod nodes;
mod openapi;
pub(crate) mod operator_views;
mod policy_table;
mod postgres;
mod proxy_mtls;
mod reads;
mod reencrypt;
mod request_edges;
mod seed_walkthrough;
pub(crate) mod shares;
mod tasks;
mod writer_faults;
