//! Data keys (DEKs) and their wrapping under the master keys.
//!
//! `wrap`: AES-256-GCM(master key, 12-byte random nonce, DEK) with
//! AAD = `"vellum/dek/v1"` ‖ 0x00 ‖ blob id, so a wrapped key only unwraps for the blob it was
//! made for. `encrypteddata` = base64(32-byte ciphertext ‖ 16-byte tag),
//! `encryptednonce` = base64(nonce), standard alphabet with padding. DO NOT CHANGE (stored).

use std::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use aws_lc_rs::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::masterkey::{MasterKey, MasterKeys};
use super::{CryptoError, Result};

const DEK_LEN: usize = 32;
const WRAP_NONCE_LEN: usize = 12;
const WRAP_TAG_LEN: usize = 16;
/// Domain label of the wrapping AAD. DO NOT CHANGE (stored).
const WRAP_AAD_LABEL: &[u8] = b"vellum/dek/v1\0";

/// A blob's 256-bit data key. Zeroized on drop; its `Debug` never shows it. Make a fresh one
/// per blob with [`Dek::generate`]; never reuse one for two blobs.
pub struct Dek(Box<[u8; DEK_LEN]>);

impl Dek {
    /// A fresh random data key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = Box::new([0u8; DEK_LEN]);
        OsRng.fill_bytes(&mut key[..]);
        Self(key)
    }

    /// A data key from raw bytes (tests and tools; normal code uses [`Dek::generate`] and
    /// [`MasterKeys::unwrap`]).
    pub fn from_bytes(bytes: [u8; DEK_LEN]) -> Self {
        let mut bytes = bytes;
        let key = Self(Box::new(bytes));
        bytes.zeroize();
        key
    }

    /// The key for sealing chunks (AWS-LC's AES-256-GCM, see `Cargo.toml`).
    pub(crate) fn sealing_key(&self) -> LessSafeKey {
        let key = UnboundKey::new(&AES_256_GCM, &self.0[..]).expect("a 32-byte AES-256 key");
        LessSafeKey::new(key)
    }

    /// The key as base64, for callers with the `blobkey` privilege (SPEC §3) only.
    pub fn expose_base64(&self) -> String {
        STANDARD.encode(&self.0[..])
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8; DEK_LEN] {
        &self.0
    }
}

impl Drop for Dek {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

/// A data key wrapped under one master key: the values of gm-data's
/// `"encrypteddata": {key_id: ...}` and `"encryptednonce": {key_id: ...}`.
/// Not secret without the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrapped {
    /// Id of the master key it is wrapped under.
    pub key_id: String,
    /// base64 of the wrapped key (48 bytes: ciphertext ‖ tag).
    pub encrypteddata: String,
    /// base64 of the 12-byte nonce.
    pub encryptednonce: String,
}

impl Wrapped {
    /// The two JSON objects `{"<key id>": "<base64>"}` for `encrypteddata` and `encryptednonce`.
    pub fn to_json(&self) -> (Value, Value) {
        let one = |v: &str| {
            let mut m = serde_json::Map::new();
            m.insert(self.key_id.clone(), Value::String(v.to_string()));
            Value::Object(m)
        };
        (one(&self.encrypteddata), one(&self.encryptednonce))
    }
}

fn wrap_aad(blob_id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_AAD_LABEL.len() + blob_id.len());
    aad.extend_from_slice(WRAP_AAD_LABEL);
    aad.extend_from_slice(blob_id);
    aad
}

fn master_cipher(key: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new(key.bytes().into())
}

impl MasterKeys {
    /// Wraps `dek` under the active master key for the blob `blob_id` (e.g. its rname).
    pub fn wrap(&self, dek: &Dek, blob_id: &[u8]) -> Wrapped {
        let mut nonce = [0u8; WRAP_NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut buf = Zeroizing::new([0u8; DEK_LEN + WRAP_TAG_LEN]);
        buf[..DEK_LEN].copy_from_slice(&dek.0[..]);
        let tag = master_cipher(self.active())
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                &wrap_aad(blob_id),
                (&mut buf[..DEK_LEN]).into(),
            )
            .expect("AES-GCM seals 32 bytes");
        buf[DEK_LEN..].copy_from_slice(&tag);
        Wrapped {
            key_id: self.active_id().to_string(),
            encrypteddata: STANDARD.encode(&buf[..]),
            encryptednonce: STANDARD.encode(nonce),
        }
    }

