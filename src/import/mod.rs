//! `vellum import LOCAL_DIR REMOTE_PATH` (SPEC §8): bulk-imports a directory tree through
//! the public HTTP API, as any client would. Nothing here uses the server's internals
//! beyond the model's plain types (ids, paths, name rules).
//!
//! - `walk`: the local side (directories read in name order; symlinks never followed).
//! - `client`: GET /config, /self, /props, /list and POST /write.
//! - `plan`: compares each local directory with its remote folder (existing folders are
//!   listed once; a file whose size and sha256 match is already there) and packs what must
//!   be written into transactions bounded in events and bytes.
//! - `txn`: sends transactions, several at once; new folders and their files share a
//!   transaction through negative references; a refused event is reported and the rest
//!   sent again.
//! - `source`: file contents streamed from disk into the request, hashed on the way.
//! - `progress`: the bar, the periodic lines and the summary.
//!
//! Resuming is the same command again: whatever committed is found by listing and
//! skipped, and names are unique within a folder, so nothing is written twice.

mod client;
mod plan;
pub(crate) mod progress;
mod source;
mod txn;
mod walk;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::model::{ObjPath, Oid};
use client::{Api, ApiError, Auth};
use progress::{Progress, Report};

/// Exit codes (documented in `--help` and README).
pub const EXIT_OK: i32 = 0;
pub const EXIT_SOME_FAILED: i32 = 1;
pub const EXIT_ERROR: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

const AFTER_HELP: &str = "\
Existing remote folders are reused and files already present with the same sha256 are
skipped, so running the same command again after an interruption finishes the job
without duplicating anything. Symbolic links are not followed (reported as skipped).

Exit status:
  0    everything arrived (imported, or already present)
  1    some files or folders failed (listed in the summary with the reason)
  2    usage error, or the server could not be reached, refused the credentials, or the
       import stopped early (connection lost, --policy refused); run it again to finish
  130  interrupted (Ctrl-C); run it again to finish";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ImportArgs {
    /// The local directory whose contents are imported.
    pub local_dir: PathBuf,
    /// Where its contents go: an oid, or a path that starts at an oid
    /// (`1/world/jane@x.com/photos`); missing folders on it are created.
    pub remote_path: String,
    /// The server's base URL (including CLIENT_PREFIX if the API is mounted under one).
    #[arg(long, env = "VELLUM_URL", default_value = "http://127.0.0.1:8181")]
    pub url: String,
    /// A JWT for the `userpolicy` header (`vellum token` makes one for development).
    #[arg(
        long,
        env = "VELLUM_TOKEN",
        hide_env_values = true,
        conflicts_with = "user_dn"
    )]
    pub token: Option<String>,
    /// A distinguished name for the `USER_DN` header (the server believes it only from
    /// its TRUSTED_PROXIES).
    #[arg(long)]
    pub user_dn: Option<String>,
    /// The policy of the objects the import creates: a file holding an objectpolicy JSON
    /// object, or policy text (Lisp `(if ...)` or Rego `package ...`) sent as
    /// `originalobjectpolicy`. Without it, new objects inherit their folder's policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The `security` field (a JSON object) of the objects the import creates.
    #[arg(long, value_name = "JSON")]
    pub security: Option<String>,
    /// Transactions sent at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Most events in one transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_events: u32,
    /// Most file bytes in one transaction, in MiB (a larger file goes alone).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_mib: u64,
    /// No progress display (the summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// What the arguments say, checked before anything is sent.
struct Setup {
    root: PathBuf,
    remote: ObjPath,
    auth: Auth,
    create_fields: Map<String, Value>,
}

