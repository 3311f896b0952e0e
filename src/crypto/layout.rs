//! The blob header and the byte arithmetic of the chunked format (see the module docs of
//! `crate::crypto` for the layout). Nothing here touches key material.

use std::ops::{Range, RangeInclusive};

use super::{CryptoError, Result};

/// Magic bytes at the start of every encrypted blob. DO NOT CHANGE (on disk).
pub const MAGIC: [u8; 4] = *b"VLMB";
/// Format version written by this code. DO NOT CHANGE the meaning of version 1 (on disk);
/// a new layout gets a new number and keeps `MAGIC ‖ version` as its first five bytes.
pub const FORMAT_VERSION: u8 = 1;
/// Length of a version-1 header.
pub const HEADER_LEN: usize = 16;
/// Length of the GCM tag after every chunk.
pub const TAG_LEN: usize = 16;
/// Length of the random per-blob nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Plaintext bytes per chunk used for new blobs unless the caller picks another size.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size accepted in a header (a sanity bound, not a security one).
pub const MIN_CHUNK_SIZE: u32 = 16;
/// Largest chunk size accepted in a header: bounds what one chunk costs a reader in memory.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Most chunks a blob can have: the nonce's counter is 32 bits.
pub const MAX_CHUNKS: u64 = 1 << 32;

const TAG: u64 = TAG_LEN as u64;
const HDR: u64 = HEADER_LEN as u64;

/// The parsed header of an encrypted blob. The nonce prefix is not secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    chunk_size: u32,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl Header {
    pub(crate) fn new(chunk_size: u32, nonce_prefix: [u8; NONCE_PREFIX_LEN]) -> Result<Self> {
        check_chunk_size(chunk_size)?;
        Ok(Self {
            chunk_size,
            nonce_prefix,
        })
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The per-blob nonce prefix.
    pub fn nonce_prefix(&self) -> [u8; NONCE_PREFIX_LEN] {
        self.nonce_prefix
    }

    /// The 16 header bytes as stored.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = FORMAT_VERSION;
        out[5..9].copy_from_slice(&self.chunk_size.to_be_bytes());
        out[9..16].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Parses a header. `bytes` must be exactly [`HEADER_LEN`] bytes long (the caller reads
    /// that many bytes from the start of the blob). The header is *also* authenticated by every
    /// chunk, so a header that parses but was tampered with still fails at the first chunk.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 5 {
            return Err(CryptoError::BadHeader("shorter than the magic and version"));
        }
        if bytes[0..4] != MAGIC {
            return Err(CryptoError::BadHeader(
                "not an encrypted Vellum blob (bad magic)",
            ));
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(CryptoError::BadHeader("unknown format version"));
        }
        if bytes.len() != HEADER_LEN {
            return Err(CryptoError::BadHeader(
                "wrong length for a version-1 header",
            ));
        }
        let chunk_size = u32::from_be_bytes(bytes[5..9].try_into().expect("4 bytes"));
        if check_chunk_size(chunk_size).is_err() {
            return Err(CryptoError::BadHeader("chunk size out of range"));
        }
        let nonce_prefix = bytes[9..16].try_into().expect("7 bytes");
        Ok(Self {
            chunk_size,
            nonce_prefix,
        })
    }
}

pub(crate) fn check_chunk_size(chunk_size: u32) -> Result<()> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(CryptoError::BadChunkSize(chunk_size))
    }
}

/// Where every byte of an encrypted blob is, from the plaintext length and chunk size alone.
///
/// Offsets into the *stored* blob (the `ciphertext_*` methods) include the header, so they can
/// be used directly as object-store byte ranges. A typical Range read of plaintext bytes
/// `a..b` of a blob whose stored size is `s`:
///
/// 1. read the first [`HEADER_LEN`] bytes → [`Header`] (or keep it cached) →
///    `chunk_size`, and a [`super::Decryptor`];
/// 2. `layout = BlobLayout::from_ciphertext_len(s, chunk_size)?` (Content-Length of the whole
///    file is `layout.plain_len()`);
/// 3. `chunks = layout.chunks_for_plain_range(a..b)` → fetch
///    `layout.ciphertext_range_for_chunks(first, last)?` and feed it to
///    [`super::ChunkOpener::for_chunks`] (or open each chunk with
///    [`super::Decryptor::open_chunk`], `is_last = layout.is_last_chunk(i)`);
/// 4. trim: chunk `i` holds plaintext `layout.plain_range_of_chunk(i)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLayout {
    plain_len: u64,
    chunk_size: u32,
}

