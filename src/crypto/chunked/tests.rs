use super::*;
use crate::crypto::layout::{
    ciphertext_len, plaintext_len_from_ciphertext_len, DEFAULT_CHUNK_SIZE,
};

const BLOB: &[u8] = b"558/158340da6ed32558";
const SMALL: u32 = 16;

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

/// A small deterministic generator for split points (reproducible failures).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % bound.max(1)
    }
}

/// Seals `plain` through a `ChunkSealer` fed in the given slice sizes (cycled); returns
/// the stored blob and its sealed chunks.
fn seal_with(
    dek: &Dek,
    blob_id: &[u8],
    cs: u32,
    plain: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut sealer = ChunkSealer::new(dek, blob_id, cs).unwrap();
    let mut stored = sealer.header().to_vec();
    let mut chunks = Vec::new();
    let mut rest = plain;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        i += 1;
        for c in sealer.push(&rest[..n]) {
            chunks.push(c.unwrap());
        }
        rest = &rest[n..];
    }
    assert_eq!(sealer.plaintext_len(), plain.len() as u64);
    chunks.push(sealer.finish().unwrap());
    for c in &chunks {
        stored.extend_from_slice(c);
    }
    (stored, chunks)
}

fn seal(dek: &Dek, cs: u32, plain: &[u8]) -> Vec<u8> {
    seal_with(dek, BLOB, cs, plain, &[usize::MAX]).0
}

/// Opens a whole stored blob by feeding it in the given slice sizes (cycled).
fn open_with(opener: ChunkOpener, stored: &[u8], sizes: &[usize]) -> Result<Vec<u8>> {
    let mut opener = opener;
    let mut out = Vec::new();
    let mut rest = stored;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len()).max(1);
        i += 1;
        for c in opener.push(&rest[..n]) {
            out.extend_from_slice(&c?);
        }
        rest = &rest[n..];
    }
    out.extend_from_slice(&opener.finish()?);
    Ok(out)
}

fn open(dek: &Dek, stored: &[u8]) -> Result<Vec<u8>> {
    open_with(ChunkOpener::new(dek, BLOB), stored, &[usize::MAX])
}

fn open_known(dek: &Dek, stored: &[u8]) -> Result<Vec<u8>> {
    open_with(
        ChunkOpener::with_ciphertext_len(dek, BLOB, stored.len() as u64),
        stored,
        &[usize::MAX],
    )
}

/// Opens every chunk separately with a `Decryptor` and the layout.
fn open_random_access(dek: &Dek, stored: &[u8]) -> Result<Vec<u8>> {
    let dec = Decryptor::new(dek, BLOB, &stored[..HEADER_LEN])?;
    let layout = BlobLayout::from_ciphertext_len(stored.len() as u64, dec.chunk_size())?;
    let mut out = Vec::new();
    for i in 0..layout.chunk_count() {
        let r = layout.ciphertext_range_of_chunk(i)?;
        out.extend(dec.open_chunk(
            i,
            &stored[r.start as usize..r.end as usize],
            layout.is_last_chunk(i),
        )?);
    }
    Ok(out)
}

fn sizes_for(cs: usize) -> Vec<usize> {
    vec![0, 1, cs - 1, cs, cs + 1, 3 * cs + 17]
}

#[test]
fn roundtrip_edge_sizes() {
    let dek = Dek::generate();
    for cs in [SMALL, 1000, DEFAULT_CHUNK_SIZE] {
        for n in sizes_for(cs as usize) {
            let plain = random_bytes(n);
            let stored = seal(&dek, cs, &plain);
            assert_eq!(
                stored.len() as u64,
                ciphertext_len(n as u64, cs).unwrap(),
                "cs={cs} n={n}"
            );
            assert_eq!(
                plaintext_len_from_ciphertext_len(stored.len() as u64, cs).unwrap(),
                n as u64
            );
            assert_eq!(open(&dek, &stored).unwrap(), plain, "cs={cs} n={n}");
            assert_eq!(open_known(&dek, &stored).unwrap(), plain, "cs={cs} n={n}");
            assert_eq!(
                open_random_access(&dek, &stored).unwrap(),
                plain,
                "cs={cs} n={n}"
            );
        }
    }
}

