//! A bound on what the multipart parser buffers outside file contents.
//!
//! multer 3.1 keeps a part's header block in memory until it sees the CRLFCRLF that ends it,
//! and the preamble until it sees the first boundary, with no limit: a 256 MB header block
//! without an end cost 257 MiB of memory (and multer searches its whole buffer again on
//! every poll). [`limit_part_headers`] sits between the request body and multer, follows the
//! body the way multer parses it (preamble, boundary, header block, data, next boundary) and
//! fails the body as soon as a preamble or a header block grows past the limit, before the
//! chunk that crosses it reaches multer. Chunks pass through as they are (no copy); the only
//! work per chunk is multer's own boundary search, done with a precompiled `memmem` finder.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use memchr::memmem::Finder;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Longest boundary accepted: RFC 2046 allows 70 characters; a little slack for clients
/// that exceed it. The boundary is searched for in every byte of the body.
const MAX_BOUNDARY: usize = 200;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitError {
    #[error(
        "a multipart part's header block is over the {limit}-byte limit \
         (MAX_PART_HEADER_BYTES) or has no end (a blank line)"
    )]
    PartHeaderTooLarge { limit: usize },
    #[error(
        "the multipart body has more than {limit} bytes before its first boundary \
         (MAX_PART_HEADER_BYTES); is the boundary in Content-Type right?"
    )]
    PreambleTooLarge { limit: usize },
    #[error("the multipart boundary is {len} bytes long; at most {MAX_BOUNDARY} are accepted")]
    BoundaryTooLong { len: usize },
}

impl LimitError {
    pub fn code(&self) -> crate::error::Code {
        match self {
            LimitError::PartHeaderTooLarge { .. } => crate::error::Code::PartHeaderTooLarge,
            LimitError::PreambleTooLarge { .. } => crate::error::Code::MultipartPreambleTooLarge,
            LimitError::BoundaryTooLong { .. } => crate::error::Code::BadContentType,
        }
    }
}

/// Where the body is, in multer's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the first `--boundary`.
    Preamble,
    /// Just after a boundary: `--` would close the body; anything else starts a part.
    /// Holds how many `-` were seen.
    AfterBoundary(u8),
    /// The rest of the boundary line, up to its CRLF.
    BoundaryLine,
    /// A part's headers, up to the CRLFCRLF that ends them.
    Headers,
    /// A part's content, up to CRLF `--boundary`.
    Data,
    /// After the closing boundary: multer reads no further.
    Epilogue,
}

/// Wraps a body stream; see the module comment. `limit` bounds the preamble and each
/// part's header block (from the end of its boundary to its CRLFCRLF).
pub fn limit_part_headers<S, E>(inner: S, boundary: &str, limit: usize) -> PartHeaderLimit<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    let b = boundary.as_bytes();
    PartHeaderLimit {
        inner,
        limit,
        at: At::Preamble,
        count: 0,
        carry: Vec::new(),
        first: Finder::new(&[b"--", b].concat()).into_owned(),
        delimiter: Finder::new(&[b"\r\n--", b].concat()).into_owned(),
        crlf: Finder::new(b"\r\n").into_owned(),
        blank_line: Finder::new(b"\r\n\r\n").into_owned(),
        failed: (b.len() > MAX_BOUNDARY).then_some(LimitError::BoundaryTooLong { len: b.len() }),
        done: false,
    }
}

pub struct PartHeaderLimit<S> {
    inner: S,
    limit: usize,
    at: At,
    /// Bytes of the current preamble or header block seen so far.
    count: usize,
    /// The tail of the bytes already scanned that could begin the pattern being searched
    /// for (shorter than it), so a pattern split across two chunks is found.
    carry: Vec<u8>,
    first: Finder<'static>,
    delimiter: Finder<'static>,
    crlf: Finder<'static>,
    blank_line: Finder<'static>,
    /// An error to report at the next poll.
    failed: Option<LimitError>,
    done: bool,
}

