//! The operator's commands (SPEC §1): `vellum gc`, `vellum fsck`, `vellum rekey`. They run
//! beside a live server on the same data folder: SQLite serialises their few writes with the
//! server's, and every step keeps each blob readable (see each function).

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;

use crate::blob::{BlobError, BlobStore};
use crate::store::{BlobRow, Store, StoreError};

/// Blob rows read per step.
const PAGE: usize = 500;

/// What `vellum gc` did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub checked: u64,
    pub removed: Vec<String>,
    pub staging_removed: u64,
    pub kept_young: u64,
}

/// Deletes stored blobs that no metadata row names (what a crash between upload and commit,
/// or a failed delete after a purge, left behind), if older than `grace`: an upload in flight
/// has no row until its transaction commits, so young objects are left alone. Also removes
/// stale local staging files. With `dry_run`, only reports.
pub async fn gc(
    store: &Store,
    blobs: &BlobStore,
    grace: Duration,
    dry_run: bool,
) -> anyhow::Result<GcReport> {
    let mut report = GcReport::default();
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut listing = Box::pin(blobs.list());
    let mut batch: Vec<String> = Vec::new();
    loop {
        let next = listing.next().await;
        let end = next.is_none();
        if let Some(item) = next {
            let (rname, modified) = item?;
            report.checked += 1;
            if modified > cutoff {
                report.kept_young += 1;
            } else {
                batch.push(rname);
            }
        }
        if batch.len() >= PAGE || (end && !batch.is_empty()) {
            let names = std::mem::take(&mut batch);
            let orphans = store
                .read(move |s| -> Result<Vec<String>, StoreError> {
                    let mut out = Vec::new();
                    for r in names {
                        if !s.location_in_use(&r)? {
                            out.push(r);
                        }
                    }
                    Ok(out)
                })
                .await?;
            for rname in orphans {
                if !dry_run {
                    blobs.delete(&rname).await?;
                }
                report.removed.push(rname);
            }
        }
        if end {
            break;
        }
    }
    if !dry_run {
        report.staging_removed = blobs.remove_stale_uploads(grace).await?;
    }
    Ok(report)
}

/// One problem `vellum fsck` found.
#[derive(Debug)]
pub struct Finding {
    pub rname: String,
    pub problem: String,
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs: u64,
    pub bytes: u64,
    pub events: u64,
    pub findings: Vec<Finding>,
}

async fn check_blob(blobs: &BlobStore, row: &BlobRow) -> Result<(u64, String), BlobError> {
    let reader = blobs
        .open_recorded(
            &row.rname,
            row.location(),
            row.algorithm,
            row.wrapped.as_ref(),
            row.inline.clone(),
        )
        .await?;
    BlobStore::hash_all(reader).await
}

/// Every blob row, a page at a time in rname order, each page read in its own snapshot.
struct BlobPages<'a> {
    store: &'a Store,
    after: Option<String>,
}

impl<'a> BlobPages<'a> {
    fn new(store: &'a Store) -> Self {
        BlobPages { store, after: None }
    }

    /// The next page; `None` after the last.
    async fn next(&mut self) -> anyhow::Result<Option<Vec<BlobRow>>> {
        let a = self.after.clone();
        let rows = self
            .store
            .read(move |s| s.blobs_after(a.as_deref(), PAGE))
            .await
            .map_err(|e: StoreError| anyhow::anyhow!(e))?;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        self.after = Some(last.rname.clone());
        Ok(Some(rows))
    }
}

