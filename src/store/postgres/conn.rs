//! One PostgreSQL connection, driven synchronously on a runtime of its own, with its
//! prepared statements; and the one place a `tokio_tokio_postgres::Error` becomes a
//! [`StoreError`].
//!
//! Why not the `postgres` crate's synchronous client, which is the same thing: it waits
//! for each statement's answer before sending the next. Under load a write was about ten
//! round trips (BEGIN, a read, COMMIT for each snapshot; SAVEPOINT and each statement on
//! the writer), and every round trip is two context switches on each side: in a profile of
//! 16 clients writing, the kernel's task switching was the largest single cost of both
//! processes. Here statements that need no answer before the next ([`Conn::defer`]: a
//! snapshot's BEGIN, a job's SAVEPOINT) go out in the same write as the statement after
//! them, and a read snapshot's COMMIT is sent without waiting for it ([`Conn::post`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{AsyncMessage, Client, Row, Socket, Statement};

use crate::store::StoreError;

/// Statements kept prepared per connection. The SQL is fixed text (lists are bound as
/// arrays, never spliced in), so this only guards against a bug growing it.
const MAX_STATEMENTS: usize = 256;

/// Arguments of a statement.
pub(super) type Args<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Every `tokio_postgres::Error` becomes a [`StoreError`] here, by SQLSTATE (never by message
/// text): whether the store failed or the job broke a rule of its own decides whether the
/// job's batch-mates are refused too.
pub(super) fn store_error(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
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
pub(super) fn explain(e: &tokio_postgres::Error) -> String {
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

fn is_io(e: &tokio_postgres::Error) -> bool {
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

/// A connection's driver (its socket and protocol state), whatever its TLS.
trait Drive: Send {
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>>;
}

impl<S, T> Drive for tokio_postgres::Connection<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>> {
        tokio_postgres::Connection::poll_message(self, cx)
    }
}

/// The connection's side that moves bytes: driven only while a caller waits on it.
struct Wire {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// `None` once the connection ended.
    driver: Option<Box<dyn Drive>>,
    /// Payloads of notifications heard (the commit listener's).
    heard: VecDeque<String>,
}

impl Wire {
    /// Polls `f` and the connection until `f` is ready. The connection is polled after
    /// `f` every time, so what `f` queued is written to the socket before this returns.
    fn drive<T>(
        &mut self,
        mut f: impl FnMut(&mut Context<'_>, &VecDeque<String>) -> Poll<T>,
    ) -> Result<T, StoreError> {
        let Wire {
            runtime,
            driver,
            heard,
        } = self;
        let Some(rt) = runtime.as_ref() else {
            return Err(StoreError::Unavailable("the connection is closed".into()));
        };
        rt.block_on(std::future::poll_fn(|cx| {
            let first = f(cx, heard);
            while let Some(d) = driver.as_mut() {
                match d.poll_message(cx) {
                    Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => {
                        heard.push_back(n.payload().to_owned());
                    }
                    // Notices (a NOTICE from a trigger, a warning) are not errors.
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => {
                        *driver = None;
                        if first.is_pending() {
                            return Poll::Ready(Err(store_error(e)));
                        }
                        break;
                    }
                    Poll::Ready(None) => {
                        *driver = None;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if let Poll::Ready(t) = first {
                return Poll::Ready(Ok(t));
            }
            match f(cx, heard) {
                Poll::Ready(t) => Poll::Ready(Ok(t)),
                // Its requests can no longer be answered.
                Poll::Pending if driver.is_none() => {
                    Poll::Ready(Err(StoreError::Unavailable("the connection closed".into())))
                }
                Poll::Pending => Poll::Pending,
            }
        }))
    }

    /// Drives the connection for up to `wait`, or until `done` says so of what was heard,
    /// or until the connection ends.
    fn wait(
        &mut self,
        wait: Duration,
        done: impl Fn(&VecDeque<String>) -> bool,
    ) -> Result<(), StoreError> {
        let Some(rt) = self.runtime.as_ref() else {
            return Err(StoreError::Unavailable("the connection is closed".into()));
        };
        let mut sleep = {
            let _in = rt.enter();
            Box::pin(tokio::time::sleep(wait))
        };
        self.drive(|cx, heard| {
            if done(heard) {
                Poll::Ready(())
            } else {
                sleep.as_mut().poll(cx)
            }
        })
    }

    /// Runs `fut` to its end.
    fn run<T>(&mut self, fut: impl Future<Output = T>) -> Result<T, StoreError> {
        let mut fut = pin!(fut);
        self.drive(|cx, _| fut.as_mut().poll(cx))
    }
}

/// Runs the request `fut` after `ahead` (statements deferred, see [`Conn::defer`]),
/// pipelined: one round trip. The deferred statements' error, if any, is the answer.
fn send<T>(
    wire: &mut Wire,
    client: &Client,
    ahead: String,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    let out = if ahead.is_empty() {
        wire.run(fut)?
    } else {
        wire.run(async {
            let (first, then) = futures_util::future::join(client.batch_execute(&ahead), fut).await;
            first.and(then)
        })?
    };
    out.map_err(store_error)
}

/// A connection and the statements prepared on it.
pub struct Conn {
    /// `None` only while dropping.
    client: Option<Client>,
    wire: Wire,
    statements: HashMap<String, Statement>,
    /// Statements of no arguments and no rows sent ahead of the next request, in the same
    /// write (see the module's docs); their errors are that request's.
    ahead: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropping the client tells the driver to end the session (a Terminate message, so
        // the server logs no broken connection); the driver is then run to its end, which
        // blocks on its runtime: on a thread that drives async tasks (a store dropped in
        // async code) that would panic, so it happens on a thread of its own.
        drop(self.client.take());
        let mut wire = Wire {
            runtime: self.wire.runtime.take(),
            driver: self.wire.driver.take(),
            heard: VecDeque::new(),
        };
        let mut close = move || {
            // Ends when the driver does, or after a second (a server gone silent).
            let _ = wire.wait(Duration::from_secs(1), |_| false);
            if let Some(rt) = wire.runtime.take() {
                rt.shutdown_background();
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("vellum-pg-close".into())
                .spawn(close);
        } else {
            close();
        }
    }
}

impl Conn {
    /// Connects (blocking); an error is explained (never with the password).
    pub(super) fn connect<T>(config: &tokio_postgres::Config, tls: T) -> Result<Conn, String>
    where
        T: MakeTlsConnect<Socket> + 'static,
        T::Stream: Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (client, connection) = runtime
            .block_on(config.connect(tls))
            .map_err(|e| explain(&e))?;
        Ok(Conn {
            client: Some(client),
            wire: Wire {
                runtime: Some(runtime),
                driver: Some(Box::new(connection)),
                heard: VecDeque::new(),
            },
            statements: HashMap::new(),
            ahead: String::new(),
        })
    }

    /// Whether the connection is gone (it is then dropped, not pooled).
    pub(super) fn is_closed(&self) -> bool {
        self.wire.driver.is_none() || self.client.as_ref().is_none_or(Client::is_closed)
    }

    /// Sends `sql` (statements of no arguments whose answer nothing waits on: BEGIN,
    /// SAVEPOINT) ahead of the next request, in the same write.
    pub(super) fn defer(&mut self, sql: &str) {
        if !self.ahead.is_empty() {
            self.ahead.push_str("; ");
        }
        self.ahead.push_str(sql);
    }

    /// Forgets statements deferred but never sent.
    pub(super) fn forget_deferred(&mut self) -> bool {
        let had = !self.ahead.is_empty();
        self.ahead.clear();
        had
    }

    /// The client, the wire and what was deferred, borrowed apart (a request's future
    /// borrows the client while the wire drives it).
    fn parts(&mut self) -> Result<(&Client, &mut Wire, String), StoreError> {
        let Some(client) = self.client.as_ref() else {
            return Err(StoreError::Unavailable("the connection is closed".into()));
        };
        Ok((client, &mut self.wire, std::mem::take(&mut self.ahead)))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = {
            let (c, wire, ahead) = self.parts()?;
            send(wire, c, ahead, c.prepare(sql))
        }?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(super) fn query(&mut self, sql: &str, args: Args<'_>) -> Result<Vec<Row>, StoreError> {
        let s = self.statement(sql)?;
        {
            let (c, wire, ahead) = self.parts()?;
            send(wire, c, ahead, c.query(&s, args))
        }
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        args: Args<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let s = self.statement(sql)?;
        {
            let (c, wire, ahead) = self.parts()?;
            send(wire, c, ahead, c.query_opt(&s, args))
        }
    }

    pub(super) fn query_one(&mut self, sql: &str, args: Args<'_>) -> Result<Row, StoreError> {
        let s = self.statement(sql)?;
        {
            let (c, wire, ahead) = self.parts()?;
            send(wire, c, ahead, c.query_one(&s, args))
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub(super) fn execute(&mut self, sql: &str, args: Args<'_>) -> Result<u64, StoreError> {
        let s = self.statement(sql)?;
        {
            let (c, wire, ahead) = self.parts()?;
            send(wire, c, ahead, c.execute(&s, args))
        }
    }

    /// Runs statements without arguments (transaction control, SET LOCAL).
    pub(super) fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        {
            let (c, wire, ahead) = self.parts()?;
            send(wire, c, ahead, c.batch_execute(sql))
        }
    }

    /// Sends statements without arguments and does not wait for their answer, which the
    /// next request reads past (a read snapshot's COMMIT, whose failure could only be the
    /// connection's, which the next request then meets).
    pub(super) fn post(&mut self, sql: &str) -> Result<(), StoreError> {
        let (client, wire, ahead) = self.parts()?;
        let sql = if ahead.is_empty() {
            sql.to_owned()
        } else {
            format!("{ahead}; {sql}")
        };
        let mut fut = pin!(client.batch_execute(&sql));
        // The first poll queues the request; `drive` then writes it out. The answer goes
        // to a receiver dropped here, which the driver pages past.
        wire.drive(|cx, _| {
            let _ = fut.as_mut().poll(cx);
            Poll::Ready(())
        })
    }

    /// Runs statements in one round trip (the simple protocol: no arguments) and returns
    /// the first value of the first row any of them returned.
    pub(super) fn simple_value(&mut self, sql: &str) -> Result<String, StoreError> {
        let messages = {
            let (c, wire, ahead) = self.parts()?;
            send(wire, c, ahead, c.simple_query(sql))
        }?;
        messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .ok_or_else(|| StoreError::Row(format!("no row from {sql}")))
    }

    /// Waits up to `wait` for notifications (of a channel this connection LISTENs on);
    /// returns their payloads, none if the time passed.
    pub(super) fn notifications(&mut self, wait: Duration) -> Result<Vec<String>, StoreError> {
        if self.wire.heard.is_empty() {
            self.wire.wait(wait, |heard| !heard.is_empty())?;
        }
        Ok(self.wire.heard.drain(..).collect())
    }
}