#[test]
fn roundtrip_a_few_mib_in_odd_slices() {
    let dek = Dek::generate();
    let plain = random_bytes(3 * 1024 * 1024 + 12_345);
    let (stored, chunks) = seal_with(
        &dek,
        BLOB,
        DEFAULT_CHUNK_SIZE,
        &plain,
        &[1, 70_000, 5, 65_536, 200_000, 0],
    );
    assert_eq!(chunks.len(), 49);
    assert!(chunks[..48]
        .iter()
        .all(|c| c.len() == DEFAULT_CHUNK_SIZE as usize + TAG_LEN));
    assert_eq!(
        stored.len() as u64,
        ciphertext_len(plain.len() as u64, DEFAULT_CHUNK_SIZE).unwrap()
    );
    assert_eq!(
        open_with(ChunkOpener::new(&dek, BLOB), &stored, &[777, 1, 100_000]).unwrap(),
        plain
    );
    assert_eq!(
        open_with(
            ChunkOpener::with_ciphertext_len(&dek, BLOB, stored.len() as u64),
            &stored,
            &[3, 65_552, 9_999]
        )
        .unwrap(),
        plain
    );
    assert_eq!(open_random_access(&dek, &stored).unwrap(), plain);
}

#[test]
fn sealer_and_opener_with_random_slicing() {
    let dek = Dek::generate();
    let mut rng = Lcg(42);
    for round in 0..60 {
        let n = rng.next(8 * SMALL as usize);
        let plain = random_bytes(n);
        let seal_sizes: Vec<usize> = (0..7).map(|_| rng.next(40)).collect();
        let mut seal_sizes_nonzero = seal_sizes.clone();
        seal_sizes_nonzero.push(1);
        let (stored, _) = seal_with(&dek, BLOB, SMALL, &plain, &seal_sizes_nonzero);
        let open_sizes: Vec<usize> = (0..5).map(|_| 1 + rng.next(50)).collect();
        assert_eq!(
            open_with(ChunkOpener::new(&dek, BLOB), &stored, &open_sizes).unwrap(),
            plain,
            "round {round}"
        );
        assert_eq!(
            open_with(
                ChunkOpener::with_ciphertext_len(&dek, BLOB, stored.len() as u64),
                &stored,
                &open_sizes
            )
            .unwrap(),
            plain,
            "round {round}"
        );
    }
}

#[test]
fn sealer_push_of_empty_slices_and_byte_at_a_time() {
    let dek = Dek::generate();
    let plain = random_bytes(3 * SMALL as usize);
    let mut sealer = ChunkSealer::new(&dek, BLOB, SMALL).unwrap();
    let mut stored = sealer.header().to_vec();
    assert_eq!(sealer.push(&[]).count(), 0);
    for b in &plain {
        for c in sealer.push(std::slice::from_ref(b)) {
            stored.extend(c.unwrap());
        }
        assert_eq!(sealer.push(&[]).count(), 0);
    }
    // The third full chunk is held back: it may be the last.
    assert_eq!(sealer.chunks_sealed(), 2);
    stored.extend(sealer.finish().unwrap());
    assert_eq!(open(&dek, &stored).unwrap(), plain);
    assert_eq!(
        stored.len(),
        HEADER_LEN + 3 * (SMALL as usize + TAG_LEN),
        "no empty trailing chunk"
    );
}

#[test]
fn encryptor_matches_sealer_format() {
    let dek = Dek::generate();
    let plain = random_bytes(2 * SMALL as usize + 3);
    let mut enc = Encryptor::new(&dek, BLOB, SMALL).unwrap();
    let mut stored = enc.header().to_vec();
    stored.extend(enc.seal_chunk(&plain[..16], false).unwrap());
    let mut buf = plain[16..32].to_vec();
    enc.seal_chunk_in_place(&mut buf, false).unwrap();
    stored.extend(&buf);
    stored.extend(enc.seal_chunk(&plain[32..], true).unwrap());
    assert!(enc.is_finished());
    assert_eq!(enc.chunks_sealed(), 3);
    assert_eq!(open(&dek, &stored).unwrap(), plain);
    assert_eq!(open_random_access(&dek, &stored).unwrap(), plain);
}

