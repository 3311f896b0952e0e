//! The write service: one POST /write transaction from its metadata to its commit.
//!
//! Order of work (SPEC §5): parse the metadata and refuse what a read snapshot can refuse;
//! take the file parts one by one, keeping small ones in memory (sealed) and streaming large
//! ones into the blob store, but only after a rehearsal (a dry run of the planner, always
//! rolled back) has shown the caller may make every change, so a caller who may not write
//! stores no blob byte; match parts to events by the counting rule; run the planner for real
//! on the writer (authorising again against the then-current state); after the commit,
//! delete the blobs purges freed. Any failure deletes the blobs this transaction stored,
//! also when the transaction is dropped half-way (the client went away). The store's writer
//! signals the commit itself, which wakes the feeds.
//!
//! Nothing here knows about HTTP: the caller turns its request into a metadata document and
//! a sequence of part streams, and the [`Committed`] result into a response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::input::{Content, WriteEvent};
use super::plan::{self, Namespace, Planner};
use crate::access::Access;
use crate::blob::{BlobAlgorithm, BlobError, BlobInfo, BlobStore};
use crate::config::Limits;
use crate::error::{Code, Error, Result};
use crate::metrics::Metrics;
use crate::model::{Action, EventView};
use crate::policy::PolicyEngine;
use crate::store::{MetaRead, MetaWrite, Store};

/// Inline file content one transaction may hold in memory until its commit (16 MiB); parts
/// beyond it go to the blob store whatever their size.
const INLINE_BYTES_PER_TRANSACTION: usize = 16 << 20;

/// What a write needs from the service around it; built once at start-up and shared
/// (`Arc`) by every transaction.
pub struct WriteService {
    pub store: Store,
    pub blobs: BlobStore,
    pub policy: Arc<PolicyEngine>,
    pub namespace: Namespace,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
}

/// A committed transaction, as its caller is answered.
#[derive(Debug)]
pub struct Committed {
    /// One event per request event, in request order, then folders made on the way, each
    /// with the caller's letters on it.
    pub events: Vec<EventView>,
    pub files: usize,
    pub bytes: u64,
}

fn part_count(parts: usize, all: usize, fresh: usize) -> Error {
    Error::bad_request(
        Code::PartCount,
        format!(
            "{parts} file part(s) for {all} file event(s) ({fresh} without rname): send one part \
             per file event, or one per file event without rname"
        ),
    )
}

/// Which events file parts may go to, by SPEC §5's counting rule.
struct PartTargets {
    /// Every create/update of a file, in order.
    all: Vec<usize>,
    /// Those without an `rname`.
    fresh: Vec<usize>,
}

impl PartTargets {
    fn new(events: &[WriteEvent]) -> Self {
        let all: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].takes_content())
            .collect();
        let fresh = all
            .iter()
            .copied()
            .filter(|&i| events[i].rname.is_none())
            .collect();
        PartTargets { all, fresh }
    }

    /// How part `k` must be stored, before the final count is known: the events it may go
    /// to must agree on `blobalgorithm`. The expected sha256 is only checked here when the
    /// part's event is certain and a create; otherwise the planner checks it at commit.
    fn plan_part<'e>(
        &self,
        k: usize,
        events: &'e [WriteEvent],
    ) -> Result<(BlobAlgorithm, Option<&'e str>, usize)> {
        let a = *self
            .all
            .get(k)
            .ok_or_else(|| part_count(k + 1, self.all.len(), self.fresh.len()))?;
        match self.fresh.get(k) {
            Some(&b) if b != a => {
                if events[a].algorithm != events[b].algorithm {
                    return Err(Error::bad_request(
                        Code::AmbiguousPart,
                        format!(
                            "file part {} may belong to event {a} or {b}, which ask for \
                             different blobalgorithm; put the events without rname first",
                            k + 1
                        ),
                    ));
                }
                Ok((events[a].algorithm, None, a))
            }
            // A create's sha256plain is checked while the part streams in, so a mismatch
            // stores nothing; an update's is checked at commit (it may be the old
            // version's, echoed back with props: see `Planner::set_content`).
            _ if events[a].action == Action::C => {
                Ok((events[a].algorithm, events[a].sha256plain.as_deref(), a))
            }
            _ => Ok((events[a].algorithm, None, a)),
        }
    }

    /// The events the parts go to, once their number is known.
    fn chosen(&self, parts: usize) -> Result<&[usize]> {
        if parts == self.all.len() {
            Ok(&self.all)
        } else if parts == self.fresh.len() {
            Ok(&self.fresh)
        } else {
            Err(part_count(parts, self.all.len(), self.fresh.len()))
        }
    }
}

