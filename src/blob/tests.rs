//! Unit tests of the blob module's pure parts and a local smoke test. The full behaviour, on
//! both backends, is covered by `tests/blob_store.rs`.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, StreamExt};

use super::part_writer::{part_size, PART_SIZE};
use super::store::endpoint_is_plain_http;
use super::*;
use crate::crypto::MasterKeys;

fn keys() -> Arc<MasterKeys> {
    Arc::new(MasterKeys::from_raw_keys([("k1".to_string(), [7u8; 32])]).unwrap())
}

#[test]
fn new_rname_has_the_sharded_shape() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let r = BlobStore::new_rname();
        assert_eq!(r.len(), 20, "{r}");
        assert_eq!(&r[..3], &r[17..], "{r}");
        assert!(is_generated_rname(&r), "{r}");
        assert!(validate_rname(&r).is_ok(), "{r}");
        assert!(seen.insert(r));
    }
}

#[test]
fn generated_rname_shape() {
    assert!(is_generated_rname("558/158340da6ed32558"));
    for bad in [
        "559/158340da6ed32558",
        "558/158340DA6ED32558",
        "558/158340da6ed3255",
        "558158340da6ed32558x",
        "558/158340da6ed3g558",
        "",
    ] {
        assert!(!is_generated_rname(bad), "{bad}");
    }
}

