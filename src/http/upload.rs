//! POST /write: the metadata part, then file parts streamed into the blob store.
//!
//! Order of work (SPEC §5): parse the metadata; rehearse the whole transaction against the
//! store (a dry run that is always rolled back) so that a caller who may not write stores no
//! blob byte; stream each file part through the blob store; apply the counting rule; commit
//! the transaction for real (authorised again against the then-current state). A failure at
//! any step after an upload deletes the blobs this request stored.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::body::{self, Body};
use super::request::{collect_limited, header_str};
use super::RequestBody;
use crate::access::Access;
use crate::app::AppState;
use crate::blob::{BlobAlgorithm, BlobInfo, BlobStore};
use crate::error::{Code, Error, Result};
use crate::write::{self, Content, Planner, WriteEvent};

/// Inline file content one transaction may hold in memory until its commit (16 MiB); parts
/// beyond it go to the blob store whatever their size.
const INLINE_BYTES_PER_TRANSACTION: usize = 16 << 20;

fn multer_error(e: multer::Error) -> Error {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            Error::too_large(Code::MetadataTooLarge, e.to_string())
        }
        multer::Error::StreamReadFailed(e) => super::request_body::read_error(&*e),
        other => Error::bad_request(Code::BadMultipart, format!("multipart body: {other}")),
    }
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
            _ if events[a].action == crate::model::Action::C => {
                Ok((events[a].algorithm, events[a].sha256plain.as_deref(), a))
            }
            _ => Ok((events[a].algorithm, None, a)),
        }
    }
}

/// Deletes blobs this request stored (best effort; `vellum gc` removes what this misses).
async fn discard(blobs: &BlobStore, uploaded: &[BlobInfo]) {
    for info in uploaded.iter().filter(|i| i.inline.is_none()) {
        if let Err(e) = blobs.delete(&info.rname).await {
            tracing::warn!(rname = %info.rname, error = %e, "could not delete the blob of a failed write");
        }
    }
}

