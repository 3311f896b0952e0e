//! The blob store (`vellum::blob`) against both backends: the local filesystem (a temporary
//! data folder) and a real S3-compatible server over HTTP (s3s-fs, in-process, with a bucket
//! per test). Every test runs its checks on both.

use crate::common::rng;
use crate::common::s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rng::Rng;
use sha2::{Digest, Sha256};
use vellum::blob::{BlobAlgorithm, BlobConfig, BlobError, BlobInfo, BlobStore};
use vellum::crypto::{ciphertext_len, MasterKeys, DEFAULT_CHUNK_SIZE, HEADER_LEN, TAG_LEN};

const CS: usize = DEFAULT_CHUNK_SIZE as usize;
const MIB: usize = 1 << 20;
const MARKER: &[u8] = b"<<VELLUM-PLAINTEXT-MARKER-5e1f0c>>";

// ---------------------------------------------------------------------------------------------
// Harness

/// One backend under test: the blob store, and raw access to the very same objects.
struct Backend {
    name: &'static str,
    store: BlobStore,
    /// The bucket (S3) or `DATA_DIR/blobs` (local), without the partition.
    raw: Arc<dyn ObjectStore>,
    partition: &'static str,
    /// A folder holding every byte the backend stored (the data folder, or s3s-fs's root).
    scan_root: PathBuf,
    _dir: tempfile::TempDir,
    server: Option<s3::S3Server>,
}

fn keys() -> Arc<MasterKeys> {
    let mut key = [0u8; 32];
    Rng(0x5eed).fill(&mut key);
    Arc::new(MasterKeys::from_raw_keys([("test".to_string(), key)]).unwrap())
}

fn local_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let store = BlobStore::from_config(&BlobConfig::local(&data_dir), keys()).unwrap();
    let raw = LocalFileSystem::new_with_prefix(data_dir.join("blobs")).unwrap();
    Backend {
        name: "local",
        store,
        raw: Arc::new(raw),
        partition: "",
        scan_root: data_dir,
        _dir: dir,
        server: None,
    }
}

fn s3_backend() -> Backend {
    let server = s3::S3Server::start();
    let bucket = "vellum-test";
    server.create_bucket(bucket);
    let partition = "blobs/v1";
    let cfg = BlobConfig {
        uses3: true,
        bucket: Some(bucket.into()),
        partition: partition.into(),
        aws_access_key_id: Some(s3::ACCESS_KEY.into()),
        aws_secret_access_key: Some(s3::SECRET_KEY.into()),
        aws_region: Some(s3::REGION.into()),
        aws_endpoint: Some(server.endpoint()),
        ..BlobConfig::local("/nonexistent")
    };
    let store = BlobStore::from_config(&cfg, keys()).unwrap();
    let raw = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(s3::REGION)
        .with_access_key_id(s3::ACCESS_KEY)
        .with_secret_access_key(s3::SECRET_KEY)
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .build()
        .unwrap();
    Backend {
        name: "s3",
        store,
        raw: Arc::new(raw),
        partition,
        scan_root: server.root_dir().to_path_buf(),
        _dir: tempfile::tempdir().unwrap(),
        server: Some(server),
    }
}

fn backends() -> Vec<Backend> {
    vec![local_backend(), s3_backend()]
}

impl Backend {
    fn raw_path(&self, rname: &str) -> ObjectPath {
        if self.partition.is_empty() {
            ObjectPath::parse(rname).unwrap()
        } else {
            ObjectPath::parse(format!("{}/{rname}", self.partition)).unwrap()
        }
    }

    async fn raw_get(&self, rname: &str) -> Vec<u8> {
        let r = self.raw.get(&self.raw_path(rname)).await.unwrap();
        r.bytes().await.unwrap().to_vec()
    }

    async fn raw_put(&self, rname: &str, bytes: Vec<u8>) {
        self.raw
            .put(&self.raw_path(rname), PutPayload::from(bytes))
            .await
            .unwrap();
    }

    /// Every object in the bucket / blob folder, partition included.
    async fn raw_objects(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .raw
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }

