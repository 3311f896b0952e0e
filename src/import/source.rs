//! Local file contents: streamed from disk into a request body (never read whole into
//! memory), hashed on the way, and hashed alone to decide whether a file is already there.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Bytes read from disk per step (the server's blob chunk size).
const CHUNK: usize = 64 << 10;

/// A file that did not match what the walk saw: it changed, vanished or cannot be read.
#[derive(Debug, Clone)]
pub struct ReadFailure {
    /// Which file part of the request (its position among the parts).
    pub part: usize,
    pub message: String,
}

/// What a request's file parts report back while they stream.
#[derive(Debug, Default)]
pub struct Tally {
    /// Bytes handed to the HTTP client so far in this attempt.
    pub sent: AtomicU64,
    /// The first file that failed to read.
    pub failure: Mutex<Option<ReadFailure>>,
}

/// Reading state of one file part. The file is opened on the first poll, so a request of
/// a thousand files holds one descriptor at a time.
struct Reader {
    path: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    size: u64,
    read: u64,
    done: bool,
}

impl Reader {
    fn new(path: PathBuf, size: u64) -> Self {
        Reader {
            path,
            file: None,
            hasher: Sha256::new(),
            size,
            read: 0,
            done: false,
        }
    }
}

fn changed(what: &str) -> io::Error {
    io::Error::other(format!("the file {what} while it was being imported"))
}

/// One step: up to CHUNK bytes (blocking I/O). Asks for one byte more than the walk's size
/// so that a file that grew is noticed, and ends at end of file.
fn step(mut r: Reader) -> io::Result<(Option<Bytes>, Reader)> {
    if r.done {
        return Ok((None, r));
    }
    if r.file.is_none() {
        r.file = Some(File::open(&r.path)?);
    }
    let f = r.file.as_mut().expect("opened above");
    let remaining = r.size - r.read;
    let cap = (CHUNK as u64).min(remaining + 1) as usize;
    let mut buf = vec![0u8; cap];
    let mut n = 0;
    let mut eof = false;
    while n < cap {
        match f.read(&mut buf[n..]) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if n as u64 > remaining {
        return Err(changed("grew"));
    }
    if eof && (n as u64) < remaining {
        return Err(changed("shrank"));
    }
    buf.truncate(n);
    r.hasher.update(&buf);
    r.read += n as u64;
    if eof {
        r.done = true;
        r.file = None;
    }
    Ok(((n > 0).then(|| Bytes::from(buf)), r))
}

/// A request body streaming `path`, which must have exactly `size` bytes (the part's
/// declared length). When it ends, `digest` holds its sha256 (hex), to be compared with
/// the `sha256plain` the server records. A read failure is reported in `tally`.
pub fn file_body(
    path: PathBuf,
    size: u64,
    part: usize,
    digest: Arc<OnceLock<String>>,
    tally: Arc<Tally>,
    progress: Arc<AtomicU64>,
) -> reqwest::Body {
    let reader = Reader::new(path, size);
    let stream = futures_util::stream::try_unfold(reader, move |r| {
        let (digest, tally, progress) = (digest.clone(), tally.clone(), progress.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || step(r))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
            match out {
                Ok((Some(chunk), r)) => {
                    tally.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Ok(Some((chunk, r)))
                }
                Ok((None, r)) => {
                    let _ = digest.set(hex::encode(r.hasher.finalize()));
                    Ok(None)
                }
                Err(e) => {
                    let mut f = tally.failure.lock().unwrap_or_else(|p| p.into_inner());
                    if f.is_none() {
                        *f = Some(ReadFailure {
                            part,
                            message: e.to_string(),
                        });
                    }
                    Err(e)
                }
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// The sha256 (hex) and length of a file, read in chunks (blocking).
pub fn hash_file(path: &std::path::Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hex::encode(h.finalize()), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: PathBuf, size: u64) -> io::Result<(Vec<u8>, String)> {
        let mut r = Reader::new(path, size);
        let mut out = Vec::new();
        loop {
            let (chunk, next) = step(r)?;
            r = next;
            match chunk {
                Some(c) => out.extend_from_slice(&c),
                None => return Ok((out, hex::encode(r.hasher.finalize()))),
            }
        }
    }

    #[test]
    fn a_file_streams_in_chunks_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0usize, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let p = dir.path().join(format!("f{size}"));
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&p, &data).unwrap();
            let (got, hash) = read_all(p.clone(), size as u64).unwrap();
            assert_eq!(got, data, "size {size}");
            assert_eq!(hash, hex::encode(Sha256::digest(&data)));
            assert_eq!(hash_file(&p).unwrap(), (hash, size as u64));
        }
    }

    #[test]
    fn a_file_that_changed_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert!(read_all(p.clone(), 4).is_err());
        assert!(read_all(p.clone(), 6).is_err());
        assert!(read_all(dir.path().join("missing"), 1).is_err());
    }
}
