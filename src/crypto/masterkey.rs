//! Master keys: `MASTERKEY`, `MASTERKEYS`, or the development key file (SPEC §1).
//!
//! # How a key value is read
//!
//! A value (after trimming surrounding whitespace) is
//!
//! 1. a **raw key** if it is base64 (standard or URL-safe alphabet, padded or not) of exactly
//!    32 bytes — e.g. the output of `openssl rand -base64 32`;
//! 2. otherwise **rejected as a malformed key** if it consists only of base64 characters and
//!    either ends in `=` or is at least 40 characters long — it was almost certainly meant as
//!    a key and has the wrong length or a typo (a 40+-character passphrase must therefore
//!    contain some other character, such as a space or punctuation);
//! 3. otherwise a **passphrase** of at least [`MIN_PASSPHRASE_CHARS`] characters, stretched with
//!    Argon2id (m = 64 MiB, t = 3, p = 4; RFC 9106's second recommended setting) with the fixed
//!    salt `"vellum/masterkey/v1/" ‖ key id`, so the same passphrase gives the same key on every
//!    start, and different ids give different keys. These parameters and the salt are part of
//!    the stored data: DO NOT CHANGE them. A passphrase is weaker than a random key; a warning
//!    says so at start-up.
//!
//! `MASTERKEY` has the key id [`SINGLE_KEY_ID`] (`"master"`, as in gm-data's tutorial).
//! `MASTERKEYS=id:key,id:key` names several; the first is active (new data keys are wrapped
//! under it), the others can still unwrap. Ids are `[A-Za-z0-9_-]{1,32}`; a passphrase in
//! `MASTERKEYS` cannot contain `,` (it may contain `:` after the first one).
//!
//! Neither set: the development key in `DATA_DIR/dev-masterkey` (32 random bytes, base64,
//! mode 0600) is loaded or created, with key id `"master"` and a loud warning.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::{CryptoError, Result};

/// Key id of the single key given by `MASTERKEY` (and of the development key).
pub const SINGLE_KEY_ID: &str = "master";
/// File name of the development master key inside the data directory.
pub const DEV_MASTERKEY_FILE: &str = "dev-masterkey";
/// Shortest passphrase accepted for `MASTERKEY` / `MASTERKEYS`.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
const MAX_KEY_ID_LEN: usize = 32;
const KEY_LEN: usize = 32;

/// Argon2id cost parameters for passphrases.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

/// The parameters every passphrase-derived master key was made with. DO NOT CHANGE: a
/// different setting derives a different key, and every data key wrapped under the old one
/// becomes unreadable.
pub(crate) const KDF_V1: KdfParams = KdfParams {
    m_kib: 64 * 1024,
    t: 3,
    p: 4,
};
/// Salt prefix for passphrases; the key id follows. DO NOT CHANGE (see [`KDF_V1`]).
const KDF_SALT_PREFIX: &[u8] = b"vellum/masterkey/v1/";

/// One 256-bit master key. Zeroized on drop; its `Debug` never shows it.
pub struct MasterKey {
    bytes: Box<[u8; KEY_LEN]>,
    from_passphrase: bool,
}

