//! The integration suite (`tests/it/`) again, with every in-process server keeping its
//! metadata in PostgreSQL (issue 14, SPEC §10): `common::postgres::suite_on_postgres` tells
//! this binary from `it` by its name. Cargo runs test binaries one after another, so the
//! two suites never compete for the machine.

#[path = "it/main.rs"]
mod it;

// The suite names its shared modules from the crate's root.
use it::{common, operator_views, shares};
