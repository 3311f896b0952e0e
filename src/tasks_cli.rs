//! `vellum tasks`: the task queue from the command line (SPEC §9.6), an HTTP client of
//! `GET /tasks` and `POST /tasks/{id}/retry` with `vellum share`'s identity flags and exit
//! codes (0 done, 1 refused, 2 usage, connection or authentication problem).

use clap::{Args, Subcommand};

use crate::share_cli::{call, encode_segment, exit, ApiArgs};

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: Option<TasksCommand>,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// The tasks on your objects and shares, newest first (the default; root sees all).
    List {
        /// Every task on this object (needs U on it).
        #[arg(long)]
        oid: Option<String>,
        /// todo, in_progress, done or failed.
        #[arg(long)]
        state: Option<String>,
        /// rotate_share, rotate_blob, expiry_sweep or webhook.
        #[arg(long)]
        kind: Option<String>,
        /// Tasks older than this task id (the next page).
        #[arg(long)]
        before: Option<String>,
        /// At most this many (1 to 1,000; default 100).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One task, with its report and (for a share's rotation) its progress.
    Show { id: String },
    /// Run a failed task again from its first attempt.
    Retry { id: String },
}

fn list_path(
    oid: &Option<String>,
    state: &Option<String>,
    kind: &Option<String>,
    before: &Option<String>,
    limit: Option<usize>,
) -> String {
    let mut q: Vec<String> = Vec::new();
    for (k, v) in [
        ("oid", oid),
        ("state", state),
        ("kind", kind),
        ("before", before),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", encode_segment(v)));
        }
    }
    if let Some(n) = limit {
        q.push(format!("limit={n}"));
    }
    if q.is_empty() {
        "/tasks".into()
    } else {
        format!("/tasks?{}", q.join("&"))
    }
}

pub fn main(args: TasksArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let (method, path) = match &args.command {
        None => (Method::GET, "/tasks".to_string()),
        Some(TasksCommand::List {
            oid,
            state,
            kind,
            before,
            limit,
        }) => (Method::GET, list_path(oid, state, kind, before, *limit)),
        Some(TasksCommand::Show { id }) => (Method::GET, format!("/tasks/{}", encode_segment(id))),
        Some(TasksCommand::Retry { id }) => {
            (Method::POST, format!("/tasks/{}/retry", encode_segment(id)))
        }
    };
    exit(call("vellum tasks", &args.api, method, &path, None))
}
