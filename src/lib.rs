//! Vellum: a policy-enforcing, append-only, gm-data-compatible object store.
//!
//! Layers depend only downwards: `http` → `write`/`read`/`access` → `policy`,
//! `identity`, `store`, `crypto` → `model`. Nothing below `http` knows about HTTP.
//! See ARCHITECTURE.md.

#![forbid(unsafe_code)]

pub mod access;
pub mod app;
pub mod blob;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod error;
pub mod explain;
pub mod files;
pub mod http;
pub mod identity;
pub mod import;
pub mod metrics;
pub mod migrate_cli;
pub mod model;
pub mod ops;
pub mod policy;
pub mod read;
pub mod share;
pub mod share_cli;
pub mod show;
pub mod store;
pub mod tasks;
pub mod tasks_cli;
pub mod write;
