//! A PostgreSQL server for the tests (issue 14): the one `VELLUM_TEST_DATABASE_URL` names, or a private
//! cluster started from Debian's `postgresql` package with `initdb` in a temporary folder
//! (as the `postgres` user when the tests run as root, since initdb refuses root), on a free
//! loopback port, stopped when dropped. Each test gets a database of its own. Without
//! PostgreSQL a test is skipped locally and fails in CI (see `external.rs`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::external::{find_program, free_port, skip_or_fail};

/// A running server, and a fresh database on it.
pub struct Postgres {
    /// The fresh database's URL.
    pub url: String,
}

/// A private cluster: stopped (and its folder removed) on drop, or by its watcher.
pub struct Cluster {
    pg_ctl: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    /// The server's options (port, socket folder, settings) and its log file.
    options: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// initdb, pg_ctl from the newest PostgreSQL of Debian's layout, else from PATH.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(v, bin)| *v >= 15 && bin.join("initdb").is_file())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Some((bin.join("initdb"), bin.join("pg_ctl"))),
        None => Some((find_program("initdb")?, find_program("pg_ctl")?)),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `program args` (as the `postgres` user if `as_postgres`); Err with its output.
fn run(as_postgres: bool, program: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Cluster {
    fn start() -> Result<(Cluster, String), String> {
        Cluster::start_with(false)
    }

    /// A cluster that takes TLS connections only (a self-signed certificate for 127.0.0.1,
    /// whose file is returned too) beside the socket's.
    pub fn start_tls() -> Result<(Cluster, String, PathBuf), String> {
        let (cluster, url) = Cluster::start_with(true)?;
        let cert = cluster._dir.path().join("server.crt");
        Ok((cluster, url, cert))
    }

    fn start_with(tls: bool) -> Result<(Cluster, String), String> {
        let (initdb, pg_ctl) = binaries().ok_or("no PostgreSQL 15 or later (initdb, pg_ctl)")?;
        let as_postgres = is_root();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("cannot give the cluster's folder to the postgres user".into());
            }
        }
        // Connections over TCP need the password (so a wrong one is refused); the
        // maintenance ones over the socket do not.
        let pwfile = dir.path().join("password");
        std::fs::write(&pwfile, "postgres\n").map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let data_s = data
            .to_str()
            .ok_or("a temporary path that is not UTF-8")?
            .to_string();
        let data_s = data_s.as_str();
        run(
            as_postgres,
            &initdb,
            &[
                "-D",
                data_s,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let port = free_port();
        let log = dir.path().join("server.log");
        let mut options = format!(
            "-h 127.0.0.1 -p {port} -k {} -c fsync=off -c full_page_writes=off -c max_connections=500",
            dir.path().display()
        );
        if tls {
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            let openssl = find_program("openssl").ok_or("no openssl for the test certificate")?;
            let out = Command::new(openssl)
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            if as_postgres {
                Command::new("chown")
                    .arg("postgres:")
                    .arg(&key)
                    .arg(&cert)
                    .status()
                    .map_err(|e| e.to_string())?;
            }
            // TCP connections without TLS are refused, so a test cannot pass on plain TCP.
            let hba = data.join("pg_hba.conf");
            let rules = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
            std::fs::write(&hba, format!("hostnossl all all all reject\n{rules}"))
                .map_err(|e| e.to_string())?;
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        let cluster = Cluster {
            pg_ctl,
            data,
            as_postgres,
            options,
            log,
            _dir: dir,
        };
        cluster.start_again()?;
        Ok((
            cluster,
            format!("postgres://postgres:postgres@127.0.0.1:{port}"),
        ))
    }
}

impl Cluster {
    /// A private cluster of the test's own (for tests that stop and start it), and the
    /// server's URL.
    pub fn start_own() -> Result<(Cluster, String), String> {
        Cluster::start_with(false)
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let data = self
            .data
            .to_str()
            .ok_or("a temporary path that is not UTF-8")?;
        run(
            self.as_postgres,
            &self.pg_ctl,
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                data,
                "-l",
                self.log.to_str().unwrap_or_default(),
                "-o",
                &self.options,
            ],
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            format!("{e}\n{log}")
        })
    }

    /// Stops the server at once, as a crash would (connections are cut).
    pub fn stop_now(&self) -> Result<(), String> {
        let data = self
            .data
            .to_str()
            .ok_or("a temporary path that is not UTF-8")?;
        run(
            self.as_postgres,
            &self.pg_ctl,
            &["stop", "-m", "immediate", "-w", "-D", data],
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_now();
    }
}

/// Connects to `url`; the connection runs on a task of the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The server every test of this process shares: `VELLUM_TEST_DATABASE_URL`'s, or one private cluster
/// started once (a cluster per test would cost seconds each). A watcher process stops it
/// and removes its folder once this process is gone.
static SERVER: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();

fn server() -> Result<String, String> {
    SERVER
        .get_or_init(|| match std::env::var("VELLUM_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Ok(url.trim_end_matches('/').to_string()),
            _ => {
                let (cluster, url) = Cluster::start()?;
                reap_when_gone(&cluster);
                // Stopped by the watcher, never by a drop.
                std::mem::forget(cluster);
                Ok(url)
            }
        })
        .clone()
}

/// Starts a watcher that stops the cluster and removes its folder once this process exits.
fn reap_when_gone(c: &Cluster) {
    let stop = format!(
        "{}{} stop -m immediate -D {}",
        if c.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        },
        c.pg_ctl.display(),
        c.data.display()
    );
    let folder = c._dir.path().display().to_string();
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{folder}'",
        pid = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Whether this run's in-process servers keep their metadata in PostgreSQL: in the
/// `it_postgres` test binary (the same suite as `it`, see Cargo.toml), or with
/// `VELLUM_TEST_BACKEND=postgres`.
pub fn suite_on_postgres() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        binary.starts_with("it_postgres")
            || std::env::var("VELLUM_TEST_BACKEND").is_ok_and(|b| b == "postgres")
    })
}

