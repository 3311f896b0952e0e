//! [`BlobStore`]: the backends, uploads, deletes and listings.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::local::{create_dir_durably, sync_dir, StagingFile};
use super::open::OpenObjects;
use super::part_writer::PartWriter;
use super::pipeline::Pipeline;
use super::reader::BlobReader;
use super::FIRST_BYTE_TIMEOUT;
use super::{is_generated_rname, validate_rname, BlobConfig, BlobError, BlobInfo};
use crate::crypto::{
    BlobAlgorithm, BlobLayout, ChunkSealer, Dek, MasterKeys, Wrapped, HEADER_LEN, TAG_LEN,
};

/// Whole-request deadline for writes (an 8 MiB part, a complete, a delete, a list page).
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The blob store. Cheap to clone (an `Arc`); `Send + Sync`.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Writes, deletes, listings: requests with a whole-request deadline.
    store: Arc<dyn ObjectStore>,
    /// Reads: no whole-request deadline, as a download to a slow client may stream for a long
    /// time (the first response is bounded by [`FIRST_BYTE_TIMEOUT`] instead). The same object
    /// as `store` for the local filesystem.
    read_store: Arc<dyn ObjectStore>,
    /// `FILE_PARTITION` without leading/trailing `/` (may be empty).
    partition: String,
    keys: Arc<MasterKeys>,
    chunk_size: u32,
    backend: Backend,
    /// Objects downloads are reading now.
    open: Arc<OpenObjects>,
}

enum Backend {
    /// `root` = `DATA_DIR/blobs`.
    Local {
        root: PathBuf,
    },
    S3 {
        bucket: String,
    },
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("backend", &self.describe())
            .field("chunk_size", &self.inner.chunk_size)
            .finish_non_exhaustive()
    }
}

