//! The command line (SPEC §1): `vellum [serve]`, `vellum token`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "vellum",
    version,
    about = "A policy-enforcing, append-only object store (gm-data compatible)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `vellum` alone is `vellum serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve(Box<ServeArgs>),
    /// Mint a JWT for a claims file with the server's signing key (development, tests).
    Token(TokenArgs),
    /// Delete stored blobs that no metadata names (older than --grace).
    Gc(GcArgs),
    /// Decrypt and re-hash every blob; check every event. Exit 1 on any problem.
    Fsck(OpsArgs),
    /// Re-wrap every data key under the active master key (first of MASTERKEYS).
    Rekey(OpsArgs),
    /// Bulk-import a local directory tree through the HTTP API (resumable; exit 0: all
    /// arrived, 1: some files failed, 2: usage, connection or authentication error).
    Import(crate::import::ImportArgs),
    /// Share objects and answer shares through the HTTP API (exit 0: done, 1: the server
    /// refused, 2: usage, connection or authentication error).
    Share(crate::share_cli::ShareArgs),
    /// The task queue (key rotations, expiry sweeps, webhook deliveries) through the HTTP
    /// API: list, show, retry (exit codes as `vellum share`).
    Tasks(crate::tasks_cli::TasksArgs),
    /// Copy an embedded store's metadata into an empty PostgreSQL database, resumably,
    /// verifying every table at the end (exit 0: copied and verified, 1: refused or failed).
    Migrate(crate::migrate_cli::MigrateArgs),
}

/// The storage configuration of `serve` (same flags and environment), for the operator's
/// commands, which run beside the server on the same data folder.
#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    #[command(flatten)]
    pub serve: Box<ServeArgs>,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Keep blobs younger than this: an upload whose transaction has not committed yet has
    /// no metadata row.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub grace: Duration,
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub serve: Box<ServeArgs>,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// A claims JSON file: {"label": ..., "values": {"email": [...], ...}}.
    #[arg(long)]
    pub claims: PathBuf,
    /// Lifetime, e.g. 1h, 30m, 7d.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub ttl: Duration,
    /// Private signing key: PEM text, base64 of PEM, or a path (default: the data
    /// folder's development key).
    #[arg(long, env = "JWT_PRIV", hide_env_values = true)]
    pub key: Option<String>,
    /// HMAC secret (HS256) instead of a key pair.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Where the development key lives.
    #[arg(long, env = "DATA_DIR", default_value = "./vellum-data")]
    pub data_dir: PathBuf,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(t)) => token(t),
        Some(Command::Serve(s)) => serve(*s),
        Some(Command::Gc(g)) => gc(g),
        Some(Command::Fsck(o)) => fsck(o),
        Some(Command::Rekey(o)) => rekey(o),
        Some(Command::Import(a)) => crate::import::main(a),
        Some(Command::Share(a)) => crate::share_cli::main(a),
        Some(Command::Tasks(a)) => crate::tasks_cli::main(a),
        Some(Command::Migrate(a)) => crate::migrate_cli::main(a),
        None => serve(cli.serve),
    }
}

/// Opens the metadata store and the blob store a `serve` configuration names, and runs `f`.
fn with_stores<F, Fut, T>(args: ServeArgs, f: F) -> anyhow::Result<T>
where
    F: FnOnce(crate::store::Store, crate::blob::BlobStore) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let config = Config::from_args(args)?;
    init_logging(config.log_format);
    if !crate::store::Store::exists(&config.data_dir, config.postgres.as_ref()) {
        anyhow::bail!("no store at {}", config.data_dir.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store =
            crate::store::Store::open(&config.data_dir, &config.sqlite, config.postgres.as_ref())?;
        let blobs = crate::app::open_blobs(&config)?;
        f(store, blobs).await
    })
}

fn gc(g: GcArgs) -> anyhow::Result<()> {
    let (grace, dry) = (g.grace, g.dry_run);
    let r = with_stores(*g.serve, |store, blobs| async move {
        crate::ops::gc(&store, &blobs, grace, dry).await
    })?;
    for rname in &r.removed {
        println!("{} {rname}", if dry { "would remove" } else { "removed" });
    }
    println!(
        "gc: {} blobs checked, {} orphaned {}, {} younger than {} kept, {} stale upload files removed",
        r.checked,
        r.removed.len(),
        if dry { "found" } else { "removed" },
        r.kept_young,
        humantime::format_duration(grace),
        r.staging_removed
    );
    Ok(())
}

fn fsck(o: OpsArgs) -> anyhow::Result<()> {
    let r = with_stores(*o.serve, |store, blobs| async move {
        crate::ops::fsck(&store, &blobs).await
    })?;
    for f in &r.findings {
        println!("DAMAGED {}: {}", f.rname, f.problem);
    }
    println!(
        "fsck: {} events, {} blobs ({} bytes) checked, {} problems",
        r.events,
        r.blobs,
        r.bytes,
        r.findings.len()
    );
    if !r.findings.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn rekey(o: OpsArgs) -> anyhow::Result<()> {
    let r = with_stores(*o.serve, |store, blobs| async move {
        let active = blobs.keys().active_id().to_string();
        crate::ops::rekey(&store, &blobs).await.map(|r| (r, active))
    })?;
    let (r, active) = r;
    for f in &r.failed {
        println!("FAILED {}: {}", f.rname, f.problem);
    }
    println!(
        "rekey: {} data keys re-wrapped under {active:?}, {} already were, {} failed",
        r.rewrapped,
        r.already,
        r.failed.len()
    );
    if !r.failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // A configuration the server cannot run with is a usage error: exit 2, as clap's own.
    let config = Config::from_args(args).unwrap_or_else(|e| {
        eprintln!("vellum: {e}");
        std::process::exit(2)
    });
    init_logging(config.log_format);
    // Every connection may hold up to two blocking threads at once (its request's work, and
    // a wait at the policy gate); /healthz needs one too. With room for all of them, no
    // number of slow requests can leave a health check without a thread.
    let blocking = config
        .http
        .max_connections
        .saturating_add(crate::http::RESERVE_CONNECTIONS)
        .saturating_mul(2)
        .saturating_add(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking)
        .build()?;
    rt.block_on(async {
        let app = crate::app::Application::build(config).await?;
        app.run().await
    })
}

fn token(t: TokenArgs) -> anyhow::Result<()> {
    use crate::identity::TokenSigner;
    let text = std::fs::read_to_string(&t.claims)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", t.claims.display()))?;
    let claims: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", t.claims.display()))?;
    if !claims.is_object() {
        anyhow::bail!("{}: claims must be a JSON object", t.claims.display());
    }
    let signer = match (&t.key, &t.secret) {
        (Some(k), _) => TokenSigner::from_pem(k)?,
        (None, Some(s)) => TokenSigner::hmac(s.as_bytes(), "HS256")?,
        (None, None) => TokenSigner::dev(&t.data_dir)?,
    };
    println!("{}", signer.sign(&claims, t.ttl)?);
    Ok(())
}