/// Pins the on-disk format with a known answer: DEK, nonce prefix, blob id and plaintext fixed.
/// If this test fails, the format changed and existing blobs would no longer open.
#[test]
fn known_answer_v1() {
    let dek = Dek::from_bytes(std::array::from_fn(|i| i as u8));
    let mut enc =
        Encryptor::with_nonce_prefix(&dek, b"558/158340da6ed32558", SMALL, *b"prefix7").unwrap();
    let plain = b"hello, vellum blobs!"; // 20 bytes: one full chunk + 4
    let mut stored = enc.header().to_vec();
    stored.extend(enc.seal_chunk(&plain[..16], false).unwrap());
    stored.extend(enc.seal_chunk(&plain[16..], true).unwrap());
    assert_eq!(stored.len(), 16 + 16 + 16 + 4 + 16);
    assert_eq!(hex(&stored[..16]), "564c4d42010000001070726566697837");
    // Cross-checked against an independent AES-GCM implementation (Python `cryptography`).
    assert_eq!(
        hex(&stored),
        "564c4d42010000001070726566697837\
         59550b65468c7f39d01c299f3337d7b2d84a70857fcb5b4a19a38d81f6125bae\
         aae206c2c4edf70986107d57742c8b949ee36099"
    );

    // The same bytes from first principles: nonce = prefix ‖ BE32 index ‖ flag, AAD = header ‖ blob id.
    use aes_gcm::aead::{AeadInOut, KeyInit};
    use aes_gcm::{Aes256Gcm, Nonce};
    let gcm = Aes256Gcm::new_from_slice(&std::array::from_fn::<u8, 32, _>(|i| i as u8)).unwrap();
    let mut aad = stored[..16].to_vec();
    aad.extend_from_slice(b"558/158340da6ed32558");
    let seal = |nonce: &[u8; 12], msg: &[u8]| {
        let mut buf = msg.to_vec();
        let tag = gcm
            .encrypt_inout_detached(&Nonce::from(*nonce), &aad, buf.as_mut_slice().into())
            .unwrap();
        buf.extend_from_slice(&tag);
        buf
    };
    let c0 = seal(b"prefix7\0\0\0\0\0", &plain[..16]);
    let c1 = seal(b"prefix7\0\0\0\x01\x01", &plain[16..]);
    assert_eq!(&stored[16..48], &c0[..]);
    assert_eq!(&stored[48..], &c1[..]);
}

