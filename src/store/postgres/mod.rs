//! The PostgreSQL backend (SPEC §10), for deployments of several nodes on one database.
//!
//! - `mod.rs`: opening (migrations of its own in `schema/postgres/`, applied by
//!   [`migrate`]), the [`Backend`] impl, the reader pool and the commit listener;
//! - `conn.rs`: a connection with its prepared statements, and the one place a
//!   `tokio_postgres::Error` becomes a [`StoreError`]; statements pipelined;
//! - `session.rs`: the writer's side of group commit (`store::writer`), the clock row, and
//!   the snapshot and transaction types;
//! - `meta.rs`: the façade's traits, each method a function of `reads.rs`, `writes.rs`,
//!   `shares.rs` or `tasks.rs` (the SQL).

mod conn;
mod copy;
mod meta;
mod reads;
mod session;
mod shares;
mod tasks;
mod writes;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use tokio_postgres::Client;

use super::writer::{submit, Queued};
use super::{Backend, EventCheck, StoreError};
use crate::config::PostgresConfig;
use conn::{get, Conn};
pub use copy::{copy_from_sqlite, CopyReport};
use session::{HasConn, PgWriter};
pub use session::{PgSnapshot, PgWriteCtx};

/// The channel every node's writer notifies at each commit that kept something.
/// DO NOT CHANGE: nodes of different versions listen on it together.
pub(super) const COMMITS_CHANNEL: &str = "vellum_commits";

/// Migrations, applied in order; `schema_migrations` records each one applied.
/// DO NOT CHANGE one once released: add a new numbered file instead.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "init",
    include_str!("../../../schema/postgres/0001_init.sql"),
)];

/// The advisory lock that serialises migrations when several nodes start at once
/// (the bytes of "vellum m", as a number; any constant would do, it must not change).
const MIGRATION_LOCK: i64 = 0x7665_6c6c_756d_206d;

fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("postgresql: {}", conn::explain(&e)))
}

/// Brings the database's schema up to date in one transaction (all or nothing), holding an
/// advisory lock so that nodes starting together migrate once. Returns how many
/// migrations ran. A database migrated by a newer Vellum is refused, as SQLite's is.
pub async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER     PRIMARY KEY,
             name       TEXT        NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(backend)?;
    let done: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(backend)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if done > known {
        return Err(StoreError::Backend(format!(
            "the database's schema is at version {done}, newer than this Vellum's {known}: \
             upgrade Vellum"
        )));
    }
    let mut ran = 0;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > done) {
        tx.batch_execute(sql).await.map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(backend)?;
        ran += 1;
    }
    tx.commit().await.map_err(backend)?;
    Ok(ran)
}

/// [`migrate`] from synchronous code: on a thread of its own with a runtime of its own, so
/// it may be called from async code at start-up as well as from a command.
pub fn migrate_blocking(cfg: &PostgresConfig) -> Result<(), StoreError> {
    let connector = Connector::new(cfg)?;
    let described = connector.describe();
    let config = tokio_postgres::Config::from_str(cfg.url())
        .map_err(|e| StoreError::Backend(format!("DATABASE_URL is not a PostgreSQL URL: {e}")))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<(), StoreError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let unreachable = |e: tokio_postgres::Error| {
                    StoreError::Unavailable(format!(
                        "cannot connect to {described}: {}",
                        conn::explain(&e)
                    ))
                };
                let (mut client, driver) = match &connector.tls {
                    Some(tls) => {
                        let (client, connection) =
                            config.connect(tls.clone()).await.map_err(unreachable)?;
                        (client, tokio::spawn(connection))
                    }
                    None => {
                        let (client, connection) = config
                            .connect(tokio_postgres::NoTls)
                            .await
                            .map_err(unreachable)?;
                        (client, tokio::spawn(connection))
                    }
                };
                let ran = migrate(&mut client).await;
                drop(client);
                let _ = driver.await;
                ran.map(|_| ())
            })
        })
        .join()
        .unwrap_or_else(|_| Err(StoreError::Backend("migrating panicked".into())))
    })
}

