//! One PostgreSQL connection (the synchronous `postgres` client) with its prepared
//! statements, and the one place a `postgres::Error` becomes a [`StoreError`].

use std::collections::HashMap;

use postgres::types::{FromSql, ToSql};
use postgres::{Client, Row, Statement};

use crate::store::StoreError;

/// Statements kept prepared per connection. The SQL is fixed text (lists are bound as
/// arrays, never spliced in), so this only guards against a bug growing it.
const MAX_STATEMENTS: usize = 256;

/// Arguments of a statement.
pub(super) type Args<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Every `postgres::Error` becomes a [`StoreError`] here, by SQLSTATE (never by message
/// text): whether the store failed or the job broke a rule of its own decides whether the
/// job's batch-mates are refused too.
pub(super) fn store_error(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection failed, or a value did not convert.
        return if e.is_closed() || is_io(&e) {
            StoreError::Unavailable(explain(&e))
        } else {
            StoreError::Row(explain(&e))
        };
    };
    let db = e.as_db_error();
    let message = explain(&e);
    if *code == SqlState::UNIQUE_VIOLATION
        && db.and_then(|d| d.constraint()) == Some("objects_live_name")
    {
        return StoreError::UniqueName;
    }
    if *code == SqlState::DISK_FULL {
        return StoreError::Full(message);
    }
    match &code.code()[..2] {
        // Integrity constraints (including the logs' triggers).
        "23" => StoreError::Constraint(message),
        // Data exceptions: a value that does not fit.
        "22" => StoreError::Row(message),
        // Connection exceptions; the server shutting down or not yet up.
        "08" | "57" => StoreError::Unavailable(message),
        _ => StoreError::Backend(format!("postgresql: {message} ({})", code.code())),
    }
}

/// An error's whole account: the server's own message for a database error (the client's
/// `Display` says only "db error"), else the error and its causes.
pub(super) fn explain(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn is_io(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Reads column `i` of a row.
pub(super) fn get<'r, T: FromSql<'r>>(row: &'r Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(|e| StoreError::Row(e.to_string()))
}

/// A connection and the statements prepared on it.
pub struct Conn {
    /// `None` only once dropped.
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closing a client blocks on its own runtime, which panics on a thread that drives
        // async tasks (a store dropped in async code): close it on a thread of its own.
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("vellum-pg-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

impl Conn {
    pub(super) fn new(client: Client) -> Conn {
        Conn {
            client: Some(client),
            statements: HashMap::new(),
        }
    }

    /// Whether the connection is gone (it is then dropped, not pooled).
    pub(super) fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }

    fn live(&mut self) -> Result<&mut Client, StoreError> {
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the connection is closed".into()))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.live()?.prepare(sql).map_err(store_error)?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(super) fn query(&mut self, sql: &str, args: Args<'_>) -> Result<Vec<Row>, StoreError> {
        let s = self.statement(sql)?;
        self.live()?.query(&s, args).map_err(store_error)
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        args: Args<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let s = self.statement(sql)?;
        self.live()?.query_opt(&s, args).map_err(store_error)
    }

    pub(super) fn query_one(&mut self, sql: &str, args: Args<'_>) -> Result<Row, StoreError> {
        let s = self.statement(sql)?;
        self.live()?.query_one(&s, args).map_err(store_error)
    }

    /// Runs a statement; returns how many rows it changed.
    pub(super) fn execute(&mut self, sql: &str, args: Args<'_>) -> Result<u64, StoreError> {
        let s = self.statement(sql)?;
        self.live()?.execute(&s, args).map_err(store_error)
    }

    /// Runs statements without arguments (transaction control, SET LOCAL).
    pub(super) fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.live()?.batch_execute(sql).map_err(store_error)
    }

    /// Runs statements in one round trip (the simple protocol: no arguments) and returns
    /// the first value of the first row any of them returned.
    pub(super) fn simple_value(&mut self, sql: &str) -> Result<String, StoreError> {
        let messages = self.live()?.simple_query(sql).map_err(store_error)?;
        messages
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .ok_or_else(|| StoreError::Row(format!("no row from {sql}")))
    }

    pub(super) fn client(&mut self) -> Result<&mut Client, StoreError> {
        self.live()
    }
}