impl WriteService {
    /// The planner for one transaction, in the writer's transaction `ctx`.
    fn planner<'a>(
        &'a self,
        ctx: &'a mut dyn MetaWrite,
        access: &'a Access,
    ) -> Planner<'a, dyn MetaWrite + 'a> {
        Planner::new(ctx, access, &self.namespace, self.limits.max_folder_depth)
    }

    /// Starts a transaction: parses `metadata`, refuses on a read snapshot what can be
    /// refused before any policy it brings is compiled, compiles those policies, and
    /// rehearses the leading creates. CPU work, so on the blocking pool, within the
    /// request's policy budget and at the caller's place at the policy gate.
    pub async fn begin(self: &Arc<Self>, access: Access, metadata: Bytes) -> Result<Transaction> {
        let started = Instant::now();
        let events = {
            let (svc, access) = (self.clone(), access.clone());
            tokio::task::spawn_blocking(move || -> Result<Vec<WriteEvent>> {
                let limits = &svc.limits;
                let mut events = super::parse_metadata(&metadata, limits.max_events_per_write)?;
                let rehearse = |s: &dyn MetaRead, events: &[WriteEvent]| {
                    plan::rehearse_creates(
                        s,
                        &access,
                        &svc.namespace,
                        limits.max_folder_depth,
                        events,
                    )
                };
                if events.iter().all(|e| e.raw_policy.is_none()) {
                    // Nothing to compile: one snapshot for both (on PostgreSQL each is a
                    // round trip or more).
                    svc.store.read_blocking(|s| {
                        plan::precheck(s, &access, &events)?;
                        rehearse(s, &events)
                    })?;
                } else {
                    // A policy is compiled between them, outside any snapshot: a slow one
                    // must hold no read transaction or pooled connection.
                    svc.store
                        .read_blocking(|s| plan::precheck(s, &access, &events))?;
                    super::prepare_policies(&mut events, &svc.policy, &access.meter())?;
                    svc.store.read_blocking(|s| rehearse(s, &events))?;
                }
                Ok(events)
            })
            .await
            .map_err(|_| Error::internal(Code::Write, "parsing the transaction failed"))??
        };
        let targets = PartTargets::new(&events);
        // On the single writer, policies get the transaction's own budget, bounded whatever
        // the request's.
        let writer = access.on_writer(self.limits.transaction_budget(events.len()));
        Ok(Transaction {
            svc: self.clone(),
            rehearsed: targets.all.is_empty(),
            targets,
            events,
            access,
            writer,
            inline_budget: INLINE_BYTES_PER_TRANSACTION,
            uploaded: Vec::new(),
            started,
            authorised: started.elapsed(),
            finished: false,
        })
    }
}

/// A transaction under way: its events, and the parts received so far.
pub struct Transaction {
    svc: Arc<WriteService>,
    events: Vec<WriteEvent>,
    targets: PartTargets,
    /// The caller, with the request's budget (for the response's letters).
    access: Access,
    /// The caller on the writer, with the transaction's budget.
    writer: Access,
    /// Whether the planner has been rehearsed (needed once, before the first stored part).
    rehearsed: bool,
    /// Inline content is held in memory until the commit: bounded per transaction.
    inline_budget: usize,
    uploaded: Vec<BlobInfo>,
    started: Instant,
    authorised: Duration,
    /// Committed, or its blobs already deleted: nothing left for `Drop` to clean up.
    finished: bool,
}

