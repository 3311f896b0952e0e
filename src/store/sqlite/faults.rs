//! A test hook, not part of the API: makes the writer's SQLite statements fail on purpose,
//! the way a full disk, an I/O error or an interrupt does, so that tests can check that
//! every write job is either acknowledged and kept, or refused and absent.
//!
//! The failures come from SQLite itself rather than from a mock, so SQLite rolls back
//! exactly what it would in production (the statement alone, or the whole transaction):
//!
//! * the Nth statement the writer runs after opening (counted by the trace hook, trigger
//!   programs included) is interrupted at its first progress check (`SQLITE_INTERRUPT`);
//!   when that statement is a batch's COMMIT, the commit hook turns the commit into a
//!   rollback instead (an interrupt after COMMIT's last step would report the failure of a
//!   commit that happened, which no real fault does);
//! * `PRAGMA max_page_count` makes the database full (`SQLITE_FULL`) at a given size.
//!
//! Only `SqliteStore::open_with` takes one; nothing reads it from the environment.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::Connection;

#[doc(hidden)]
#[derive(Debug, Default)]
pub struct FaultInjector {
    /// The 1-based position of the statement to fail; 0 fails none.
    fail_at: u64,
    /// `PRAGMA max_page_count` for the writer's connection.
    max_pages: Option<u64>,
    /// Statements started so far.
    started: AtomicU64,
    /// The statement at `fail_at` has started and is to fail at its next check.
    armed: AtomicBool,
    /// The failure was delivered (by the progress handler or the commit hook).
    fired: AtomicBool,
    /// The SQL of the statement at `fail_at`.
    target: Mutex<Option<String>>,
}

impl FaultInjector {
    /// Fails the `n`th statement (1-based) that the writer runs.
    pub fn fail_statement(n: u64) -> Arc<Self> {
        Arc::new(Self {
            fail_at: n,
            ..Self::default()
        })
    }

    /// Lets the database grow to `pages` pages and no further (`SQLITE_FULL` beyond).
    pub fn max_page_count(pages: u64) -> Arc<Self> {
        Arc::new(Self {
            max_pages: Some(pages),
            ..Self::default()
        })
    }

    /// Fails nothing; counts statements (to size a sweep over failure positions).
    pub fn counting() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// How many statements the writer has started.
    pub fn statements(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Whether the injected failure happened.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// The SQL of the statement chosen to fail, once it has started.
    pub fn target_sql(&self) -> Option<String> {
        self.target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs the trace and progress hooks and the page limit on the writer's
    /// connection. `committing` is true only while the writer runs a batch's COMMIT.
    pub(super) fn install(
        self: &Arc<Self>,
        conn: &mut Connection,
        committing: Arc<AtomicBool>,
    ) -> rusqlite::Result<()> {
        if let Some(pages) = self.max_pages {
            conn.pragma_update(None, "max_page_count", pages as i64)?;
        }
        let me = self.clone();
        conn.trace_v2(
            TraceEventCodes::SQLITE_TRACE_STMT,
            Some(move |e: TraceEvent<'_>| {
                if let TraceEvent::Stmt(_, sql) = e {
                    let n = me.started.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == me.fail_at {
                        *me.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(sql.into());
                        me.armed.store(true, Ordering::SeqCst);
                    }
                }
            }),
        )?;
        let me = self.clone();
        conn.progress_handler(
            1,
            Some(move || {
                // A COMMIT is failed by the commit hook (see the module docs).
                !committing.load(Ordering::SeqCst) && me.take()
            }),
        )
    }

    /// Called by the writer's commit hook: whether to turn this commit into a rollback.
    pub(super) fn fail_commit(&self) -> bool {
        self.take()
    }

    fn take(&self) -> bool {
        let hit = self.armed.swap(false, Ordering::SeqCst);
        if hit {
            self.fired.store(true, Ordering::SeqCst);
        }
        hit
    }
}
