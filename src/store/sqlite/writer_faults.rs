//! The writer under injected faults: for every failure position, each job is either
//! answered Ok and present after reopening the store, or answered with an error and absent.
//!
//! The workload is deterministic, so that "the Nth statement" names the same statement in
//! every run: each round, a gate job holds the writer until the round's jobs are queued
//! behind it, so they form one batch of their own.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use super::*;
use crate::crypto::BlobAlgorithm;
use crate::model::Event;
use crate::model::SCHEMA_VERSION;
use crate::model::{Oid, Tstamp};
use crate::store::{BlobRow, MetaRead, MetaWrite};

const ROUNDS: u64 = 2;

/// What a job of the workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Creates one object.
    Keep,
    /// Creates two objects and records a blob: several statements to fail among.
    KeepMore,
    /// Writes, then refuses on its own account.
    FailsAfterWriting,
    /// Creates a name twice in one folder: a constraint the store reports (409).
    DuplicateName,
    /// A rehearsal: always rolled back, whatever it answers.
    DryRun,
    /// Ignores the failure of its first write and goes on: must never be acknowledged
    /// with that write missing.
    IgnoresAnError,
}

const KINDS: [Kind; 6] = [
    Kind::Keep,
    Kind::KeepMore,
    Kind::FailsAfterWriting,
    Kind::DuplicateName,
    Kind::DryRun,
    Kind::IgnoresAnError,
];

fn event(oid: Oid, name: &str, tstamp: Tstamp) -> Event {
    serde_json::from_value(serde_json::json!({
        "tstamp": tstamp, "userpolicy": {"label": "t"}, "jwthash": "", "schemaversion": SCHEMA_VERSION,
        "name": name, "action": "C", "oid": oid, "parentoid": Oid::ROOT,
        "expiration": Tstamp::FOREVER, "checkedtstamp": "0000000000000000",
        "fulldir": format!("/{}/", Oid::ROOT),
        // Rows big enough that the workload grows the database page by page.
        "description": "d".repeat(1_500),
    }))
    .unwrap()
}

fn create(ctx: &mut WriteCtx<'_>, oid: Oid, name: &str) -> Result<(), StoreError> {
    let t = ctx.next_tstamp();
    ctx.append(&event(oid, name, t))
}

/// One job: what it is, the oids it may write, and what it was answered.
struct Outcome {
    kind: Kind,
    oids: Vec<Oid>,
    answer: Result<(), StoreError>,
}

type Pending<'s> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 's>>;

fn submit(store: &SqliteStore, kind: Kind, base: u64) -> (Vec<Oid>, Pending<'_>) {
    let a = Oid(base);
    let b = Oid(base + 1);
    let name = |o: Oid| format!("n{o}");
    let fut: Pending = match kind {
        Kind::Keep => Box::pin(store.write(move |ctx| create(ctx, a, &name(a)))),
        Kind::KeepMore => Box::pin(store.write(move |ctx| {
            create(ctx, a, &name(a))?;
            ctx.put_blob(&BlobRow {
                rname: format!("r/{a}"),
                algorithm: BlobAlgorithm::None,
                wrapped: None,
                size: 3,
                sha256plain: "00".repeat(32),
                inline: Some(bytes::Bytes::from(vec![7u8; 3_000])),
                created: Tstamp(1),
                keyed: Tstamp(1),
                location: None,
            })?;
            create(ctx, b, &name(b))
        })),
        Kind::FailsAfterWriting => Box::pin(store.write(move |ctx| {
            create(ctx, a, &name(a))?;
            Err(StoreError::Migration("refused on purpose".into()))
        })),
        Kind::DuplicateName => Box::pin(store.write(move |ctx| {
            create(ctx, a, &name(a))?;
            create(ctx, b, &name(a))
        })),
        Kind::DryRun => Box::pin(store.dry_run(move |ctx| create(ctx, a, &name(a)))),
        Kind::IgnoresAnError => Box::pin(store.write(move |ctx| {
            let _ = create(ctx, a, &name(a));
            create(ctx, b, &name(b))
        })),
    };
    (vec![a, b], fut)
}

