//! Vellum: a policy-enforcing, append-only, gm-data-compatible object store.
//!
//! Layers depend only downwards: `http` → `write`/`read` → `policy`, `identity`, `store`
//! → `model`. Nothing below `http` knows about HTTP. See ARCHITECTURE.md.

pub mod error;
pub mod model;
pub mod store;
pub mod identity;
pub mod policy;
pub mod crypto;