    /// Unwraps a data key wrapped under master key `key_id` for the blob `blob_id`. Fails if the
    /// key id is unknown, the values are malformed, or authentication fails (wrong master key,
    /// another blob's wrapped key, tampering).
    pub fn unwrap(
        &self,
        key_id: &str,
        encrypteddata: &str,
        encryptednonce: &str,
        blob_id: &[u8],
    ) -> Result<Dek> {
        let key = self
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKeyId(key_id.to_string()))?;
        let data = STANDARD
            .decode(encrypteddata.trim())
            .map_err(|_| CryptoError::MalformedWrappedKey("encrypteddata is not base64"))?;
        let nonce = STANDARD
            .decode(encryptednonce.trim())
            .map_err(|_| CryptoError::MalformedWrappedKey("encryptednonce is not base64"))?;
        if data.len() != DEK_LEN + WRAP_TAG_LEN {
            return Err(CryptoError::MalformedWrappedKey(
                "encrypteddata is not 48 bytes",
            ));
        }
        let Ok(nonce) = <[u8; WRAP_NONCE_LEN]>::try_from(nonce.as_slice()) else {
            return Err(CryptoError::MalformedWrappedKey(
                "encryptednonce is not 12 bytes",
            ));
        };
        let mut dek = Box::new([0u8; DEK_LEN]);
        dek.copy_from_slice(&data[..DEK_LEN]);
        let tag = Tag::from(<[u8; WRAP_TAG_LEN]>::try_from(&data[DEK_LEN..]).expect("16 bytes"));
        match master_cipher(key).decrypt_inout_detached(
            &Nonce::from(nonce),
            &wrap_aad(blob_id),
            (&mut dek[..]).into(),
            &tag,
        ) {
            Ok(()) => Ok(Dek(dek)),
            Err(_) => {
                dek.zeroize();
                Err(CryptoError::UnwrapFailed {
                    key_id: key_id.to_string(),
                })
            }
        }
    }

    /// Unwraps and re-wraps under the active master key with a fresh nonce (`vellum rekey`).
    /// The blob itself is not touched: its DEK does not change.
    pub fn rewrap(
        &self,
        key_id: &str,
        encrypteddata: &str,
        encryptednonce: &str,
        blob_id: &[u8],
    ) -> Result<Wrapped> {
        let dek = self.unwrap(key_id, encrypteddata, encryptednonce, blob_id)?;
        Ok(self.wrap(&dek, blob_id))
    }

    /// Whether a key wrapped under `key_id` should be re-wrapped by `vellum rekey`.
    pub fn needs_rewrap(&self, key_id: &str) -> bool {
        key_id != self.active_id()
    }

    /// Unwraps from gm-data-shaped JSON: `encrypteddata` / `encryptednonce` objects keyed by
    /// master key id. The active key is tried first, then the others in configured order; the
    /// first configured id present in both objects decides (a failure there is returned, not
    /// skipped).
    pub fn unwrap_json(
        &self,
        encrypteddata: &Value,
        encryptednonce: &Value,
        blob_id: &[u8],
    ) -> Result<Dek> {
        let (Some(data), Some(nonces)) = (encrypteddata.as_object(), encryptednonce.as_object())
        else {
            return Err(CryptoError::MalformedWrappedKey(
                "encrypteddata/encryptednonce are not objects",
            ));
        };
        for id in self.ids() {
            if let (Some(d), Some(n)) = (data.get(id), nonces.get(id)) {
                let (Some(d), Some(n)) = (d.as_str(), n.as_str()) else {
                    return Err(CryptoError::MalformedWrappedKey(
                        "wrapped key values are not strings",
                    ));
                };
                return self.unwrap(id, d, n, blob_id);
            }
        }
        match data.keys().next() {
            Some(id) => Err(CryptoError::UnknownKeyId(id.chars().take(64).collect())),
            None => Err(CryptoError::MalformedWrappedKey("encrypteddata is empty")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::masterkey::tests::{KEY_A, KEY_B};

    fn keys(list: &str) -> MasterKeys {
        MasterKeys::from_config(None, Some(list), std::path::Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn dek_generate_is_random_and_redacted() {
        let a = Dek::generate();
        let b = Dek::generate();
        assert_ne!(a.bytes(), b.bytes());
        assert_eq!(format!("{a:?}"), "Dek(<redacted>)");
    }

    #[test]
    fn wrap_unwrap_roundtrip_and_shape() {
        let mk = keys(&format!("master:{KEY_A}"));
        let dek = Dek::generate();
        let w = mk.wrap(&dek, b"558/158340da6ed32558");
        assert_eq!(w.key_id, "master");
        assert_eq!(STANDARD.decode(&w.encrypteddata).unwrap().len(), 48);
        assert_eq!(STANDARD.decode(&w.encryptednonce).unwrap().len(), 12);
        assert_eq!(w.encryptednonce.len(), 16);
        let back = mk
            .unwrap(
                &w.key_id,
                &w.encrypteddata,
                &w.encryptednonce,
                b"558/158340da6ed32558",
            )
            .unwrap();
        assert_eq!(back.bytes(), dek.bytes());
        // Fresh nonce each time.
        let w2 = mk.wrap(&dek, b"558/158340da6ed32558");
        assert_ne!(w.encryptednonce, w2.encryptednonce);
        assert_ne!(w.encrypteddata, w2.encrypteddata);
        // JSON shape: {"master": "..."}.
        let (ed, en) = w.to_json();
        assert_eq!(ed, serde_json::json!({"master": w.encrypteddata}));
        assert_eq!(en, serde_json::json!({"master": w.encryptednonce}));
        assert_eq!(
            mk.unwrap_json(&ed, &en, b"558/158340da6ed32558")
                .unwrap()
                .bytes(),
            dek.bytes()
        );
    }

    #[test]
    fn unwrap_for_another_blob_fails() {
        let mk = keys(&format!("master:{KEY_A}"));
        let dek = Dek::generate();
        let w = mk.wrap(&dek, b"blob-1");
        let err = mk
            .unwrap(&w.key_id, &w.encrypteddata, &w.encryptednonce, b"blob-2")
            .unwrap_err();
        assert!(matches!(err, CryptoError::UnwrapFailed { .. }), "{err}");
        assert!(mk
            .unwrap(&w.key_id, &w.encrypteddata, &w.encryptednonce, b"")
            .is_err());
    }

    #[test]
    fn tampered_wrapped_key_fails() {
        let mk = keys(&format!("master:{KEY_A}"));
        let w = mk.wrap(&Dek::generate(), b"blob");
        let data = STANDARD.decode(&w.encrypteddata).unwrap();
        let nonce = STANDARD.decode(&w.encryptednonce).unwrap();
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x01;
            let r = mk.unwrap("master", &STANDARD.encode(&d), &w.encryptednonce, b"blob");
            assert!(
                matches!(r, Err(CryptoError::UnwrapFailed { .. })),
                "byte {i}"
            );
        }
        for i in 0..nonce.len() {
            let mut n = nonce.clone();
            n[i] ^= 0x80;
            assert!(mk
                .unwrap("master", &w.encrypteddata, &STANDARD.encode(&n), b"blob")
                .is_err());
        }
        // Malformed encodings and lengths.
        for (d, n) in [
            ("!!!", w.encryptednonce.as_str()),
            (w.encrypteddata.as_str(), "***"),
            (
                &STANDARD.encode(&data[..47]) as &str,
                w.encryptednonce.as_str(),
            ),
            (
                w.encrypteddata.as_str(),
                &STANDARD.encode(&nonce[..11]) as &str,
            ),
        ] {
            assert!(matches!(
                mk.unwrap("master", d, n, b"blob"),
                Err(CryptoError::MalformedWrappedKey(_))
            ));
        }
    }

    #[test]
    fn wrong_master_key_and_unknown_id_fail() {
        let a = keys(&format!("master:{KEY_A}"));
        let b = keys(&format!("master:{KEY_B}"));
        let w = a.wrap(&Dek::generate(), b"blob");
        assert!(matches!(
            b.unwrap("master", &w.encrypteddata, &w.encryptednonce, b"blob"),
            Err(CryptoError::UnwrapFailed { .. })
        ));
        assert!(matches!(
            a.unwrap("other", &w.encrypteddata, &w.encryptednonce, b"blob"),
            Err(CryptoError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn rewrap_under_new_active_key() {
        let old = keys(&format!("k2024:{KEY_A}"));
        let dek = Dek::generate();
        let w_old = old.wrap(&dek, b"558/158340da6ed32558");
        assert_eq!(w_old.key_id, "k2024");

        // Rotation: the new key goes first, the old one stays for unwrapping.
        let rotated = keys(&format!("k2025:{KEY_B},k2024:{KEY_A}"));
        assert!(rotated.needs_rewrap(&w_old.key_id));
        let w_new = rotated
            .rewrap(
                &w_old.key_id,
                &w_old.encrypteddata,
                &w_old.encryptednonce,
                b"558/158340da6ed32558",
            )
            .unwrap();
        assert_eq!(w_new.key_id, "k2025");
        assert!(!rotated.needs_rewrap(&w_new.key_id));
        let back = rotated
            .unwrap(
                &w_new.key_id,
                &w_new.encrypteddata,
                &w_new.encryptednonce,
                b"558/158340da6ed32558",
            )
            .unwrap();
        assert_eq!(
            back.bytes(),
            dek.bytes(),
            "same DEK: the blob needs no rewrite"
        );

        // Once the old key is retired, only the rewrapped value opens.
        let new_only = keys(&format!("k2025:{KEY_B}"));
        assert!(new_only
            .unwrap(
                &w_old.key_id,
                &w_old.encrypteddata,
                &w_old.encryptednonce,
                b"558/158340da6ed32558"
            )
            .is_err());
        assert!(new_only
            .unwrap(
                &w_new.key_id,
                &w_new.encrypteddata,
                &w_new.encryptednonce,
                b"558/158340da6ed32558"
            )
            .is_ok());

        // Rewrap with the wrong blob id fails rather than laundering a key to another blob.
        assert!(rotated
            .rewrap(
                &w_old.key_id,
                &w_old.encrypteddata,
                &w_old.encryptednonce,
                b"other"
            )
            .is_err());
    }

    #[test]
    fn unwrap_json_picks_a_known_id() {
        let rotated = keys(&format!("k2025:{KEY_B},k2024:{KEY_A}"));
        let old = keys(&format!("k2024:{KEY_A}"));
        let dek = Dek::generate();
        let (ed, en) = old.wrap(&dek, b"b").to_json();
        assert_eq!(
            rotated.unwrap_json(&ed, &en, b"b").unwrap().bytes(),
            dek.bytes()
        );
        let unknown = keys(&format!("zzz:{KEY_A}"));
        assert!(matches!(
            unknown.unwrap_json(&ed, &en, b"b"),
            Err(CryptoError::UnknownKeyId(_))
        ));
        assert!(rotated.unwrap_json(&Value::Null, &en, b"b").is_err());
        assert!(rotated
            .unwrap_json(&serde_json::json!({}), &serde_json::json!({}), b"b")
            .is_err());
        assert!(rotated
            .unwrap_json(
                &serde_json::json!({"k2024": 1}),
                &serde_json::json!({"k2024": 2}),
                b"b"
            )
            .is_err());
    }

    /// Pins the wrapping format with a vector made by an independent AES-GCM implementation
    /// (Python `cryptography`): master key = bytes 0..32, nonce = bytes 100..112, DEK = 0x42 × 32,
    /// AAD = "vellum/dek/v1\0" ‖ rname. DO NOT CHANGE the expected values.
    #[test]
    fn unwrap_known_answer_v1() {
        let mk = keys(&format!("master:{KEY_A}"));
        let dek = mk
            .unwrap(
                "master",
                "ClmcJDurFNx8IB2qmCcovwCAREjJLrEw5ZPuCrnh5wrBPWKVuuCQrFX/SL3LwoMQ",
                "ZGVmZ2hpamtsbW5v",
                b"558/158340da6ed32558",
            )
            .unwrap();
        assert_eq!(dek.bytes(), &[0x42; 32]);
    }

    #[test]
    fn wrapped_values_do_not_contain_the_dek() {
        let mk = keys(&format!("master:{KEY_A}"));
        let dek = Dek::from_bytes([0x41; 32]);
        let w = mk.wrap(&dek, b"blob");
        let raw = STANDARD.decode(&w.encrypteddata).unwrap();
        assert_ne!(&raw[..32], &[0x41; 32]);
        assert!(!format!("{w:?}").contains(&STANDARD.encode([0x41u8; 32])));
    }
}