    /// Nothing of an upload is left: no object, no local staging file, no S3 upload parts.
    async fn assert_nothing_stored(&self) {
        assert_eq!(
            self.raw_objects().await,
            Vec::<String>::new(),
            "{}",
            self.name
        );
        let files = all_files(&self.scan_root);
        let leftovers: Vec<_> = files
            .iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.contains('#') || name.contains(".upload")
            })
            .collect();
        assert!(leftovers.is_empty(), "{}: {leftovers:?}", self.name);
        if self.server.is_none() {
            assert!(files.is_empty(), "{}: {files:?}", self.name);
        }
    }

    async fn put(&self, algorithm: BlobAlgorithm, data: &[u8], rng: &mut Rng) -> BlobInfo {
        let rname = BlobStore::new_rname();
        self.store
            .put(&rname, algorithm, body_of(data, rng), None, None)
            .await
            .unwrap_or_else(|e| panic!("{}: put of {} bytes: {e}", self.name, data.len()))
    }

    /// Opens and reads `range`; an error (at open or mid-stream) is returned with the bytes
    /// delivered before it.
    async fn read(
        &self,
        info: &BlobInfo,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, (Vec<u8>, BlobError)> {
        let reader = self
            .store
            .open(&info.rname, info.algorithm, info.wrapped.as_ref())
            .await
            .map_err(|e| (Vec::new(), e))?;
        let mut out = Vec::new();
        let mut s = std::pin::pin!(reader.read_range(range));
        while let Some(piece) = s.next().await {
            match piece {
                Ok(p) => {
                    assert!(!p.is_empty(), "empty piece");
                    out.extend_from_slice(&p)
                }
                Err(e) => return Err((out, e)),
            }
        }
        Ok(out)
    }

    async fn read_all(&self, info: &BlobInfo) -> Vec<u8> {
        self.read(info, 0..u64::MAX)
            .await
            .unwrap_or_else(|(_, e)| panic!("{}: {e}", self.name))
    }
}

/// `data` as an upload body in pieces of random sizes (some empty, some spanning chunks).
fn body_of(
    data: &[u8],
    rng: &mut Rng,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static {
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = match rng.below(10) {
            0 => 0,
            1 => 1 + rng.below(16) as usize,
            2..=5 => 1 + rng.below(CS as u64 / 2) as usize,
            _ => 1 + rng.below(3 * CS as u64) as usize,
        }
        .min(data.len() - at);
        pieces.push(Ok(Bytes::copy_from_slice(&data[at..at + n])));
        at += n;
    }
    stream::iter(pieces)
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// 30+ ranges of a blob of `size` bytes: whole, first and last bytes, suffixes, chunk
/// boundaries, and random ones.
fn ranges(size: u64, rng: &mut Rng) -> Vec<std::ops::Range<u64>> {
    let cs = CS as u64;
    let mut v = vec![0..size, 0..1.min(size), size.saturating_sub(1)..size];
    for n in [1, 2, 17, cs - 1, cs, cs + 1, 3 * cs + 5] {
        v.push(size.saturating_sub(n)..size); // suffix ranges ("bytes=-n")
    }
    for start in [cs - 1, cs, cs + 1, 2 * cs] {
        let start = start.min(size);
        v.push(start..size); // open-ended ("bytes=start-")
        v.push(start..(start + cs).min(size));
    }
    while v.len() < 34 {
        let a = rng.below(size + 1);
        let len = match rng.below(3) {
            0 => rng.below(64),
            1 => rng.below(2 * cs),
            _ => rng.below(size + 1),
        };
        v.push(a..(a + len).min(size));
    }
    v
}

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let (first, rest) = needle.split_first().unwrap();
    haystack
        .iter()
        .enumerate()
        .filter(|(_, b)| *b == first)
        .any(|(i, _)| haystack[i + 1..].starts_with(rest))
}

/// Deterministic content for large streaming uploads: byte `i` depends only on `i`.
fn gen_bytes(offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut word = offset / 8;
    while out.len() < len + (offset % 8) as usize {
        out.extend_from_slice(&Rng(word).next().to_le_bytes());
        word += 1;
    }
    out.drain(..(offset % 8) as usize);
    out.truncate(len);
    out
}