/// `seal_into` stores exactly the bytes `push` yields, for any way the plaintext is sliced, and
/// stays within `sealed_len_bound`; the known answer holds through it too.
#[test]
fn seal_into_stores_what_push_yields() {
    let dek = Dek::generate();
    let mut lcg = Lcg(11);
    for cs in [SMALL, 1000] {
        let c = cs as usize;
        for n in [0, 1, c - 1, c, c + 1, 2 * c, 5 * c + 3, 40 * c + 1] {
            let plain = random_bytes(n);
            for round in 0..12u8 {
                let sizes: Vec<usize> = match round {
                    0 => vec![usize::MAX],
                    1 => vec![1],
                    2 => vec![0, c],
                    3 => vec![c + 1],
                    4 => vec![2 * c, c - 1],
                    _ => (0..5).map(|_| 1 + lcg.next(3 * c)).collect(),
                };
                let fresh = || {
                    let enc = Encryptor::with_nonce_prefix(&dek, BLOB, cs, [round; 7]).unwrap();
                    ChunkSealer::from_encryptor(enc).unwrap()
                };
                let (mut a, mut b) = (fresh(), fresh());
                let mut via_push = a.header().to_vec();
                let mut via_into = b.header().to_vec();
                let mut rest = &plain[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let k = sizes[i % sizes.len()].min(rest.len());
                    i += 1;
                    for sealed in a.push(&rest[..k]) {
                        via_push.extend(sealed.unwrap());
                    }
                    if round % 2 == 0 {
                        // Room for the bound exactly, after bytes that must stay untouched.
                        let mut out = vec![0xa5; 3 + b.sealed_len_bound(k)];
                        let (took, wrote) = b.seal_into(&rest[..k], &mut out[3..]).unwrap();
                        assert_eq!((took, &out[..3]), (k, &[0xa5; 3][..]));
                        via_into.extend_from_slice(&out[3..3 + wrote]);
                    } else {
                        // Room for one sealed chunk (or none) at a time.
                        let mut out = vec![0; (c + TAG_LEN) * (round as usize % 4 / 2) + 7];
                        let mut piece = &rest[..k];
                        loop {
                            let (took, wrote) = b.seal_into(piece, &mut out).unwrap();
                            via_into.extend_from_slice(&out[..wrote]);
                            piece = &piece[took..];
                            if piece.is_empty() {
                                break;
                            }
                            if out.len() < c + TAG_LEN {
                                out = vec![0; c + TAG_LEN];
                            }
                        }
                    }
                    rest = &rest[k..];
                }
                assert_eq!(b.plaintext_len(), n as u64);
                via_push.extend(a.finish().unwrap());
                via_into.extend(b.finish().unwrap());
                assert_eq!(via_into, via_push, "cs={cs} n={n} round={round}");
                assert_eq!(open(&dek, &via_into).unwrap(), plain);
            }
        }
    }

    let dek = Dek::from_bytes(std::array::from_fn(|i| i as u8));
    let enc =
        Encryptor::with_nonce_prefix(&dek, b"558/158340da6ed32558", SMALL, *b"prefix7").unwrap();
    let mut sealer = ChunkSealer::from_encryptor(enc).unwrap();
    let mut stored = sealer.header().to_vec();
    let mut out = [0u8; 32];
    for piece in [&b"hello, vellum "[..], b"blobs!"] {
        let (took, wrote) = sealer.seal_into(piece, &mut out).unwrap();
        assert_eq!(took, piece.len());
        stored.extend_from_slice(&out[..wrote]);
    }
    stored.extend(sealer.finish().unwrap());
    assert_eq!(
        hex(&stored),
        "564c4d42010000001070726566697837\
         59550b65468c7f39d01c299f3337d7b2d84a70857fcb5b4a19a38d81f6125bae\
         aae206c2c4edf70986107d57742c8b949ee36099"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn random_access_to_any_chunk_and_ranges() {
    let dek = Dek::generate();
    let plain = random_bytes(10 * SMALL as usize + 7);
    let stored = seal(&dek, SMALL, &plain);
    let dec = Decryptor::new(&dek, BLOB, &stored[..HEADER_LEN]).unwrap();
    let layout = BlobLayout::from_ciphertext_len(stored.len() as u64, SMALL).unwrap();
    assert_eq!(layout.plain_len(), plain.len() as u64);
    // Individual chunks, out of order.
    for i in [7u64, 0, 10, 3, 10, 1] {
        let r = layout.ciphertext_range_of_chunk(i).unwrap();
        let p = dec
            .open_chunk(
                i,
                &stored[r.start as usize..r.end as usize],
                layout.is_last_chunk(i),
            )
            .unwrap();
        let pr = layout.plain_range_of_chunk(i);
        assert_eq!(p, &plain[pr.start as usize..pr.end as usize]);
    }
    // Every plaintext byte range over a sample: fetch only the needed chunks, then trim.
    let mut rng = Lcg(7);
    for _ in 0..200 {
        let a = rng.next(plain.len());
        let b = a + 1 + rng.next(plain.len() - a);
        let chunks = layout.chunks_for_plain_range(a as u64..b as u64).unwrap();
        let (first, last) = (*chunks.start(), *chunks.end());
        let cr = layout.ciphertext_range_for_chunks(first, last).unwrap();
        let mut opener = ChunkOpener::for_chunks(dec.clone(), layout, first, last).unwrap();
        let mut got = Vec::new();
        for c in opener.push(&stored[cr.start as usize..cr.end as usize]) {
            got.extend(c.unwrap());
        }
        got.extend(opener.finish().unwrap());
        let skip = a - layout.plain_range_of_chunk(first).start as usize;
        assert_eq!(&got[skip..skip + (b - a)], &plain[a..b], "range {a}..{b}");
    }
}

#[test]
fn random_access_rejects_wrong_position_or_last_flag() {
    let dek = Dek::generate();
    let plain = random_bytes(4 * SMALL as usize);
    let stored = seal(&dek, SMALL, &plain);
    let dec = Decryptor::new(&dek, BLOB, &stored[..HEADER_LEN]).unwrap();
    let layout = BlobLayout::from_ciphertext_len(stored.len() as u64, SMALL).unwrap();
    let chunk = |i: u64| {
        let r = layout.ciphertext_range_of_chunk(i).unwrap();
        stored[r.start as usize..r.end as usize].to_vec()
    };
    // Chunk 1 presented as chunk 2: wrong counter in the nonce.
    assert!(matches!(
        dec.open_chunk(2, &chunk(1), false),
        Err(CryptoError::ChunkAuth { index: 2 })
    ));
    // The final (full) chunk claimed not to be last, and a middle one claimed to be last.
    assert!(matches!(
        dec.open_chunk(3, &chunk(3), false),
        Err(CryptoError::ChunkAuth { .. })
    ));
    assert!(matches!(
        dec.open_chunk(1, &chunk(1), true),
        Err(CryptoError::ChunkAuth { .. })
    ));
    // Lengths a position cannot have.
    assert!(matches!(
        dec.open_chunk(1, &chunk(1)[..20], false),
        Err(CryptoError::ChunkLength { .. })
    ));
    assert!(matches!(
        dec.open_chunk(1, &chunk(1)[..15], true),
        Err(CryptoError::ChunkLength { .. })
    ));
    assert!(matches!(
        dec.open_chunk(1, &chunk(1)[..16], true),
        Err(CryptoError::ChunkLength { .. })
    ));
    let mut too_long = chunk(1);
    too_long.push(0);
    assert!(matches!(
        dec.open_chunk(1, &too_long, false),
        Err(CryptoError::ChunkLength { .. })
    ));
    assert!(dec.open_chunk(MAX_CHUNKS, &chunk(1), false).is_err());
    // In-place failure leaves no plaintext behind.
    let mut buf = chunk(0);
    buf[3] ^= 1;
    assert!(dec.open_chunk_in_place(0, &mut buf, false).is_err());
    assert!(buf.is_empty());
}

/// Flip every single bit position's byte (one at a time) of a small blob: nothing opens, by any reader.
#[test]
fn any_flipped_byte_fails_header_chunk_or_tag() {
    let dek = Dek::generate();
    let plain = random_bytes(3 * SMALL as usize + 17);
    let stored = seal(&dek, SMALL, &plain);
    for i in 0..stored.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = stored.clone();
            t[i] ^= bit;
            assert!(open(&dek, &t).is_err(), "byte {i} bit {bit:#x}: sequential");
            assert!(
                open_known(&dek, &t).is_err(),
                "byte {i} bit {bit:#x}: known length"
            );
            assert!(
                open_random_access(&dek, &t).is_err(),
                "byte {i} bit {bit:#x}: random access"
            );
        }
    }
}

