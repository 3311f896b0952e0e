//! Plain domain types shared by every layer. Nothing here does I/O or knows about HTTP.

pub mod claims;
pub mod ids;
pub mod perms;

pub use claims::{Claims, Privilege};
pub use ids::{BadId, Oid, Tstamp, FOREVER};
pub use perms::Perms;