/// Polls every future until all are ready, each only while it is not (a mini join_all
/// that can also be used to poll each once, so that each queues its job in order).
async fn drive(futs: &mut [Pending<'_>], out: &mut [Option<Result<(), StoreError>>], once: bool) {
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(r) => *o = Some(r),
                    Poll::Pending => all = false,
                }
            }
        }
        if all || once {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Runs the workload; returns every job's outcome (gates included, as `Keep`).
async fn workload(store: &SqliteStore) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let base = 1_000 + round * 1_000;
        let gate_oid = Oid(base);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let mut gate: Pending = Box::pin(store.write(move |ctx| {
            let _ = started_tx.send(());
            // Holds the writer until the round's jobs are queued (or the test is gone).
            let _ = release_rx.recv();
            create(ctx, gate_oid, &format!("gate{gate_oid}"))
        }));
        let mut gate_out = None;
        tokio::select! {
            _ = started_rx => {}
            r = &mut gate => gate_out = Some(r),
        }
        let mut futs = Vec::new();
        let mut jobs = Vec::new();
        for (j, &kind) in KINDS.iter().enumerate() {
            let (oids, fut) = submit(store, kind, base + 10 * (j as u64 + 1));
            jobs.push((kind, oids));
            futs.push(fut);
        }
        let mut out: Vec<Option<Result<(), StoreError>>> = (0..futs.len()).map(|_| None).collect();
        drive(&mut futs, &mut out, true).await;
        let _ = release_tx.send(());
        let gate_answer = match gate_out {
            Some(r) => r,
            None => gate.await,
        };
        drive(&mut futs, &mut out, false).await;
        outcomes.push(Outcome {
            kind: Kind::Keep,
            oids: vec![gate_oid],
            answer: gate_answer,
        });
        for ((kind, oids), answer) in jobs.into_iter().zip(out) {
            outcomes.push(Outcome {
                kind,
                oids,
                answer: answer.expect("driven to completion"),
            });
        }
    }
    outcomes
}

