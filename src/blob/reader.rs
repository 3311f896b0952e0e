//! [`BlobReader`]: Range reads that fetch and decrypt only the chunks they cover.
//!
//! A read is a producer and a consumer joined by a small bounded channel: the producer (a
//! task; for a local file, ~1 MiB batches of whole sealed chunks read straight into their
//! buffers and decrypted on blocking threads, two at a time) fetches the stored bytes with one
//! ranged request and decrypts them chunk by chunk;
//! the consumer, the returned stream, counts what it hands out. So fetching and decrypting run
//! beside the HTTP layer's writing, and a reader holds a few chunks at most. Every chunk is
//! authenticated before any of its bytes is handed out; a failure, or a producer that stops
//! short for any reason, is an error item and ends the stream.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetResultPayload, ObjectStore};
use tokio::sync::mpsc;

use super::BlobError;
use super::FIRST_BYTE_TIMEOUT;
use crate::crypto::{
    BlobAlgorithm, BlobLayout, ChunkOpener, CryptoError, Decryptor, Dek, HEADER_LEN,
};

/// Decrypted pieces (one chunk each) queued between producer and consumer.
const CHANNEL_DEPTH: usize = 8;
/// Read size for plaintext (`blobalgorithm: "none"`) local files.
const PLAIN_BLOCK: u64 = 256 * 1024;
/// Stored bytes a local-file producer reads and decrypts per trip to a blocking thread.
const FILE_BATCH: u64 = 1 << 20;
/// Local-file batches being read and decrypted at once.
const FILE_BATCHES_IN_FLIGHT: usize = 2;

/// An opened blob. Made by [`super::BlobStore::open`]. Cloning is cheap (the stored bytes
/// already fetched are shared).
#[derive(Clone)]
pub struct BlobReader {
    store: Arc<dyn ObjectStore>,
    location: Path,
    rname: Arc<str>,
    stored_len: u64,
    /// The first stored bytes, fetched by `open` (header and first chunk).
    head: Bytes,
    kind: Kind,
    /// Holds the object open in its store's registry until the last clone is dropped, so a
    /// re-encryption deletes the old object only after every download of it has ended.
    _open: Option<Arc<super::open::OpenGuard>>,
}

#[derive(Clone)]
enum Kind {
    Plain,
    Chunked {
        dec: Box<Decryptor>,
        layout: BlobLayout,
    },
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("rname", &self.rname)
            .field("algorithm", &self.algorithm())
            .field("size", &self.size())
            .field("stored_len", &self.stored_len)
            .finish_non_exhaustive()
    }
}

fn truncated(rname: &str, what: &'static str) -> BlobError {
    BlobError::integrity(rname, CryptoError::Truncated(what))
}

