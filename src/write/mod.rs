//! The write path: POST /write transactions (SPEC §5), independent of HTTP.
//!
//! `service` owns a transaction from its metadata to its commit (parts, the counting rule,
//! the rehearsal, blob puts and their clean-up); `input` turns the metadata part into typed
//! events; `plan` applies them inside the store's writer transaction, authorising each
//! against the pending state.

pub mod input;
pub mod plan;
pub mod service;

pub use input::{parse_metadata, prepare_policies, Content, WriteEvent};
pub use plan::{Applied, Namespace, Planner};
pub use service::{Committed, Transaction, WriteService};