#[test]
fn header_tampering_is_caught_by_the_aad_even_when_it_parses() {
    let dek = Dek::generate();
    let plain = random_bytes(64);
    let stored = seal(&dek, SMALL, &plain);
    // Change the chunk size to another valid value: the header parses, the chunks do not open.
    let mut t = stored.clone();
    t[5..9].copy_from_slice(&32u32.to_be_bytes());
    assert!(Header::parse(&t[..HEADER_LEN]).is_ok());
    let err = open(&dek, &t).unwrap_err();
    assert!(matches!(err, CryptoError::ChunkAuth { .. }), "{err}");
    // The nonce prefix byte.
    let mut t = stored.clone();
    t[12] ^= 0x55;
    assert!(matches!(
        open(&dek, &t),
        Err(CryptoError::ChunkAuth { index: 0 })
    ));
    // Magic and version.
    let mut t = stored.clone();
    t[1] = b'X';
    assert!(matches!(open(&dek, &t), Err(CryptoError::BadHeader(_))));
    let mut t = stored;
    t[4] = 9;
    assert!(matches!(open(&dek, &t), Err(CryptoError::BadHeader(_))));
}

#[test]
fn truncation_is_an_error_never_short_data() {
    let dek = Dek::generate();
    for n in [0usize, 1, 15, 16, 17, 3 * 16 + 17, 64] {
        let plain = random_bytes(n);
        let stored = seal(&dek, SMALL, &plain);
        // Every proper prefix of the blob fails, whichever reader is used.
        for cut in 0..stored.len() {
            let t = &stored[..cut];
            assert!(open(&dek, t).is_err(), "n={n} cut={cut}");
            assert!(open_with(
                ChunkOpener::with_ciphertext_len(&dek, BLOB, stored.len() as u64),
                t,
                &[7]
            )
            .is_err());
            // Told the truncated length, the reader still refuses it.
            assert!(open_known(&dek, t).is_err(), "n={n} cut={cut}");
            if cut >= HEADER_LEN {
                assert!(open_random_access(&dek, t).is_err(), "n={n} cut={cut}");
            }
        }
    }
}

#[test]
fn dropping_the_last_chunk_is_detected() {
    let dek = Dek::generate();
    let plain = random_bytes(4 * SMALL as usize);
    let (stored_full, chunks) = seal_with(&dek, BLOB, SMALL, &plain, &[usize::MAX]);
    let cut = stored_full.len() - chunks.last().unwrap().len();
    let truncated = &stored_full[..cut];
    // Ends on a chunk boundary: the new final chunk was sealed without the last flag.
    assert!(matches!(
        open(&dek, truncated),
        Err(CryptoError::ChunkAuth { index: 2 })
    ));
    assert!(matches!(
        open_known(&dek, truncated),
        Err(CryptoError::ChunkAuth { index: 2 })
    ));
    let mut opener = ChunkOpener::with_ciphertext_len(&dek, BLOB, stored_full.len() as u64);
    let mut ok = 0;
    for c in opener.push(truncated) {
        c.unwrap();
        ok += 1;
    }
    assert_eq!(ok, 3);
    assert!(matches!(opener.finish(), Err(CryptoError::Truncated(_))));
}

#[test]
fn reordered_chunks_fail() {
    let dek = Dek::generate();
    let plain = random_bytes(4 * SMALL as usize + 5);
    let (stored, chunks) = seal_with(&dek, BLOB, SMALL, &plain, &[usize::MAX]);
    let header = &stored[..HEADER_LEN];
    for (a, b) in [(0usize, 1usize), (1, 2), (0, 3), (2, 3)] {
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        order.swap(a, b);
        let mut t = header.to_vec();
        for &i in &order {
            t.extend_from_slice(&chunks[i]);
        }
        assert!(
            matches!(open(&dek, &t), Err(CryptoError::ChunkAuth { .. })),
            "swap {a},{b}"
        );
        assert!(open_known(&dek, &t).is_err());
    }
    // Duplicating a chunk in place of another fails too.
    let mut t = header.to_vec();
    for i in [0, 0, 2, 3, 4] {
        t.extend_from_slice(&chunks[i]);
    }
    assert!(open(&dek, &t).is_err());
}

