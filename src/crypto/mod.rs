//! The cryptographic core of the blob store (SPEC §7): pure, I/O-free (except for the
//! development master-key file), streaming, O(1) memory per chunk.
//!
//! # Pieces
//!
//! * [`MasterKeys`] — the master keys from `MASTERKEY` / `MASTERKEYS` (or the development key
//!   file); they only ever wrap data keys.
//! * [`Dek`] — a random 256-bit data key per blob, wrapped by [`MasterKeys::wrap`] into a
//!   [`Wrapped`] (`encrypteddata` / `encryptednonce`, gm-data's field names) and recovered by
//!   [`MasterKeys::unwrap`]; [`MasterKeys::rewrap`] moves it under the active key (`vellum rekey`).
//! * The chunked blob format: [`Encryptor`] / [`ChunkSealer`] write it, [`Decryptor`] opens any
//!   single chunk (Range reads), [`ChunkOpener`] opens a stream of it, and [`BlobLayout`] (with
//!   the free functions [`ciphertext_len`], [`chunk_for_offset`], [`ciphertext_range_for_chunks`],
//!   [`plaintext_len_from_ciphertext_len`]) does the byte arithmetic without touching the blob.
//! * [`BlobAlgorithm`] — `blobalgorithm: "none"` skips all of this: the caller stores the
//!   plaintext as it is and never builds an encryptor.
//!
//! # On-disk blob format, version 1 — DO NOT CHANGE (it is on disk and in S3)
//!
//! ```text
//! header (16 bytes):
//!   0..4    magic            "VLMB"
//!   4       format version   0x01
//!   5..9    chunk size       u32 big-endian: plaintext bytes per chunk (16 ..= 16 MiB; default 64 KiB)
//!   9..16   nonce prefix     7 random bytes, fresh for every blob
//! then chunk 0, chunk 1, ..., chunk n-1 (n >= 1), each:
//!   ciphertext (same length as its plaintext) ‖ 16-byte GCM tag
//! ```
//!
//! Every chunk but the last holds exactly `chunk size` plaintext bytes; the last holds
//! 1 ..= `chunk size` bytes, or 0 bytes when (and only when) the whole blob is empty, so an empty
//! blob is one empty final chunk and a blob is never zero chunks. Hence
//! `n = max(1, ceil(len / chunk size))` and `stored length = 16 + len + 16·n`.
//!
//! Chunk `i` is AES-256-GCM under the blob's DEK with
//!
//! ```text
//! nonce (12 bytes) = nonce prefix (7) ‖ i as u32 big-endian (4) ‖ last flag (1: 0x01 on the final chunk, else 0x00)
//! AAD              = header (the 16 bytes above) ‖ blob id (the caller's identity for the blob, e.g. its rname)
//! ```
//!
//! The counter in the nonce makes reordered or dropped chunks fail; the last flag makes a
//! blob cut at a chunk boundary fail (its new final chunk was sealed with flag 0x00); the header
//! in the AAD authenticates the magic, version, chunk size and prefix; the blob id in the AAD
//! stops a chunk (or a whole blob) from being accepted under another blob's name even if a DEK
//! were ever reused. The header has a fixed length for a given version, so `header ‖ blob id`
//! is unambiguous. At most 2^32 chunks per blob (256 TiB at 64 KiB).
//!
//! **Blob id.** Use the blob's `rname` (e.g. `558/158340da6ed32558`, without `FILE_PARTITION`,
//! so moving the partition does not orphan blobs) as the blob id for both the chunks and the
//! wrapped key; it must be the same bytes when reading as when writing.
//!
//! # Wrapped data keys — DO NOT CHANGE
//!
//! `encrypteddata` = base64 (standard, padded) of AES-256-GCM(master key, nonce, DEK) =
//! 32 bytes of ciphertext ‖ 16-byte tag; `encryptednonce` = base64 of the 12-byte random nonce;
//! AAD = `"vellum/dek/v1"` ‖ 0x00 ‖ blob id. Both live under the master key's id, e.g.
//! `"encrypteddata": {"master": "..."}`.
//!
//! # Performance
//!
//! `aes-gcm` 0.11 picks AES-NI and CLMUL (PCLMULQDQ) at run time through `cpufeatures`, so no
//! `RUSTFLAGS` are needed; see the `throughput_256mib` test (ignored; run with
//! `cargo test --release --lib crypto -- --ignored --nocapture`).

mod chunked;
mod envelope;
mod layout;
mod masterkey;

pub use chunked::{ChunkOpener, ChunkSealer, Decryptor, Encryptor, OpenedChunks, SealedChunks};
pub use envelope::{Dek, Wrapped};
pub use layout::{
    chunk_for_offset, ciphertext_len, ciphertext_range_for_chunks,
    plaintext_len_from_ciphertext_len, BlobLayout, Header, DEFAULT_CHUNK_SIZE, FORMAT_VERSION,
    HEADER_LEN, MAGIC, MAX_CHUNKS, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, NONCE_PREFIX_LEN, TAG_LEN,
};
pub use masterkey::{
    MasterKey, MasterKeys, DEV_MASTERKEY_FILE, MIN_PASSPHRASE_CHARS, SINGLE_KEY_ID,
};

