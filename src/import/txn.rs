//! Transactions: the events of a batch, the folders they create, and sending them.
//!
//! A new folder is a `Slot`: pending until the transaction creating it commits, then its
//! oid (or the reason it failed). Inside its own transaction a child names it with a
//! negative reference; a later transaction waits for the slot and uses the oid.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{watch, Semaphore};

use super::client::{Api, ApiError};
use super::progress::Report;
use super::source::{file_body, Tally};
use crate::model::{Oid, Tstamp};

/// A folder the import creates.
pub struct Slot {
    /// Its local path relative to the import's root, for messages.
    pub rel: String,
    state: watch::Sender<SlotState>,
}

#[derive(Debug, Clone)]
pub enum SlotState {
    Pending,
    Ready(Oid),
    Failed(String),
}

impl Slot {
    pub fn new(rel: String) -> Arc<Slot> {
        Arc::new(Slot {
            rel,
            state: watch::Sender::new(SlotState::Pending),
        })
    }

    /// Settles the slot once; later calls are ignored.
    pub fn settle(&self, s: SlotState) {
        self.state.send_if_modified(|cur| {
            if matches!(cur, SlotState::Pending) {
                *cur = s;
                true
            } else {
                false
            }
        });
    }

    pub fn get(&self) -> SlotState {
        self.state.borrow().clone()
    }

    /// Waits until the slot is settled.
    pub async fn wait(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| !matches!(s, SlotState::Pending)).await;
    }
}

/// Where a new object goes.
#[derive(Clone)]
pub enum Parent {
    /// An existing folder.
    Oid(Oid),
    /// A folder this import creates.
    Slot(Arc<Slot>),
}

pub enum Kind {
    /// Create a folder.
    Folder(Arc<Slot>),
    /// Create a file.
    Create { path: std::path::PathBuf, size: u64 },
    /// Replace the content of an existing file (`tstamp`: the version we compared with,
    /// sent as a precondition).
    Update {
        path: std::path::PathBuf,
        size: u64,
        oid: Oid,
        tstamp: Option<Tstamp>,
    },
}

/// One event of a transaction.
pub struct Item {
    pub rel: String,
    pub name: String,
    pub parent: Parent,
    pub kind: Kind,
}

impl Item {
    pub fn file(&self) -> Option<(&std::path::Path, u64)> {
        match &self.kind {
            Kind::Folder(_) => None,
            Kind::Create { path, size } | Kind::Update { path, size, .. } => {
                Some((path.as_path(), *size))
            }
        }
    }
}

/// The import's shared state.
pub struct Ctx {
    pub api: Api,
    pub report: Arc<Report>,
    /// Fields every created object gets: `objectpolicy`/`originalobjectpolicy`,
    /// `security`.
    pub create_fields: Map<String, Value>,
    /// Transactions sending at once (`--jobs`).
    pub jobs: Semaphore,
    fatal: Mutex<Option<String>>,
    stopped: AtomicBool,
}

impl Ctx {
    pub fn new(
        api: Api,
        report: Arc<Report>,
        create_fields: Map<String, Value>,
        jobs: usize,
    ) -> Ctx {
        Ctx {
            api,
            report,
            create_fields,
            jobs: Semaphore::new(jobs),
            fatal: Mutex::new(None),
            stopped: AtomicBool::new(false),
        }
    }