impl BlobStore {
    /// Builds the store from its configuration: checks it, and for the local backend creates
    /// (durably) `data_dir/blobs/<partition>`. No network request is made.
    pub fn from_config(cfg: &BlobConfig, keys: Arc<MasterKeys>) -> Result<Self, BlobError> {
        BlobLayout::new(0, cfg.chunk_size).map_err(|e| BlobError::Config(e.to_string()))?;
        let partition = cfg.partition.trim_matches('/').to_string();
        if !partition.is_empty() && validate_rname(&partition).is_err() {
            return Err(BlobError::Config(format!(
                "FILE_PARTITION {:?} is not a usable key prefix (use letters, digits, '.', '_', \
                 '-' and '/')",
                cfg.partition
            )));
        }
        let (store, read_store, backend): (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>, _) = if cfg
            .uses3
        {
            let (write, read, bucket) = build_s3(cfg)?;
            (Arc::new(write), Arc::new(read), Backend::S3 { bucket })
        } else {
            let root = cfg.data_dir.join("blobs");
            let dir = if partition.is_empty() {
                root.clone()
            } else {
                root.join(&partition)
            };
            create_dir_durably(&dir)
                .map_err(|e| BlobError::Config(format!("cannot create {}: {e}", dir.display())))?;
            // `with_fsync(true)`: every put and multipart completion fsyncs the file, renames
            // it into place and fsyncs the parent directory (and any directory it creates)
            // before returning, so a returned `put` is durable.
            let fs = LocalFileSystem::new_with_prefix(&root)
                .map_err(BlobError::Backend)?
                .with_fsync(true);
            let fs: Arc<dyn ObjectStore> = Arc::new(fs);
            (fs.clone(), fs, Backend::Local { root })
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                read_store,
                partition,
                keys,
                chunk_size: cfg.chunk_size,
                backend,
                open: Arc::default(),
            }),
        })
    }

    /// A fresh blob name like `558/158340da6ed32558`: 16 random hex digits (64 bits from the
    /// operating system's CSPRNG), sharded by their last three.
    pub fn new_rname() -> String {
        let mut b = [0u8; 8];
        OsRng.fill_bytes(&mut b);
        let id = hex::encode(b);
        format!("{}/{id}", &id[13..])
    }

    /// The master keys data keys are wrapped under.
    pub fn keys(&self) -> &MasterKeys {
        &self.inner.keys
    }

    /// The master keys, shared.
    pub fn keys_arc(&self) -> Arc<MasterKeys> {
        self.inner.keys.clone()
    }

    /// Plaintext bytes per chunk for new encrypted blobs.
    pub fn chunk_size(&self) -> u32 {
        self.inner.chunk_size
    }

    /// Where blobs go, for logs: `local:<dir>[/<partition>]` or `s3://<bucket>/<partition>`.
    pub fn describe(&self) -> String {
        let p = &self.inner.partition;
        match &self.inner.backend {
            Backend::Local { root } if p.is_empty() => format!("local:{}", root.display()),
            Backend::Local { root } => format!("local:{}", root.join(p).display()),
            Backend::S3 { bucket } => format!("s3://{bucket}/{p}"),
        }
    }

    /// Whether blobs are in S3.
    pub fn is_s3(&self) -> bool {
        matches!(self.inner.backend, Backend::S3 { .. })
    }

    /// The object location of `rname` (checked with [`validate_rname`]).
    pub(crate) fn location(&self, rname: &str) -> Result<Path, BlobError> {
        validate_rname(rname)?;
        let full = if self.inner.partition.is_empty() {
            rname.to_string()
        } else {
            format!("{}/{rname}", self.inner.partition)
        };
        Path::parse(full).map_err(|_| BlobError::InvalidName(rname.to_string()))
    }

    /// Streams plaintext from `body` (pieces of any size) through SHA-256 and, for
    /// [`BlobAlgorithm::Chunked`], the chunked AES-256-GCM envelope under a fresh data key,
    /// into `FILE_PARTITION/<rname>`.
    ///
    /// * Memory does not grow with the size: past its first 512 KiB a local blob is written
    ///   to its file by the pipeline's seal thread as it is sealed; on S3 a blob under 8 MiB
    ///   (stored) is one `PUT`, a larger one a multipart upload of 8 MiB parts (growing after
    ///   1,000 parts), at most two in flight while the next is filled. Reading `body` waits
    ///   while they are.
    /// * The blob is durable when this returns `Ok` (see the module docs).
    /// * `expected_sha256` (hex, any case): on a mismatch nothing becomes visible (the single
    ///   `PUT` is never made / the multipart upload is aborted) and
    ///   [`BlobError::HashMismatch`] is returned. `max_size` limits the plaintext:
    ///   [`BlobError::TooLarge`] as soon as it is exceeded.
    /// * On any error (including from `body`), nothing is left behind: the multipart upload is
    ///   aborted, and an object a failed final request may have created is deleted. If the
    ///   returned future is dropped midway, an unfinished multipart upload is aborted in the
    ///   background; a single `PUT` already under way may still land, as an unreferenced blob
    ///   that `vellum gc` removes after its grace period.
    pub async fn put<S>(
        &self,
        rname: &str,
        algorithm: BlobAlgorithm,
        body: S,
        expected_sha256: Option<&str>,
        max_size: Option<u64>,
    ) -> Result<BlobInfo, BlobError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        self.put_at(rname, rname, algorithm, body, expected_sha256, max_size)
            .await
    }

    /// [`BlobStore::put`] into the object `location` (for a re-encryption: the blob keeps
    /// its name, bound into the envelope, and moves to a new object).
    pub async fn put_at<S>(
        &self,
        rname: &str,
        location: &str,
        algorithm: BlobAlgorithm,
        mut body: S,
        expected_sha256: Option<&str>,
        max_size: Option<u64>,
    ) -> Result<BlobInfo, BlobError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        validate_rname(rname)?;
        let location = self.location(location)?;
        let expected = expected_sha256.map(normalize_sha256).transpose()?;
        let (sealer, wrapped) = self.new_sealer(rname, algorithm)?;
        let local_dest = match &self.inner.backend {
            Backend::Local { root } => Some(root.join(location.as_ref())),
            Backend::S3 { .. } => None,
        };
        let mut writer = PartWriter::new(self.inner.store.clone(), location, rname);
        if let Some(sealer) = &sealer {
            writer.push(Bytes::copy_from_slice(&sealer.header()));
        }
        let mut pipeline = Some(Pipeline::new(sealer, local_dest));
        let result: Result<BlobInfo, BlobError> = async {
            let pipe = pipeline.as_mut().expect("taken only by finish");
            let mut size = 0u64;
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(BlobError::Upload)?;
                size += piece.len() as u64;
                if let Some(limit) = max_size.filter(|&limit| size > limit) {
                    return Err(BlobError::TooLarge { limit });
                }
                pipe.push(piece, &mut writer).await?;
                writer.send_full_part().await?;
            }
            let actual = pipeline
                .take()
                .expect("not taken before")
                .finish(&mut writer)
                .await?;
            check_hash(expected, &actual)?;
            writer.finish().await?;
            Ok(BlobInfo {
                rname: rname.to_string(),
                size,
                sha256plain: actual,
                algorithm,
                wrapped,
                inline: None,
            })
        }
        .await;
        if result.is_err() {
            // The pipeline's threads let go of the blob's file before this returns.
            if let Some(p) = pipeline {
                p.abort().await;
            }
            writer.clean_up().await;
        }
        result
    }

    /// Re-encrypts the blob `reader` reads under a fresh data key into a new object at
    /// `location` (the old object stays; the caller switches to the new one and deletes it),
    /// checking the plaintext against `expected_sha256`. The new object is durable only once
    /// [`BlobStore::make_durable`] has been given what this returns (many at once: see
    /// there); until then, and if that fails, it must not be switched to.
    ///
    /// A local encrypted blob is read, opened, hashed, sealed and written a chunk at a time on
    /// one blocking thread, in two buffers reused for every chunk: nothing else is allocated
    /// per chunk, and no other thread frees what this one took. Through the upload pipeline
    /// instead (the way for S3, where the object is durable once put), a rotation of 1 GiB of
    /// 5 MiB versions left the allocator holding 233 MiB for about 10 MiB ever in use at once
    /// (its threads' heaps filled with memory that other threads freed); this way it peaks
    /// at 52-64 MiB in the same time or less.
    pub async fn reseal(
        &self,
        reader: BlobReader,
        location: &str,
        expected_sha256: &str,
    ) -> Result<Resealed, BlobError> {
        let rname = reader.rname().to_string();
        let algorithm = reader.algorithm();
        let local_root = match &self.inner.backend {
            Backend::Local { root } if algorithm == BlobAlgorithm::Chunked => Some(root.clone()),
            _ => None,
        };
        let file = match local_root {
            Some(_) => reader.stored_file().await?,
            None => None,
        };
        let (Some(root), Some(file)) = (local_root, file) else {
            let size = reader.size();
            let plaintext = reader
                .read_range(0..size)
                .map(|r| r.map_err(std::io::Error::other));
            let info = self
                .put_at(
                    &rname,
                    location,
                    algorithm,
                    Box::pin(plaintext),
                    Some(expected_sha256),
                    None,
                )
                .await?;
            return Ok(Resealed {
                info,
                pending: None,
            });
        };
        let dest = root.join(self.location(location)?.as_ref());
        let expected = Some(normalize_sha256(expected_sha256)?);
        let (sealer, wrapped) = self.new_sealer(&rname, algorithm)?;
        let sealer = sealer.ok_or_else(|| {
            BlobError::Io(std::io::Error::other("no sealer for an encrypted blob"))
        })?;
        let rt = tokio::runtime::Handle::try_current().ok();
        let (size, sha256plain, staging) = tokio::task::spawn_blocking(move || {
            let mut sealer = sealer;
            let mut staging = StagingFile::create(dest, rt).map_err(BlobError::Io)?;
            staging.append(&sealer.header()).map_err(BlobError::Io)?;
            let cs = sealer.chunk_size() as usize;
            let mut plain = Vec::with_capacity(cs + TAG_LEN);
            let mut sealed = vec![0u8; sealer.sealed_len_bound(cs)];
            let mut hasher = Sha256::new();
            for index in 0..reader.chunk_count() {
                reader.open_chunk_into(&file, index, &mut plain)?;
                hasher.update(&plain);
                let (took, wrote) = sealer
                    .seal_into(&plain, &mut sealed)
                    .map_err(BlobError::Crypto)?;
                debug_assert_eq!(
                    took,
                    plain.len(),
                    "a bound-sized buffer takes a whole chunk"
                );
                staging.append(&sealed[..wrote]).map_err(BlobError::Io)?;
            }
            let size = sealer.plaintext_len();
            staging
                .append(&sealer.finish().map_err(BlobError::Crypto)?)
                .map_err(BlobError::Io)?;
            let actual = hex::encode(hasher.finalize());
            check_hash(expected, &actual)?;
            Ok::<_, BlobError>((size, actual, staging))
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        Ok(Resealed {
            info: BlobInfo {
                rname,
                size,
                sha256plain,
                algorithm,
                wrapped,
                inline: None,
            },
            pending: Some(PendingObject(staging)),
        })
    }

    /// Makes the new objects of [`BlobStore::reseal`] durable and puts them in place; the
    /// answer for each, in order (one that failed is not in place, and nothing is left of it).
    ///
    /// Together rather than one by one: each file is synced, then all are renamed, then each
    /// directory synced once. The first sync commits the filesystem's journal, and with it
    /// what the others wrote, so a batch of rotations costs the disk about two journal
    /// commits instead of two per version; those commits are what the store's own commits
    /// wait behind.
    pub async fn make_durable(&self, pending: Vec<PendingObject>) -> Vec<Result<(), BlobError>> {
        let n = pending.len();
        let done = tokio::task::spawn_blocking(move || {
            let mut synced = Vec::with_capacity(pending.len());
            for PendingObject(mut file) in pending {
                synced.push(file.sync().map(|()| file));
            }
            let placed: Vec<_> = synced
                .into_iter()
                .map(|r| r.and_then(StagingFile::rename_into_place))
                .collect();
            let mut dirs: Vec<PathBuf> = placed
                .iter()
                .filter_map(|r| r.as_ref().ok().cloned().flatten())
                .collect();
            dirs.sort();
            dirs.dedup();
            let failed_dirs: Vec<(PathBuf, String)> = dirs
                .into_iter()
                .filter_map(|d| sync_dir(&d).err().map(|e| (d, e.to_string())))
                .collect();
            placed
                .into_iter()
                .map(|r| match r {
                    Err(e) => Err(BlobError::Io(e)),
                    Ok(dir) => match failed_dirs.iter().find(|(d, _)| Some(d) == dir.as_ref()) {
                        Some((_, e)) => Err(BlobError::Io(std::io::Error::other(e.clone()))),
                        None => Ok(()),
                    },
                })
                .collect::<Vec<_>>()
        })
        .await;
        done.unwrap_or_else(|e| {
            let e = e.to_string();
            (0..n)
                .map(|_| Err(BlobError::Io(std::io::Error::other(e.clone()))))
                .collect()
        })
    }

    /// A fresh data key's sealer and its wrapping for [`BlobAlgorithm::Chunked`]; nothing for
    /// plaintext blobs.
    fn new_sealer(
        &self,
        rname: &str,
        algorithm: BlobAlgorithm,
    ) -> Result<(Option<ChunkSealer>, Option<Wrapped>), BlobError> {
        match algorithm {
            BlobAlgorithm::Chunked => {
                let dek = Dek::generate();
                let wrapped = self.inner.keys.wrap(&dek, rname.as_bytes());
                let sealer = ChunkSealer::new(&dek, rname.as_bytes(), self.inner.chunk_size)
                    .map_err(BlobError::Crypto)?;
                Ok((Some(sealer), Some(wrapped)))
            }
            BlobAlgorithm::None => Ok((None, None)),
        }
    }

    /// Seals a whole (small) body held in memory, for the caller's metadata store: the same
    /// format and checks as [`BlobStore::put`], no I/O. The result has
    /// [`BlobInfo::inline`] set.
    pub fn seal_inline(
        &self,
        rname: &str,
        algorithm: BlobAlgorithm,
        pieces: &[Bytes],
        expected_sha256: Option<&str>,
    ) -> Result<BlobInfo, BlobError> {
        validate_rname(rname)?;
        let expected = expected_sha256.map(normalize_sha256).transpose()?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        for piece in pieces {
            hasher.update(piece);
            len += piece.len() as u64;
        }
        let actual = hex::encode(hasher.finalize());
        check_hash(expected, &actual)?;
        let (sealer, wrapped) = self.new_sealer(rname, algorithm)?;
        let stored = match sealer {
            None => pieces.concat(),
            Some(mut sealer) => {
                let mut out = sealer.header().to_vec();
                for piece in pieces {
                    for chunk in sealer.push(piece) {
                        out.extend_from_slice(&chunk.map_err(BlobError::Crypto)?);
                    }
                }
                out.extend_from_slice(&sealer.finish().map_err(BlobError::Crypto)?);
                out
            }
        };
        Ok(BlobInfo {
            rname: rname.to_string(),
            size: len,
            sha256plain: actual,
            algorithm,
            wrapped,
            inline: Some(Bytes::from(stored)),
        })
    }

    /// Opens a blob as its metadata row records it: from `inline` bytes when it was kept
    /// inline, otherwise from the backend. The one place that makes that choice.
    /// `location` is the object the bytes lie in (the row's, which is `rname` until a
    /// re-encryption moves them). A reader of an object holds it open: see
    /// [`BlobStore::delete_when_unread`].
    pub async fn open_recorded(
        &self,
        rname: &str,
        location: &str,
        algorithm: BlobAlgorithm,
        wrapped: Option<&Wrapped>,
        inline: Option<Bytes>,
    ) -> Result<BlobReader, BlobError> {
        match inline {
            Some(stored) => self.open_inline(rname, algorithm, wrapped, stored),
            None => {
                let guard = self.inner.open.hold(location);
                let reader = self.open_at(rname, location, algorithm, wrapped).await?;
                Ok(reader.holding(guard))
            }
        }
    }

    /// Deletes the object `location` once no reader opened by this store still reads it
    /// (a re-encryption's old object, after the switch to the new one has committed), or
    /// after `max_wait` (a download stalled that long then fails cleanly: it never reads
    /// another object's bytes under its key). A crash before this leaves an orphan that
    /// `vellum gc` removes.
    pub async fn delete_when_unread(
        &self,
        location: &str,
        max_wait: Duration,
    ) -> Result<(), BlobError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let notified = self.inner.open.closed.notified();
            if !self.inner.open.is_open(location) {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(%location, "deleting an old object that a download still reads");
                break;
            }
        }
        self.delete(location).await
    }

    /// Opens a blob whose stored bytes were kept inline (see [`BlobStore::seal_inline`]).
    /// Nothing is fetched from the backend.
    fn open_inline(
        &self,
        rname: &str,
        algorithm: BlobAlgorithm,
        wrapped: Option<&Wrapped>,
        stored: Bytes,
    ) -> Result<BlobReader, BlobError> {
        let location = self.location(rname)?;
        let dek = self.data_key(rname, algorithm, wrapped)?;
        BlobReader::new(
            self.inner.read_store.clone(),
            location,
            rname,
            stored.len() as u64,
            stored,
            dek.as_ref(),
        )
    }

    /// The data key of an encrypted blob, unwrapped; `None` for plaintext blobs.
    pub fn data_key(
        &self,
        rname: &str,
        algorithm: BlobAlgorithm,
        wrapped: Option<&Wrapped>,
    ) -> Result<Option<Dek>, BlobError> {
        match algorithm {
            BlobAlgorithm::Chunked => {
                let w = wrapped.ok_or_else(|| BlobError::MissingKey {
                    rname: rname.to_string(),
                })?;
                let dek = self
                    .inner
                    .keys
                    .unwrap(
                        &w.key_id,
                        &w.encrypteddata,
                        &w.encryptednonce,
                        rname.as_bytes(),
                    )
                    .map_err(BlobError::Crypto)?;
                Ok(Some(dek))
            }
            BlobAlgorithm::None => Ok(None),
        }
    }

    /// Opens a stored blob for reading: one ranged request fetches the header and the first
    /// chunk (so a small blob needs no second request), and the object's length gives the
    /// plaintext size. `wrapped` is needed for [`BlobAlgorithm::Chunked`] (ignored for
    /// [`BlobAlgorithm::None`]); it is unwrapped before any I/O.
    pub async fn open(
        &self,
        rname: &str,
        algorithm: BlobAlgorithm,
        wrapped: Option<&Wrapped>,
    ) -> Result<BlobReader, BlobError> {
        self.open_at(rname, rname, algorithm, wrapped).await
    }

    /// [`BlobStore::open`] of the bytes in the object `location`.
    async fn open_at(
        &self,
        rname: &str,
        location: &str,
        algorithm: BlobAlgorithm,
        wrapped: Option<&Wrapped>,
    ) -> Result<BlobReader, BlobError> {
        validate_rname(rname)?;
        let location = self.location(location)?;
        let dek = self.data_key(rname, algorithm, wrapped)?;
        let prefetch = (HEADER_LEN + self.inner.chunk_size as usize + TAG_LEN) as u64;
        let (stored_len, head) = self.fetch_head(&location, rname, prefetch).await?;
        BlobReader::new(
            self.inner.read_store.clone(),
            location,
            rname,
            stored_len,
            head,
            dek.as_ref(),
        )
    }

    /// The object's length and its first `n` bytes (fewer if it is shorter).
    async fn fetch_head(
        &self,
        location: &Path,
        rname: &str,
        n: u64,
    ) -> Result<(u64, Bytes), BlobError> {
        let store = &self.inner.read_store;
        let get = async {
            let r = store
                .get_opts(location, GetOptions::new().with_range(Some(0..n)))
                .await?;
            let size = r.meta.size;
            Ok::<_, object_store::Error>((size, r.bytes().await?))
        };
        match tokio::time::timeout(FIRST_BYTE_TIMEOUT, get).await {
            Err(_) => Err(BlobError::Timeout(FIRST_BYTE_TIMEOUT)),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e @ object_store::Error::NotFound { .. })) => Err(BlobError::backend(rname, e)),
            // A range cannot start at byte 0 of an empty object: see whether that is the case.
            Ok(Err(e)) => match self.inner.store.head(location).await {
                Ok(meta) if meta.size == 0 => Ok((0, Bytes::new())),
                Ok(_) => Err(BlobError::backend(rname, e)),
                Err(e) => Err(BlobError::backend(rname, e)),
            },
        }
    }

    /// Deletes the object `location` (a blob's rname, or where a re-encryption moved it); one
    /// that does not exist is not an error.
    pub async fn delete(&self, location: &str) -> Result<(), BlobError> {
        let location = self.location(location)?;
        match self.inner.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(BlobError::Backend(e)),
        }
    }

    /// Every stored blob (under `FILE_PARTITION`, with a name of the
    /// [`BlobStore::new_rname`] shape) with its last-modified time, for `vellum gc`. Objects
    /// with other names are never reported. Uploads in progress are not listed (a local upload
    /// is a staging file until it completes; an S3 multipart upload is no object until then).
    pub fn list(&self) -> impl Stream<Item = Result<(String, SystemTime), BlobError>> + '_ {
        let prefix = (!self.inner.partition.is_empty())
            .then(|| Path::parse(&self.inner.partition).expect("validated in from_config"));
        let stream = self.inner.store.list(prefix.as_ref());
        stream.filter_map(move |r| {
            let item = match r {
                Err(e) => Some(Err(BlobError::Backend(e))),
                Ok(meta) => {
                    let rel = match &prefix {
                        None => Some(meta.location.as_ref().to_string()),
                        Some(p) => meta.location.prefix_match(p).map(|parts| {
                            parts
                                .map(|part| part.as_ref().to_string())
                                .collect::<Vec<_>>()
                                .join("/")
                        }),
                    };
                    rel.filter(|r| is_generated_rname(r))
                        .map(|r| Ok((r, SystemTime::from(meta.last_modified))))
                }
            };
            std::future::ready(item)
        })
    }

    /// Decrypts a whole stored blob and returns its plaintext size and SHA-256 (hex). A
    /// damaged blob is [`BlobError::Integrity`]. (`vellum fsck` goes through
    /// [`BlobStore::open_recorded`], which also covers inline blobs.)
    pub async fn verify(
        &self,
        rname: &str,
        algorithm: BlobAlgorithm,
        wrapped: Option<&Wrapped>,
    ) -> Result<(u64, String), BlobError> {
        let reader = self.open(rname, algorithm, wrapped).await?;
        Self::hash_all(reader).await
    }

    /// Decrypts a whole opened blob (inline or stored) and returns its plaintext size and
    /// SHA-256 (hex).
    pub async fn hash_all(reader: BlobReader) -> Result<(u64, String), BlobError> {
        let size = reader.size();
        let mut stream = std::pin::pin!(reader.read_range(0..size));
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = piece?;
            n += piece.len() as u64;
            hasher.update(&piece);
        }
        Ok((n, hex::encode(hasher.finalize())))
    }

    /// Removes what crashed local uploads left behind: `object_store`'s staging files
    /// (`<rname>#<n>`) last modified more than `older_than` ago, under this store's partition.
    /// Returns how many were removed. A no-op for S3, where an unfinished multipart upload is
    /// no object: configure the bucket's lifecycle rule `AbortIncompleteMultipartUpload` for
    /// those.
    pub async fn remove_stale_uploads(&self, older_than: Duration) -> Result<u64, BlobError> {
        let Backend::Local { root } = &self.inner.backend else {
            return Ok(0);
        };
        let dir = if self.inner.partition.is_empty() {
            root.clone()
        } else {
            root.join(&self.inner.partition)
        };
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        tokio::task::spawn_blocking(move || remove_staging_files(&dir, cutoff))
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
            .map_err(BlobError::Io)
    }
}

