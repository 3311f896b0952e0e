//! The walk: compares each local directory with its remote folder and packs what must be
//! written into bounded transactions, several of which are sent at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{ApiError, Child};
use super::source::hash_file;
use super::txn::{self, Ctx, Item, Kind, Parent, Slot};
use super::walk::{self, Entry};
use crate::model::Oid;

/// Bounds of one transaction.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Events (`--batch-events`, at most the server's MAX_EVENTS_PER_WRITE).
    pub events: usize,
    /// File bytes (`--batch-mib`); a larger file goes alone.
    pub bytes: u64,
    /// Bytes of files small enough for the server to keep inline (at most
    /// `inline_max` each): the server holds those in memory until the commit, at most
    /// 16 MiB a transaction, and sends the rest to the blob store one by one, so a
    /// transaction of small files stays under that.
    pub inline_bytes: u64,
    pub inline_max: u64,
    /// Size of the metadata part (half the server's MAX_METADATA_BYTES).
    pub metadata: usize,
    /// Largest file the server accepts (MAX_FILE_BYTES).
    pub file: u64,
}

/// The server's per-transaction budget for inline content (see `Bounds::inline_bytes`).
pub const SERVER_INLINE_BUDGET: u64 = 16 << 20;

/// What one event adds to a transaction.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    events: usize,
    bytes: u64,
    inline: u64,
    metadata: usize,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            events: self.events + o.events,
            bytes: self.bytes + o.bytes,
            inline: self.inline + o.inline,
            metadata: self.metadata + o.metadata,
        }
    }
}

/// A local directory still to visit, and what it is remotely.
struct DirWork {
    path: PathBuf,
    remote: Remote,
}

enum Remote {
    /// The folder exists: list it and compare.
    Existing(Oid),
    /// The folder does not exist: create it, with everything in it.
    New { parent: Parent, name: String },
}

pub struct Planner {
    ctx: Arc<Ctx>,
    root: PathBuf,
    bounds: Bounds,
    /// Metadata bytes every create carries (policy, security).
    fields_len: usize,
    batch: Vec<Item>,
    used: Cost,
    /// Transactions built and not finished: bounds how far the walk runs ahead.
    queue: Arc<Semaphore>,
    tasks: JoinSet<()>,
}

impl Planner {
    pub fn new(ctx: Arc<Ctx>, root: PathBuf, bounds: Bounds, jobs: usize) -> Planner {
        let fields_len = serde_json::to_vec(&ctx.create_fields)
            .map(|v| v.len())
            .unwrap_or(0);
        Planner {
            ctx,
            root,
            bounds,
            fields_len,
            batch: Vec::new(),
            used: Cost::default(),
            queue: Arc::new(Semaphore::new(2 * jobs + 2)),
            tasks: JoinSet::new(),
        }
    }

    fn rel(&self, p: &Path) -> String {
        walk::rel(&self.root, p)
    }

    fn cost_of(&self, name: &str, size: Option<u64>) -> Cost {
        let (bytes, inline) = match size {
            Some(s) => (s, if s <= self.bounds.inline_max { s } else { 0 }),
            None => (0, 0),
        };
        Cost {
            events: 1,
            bytes,
            inline,
            // JSON keys and ids (~150 bytes), the name (escaped, at worst 6 bytes a
            // byte), the policy and security.
            metadata: 160 + 6 * name.len() + self.fields_len,
        }
    }

    fn fits(&self, used: Cost, c: Cost) -> bool {
        let t = used + c;
        t.events <= self.bounds.events
            && t.bytes <= self.bounds.bytes
            && t.inline <= self.bounds.inline_bytes
            && t.metadata <= self.bounds.metadata
    }

    /// Adds an event, first sending the current transaction if it would not fit.
    async fn push(&mut self, it: Item) {
        let c = self.cost_of(&it.name, it.file().map(|(_, s)| s));
        if !self.batch.is_empty() && !self.fits(self.used, c) {
            self.flush().await;
        }
        self.used = self.used + c;
        self.batch.push(it);
    }