/// What the reopened store holds: the oids with events, and whether each has an index
/// row; the blob rows.
fn stored(dir: &Path) -> (BTreeSet<Oid>, BTreeSet<Oid>, BTreeSet<String>) {
    let store = SqliteStore::open(dir, &SqliteConfig::NORMAL).unwrap();
    let q = |sql: &str| -> Vec<i64> {
        let sql = sql.to_string();
        rt().block_on(store.read(move |s| -> Result<Vec<i64>, StoreError> {
            let mut st = s.conn().prepare(&sql)?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        }))
        .unwrap()
    };
    let events = q("SELECT oid FROM events")
        .into_iter()
        .map(Oid::from_i64)
        .collect();
    let objects = q("SELECT oid FROM objects")
        .into_iter()
        .map(Oid::from_i64)
        .collect();
    let blobs = rt()
        .block_on(store.read(|s| s.blobs_after(None, 1_000)))
        .unwrap()
        .into_iter()
        .map(|b| b.rname)
        .collect();
    (events, objects, blobs)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The tally of one run, for the sweep's summary.
#[derive(Debug, Default)]
struct Tally {
    acknowledged: usize,
    refused: usize,
}

/// Runs the workload with `faults` and checks the rule: answered Ok => every event the job
/// wrote is present after reopening; answered Err => none is. Nothing else is stored.
/// Returns what broke the rule, if anything.
fn run_and_check(faults: &Arc<FaultInjector>) -> Result<Tally, String> {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = {
        let store = SqliteStore::open_with(dir.path(), &SqliteConfig::NORMAL, Some(faults.clone()))
            .unwrap();
        rt().block_on(workload(&store))
    };
    let (events, objects, blobs) = stored(dir.path());
    let mut expected = BTreeSet::new();
    let mut tally = Tally::default();
    for o in &outcomes {
        let answer = o.answer.as_ref().map_err(|e| e.to_string());
        if matches!(o.kind, Kind::FailsAfterWriting | Kind::DuplicateName) && answer.is_ok() {
            return Err(format!("a {:?} job was answered Ok", o.kind));
        }
        let wrote: &[Oid] = match o.kind {
            Kind::Keep | Kind::DryRun => &o.oids[..1],
            _ => &o.oids,
        };
        let present: Vec<Oid> = wrote
            .iter()
            .copied()
            .filter(|x| events.contains(x))
            .collect();
        if answer.is_ok() && o.kind != Kind::DryRun {
            tally.acknowledged += 1;
            if present != wrote {
                return Err(format!(
                    "a {:?} job answered Ok has only {present:?} of {wrote:?} after reopening",
                    o.kind
                ));
            }
            expected.extend(wrote);
        } else {
            tally.refused += usize::from(answer.is_err());
            if !present.is_empty() {
                return Err(format!(
                    "a {:?} job answered {answer:?} left {present:?}",
                    o.kind
                ));
            }
        }
        if o.kind == Kind::KeepMore && blobs.contains(&format!("r/{}", o.oids[0])) != answer.is_ok()
        {
            return Err(format!(
                "the blob row of a KeepMore job answered {answer:?} disagrees"
            ));
        }
    }
    if events != expected {
        return Err(format!(
            "events beyond the acknowledged jobs': {:?}",
            events.difference(&expected).collect::<Vec<_>>()
        ));
    }
    if objects != expected {
        return Err("the index disagrees with the log".into());
    }
    Ok(tally)
}

#[test]
fn for_every_failed_statement_each_job_is_acknowledged_and_kept_or_refused_and_absent() {
    let count = FaultInjector::counting();
    let clean = run_and_check(&count).unwrap();
    let total = count.statements();
    assert!(clean.refused > 0 && clean.acknowledged > 0, "{clean:?}");
    let mut sum = Tally::default();
    let mut commits = 0;
    let mut broken = Vec::new();
    for n in 1..=total + 1 {
        let f = FaultInjector::fail_statement(n);
        let checked = run_and_check(&f);
        assert_eq!(f.fired(), n <= total, "statement {n}: {:?}", f.target_sql());
        let sql = f.target_sql().unwrap_or_default();
        if sql.trim() == "COMMIT" {
            commits += 1;
        }
        match checked {
            Ok(t) => {
                sum.acknowledged += t.acknowledged;
                sum.refused += t.refused;
            }
            Err(e) => broken.push(format!("statement {n} ({sql}): {e}")),
        }
    }
    eprintln!(
        "{total} failure positions ({commits} of them a COMMIT): {} jobs acknowledged, {} refused \
         (without faults: {clean:?} per run)",
        sum.acknowledged, sum.refused
    );
    assert!(
        broken.is_empty(),
        "{} of {total} positions broke the rule:\n{}",
        broken.len(),
        broken.join("\n")
    );
    assert_eq!(commits, 2 * ROUNDS as usize);
}

#[test]
fn for_every_size_at_which_the_disk_fills_each_job_is_acknowledged_and_kept_or_refused_and_absent()
{
    // The pages a fresh store has, and the pages the whole workload needs.
    let pages = |dir: &Path| -> u64 {
        let c = Connection::open(dir.join("vellum.db")).unwrap();
        c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    };
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap());
    let first = pages(dir.path());
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), &SqliteConfig::NORMAL).unwrap();
        rt().block_on(workload(&store));
    }
    let last = pages(dir.path());
    let mut sum = Tally::default();
    let mut broken = Vec::new();
    for limit in first..=last {
        match run_and_check(&FaultInjector::max_page_count(limit)) {
            Ok(t) => {
                sum.acknowledged += t.acknowledged;
                sum.refused += t.refused;
            }
            Err(e) => broken.push(format!("disk full at {limit} pages: {e}")),
        }
    }
    eprintln!(
        "page limits {first}..={last}: {} jobs acknowledged, {} refused",
        sum.acknowledged, sum.refused
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