    /// Stops the import: nothing new is sent. The first reason is kept.
    pub fn stop(&self, why: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(why);
        }
        self.stopped.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub fn stop_reason(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How an event names its parent in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    Oid(Oid),
    /// An earlier event of the same request (absolute index).
    Ref(usize),
    /// An update: no parent.
    None,
}

/// Codes that say the objects' policy or security is unacceptable: every create would be
/// refused alike, so the import stops (a usage error).
const POLICY_CODES: &[&str] = &[
    "bad_policy",
    "policy_too_large",
    "would_lock_out",
    "bad_field",
];

/// Codes that refuse a create because of its parent: every create in that parent fails
/// alike.
const PARENT_CODES: &[&str] = &[
    "permission_denied",
    "not_found",
    "deleted",
    "parent_is_file",
];

/// Rounds of "drop the refused event and send the rest" before the transaction's
/// remaining events are given up.
const MAX_ROUNDS: usize = 20;

/// Retries of a transaction the server could not handle (5xx) before the import stops.
const MAX_UNAVAILABLE: u32 = 3;

/// Marks the folders a transaction creates as failed if it ends without settling them.
struct SettleOnExit(Vec<Arc<Slot>>);

impl Drop for SettleOnExit {
    fn drop(&mut self) {
        for s in &self.0 {
            s.settle(SlotState::Failed(format!(
                "folder {} was not created (its transaction did not complete)",
                s.rel
            )));
        }
    }
}

fn folder_failed(s: &Slot, why: &str) -> String {
    format!("folder {} could not be created: {why}", s.rel)
}

/// Sends one transaction to completion: waits for the folders it builds on, sends, and on
/// a refusal that names one event, reports that event and sends the rest again.
pub async fn run(ctx: Arc<Ctx>, mut items: Vec<Item>) {
    let owned: Vec<Arc<Slot>> = items
        .iter()
        .filter_map(|i| match &i.kind {
            Kind::Folder(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let _settle = SettleOnExit(owned.clone());
    // Folders created by earlier transactions: wait until those have committed.
    for it in &items {
        if let Parent::Slot(s) = &it.parent {
            if !owned.iter().any(|o| Arc::ptr_eq(o, s)) {
                s.wait().await;
            }
        }
    }
    if ctx.stopped() {
        return;
    }
    let Ok(_permit) = ctx.jobs.acquire().await else {
        return;
    };
    let report = ctx.report.clone();
    let stats = &report.stats;
    let mut rounds = 0;
    let mut unavailable = 0;
    loop {
        if ctx.stopped() {
            return;
        }
        let specs = resolve(&ctx, &mut items);
        if items.is_empty() {
            return;
        }
        let tally = Arc::new(Tally::default());
        let (form, digests, file_items) = build(&ctx, &items, &specs, &tally);
        let result = ctx.api.write(form).await;
        stats
            .bytes_in_flight
            .fetch_sub(tally.sent.load(Ordering::Relaxed), Ordering::Relaxed);
        let read_failure = tally
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let e = match result {
            Ok(events) => {
                settle(&ctx, &items, &events, &digests);
                return;
            }
            Err(e) => e,
        };
        rounds += 1;
        if let Some(f) = read_failure {
            // A local file changed or vanished mid-request: the server stored nothing of
            // this transaction. Report that file and send the rest.
            let i = file_items[f.part];
            report.fail(&items[i].rel, f.message);
            items.remove(i);
            continue;
        }
        match &e {
            ApiError::Transport(m) => {
                ctx.stop(format!("lost the connection to {}: {m}", ctx.api.base()));
                return;
            }
            ApiError::Status { status: 401, .. } => {
                ctx.stop(format!("the server refused the credentials: {e}"));
                return;
            }
            ApiError::Status { status, .. } if *status >= 500 => {
                if unavailable < MAX_UNAVAILABLE {
                    tokio::time::sleep(Duration::from_millis(500 << unavailable)).await;
                    unavailable += 1;
                    continue;
                }
                ctx.stop(format!("the server failed: {e}"));
                return;
            }
            ApiError::Status {
                index: Some(i),
                code,
                ..
            } if *i < items.len() => {
                let i = *i;
                let creates = !matches!(items[i].kind, Kind::Update { .. });
                if creates && POLICY_CODES.contains(&code.as_str()) {
                    ctx.stop(format!(
                        "the server refused the objects' policy or security (--policy, \
                         --security): {e}"
                    ));
                    return;
                }
                let why = e.to_string();
                let same_parent = creates && PARENT_CODES.contains(&code.as_str());
                let doomed: Vec<usize> = (0..items.len())
                    .filter(|&j| {
                        j == i
                            || (same_parent
                                && specs[j] == specs[i]
                                && !matches!(items[j].kind, Kind::Update { .. }))
                    })
                    .collect();
                let mut removed: Vec<Item> =
                    doomed.iter().rev().map(|&j| items.remove(j)).collect();
                removed.reverse();
                for it in &removed {
                    fail_item(&report, it, &why);
                }
                if rounds >= MAX_ROUNDS {
                    let why = format!("gave up after {rounds} refusals; the last: {why}");
                    for it in items.drain(..) {
                        fail_item(&report, &it, &why);
                    }
                    return;
                }
            }
            ApiError::Status { status: 403, .. } => {
                ctx.stop(format!("the server refuses writes from this identity: {e}"));
                return;
            }
            ApiError::Status { .. } => {
                let why = e.to_string();
                for it in items.drain(..) {
                    fail_item(&report, &it, &why);
                }
                return;
            }
        }
    }
}

/// Reports an event that will not be written.
fn fail_item(report: &Report, it: &Item, why: &str) {
    match &it.kind {
        Kind::Folder(s) => {
            let msg = folder_failed(s, why);
            report.fail_folder(&it.rel, why, 0);
            s.settle(SlotState::Failed(msg));
        }
        _ => report.fail(&it.rel, why),
    }
}

/// Decides how each event names its parent; drops (and reports) events whose folder could
/// not be created. Parents come before children, so a failure cascades in one pass.
fn resolve(ctx: &Ctx, items: &mut Vec<Item>) -> Vec<Spec> {
    let mut keep = Vec::with_capacity(items.len());
    let mut specs = Vec::with_capacity(items.len());
    let mut index: HashMap<*const Slot, usize> = HashMap::new();
    for it in items.drain(..) {
        let spec = match (&it.kind, &it.parent) {
            (Kind::Update { .. }, _) => Ok(Spec::None),
            (_, Parent::Oid(o)) => Ok(Spec::Oid(*o)),
            (_, Parent::Slot(s)) => match index.get(&Arc::as_ptr(s)) {
                Some(&i) => Ok(Spec::Ref(i)),
                None => match s.get() {
                    SlotState::Ready(o) => Ok(Spec::Oid(o)),
                    SlotState::Failed(m) => Err(m),
                    SlotState::Pending => Err(format!("folder {} was not created", s.rel)),
                },
            },
        };
        match spec {
            Ok(spec) => {
                if let Kind::Folder(s) = &it.kind {
                    index.insert(Arc::as_ptr(s), keep.len());
                }
                keep.push(it);
                specs.push(spec);
            }
            Err(why) => match &it.kind {
                // A folder inside a folder that failed: the cause is the outer folder's.
                Kind::Folder(s) => s.settle(SlotState::Failed(why)),
                _ => ctx.report.fail(&it.rel, why),
            },
        }
    }
    *items = keep;
    specs
}

type Digest = Arc<OnceLock<String>>;

/// The request: the metadata part, then one streamed part per file event, in order.
/// Returns the form, each file part's digest slot, and which event each part belongs to.
fn build(
    ctx: &Ctx,
    items: &[Item],
    specs: &[Spec],
    tally: &Arc<Tally>,
) -> (reqwest::multipart::Form, Vec<Digest>, Vec<usize>) {
    let mut meta = Vec::with_capacity(items.len());
    for (j, (it, spec)) in items.iter().zip(specs).enumerate() {
        let mut m = Map::new();
        match &it.kind {
            Kind::Update { oid, tstamp, .. } => {
                m.insert("action".into(), json!("U"));
                m.insert("oid".into(), json!(oid.to_string()));
                m.insert("isfile".into(), json!(true));
                if let Some(t) = tstamp {
                    m.insert("tstamp".into(), json!(t.to_string()));
                }
            }
            Kind::Folder(_) | Kind::Create { .. } => {
                m.insert("action".into(), json!("C"));
                m.insert("name".into(), json!(it.name));
                m.insert(
                    "isfile".into(),
                    json!(matches!(it.kind, Kind::Create { .. })),
                );
                match spec {
                    Spec::Oid(o) => {
                        m.insert("parentoid".into(), json!(o.to_string()));
                    }
                    Spec::Ref(i) => {
                        let address = *i as i64 - j as i64;
                        m.insert(
                            "references".into(),
                            json!([{"address": address, "from": "oid", "to": "parentoid"}]),
                        );
                    }
                    Spec::None => {}
                }
                for (k, v) in &ctx.create_fields {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        meta.push(Value::Object(m));
    }
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    let mut form = reqwest::multipart::Form::new().part(
        "metadata",
        reqwest::multipart::Part::bytes(meta).file_name("metadata.json"),
    );
    let mut digests = Vec::new();
    let mut file_items = Vec::new();
    for (j, it) in items.iter().enumerate() {
        if let Some((path, size)) = it.file() {
            let digest: Digest = Arc::new(OnceLock::new());
            let body = file_body(
                path.to_path_buf(),
                size,
                file_items.len(),
                digest.clone(),
                tally.clone(),
                ctx.report.stats.bytes_in_flight.clone(),
            );
            form = form.part(
                "file",
                reqwest::multipart::Part::stream_with_length(body, size),
            );
            digests.push(digest);
            file_items.push(j);
        }
    }
    (form, digests, file_items)
}

/// Records a committed transaction: folders' oids, files imported (checked against the
/// sha256plain and size the server recorded).
fn settle(ctx: &Ctx, items: &[Item], events: &[Value], digests: &[Digest]) {
    let report = &ctx.report;
    let stats = &report.stats;
    let mut part = 0;
    for (j, it) in items.iter().enumerate() {
        let ev = events.get(j).unwrap_or(&Value::Null);
        match &it.kind {
            Kind::Folder(s) => match ev["oid"].as_str().and_then(|o| o.parse::<Oid>().ok()) {
                Some(oid) => {
                    stats.folders_created.fetch_add(1, Ordering::Relaxed);
                    s.settle(SlotState::Ready(oid));
                }
                None => fail_item(report, it, "the server's answer has no oid for it"),
            },
            Kind::Create { size, .. } | Kind::Update { size, .. } => {
                let sent = digests.get(part).and_then(|d| d.get().cloned());
                part += 1;
                let recorded = ev["sha256plain"].as_str();
                let recorded_size = ev["size"].as_u64();
                if let (Some(a), Some(b)) = (sent.as_deref(), recorded) {
                    if !a.eq_ignore_ascii_case(b) {
                        report.fail(
                            &it.rel,
                            format!("the server recorded sha256 {b}, but {a} was sent"),
                        );
                        continue;
                    }
                }
                if recorded_size.is_some_and(|n| n != *size) {
                    report.fail(
                        &it.rel,
                        format!(
                            "the server recorded {} bytes, but {size} were sent",
                            recorded_size.unwrap_or(0)
                        ),
                    );
                    continue;
                }
                let counter = if matches!(it.kind, Kind::Update { .. }) {
                    &stats.updated
                } else {
                    &stats.created
                };
                counter.fetch_add(1, Ordering::Relaxed);
                stats.bytes_done.fetch_add(*size, Ordering::Relaxed);
            }
        }
    }
}