impl BlobReader {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        location: Path,
        rname: &str,
        stored_len: u64,
        head: Bytes,
        dek: Option<&Dek>,
    ) -> Result<Self, BlobError> {
        let kind = match dek {
            None => Kind::Plain,
            Some(dek) => {
                if head.len() < HEADER_LEN {
                    return Err(truncated(
                        rname,
                        "the stored object is shorter than a header",
                    ));
                }
                let integrity = |e| BlobError::integrity(rname, e);
                let dec = Decryptor::new(dek, rname.as_bytes(), &head[..HEADER_LEN])
                    .map_err(integrity)?;
                let layout = BlobLayout::from_ciphertext_len(stored_len, dec.chunk_size())
                    .map_err(integrity)?;
                Kind::Chunked {
                    dec: Box::new(dec),
                    layout,
                }
            }
        };
        Ok(Self {
            store,
            location,
            rname: rname.into(),
            stored_len,
            head,
            kind,
            _open: None,
        })
    }

    /// Registers the reader as reading its object (see [`super::BlobStore::delete_when_unread`]).
    pub(crate) fn holding(mut self, guard: super::open::OpenGuard) -> Self {
        self._open = Some(Arc::new(guard));
        self
    }

    /// Plaintext size, from the stored object's length (no need to read the blob). A blob cut
    /// short at a chunk boundary shows a smaller size here and fails when its (new) last chunk
    /// is read; callers that know the recorded `size` can compare.
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::Plain => self.stored_len,
            Kind::Chunked { layout, .. } => layout.plain_len(),
        }
    }

    /// How the blob is stored.
    pub fn algorithm(&self) -> BlobAlgorithm {
        match self.kind {
            Kind::Plain => BlobAlgorithm::None,
            Kind::Chunked { .. } => BlobAlgorithm::Chunked,
        }
    }

    /// The blob's name.
    pub fn rname(&self) -> &str {
        &self.rname
    }

    /// Length of the stored object (header and tags included when encrypted).
    pub fn stored_len(&self) -> u64 {
        self.stored_len
    }

    /// The stored object as an open file, when the backend keeps it in one (local blobs), for
    /// [`BlobReader::open_chunk_into`]; `None` otherwise.
    pub(crate) async fn stored_file(&self) -> Result<Option<std::fs::File>, BlobError> {
        let r = self
            .store
            .get_opts(&self.location, GetOptions::new())
            .await
            .map_err(|e| BlobError::backend(&self.rname, e))?;
        if r.meta.size != self.stored_len {
            return Err(truncated(
                &self.rname,
                "the stored object changed while it was being read",
            ));
        }
        Ok(match r.payload {
            GetResultPayload::File(file, _) => Some(file),
            GetResultPayload::Stream(_) => None,
        })
    }

    /// Chunks of an encrypted blob (0 for one stored as it is).
    pub(crate) fn chunk_count(&self) -> u64 {
        match &self.kind {
            Kind::Plain => 0,
            Kind::Chunked { layout, .. } => layout.chunk_count(),
        }
    }

    /// Reads sealed chunk `index` of an encrypted blob from `file` (its stored object, see
    /// [`BlobReader::stored_file`]) into `buf`, replacing what `buf` held, and opens it there:
    /// `buf` ends holding the chunk's plaintext. Reusing one `buf` for every chunk of a blob
    /// reads it without allocating. Blocking.
    pub(crate) fn open_chunk_into(
        &self,
        file: &std::fs::File,
        index: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), BlobError> {
        let Kind::Chunked { dec, layout } = &self.kind else {
            return Err(BlobError::Io(std::io::Error::other(
                "chunks of a blob stored unencrypted",
            )));
        };
        let rname = &*self.rname;
        let stored = layout
            .ciphertext_range_of_chunk(index)
            .map_err(|e| BlobError::integrity(rname, e))?;
        buf.resize((stored.end - stored.start) as usize, 0);
        read_stored(rname, file, buf, stored.start)?;
        dec.open_chunk_in_place(index, buf, layout.is_last_chunk(index))
            .map_err(|e| BlobError::integrity(rname, e))
    }

    /// The plaintext bytes of `range` (clamped to [`BlobReader::size`]; the caller validates
    /// it first), as a stream of pieces of at most one chunk. Only the chunks the range covers
    /// are fetched (one ranged request, none when they were already fetched by `open`) and
    /// decrypted; memory stays at a few chunks whatever the range. Any integrity failure is an
    /// `Err` item and the last item: abort the transfer on it. Must be polled within a Tokio
    /// runtime.
    pub fn read_range(
        self,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, BlobError>> + Send + 'static {
        let size = self.size();
        let end = range.end.min(size);
        let start = range.start.min(end);
        let consumer = Consumer {
            rname: self.rname.clone(),
            remaining: end - start,
            state: if start < end {
                State::Start(Box::new(Job::new(self, start..end)))
            } else {
                State::Done
            },
        };
        futures_util::stream::unfold(consumer, |mut c| async move {
            c.next().await.map(|item| (item, c))
        })
    }
}

/// One Range read, before it starts.
struct Job {
    blob: BlobReader,
    /// Plaintext wanted.
    want: Range<u64>,
    /// Stored bytes to fetch.
    crange: Range<u64>,
    /// Chunks covered (encrypted blobs).
    chunks: (u64, u64),
}

impl Job {
    fn new(r: BlobReader, want: Range<u64>) -> Self {
        let (crange, chunks) = match &r.kind {
            Kind::Plain => (want.clone(), (0, 0)),
            Kind::Chunked { layout, .. } => {
                let chunks = layout
                    .chunks_for_plain_range(want.clone())
                    .expect("a non-empty range inside the blob");
                let (first, last) = (*chunks.start(), *chunks.end());
                let crange = layout
                    .ciphertext_range_for_chunks(first, last)
                    .expect("chunks inside the blob");
                (crange, (first, last))
            }
        };
        Self {
            blob: r,
            want,
            crange,
            chunks,
        }
    }