impl MasterKey {
    fn from_bytes(bytes: &[u8; KEY_LEN], from_passphrase: bool) -> Self {
        Self {
            bytes: Box::new(*bytes),
            from_passphrase,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Whether the key was stretched from a passphrase.
    pub fn is_from_passphrase(&self) -> bool {
        self.from_passphrase
    }

    /// A short, non-secret identifier of the key (16 hex digits of a domain-separated SHA-256)
    /// for logs, so operators can tell keys apart without ever printing one.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"vellum/masterkey-fingerprint/v1\0");
        h.update(&self.bytes[..]);
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The configured master keys; the first is active.
pub struct MasterKeys {
    keys: Vec<(String, MasterKey)>,
    development: bool,
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .field("active", &self.active_id())
            .field("development", &self.development)
            .finish_non_exhaustive()
    }
}

impl MasterKeys {
    /// Builds the master keys from `MASTERKEY` and `MASTERKEYS` (at most one may be set), or
    /// loads/creates the development key in `data_dir` when neither is. See the module docs
    /// for how values are read. Setting both is an error, as is an empty value.
    pub fn from_config(
        masterkey: Option<&str>,
        masterkeys: Option<&str>,
        data_dir: &Path,
    ) -> Result<Self> {
        Self::from_config_with(masterkey, masterkeys, data_dir, &KDF_V1)
    }

    pub(crate) fn from_config_with(
        masterkey: Option<&str>,
        masterkeys: Option<&str>,
        data_dir: &Path,
        kdf: &KdfParams,
    ) -> Result<Self> {
        let keys = match (masterkey, masterkeys) {
            (Some(_), Some(_)) => {
                return Err(CryptoError::Config(
                    "MASTERKEY and MASTERKEYS are both set; set only one".into(),
                ))
            }
            (Some(v), None) => {
                vec![(
                    SINGLE_KEY_ID.to_string(),
                    parse_key_value(SINGLE_KEY_ID, v, kdf)?,
                )]
            }
            (None, Some(list)) => parse_key_list(list, kdf)?,
            (None, None) => {
                let key = load_or_create_dev_key(data_dir)?;
                return Ok(Self {
                    keys: vec![(SINGLE_KEY_ID.to_string(), key)],
                    development: true,
                });
            }
        };
        let this = Self {
            keys,
            development: false,
        };
        for (id, key) in &this.keys {
            if key.from_passphrase {
                tracing::warn!(
                    key_id = %id,
                    "master key {id:?} is derived from a passphrase, which is weaker than a random \
                     32-byte key; for production set a key from `openssl rand -base64 32`"
                );
            }
        }
        Ok(this)
    }

    /// Master keys from raw 32-byte keys, first active (for tests and tools). Ids are checked
    /// as for `MASTERKEYS`.
    pub fn from_raw_keys<I>(keys: I) -> Result<Self>
    where
        I: IntoIterator<Item = (String, [u8; KEY_LEN])>,
    {
        let mut out: Vec<(String, MasterKey)> = Vec::new();
        for (n, (id, mut bytes)) in keys.into_iter().enumerate() {
            let key = MasterKey::from_bytes(&bytes, false);
            bytes.zeroize();
            check_key_id(&id, n + 1)?;
            if out.iter().any(|(existing, _)| *existing == id) {
                return Err(CryptoError::Config(format!(
                    "duplicate master key id {id:?}"
                )));
            }
            out.push((id, key));
        }
        if out.is_empty() {
            return Err(CryptoError::Config("no master keys given".into()));
        }
        Ok(Self {
            keys: out,
            development: false,
        })
    }

    /// Id of the active key (the one new data keys are wrapped under).
    pub fn active_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The active key.
    pub fn active(&self) -> &MasterKey {
        &self.keys[0].1
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, key)| key)
    }

    /// All ids, the active one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Whether this is the development key from the data directory (no MASTERKEY configured).
    pub fn is_development(&self) -> bool {
        self.development
    }
}

fn check_key_id(id: &str, entry: usize) -> Result<()> {
    let ok = (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        // The text is not echoed: a malformed entry may well be a key pasted in the wrong place.
        Err(CryptoError::Config(format!(
            "master key entry {entry}: the key id must be 1-{MAX_KEY_ID_LEN} characters of [A-Za-z0-9_-]"
        )))
    }
}