/// A generator stream of `total` bytes of [`gen_bytes`] in pieces of ~37 KiB, optionally
/// failing once `fail_at` bytes were produced.
fn generated_body(
    total: u64,
    fail_at: Option<u64>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static {
    Box::pin(stream::unfold(0u64, move |at| async move {
        if fail_at.is_some_and(|f| at >= f) {
            return Some((Err(std::io::Error::other("client went away")), u64::MAX));
        }
        if at >= total {
            return None;
        }
        let n = (37_000 + at % 5_000).min(total - at);
        Some((Ok(Bytes::from(gen_bytes(at, n as usize))), at + n))
    }))
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_whole_and_ranged_for_edge_sizes() {
    for b in backends() {
        let mut rng = Rng(1);
        for algorithm in [BlobAlgorithm::Chunked, BlobAlgorithm::None] {
            for size in [0, 1, CS - 1, CS, CS + 1, 3 * MIB + 17] {
                let data = rng.bytes(size);
                let info = b.put(algorithm, &data, &mut rng).await;
                let ctx = format!("{} {algorithm:?} {size}", b.name);
                assert_eq!(info.size, size as u64, "{ctx}");
                assert_eq!(info.sha256plain, sha_hex(&data), "{ctx}");
                assert_eq!(info.algorithm, algorithm, "{ctx}");
                assert_eq!(info.wrapped.is_some(), algorithm.is_encrypted(), "{ctx}");
                let stored = b.raw_get(&info.rname).await;
                let expected_len = match algorithm {
                    BlobAlgorithm::Chunked => ciphertext_len(size as u64, CS as u32).unwrap(),
                    BlobAlgorithm::None => size as u64,
                };
                assert_eq!(stored.len() as u64, expected_len, "{ctx}");

                let reader = b
                    .store
                    .open(&info.rname, algorithm, info.wrapped.as_ref())
                    .await
                    .unwrap();
                assert_eq!(reader.size(), size as u64, "{ctx}");
                assert_eq!(reader.algorithm(), algorithm, "{ctx}");
                assert!(b.read_all(&info).await == data, "{ctx}: whole read differs");

                let rs = ranges(size as u64, &mut rng);
                assert!(rs.len() >= 30);
                for r in rs {
                    let got = b.read(&info, r.clone()).await.unwrap();
                    assert!(
                        got == data[r.start as usize..r.end as usize],
                        "{ctx}: range {r:?} differs"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_stores_the_exact_plaintext() {
    for b in backends() {
        let mut rng = Rng(2);
        for size in [0, 5, CS + 3, 3 * MIB + 17] {
            let data = rng.bytes(size);
            let info = b.put(BlobAlgorithm::None, &data, &mut rng).await;
            assert!(info.wrapped.is_none());
            assert!(b.raw_get(&info.rname).await == data, "{} {size}", b.name);
            // The wrapped key, if any is given, is ignored for "none".
            let reader = b
                .store
                .open(&info.rname, BlobAlgorithm::None, None)
                .await
                .unwrap();
            assert_eq!(reader.size(), size as u64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_reaches_the_storage() {
    for b in backends() {
        let mut rng = Rng(3);
        // A small blob (one PUT) and one large enough for a multipart upload.
        for size in [100 * 1024, 9 * MIB] {
            let mut data = Vec::with_capacity(size);
            while data.len() < size {
                data.extend_from_slice(MARKER);
                let pad = rng.below(8) as usize;
                data.extend_from_slice(&rng.bytes(pad));
            }
            let info = b.put(BlobAlgorithm::Chunked, &data, &mut rng).await;
            assert!(b.read_all(&info).await == data);
            assert!(!contains(&b.raw_get(&info.rname).await, MARKER));
        }
        let files = all_files(&b.scan_root);
        assert!(!files.is_empty());
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                !contains(&bytes, MARKER),
                "{}: marker in {}",
                b.name,
                f.display()
            );
        }
        // The scan does see stored bytes: a "none" blob shows the marker.
        let info = b
            .put(BlobAlgorithm::None, &MARKER.repeat(10), &mut rng)
            .await;
        assert!(contains(&b.raw_get(&info.rname).await, MARKER));
        assert!(
            all_files(&b.scan_root)
                .iter()
                .any(|f| contains(&std::fs::read(f).unwrap(), MARKER)),
            "{}: the scan misses stored objects",
            b.name
        );
    }
}

/// The stored object was changed: reading it fails (at open or mid-stream), and whatever was
/// delivered before the failure is correct plaintext.
async fn assert_damaged(b: &Backend, info: &BlobInfo, data: &[u8], what: &str) {
    match b.read(info, 0..u64::MAX).await {
        Ok(got) => panic!(
            "{} {what}: damaged blob read without error ({} bytes, {})",
            b.name,
            got.len(),
            if got == data { "same" } else { "different" }
        ),
        Err((got, e)) => {
            assert!(e.is_integrity(), "{} {what}: {e:?}", b.name);
            assert!(
                data.starts_with(&got),
                "{} {what}: wrong bytes delivered",
                b.name
            );
        }
    }
    let e = b
        .store
        .verify(&info.rname, info.algorithm, info.wrapped.as_ref())
        .await
        .unwrap_err();
    assert!(e.is_integrity(), "{} {what}: verify: {e:?}", b.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_truncated_and_swapped_blobs_are_errors() {
    for b in backends() {
        let mut rng = Rng(4);
        let data = rng.bytes(3 * CS + 100);
        let info = b.put(BlobAlgorithm::Chunked, &data, &mut rng).await;
        let stored = b.raw_get(&info.rname).await;
        let n = stored.len();
        let sealed = CS + TAG_LEN;

        // Flipped bytes: header (magic, chunk size, nonce prefix), chunk 0 and 1, last tag.
        for at in [
            0,
            5,
            8,
            12,
            HEADER_LEN,
            HEADER_LEN + 1000,
            HEADER_LEN + sealed + CS / 2,
            HEADER_LEN + sealed - 1,
            n - 1,
        ] {
            let mut bad = stored.clone();
            bad[at] ^= 0x01;
            b.raw_put(&info.rname, bad).await;
            assert_damaged(&b, &info, &data, &format!("flip at {at}")).await;
            // A range inside the damaged chunk fails too.
            if at >= HEADER_LEN {
                let chunk = ((at - HEADER_LEN) / sealed) as u64;
                let start = chunk * CS as u64;
                let r = start..(start + 10).min(data.len() as u64);
                let (got, e) = b.read(&info, r).await.unwrap_err();
                assert!(
                    got.is_empty() && e.is_integrity(),
                    "{} flip at {at}",
                    b.name
                );
            }
        }

        // Truncated: by one byte, at a chunk boundary, inside the header, to nothing; and
        // extended by one byte.
        let last_sealed = n - HEADER_LEN - 3 * sealed;
        for len in [n - 1, n - last_sealed, n - last_sealed - sealed, 20, 10, 0] {
            b.raw_put(&info.rname, stored[..len].to_vec()).await;
            assert_damaged(&b, &info, &data, &format!("truncated to {len}")).await;
        }
        let mut longer = stored.clone();
        longer.push(0);
        b.raw_put(&info.rname, longer).await;
        assert_damaged(&b, &info, &data, "one byte longer").await;

        // Chunks 0 and 1 swapped.
        let mut swapped = stored.clone();
        swapped[HEADER_LEN..HEADER_LEN + sealed]
            .copy_from_slice(&stored[HEADER_LEN + sealed..HEADER_LEN + 2 * sealed]);
        swapped[HEADER_LEN + sealed..HEADER_LEN + 2 * sealed]
            .copy_from_slice(&stored[HEADER_LEN..HEADER_LEN + sealed]);
        b.raw_put(&info.rname, swapped).await;
        assert_damaged(&b, &info, &data, "chunks swapped").await;

        // Another blob's object under this name (its own key cannot open it either).
        let other_data = rng.bytes(data.len());
        let other = b.put(BlobAlgorithm::Chunked, &other_data, &mut rng).await;
        b.raw_put(&info.rname, b.raw_get(&other.rname).await).await;
        assert_damaged(&b, &info, &data, "another blob's object").await;
        let mut crossed = other.clone();
        crossed.rname = info.rname.clone();
        assert!(matches!(
            b.store
                .open(&crossed.rname, crossed.algorithm, crossed.wrapped.as_ref())
                .await,
            Err(BlobError::Crypto(_))
        ));

        // Restored, it reads again.
        b.raw_put(&info.rname, stored.clone()).await;
        assert!(b.read_all(&info).await == data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_sha256_mismatch_and_size_limit_store_nothing() {
    for b in backends() {
        let mut rng = Rng(5);
        for size in [1000, 9 * MIB] {
            let data = rng.bytes(size);
            let rname = BlobStore::new_rname();
            let wrong = sha_hex(b"something else");
            let e = b
                .store
                .put(
                    &rname,
                    BlobAlgorithm::Chunked,
                    body_of(&data, &mut rng),
                    Some(&wrong),
                    None,
                )
                .await
                .unwrap_err();
            match e {
                BlobError::HashMismatch { expected, actual } => {
                    assert_eq!(expected, wrong);
                    assert_eq!(actual, sha_hex(&data));
                }
                e => panic!("{}: {e:?}", b.name),
            }
            let e = b
                .store
                .open(&rname, BlobAlgorithm::None, None)
                .await
                .unwrap_err();
            assert!(e.is_not_found(), "{}: {e:?}", b.name);
            b.assert_nothing_stored().await;

            let e = b
                .store
                .put(
                    &rname,
                    BlobAlgorithm::Chunked,
                    body_of(&data, &mut rng),
                    None,
                    // (Past the first 8 MiB part for the large blob: the multipart upload is
                    // aborted.)
                    Some(if size > 8 * MIB {
                        8 * MIB as u64 + 1000
                    } else {
                        size as u64 - 1
                    }),
                )
                .await
                .unwrap_err();
            assert!(matches!(e, BlobError::TooLarge { .. }), "{e:?}");
            b.assert_nothing_stored().await;

            // The right hash (any case) and a limit of exactly the size are fine.
            let info = b
                .store
                .put(
                    &rname,
                    BlobAlgorithm::Chunked,
                    body_of(&data, &mut rng),
                    Some(&sha_hex(&data).to_uppercase()),
                    Some(size as u64),
                )
                .await
                .unwrap();
            assert!(b.read_all(&info).await == data);
            b.store.delete(&rname).await.unwrap();
            b.assert_nothing_stored().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_body_leaves_nothing_behind() {
    for b in backends() {
        for fail_at in [0, 100_000, 9 * MIB as u64] {
            let rname = BlobStore::new_rname();
            let e = b
                .store
                .put(
                    &rname,
                    BlobAlgorithm::Chunked,
                    generated_body(64 * MIB as u64, Some(fail_at)),
                    None,
                    None,
                )
                .await
                .unwrap_err();
            assert!(matches!(e, BlobError::Upload(_)), "{}: {e:?}", b.name);
            b.assert_nothing_stored().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_open_is_not_found() {
    for b in backends() {
        let mut rng = Rng(6);
        for algorithm in [BlobAlgorithm::Chunked, BlobAlgorithm::None] {
            let info = b.put(algorithm, &rng.bytes(5000), &mut rng).await;
            b.store.delete(&info.rname).await.unwrap();
            let e = b
                .store
                .open(&info.rname, algorithm, info.wrapped.as_ref())
                .await
                .unwrap_err();
            assert!(e.is_not_found(), "{}: {e:?}", b.name);
            let e = b
                .store
                .verify(&info.rname, algorithm, info.wrapped.as_ref())
                .await
                .unwrap_err();
            assert!(e.is_not_found(), "{}: {e:?}", b.name);
            // Deleting what is not there is fine.
            b.store.delete(&info.rname).await.unwrap();
        }
        b.assert_nothing_stored().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_stored_blobs() {
    for b in backends() {
        let mut rng = Rng(7);
        let before = SystemTime::now() - Duration::from_secs(5);
        let mut names = Vec::new();
        for size in [0, 10, 70_000] {
            names.push(
                b.put(BlobAlgorithm::Chunked, &rng.bytes(size), &mut rng)
                    .await
                    .rname,
            );
        }
        names.push(
            b.put(BlobAlgorithm::None, &rng.bytes(3), &mut rng)
                .await
                .rname,
        );
        // Objects Vellum did not name are never listed (gc must not touch them).
        b.store
            .put(
                "custom/name",
                BlobAlgorithm::None,
                body_of(b"x", &mut rng),
                None,
                None,
            )
            .await
            .unwrap();
        b.raw
            .put(&ObjectPath::from("outside"), PutPayload::from_static(b"x"))
            .await
            .unwrap();

        let mut listed: Vec<(String, SystemTime)> = b.store.list().try_collect().await.unwrap();
        listed.sort();
        names.sort();
        let after = SystemTime::now() + Duration::from_secs(5);
        assert_eq!(
            listed.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            names,
            "{}",
            b.name
        );
        for (_, t) in &listed {
            assert!(*t >= before && *t <= after, "{}: {t:?}", b.name);
        }

        b.store.delete(&names[1]).await.unwrap();
        let listed: Vec<(String, SystemTime)> = b.store.list().try_collect().await.unwrap();
        assert_eq!(listed.len(), names.len() - 1);
        assert!(listed.iter().all(|(n, _)| *n != names[1]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_size_and_hash() {
    for b in backends() {
        let mut rng = Rng(8);
        for algorithm in [BlobAlgorithm::Chunked, BlobAlgorithm::None] {
            for size in [0, 1, 2 * CS + 7, 3 * MIB + 17] {
                let data = rng.bytes(size);
                let info = b.put(algorithm, &data, &mut rng).await;
                let (n, hash) = b
                    .store
                    .verify(&info.rname, algorithm, info.wrapped.as_ref())
                    .await
                    .unwrap();
                assert_eq!((n, hash), (size as u64, sha_hex(&data)), "{}", b.name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_upload_streams_from_a_generator() {
    const TOTAL: u64 = 64 * MIB as u64;
    let mut hasher = Sha256::new();
    let mut at = 0;
    while at < TOTAL {
        let n = (4 * MIB as u64).min(TOTAL - at);
        hasher.update(gen_bytes(at, n as usize));
        at += n;
    }
    let expected = hex::encode(hasher.finalize());
    for b in backends() {
        let rname = BlobStore::new_rname();
        let info = b
            .store
            .put(
                &rname,
                BlobAlgorithm::Chunked,
                generated_body(TOTAL, None),
                Some(&expected),
                Some(TOTAL),
            )
            .await
            .unwrap();
        assert_eq!(
            (info.size, info.sha256plain.as_str()),
            (TOTAL, expected.as_str())
        );
        let meta = b.raw.head(&b.raw_path(&rname)).await.unwrap();
        assert_eq!(meta.size, ciphertext_len(TOTAL, CS as u32).unwrap());
        assert_eq!(
            b.store
                .verify(&rname, info.algorithm, info.wrapped.as_ref())
                .await
                .unwrap(),
            (TOTAL, expected.clone())
        );
        // Ranges across the 8 MiB part boundaries and at the end.
        let mut rng = Rng(9);
        let mut rs = vec![
            8 * MIB as u64 - 100..8 * MIB as u64 + 100,
            16 * MIB as u64 - 70_000..16 * MIB as u64 + 70_000,
            TOTAL - 1000..TOTAL,
            TOTAL - 1..TOTAL,
        ];
        for _ in 0..6 {
            let a = rng.below(TOTAL);
            rs.push(a..(a + rng.below(256 * 1024)).min(TOTAL));
        }
        for r in rs {
            let got = b.read(&info, r.clone()).await.unwrap();
            assert!(
                got == gen_bytes(r.start, (r.end - r.start) as usize),
                "{}: {r:?}",
                b.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_and_reads_do_not_interfere() {
    for b in backends() {
        let b = Arc::new(b);
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(100 + i);
                let data = rng.bytes(200_000 + i as usize * 50_000);
                let info = b.put(BlobAlgorithm::Chunked, &data, &mut rng).await;
                for r in ranges(data.len() as u64, &mut rng).into_iter().take(8) {
                    let got = b.read(&info, r.clone()).await.unwrap();
                    assert!(got == data[r.start as usize..r.end as usize]);
                }
                info.rname
            }));
        }
        let mut names = Vec::new();
        for t in tasks {
            names.push(t.await.unwrap());
        }
        names.sort();
        let listed: Vec<String> = b
            .store
            .list()
            .map_ok(|(n, _)| n)
            .try_collect()
            .await
            .unwrap();
        let mut listed = listed;
        listed.sort();
        assert_eq!(listed, names);
    }
}

#[tokio::test]
async fn an_unreachable_s3_server_is_an_error_not_a_hang() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = BlobConfig {
        uses3: true,
        bucket: Some("b".into()),
        aws_access_key_id: Some("a".into()),
        aws_secret_access_key: Some("s".into()),
        aws_endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..BlobConfig::local("/nonexistent")
    };
    let store = BlobStore::from_config(&cfg, keys()).unwrap();
    let started = std::time::Instant::now();
    let e = store
        .open("558/158340da6ed32558", BlobAlgorithm::None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, BlobError::Backend(_) | BlobError::Timeout(_)),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resealed_blob_reads_the_same_from_a_new_object_under_a_new_key_on_both_backends() {
    for b in backends() {
        let mut rng = Rng(12);
        for size in [0, 1, CS, CS + 1, 3 * MIB + 17] {
            let ctx = format!("{} {size}", b.name);
            let data = rng.bytes(size);
            let old = b.put(BlobAlgorithm::Chunked, &data, &mut rng).await;
            let open = |location: String, info: BlobInfo| {
                let store = b.store.clone();
                async move {
                    store
                        .open_recorded(
                            &info.rname,
                            &location,
                            BlobAlgorithm::Chunked,
                            info.wrapped.as_ref(),
                            None,
                        )
                        .await
                        .unwrap()
                }
            };
            let location = BlobStore::new_rname();
            let reader = open(old.rname.clone(), old.clone()).await;
            let resealed = b
                .store
                .reseal(reader, &location, &old.sha256plain)
                .await
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            // A local object is in place only once made durable; an S3 one at once.
            assert_eq!(resealed.pending.is_some(), b.server.is_none(), "{ctx}");
            if let Some(pending) = resealed.pending {
                assert!(!b
                    .raw_objects()
                    .await
                    .contains(&b.raw_path(&location).to_string()));
                let done = b.store.make_durable(vec![pending]).await;
                assert!(done.iter().all(Result::is_ok), "{ctx}: {done:?}");
            }
            let new = resealed.info;
            assert_eq!(
                (new.size, &new.sha256plain),
                (old.size, &old.sha256plain),
                "{ctx}"
            );
            assert_ne!(new.wrapped, old.wrapped, "{ctx}");
            assert_ne!(
                b.raw_get(&location).await,
                b.raw_get(&old.rname).await,
                "{ctx}"
            );
            for (at, info) in [(&location, &new), (&old.rname, &old)] {
                let got: Vec<Bytes> = open(at.clone(), info.clone())
                    .await
                    .read_range(0..u64::MAX)
                    .map(|r| r.unwrap())
                    .collect()
                    .await;
                assert!(got.concat() == data, "{ctx}: {at} reads other bytes");
            }
        }
        // A plaintext that is not the one recorded is never sealed anew.
        let before = b.raw_objects().await;
        let data = rng.bytes(2 * CS + 3);
        let info = b.put(BlobAlgorithm::Chunked, &data, &mut rng).await;
        let reader = open_at(&b, &info).await;
        let r = b
            .store
            .reseal(reader, &BlobStore::new_rname(), &sha_hex(b"other"))
            .await;
        assert!(
            matches!(r, Err(BlobError::HashMismatch { .. })),
            "{}: {r:?}",
            b.name
        );
        let mut after = before.clone();
        after.push(b.raw_path(&info.rname).to_string());
        after.sort();
        assert_eq!(b.raw_objects().await, after, "{}", b.name);
    }
}

async fn open_at(b: &Backend, info: &BlobInfo) -> vellum::blob::BlobReader {
    b.store
        .open(&info.rname, info.algorithm, info.wrapped.as_ref())
        .await
        .unwrap()
}