/// Decrypts and re-hashes every blob, comparing with the recorded size and sha256plain, and
/// checks that every event decodes and names a blob that is recorded.
pub async fn fsck(store: &Store, blobs: &BlobStore) -> anyhow::Result<FsckReport> {
    let mut report = FsckReport::default();
    let check = store.check_events().await?;
    report.events = check.events;
    for (what, problem) in check.problems {
        report.findings.push(Finding {
            rname: what,
            problem,
        });
    }
    let mut pages = BlobPages::new(store);
    while let Some(rows) = pages.next().await? {
        for row in rows {
            report.blobs += 1;
            match check_blob(blobs, &row).await {
                Ok((size, sha)) if size == row.size && sha == row.sha256plain => {
                    report.bytes += size;
                }
                Ok((size, sha)) => report.findings.push(Finding {
                    rname: row.rname.clone(),
                    problem: format!(
                        "content is {size} bytes with sha256 {sha}; recorded {} bytes with {}",
                        row.size, row.sha256plain
                    ),
                }),
                Err(e) => report.findings.push(Finding {
                    rname: row.rname.clone(),
                    problem: e.to_string(),
                }),
            }
        }
    }
    Ok(report)
}

#[derive(Debug, Default)]
pub struct RekeyReport {
    pub rewrapped: u64,
    pub already: u64,
    pub failed: Vec<Finding>,
}

/// Re-wraps every data key not under the active master key, a page per transaction. Blobs
/// are not touched (their data keys do not change), and each row is either the old or the
/// new wrapping, both of which a server configured with both keys can unwrap: reads keep
/// working throughout.
pub async fn rekey(store: &Store, blobs: &BlobStore) -> anyhow::Result<RekeyReport> {
    let mut report = RekeyReport::default();
    let keys = blobs.keys_arc();
    let mut pages = BlobPages::new(store);
    while let Some(rows) = pages.next().await? {
        let mut updates = Vec::new();
        for row in rows {
            let Some(w) = &row.wrapped else { continue };
            if !keys.needs_rewrap(&w.key_id) {
                report.already += 1;
                continue;
            }
            match keys.rewrap(
                &w.key_id,
                &w.encrypteddata,
                &w.encryptednonce,
                row.rname.as_bytes(),
            ) {
                Ok(new) => updates.push((row.rname.clone(), w.clone(), new)),
                Err(e) => report.failed.push(Finding {
                    rname: row.rname.clone(),
                    problem: e.to_string(),
                }),
            }
        }
        let n = updates.len() as u64;
        if n > 0 {
            store
                .write(move |ctx| -> Result<(), StoreError> {
                    for (rname, was, w) in &updates {
                        // A re-encryption that switched the key meanwhile wins: its key
                        // is wrapped under the active master key already.
                        ctx.rewrap_blob(rname, was, w)?;
                    }
                    Ok(())
                })
                .await?;
        }
        report.rewrapped += n;
    }
    Ok(report)
}

/// The steps of a re-encryption, in order, as [`reencrypt`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReencryptStep {
    /// The content is sealed under a fresh data key (a new object, durable; or new inline
    /// bytes in memory); the store still names the old key.
    Sealed,
    /// One metadata transaction switched the key and the location: reads now use the new.
    Switched,
    /// The old object is deleted (stored blobs only).
    OldDeleted,
}

/// What [`reencrypt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reencrypted {
    /// Under a fresh data key: in the object `location`, or inline (`None`).
    Done { location: Option<String> },
    /// Nothing to do: the blob is gone (purged), stored unencrypted, or its key changed
    /// while this ran (another re-encryption or a rekey won; the new object is deleted).
    Skipped(&'static str),
}

/// A blob sealed afresh, not switched to yet: what [`seal_afresh`] made.
#[derive(Debug)]
pub struct Sealed {
    pub rname: String,
    /// The key the store must still name for the switch to apply.
    pub was: crate::crypto::Wrapped,
    pub switch: crate::store::BlobSwitch,
    /// The object its bytes lay in (stored blobs), to delete after the switch.
    pub old_location: Option<String>,
    /// The new object (stored blobs), to delete if the switch does not apply.
    pub new_location: Option<String>,
    /// The new object while it is not yet durable: switch to it only after
    /// [`BlobStore::make_durable`] took this and said Ok.
    pub pending: Option<crate::blob::PendingObject>,
}