/// `MASTERKEYS=id:key,id:key`.
fn parse_key_list(list: &str, kdf: &KdfParams) -> Result<Vec<(String, MasterKey)>> {
    if list.trim().is_empty() {
        return Err(CryptoError::Config("MASTERKEYS is empty".into()));
    }
    let mut out: Vec<(String, MasterKey)> = Vec::new();
    for (n, entry) in list.split(',').enumerate() {
        let entry_no = n + 1;
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(CryptoError::Config(format!(
                "MASTERKEYS entry {entry_no} is empty"
            )));
        }
        let Some((id, value)) = entry.split_once(':') else {
            return Err(CryptoError::Config(format!(
                "MASTERKEYS entry {entry_no} is not of the form id:key"
            )));
        };
        let id = id.trim();
        check_key_id(id, entry_no)?;
        if out.iter().any(|(existing, _)| existing == id) {
            return Err(CryptoError::Config(format!(
                "duplicate master key id {id:?} in MASTERKEYS"
            )));
        }
        let key = parse_key_value(id, value, kdf)?;
        out.push((id.to_string(), key));
    }
    Ok(out)
}

fn invalid(id: &str, reason: impl Into<String>) -> CryptoError {
    CryptoError::InvalidMasterKey {
        id: id.to_string(),
        reason: reason.into(),
    }
}

/// Decodes `s` as base64 of exactly 32 bytes under any of the four usual variants.
fn decode_key_b64(s: &str) -> Option<Box<[u8; KEY_LEN]>> {
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(v) = engine.decode(s) {
            let v = Zeroizing::new(v);
            if let Ok(arr) = <&[u8; KEY_LEN]>::try_from(v.as_slice()) {
                return Some(Box::new(*arr));
            }
        }
    }
    None
}

/// Length in bytes that `s` decodes to as base64 (any variant), if it decodes at all.
fn decoded_len(s: &str) -> Option<usize> {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .into_iter()
        .find_map(|e| e.decode(s).ok().map(|v| Zeroizing::new(v).len()))
}

fn is_base64_shaped(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
}

/// One key value: base64 of 32 bytes, or a passphrase (see the module docs).
fn parse_key_value(id: &str, value: &str, kdf: &KdfParams) -> Result<MasterKey> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(id, "empty"));
    }
    if let Some(mut raw) = decode_key_b64(value) {
        let key = MasterKey::from_bytes(&raw, false);
        raw.zeroize();
        return Ok(key);
    }
    if is_base64_shaped(value) && (value.ends_with('=') || value.len() >= 40) {
        let reason = match decoded_len(value) {
            Some(n) => {
                format!("looks like base64 but decodes to {n} bytes; a key must be 32 bytes")
            }
            None => {
                "looks like base64 but does not decode; a key must be base64 of 32 bytes".into()
            }
        };
        return Err(invalid(id, reason));
    }
    if value.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(invalid(
            id,
            format!(
                "neither base64 of 32 bytes nor a passphrase of at least {MIN_PASSPHRASE_CHARS} characters"
            ),
        ));
    }
    let mut out = derive_from_passphrase(id, value.as_bytes(), kdf)?;
    let key = MasterKey::from_bytes(&out, true);
    out.zeroize();
    Ok(key)
}

fn derive_from_passphrase(id: &str, passphrase: &[u8], kdf: &KdfParams) -> Result<[u8; KEY_LEN]> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(KEY_LEN))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut salt = KDF_SALT_PREFIX.to_vec();
    salt.extend_from_slice(id.as_bytes());
    let mut out = [0u8; KEY_LEN];
    argon
        .hash_password_into(passphrase, &salt, &mut out)
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