fn setup(a: &ImportArgs) -> Result<Setup, String> {
    let root = a.local_dir.clone();
    match std::fs::metadata(&root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("LOCAL_DIR {} does not exist", root.display()))
        }
        Err(e) => return Err(format!("LOCAL_DIR {}: {e}", root.display())),
        Ok(m) if !m.is_dir() => {
            return Err(format!("LOCAL_DIR {} is not a directory", root.display()))
        }
        Ok(_) => {}
    }
    let remote = ObjPath::parse(&a.remote_path)
        .map_err(|e| format!("REMOTE_PATH {:?}: {e}", a.remote_path))?;
    let auth = match (&a.token, &a.user_dn) {
        (Some(t), _) if t.trim().is_empty() => return Err("--token is empty".into()),
        (Some(t), _) => Auth::Token(t.trim().to_string()),
        (None, Some(dn)) if dn.trim().is_empty() => return Err("--user-dn is empty".into()),
        (None, Some(dn)) => Auth::UserDn(dn.clone()),
        (None, None) => Auth::Anonymous,
    };
    let mut create_fields = Map::new();
    if let Some(p) = &a.policy {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("--policy {}: {e}", p.display()))?;
        let (k, v) = policy_field(&text).map_err(|e| format!("--policy {}: {e}", p.display()))?;
        create_fields.insert(k.into(), v);
    }
    if let Some(s) = &a.security {
        let v: Value =
            serde_json::from_str(s).map_err(|e| format!("--security is not JSON: {e}"))?;
        if !v.is_object() {
            return Err("--security must be a JSON object".into());
        }
        create_fields.insert("security".into(), v);
    }
    Ok(Setup {
        root,
        remote,
        auth,
        create_fields,
    })
}

/// A policy file's field: a JSON object is an `objectpolicy`; text (Lisp or Rego) is an
/// `originalobjectpolicy`, which the server compiles.
fn policy_field(text: &str) -> Result<(&'static str, Value), String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the file is empty".into());
    }
    if t.starts_with('{') {
        let v: Value = serde_json::from_str(t).map_err(|e| format!("not valid JSON: {e}"))?;
        return Ok(("objectpolicy", v));
    }
    Ok(("originalobjectpolicy", Value::String(t.to_string())))
}

/// Entry point from the command line: runs the import and exits with its status.
pub fn main(args: ImportArgs) -> anyhow::Result<()> {
    let code = run(args);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

/// Runs the import; returns the exit status.
pub fn run(args: ImportArgs) -> i32 {
    let setup = match setup(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vellum import: {e}");
            return EXIT_ERROR;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vellum import: cannot start: {e}");
            return EXIT_ERROR;
        }
    };
    rt.block_on(import(args, setup))
}

/// Checks the server and the credentials, and finds (or creates) the remote folder.
async fn prepare(
    args: &ImportArgs,
    s: &Setup,
    report: &Report,
) -> Result<(Api, client::ServerLimits, Oid), String> {
    let api = Api::new(&args.url, s.auth.clone())?;
    let limits = api.limits().await.map_err(|e| match e {
        ApiError::Transport(m) => format!("cannot reach the server at {}: {m}", api.base()),
        e => format!("GET {}/config: {e}", api.base()),
    })?;
    let who = api.whoami().await.map_err(|e| match e {
        ApiError::Status {
            status: 401,
            message,
            ..
        } => format!("authentication failed: the server refused the credentials ({message})"),
        e => format!("GET /self: {e}"),
    })?;
    let privileges = &who["values"]["privilege"];
    if privileges
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p == "readonly"))
    {
        return Err(format!(
            "{} has the readonly privilege: it cannot write",
            who["label"].as_str().unwrap_or("this identity")
        ));
    }
    if matches!(s.auth, Auth::Anonymous) {
        eprintln!("vellum import: no --token or --user-dn: writing as anonymous");
    }
    let oid = match api.props(s.remote.start, &s.remote.names).await {
        Ok(ev) => {
            if ev["isfile"].as_bool() == Some(true) {
                return Err(format!("REMOTE_PATH {} is a file, not a folder", s.remote));
            }
            ev["oid"]
                .as_str()
                .and_then(|o| o.parse::<Oid>().ok())
                .ok_or_else(|| format!("GET /props/{}: the answer has no oid", s.remote))?
        }
        Err(ApiError::Status { status: 404, .. }) if !s.remote.names.is_empty() => {
            create_root(&api, s, report).await?
        }
        Err(e) => return Err(format!("REMOTE_PATH {}: {e}", s.remote)),
    };
    Ok((api, limits, oid))
}