/// Errors of the crypto core. None of them carries key material or passphrases: a malformed
/// `MASTERKEYS` entry is named by its position, never by its text.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// `MASTERKEY` / `MASTERKEYS` could not be used.
    #[error("master key configuration: {0}")]
    Config(String),
    /// One master key (named by its id) is malformed.
    #[error("master key {id:?}: {reason}")]
    InvalidMasterKey { id: String, reason: String },
    /// Stretching a passphrase failed (should not happen with the fixed parameters).
    #[error("deriving a key from the passphrase failed: {0}")]
    Kdf(String),
    /// Reading or creating the development master key file failed.
    #[error("development master key file {path}: {reason}")]
    DevKeyFile { path: String, reason: String },
    /// A wrapped key names a master key id that is not configured.
    #[error("unknown master key id {0:?} (is it missing from MASTERKEYS?)")]
    UnknownKeyId(String),
    /// `encrypteddata` / `encryptednonce` are not well-formed.
    #[error("malformed wrapped data key: {0}")]
    MalformedWrappedKey(&'static str),
    /// The wrapped data key failed authentication: wrong master key, wrong blob, or tampered.
    #[error("data key wrapped under {key_id:?} failed to unwrap (wrong master key, another blob's key, or tampered)")]
    UnwrapFailed { key_id: String },
    /// The blob header is malformed or of an unknown version.
    #[error("blob header: {0}")]
    BadHeader(&'static str),
    /// A chunk size outside [`MIN_CHUNK_SIZE`] ..= [`MAX_CHUNK_SIZE`].
    #[error("chunk size {0} is out of range ({MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE})")]
    BadChunkSize(u32),
    /// A chunk failed authentication.
    #[error("blob chunk {index} failed authentication (tampered, truncated, reordered, from another blob, or wrong key)")]
    ChunkAuth { index: u64 },
    /// A chunk has a length that its position in the blob does not allow.
    #[error("blob chunk {index} has an impossible length {len}")]
    ChunkLength { index: u64, len: usize },
    /// The blob (or the requested chunk range) ended early.
    #[error("blob is truncated: {0}")]
    Truncated(&'static str),
    /// Bytes after the final chunk.
    #[error("blob has data after its final chunk")]
    TrailingData,
    /// A stored length that no blob of this format can have.
    #[error("ciphertext length {0} is impossible for this blob format")]
    ImpossibleLength(u64),
    /// A blob larger than the format allows (2^32 chunks), or arithmetic overflow.
    #[error("blob too large for the format")]
    TooLarge,
    /// A chunk index or range outside the blob.
    #[error("chunk range {first}..={last} is outside a blob of {count} chunk(s)")]
    ChunkOutOfRange { first: u64, last: u64, count: u64 },
    /// The API was used in a way that would break the format (e.g. sealing after the last chunk).
    #[error("crypto API misuse: {0}")]
    Misuse(&'static str),
    /// An unknown `blobalgorithm` value.
    #[error("unknown blobalgorithm {0:?} (expected \"none\" or nothing)")]
    UnknownBlobAlgorithm(String),
}

/// Result alias for this module.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

/// How a file version's content is stored (`blobalgorithm`).
///
/// Only two values are understood here; what to do with gm-data's `"sse"` (S3 server-side
/// encryption) is the caller's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BlobAlgorithm {
    /// The chunked AES-256-GCM format of this module (absent or empty `blobalgorithm`).
    #[default]
    Chunked,
    /// `blobalgorithm: "none"`: plaintext as uploaded; no DEK, no header, no chunks.
    None,
}

impl BlobAlgorithm {
    /// Parses the `blobalgorithm` field: absent or `""` → [`BlobAlgorithm::Chunked`],
    /// `"none"` (any case) → [`BlobAlgorithm::None`], anything else is an error.
    pub fn from_field(value: Option<&str>) -> Result<Self> {
        match value.map(str::trim) {
            None | Some("") => Ok(Self::Chunked),
            Some(v) if v.eq_ignore_ascii_case("none") => Ok(Self::None),
            Some(v) => Err(CryptoError::UnknownBlobAlgorithm(
                v.chars().take(64).collect(),
            )),
        }
    }

    /// Whether content is encrypted (and so needs a DEK and the chunked format).
    pub fn is_encrypted(self) -> bool {
        self == Self::Chunked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_algorithm_parsing() {
        assert_eq!(
            BlobAlgorithm::from_field(None).unwrap(),
            BlobAlgorithm::Chunked
        );
        assert_eq!(
            BlobAlgorithm::from_field(Some("")).unwrap(),
            BlobAlgorithm::Chunked
        );
        assert_eq!(
            BlobAlgorithm::from_field(Some("none")).unwrap(),
            BlobAlgorithm::None
        );
        assert_eq!(
            BlobAlgorithm::from_field(Some("NONE")).unwrap(),
            BlobAlgorithm::None
        );
        assert!(BlobAlgorithm::from_field(Some("rot13")).is_err());
        assert!(BlobAlgorithm::Chunked.is_encrypted());
        assert!(!BlobAlgorithm::None.is_encrypted());
    }

    #[test]
    fn errors_are_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<CryptoError>();
    }

    /// The pipeline holds these across `.await` points and shares keys between tasks.
    #[test]
    fn types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<MasterKeys>();
        check::<Dek>();
        check::<Wrapped>();
        check::<Encryptor>();
        check::<Decryptor>();
        check::<ChunkSealer>();
        check::<ChunkOpener>();
        check::<SealedChunks<'static>>();
        check::<OpenedChunks<'static>>();
    }
}