impl BlobLayout {
    /// The layout of a blob of `plain_len` plaintext bytes.
    pub fn new(plain_len: u64, chunk_size: u32) -> Result<Self> {
        check_chunk_size(chunk_size)?;
        let layout = Self {
            plain_len,
            chunk_size,
        };
        if layout.chunk_count() > MAX_CHUNKS {
            return Err(CryptoError::TooLarge);
        }
        // Make sure the stored length fits in a u64 so the other methods cannot overflow.
        layout
            .checked_ciphertext_len()
            .ok_or(CryptoError::TooLarge)?;
        Ok(layout)
    }

    /// The layout of a stored blob of `ciphertext_len` bytes (header included). Rejects
    /// lengths that no blob of this format can have: shorter than header + one tag, a final
    /// chunk shorter than a tag, or an empty final chunk after full ones.
    pub fn from_ciphertext_len(ciphertext_len: u64, chunk_size: u32) -> Result<Self> {
        check_chunk_size(chunk_size)?;
        let impossible = CryptoError::ImpossibleLength(ciphertext_len);
        let body = ciphertext_len
            .checked_sub(HDR)
            .ok_or(CryptoError::ImpossibleLength(ciphertext_len))?;
        let full = u64::from(chunk_size) + TAG;
        let (n_full, rem) = (body / full, body % full);
        let plain_len = match rem {
            0 if n_full == 0 => return Err(impossible), // zero chunks
            0 => n_full * u64::from(chunk_size),        // last chunk is full
            r if r < TAG => return Err(impossible),     // a chunk shorter than its tag
            r if r == TAG && n_full > 0 => return Err(impossible), // empty final chunk after data
            r => n_full * u64::from(chunk_size) + (r - TAG),
        };
        Self::new(plain_len, chunk_size)
    }

    /// Plaintext length (the Content-Length of the whole file).
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks: `max(1, ceil(plain_len / chunk_size))`.
    pub fn chunk_count(&self) -> u64 {
        self.plain_len.div_ceil(u64::from(self.chunk_size)).max(1)
    }

    /// Index of the final chunk (the one sealed with the last flag).
    pub fn last_chunk(&self) -> u64 {
        self.chunk_count() - 1
    }

    /// Whether chunk `index` is the final one.
    pub fn is_last_chunk(&self, index: u64) -> bool {
        index == self.last_chunk()
    }

    fn checked_ciphertext_len(&self) -> Option<u64> {
        self.chunk_count()
            .checked_mul(TAG)?
            .checked_add(self.plain_len)?
            .checked_add(HDR)
    }

    /// Stored length: header + plaintext + one tag per chunk.
    pub fn ciphertext_len(&self) -> u64 {
        self.checked_ciphertext_len()
            .expect("checked in BlobLayout::new")
    }

    /// The chunk holding plaintext byte `plain_offset`, or `None` past the end.
    pub fn chunk_for_offset(&self, plain_offset: u64) -> Option<u64> {
        (plain_offset < self.plain_len).then(|| chunk_for_offset(plain_offset, self.chunk_size))
    }

    /// The chunks covering the plaintext byte range `range`, or `None` for an empty range.
    /// The range is clamped to the blob.
    pub fn chunks_for_plain_range(&self, range: Range<u64>) -> Option<RangeInclusive<u64>> {
        let end = range.end.min(self.plain_len);
        if range.start >= end {
            return None;
        }
        let cs = u64::from(self.chunk_size);
        Some(range.start / cs..=(end - 1) / cs)
    }

    /// Plaintext bytes held by chunk `index` (empty for the single chunk of an empty blob).
    pub fn plain_range_of_chunk(&self, index: u64) -> Range<u64> {
        let cs = u64::from(self.chunk_size);
        let start = index.saturating_mul(cs).min(self.plain_len);
        start..(start.saturating_add(cs)).min(self.plain_len)
    }

    /// Stored length of chunk `index` (ciphertext + tag), or `None` past the end.
    pub fn sealed_chunk_len(&self, index: u64) -> Option<usize> {
        if index >= self.chunk_count() {
            return None;
        }
        let r = self.plain_range_of_chunk(index);
        Some((r.end - r.start + TAG) as usize)
    }

    /// Stored byte range of chunk `index`.
    pub fn ciphertext_range_of_chunk(&self, index: u64) -> Result<Range<u64>> {
        self.ciphertext_range_for_chunks(index, index)
    }