#[test]
fn chunk_from_another_blob_with_the_same_dek_fails() {
    let dek = Dek::generate();
    let plain = random_bytes(3 * SMALL as usize);
    // Same DEK, same nonce prefix, different blob id: only the AAD differs.
    let seal_fixed = |blob_id: &[u8]| {
        let mut enc = Encryptor::with_nonce_prefix(&dek, blob_id, SMALL, [3; 7]).unwrap();
        let mut s = enc.header().to_vec();
        s.extend(enc.seal_chunk(&plain[..16], false).unwrap());
        s.extend(enc.seal_chunk(&plain[16..32], false).unwrap());
        s.extend(enc.seal_chunk(&plain[32..], true).unwrap());
        s
    };
    let a = seal_fixed(b"blob/a");
    let b = seal_fixed(b"blob/b");
    assert_eq!(a[..HEADER_LEN], b[..HEADER_LEN]);
    let mut mixed = a.clone();
    mixed[HEADER_LEN + 32..HEADER_LEN + 64].copy_from_slice(&b[HEADER_LEN + 32..HEADER_LEN + 64]);
    let opener = |id: &'static [u8]| ChunkOpener::new(&dek, id);
    assert_eq!(open_with(opener(b"blob/a"), &a, &[100]).unwrap(), plain);
    assert!(matches!(
        open_with(opener(b"blob/a"), &mixed, &[100]),
        Err(CryptoError::ChunkAuth { index: 1 })
    ));
    // The whole blob under another name fails too.
    assert!(matches!(
        open_with(opener(b"blob/a"), &b, &[100]),
        Err(CryptoError::ChunkAuth { index: 0 })
    ));

    // Same DEK and blob id, two encryptions (random prefixes): chunks do not mix either.
    let (x, _) = seal_with(&dek, BLOB, SMALL, &plain, &[usize::MAX]);
    let (y, _) = seal_with(&dek, BLOB, SMALL, &plain, &[usize::MAX]);
    let mut mixed = x.clone();
    mixed[HEADER_LEN..HEADER_LEN + 32].copy_from_slice(&y[HEADER_LEN..HEADER_LEN + 32]);
    assert!(open(&dek, &mixed).is_err());
}

#[test]
fn wrong_dek_fails() {
    let plain = random_bytes(100);
    let stored = seal(&Dek::generate(), SMALL, &plain);
    let other = Dek::generate();
    assert!(matches!(
        open(&other, &stored),
        Err(CryptoError::ChunkAuth { index: 0 })
    ));
    assert!(open_known(&other, &stored).is_err());
    assert!(open_random_access(&other, &stored).is_err());
}

#[test]
fn trailing_data_fails() {
    let dek = Dek::generate();
    let plain = random_bytes(40);
    let stored = seal(&dek, SMALL, &plain);
    for extra in [
        &[0u8][..],
        &[0u8; 16][..],
        &stored[HEADER_LEN..HEADER_LEN + 32],
    ] {
        let mut t = stored.clone();
        t.extend_from_slice(extra);
        assert!(open(&dek, &t).is_err());
        // Told the original length, extra bytes are refused as trailing data.
        let r = open_with(
            ChunkOpener::with_ciphertext_len(&dek, BLOB, stored.len() as u64),
            &t,
            &[5],
        );
        assert!(matches!(r, Err(CryptoError::TrailingData)), "{r:?}");
    }
}

#[test]
fn empty_blob_is_one_empty_final_chunk() {
    let dek = Dek::generate();
    let stored = seal(&dek, DEFAULT_CHUNK_SIZE, b"");
    assert_eq!(stored.len(), HEADER_LEN + TAG_LEN);
    assert_eq!(open(&dek, &stored).unwrap(), b"");
    assert_eq!(open_known(&dek, &stored).unwrap(), b"");
    // Header alone (zero chunks) is not an empty blob.
    assert!(matches!(
        open(&dek, &stored[..HEADER_LEN]),
        Err(CryptoError::Truncated(_))
    ));
    assert!(matches!(open(&dek, &[]), Err(CryptoError::Truncated(_))));
}

#[test]
fn encryptor_misuse_is_refused() {
    let dek = Dek::generate();
    let mut enc = Encryptor::new(&dek, BLOB, SMALL).unwrap();
    assert!(matches!(
        enc.seal_chunk(&[0; 15], false),
        Err(CryptoError::Misuse(_))
    ));
    assert!(matches!(
        enc.seal_chunk(&[0; 17], true),
        Err(CryptoError::Misuse(_))
    ));
    enc.seal_chunk(&[0; 16], false).unwrap();
    assert!(matches!(
        enc.seal_chunk(&[], true),
        Err(CryptoError::Misuse(_))
    ));
    enc.seal_chunk(&[0; 3], true).unwrap();
    assert!(
        matches!(enc.seal_chunk(&[0; 3], true), Err(CryptoError::Misuse(_))),
        "no chunk after the last"
    );
    assert!(Encryptor::new(&dek, BLOB, 0).is_err());
    assert!(Encryptor::new(&dek, BLOB, MAX_CHUNK_SIZE_PLUS_ONE).is_err());
    // A sealer needs a fresh encryptor.
    let mut used = Encryptor::new(&dek, BLOB, SMALL).unwrap();
    used.seal_chunk(&[0; 16], false).unwrap();
    assert!(ChunkSealer::from_encryptor(used).is_err());
}

