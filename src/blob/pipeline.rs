//! The upload pipeline: SHA-256 of the plaintext on one thread, the chunked envelope on
//! another, while the calling task reads the body, so that one upload keeps both cores of a
//! small machine busy.
//!
//! ```text
//! caller ──batch──▶ [hash thread] ──batch──▶ [seal thread] ──spent batch (and sealed bytes)──▶ caller
//!  (body)             SHA-256                  AES-256-GCM; a local blob: writes its file
//! ```
//!
//! The plaintext is gathered into batches of about [`BATCH`] bytes (the body's own pieces, not
//! copies). An upload that ends within its first batch is hashed and sealed on the calling
//! task: a thread hand-off would cost more than the work. At its first full batch the pipeline
//! starts its two threads. Each batch goes through both in turn, so the threads work on
//! different batches at once, and comes back to the caller, which frees it where it was
//! allocated. The seal thread seals into a buffer of its own (one copy of the plaintext, the
//! one sealed in place). For a local blob it appends that buffer to the blob's staging file
//! itself (`local.rs`: the disk works during the upload) and leaves the synced file to the
//! part writer to move into place once the hash is checked; for S3 the buffers go back to the
//! caller's part writer and return to the seal thread once written. `blobalgorithm: "none"`
//! has no seal thread: its pieces go to the part writer as they arrive.
//!
//! Memory, per upload, beyond what the HTTP layer holds: the batch being gathered ([`BATCH`]
//! plus one piece of the body); at most [`QUEUE`] batch waiting for each thread and one being
//! worked on by each; what the threads sent back since the caller last looked (no more than
//! the batches they held, as the caller takes everything back before it queues another): about
//! 4 MiB with 512 KiB batches. S3 adds the part writer's part being filled and the parts being
//! sent (8 MiB each, see `part_writer.rs`).
//!
//! Dedicated threads rather than tokio's blocking pool: each waits on its channel for the
//! whole upload, and a pool whose threads all so waited could never start the partners that
//! would feed them. A dropped or failed upload drops the channels; the threads then finish
//! what they hold and end (the seal thread's unfinished file is removed).
//!
//! Why, and what it gave (1 GiB upload, 2-core VM): hashing (SHA-NI, 1.7-1.9 GB/s on one
//! core) and sealing used to share the calling task with the body, and the blob was written
//! through `object_store`, whose final fsync wrote the whole GiB while the client waited:
//! 484-536 MB/s. With this pipeline, AWS-LC's sealing and the seal thread writing the file
//! with background syncs: 811-858 MB/s, alternating with that build (see the README for
//! `benches/blobs.sh`'s figures). No thread is the bound any more: the whole upload's CPU
//! (about 1.8 s of the server's, plus curl's 0.4 s) on two shared cores is; SHA-256 alone is
//! a third of it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as pool_channel;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::local::StagingFile;
use super::part_writer::PartWriter;
use super::BlobError;
use crate::crypto::{ChunkSealer, CryptoError, TAG_LEN};

/// Plaintext bytes per batch handed to the threads.
const BATCH: usize = 512 << 10;
/// Batches waiting for each thread beyond the one it works on.
const QUEUE: usize = 1;

/// Pieces of plaintext, in order.
type Batch = Vec<Bytes>;

/// What comes back to the calling task, in order.
enum Back {
    /// Sealed chunks, to store next.
    Sealed(Bytes),
    /// A batch both threads are done with.
    Spent(Batch),
}

pub(crate) struct Pipeline {
    batch: Batch,
    batch_len: usize,
    /// `blobalgorithm: "none"`: pieces are stored as they are.
    plain: bool,
    /// Where the seal thread writes the blob itself (a local blob), instead of sending the
    /// sealed bytes back to the part writer.
    file: Option<PathBuf>,
    stage: Stage,
}

enum Stage {
    /// Nothing handed off yet: the first batch is being gathered.
    Inline {
        hasher: Sha256,
        sealer: Option<Box<ChunkSealer>>,
    },
    Threads(Threads),
    /// After a failure to start the threads.
    Failed,
}

struct Threads {
    /// To the hash thread.
    input: mpsc::Sender<Batch>,
    /// From the last thread. Unbounded, yet bounded by construction: the threads only send
    /// back what was queued, and the caller takes everything back before it queues more.
    back: mpsc::UnboundedReceiver<Back>,
    hashed: oneshot::Receiver<Sha256>,
    /// What the seal thread leaves once its input ends, or the error that stopped it; `None`
    /// for plaintext blobs.
    sealed: Option<oneshot::Receiver<Result<SealEnd, BlobError>>>,
    /// Set before the input is closed at the end of the body: the seal thread then completes
    /// the file. Closed without it (a failed or dropped upload), the file is removed.
    finishing: Arc<AtomicBool>,
}