    /// Stored byte range covering chunks `first ..= last` (header offset included).
    pub fn ciphertext_range_for_chunks(&self, first: u64, last: u64) -> Result<Range<u64>> {
        let count = self.chunk_count();
        if first > last || last >= count {
            return Err(CryptoError::ChunkOutOfRange { first, last, count });
        }
        let full = u64::from(self.chunk_size) + TAG;
        let start = HDR + first * full;
        let end = HDR + last * full + self.sealed_chunk_len(last).expect("in range") as u64;
        Ok(start..end)
    }
}

/// Stored length of a blob of `plain_len` plaintext bytes (header included).
pub fn ciphertext_len(plain_len: u64, chunk_size: u32) -> Result<u64> {
    Ok(BlobLayout::new(plain_len, chunk_size)?.ciphertext_len())
}

/// The chunk index holding plaintext byte `plain_offset`. `chunk_size` must be non-zero.
pub fn chunk_for_offset(plain_offset: u64, chunk_size: u32) -> u64 {
    plain_offset / u64::from(chunk_size)
}

/// Stored byte range of chunks `first ..= last` of a blob of `plain_len` bytes.
pub fn ciphertext_range_for_chunks(
    first: u64,
    last: u64,
    plain_len: u64,
    chunk_size: u32,
) -> Result<Range<u64>> {
    BlobLayout::new(plain_len, chunk_size)?.ciphertext_range_for_chunks(first, last)
}