const MAX_CHUNK_SIZE_PLUS_ONE: u32 = crate::crypto::layout::MAX_CHUNK_SIZE + 1;

#[test]
fn undrained_iterators_poison_rather_than_lose_data() {
    let dek = Dek::generate();
    let mut sealer = ChunkSealer::new(&dek, BLOB, SMALL).unwrap();
    let plain = random_bytes(100);
    let mut it = sealer.push(&plain);
    let _first = it.next().unwrap().unwrap();
    drop(it);
    assert!(matches!(sealer.finish(), Err(CryptoError::Misuse(_))));

    let stored = seal(&dek, SMALL, &plain);
    let mut opener = ChunkOpener::new(&dek, BLOB);
    let mut it = opener.push(&stored);
    let _first = it.next().unwrap().unwrap();
    drop(it);
    assert!(opener.finish().is_err());
}

#[test]
fn opener_stops_after_an_error() {
    let dek = Dek::generate();
    let plain = random_bytes(5 * SMALL as usize);
    let mut stored = seal(&dek, SMALL, &plain);
    stored[HEADER_LEN + 40] ^= 1; // chunk 1
    let mut opener = ChunkOpener::new(&dek, BLOB);
    let results: Vec<_> = opener.push(&stored).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(CryptoError::ChunkAuth { index: 1 })
    ));
    assert_eq!(opener.push(&stored).count(), 0);
    assert!(opener.finish().is_err());
}

#[test]
fn for_chunks_checks_its_arguments() {
    let dek = Dek::generate();
    let stored = seal(&dek, SMALL, &random_bytes(50));
    let dec = Decryptor::new(&dek, BLOB, &stored[..HEADER_LEN]).unwrap();
    let layout = BlobLayout::from_ciphertext_len(stored.len() as u64, SMALL).unwrap();
    assert!(ChunkOpener::for_chunks(dec.clone(), layout, 0, 4).is_err());
    assert!(ChunkOpener::for_chunks(dec.clone(), layout, 2, 1).is_err());
    let other = BlobLayout::new(50, 32).unwrap();
    assert!(ChunkOpener::for_chunks(dec.clone(), other, 0, 0).is_err());
    // A run that ends early is truncated.
    let r = layout.ciphertext_range_for_chunks(1, 2).unwrap();
    let mut opener = ChunkOpener::for_chunks(dec, layout, 1, 2).unwrap();
    for c in opener.push(&stored[r.start as usize..r.end as usize - 1]) {
        c.unwrap();
    }
    assert!(matches!(opener.finish(), Err(CryptoError::Truncated(_))));
}

#[test]
fn impossible_known_length_is_refused() {
    let dek = Dek::generate();
    let stored = seal(&dek, SMALL, &random_bytes(40));
    let r = open_with(
        ChunkOpener::with_ciphertext_len(&dek, BLOB, HEADER_LEN as u64 + 5),
        &stored,
        &[100],
    );
    assert!(matches!(r, Err(CryptoError::ImpossibleLength(_))), "{r:?}");
}

#[test]
fn debug_output_has_no_key_material() {
    let dek = Dek::from_bytes([0xAB; 32]);
    let enc = Encryptor::new(&dek, BLOB, SMALL).unwrap();
    let stored = seal(&dek, SMALL, b"x");
    let dec = Decryptor::new(&dek, BLOB, &stored[..HEADER_LEN]).unwrap();
    let s = format!(
        "{enc:?} {dec:?} {:?} {:?}",
        ChunkSealer::new(&dek, BLOB, SMALL).unwrap(),
        ChunkOpener::new(&dek, BLOB)
    );
    assert!(
        !s.to_lowercase().contains("abab") && !s.contains("171, 171"),
        "{s}"
    );
}