    fn start(self) -> Result<State, BlobError> {
        if self.crange.end <= self.blob.head.len() as u64 {
            // Already fetched by `open` (a small blob, or a range in its first chunk).
            let bytes = self
                .blob
                .head
                .slice(self.crange.start as usize..self.crange.end as usize);
            let mut dec = StreamDecoder::new(&self)?;
            let mut out = Vec::new();
            dec.push(bytes, &mut out)?;
            dec.finish(&mut out)?;
            return Ok(State::Items(out.into_iter()));
        }
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(async move {
            if let Err(e) = self.fetch(&tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(State::Recv(rx))
    }

    /// Fetches `crange` with one request and feeds the decrypted pieces to `tx`.
    async fn fetch(self, tx: &mpsc::Sender<Result<Bytes, BlobError>>) -> Result<(), BlobError> {
        let get = self.blob.store.get_opts(
            &self.blob.location,
            GetOptions::new().with_range(Some(self.crange.clone())),
        );
        let r = tokio::time::timeout(FIRST_BYTE_TIMEOUT, get)
            .await
            .map_err(|_| BlobError::Timeout(FIRST_BYTE_TIMEOUT))?
            .map_err(|e| BlobError::backend(&self.blob.rname, e))?;
        if r.meta.size != self.blob.stored_len || r.range != self.crange {
            return Err(truncated(
                &self.blob.rname,
                "the stored object changed while it was being read",
            ));
        }
        match r.payload {
            GetResultPayload::File(file, _) => self.stream_file(file, tx).await,
            GetResultPayload::Stream(mut stream) => {
                let mut dec = StreamDecoder::new(&self)?;
                let mut out = Vec::new();
                while let Some(piece) = stream.next().await {
                    let piece = piece.map_err(|e| BlobError::backend(&self.blob.rname, e))?;
                    dec.push(piece, &mut out)?;
                    for b in out.drain(..) {
                        if tx.send(Ok(b)).await.is_err() {
                            return Ok(()); // the reader went away
                        }
                    }
                }
                dec.finish(&mut out)?;
                for b in out {
                    if tx.send(Ok(b)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            }
        }
    }

    /// The local-file producer: reads and decrypts batches of about [`FILE_BATCH`] stored
    /// bytes on blocking threads, [`FILE_BATCHES_IN_FLIGHT`] at a time (chunks are independent,
    /// so two cores decrypt at once), and queues their pieces in order from here, so a slow
    /// reader holds no thread while it waits.
    async fn stream_file(
        self,
        file: std::fs::File,
        tx: &mpsc::Sender<Result<Bytes, BlobError>>,
    ) -> Result<(), BlobError> {
        let file = Arc::new(file);
        let job = Arc::new(self);
        // Batches as stored ranges (plain) or chunk ranges (encrypted).
        let (mut next, end, step) = match &job.blob.kind {
            Kind::Plain => (job.crange.start, job.crange.end, FILE_BATCH),
            Kind::Chunked { layout, .. } => (
                job.chunks.0,
                job.chunks.1 + 1,
                (FILE_BATCH / u64::from(layout.chunk_size())).max(1),
            ),
        };
        let mut in_flight = std::collections::VecDeque::new();
        loop {
            while in_flight.len() < FILE_BATCHES_IN_FLIGHT && next < end {
                let batch = next..(next + step).min(end);
                next = batch.end;
                let (job, file) = (job.clone(), file.clone());
                in_flight.push_back(tokio::task::spawn_blocking(move || {
                    job.read_batch(&file, batch)
                }));
            }
            let Some(batch) = in_flight.pop_front() else {
                return Ok(());
            };
            let pieces = batch
                .await
                .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
            for piece in pieces {
                if tx.send(Ok(piece)).await.is_err() {
                    return Ok(()); // the reader went away
                }
            }
        }
    }

    /// Reads one batch: stored bytes `batch` (plain), or chunks `batch` (encrypted), each
    /// sealed chunk straight into its own buffer, opened in place and cut to the wanted range.
    fn read_batch(&self, file: &std::fs::File, batch: Range<u64>) -> Result<Vec<Bytes>, BlobError> {
        let rname = &*self.blob.rname;
        let read = |offset: u64, len: usize| -> Result<Vec<u8>, BlobError> {
            let mut buf = vec![0u8; len];
            read_stored(rname, file, &mut buf, offset).map(|()| buf)
        };
        let mut out = Vec::new();
        match &self.blob.kind {
            Kind::Plain => {
                let mut at = batch.start;
                while at < batch.end {
                    let n = (batch.end - at).min(PLAIN_BLOCK);
                    out.push(Bytes::from(read(at, n as usize)?));
                    at += n;
                }
            }
            Kind::Chunked { dec, layout } => {
                for index in batch {
                    let stored = layout
                        .ciphertext_range_of_chunk(index)
                        .expect("chunk inside the blob");
                    let mut buf = read(stored.start, (stored.end - stored.start) as usize)?;
                    dec.open_chunk_in_place(index, &mut buf, layout.is_last_chunk(index))
                        .map_err(|e| BlobError::integrity(rname, e))?;
                    out.extend(trim_chunk(layout, &self.want, index, buf));
                }
            }
        }
        Ok(out)
    }
}

/// Fills `buf` from `offset` of blob `rname`'s stored object `file`; an object that ends
/// before is truncated (an integrity error), not an I/O error.
fn read_stored(
    rname: &str,
    file: &std::fs::File,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), BlobError> {
    match read_exact_at(file, buf, offset) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(truncated(rname, "the stored object ended early"))
        }
        Err(e) => Err(BlobError::Io(e)),
    }
}

/// Fills `buf` from `offset` of `file` without moving a shared file position.
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The part of chunk `index`'s plaintext that lies in `want`, if any.
fn trim_chunk(layout: &BlobLayout, want: &Range<u64>, index: u64, plain: Vec<u8>) -> Option<Bytes> {
    let held = layout.plain_range_of_chunk(index);
    let lo = want.start.max(held.start);
    let hi = want.end.min(held.end);
    (lo < hi)
        .then(|| Bytes::from(plain).slice((lo - held.start) as usize..(hi - held.start) as usize))
}

/// Cuts each decrypted chunk, arriving in order from `next`, to the wanted range.
struct ChunkTrim {
    layout: BlobLayout,
    want: Range<u64>,
    next: u64,
}

impl ChunkTrim {
    fn new(layout: BlobLayout, want: Range<u64>, first: u64) -> Self {
        Self {
            layout,
            want,
            next: first,
        }
    }

    fn take(&mut self, plain: Vec<u8>) -> Option<Bytes> {
        self.next += 1;
        trim_chunk(&self.layout, &self.want, self.next - 1, plain)
    }
}

/// Decodes stored bytes arriving in pieces of any size (an S3 response body, or the bytes
/// fetched by `open`).
enum StreamDecoder {
    Plain,
    Chunked {
        opener: Option<Box<ChunkOpener>>,
        trim: ChunkTrim,
        rname: Arc<str>,
    },
}

impl StreamDecoder {
    fn new(job: &Job) -> Result<Self, BlobError> {
        Ok(match &job.blob.kind {
            Kind::Plain => Self::Plain,
            Kind::Chunked { dec, layout } => {
                let (first, last) = job.chunks;
                let opener = ChunkOpener::for_chunks((**dec).clone(), *layout, first, last)
                    .map_err(|e| BlobError::integrity(&job.blob.rname, e))?;
                Self::Chunked {
                    opener: Some(Box::new(opener)),
                    trim: ChunkTrim::new(*layout, job.want.clone(), first),
                    rname: job.blob.rname.clone(),
                }
            }
        })
    }

    fn push(&mut self, piece: Bytes, out: &mut Vec<Bytes>) -> Result<(), BlobError> {
        match self {
            Self::Plain => {
                if !piece.is_empty() {
                    out.push(piece);
                }
            }
            Self::Chunked {
                opener,
                trim,
                rname,
            } => {
                let opener = opener.as_mut().expect("not finished");
                for plain in opener.push(&piece) {
                    let plain = plain.map_err(|e| BlobError::integrity(rname, e))?;
                    out.extend(trim.take(plain));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), BlobError> {
        if let Self::Chunked {
            opener,
            trim,
            rname,
        } = self
        {
            let last = opener
                .take()
                .expect("finished once")
                .finish()
                .map_err(|e| BlobError::integrity(rname, e))?;
            if !last.is_empty() {
                out.extend(trim.take(last));
            }
        }
        Ok(())
    }
}

enum State {
    Start(Box<Job>),
    Items(std::vec::IntoIter<Bytes>),
    Recv(mpsc::Receiver<Result<Bytes, BlobError>>),
    Done,
}

/// The returned stream's state: hands out exactly the wanted number of bytes, or an error.
struct Consumer {
    rname: Arc<str>,
    remaining: u64,
    state: State,
}

impl Consumer {
    async fn next(&mut self) -> Option<Result<Bytes, BlobError>> {
        loop {
            if self.remaining == 0 {
                // Everything wanted was handed out (and authenticated): stop, which also stops
                // the producer.
                self.state = State::Done;
                return None;
            }
            match &mut self.state {
                State::Done => return None,
                State::Start(_) => {
                    let State::Start(job) = std::mem::replace(&mut self.state, State::Done) else {
                        unreachable!()
                    };
                    match job.start() {
                        Ok(state) => self.state = state,
                        Err(e) => return Some(self.fail(e)),
                    }
                }
                State::Items(items) => {
                    return Some(match items.next() {
                        Some(b) => self.account(b),
                        None => self.fail(truncated(&self.rname, "the blob ended early")),
                    })
                }
                State::Recv(rx) => {
                    return Some(match rx.recv().await {
                        Some(Ok(b)) => self.account(b),
                        Some(Err(e)) => self.fail(e),
                        None => self.fail(truncated(&self.rname, "the blob ended early")),
                    })
                }
            }
        }
    }

    fn account(&mut self, b: Bytes) -> Result<Bytes, BlobError> {
        let n = b.len() as u64;
        if n > self.remaining {
            return self.fail(BlobError::integrity(&self.rname, CryptoError::TrailingData));
        }
        self.remaining -= n;
        Ok(b)
    }

    fn fail(&mut self, e: BlobError) -> Result<Bytes, BlobError> {
        self.state = State::Done;
        self.remaining = 0;
        Err(e)
    }
}