fn dev_err(path: &Path, reason: impl fmt::Display) -> CryptoError {
    CryptoError::DevKeyFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Loads `data_dir/dev-masterkey`, creating it (0600, 32 random bytes in base64) if missing.
/// Creation is atomic: the key is written and synced to a temporary file that is then
/// hard-linked into place, so a crash never leaves a half-written key and two processes
/// starting at once agree on one key.
fn load_or_create_dev_key(data_dir: &Path) -> Result<MasterKey> {
    let path = data_dir.join(DEV_MASTERKEY_FILE);
    let key = match read_dev_key(&path)? {
        Some(key) => key,
        None => create_dev_key(data_dir, &path)?,
    };
    tracing::warn!(
        path = %path.display(),
        fingerprint = %key.fingerprint(),
        "NO MASTERKEY OR MASTERKEYS SET: using the DEVELOPMENT master key in {}. Anyone who can \
         read that file can decrypt every blob. Set MASTERKEY (e.g. `openssl rand -base64 32`) \
         for anything but development.",
        path.display()
    );
    Ok(key)
}

fn read_dev_key(path: &Path) -> Result<Option<MasterKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(dev_err(path, e)),
    };
    let Some(mut raw) = decode_key_b64(text.trim()) else {
        return Err(dev_err(
            path,
            "is not base64 of 32 bytes (corrupt?); restore it from a backup",
        ));
    };
    let key = MasterKey::from_bytes(&raw, false);
    raw.zeroize();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "development master key file is readable by group or others; chmod 600 it");
            }
        }
    }
    Ok(Some(key))
}

