//! Plain domain types shared by every layer. Nothing here does I/O or knows about HTTP.

pub mod bytes;
pub mod canonical;
pub mod claims;
pub mod event;
pub mod ids;
pub mod path;
pub mod perms;
pub mod share;
pub mod task;

pub use bytes::human_bytes;
pub use claims::{Claims, Privilege};
pub use event::{Action, Event, EventView, PolicyView, Rname, UserPolicy, SCHEMA_VERSION};
pub use ids::{BadId, Oid, Tstamp, FOREVER};
pub use path::{ObjPath, PathError};
pub use perms::{Letter, Perms};
pub use share::{Share, ShareEntry, ShareId};
pub use task::{NewTask, Task, TaskCounts, TaskId, TaskKind, TaskQuery, TaskState, TaskUpdate};
