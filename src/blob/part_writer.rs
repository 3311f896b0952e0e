//! Writing a blob's stored bytes: one `PUT` for a small blob, or the parts of a multipart
//! upload (at most [`PARTS_IN_FLIGHT`] in flight while the next one is filled).

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinSet;

use super::local::StagingFile;
use super::BlobError;

/// Stored bytes per multipart part (S3 wants at least 5 MiB for every part but the last).
/// A blob smaller than this is written with a single `PUT`.
pub(crate) const PART_SIZE: usize = 8 << 20;
/// The part size grows by [`PART_SIZE`] every this many parts, so that S3's 10,000-part limit
/// allows blobs of up to ~440 GiB while ordinary blobs keep small parts (memory).
const PARTS_PER_STEP: u64 = 1000;
/// S3's limit on the number of parts of a multipart upload.
const MAX_PARTS: u64 = 10_000;
/// Parts being uploaded while the next one is filled: with 8 MiB parts, an upload holds at
/// most ~24 MiB of its own data, whatever the blob's size.
const PARTS_IN_FLIGHT: usize = 2;
/// Size of part number `index` (0-based).
pub(crate) fn part_size(index: u64) -> usize {
    PART_SIZE * (1 + (index / PARTS_PER_STEP) as usize)
}

/// Largest blob (stored bytes) a multipart upload can hold with [`part_size`].
fn max_stored_len() -> u64 {
    (0..MAX_PARTS).map(|i| part_size(i) as u64).sum()
}

/// Accumulates stored bytes and writes them as one `PUT` or as the parts of a multipart upload.
pub(crate) struct PartWriter {
    store: Arc<dyn ObjectStore>,
    location: Path,
    rname: String,
    pending: Vec<Bytes>,
    pending_len: usize,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: JoinSet<object_store::Result<()>>,
    parts: u64,
    /// A final request (the single `PUT`, or the completion) was made: the object may exist.
    maybe_visible: bool,
    /// A local blob the upload pipeline wrote itself, synced, to move into place.
    staged: Option<StagingFile>,
}

impl PartWriter {
    pub(super) fn new(store: Arc<dyn ObjectStore>, location: Path, rname: &str) -> Self {
        Self {
            store,
            location,
            staged: None,
            rname: rname.to_string(),
            pending: Vec::new(),
            pending_len: 0,
            upload: None,
            in_flight: JoinSet::new(),
            parts: 0,
            maybe_visible: false,
        }
    }

    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.pending_len += bytes.len();
            self.pending.push(bytes);
        }
    }

    /// The bytes pushed so far, for a writer of the whole blob (before any part was sent).
    pub(crate) fn take_pending(&mut self) -> Vec<Bytes> {
        debug_assert!(self.upload.is_none() && self.staged.is_none());
        self.pending_len = 0;
        std::mem::take(&mut self.pending)
    }

    /// Takes a local blob written whole and synced by someone else (instead of any bytes
    /// pushed here): [`PartWriter::finish`] moves it into place.
    pub(crate) fn adopt(&mut self, file: StagingFile) {
        self.staged = Some(file);
    }

    fn backend(&self, e: object_store::Error) -> BlobError {
        BlobError::backend(&self.rname, e)
    }

    /// Uploads the pending bytes as a part once they fill one (starting the multipart upload
    /// at the first), after waiting until fewer than [`PARTS_IN_FLIGHT`] parts are in flight.
    pub(super) async fn send_full_part(&mut self) -> Result<(), BlobError> {
        if self.pending_len >= part_size(self.parts) {
            self.send_part().await?;
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<(), BlobError> {
        if self.parts >= MAX_PARTS {
            return Err(BlobError::TooLarge {
                limit: max_stored_len(),
            });
        }
        if self.upload.is_none() {
            let upload = self
                .store
                .put_multipart(&self.location)
                .await
                .map_err(|e| self.backend(e))?;
            self.upload = Some(upload);
        }
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
        self.pending_len = 0;
        self.parts += 1;
        let part = self
            .upload
            .as_mut()
            .expect("started above")
            .put_part(payload);
        self.in_flight.spawn(part);
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), BlobError> {
        match self.in_flight.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(self.backend(e)),
            Some(Err(e)) => Err(BlobError::Io(std::io::Error::other(e))),
        }
    }

    /// Writes what is pending and makes the object visible (and durable).
    pub(super) async fn finish(&mut self) -> Result<(), BlobError> {
        if let Some(file) = self.staged.take() {
            self.maybe_visible = true;
            return match tokio::task::spawn_blocking(move || file.commit()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(self.backend(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })),
                Err(e) => Err(BlobError::Io(std::io::Error::other(e))),
            };
        }
        if self.upload.is_none() {
            let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
            self.pending_len = 0;
            self.maybe_visible = true;
            self.store
                .put(&self.location, payload)
                .await
                .map_err(|e| self.backend(e))?;
            return Ok(());
        }
        if self.pending_len > 0 {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        self.maybe_visible = true;
        let mut upload = self.upload.take().expect("checked above");
        match upload.complete().await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.upload = Some(upload);
                Err(self.backend(e))
            }
        }
    }

    /// After an error: stops the parts in flight, aborts the multipart upload, and deletes the
    /// object if a final request may have created it. Best effort; failures are logged.
    pub(super) async fn clean_up(&mut self) {
        self.in_flight.shutdown().await;
        if let Some(file) = self.staged.take() {
            let discarded = tokio::task::spawn_blocking(move || file.discard()).await;
            if let Ok(Err(e)) = discarded {
                tracing::warn!(rname = %self.rname, error = %e, "removing a failed upload's file failed; `vellum gc` will remove it");
            }
        }
        self.pending.clear();
        self.pending_len = 0;
        if let Some(mut upload) = self.upload.take() {
            if let Err(e) = upload.abort().await {
                if !self.maybe_visible {
                    tracing::warn!(rname = %self.rname, error = %e, "aborting a failed blob upload failed");
                }
            }
        }
        if self.maybe_visible {
            match self.store.delete(&self.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(rname = %self.rname, error = %e, "deleting a failed blob upload failed; `vellum gc` will remove it")
                }
            }
        }
    }
}

impl Drop for PartWriter {
    /// The `put` future was dropped midway: abort an unfinished multipart upload in the
    /// background (dropping `in_flight` cancels its parts).
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}