pub async fn write_txn(
    state: &Arc<AppState>,
    access: Access,
    req: Request<RequestBody>,
) -> Result<Response<Body>> {
    let started = std::time::Instant::now();
    let max = state.config.limits.max_metadata_bytes;
    let ctype = header_str(req.headers(), "content-type")
        .unwrap_or("")
        .to_string();
    let (metadata, mut mp) = if ctype.starts_with("application/json") {
        (
            collect_limited(&req.headers().clone(), req.into_body(), max).await?,
            None,
        )
    } else {
        let boundary = multer::parse_boundary(&ctype).map_err(|_| {
            Error::bad_request(
                Code::BadContentType,
                "POST /write takes multipart/form-data (metadata first, then file parts) or \
                 application/json",
            )
        })?;
        let limit = state.config.http.max_part_header_bytes;
        let body = super::multipart_limit::limit_part_headers(
            req.into_body().into_data_stream(),
            &boundary,
            limit,
        );
        let mut mp = multer::Multipart::new(body, boundary);
        // SPEC §5: the first part is the metadata whatever its name.
        let mut first = mp
            .next_field()
            .await
            .map_err(multer_error)?
            .ok_or_else(|| {
                Error::bad_request(Code::EmptyMetadata, "the multipart body has no parts")
            })?;
        let mut metadata = Vec::new();
        while let Some(chunk) = first.chunk().await.map_err(multer_error)? {
            if metadata.len() + chunk.len() > max {
                return Err(Error::too_large(
                    Code::MetadataTooLarge,
                    format!("the metadata part is over the {max}-byte limit"),
                ));
            }
            metadata.extend_from_slice(&chunk);
        }
        drop(first);
        (Bytes::from(metadata), Some(mp))
    };
    // Parsing, checking what can be checked before compiling, and compiling the policies the
    // transaction brings are CPU work: off the async threads, within the request's policy
    // budget, at the caller's place at the policy gate.
    let mut events = {
        let (state, access) = (state.clone(), access.clone());
        let max_events = state.config.limits.max_events_per_write;
        let max_depth = state.config.limits.max_folder_depth;
        tokio::task::spawn_blocking(move || -> Result<Vec<WriteEvent>> {
            let mut events = write::parse_metadata(&metadata, max_events)?;
            let readers = state.store.reader();
            readers.with_snapshot(|s| write::plan::precheck(s, &access, &events))?;
            write::prepare_policies(&mut events, &state.policy, &access.meter())?;
            readers.with_snapshot(|s| {
                write::plan::rehearse_creates(s, &access, &state.namespace, max_depth, &events)
            })?;
            Ok(events)
        })
        .await
        .map_err(|_| Error::internal(Code::Write, "parsing the transaction failed"))??
    };
    let targets = PartTargets::new(&events);
    let ns = state.namespace.clone();
    let limits = &state.config.limits;
    let max_depth = limits.max_folder_depth;
    // On the single writer, policies get the transaction's own budget, bounded whatever the
    // request's.
    let writer = access.on_writer(limits.transaction_budget(events.len()));

    // Authorise before any blob byte is stored: a rehearsal with every possible target
    // marked as getting content, run before the first part that goes to the blob store.
    // Parts small enough to be kept inline are only held in memory until the commit (which
    // authorises again), so a transaction of small files costs one trip to the writer.
    let mut rehearsed = targets.all.is_empty();
    let rehearse = |events: &[WriteEvent]| {
        let mut trial = events.to_vec();
        for &i in &targets.all {
            trial[i].content = Content::Pending;
        }
        let (access, ns) = (
            writer.on_writer(limits.transaction_budget(trial.len())),
            ns.clone(),
        );
        state.store.dry_run(move |ctx| {
            Planner::new(ctx, &access, &ns, max_depth)
                .apply_all(trial)
                .map(|_| ())
        })
    };
    let received_meta = started.elapsed();

    // Inline content is held in memory until the commit: bound it per transaction.
    let mut inline_budget = INLINE_BYTES_PER_TRANSACTION;
    let mut uploaded: Vec<BlobInfo> = Vec::new();
    let outcome = async {
        if let Some(mp) = mp.as_mut() {
            while let Some(mut field) = mp.next_field().await.map_err(multer_error)? {
                let k = uploaded.len();
                let (algorithm, expected, index) = targets.plan_part(k, &events)?;
                let rname = BlobStore::new_rname();
                let inline_max = limits.inline_max_bytes.min(inline_budget);
                let mut head: Vec<Bytes> = Vec::new();
                let mut len = 0usize;
                let mut ended = false;
                while len <= inline_max {
                    match field.chunk().await.map_err(multer_error)? {
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
                        let e = crate::blob::BlobError::TooLarge {
                            limit: limits.max_file_bytes,
                        };
                        return Err(Error::from(e).at(index));
                    }
                    inline_budget -= len;
                    state
                        .blobs
                        .seal_inline(&rname, algorithm, &head, expected)
                        .map_err(|e| Error::from(e).at(index))?
                } else {
                    if !rehearsed {
                        rehearse(&events).await?;
                        rehearsed = true;
                    }
                    let body = futures_util::stream::iter(head.into_iter().map(Ok))
                        .chain(field.map(|r| r.map_err(std::io::Error::other)));
                    state
                        .blobs
                        .put(
                            &rname,
                            algorithm,
                            body,
                            expected,
                            Some(limits.max_file_bytes),
                        )
                        .await
                        .map_err(|e| {
                            state.metrics.blob_error(&e);
                            Error::from(e).at(index)
                        })?
                };
                uploaded.push(info);
            }
        }
        let n = uploaded.len();
        let chosen = if n == targets.all.len() {
            &targets.all
        } else if n == targets.fresh.len() {
            &targets.fresh
        } else {
            return Err(part_count(n, targets.all.len(), targets.fresh.len()));
        };
        for (info, &i) in uploaded.iter().zip(chosen) {
            events[i].content = Content::Stored(Box::new(info.clone()));
        }
        let received = started.elapsed();
        let access = writer.clone();
        let ns = ns.clone();
        let applied = state
            .store
            .write(move |ctx| Planner::new(ctx, &access, &ns, max_depth).apply_all(events))
            .await?;
        Ok((applied, received))
    }
    .await;
    let (mut applied, received) = match outcome {
        Ok(r) => r,
        Err(e) => {
            discard(&state.blobs, &uploaded).await;
            return Err(e);
        }
    };
    // The caller's letters on what it stored, for the response: after the commit and off the
    // writer, within what is left of the request's budget (an evaluation that cannot be made
    // shows no letters: the write itself has happened and is answered).
    applied.events = {
        let (access, events) = (access.clone(), std::mem::take(&mut applied.events));
        tokio::task::spawn_blocking(move || write::plan::letters_for_response(&access, events))
            .await
            .map_err(|_| Error::internal(Code::Write, "answering the transaction failed"))?
    };
    let committed = started.elapsed();
    state.committed();
    let m = &state.metrics;
    crate::metrics::Metrics::add(&m.transactions, 1);
    crate::metrics::Metrics::add(&m.events, applied.events.len() as u64);
    crate::metrics::Metrics::add(&m.bytes_in, uploaded.iter().map(|i| i.size).sum());
    for e in &applied.events {
        tracing::info!(
            target: "audit",
            user = %access.identity.claims.label(),
            action = %e.action.letter(),
            oid = %e.oid,
            tstamp = %e.tstamp,
            "allowed"
        );
    }
    // Content no version uses any more (purges): the metadata is committed, so the blob
    // can go. A failure here leaves an orphan for `vellum gc`.
    for rname in &applied.freed_blobs {
        if let Err(e) = state.blobs.delete(rname).await {
            state.metrics.blob_error(&e);
            tracing::warn!(%rname, error = %e, "could not delete a purged blob; `vellum gc` will");
        }
    }
    let resp = body::json(StatusCode::OK, &applied.events);
    tracing::info!(
        events = applied.events.len(),
        files = uploaded.len(),
        bytes = uploaded.iter().map(|i| i.size).sum::<u64>(),
        user = %access.identity.claims.label(),
        authorise_ms = received_meta.as_secs_f64() * 1e3,
        receive_ms = (received - received_meta).as_secs_f64() * 1e3,
        commit_ms = (committed - received).as_secs_f64() * 1e3,
        "transaction committed"
    );
    Ok(resp)
}