/// Not a timed assertion: prints throughput. Run with
/// `cargo test --release --lib crypto -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_256mib() {
    use sha2::{Digest, Sha256};
    use std::time::Instant;
    const TOTAL: usize = 256 << 20;
    const PART: usize = 1 << 20;
    let dek = Dek::generate();
    let part = random_bytes(PART);
    let mbps = |bytes: usize, secs: f64| bytes as f64 / secs / 1e6;

    // The blob to open later (untimed: keeping 256 MiB of output costs page faults).
    let mut sealer = ChunkSealer::new(&dek, BLOB, DEFAULT_CHUNK_SIZE).unwrap();
    let mut stored: Vec<Vec<u8>> = Vec::with_capacity(TOTAL / DEFAULT_CHUNK_SIZE as usize + 2);
    stored.push(sealer.header().to_vec());
    for _ in 0..TOTAL / PART {
        for c in sealer.push(&part) {
            stored.push(c.unwrap());
        }
    }
    stored.push(sealer.finish().unwrap());

    // Seal through ChunkSealer in 1 MiB parts (the upload path), each sealed chunk dropped
    // after use as an uploader would.
    let mut sealer = ChunkSealer::new(&dek, BLOB, DEFAULT_CHUNK_SIZE).unwrap();
    let t = Instant::now();
    let mut n = 0usize;
    for _ in 0..TOTAL / PART {
        for c in sealer.push(&part) {
            n += c.unwrap().len();
        }
    }
    n += sealer.finish().unwrap().len();
    let seal_s = t.elapsed().as_secs_f64();
    assert!(n > TOTAL);

    // Seal + SHA-256 of the plaintext alongside (what an upload does), output dropped.
    let mut sealer = ChunkSealer::new(&dek, BLOB, DEFAULT_CHUNK_SIZE).unwrap();
    let mut h = Sha256::new();
    let t = Instant::now();
    let mut n = 0usize;
    for _ in 0..TOTAL / PART {
        h.update(&part);
        for c in sealer.push(&part) {
            n += c.unwrap().len();
        }
    }
    n += sealer.finish().unwrap().len();
    let _ = h.finalize();
    let seal_sha_s = t.elapsed().as_secs_f64();
    assert!(n > TOTAL);

    // SHA-256 alone, for reference.
    let mut h = Sha256::new();
    let t = Instant::now();
    for _ in 0..TOTAL / PART {
        h.update(&part);
    }
    let _ = h.finalize();
    let sha_s = t.elapsed().as_secs_f64();

    // In-place sealing with one reused buffer (no allocation, no copy but the input).
    let mut enc = Encryptor::new(&dek, BLOB, DEFAULT_CHUNK_SIZE).unwrap();
    let mut buf = Vec::with_capacity(DEFAULT_CHUNK_SIZE as usize + TAG_LEN);
    let chunks = TOTAL / DEFAULT_CHUNK_SIZE as usize;
    let t = Instant::now();
    for i in 0..chunks {
        buf.clear();
        let off = (i * DEFAULT_CHUNK_SIZE as usize) % PART;
        buf.extend_from_slice(&part[off..off + DEFAULT_CHUNK_SIZE as usize]);
        enc.seal_chunk_in_place(&mut buf, i + 1 == chunks).unwrap();
    }
    let inplace_s = t.elapsed().as_secs_f64();

    // Open the sealed blob sequentially through ChunkOpener (1 MiB-ish slices: each stored chunk).
    let total_len: usize = stored.iter().map(Vec::len).sum();
    let mut opener = ChunkOpener::with_ciphertext_len(&dek, BLOB, total_len as u64);
    let t = Instant::now();
    let mut out = 0usize;
    for piece in &stored {
        for c in opener.push(piece) {
            out += c.unwrap().len();
        }
    }
    out += opener.finish().unwrap().len();
    let open_s = t.elapsed().as_secs_f64();
    assert_eq!(out, TOTAL);

    // Random-access open of every chunk with a Decryptor.
    let dec = Decryptor::new(&dek, BLOB, &stored[0]).unwrap();
    let t = Instant::now();
    let last = stored.len() - 2;
    let mut buf = Vec::with_capacity(DEFAULT_CHUNK_SIZE as usize + TAG_LEN);
    for (i, c) in stored[1..].iter().enumerate() {
        buf.clear();
        buf.extend_from_slice(c);
        dec.open_chunk_in_place(i as u64, &mut buf, i == last)
            .unwrap();
    }
    let ra_s = t.elapsed().as_secs_f64();

    println!("crypto throughput over 256 MiB, 64 KiB chunks:");
    println!(
        "  seal (ChunkSealer, 1 MiB pushes)      {:8.0} MB/s",
        mbps(TOTAL, seal_s)
    );
    println!(
        "  seal + SHA-256 of plaintext           {:8.0} MB/s",
        mbps(TOTAL, seal_sha_s)
    );
    println!(
        "  seal in place (Encryptor, no alloc)   {:8.0} MB/s",
        mbps(TOTAL, inplace_s)
    );
    println!(
        "  SHA-256 alone                         {:8.0} MB/s",
        mbps(TOTAL, sha_s)
    );
    println!(
        "  open (ChunkOpener, known length)      {:8.0} MB/s",
        mbps(TOTAL, open_s)
    );
    println!(
        "  open in place (Decryptor, per chunk)  {:8.0} MB/s",
        mbps(TOTAL, ra_s)
    );
}