impl Transaction {
    /// Takes the next file part: small ones are sealed in memory for the metadata store,
    /// larger ones streamed into the blob store (after a rehearsal, once per transaction).
    /// On an error the transaction is over: pass it to [`Transaction::abort`].
    pub async fn add_part<S>(&mut self, part: S) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin,
    {
        let mut part = part;
        let k = self.uploaded.len();
        let (algorithm, expected, index) = self.targets.plan_part(k, &self.events)?;
        let expected = expected.map(str::to_string);
        let limits = &self.svc.limits;
        let rname = BlobStore::new_rname();
        let inline_max = limits.inline_max_bytes.min(self.inline_budget);
        let mut head: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        let mut ended = false;
        while len <= inline_max {
            match part.next().await.transpose()? {
                Some(c) => {
                    len += c.len();
                    head.push(c);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let info = if ended {
            if len as u64 > limits.max_file_bytes {
                let e = BlobError::TooLarge {
                    limit: limits.max_file_bytes,
                };
                return Err(Error::from(e).at(index));
            }
            self.inline_budget -= len;
            self.svc
                .blobs
                .seal_inline(&rname, algorithm, &head, expected.as_deref())
                .map_err(|e| Error::from(e).at(index))?
        } else {
            if !self.rehearsed {
                self.rehearse().await?;
                self.rehearsed = true;
            }
            let body = futures_util::stream::iter(head.into_iter().map(Ok))
                .chain(part.map(|r| r.map_err(std::io::Error::other)));
            let max_file = Some(limits.max_file_bytes);
            let put = self
                .svc
                .blobs
                .put(&rname, algorithm, body, expected.as_deref(), max_file)
                .await;
            put.map_err(|e| {
                self.svc.metrics.blob_error(&e);
                Error::from(e).at(index)
            })?
        };
        self.uploaded.push(info);
        Ok(())
    }

    /// Authorises before any blob byte is stored: the planner, with every possible target
    /// marked as getting content, in a job that is always rolled back. It plans only: no
    /// response is built.
    async fn rehearse(&self) -> Result<()> {
        let mut trial = self.events.clone();
        for &i in &self.targets.all {
            trial[i].content = Content::Pending;
        }
        let limits = &self.svc.limits;
        let access = self
            .writer
            .on_writer(limits.transaction_budget(trial.len()));
        let svc = self.svc.clone();
        self.svc
            .store
            .dry_run(move |ctx| svc.planner(ctx, &access).check_all(trial))
            .await
    }

    /// Matches the parts to events, commits, and answers with the caller's letters on each
    /// event; then deletes the blobs purges freed. On an error nothing was kept, and this
    /// transaction's blobs are deleted.
    pub async fn commit(mut self) -> Result<Committed> {
        match self.apply().await {
            Ok(c) => Ok(c),
            Err(e) => {
                // Once committed, the blobs are the store's, whatever failed after.
                if !self.finished {
                    self.discard().await;
                }
                Err(e)
            }
        }
    }

    async fn apply(&mut self) -> Result<Committed> {
        let chosen = self.targets.chosen(self.uploaded.len())?.to_vec();
        let mut events = std::mem::take(&mut self.events);
        for (info, &i) in self.uploaded.iter().zip(&chosen) {
            events[i].content = Content::Stored(Box::new(info.clone()));
        }
        let received = self.started.elapsed();
        let (access, svc) = (self.writer.clone(), self.svc.clone());
        let applied = self
            .svc
            .store
            .write(move |ctx| svc.planner(ctx, &access).apply_all(events))
            .await?;
        // From here the transaction is on disk: its blobs are in use.
        self.finished = true;
        let committed = self.started.elapsed();
        // The caller's letters on what it stored: after the commit and off the writer,
        // within what is left of the request's budget (an evaluation that cannot be made
        // shows no letters: the write itself has happened and is answered).
        let events = {
            let (store, access) = (self.svc.store.clone(), self.access.clone());
            let keys = access.sees_blob_keys().then(|| self.svc.blobs.keys_arc());
            let events = applied.events;
            tokio::task::spawn_blocking(move || {
                store.read_blocking(|s| plan::respond(s, &access, keys.as_deref(), events))
            })
            .await
            .map_err(|_| Error::internal(Code::Write, "answering the transaction failed"))??
        };
        let (files, bytes) = (
            self.uploaded.len(),
            self.uploaded.iter().map(|i| i.size).sum::<u64>(),
        );
        let m = &self.svc.metrics;
        Metrics::add(&m.transactions, 1);
        Metrics::add(&m.events, events.len() as u64);
        Metrics::add(&m.bytes_in, bytes);
        let user = self.access.identity.claims.label();
        for e in &events {
            tracing::info!(
                target: "audit",
                user = %user,
                action = %e.event.action.letter(),
                oid = %e.event.oid,
                tstamp = %e.event.tstamp,
                "allowed"
            );
        }
        // Content no version uses any more (purges): the metadata is committed, so the
        // blob can go. A failure here leaves an orphan for `vellum gc`.
        for rname in &applied.freed_blobs {
            if let Err(e) = self.svc.blobs.delete(rname).await {
                m.blob_error(&e);
                tracing::warn!(%rname, error = %e, "could not delete a purged blob; `vellum gc` will");
            }
        }
        tracing::info!(
            events = events.len(),
            files,
            bytes,
            user = %user,
            authorise_ms = self.authorised.as_secs_f64() * 1e3,
            receive_ms = (received - self.authorised).as_secs_f64() * 1e3,
            commit_ms = (committed - received).as_secs_f64() * 1e3,
            "transaction committed"
        );
        Ok(Committed {
            events,
            files,
            bytes,
        })
    }

    /// Ends a transaction that will not be committed: deletes the blobs it stored.
    pub async fn abort(mut self) {
        self.discard().await;
    }

    /// Deletes the blobs this transaction stored (best effort; `vellum gc` removes what
    /// this misses).
    async fn discard(&mut self) {
        self.finished = true;
        for info in self.uploaded.iter().filter(|i| i.inline.is_none()) {
            if let Err(e) = self.svc.blobs.delete(&info.rname).await {
                tracing::warn!(rname = %info.rname, error = %e, "could not delete the blob of a failed write");
            }
        }
    }
}

impl Drop for Transaction {
    /// A transaction dropped half-way (its client went away mid-upload) deletes its blobs
    /// in the background.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let stored: Vec<String> = self
            .uploaded
            .iter()
            .filter(|i| i.inline.is_none())
            .map(|i| i.rname.clone())
            .collect();
        if stored.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let blobs = self.svc.blobs.clone();
        rt.spawn(async move {
            for rname in stored {
                if let Err(e) = blobs.delete(&rname).await {
                    tracing::warn!(%rname, error = %e, "could not delete the blob of an abandoned write");
                }
            }
        });
    }
}
