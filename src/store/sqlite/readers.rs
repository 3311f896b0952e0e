//! The pool of read-only connections: each read runs in one read transaction (one
//! consistent snapshot), and a connection whose transaction did not end is closed, not
//! pooled.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use super::stable_plans;
use crate::store::StoreError;

/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// A reader's consistent snapshot.
pub struct ReadSnapshot<'c> {
    conn: &'c Connection,
}

impl<'c> ReadSnapshot<'c> {
    pub(super) fn conn(&self) -> &'c Connection {
        self.conn
    }
}

pub(super) struct ReaderPool {
    path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    pub(super) fn new(path: PathBuf) -> Self {
        ReaderPool {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        c.pragma_update(None, "query_only", true)?;
        stable_plans(&c)?;
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(c);
        }
    }

    /// Runs `f` against one read transaction. Blocking.
    pub fn with_snapshot<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&ReadSnapshot<'_>) -> Result<R, E>,
        E: From<StoreError>,
    {
        let conn = self.take().map_err(E::from)?;
        conn.execute_batch("BEGIN")
            .map_err(|e| E::from(StoreError::from(e)))?;
        let out = f(&ReadSnapshot { conn: &conn });
        match conn.execute_batch("COMMIT") {
            Ok(()) if conn.is_autocommit() => {
                self.give_back(conn);
                out
            }
            // A connection whose read transaction did not end (it would pin its snapshot
            // and hold back checkpoints) is closed, not pooled.
            Ok(()) => out.and(Err(E::from(StoreError::NotCommitted(
                "the read transaction is still open after COMMIT".into(),
            )))),
            Err(e) => {
                tracing::error!(error = %e, "ending a read transaction failed");
                out.and(Err(E::from(StoreError::from(e))))
            }
        }
    }
}