/// What the seal thread leaves.
enum SealEnd {
    /// The sealer, for the final chunk (its sealed bytes went back to the caller).
    Sealer(ChunkSealer),
    /// The whole blob, final chunk included, written and synced.
    File(StagingFile),
}

fn thread_failed(what: &str) -> BlobError {
    BlobError::Io(std::io::Error::other(format!(
        "the upload's {what} thread failed"
    )))
}

impl Pipeline {
    /// A pipeline that seals with `sealer` (encrypted blobs) or passes the plaintext through.
    /// With `file`, a blob of more than one batch is written there by the seal thread (see
    /// `local.rs`); the bytes already given to the part writer (the header) go first.
    pub(crate) fn new(sealer: Option<ChunkSealer>, file: Option<PathBuf>) -> Self {
        Self {
            batch: Vec::new(),
            batch_len: 0,
            plain: sealer.is_none(),
            file: file.filter(|_| sealer.is_some()),
            stage: Stage::Inline {
                hasher: Sha256::new(),
                sealer: sealer.map(Box::new),
            },
        }
    }

    /// Takes `piece` for hashing and sealing; its sealed bytes reach `writer` a few batches
    /// later, all of them by [`Pipeline::finish`]. Waits while the threads are [`QUEUE`]
    /// batches behind.
    pub(crate) async fn push(
        &mut self,
        piece: Bytes,
        writer: &mut PartWriter,
    ) -> Result<(), BlobError> {
        if piece.is_empty() {
            return Ok(());
        }
        if self.plain {
            writer.push(piece.clone());
        }
        self.batch_len += piece.len();
        self.batch.push(piece);
        if self.batch_len >= BATCH {
            if matches!(self.stage, Stage::Inline { .. }) {
                let file = self.file.take().map(|dest| (dest, writer.take_pending()));
                self.stage =
                    start_threads(std::mem::replace(&mut self.stage, Stage::Failed), file)?;
            }
            let batch = self.take_batch();
            match &mut self.stage {
                Stage::Threads(threads) => threads.hand_off(batch, writer).await?,
                _ => return Err(thread_failed("hash")),
            }
        }
        Ok(())
    }

    fn take_batch(&mut self) -> Batch {
        self.batch_len = 0;
        std::mem::take(&mut self.batch)
    }

    /// Stops a failed upload: the threads end, and a local blob's unfinished file is removed
    /// before this returns (dropping the pipeline does the same, in the background).
    pub(crate) async fn abort(self) {
        if let Stage::Threads(threads) = self.stage {
            let Threads { input, sealed, .. } = threads;
            drop(input);
            if let Some(sealed) = sealed {
                let _ = sealed.await;
            }
        }
    }

    /// Seals the final chunk into `writer` and returns the SHA-256 of the plaintext (hex).
    pub(crate) async fn finish(mut self, writer: &mut PartWriter) -> Result<String, BlobError> {
        match std::mem::replace(&mut self.stage, Stage::Failed) {
            Stage::Inline { mut hasher, sealer } => {
                for piece in &self.batch {
                    hasher.update(piece);
                }
                if let Some(mut sealer) = sealer {
                    let mut out = vec![0; sealer.sealed_len_bound(self.batch_len)];
                    let mut n = 0;
                    for piece in &self.batch {
                        n += sealer
                            .seal_into(piece, &mut out[n..])
                            .map_err(BlobError::Crypto)?
                            .1;
                    }
                    out.truncate(n);
                    writer.push(Bytes::from(out));
                    writer.push(Bytes::from(sealer.finish().map_err(BlobError::Crypto)?));
                }
                Ok(hex::encode(hasher.finalize()))
            }
            Stage::Threads(mut threads) => {
                if self.batch_len > 0 {
                    threads.hand_off(self.take_batch(), writer).await?;
                }
                let Threads {
                    input,
                    mut back,
                    hashed,
                    sealed,
                    finishing,
                } = threads;
                finishing.store(true, Ordering::Release);
                drop(input);
                // Everything the threads still hold comes back before they end.
                while let Some(item) = back.recv().await {
                    if let Back::Sealed(bytes) = item {
                        writer.push(bytes);
                        writer.send_full_part().await?;
                    }
                }
                if let Some(sealed) = sealed {
                    match sealed.await.map_err(|_| thread_failed("seal"))?? {
                        SealEnd::Sealer(sealer) => {
                            writer.push(Bytes::from(sealer.finish().map_err(BlobError::Crypto)?))
                        }
                        SealEnd::File(file) => writer.adopt(file),
                    }
                }
                let hasher = hashed.await.map_err(|_| thread_failed("hash"))?;
                Ok(hex::encode(hasher.finalize()))
            }
            Stage::Failed => Err(thread_failed("hash")),
        }
    }
}