/// Lower-case hex of a SHA-256 given by a client, or an error if it is not one.
fn normalize_sha256(hex: &str) -> Result<String, BlobError> {
    let h = hex.trim();
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(BlobError::BadExpectedHash(h.chars().take(80).collect()))
    }
}

/// [`BlobError::HashMismatch`] unless the content's hash is the one the client expected.
fn check_hash(expected: Option<String>, actual: &str) -> Result<(), BlobError> {
    match expected {
        Some(expected) if expected != actual => Err(BlobError::HashMismatch {
            expected,
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

/// What [`BlobStore::reseal`] made.
#[derive(Debug)]
pub struct Resealed {
    pub info: BlobInfo,
    /// A new object not yet durable (local blobs): for [`BlobStore::make_durable`].
    pub pending: Option<PendingObject>,
}

/// A new object written but not yet durable nor in place; removed if dropped.
#[derive(Debug)]
pub struct PendingObject(StagingFile);

/// Builds the S3 stores (writes, reads) from the configuration.
fn build_s3(
    cfg: &BlobConfig,
) -> Result<
    (
        object_store::aws::AmazonS3,
        object_store::aws::AmazonS3,
        String,
    ),
    BlobError,
> {
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let bucket = nonempty(&cfg.bucket)
        .ok_or_else(|| BlobError::Config("USES3=true needs FILE_BUCKET".into()))?;
    let region = nonempty(&cfg.aws_region).unwrap_or_else(|| "us-east-1".into());
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_region(region);
    match (
        nonempty(&cfg.aws_access_key_id),
        nonempty(&cfg.aws_secret_access_key),
    ) {
        (Some(id), Some(secret)) => {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        (None, None) => {}
        _ => {
            return Err(BlobError::Config(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".into(),
            ))
        }
    }
    let mut allow_http = false;
    if let Some(endpoint) = nonempty(&cfg.aws_endpoint) {
        allow_http = endpoint_is_plain_http(&endpoint)?;
        builder = builder.with_endpoint(endpoint);
    }
    // Fewer retries than object_store's default (10 within 3 minutes), so that a request to
    // an unreachable server fails within seconds rather than holding an HTTP request for minutes.
    builder = builder.with_retry(RetryConfig {
        max_retries: 4,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    });
    // (The client options replace the builder's, `allow_http` included: set it here.)
    let base = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(CONNECT_TIMEOUT);
    let write = builder
        .clone()
        .with_client_options(base.clone().with_timeout(WRITE_TIMEOUT))
        .build()
        .map_err(|e| BlobError::Config(format!("S3: {e}")))?;
    let read = builder
        .with_client_options(base.with_timeout_disabled())
        .build()
        .map_err(|e| BlobError::Config(format!("S3: {e}")))?;
    Ok((write, read, bucket))
}

/// `Ok(true)` for an `http://` endpoint on a loopback host, `Ok(false)` for `https://`, an
/// error otherwise (SPEC §1: plain http only for loopback).
pub(crate) fn endpoint_is_plain_http(endpoint: &str) -> Result<bool, BlobError> {
    let lower = endpoint.trim().to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(false);
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(BlobError::Config(format!(
            "AWS_ENDPOINT {endpoint:?} must start with https:// (or http:// for a loopback host)"
        )));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(true)
    } else {
        Err(BlobError::Config(format!(
            "AWS_ENDPOINT {endpoint:?}: plain http is only allowed for a loopback host; use https"
        )))
    }
}

/// Removes `object_store` staging files (names containing `#`) older than `cutoff` under
/// `dir`.
fn remove_staging_files(dir: &FsPath, cutoff: SystemTime) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let ty = entry.file_type()?;
        let path = entry.path();
        if ty.is_dir() {
            removed += remove_staging_files(&path, cutoff)?;
        } else if ty.is_file() && entry.file_name().to_string_lossy().contains('#') {
            let modified = entry.metadata()?.modified()?;
            if modified <= cutoff {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
}