impl<S> PartHeaderLimit<S> {
    /// Follows the parser through `chunk`; an error means the chunk must not reach it.
    fn scan(&mut self, chunk: &[u8]) -> Result<(), LimitError> {
        let mut pos = 0;
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            match self.at {
                At::Epilogue => return Ok(()),
                At::AfterBoundary(dashes) => {
                    if rest[0] == b'-' && dashes == 0 {
                        self.at = At::AfterBoundary(1);
                        pos += 1;
                    } else if rest[0] == b'-' {
                        self.at = At::Epilogue;
                        pos += 1;
                    } else {
                        // Not the closing `--`: multer reads padding and a CRLF next, then
                        // the headers; the bytes count towards the header block.
                        self.at = At::BoundaryLine;
                        self.count = usize::from(dashes);
                    }
                }
                At::Preamble | At::BoundaryLine | At::Headers | At::Data => {
                    let (finder, next) = match self.at {
                        At::Preamble => (&self.first, At::AfterBoundary(0)),
                        At::BoundaryLine => (&self.crlf, At::Headers),
                        At::Headers => (&self.blank_line, At::Data),
                        _ => (&self.delimiter, At::AfterBoundary(0)),
                    };
                    let found = find(&mut self.carry, finder, rest);
                    let used = found.unwrap_or(rest.len());
                    if self.at != At::Data {
                        self.count += used;
                        // The preamble's count ends with the first `--boundary`, which is not
                        // part of it: `limit` bytes of preamble are allowed, and a boundary cut
                        // between two chunks is not taken for more preamble.
                        let allowed = match self.at {
                            At::Preamble => self.limit + self.first.needle().len(),
                            _ => self.limit,
                        };
                        if self.count > allowed {
                            return Err(match self.at {
                                At::Preamble => LimitError::PreambleTooLarge { limit: self.limit },
                                _ => LimitError::PartHeaderTooLarge { limit: self.limit },
                            });
                        }
                    }
                    if found.is_some() {
                        if next != At::Headers {
                            self.count = 0;
                        }
                        self.at = next;
                    }
                    pos += used;
                }
            }
        }
        Ok(())
    }
}

/// Searches `hay` for `finder`'s needle, continuing a search whose earlier bytes' tail is in
/// `carry`. Returns the index in `hay` just past the match and clears `carry`; or `None`,
/// keeping in `carry` the bytes a later match could start with.
fn find(carry: &mut Vec<u8>, finder: &Finder<'_>, hay: &[u8]) -> Option<usize> {
    let n = finder.needle().len();
    if !carry.is_empty() {
        // Only a match that starts in `carry` needs the seam; one that starts in `hay` is
        // found below.
        let take = hay.len().min(n - 1);
        let seam = [carry.as_slice(), &hay[..take]].concat();
        if let Some(i) = finder.find(&seam) {
            let end = i + n - carry.len();
            carry.clear();
            return Some(end);
        }
    }
    if let Some(i) = finder.find(hay) {
        carry.clear();
        return Some(i + n);
    }
    let keep = n - 1;
    if hay.len() >= keep {
        carry.clear();
        carry.extend_from_slice(&hay[hay.len() - keep..]);
    } else {
        carry.extend_from_slice(hay);
        let excess = carry.len().saturating_sub(keep);
        carry.drain(..excess);
    }
    None
}

impl<S, E> Stream for PartHeaderLimit<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(e) = this.failed.take() {
            this.done = true;
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.scan(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(e) => {
                    this.done = true;
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            },
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// Runs `body`, cut into pieces of `piece` bytes, through the limit.
    async fn run(body: &[u8], piece: usize, limit: usize) -> Result<usize, String> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut s = limit_part_headers(futures_util::stream::iter(chunks), "XyZ", limit);
        let mut n = 0;
        while let Some(item) = s.next().await {
            n += item.map_err(|e| e.to_string())?.len();
        }
        Ok(n)
    }

    fn part(headers: &str, data: &[u8]) -> Vec<u8> {
        [b"--XyZ\r\n", headers.as_bytes(), b"\r\n\r\n", data, b"\r\n"].concat()
    }