/// Plaintext length of a stored blob of `ciphertext_len` bytes (header included), without
/// reading it; impossible lengths are an error.
pub fn plaintext_len_from_ciphertext_len(ciphertext_len: u64, chunk_size: u32) -> Result<u64> {
    Ok(BlobLayout::from_ciphertext_len(ciphertext_len, chunk_size)?.plain_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_bytes() {
        let h = Header::new(65536, [1, 2, 3, 4, 5, 6, 7]).unwrap();
        let b = h.encode();
        assert_eq!(
            b,
            [b'V', b'L', b'M', b'B', 1, 0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7],
            "version-1 header layout is on disk: DO NOT CHANGE"
        );
        assert_eq!(Header::parse(&b).unwrap(), h);
    }

    #[test]
    fn header_rejects_bad_input() {
        let good = Header::new(4096, [9; 7]).unwrap().encode();
        assert!(Header::parse(&good[..4]).is_err());
        assert!(Header::parse(&good[..15]).is_err());
        let mut long = good.to_vec();
        long.push(0);
        assert!(Header::parse(&long).is_err());
        let mut bad = good;
        bad[0] ^= 1;
        assert!(matches!(
            Header::parse(&bad),
            Err(CryptoError::BadHeader(_))
        ));
        let mut bad = good;
        bad[4] = 2;
        assert!(matches!(
            Header::parse(&bad),
            Err(CryptoError::BadHeader(_))
        ));
        for cs in [0u32, 15, MAX_CHUNK_SIZE + 1, u32::MAX] {
            let mut bad = good;
            bad[5..9].copy_from_slice(&cs.to_be_bytes());
            assert!(Header::parse(&bad).is_err(), "chunk size {cs}");
        }
        assert!(Header::new(0, [0; 7]).is_err());
    }

    #[test]
    fn ciphertext_len_formula() {
        let c = 16u32;
        assert_eq!(ciphertext_len(0, c).unwrap(), 16 + 16);
        assert_eq!(ciphertext_len(1, c).unwrap(), 16 + 1 + 16);
        assert_eq!(ciphertext_len(15, c).unwrap(), 16 + 15 + 16);
        assert_eq!(ciphertext_len(16, c).unwrap(), 16 + 16 + 16);
        assert_eq!(ciphertext_len(17, c).unwrap(), 16 + 17 + 32);
        assert_eq!(ciphertext_len(3 * 16 + 17, c).unwrap(), 16 + 65 + 5 * 16);
        let d = DEFAULT_CHUNK_SIZE;
        assert_eq!(
            ciphertext_len(10 << 20, d).unwrap(),
            16 + (10 << 20) + 160 * 16
        );
        assert!(ciphertext_len(1, 0).is_err());
    }

    #[test]
    fn ciphertext_len_inverts_for_every_small_length() {
        for c in [16u32, 17, 64] {
            for p in 0..600u64 {
                let l = ciphertext_len(p, c).unwrap();
                assert_eq!(
                    plaintext_len_from_ciphertext_len(l, c).unwrap(),
                    p,
                    "c={c} p={p}"
                );
            }
        }
    }

    #[test]
    fn impossible_ciphertext_lengths_are_rejected() {
        let c = 16u32;
        let valid: std::collections::HashSet<u64> =
            (0..400u64).map(|p| ciphertext_len(p, c).unwrap()).collect();
        for l in 0..400u64 {
            let r = plaintext_len_from_ciphertext_len(l, c);
            assert_eq!(r.is_ok(), valid.contains(&l), "length {l}");
        }
        // Specific shapes: header only; header + partial tag; empty final chunk after a full one.
        assert!(plaintext_len_from_ciphertext_len(16, c).is_err());
        assert!(plaintext_len_from_ciphertext_len(16 + 15, c).is_err());
        assert!(plaintext_len_from_ciphertext_len(16 + 32 + 16, c).is_err());
        assert!(plaintext_len_from_ciphertext_len(u64::MAX, c).is_err());
    }

    #[test]
    fn too_many_chunks_is_too_large() {
        assert!(BlobLayout::new(MAX_CHUNKS * 16, 16).is_ok());
        assert!(matches!(
            BlobLayout::new(MAX_CHUNKS * 16 + 1, 16),
            Err(CryptoError::TooLarge)
        ));
        assert!(BlobLayout::new(u64::MAX, MAX_CHUNK_SIZE).is_err());
    }

    #[test]
    fn offsets_and_ranges() {
        let l = BlobLayout::new(3 * 16 + 5, 16).unwrap();
        assert_eq!(l.chunk_count(), 4);
        assert_eq!(l.last_chunk(), 3);
        assert!(l.is_last_chunk(3) && !l.is_last_chunk(2));
        assert_eq!(l.chunk_for_offset(0), Some(0));
        assert_eq!(l.chunk_for_offset(15), Some(0));
        assert_eq!(l.chunk_for_offset(16), Some(1));
        assert_eq!(l.chunk_for_offset(52), Some(3));
        assert_eq!(l.chunk_for_offset(53), None);
        assert_eq!(chunk_for_offset(52, 16), 3);
        assert_eq!(l.plain_range_of_chunk(0), 0..16);
        assert_eq!(l.plain_range_of_chunk(3), 48..53);
        assert_eq!(l.sealed_chunk_len(0), Some(32));
        assert_eq!(l.sealed_chunk_len(3), Some(21));
        assert_eq!(l.sealed_chunk_len(4), None);
        assert_eq!(l.ciphertext_range_of_chunk(0).unwrap(), 16..48);
        assert_eq!(l.ciphertext_range_of_chunk(1).unwrap(), 48..80);
        assert_eq!(l.ciphertext_range_of_chunk(3).unwrap(), 112..133);
        assert_eq!(l.ciphertext_range_for_chunks(1, 3).unwrap(), 48..133);
        assert_eq!(
            l.ciphertext_range_for_chunks(0, 3).unwrap().end,
            l.ciphertext_len()
        );
        assert_eq!(ciphertext_range_for_chunks(1, 2, 53, 16).unwrap(), 48..112);
        assert!(l.ciphertext_range_for_chunks(2, 1).is_err());
        assert!(l.ciphertext_range_for_chunks(0, 4).is_err());
        assert_eq!(l.chunks_for_plain_range(0..53), Some(0..=3));
        assert_eq!(l.chunks_for_plain_range(15..17), Some(0..=1));
        assert_eq!(l.chunks_for_plain_range(16..32), Some(1..=1));
        assert_eq!(l.chunks_for_plain_range(50..1000), Some(3..=3));
        assert_eq!(l.chunks_for_plain_range(10..10), None);
        assert_eq!(l.chunks_for_plain_range(53..60), None);
    }

    #[test]
    fn empty_blob_layout() {
        let l = BlobLayout::new(0, DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(l.chunk_count(), 1);
        assert_eq!(l.ciphertext_len(), 32);
        assert_eq!(l.sealed_chunk_len(0), Some(16));
        assert_eq!(l.plain_range_of_chunk(0), 0..0);
        assert_eq!(l.ciphertext_range_of_chunk(0).unwrap(), 16..32);
        assert_eq!(l.chunks_for_plain_range(0..1), None);
        assert_eq!(l.chunk_for_offset(0), None);
    }

    #[test]
    fn exact_multiple_has_full_last_chunk() {
        let l = BlobLayout::new(64, 16).unwrap();
        assert_eq!(l.chunk_count(), 4);
        assert_eq!(l.sealed_chunk_len(3), Some(32));
        assert_eq!(l.ciphertext_len(), 16 + 4 * 32);
    }
}