/// The TLS client for `sslmode=require`: the system's roots and the certificates of
/// `DATABASE_CA`, AWS-LC's primitives (as everywhere else in the process).
fn tls_connector(
    cfg: &PostgresConfig,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| StoreError::Backend(format!("DATABASE_CA {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(StoreError::Backend(format!(
                "DATABASE_CA {}: no certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| StoreError::Backend(format!("DATABASE_CA {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// How a connection is made: the parsed URL (never logged: it may hold a password), and
/// TLS when the URL asks for it.
#[derive(Clone)]
struct Connector {
    config: tokio_postgres::Config,
    /// Set for `sslmode=require`: the server's certificate is verified against the system's
    /// roots and `DATABASE_CA` (stricter than libpq's `require`, which checks nothing).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    fn new(cfg: &PostgresConfig) -> Result<Connector, StoreError> {
        let mut config = tokio_postgres::Config::from_str(cfg.url()).map_err(|e| {
            // The parser's message never repeats the URL, so no password is shown.
            StoreError::Backend(format!("DATABASE_URL is not a PostgreSQL URL: {e}"))
        })?;
        config.application_name("vellum");
        config.connect_timeout(Duration::from_secs(10));
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => Some(tls_connector(cfg)?),
            _ => None,
        };
        Ok(Connector { config, tls })
    }

    /// The server and database, for messages: host, port, database, user; no password.
    fn describe(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "postgresql {}@{host}:{port}/{}",
            self.config.get_user().unwrap_or("?"),
            self.config.get_dbname().unwrap_or("")
        )
    }

    /// Connects. Blocking: call it from a thread outside the async runtime's workers.
    fn connect(&self) -> Result<Conn, StoreError> {
        match &self.tls {
            Some(tls) => Conn::connect(&self.config, tls.clone()),
            None => Conn::connect(&self.config, tokio_postgres::NoTls),
        }
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to {}: {e}", self.describe())))
    }
}

/// Read connections: at most `max` open; idle ones are kept for the next read. Waiters are
/// served in arrival order (a ticket each), so a read never waits behind more than the
/// reads that asked before it, however many keep asking.
struct ReaderPool {
    connector: Connector,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Conn>,
    open: usize,
    /// The next ticket to hand out, and the one whose turn it is.
    next_ticket: u64,
    serving: u64,
}

impl ReaderPool {
    fn new(connector: Connector, max: usize) -> ReaderPool {
        ReaderPool {
            connector,
            max,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                next_ticket: 0,
                serving: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Result<Conn, StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        loop {
            if st.serving == ticket {
                while let Some(c) = st.idle.pop() {
                    if !c.is_closed() {
                        st.serving += 1;
                        drop(st);
                        self.freed.notify_all();
                        return Ok(c);
                    }
                    st.open -= 1;
                }
                if st.open < self.max {
                    st.open += 1;
                    st.serving += 1;
                    drop(st);
                    self.freed.notify_all();
                    return self.connector.connect().inspect_err(|_| {
                        self.state.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
                        self.freed.notify_all();
                    });
                }
            }
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Returns a connection, or forgets one that broke.
    fn give_back(&self, c: Option<Conn>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match c {
            Some(c) if !c.is_closed() => st.idle.push(c),
            _ => st.open -= 1,
        }
        drop(st);
        self.freed.notify_all();
    }

    /// Runs `f` against one REPEATABLE READ, READ ONLY transaction. Blocking.
    fn with_snapshot<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&PgSnapshot<'_>) -> Result<R, E>,
        E: From<StoreError>,
    {
        let mut conn = self.take().map_err(E::from)?;
        let (out, begun) = {
            let snapshot = PgSnapshot::new(&mut conn);
            (f(&snapshot), snapshot.begun.get())
        };
        if !begun {
            self.give_back(Some(conn));
            return out;
        }
        // A read that failed has aborted the transaction: COMMIT then rolls it back. Sent
        // without waiting for its answer: the next request on the connection reads past it.
        match conn.post("COMMIT") {
            Ok(()) => {
                self.give_back(Some(conn));
                out
            }
            Err(e) => {
                tracing::error!(error = %e, "ending a read transaction failed");
                self.give_back(None);
                out.and(Err(E::from(e)))
            }
        }
    }
}

/// The PostgreSQL backend: a writer thread (group commit, the clock row), a pool of read
/// connections, and a listener that turns every node's commits into this node's signal.
#[derive(Clone)]
pub struct PgStore {
    jobs: mpsc::Sender<Queued<PgWriter>>,
    readers: Arc<ReaderPool>,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    outbox: Arc<AtomicBool>,
    described: Arc<str>,
}

impl PgStore {
    /// Connects, migrates the schema, and starts the writer and the listener. Blocking
    /// (it runs on a thread of its own, so it may be called from async code at start-up).
    pub fn open(cfg: &PostgresConfig) -> Result<PgStore, StoreError> {
        let connector = Connector::new(cfg)?;
        let described: Arc<str> = connector.describe().into();
        migrate_blocking(cfg)?;
        let commits = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let outbox = Arc::new(AtomicBool::new(false));
        let for_writer = connector.clone();
        // This node's name in commit notifications: its listener skips its own.
        let node: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let writer = PgWriter::new(
            Box::new(move || for_writer.connect()),
            outbox.clone(),
            node.clone(),
        );
        let (tx, rx) = mpsc::channel::<Queued<PgWriter>>();
        let signal = commits.clone();
        std::thread::Builder::new()
            .name("vellum-writer".into())
            .spawn(move || super::writer::serve(writer, rx, signal))?;
        let listener = connector.clone();
        let weak = Arc::downgrade(&commits);
        std::thread::Builder::new()
            .name("vellum-listen".into())
            .spawn(move || listen(listener, weak, node))?;
        Ok(PgStore {
            jobs: tx,
            readers: Arc::new(ReaderPool::new(connector, cfg.pool_size)),
            commits,
            outbox,
            described,
        })
    }

    /// Makes every share-log entry from now on queue a webhook delivery.
    pub fn set_share_outbox(&self, on: bool) {
        self.outbox.store(on, Ordering::Relaxed);
    }

    /// Runs `f` on a pooled connection on the blocking pool.
    pub async fn read<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&PgSnapshot<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with_snapshot(f))
            .await
            .map_err(|_| E::from(StoreError::Backend("a read task failed".into())))?
    }
}

/// Listens for every node's commits and bumps this node's signal for each, so a feed here
/// wakes for a write made anywhere. Reconnects when the connection breaks (and bumps once
/// then: a commit may have gone unheard); ends when the store is gone.
fn listen(connector: Connector, commits: Weak<tokio::sync::watch::Sender<u64>>, node: Arc<str>) {
    let bump = |commits: &Weak<tokio::sync::watch::Sender<u64>>| match commits.upgrade() {
        Some(c) => {
            c.send_modify(|n| *n = n.wrapping_add(1));
            true
        }
        None => false,
    };
    let mut heard_before = false;
    loop {
        let mut conn = match connector.connect() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the commit listener cannot connect; retrying");
                std::thread::sleep(Duration::from_secs(1));
                if commits.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = conn.batch(&format!("LISTEN {COMMITS_CHANNEL}")) {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        if heard_before && !bump(&commits) {
            return;
        }
        heard_before = true;
        loop {
            let mut heard = false;
            let mut broken = false;
            match conn.notifications(Duration::from_millis(500)) {
                // This node's own commits woke its feeds already.
                Ok(payloads) => heard = payloads.iter().any(|p| **p != *node),
                Err(e) => {
                    tracing::warn!(error = %e, "the commit listener's connection failed");
                    broken = true;
                }
            }
            if heard && !bump(&commits) {
                return;
            }
            if commits.strong_count() == 0 {
                return;
            }
            if broken || conn.is_closed() {
                break;
            }
        }
    }
}

impl Backend for PgStore {
    type Snapshot<'s> = PgSnapshot<'s>;
    type Txn<'t> = PgWriteCtx<'t>;

    fn write<R, E, F>(&self, f: F) -> impl std::future::Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut PgWriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        submit(&self.jobs, f, false, false)
    }

    fn write_background<R, E, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut PgWriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        submit(&self.jobs, f, false, true)
    }

    fn dry_run<R, E, F>(&self, f: F) -> impl std::future::Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut PgWriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        submit(&self.jobs, f, true, false)
    }

    fn read_blocking<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&PgSnapshot<'_>) -> Result<R, E>,
        E: From<StoreError>,
    {
        self.readers.with_snapshot(f)
    }

    async fn check_events(&self) -> Result<EventCheck, StoreError> {
        self.read(|s| -> Result<_, StoreError> {
            // Begins the snapshot (its first read).
            s.with(|_| Ok(()))?;
            let mut conn = s.conn.borrow_mut();
            let mut check = EventCheck::default();
            // In pages by (oid, tstamp), so a large log is never held in memory at once.
            let mut after = (-1i64, -1i64);
            loop {
                let rows = conn.query(
                    "SELECT oid, tstamp, body FROM events WHERE (oid, tstamp) > ($1, $2)
                     ORDER BY oid, tstamp LIMIT 1000",
                    &[&after.0, &after.1],
                )?;
                let Some(last) = rows.last() else { break };
                after = (get(last, 0)?, get(last, 1)?);
                for r in &rows {
                    let (oid, t, body): (i64, i64, String) = (get(r, 0)?, get(r, 1)?, get(r, 2)?);
                    check.event(reads::decode(oid, t, &body), oid, t);
                }
            }
            let rows = conn.query(
                "SELECT eb.oid, eb.tstamp, eb.rname FROM event_blobs eb
                 LEFT JOIN blobs b ON b.rname = eb.rname WHERE b.rname IS NULL",
                &[],
            )?;
            for r in &rows {
                let (oid, t, rname): (i64, i64, String) = (get(r, 0)?, get(r, 1)?, get(r, 2)?);
                check.unrecorded_blob(oid, t, rname);
            }
            Ok(check)
        })
        .await
    }

    fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    fn describe(&self) -> String {
        self.described.to_string()
    }
}