    #[tokio::test]
    async fn well_formed_bodies_pass_whole_at_any_chunking() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = part("Content-Disposition: form-data; name=\"metadata\"", b"[]");
        // File content that holds near-misses of every pattern.
        let tricky = [&data[..], b"\r\n--XyY\r\n\r\n--Xy", &data[..100]].concat();
        body.extend(part("Content-Disposition: form-data; name=\"f\"", &tricky));
        body.extend(b"--XyZ--\r\nepilogue");
        for piece in [1, 2, 3, 7, 64, 4096, body.len()] {
            assert_eq!(
                run(&body, piece, 100).await,
                Ok(body.len()),
                "piece {piece}"
            );
        }
    }

    #[tokio::test]
    async fn a_header_block_without_an_end_fails_once_over_the_limit() {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nX: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', 10_000));
        for piece in [1, 100, 10_000] {
            let e = run(&body, piece, 1024).await.unwrap_err();
            assert!(e.contains("header block"), "{e}");
        }
        // The same headers within the limit are fine.
        assert!(run(&part("X: y", b"data"), 5, 1024).await.is_ok());
    }

    #[tokio::test]
    async fn a_later_part_is_held_to_the_limit_too() {
        let mut body = part("Content-Disposition: form-data; name=\"a\"", &[0u8; 5000]);
        body.extend(b"--XyZ\r\n");
        body.extend(std::iter::repeat_n(b'h', 5000));
        let e = run(&body, 333, 1024).await.unwrap_err();
        assert!(e.contains("header block"), "{e}");
    }

    #[tokio::test]
    async fn an_empty_header_block_is_searched_the_way_multer_does() {
        // After the boundary line's CRLF, multer looks for CRLFCRLF: a bare CRLF right after
        // it does not end the headers, so the bytes that follow are still headers.
        let mut body = b"--XyZ\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', 5000));
        assert!(run(&body, 100, 1024).await.is_err());
    }

    #[tokio::test]
    async fn a_preamble_is_bounded() {
        let mut body = vec![b'p'; 5000];
        body.extend(part("X: y", b"d"));
        let e = run(&body, 512, 1024).await.unwrap_err();
        assert!(e.contains("before its first boundary"), "{e}");
        let mut small = b"preamble\r\n".to_vec();
        small.extend(part("X: y", b"d"));
        assert!(run(&small, 3, 1024).await.is_ok());
    }

    /// Found by the generated bodies below: the first boundary was counted as preamble, so a
    /// preamble a few bytes under the limit was refused as "more than {limit} bytes before
    /// its first boundary".
    #[tokio::test]
    async fn a_preamble_of_exactly_the_limit_passes_at_any_chunking() {
        for (len, ok) in [(1020, true), (1024, true), (1025, false)] {
            let mut body = vec![b'p'; len];
            body.extend(part("X: y", b"d"));
            body.extend(b"--XyZ--\r\n");
            for piece in [1, 3, 1021, 1023, 1024, 1025, body.len()] {
                let r = run(&body, piece, 1024).await;
                assert_eq!(r.is_ok(), ok, "{len} bytes, pieces of {piece}: {r:?}");
            }
        }
    }

    #[tokio::test]
    async fn multer_reads_the_same_fields_through_the_limit() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut body = b"preamble\r\n".to_vec();
        body.extend(part(
            "Content-Disposition: form-data; name=\"metadata\"",
            b"[{}]",
        ));
        body.extend(part(
            "Content-Disposition: form-data; name=\"a\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream",
            &data,
        ));
        body.extend(part("Content-Disposition: form-data; name=\"b\"", b""));
        body.extend(b"--XyZ--\r\n");
        for piece in [1, 5, 4096, 65_536] {
            let chunks: Vec<Result<Bytes, std::io::Error>> = body
                .chunks(piece)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let limited = limit_part_headers(futures_util::stream::iter(chunks), "XyZ", 1024);
            let mut mp = multer::Multipart::new(limited, "XyZ");
            let mut fields = Vec::new();
            while let Some(f) = mp.next_field().await.unwrap() {
                let name = f.name().unwrap().to_string();
                fields.push((name, f.bytes().await.unwrap().len()));
            }
            let want =
                [("metadata", 4), ("a", data.len()), ("b", 0)].map(|(n, l)| (n.to_string(), l));
            assert_eq!(fields, want, "piece {piece}");
        }
    }

    /// Generated bodies (the fuzz harness's multipart target, at the level of the stream): a
    /// small splitmix64 generator, seeded so a failure names its seed; `VELLUM_FUZZ_CASES`
    /// runs more.
    mod generated {
        use super::*;

        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
            fn below(&mut self, n: usize) -> usize {
                (self.next() % n.max(1) as u64) as usize
            }
        }

        const LIMIT: usize = 200;

        /// A well-formed body, and whether its preamble and every header block (from the end
        /// of a boundary to its blank line) are within `LIMIT`.
        fn body(rng: &mut Rng) -> (Vec<u8>, bool) {
            let mut b = vec![b'p'; [0, 10, LIMIT - 1, LIMIT, LIMIT + 1][rng.below(5)]];
            let mut ok = b.len() <= LIMIT;
            for _ in 0..rng.below(4) + 1 {
                b.extend(b"--XyZ\r\n");
                let mut block = 2;
                for _ in 0..rng.below(3) + 1 {
                    let n = [1, 20, LIMIT / 2, LIMIT - 12][rng.below(4)];
                    let h = format!("X: {}", "h".repeat(n));
                    block += h.len() + 2;
                    b.extend(h.as_bytes());
                    b.extend(b"\r\n");
                }
                b.extend(b"\r\n");
                block += 2;
                ok &= block <= LIMIT;
                // Content with near misses of every pattern, never the delimiter itself.
                for _ in 0..rng.below(8) {
                    let piece: &[u8] = [
                        &b"data"[..],
                        b"\r\n",
                        b"\r\n\r\n",
                        b"\r\n--XyY",
                        b"x--XyZ",
                        b"\r\n-x",
                        b"\r",
                    ][rng.below(7)];
                    b.extend(piece);
                }
                b.extend(b"\r\n");
            }
            b.extend(b"--XyZ--\r\nepilogue");
            (b, ok)
        }

        /// Flips, inserts and cuts a few bytes.
        fn damage(rng: &mut Rng, b: &mut Vec<u8>) {
            for _ in 0..rng.below(4) + 1 {
                let at = rng.below(b.len() + 1);
                match rng.below(4) {
                    0 if at < b.len() => b[at] = b"\r\n-XyZ"[rng.below(6)],
                    1 => b
                        .splice(at..at, b"\r\n--XyZ".iter().copied())
                        .for_each(drop),
                    2 => b.truncate(at),
                    _ => b
                        .splice(at..at, std::iter::repeat_n(b'h', rng.below(300)))
                        .for_each(drop),
                }
            }
        }

        async fn through(body: &[u8], sizes: &mut dyn FnMut() -> usize) -> Result<Vec<u8>, String> {
            let mut chunks = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                let n = sizes().clamp(1, rest.len());
                chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(&rest[..n])));
                rest = &rest[n..];
            }
            let mut s = limit_part_headers(futures_util::stream::iter(chunks), "XyZ", LIMIT);
            let mut out = Vec::new();
            while let Some(item) = s.next().await {
                out.extend_from_slice(&item.map_err(|e| e.to_string())?);
            }
            Ok(out)
        }

        #[tokio::test]
        async fn the_verdict_does_not_depend_on_how_the_body_is_cut_and_bodies_pass_unchanged() {
            let cases: u64 = std::env::var("VELLUM_FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(400);
            for seed in 0..cases {
                let mut rng = Rng(seed ^ 0x6d75_6c74_6970_6172);
                let (mut b, within) = body(&mut rng);
                let damaged = rng.below(2) == 0;
                if damaged {
                    damage(&mut rng, &mut b);
                }
                let whole = through(&b, &mut || usize::MAX).await;
                if let Ok(out) = &whole {
                    assert_eq!(out, &b, "seed {seed}: the bytes changed");
                }
                if !damaged {
                    assert_eq!(whole.is_ok(), within, "seed {seed}: {whole:?}");
                }
                for piece in [1, 2, 3, 5, 64] {
                    let cut = through(&b, &mut || piece).await;
                    assert_eq!(cut, whole, "seed {seed}, pieces of {piece}");
                }
                let mut r = Rng(seed);
                let cut = through(&b, &mut || r.below(40) + 1).await;
                assert_eq!(cut, whole, "seed {seed}, random pieces");
                // What passes, multer reads to its end without panicking.
                if whole.is_ok() {
                    let chunks = vec![Ok::<_, std::io::Error>(Bytes::from(b.clone()))];
                    let limited =
                        limit_part_headers(futures_util::stream::iter(chunks), "XyZ", LIMIT);
                    let mut mp = multer::Multipart::new(limited, "XyZ");
                    while let Ok(Some(f)) = mp.next_field().await {
                        let _ = f.bytes().await;
                    }
                }
            }
        }
    }

    #[test]
    fn a_split_pattern_is_found_across_chunks() {
        let f = Finder::new(b"\r\n--XyZ").into_owned();
        let mut carry = Vec::new();
        assert_eq!(find(&mut carry, &f, b"abc\r\n-"), None);
        assert_eq!(find(&mut carry, &f, b"-X"), None);
        assert_eq!(find(&mut carry, &f, b"yZrest"), Some(2));
        assert!(carry.is_empty());
    }
}