impl Postgres {
    /// A fresh database, on `VELLUM_TEST_DATABASE_URL`'s server or this process's private cluster;
    /// `None` (after `skip_or_fail`) when there is no PostgreSQL to run.
    pub async fn start() -> Option<Postgres> {
        let server = match tokio::task::spawn_blocking(server).await.unwrap() {
            Ok(url) => url,
            Err(e) => {
                skip_or_fail(&format!("no PostgreSQL server for this test: {e}"));
                return None;
            }
        };
        // The server's URL names its maintenance database, or none.
        let base = match server.rsplit_once('/') {
            Some((head, _)) if head.contains("://") && head.len() > "postgres://".len() => {
                head.to_string()
            }
            _ => server.clone(),
        };
        let admin = connect(&format!("{base}/postgres")).await;
        let name = format!("vellum_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        Some(Postgres {
            url: format!("{base}/{name}"),
        })
    }
}

/// Everything the database at `url` holds in Vellum's tables, as bytes: each row as text,
/// and the raw bytes of inline blobs (shown as hex in a row's text). For checks that a
/// secret or a plaintext is never stored.
pub async fn database_bytes(url: &str) -> Vec<u8> {
    let client = connect(url).await;
    let mut out = Vec::new();
    for table in [
        "meta",
        "events",
        "objects",
        "purges",
        "blobs",
        "event_blobs",
        "share_log",
        "shares",
        "tasks",
        "task_links",
    ] {
        for row in client
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await
            .unwrap()
        {
            out.extend_from_slice(row.get::<_, String>(0).as_bytes());
            out.push(b'\n');
        }
    }
    for row in client
        .query("SELECT inline FROM blobs WHERE inline IS NOT NULL", &[])
        .await
        .unwrap()
    {
        out.extend_from_slice(&row.get::<_, Vec<u8>>(0));
    }
    out
}

/// For a test of SQLite itself (its WAL, its file): true, with a note, when this run's
/// servers keep their metadata in PostgreSQL instead, where it has nothing to check.
pub fn skip_unless_sqlite(what: &str) -> bool {
    if suite_on_postgres() {
        eprintln!("{what}: a check of SQLite's own; this run is on PostgreSQL");
        return true;
    }
    false
}

/// [`Postgres::start`] for synchronous code (the helpers that run the binary): the work
/// is done on a thread of its own, outside any async runtime.
pub fn start_blocking() -> Option<Postgres> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(Postgres::start())
        })
        .join()
        .unwrap()
    })
}

/// In the suite's PostgreSQL run: gives a `vellum` command the database of the data
/// folder it names (`--data-dir`, `DATA_DIR`, or `./vellum-data` of its working folder),
/// made the first time that folder is seen, so a server, its restarts and the operator
/// commands on its folder share one store. A command that sets `DATABASE_URL` itself is
/// left alone.
pub fn with_database(cmd: &mut Command) {
    // (`vellum()` removes every configuration variable: those show as set to nothing.)
    if !suite_on_postgres()
        || cmd
            .get_envs()
            .any(|(k, v)| k == "DATABASE_URL" && v.is_some())
    {
        return;
    }
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let from_flag = args.iter().enumerate().find_map(|(i, a)| {
        if a == "--data-dir" {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix("--data-dir=").map(str::to_owned)
        }
    });
    let from_env = cmd
        .get_envs()
        .find(|(k, _)| *k == "DATA_DIR")
        .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()));
    let cwd = cmd
        .get_current_dir()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let data = match from_flag.or(from_env) {
        Some(d) => cwd.join(d),
        None => cwd.join("vellum-data"),
    };
    let url = match super::database_of(&data) {
        Some(pg) => pg.url().to_string(),
        None => {
            let Some(pg) = start_blocking() else {
                return;
            };
            super::remember_database(&data, &pg.url);
            pg.url
        }
    };
    cmd.env("DATABASE_URL", url);
}