/// Moves the hasher and the sealer of an `Inline` stage onto their threads; with `file`, the
/// seal thread writes the blob to that path, after the bytes given.
fn start_threads(stage: Stage, file: Option<(PathBuf, Vec<Bytes>)>) -> Result<Stage, BlobError> {
    let Stage::Inline { hasher, sealer } = stage else {
        return Err(thread_failed("hash"));
    };
    let (input, hash_input) = mpsc::channel::<Batch>(QUEUE);
    let (to_caller, back) = mpsc::unbounded_channel();
    let (hash_done, hashed) = oneshot::channel();
    let finishing = Arc::new(AtomicBool::new(false));
    let (next, sealed) = match sealer {
        None => (Next::Caller(to_caller), None),
        Some(sealer) => {
            let (to_seal, seal_input) = mpsc::channel::<Batch>(QUEUE);
            let (seal_done, sealed) = oneshot::channel();
            let finishing = Arc::clone(&finishing);
            let rt = tokio::runtime::Handle::try_current().ok();
            std::thread::Builder::new()
                .name("vellum-seal".into())
                .spawn(move || {
                    let end = match file {
                        None => seal_batches(*sealer, seal_input, to_caller)
                            .map(SealEnd::Sealer)
                            .map_err(BlobError::Crypto),
                        Some((dest, head)) => {
                            let sink = FileSink {
                                dest,
                                head,
                                finishing,
                                rt,
                            };
                            seal_to_file(*sealer, seal_input, to_caller, sink).map(SealEnd::File)
                        }
                    };
                    let _ = seal_done.send(end);
                })
                .map_err(BlobError::Io)?;
            (Next::Seal(to_seal), Some(sealed))
        }
    };
    std::thread::Builder::new()
        .name("vellum-sha256".into())
        .spawn(move || {
            let _ = hash_done.send(hash_batches(hasher, hash_input, next));
        })
        .map_err(BlobError::Io)?;
    Ok(Stage::Threads(Threads {
        input,
        back,
        hashed,
        sealed,
        finishing,
    }))
}

impl Threads {
    /// Gives `writer` what came back, then queues `batch` (waiting while the queue is full).
    async fn hand_off(&mut self, batch: Batch, writer: &mut PartWriter) -> Result<(), BlobError> {
        while let Ok(item) = self.back.try_recv() {
            match item {
                Back::Sealed(bytes) => {
                    writer.push(bytes);
                    writer.send_full_part().await?;
                }
                // Freed here, on the task that took the memory for it.
                Back::Spent(batch) => drop(batch),
            }
        }
        if self.input.send(batch).await.is_ok() {
            return Ok(());
        }
        // The hash thread stopped: it failed, or the seal thread after it did. Say why.
        // (Taken: a receiver is awaited once; `abort` then has nothing left to wait for.)
        Err(match self.sealed.take() {
            Some(sealed) => match sealed.await {
                Ok(Err(e)) => e,
                _ => thread_failed("seal"),
            },
            None => thread_failed("hash"),
        })
    }
}

/// Where the hash thread sends a batch it has hashed.
enum Next {
    Seal(mpsc::Sender<Batch>),
    Caller(mpsc::UnboundedSender<Back>),
}

/// The hash thread: every batch, in order, until the caller drops its sender (or the next
/// stage is gone).
fn hash_batches(mut hasher: Sha256, mut input: mpsc::Receiver<Batch>, next: Next) -> Sha256 {
    while let Some(batch) = input.blocking_recv() {
        for piece in &batch {
            hasher.update(piece);
        }
        let gone = match &next {
            Next::Seal(seal) => seal.blocking_send(batch).is_err(),
            Next::Caller(caller) => caller.send(Back::Spent(batch)).is_err(),
        };
        if gone {
            break;
        }
    }
    hasher
}