/// Creates REMOTE_PATH (and missing folders above it, which the server makes from the
/// path) in one transaction.
async fn create_root(api: &Api, s: &Setup, report: &Report) -> Result<Oid, String> {
    let names = &s.remote.names;
    let parent = ObjPath {
        start: s.remote.start,
        names: names[..names.len() - 1].to_vec(),
    };
    let mut ev = Map::new();
    ev.insert("action".into(), json!("C"));
    ev.insert("parentoid".into(), json!(parent.to_string()));
    ev.insert("name".into(), json!(names[names.len() - 1]));
    ev.insert("isfile".into(), json!(false));
    for (k, v) in &s.create_fields {
        ev.insert(k.clone(), v.clone());
    }
    let meta = serde_json::to_vec(&[Value::Object(ev)]).unwrap_or_default();
    let form = reqwest::multipart::Form::new().part(
        "metadata",
        reqwest::multipart::Part::bytes(meta).file_name("metadata.json"),
    );
    let events = api
        .write(form)
        .await
        .map_err(|e| format!("cannot create REMOTE_PATH {}: {e}", s.remote))?;
    report
        .stats
        .folders_created
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    events
        .first()
        .and_then(|e| e["oid"].as_str())
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| format!("creating {}: the answer has no oid", s.remote))
}

async fn import(args: ImportArgs, s: Setup) -> i32 {
    let started = Instant::now();
    let report = Arc::new(Report::default());
    let (api, limits, root_oid) = match prepare(&args, &s, &report).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("vellum import: {e}");
            return EXIT_ERROR;
        }
    };
    let root = s.root.clone();
    let (files, bytes) = tokio::task::spawn_blocking(move || walk::totals(&root))
        .await
        .unwrap_or((0, 0));
    report.stats.files_total.store(files, Ordering::Relaxed);
    report.stats.bytes_total.store(bytes, Ordering::Relaxed);

    let jobs = args.jobs as usize;
    let bounds = plan::Bounds {
        events: (args.batch_events as usize).min(limits.max_events_per_write.max(1)),
        bytes: args.batch_mib.saturating_mul(1 << 20),
        inline_bytes: plan::SERVER_INLINE_BUDGET,
        inline_max: limits.inline_max_bytes,
        metadata: limits.max_metadata_bytes / 2,
        file: limits.max_file_bytes,
    };
    let ctx = Arc::new(txn::Ctx::new(api, report.clone(), s.create_fields, jobs));
    let progress = Progress::start(report.clone(), started, args.quiet);
    let planner = plan::Planner::new(ctx.clone(), s.root.clone(), bounds, jobs);
    let interrupted = tokio::select! {
        _ = planner.run(root_oid) => false,
        _ = tokio::signal::ctrl_c() => {
            ctx.stop("interrupted (Ctrl-C)".into());
            true
        }
    };
    progress.finish().await;
    let stopped = ctx.stop_reason();
    if stopped.is_some() {
        let st = &report.stats;
        let left = st
            .files_total
            .load(Ordering::Relaxed)
            .saturating_sub(st.files_done());
        st.not_attempted.store(left, Ordering::Relaxed);
    }
    progress::summary(&report, started, stopped.as_deref());
    if interrupted {
        return EXIT_INTERRUPTED;
    }
    if let Some(why) = stopped {
        eprintln!("vellum import: {why}");
        return EXIT_ERROR;
    }
    if report.any_failure() {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_files_are_json_objects_or_text() {
        let (k, v) = policy_field(r#" {"requirements": {"f": "yield-all"}} "#).unwrap();
        assert_eq!(k, "objectpolicy");
        assert!(v.is_object());
        let (k, v) = policy_field("(if (contains email \"a@b.c\") (yield-all))\n").unwrap();
        assert_eq!(k, "originalobjectpolicy");
        assert_eq!(v, json!("(if (contains email \"a@b.c\") (yield-all))"));
        let (k, _) = policy_field("package policy\nR { true }").unwrap();
        assert_eq!(k, "originalobjectpolicy");
        assert!(policy_field("  ").is_err());
        assert!(policy_field("{not json").is_err());
    }
}