    /// Sends the current transaction (in the background).
    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.batch);
        self.used = Cost::default();
        let Ok(permit) = self.queue.clone().acquire_owned().await else {
            return;
        };
        let ctx = self.ctx.clone();
        self.tasks.spawn(async move {
            txn::run(ctx, items).await;
            drop(permit);
        });
        while let Some(r) = self.tasks.try_join_next() {
            self.task_ended(r);
        }
    }

    fn task_ended(&self, r: Result<(), tokio::task::JoinError>) {
        if let Err(e) = r {
            if e.is_panic() {
                self.ctx
                    .stop("internal error: a transaction task panicked".into());
            }
        }
    }

    /// Walks the tree under `root` into the remote folder `root_oid`, and waits until
    /// every transaction has finished.
    pub async fn run(mut self, root_oid: Oid) {
        let mut stack = vec![DirWork {
            path: self.root.clone(),
            remote: Remote::Existing(root_oid),
        }];
        while let Some(w) = stack.pop() {
            if self.ctx.stopped() {
                break;
            }
            self.visit(w, &mut stack).await;
        }
        if !self.ctx.stopped() {
            self.flush().await;
        }
        self.batch.clear();
        while let Some(r) = self.tasks.join_next().await {
            self.task_ended(r);
        }
    }

    async fn visit(&mut self, w: DirWork, stack: &mut Vec<DirWork>) {
        let rel = self.rel(&w.path);
        let path = w.path.clone();
        let entries = tokio::task::spawn_blocking(move || walk::read_dir_sorted(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                self.fail_folder(&w.path, format!("cannot read the local directory: {e}"))
                    .await;
                return;
            }
        };
        match w.remote {
            Remote::New { parent, name } => {
                let slot = Slot::new(rel.clone());
                // A new folder goes with its files in one transaction when they fit in
                // one, so that they need no other transaction to commit first.
                let mut whole = self.cost_of(&name, None);
                for e in &entries {
                    if let Entry::File { name, size, .. } = e {
                        whole = whole + self.cost_of(name, Some(*size));
                    }
                }
                if !self.batch.is_empty()
                    && !self.fits(self.used, whole)
                    && self.fits(Cost::default(), whole)
                {
                    self.flush().await;
                }
                self.push(Item {
                    rel,
                    name,
                    parent,
                    kind: Kind::Folder(slot.clone()),
                })
                .await;
                self.children(entries, Parent::Slot(slot), None, stack)
                    .await;
            }
            Remote::Existing(oid) => {
                let listed = match self.ctx.api.list(oid).await {
                    Ok(l) => l,
                    Err(e @ ApiError::Transport(_)) => {
                        self.ctx.stop(format!(
                            "lost the connection to {}: {e}",
                            self.ctx.api.base()
                        ));
                        return;
                    }
                    Err(e) if e.is_auth() => {
                        self.ctx
                            .stop(format!("the server refused the credentials: {e}"));
                        return;
                    }
                    Err(e) if w.path == self.root => {
                        self.ctx
                            .stop(format!("cannot list REMOTE_PATH ({oid}): {e}"));
                        return;
                    }
                    Err(e) => {
                        self.fail_folder(
                            &w.path,
                            format!("cannot list the remote folder {oid}: {e}"),
                        )
                        .await;
                        return;
                    }
                };
                let remote: HashMap<String, Child> =
                    listed.into_iter().map(|c| (c.name.clone(), c)).collect();
                self.children(entries, Parent::Oid(oid), Some(&remote), stack)
                    .await;
            }
        }
    }

    /// Reports the local folder `dir` as failed, with the files under it (counted, not
    /// listed).
    async fn fail_folder(&self, dir: &Path, reason: impl Into<String>) {
        let d = dir.to_path_buf();
        let files = tokio::task::spawn_blocking(move || walk::totals(&d).0)
            .await
            .unwrap_or(0);
        self.ctx.report.fail_folder(&self.rel(dir), reason, files);
    }

    /// Decides each entry of a directory whose remote folder is `parent`: `remote` is its
    /// listing, or None for a folder being created (everything in it is new).
    async fn children(
        &mut self,
        entries: Vec<Entry>,
        parent: Parent,
        remote: Option<&HashMap<String, Child>>,
        stack: &mut Vec<DirWork>,
    ) {
        let report = self.ctx.report.clone();
        let mut subdirs = Vec::new();
        for e in entries {
            if self.ctx.stopped() {
                return;
            }
            match e {
                Entry::Skip { path, reason } => report.skip(&self.rel(&path), reason),
                Entry::Bad {
                    path,
                    is_dir: true,
                    reason,
                } => self.fail_folder(&path, reason).await,
                Entry::Bad { path, reason, .. } => report.fail(&self.rel(&path), reason),
                Entry::Dir { name, path } => match remote.and_then(|m| m.get(&name)) {
                    None => subdirs.push(DirWork {
                        path,
                        remote: Remote::New {
                            parent: parent.clone(),
                            name,
                        },
                    }),
                    Some(c) if !c.isfile => subdirs.push(DirWork {
                        path,
                        remote: Remote::Existing(c.oid),
                    }),
                    Some(_) => {
                        self.fail_folder(&path, "the remote folder has a file of this name")
                            .await
                    }
                },
                Entry::File { name, path, size } => {
                    let rel = self.rel(&path);
                    if size > self.bounds.file {
                        report.fail(
                            &rel,
                            format!(
                                "{size} bytes is over the server's limit of {} (MAX_FILE_BYTES)",
                                self.bounds.file
                            ),
                        );
                        continue;
                    }
                    let kind = match remote.and_then(|m| m.get(&name)) {
                        None => Kind::Create { path, size },
                        Some(c) if !c.isfile => {
                            report.fail(&rel, "the remote folder has a folder of this name");
                            continue;
                        }
                        Some(c) => match self.same_content(&path, size, c).await {
                            Err(e) => {
                                report.fail(&rel, format!("cannot read the file: {e}"));
                                continue;
                            }
                            Ok(true) => {
                                let s = &report.stats;
                                s.present.fetch_add(1, Ordering::Relaxed);
                                s.bytes_done.fetch_add(size, Ordering::Relaxed);
                                continue;
                            }
                            Ok(false) => Kind::Update {
                                path,
                                size,
                                oid: c.oid,
                                tstamp: c.tstamp,
                            },
                        },
                    };
                    self.push(Item {
                        rel,
                        name,
                        parent: parent.clone(),
                        kind,
                    })
                    .await;
                }
            }
        }
        // Depth first, in name order: the next directory visited is this one's first.
        stack.extend(subdirs.into_iter().rev());
    }

    /// Whether a local file has the content of a remote one: sizes first, then the
    /// sha256 of the local file (streamed) against the recorded `sha256plain`.
    async fn same_content(&self, path: &Path, size: u64, c: &Child) -> std::io::Result<bool> {
        let Some(want) = c.sha256plain.clone() else {
            return Ok(false);
        };
        if c.size != Some(size) {
            return Ok(false);
        }
        let p = path.to_path_buf();
        let (got, len) = tokio::task::spawn_blocking(move || hash_file(&p))
            .await
            .map_err(std::io::Error::other)??;
        Ok(len == size && got.eq_ignore_ascii_case(&want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_add_up() {
        let a = Cost {
            events: 1,
            bytes: 2,
            inline: 3,
            metadata: 4,
        };
        let b = a + a;
        assert_eq!((b.events, b.bytes, b.inline, b.metadata), (2, 4, 6, 8));
    }
}