/// The seal thread: seals every batch into pooled buffers and sends each buffer back when it
/// is full (and the last one when the input ends), with each batch once it is sealed. Returns
/// the sealer, which holds the final chunk's plaintext.
fn seal_batches(
    mut sealer: ChunkSealer,
    mut input: mpsc::Receiver<Batch>,
    back: mpsc::UnboundedSender<Back>,
) -> Result<ChunkSealer, CryptoError> {
    let mut pool = OutPool::new(&sealer);
    let mut out = pool.take();
    let mut used = 0;
    while let Some(batch) = input.blocking_recv() {
        for piece in &batch {
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let (took, wrote) = sealer.seal_into(rest, &mut out[used..])?;
                used += wrote;
                rest = &rest[took..];
                if !rest.is_empty() {
                    // `out` is full.
                    let full = std::mem::replace(&mut out, pool.take());
                    if back.send(Back::Sealed(pool.bytes(full, used))).is_err() {
                        return Ok(sealer); // The upload is gone.
                    }
                    used = 0;
                }
            }
        }
        if back.send(Back::Spent(batch)).is_err() {
            return Ok(sealer);
        }
    }
    if used > 0 {
        let _ = back.send(Back::Sealed(pool.bytes(out, used)));
    }
    Ok(sealer)
}

/// Where the seal thread of a local blob writes.
struct FileSink {
    dest: PathBuf,
    /// Bytes that go first (the envelope's header).
    head: Vec<Bytes>,
    finishing: Arc<AtomicBool>,
    /// Runs the file's background syncs.
    rt: Option<tokio::runtime::Handle>,
}

/// The seal thread of a local blob: seals every batch into one buffer and appends it to the
/// blob's staging file whenever it is full (see `local.rs`), sending each batch back once it
/// is sealed. At the end of the body it seals the final chunk, writes the rest and syncs the
/// file; the caller commits it once the hash is checked. A failed write stops the thread
/// (its input closes, and the upload fails with that error).
fn seal_to_file(
    mut sealer: ChunkSealer,
    mut input: mpsc::Receiver<Batch>,
    back: mpsc::UnboundedSender<Back>,
    sink: FileSink,
) -> Result<StagingFile, BlobError> {
    let io = |e: std::io::Error| {
        BlobError::backend(
            "",
            object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            },
        )
    };
    let mut file = StagingFile::create(sink.dest, sink.rt).map_err(io)?;
    for bytes in &sink.head {
        file.append(bytes).map_err(io)?;
    }
    let cs = sealer.chunk_size() as usize;
    let mut out = vec![0; (BATCH / cs).max(1) * (cs + TAG_LEN)];
    let mut used = 0;
    while let Some(batch) = input.blocking_recv() {
        for piece in &batch {
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let (took, wrote) = sealer
                    .seal_into(rest, &mut out[used..])
                    .map_err(BlobError::Crypto)?;
                used += wrote;
                rest = &rest[took..];
                if !rest.is_empty() {
                    // `out` is full.
                    file.append(&out[..used]).map_err(io)?;
                    used = 0;
                }
            }
        }
        if back.send(Back::Spent(batch)).is_err() {
            break; // The upload is gone.
        }
    }
    if !sink.finishing.load(Ordering::Acquire) {
        // The upload failed or was dropped: dropping the file removes it.
        return Err(thread_failed("seal"));
    }
    file.append(&out[..used]).map_err(io)?;
    file.append(&sealer.finish().map_err(BlobError::Crypto)?)
        .map_err(io)?;
    file.sync().map_err(io)?;
    Ok(file)
}

/// The seal thread's output buffers, each room for [`BATCH`] bytes of plaintext sealed (or
/// one chunk, if chunks are larger). A buffer comes back here when the `Bytes` made of it is
/// dropped (once written), so an upload takes memory for as many buffers as are in flight at
/// once, and none per chunk.
struct OutPool {
    len: usize,
    free: pool_channel::Receiver<Vec<u8>>,
    home: pool_channel::Sender<Vec<u8>>,
}

impl OutPool {
    fn new(sealer: &ChunkSealer) -> Self {
        let cs = sealer.chunk_size() as usize;
        let (home, free) = pool_channel::channel();
        Self {
            len: (BATCH / cs).max(1) * (cs + TAG_LEN),
            free,
            home,
        }
    }

    /// A buffer of `self.len` bytes (its contents are overwritten).
    fn take(&mut self) -> Vec<u8> {
        self.free.try_recv().unwrap_or_else(|_| vec![0; self.len])
    }

    /// `buf[..used]` as `Bytes` that return `buf` here when dropped.
    fn bytes(&self, buf: Vec<u8>, used: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            used,
            home: self.home.clone(),
        })
    }
}

struct Pooled {
    buf: Vec<u8>,
    used: usize,
    home: pool_channel::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.used]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // Fails once the seal thread is gone: the buffer is then freed.
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}