fn create_dev_key(data_dir: &Path, path: &Path) -> Result<MasterKey> {
    std::fs::create_dir_all(data_dir).map_err(|e| dev_err(data_dir, e))?;
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.fill_bytes(&mut raw[..]);
    let text = Zeroizing::new(format!("{}\n", STANDARD.encode(&raw[..])));
    match crate::files::create_once(path, text.as_bytes()) {
        Ok(crate::files::Made::Created) => {
            tracing::warn!(path = %path.display(), "created a new development master key");
            Ok(MasterKey::from_bytes(&raw, false))
        }
        // Another process created it first: use theirs.
        Ok(crate::files::Made::Existing) => {
            read_dev_key(path)?.ok_or_else(|| dev_err(path, "vanished while being created"))
        }
        Err(e) => Err(dev_err(path, e)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Cheap Argon2id parameters so debug-build tests stay fast; the production parameters are
    /// pinned by `passphrase_known_answer_v1`.
    pub(crate) const KDF_TEST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    pub(crate) const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
    pub(crate) const KEY_B: &str = "//79/Pv6+fj39vX08/Lx8O/u7ezr6uno5+bl5OPi4eA="; // bytes 255..=224

    fn nodir() -> std::path::PathBuf {
        std::path::PathBuf::from("/nonexistent/should-not-be-touched")
    }

    fn cfg(mk: Option<&str>, mks: Option<&str>) -> Result<MasterKeys> {
        MasterKeys::from_config_with(mk, mks, &nodir(), &KDF_TEST)
    }

    fn seq() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn masterkey_base64_variants() {
        let expect = seq();
        let std_pad = STANDARD.encode(expect);
        let std_nopad = STANDARD_NO_PAD.encode(expect);
        let url = URL_SAFE.encode([0xfbu8; 32]);
        let url_nopad = URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert!(url.contains('-') || url.contains('_'));
        for (v, bytes) in [
            (std_pad.as_str(), expect),
            (std_nopad.as_str(), expect),
            (url.as_str(), [0xfb; 32]),
            (url_nopad.as_str(), [0xfb; 32]),
        ] {
            let k = cfg(Some(&format!("  {v}\n")), None).unwrap();
            assert_eq!(k.active_id(), "master");
            assert_eq!(k.ids().collect::<Vec<_>>(), ["master"]);
            let key = k.get("master").unwrap();
            assert_eq!(key.bytes(), &bytes);
            assert!(!key.is_from_passphrase());
            assert!(!k.is_development());
        }
        assert_eq!(cfg(Some(KEY_A), None).unwrap().active().bytes(), &seq());
    }

    #[test]
    fn masterkey_wrong_length_base64_is_rejected() {
        for v in [
            STANDARD.encode([7u8; 16]),                   // padded, 16 bytes
            STANDARD.encode([7u8; 31]),                   // padded, 31 bytes
            STANDARD.encode([7u8; 33]),                   // 44 chars, 33 bytes
            STANDARD_NO_PAD.encode([7u8; 48]),            // 64 chars, no padding, 48 bytes
            STANDARD.encode([7u8; 32])[..42].to_string(), // truncated key
        ] {
            let err = cfg(Some(&v), None).unwrap_err();
            assert!(
                matches!(err, CryptoError::InvalidMasterKey { .. }),
                "{v}: {err}"
            );
            assert!(
                !err.to_string().contains(&v),
                "error must not echo the value"
            );
        }
    }

    #[test]
    fn masterkey_passphrase_is_stretched_deterministically() {
        let p = "correct horse battery staple";
        let a = cfg(Some(p), None).unwrap();
        let b = cfg(Some(p), None).unwrap();
        assert!(a.active().is_from_passphrase());
        assert_eq!(
            a.active().bytes(),
            b.active().bytes(),
            "same passphrase, same key"
        );
        let c = cfg(Some("correct horse battery staplf"), None).unwrap();
        assert_ne!(a.active().bytes(), c.active().bytes());
        // The salt depends on the key id.
        let d = cfg(None, Some(&format!("other:{p}"))).unwrap();
        assert_ne!(a.active().bytes(), d.active().bytes());
        let e = cfg(None, Some(&format!("master:{p}"))).unwrap();
        assert_eq!(a.active().bytes(), e.active().bytes());
    }

    /// Pins the production Argon2id parameters and salt: if this changes, every passphrase
    /// deployment loses its data. DO NOT update the expected value.
    #[test]
    fn passphrase_known_answer_v1() {
        let k =
            MasterKeys::from_config(Some("correct horse battery staple"), None, &nodir()).unwrap();
        assert_eq!(
            STANDARD.encode(k.active().bytes()),
            // Cross-checked with the reference implementation:
            // echo -n "correct horse battery staple" |
            //   argon2 "vellum/masterkey/v1/master" -id -t 3 -m 16 -p 4 -l 32 -r
            "uk/UsB1kx2KsJCzCRr/B0Fc8/FFeu/x7mlrn6qXLv3A=",
        );
    }

    #[test]
    fn masterkey_bad_values() {
        for v in ["", "   ", "short", "elevenchars", "AAAA=", "=", "=="] {
            let err = cfg(Some(v), None).unwrap_err();
            assert!(
                matches!(err, CryptoError::InvalidMasterKey { .. }),
                "{v:?}: {err}"
            );
        }
        // 12 characters is enough for a passphrase.
        assert!(cfg(Some("twelve chars"), None)
            .unwrap()
            .active()
            .is_from_passphrase());
        // A long base64-shaped string is taken as a broken key, not a passphrase.
        assert!(cfg(Some(&"a".repeat(40)), None).is_err());
        // ... but with a non-base64 character it is a passphrase.
        assert!(cfg(Some(&format!("{}!", "a".repeat(40))), None).is_ok());
    }

    #[test]
    fn masterkeys_list() {
        let k = cfg(
            None,
            Some(&format!(
                "new:{KEY_B}, old:{KEY_A} ,pp-1_x:some long passphrase"
            )),
        )
        .unwrap();
        assert_eq!(k.ids().collect::<Vec<_>>(), ["new", "old", "pp-1_x"]);
        assert_eq!(k.active_id(), "new");
        assert_eq!(k.active().bytes()[0], 255);
        assert_eq!(k.get("old").unwrap().bytes(), &seq());
        assert!(k.get("pp-1_x").unwrap().is_from_passphrase());
        assert!(k.get("missing").is_none());
        // A passphrase may contain ':' after the id.
        let k = cfg(None, Some("a:pass:word:with:colons")).unwrap();
        assert_eq!(k.active_id(), "a");
        // Max id length 32.
        let id32 = "x".repeat(32);
        assert!(cfg(None, Some(&format!("{id32}:{KEY_A}"))).is_ok());
    }

    #[test]
    fn masterkeys_bad_lists() {
        let cases = [
            "".to_string(),
            " ".to_string(),
            format!("a:{KEY_A},"),
            format!(",a:{KEY_A}"),
            format!("a:{KEY_A},,b:{KEY_B}"),
            KEY_A.to_string(),                           // no id
            format!(":{KEY_A}"),                         // empty id
            format!("bad id:{KEY_A}"),                   // space in id
            format!("bad.id:{KEY_A}"),                   // dot in id
            format!("{}:{KEY_A}", "x".repeat(33)),       // id too long
            format!("é:{KEY_A}"),                        // non-ASCII id
            format!("a:{KEY_A},a:{KEY_B}"),              // duplicate id
            "a:".to_string(),                            // empty key
            "a:short".to_string(),                       // too short for a passphrase
            format!("a:{}", STANDARD.encode([1u8; 16])), // wrong length
        ];
        for c in cases {
            let err = cfg(None, Some(&c)).unwrap_err();
            let msg = err.to_string();
            assert!(
                !msg.contains(KEY_A) && !msg.contains(KEY_B),
                "{c:?} leaked a key: {msg}"
            );
        }
        // A key that looks like it was pasted into the id position is not echoed either.
        let err = cfg(None, Some(&format!("{KEY_A}:{KEY_B}"))).unwrap_err();
        assert!(!err.to_string().contains(&KEY_A[..20]), "{err}");
    }

    #[test]
    fn masterkey_and_masterkeys_both_set_is_an_error() {
        assert!(matches!(
            cfg(Some(KEY_A), Some(&format!("a:{KEY_B}"))),
            Err(CryptoError::Config(_))
        ));
    }

    #[test]
    fn from_raw_keys_checks() {
        let k =
            MasterKeys::from_raw_keys([("k1".to_string(), [1u8; 32]), ("k0".into(), [0u8; 32])])
                .unwrap();
        assert_eq!(k.active_id(), "k1");
        assert!(MasterKeys::from_raw_keys(Vec::<(String, [u8; 32])>::new()).is_err());
        assert!(
            MasterKeys::from_raw_keys([("a".to_string(), [1u8; 32]), ("a".into(), [0u8; 32])])
                .is_err()
        );
        assert!(MasterKeys::from_raw_keys([("a b".to_string(), [1u8; 32])]).is_err());
    }

    #[test]
    fn debug_never_shows_keys() {
        let k = cfg(None, Some(&format!("new:{KEY_B},old:{KEY_A}"))).unwrap();
        let d = format!("{k:?} {:?} {:?}", k.active(), k.get("old"));
        assert!(d.contains("new") && d.contains("old"));
        assert!(
            !d.contains(KEY_A) && !d.contains(KEY_B) && !d.contains("255"),
            "{d}"
        );
        let fp = k.active().fingerprint();
        assert_eq!(fp.len(), 16);
        assert_ne!(fp, k.get("old").unwrap().fingerprint());
    }

    #[test]
    fn dev_key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let a = MasterKeys::from_config_with(None, None, &data, &KDF_TEST).unwrap();
        assert!(a.is_development());
        assert_eq!(a.active_id(), "master");
        let path = data.join(DEV_MASTERKEY_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(STANDARD.decode(text.trim()).unwrap(), a.active().bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let b = MasterKeys::from_config_with(None, None, &data, &KDF_TEST).unwrap();
        assert_eq!(
            a.active().bytes(),
            b.active().bytes(),
            "same key on every start"
        );
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(DEV_MASTERKEY_FILE)]);
        // A configured key does not touch the dev key file.
        let c = MasterKeys::from_config_with(Some(KEY_A), None, &data, &KDF_TEST).unwrap();
        assert!(!c.is_development());
    }

    #[test]
    fn corrupt_dev_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEV_MASTERKEY_FILE);
        std::fs::write(&path, "not a key\n").unwrap();
        let err = MasterKeys::from_config_with(None, None, dir.path(), &KDF_TEST).unwrap_err();
        assert!(matches!(err, CryptoError::DevKeyFile { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "not a key\n",
            "left untouched"
        );
    }
}