/// The first half of a re-encryption: the content of `row` decrypted with its key and sealed
/// under a fresh one, into a new object (durable once [`BlobStore::make_durable`] has taken
/// its `pending`) or new inline bytes, checked against the
/// recorded hash as it is sealed (a blob that does not decrypt to what was stored is never
/// switched to). `None`: nothing to do (stored unencrypted).
pub async fn seal_afresh(blobs: &BlobStore, row: &BlobRow) -> anyhow::Result<Option<Sealed>> {
    let Some(was) = row.wrapped.clone() else {
        return Ok(None);
    };
    let old_location = row.location().to_string();
    let reader = blobs
        .open_recorded(
            &row.rname,
            &old_location,
            row.algorithm,
            Some(&was),
            row.inline.clone(),
        )
        .await?;
    if row.inline.is_some() {
        let size = reader.size();
        let pieces: Vec<bytes::Bytes> = reader
            .read_range(0..size)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let info = blobs.seal_inline(&row.rname, row.algorithm, &pieces, Some(&row.sha256plain))?;
        let (Some(stored), Some(wrapped)) = (info.inline, info.wrapped) else {
            anyhow::bail!("sealing {} gave no inline bytes or no key", row.rname);
        };
        return Ok(Some(Sealed {
            rname: row.rname.clone(),
            was,
            switch: crate::store::BlobSwitch::Inline { stored, wrapped },
            old_location: None,
            new_location: None,
            pending: None,
        }));
    }
    let location = BlobStore::new_rname();
    let resealed = blobs.reseal(reader, &location, &row.sha256plain).await?;
    let Some(wrapped) = resealed.info.wrapped else {
        anyhow::bail!("sealing {} gave no key", row.rname);
    };
    Ok(Some(Sealed {
        rname: row.rname.clone(),
        was,
        switch: crate::store::BlobSwitch::Stored {
            location: location.clone(),
            wrapped,
        },
        old_location: Some(old_location),
        new_location: Some(location),
        pending: resealed.pending,
    }))
}

/// Re-encrypts blob `rname` under a fresh data key: the content is decrypted with the old
/// key and sealed with a new one into a new object (inline content is re-sealed in place);
/// one metadata transaction switches the wrapped key and the location together, if the
/// key is still the one read; then the old object is deleted once no download still
/// reads it (or after `max_wait`). The rname stays the blob's identity (its envelope's
/// associated data), so no event changes. A crash at any point leaves the blob readable
/// under exactly one key: before the switch the old pair stands and the new object is an
/// orphan; after it the new pair stands and the old object is. `vellum gc` removes either.
/// `step` is told of each step as it completes.
pub async fn reencrypt(
    store: &Store,
    blobs: &BlobStore,
    rname: &str,
    max_wait: Duration,
    step: &(dyn Fn(ReencryptStep) + Send + Sync),
) -> anyhow::Result<Reencrypted> {
    let name = rname.to_string();
    let Some(row) = store.read(move |s| s.blob(&name)).await? else {
        return Ok(Reencrypted::Skipped("no such blob"));
    };
    let Some(mut sealed) = seal_afresh(blobs, &row).await? else {
        return Ok(Reencrypted::Skipped("stored unencrypted"));
    };
    if let Some(pending) = sealed.pending.take() {
        if let Some(Err(e)) = blobs.make_durable(vec![pending]).await.pop() {
            return Err(e.into());
        }
    }
    step(ReencryptStep::Sealed);
    let (name, was, switch) = (
        sealed.rname.clone(),
        sealed.was.clone(),
        sealed.switch.clone(),
    );
    let switched = store
        .write(move |ctx| {
            let at = ctx.next_tstamp();
            ctx.switch_blob(&name, &was, &switch, at)
        })
        .await?;
    if !switched {
        if let Some(location) = &sealed.new_location {
            blobs.delete(location).await?;
        }
        return Ok(Reencrypted::Skipped("its key changed meanwhile"));
    }
    step(ReencryptStep::Switched);
    if let Some(old) = &sealed.old_location {
        blobs.delete_when_unread(old, max_wait).await?;
        step(ReencryptStep::OldDeleted);
    }
    Ok(Reencrypted::Done {
        location: sealed.new_location,
    })
}