#[test]
fn rname_validation() {
    for good in ["a", "558/158340da6ed32558", "x/y.z/w_v-1", "..a", "a.."] {
        assert!(validate_rname(good).is_ok(), "{good}");
    }
    let long = "a".repeat(MAX_RNAME_LEN + 1);
    for bad in [
        "", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "a b", "a#1", "a\\b", "é", "a\0",
        &long,
    ] {
        assert!(
            matches!(validate_rname(bad), Err(BlobError::InvalidName(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn endpoints() {
    for ok_http in [
        "http://127.0.0.1:9000",
        "http://localhost:9000/",
        "HTTP://127.5.6.7",
        "http://[::1]:8014",
        "http://user:pw@127.0.0.1:1/path",
    ] {
        assert!(endpoint_is_plain_http(ok_http).unwrap(), "{ok_http}");
    }
    assert!(!endpoint_is_plain_http("https://s3.example.com").unwrap());
    for bad in [
        "http://s3.example.com",
        "http://10.0.0.1:9000",
        "http://127.0.0.1.evil.com",
        "http://localhost.evil.com",
        "ftp://127.0.0.1",
        "127.0.0.1:9000",
    ] {
        assert!(
            matches!(endpoint_is_plain_http(bad), Err(BlobError::Config(_))),
            "{bad}"
        );
    }
}

#[test]
fn part_sizes_grow_and_stay_above_the_s3_minimum() {
    assert_eq!(part_size(0), PART_SIZE);
    assert_eq!(part_size(999), PART_SIZE);
    assert_eq!(part_size(1000), 2 * PART_SIZE);
    assert_eq!(part_size(9999), 10 * PART_SIZE);
    const { assert!(PART_SIZE >= 5 << 20) };
}

#[test]
fn config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = BlobConfig::local(dir.path());
    let bad = |cfg: BlobConfig| match BlobStore::from_config(&cfg, keys()) {
        Err(BlobError::Config(m)) => m,
        other => panic!("expected a config error, got {other:?}"),
    };
    bad(BlobConfig {
        chunk_size: 3,
        ..base.clone()
    });
    bad(BlobConfig {
        partition: "a/../b".into(),
        ..base.clone()
    });
    let s3 = BlobConfig {
        uses3: true,
        bucket: Some("b".into()),
        aws_endpoint: Some("http://127.0.0.1:1".into()),
        ..base.clone()
    };
    assert!(bad(BlobConfig {
        bucket: None,
        ..s3.clone()
    })
    .contains("FILE_BUCKET"));
    assert!(bad(BlobConfig {
        aws_access_key_id: Some("id".into()),
        ..s3.clone()
    })
    .contains("together"));
    assert!(bad(BlobConfig {
        aws_endpoint: Some("http://example.com".into()),
        ..s3.clone()
    })
    .contains("loopback"));
    let store = BlobStore::from_config(&s3, keys()).unwrap();
    assert!(store.is_s3());
    assert_eq!(store.describe(), "s3://b/");
}

#[test]
fn local_partition_directories_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BlobConfig {
        partition: "/p1/p2/".into(),
        ..BlobConfig::local(dir.path().join("data"))
    };
    let store = BlobStore::from_config(&cfg, keys()).unwrap();
    assert!(dir.path().join("data/blobs/p1/p2").is_dir());
    assert!(!store.is_s3());
    assert!(
        store.describe().ends_with("blobs/p1/p2"),
        "{}",
        store.describe()
    );
    assert_eq!(
        store.location("558/158340da6ed32558").unwrap().as_ref(),
        "p1/p2/558/158340da6ed32558"
    );
    assert!(store.location("../x").is_err());
}

#[test]
fn public_types_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<BlobStore>();
    check::<BlobError>();
    check::<BlobInfo>();
    check::<BlobReader>();
}

/// The HTTP layer spawns handlers that hold these futures and streams.
#[allow(dead_code)]
fn futures_are_send(store: &BlobStore, reader: BlobReader) {
    fn check<T: Send>(_: &T) {}
    let body = stream::iter(Vec::<Result<Bytes, std::io::Error>>::new());
    check(&store.put("a", BlobAlgorithm::Chunked, body, None, None));
    check(&store.open("a", BlobAlgorithm::Chunked, None));
    check(&store.delete("a"));
    check(&store.verify("a", BlobAlgorithm::None, None));
    check(&store.list());
    check(&store.remove_stale_uploads(std::time::Duration::ZERO));
    check(&reader.read_range(0..1));
}

#[tokio::test]
async fn local_smoke_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::from_config(&BlobConfig::local(dir.path()), keys()).unwrap();
    let rname = BlobStore::new_rname();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let body = stream::iter(
        data.chunks(4099)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let info = store
        .put(&rname, BlobAlgorithm::Chunked, body, None, None)
        .await
        .unwrap();
    assert_eq!(info.size, data.len() as u64);
    let wrapped = info.wrapped.clone().unwrap();
    let reader = store
        .open(&rname, BlobAlgorithm::Chunked, Some(&wrapped))
        .await
        .unwrap();
    assert_eq!(reader.size(), data.len() as u64);
    let got: Vec<Bytes> = reader
        .read_range(1000..150_000)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(got.concat(), &data[1000..150_000]);

    // No key, a key for another blob, an unknown name.
    assert!(matches!(
        store.open(&rname, BlobAlgorithm::Chunked, None).await,
        Err(BlobError::MissingKey { .. })
    ));
    let other = store.keys().wrap(&crate::crypto::Dek::generate(), b"other");
    assert!(matches!(
        store
            .open(&rname, BlobAlgorithm::Chunked, Some(&other))
            .await,
        Err(BlobError::Crypto(_))
    ));
    assert!(store
        .open(&BlobStore::new_rname(), BlobAlgorithm::None, None)
        .await
        .unwrap_err()
        .is_not_found());

    // Bad inputs to put store nothing.
    let empty = || stream::iter(Vec::<Result<Bytes, std::io::Error>>::new());
    assert!(matches!(
        store
            .put("x", BlobAlgorithm::None, empty(), Some("abc"), None)
            .await,
        Err(BlobError::BadExpectedHash(_))
    ));
    assert!(matches!(
        store
            .put("../x", BlobAlgorithm::None, empty(), None, None)
            .await,
        Err(BlobError::InvalidName(_))
    ));
    let failing = stream::iter(vec![
        Ok(Bytes::from_static(b"hello")),
        Err(std::io::Error::other("client went away")),
    ]);
    let r2 = BlobStore::new_rname();
    assert!(matches!(
        store
            .put(&r2, BlobAlgorithm::None, failing, None, None)
            .await,
        Err(BlobError::Upload(_))
    ));
    assert!(store
        .open(&r2, BlobAlgorithm::None, None)
        .await
        .unwrap_err()
        .is_not_found());
    store.delete(&rname).await.unwrap();
    store.delete(&rname).await.unwrap();
}

#[tokio::test]
async fn stale_staging_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::from_config(&BlobConfig::local(dir.path()), keys()).unwrap();
    let shard = dir.path().join("blobs/558");
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join("158340da6ed32558#1"), b"partial").unwrap();
    std::fs::write(shard.join("158340da6ed32558"), b"complete").unwrap();
    assert_eq!(
        store
            .remove_stale_uploads(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .remove_stale_uploads(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert!(!shard.join("158340da6ed32558#1").exists());
    assert!(shard.join("158340da6ed32558").exists());
}

#[test]
fn a_full_disk_under_the_blob_store_is_its_own_error_and_answers_507() {
    // object_store's local store wraps the io::Error of the failed write in its own error.
    #[derive(Debug, thiserror::Error)]
    #[error("Unable to copy data to file: {source}")]
    struct CopyFailed {
        source: std::io::Error,
    }
    let wrapped = |io: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(CopyFailed { source: io }),
    };
    let mut full = vec![
        std::io::Error::from(std::io::ErrorKind::StorageFull),
        std::io::Error::from(std::io::ErrorKind::QuotaExceeded),
    ];
    #[cfg(target_os = "linux")]
    full.push(std::io::Error::from_raw_os_error(28)); // ENOSPC
    for io in full {
        let e = BlobError::backend("558/158340da6ed32558", wrapped(io));
        assert!(matches!(e, BlobError::Full(_)), "{e:?}");
        let e = crate::error::Error::from(e);
        assert_eq!(
            (e.kind, e.code.as_str()),
            (
                crate::error::Kind::InsufficientStorage,
                "insufficient_storage"
            )
        );
    }
    let other = BlobError::backend(
        "558/158340da6ed32558",
        wrapped(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
    );
    assert!(matches!(other, BlobError::Backend(_)), "{other:?}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Files under `dir` whose names hold a `#`: staging files of unfinished local uploads.
fn staging_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains('#'))
        })
        .collect()
}

/// Bytes 0..n of a fixed pattern, in pieces of uneven sizes (as a body arrives).
fn uneven_body(n: usize) -> (Vec<u8>, Vec<Result<Bytes, std::io::Error>>) {
    let data: Vec<u8> = (0..n as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (mut pieces, mut at, mut k) = (Vec::new(), 0, 0u64);
    while at < n {
        k = k.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let len = (1 + (k >> 40) as usize % 300_000).min(n - at);
        pieces.push(Ok(Bytes::copy_from_slice(&data[at..at + len])));
        at += len;
    }
    (data, pieces)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_local_upload_goes_through_the_threads_and_round_trips() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::from_config(&BlobConfig::local(dir.path()), keys()).unwrap();
    // Three parts and more, many batches, the last one partial.
    let (data, pieces) = uneven_body(2 * PART_SIZE + 3 * 65_536 + 12_345);
    let sha = hex::encode(Sha256::digest(&data));
    for algorithm in [BlobAlgorithm::Chunked, BlobAlgorithm::None] {
        let rname = BlobStore::new_rname();
        let body = stream::iter(pieces.iter().map(|p| Ok(p.as_ref().unwrap().clone())));
        let info = store
            .put(&rname, algorithm, body, Some(&sha), None)
            .await
            .unwrap();
        assert_eq!((info.size, &info.sha256plain), (data.len() as u64, &sha));
        let reader = store
            .open(&rname, algorithm, info.wrapped.as_ref())
            .await
            .unwrap();
        let got: Vec<Bytes> = reader
            .read_range(0..data.len() as u64)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert!(got.concat() == data, "{algorithm:?}");
        assert_eq!(staging_files(dir.path()), Vec::<std::path::PathBuf>::new());
    }
    // A wrong expected hash stores nothing, and leaves no staging file.
    let rname = BlobStore::new_rname();
    let body = stream::iter(pieces.iter().map(|p| Ok(p.as_ref().unwrap().clone())));
    let wrong = "0".repeat(64);
    let r = store
        .put(&rname, BlobAlgorithm::Chunked, body, Some(&wrong), None)
        .await;
    assert!(matches!(r, Err(BlobError::HashMismatch { .. })), "{r:?}");
    assert!(store
        .open(&rname, BlobAlgorithm::None, None)
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(staging_files(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_multipart_local_upload_leaves_no_staging_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::from_config(&BlobConfig::local(dir.path()), keys()).unwrap();
    let (_, pieces) = uneven_body(3 * PART_SIZE);
    // The body sends a few parts, then stalls: the upload is dropped midway.
    let body = stream::iter(pieces).chain(stream::pending());
    let rname = BlobStore::new_rname();
    let mut put = Box::pin(store.put(&rname, BlobAlgorithm::Chunked, body, None, None));
    // Until its first part is being written (the staging file exists).
    for _ in 0..600 {
        tokio::select! {
            r = &mut put => panic!("the body never ends, yet: {r:?}"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        if !staging_files(dir.path()).is_empty() {
            break;
        }
    }
    assert_eq!(staging_files(dir.path()).len(), 1);
    drop(put);
    // The staging file is removed in the background.
    for _ in 0..100 {
        if staging_files(dir.path()).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(staging_files(dir.path()), Vec::<std::path::PathBuf>::new());
    assert!(store
        .open(&rname, BlobAlgorithm::None, None)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_upload_whose_file_cannot_be_written_fails_as_the_servers_fault() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::from_config(&BlobConfig::local(dir.path()), keys()).unwrap();
    let rname = BlobStore::new_rname();
    // The blob's directory is taken by a file: the seal thread cannot create its staging file.
    // Local blobs live under <data dir>/blobs.
    let location = dir
        .path()
        .join("blobs")
        .join(store.location(&rname).unwrap().as_ref());
    let partition = location.parent().unwrap();
    std::fs::create_dir_all(partition.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir(partition);
    std::fs::write(partition, b"not a directory").unwrap();
    let (_, pieces) = uneven_body(3 << 20);
    let r = store
        .put(
            &rname,
            BlobAlgorithm::Chunked,
            stream::iter(pieces),
            None,
            None,
        )
        .await;
    let e = r.unwrap_err();
    assert!(matches!(e, BlobError::Backend(_)), "{e:?}");
    let e = crate::error::Error::from(e);
    assert_eq!(e.kind, crate::error::Kind::Unavailable, "{e:?}");
    assert_eq!(std::fs::read(partition).unwrap(), b"not a directory");
    assert_eq!(staging_files(dir.path()), Vec::<std::path::PathBuf>::new());
}

/// The file under `dir` whose path ends with `name` (a local blob's object).
fn object_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    files_under(dir)
        .into_iter()
        .find(|p| p.ends_with(name))
        .unwrap_or_else(|| panic!("no object {name} under {}", dir.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_blob_resealed_reads_the_same_from_its_new_object_under_a_new_key_only() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::from_config(&BlobConfig::local(dir.path()), keys()).unwrap();
    let chunk = crate::crypto::DEFAULT_CHUNK_SIZE as usize;
    for n in [0, 1, chunk, chunk + 1, 3 * chunk + 5, 2 * PART_SIZE + 77] {
        let (data, pieces) = uneven_body(n);
        let sha = hex::encode(Sha256::digest(&data));
        let rname = BlobStore::new_rname();
        let old = store
            .put(
                &rname,
                BlobAlgorithm::Chunked,
                stream::iter(pieces),
                None,
                None,
            )
            .await
            .unwrap();
        let old_key = old.wrapped.clone().unwrap();
        // The whole plaintext of `location` read under `key`, or the first error.
        let read = |location: String, key: crate::crypto::Wrapped| {
            let (store, rname) = (store.clone(), rname.clone());
            async move {
                let reader = store
                    .open_recorded(&rname, &location, BlobAlgorithm::Chunked, Some(&key), None)
                    .await?;
                let pieces: Vec<Result<Bytes, BlobError>> =
                    reader.read_range(0..u64::MAX).collect().await;
                pieces
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
                    .map(|p| p.concat())
            }
        };
        let reader = store
            .open_recorded(&rname, &rname, BlobAlgorithm::Chunked, Some(&old_key), None)
            .await
            .unwrap();
        let location = BlobStore::new_rname();
        let resealed = store.reseal(reader, &location, &sha).await.unwrap();
        let done = store.make_durable(vec![resealed.pending.unwrap()]).await;
        assert!(done.iter().all(Result::is_ok), "{done:?}");
        let new = resealed.info;
        assert_eq!((new.size, &new.sha256plain), (n as u64, &sha), "{n} bytes");
        let new_key = new.wrapped.clone().unwrap();
        assert_ne!(new_key, old_key);
        assert!(
            read(location.clone(), new_key).await.unwrap() == data,
            "{n} bytes"
        );
        // The old key opens the old object only (an empty blob has no chunk to open).
        if n > 0 {
            assert!(read(location, old_key.clone()).await.is_err(), "{n} bytes");
        }
        assert!(read(rname.clone(), old_key).await.unwrap() == data);
    }
    assert_eq!(staging_files(dir.path()), Vec::<std::path::PathBuf>::new());

    // A wrong expected hash, or stored bytes that do not open, leave nothing behind.
    let (data, pieces) = uneven_body(3 * chunk + 5);
    let sha = hex::encode(Sha256::digest(&data));
    let rname = BlobStore::new_rname();
    let info = store
        .put(
            &rname,
            BlobAlgorithm::Chunked,
            stream::iter(pieces),
            None,
            None,
        )
        .await
        .unwrap();
    let key = info.wrapped.unwrap();
    let reader = || store.open_recorded(&rname, &rname, BlobAlgorithm::Chunked, Some(&key), None);
    let location = BlobStore::new_rname();
    let r = store
        .reseal(reader().await.unwrap(), &location, &"0".repeat(64))
        .await;
    assert!(matches!(r, Err(BlobError::HashMismatch { .. })), "{r:?}");
    let file = object_file(dir.path(), rname.rsplit('/').next().unwrap());
    let mut stored = std::fs::read(&file).unwrap();
    stored[crate::crypto::HEADER_LEN + chunk + 100] ^= 1;
    std::fs::write(&file, &stored).unwrap();
    let r = store.reseal(reader().await.unwrap(), &location, &sha).await;
    assert!(matches!(r, Err(BlobError::Integrity { .. })), "{r:?}");
    assert!(store
        .open(&location, BlobAlgorithm::None, None)
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(staging_files(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_objects_made_durable_together_are_in_place_and_one_dropped_instead_leaves_nothing() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::from_config(&BlobConfig::local(dir.path()), keys()).unwrap();
    let mut pending = Vec::new();
    let mut expected = Vec::new();
    for k in 0..5 {
        let (data, pieces) = uneven_body(100_000 + k * 70_000);
        let sha = hex::encode(Sha256::digest(&data));
        let rname = BlobStore::new_rname();
        let old = store
            .put(
                &rname,
                BlobAlgorithm::Chunked,
                stream::iter(pieces),
                None,
                None,
            )
            .await
            .unwrap();
        let reader = store
            .open_recorded(
                &rname,
                &rname,
                BlobAlgorithm::Chunked,
                old.wrapped.as_ref(),
                None,
            )
            .await
            .unwrap();
        let location = BlobStore::new_rname();
        let resealed = store.reseal(reader, &location, &sha).await.unwrap();
        pending.push(resealed.pending.unwrap());
        expected.push((location, resealed.info, data));
    }
    // The last one is given up: dropped, it is not in place and leaves no file.
    drop(pending.pop());
    let (gone, _, _) = expected.pop().unwrap();
    let done = store.make_durable(pending).await;
    assert_eq!(done.len(), 4);
    assert!(done.iter().all(Result::is_ok), "{done:?}");
    for (location, info, data) in expected {
        let reader = store
            .open_recorded(
                &info.rname,
                &location,
                BlobAlgorithm::Chunked,
                info.wrapped.as_ref(),
                None,
            )
            .await
            .unwrap();
        let got: Vec<Bytes> = reader
            .read_range(0..u64::MAX)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert!(got.concat() == data);
    }
    // Removal of a dropped file runs in the background.
    for _ in 0..200 {
        if staging_files(dir.path()).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(staging_files(dir.path()), Vec::<std::path::PathBuf>::new());
    assert!(store
        .open(&gone, BlobAlgorithm::None, None)
        .await
        .unwrap_err()
        .is_not_found());
}
