//! Key material: reading `JWT_PUB`-style inputs, telling key types apart, and the
//! development ES256 key pair.
//!
//! Error messages here describe the key's shape, never its bytes: private keys and secrets
//! must not reach logs.

use std::fs;

use std::path::{Path, PathBuf};

use base64::Engine;
use p256::elliptic_curve::rand_core::OsRng;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::der::asn1::{AnyRef, BitStringRef, UintRef};
use p256::pkcs8::der::{self, Encode, Tag};
use p256::pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
    ObjectIdentifier, PrivateKeyInfo,
};

use super::alg::KeyKind;
use super::IdentityConfigError;

/// File name of the development private key (PKCS#8 PEM, mode 0600) inside the data folder.
pub const DEV_KEY_FILE: &str = "dev-jwt-es256.pem";
/// File name of the matching public key (SPKI PEM), written for convenience.
pub const DEV_PUB_FILE: &str = "dev-jwt-es256.pub.pem";

const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A verification key, validated at start-up so that a bad key fails the config, not
/// every request.
pub(crate) enum PublicKey {
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
    /// PKCS#1 `RSAPublicKey` DER, the form jsonwebtoken's RSA verifier takes.
    Rsa(Vec<u8>),
    Ed25519([u8; 32]),
}

impl PublicKey {
    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            Self::P256(_) => KeyKind::P256,
            Self::P384(_) => KeyKind::P384,
            Self::P521(_) => KeyKind::P521,
            Self::Rsa(_) => KeyKind::Rsa,
            Self::Ed25519(_) => KeyKind::Ed25519,
        }
    }
}

/// A signing key. Secret bytes are zeroized on drop.
pub(crate) enum PrivateKey {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
    /// PKCS#1 `RSAPrivateKey` DER.
    Rsa(Zeroizing<Vec<u8>>),
    /// The whole PKCS#8 document, as jsonwebtoken's EdDSA signer wants it.
    Ed25519(Zeroizing<Vec<u8>>),
}

/// Key text after resolving "PEM, base64 of PEM, or a path".
enum Material {
    Pem(Zeroizing<String>),
    Der(Zeroizing<Vec<u8>>),
}

/// Who is asking, for messages: `JWT_PUB` may be echoed (it is public), a private key never.
#[derive(Clone, Copy)]
enum Input {
    Public,
    Private,
}

impl Input {
    fn what(self) -> &'static str {
        match self {
            Input::Public => "JWT_PUB",
            Input::Private => "signing key",
        }
    }
}

fn bad(input: Input, reason: impl Into<String>) -> IdentityConfigError {
    IdentityConfigError::BadKey {
        what: input.what(),
        reason: reason.into(),
    }
}

/// Accepts PEM text, a path to a file holding PEM (or DER, or base64 of either), or base64
/// of PEM (gm-data's `JWT_PUB` form) or of DER.
fn resolve(input_text: &str, input: Input) -> Result<Material, IdentityConfigError> {
    let s = input_text.trim();
    if s.is_empty() {
        return Err(bad(input, "empty"));
    }
    if s.contains("-----BEGIN") {
        return Ok(Material::Pem(Zeroizing::new(s.to_owned())));
    }
    let looks_like_path = s.len() < 4096 && !s.contains('\n');
    if looks_like_path && Path::new(s).is_file() {
        let path = PathBuf::from(s);
        let bytes = Zeroizing::new(fs::read(&path).map_err(|source| IdentityConfigError::Io {
            action: "read key file",
            path: path.clone(),
            source,
        })?);
        return material_from_bytes(&bytes).ok_or_else(|| {
            bad(
                input,
                format!(
                    "{} holds neither PEM, DER, nor base64 of either",
                    path.display()
                ),
            )
        });
    }
    if let Some(m) = decode_base64(s).and_then(|b| material_from_bytes(&b)) {
        return Ok(m);
    }
    let hint = match input {
        Input::Public
            if looks_like_path
                && (s.starts_with(['/', '.', '~'])
                    || [".pem", ".pub", ".key"].iter().any(|e| s.ends_with(e))) =>
        {
            format!("no such file: {s}")
        }
        _ => "neither PEM text, base64 of a PEM, nor the path of a readable file".to_owned(),
    };
    Err(bad(input, hint))
}

/// Bytes from a file or a base64 string: PEM text, DER, or (files only) base64 again.
fn material_from_bytes(bytes: &[u8]) -> Option<Material> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.contains("-----BEGIN") {
            return Some(Material::Pem(Zeroizing::new(text.to_owned())));
        }
        if let Some(inner) = decode_base64(text.trim()) {
            if inner.starts_with(b"-----BEGIN") || inner.first() == Some(&0x30) {
                return material_from_bytes(&inner);
            }
        }
    }
    // A DER SEQUENCE.
    (bytes.first() == Some(&0x30)).then(|| Material::Der(Zeroizing::new(bytes.to_vec())))
}

/// Standard or URL-safe base64, padded or not, line breaks allowed.
fn decode_base64(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    const CFG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CFG);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CFG);
    let compact = Zeroizing::new(s.split_whitespace().collect::<String>());
    if compact.is_empty() {
        return None;
    }
    STD.decode(compact.as_bytes())
        .or_else(|_| URL.decode(compact.as_bytes()))
        .ok()
        .map(Zeroizing::new)
}

/// A PEM block's label and decoded DER.
type PemBlock = (String, Zeroizing<Vec<u8>>);

/// Every PEM block in `text` as (label, DER), in order, each decoded by RustCrypto's
/// `pem-rfc7468` (RFC 7468's strict grammar: 64-column base64, no headers).
///
/// That crate decodes exactly one block and nothing around it, so the blocks are found
/// here: lines are trimmed first so that indented or CRLF PEM (from YAML, Windows editors)
/// still parses, and text around the blocks (openssl's "EC PARAMETERS", comments) is
/// skipped. Each block's text and its DER live only in zeroized buffers, a block that fails
/// to decode half-way included.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut block = Zeroizing::new(format!("{line}\n"));
        let mut closed = false;
        for l in lines.by_ref() {
            block.push_str(l);
            block.push('\n');
            if l == end {
                closed = true;
                break;
            }
        }
        if !closed {
            return Err(format!("PEM block \"{label}\" has no END line"));
        }
        let der = pem_decode(&block).map_err(|e| format!("PEM block \"{label}\" {e}"))?;
        blocks.push((label.to_owned(), der));
    }
    if blocks.is_empty() {
        return Err("no PEM block found".to_owned());
    }
    Ok(blocks)
}

/// One whole PEM block (BEGIN line to END line) to DER, decoded straight into a zeroized
/// buffer of the exact size.
fn pem_decode(block: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let does_not_decode = |e: pem_rfc7468::Error| {
        // RFC 7468 has no headers; OpenSSL's legacy encrypted keys carry "Proc-Type:" and
        // "DEK-Info:" lines, which would otherwise read as bad base64.
        if block.lines().any(|l| l.contains(':')) {
            "has headers (a legacy encrypted key?): decrypt it and give the PKCS#8 form \
             (openssl pkey -in KEY)"
                .to_owned()
        } else {
            format!("does not decode: {e}")
        }
    };
    let mut decoder = pem_rfc7468::Decoder::new(block.as_bytes()).map_err(does_not_decode)?;
    let mut der = Zeroizing::new(vec![0u8; decoder.remaining_len()]);
    decoder.decode(&mut der).map_err(does_not_decode)?;
    if !decoder.is_finished() {
        return Err("does not decode: trailing data".to_owned());
    }
    Ok(der)
}

const PRIVATE_LABELS: [&str; 4] = [
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
];

// ---------------------------------------------------------------- public keys

/// Parses `JWT_PUB`: SPKI "PUBLIC KEY" (P-256, P-384, P-521, Ed25519, RSA) or PKCS#1
/// "RSA PUBLIC KEY", as PEM, base64 of PEM, base64 of DER, or a file holding any of these.
pub(crate) fn parse_public_key(text: &str) -> Result<PublicKey, IdentityConfigError> {
    let input = Input::Public;
    match resolve(text, input)? {
        Material::Der(der) => public_from_spki(&der)
            .or_else(|spki_err| public_from_pkcs1(&der).map_err(|_| spki_err))
            .map_err(|r| bad(input, r)),
        Material::Pem(pem) => {
            let blocks = pem_blocks(&pem).map_err(|r| bad(input, r))?;
            for (label, der) in &blocks {
                match label.as_str() {
                    "PUBLIC KEY" => return public_from_spki(der).map_err(|r| bad(input, r)),
                    "RSA PUBLIC KEY" => return public_from_pkcs1(der).map_err(|r| bad(input, r)),
                    l if PRIVATE_LABELS.contains(&l) => {
                        return Err(bad(
                            input,
                            "holds a private key; give only the public key \
                             (openssl pkey -in KEY -pubout)",
                        ))
                    }
                    "CERTIFICATE" => {
                        return Err(bad(
                            input,
                            "certificates are not supported; extract the public key \
                             (openssl x509 -in CERT -pubkey -noout)",
                        ))
                    }
                    _ => {}
                }
            }
            Err(bad(input, "no PUBLIC KEY or RSA PUBLIC KEY block"))
        }
    }
}

fn public_from_spki(der: &[u8]) -> Result<PublicKey, String> {
    let spki = SubjectPublicKeyInfoRef::try_from(der)
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    let oid = spki.algorithm.oid;
    if oid == OID_EC {
        if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(k));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
            return Ok(PublicKey::P384(k));
        }
        if let Ok(k) = p521::PublicKey::from_public_key_der(der) {
            return Ok(PublicKey::P521(k));
        }
        return Err("EC key on an unsupported curve or not a valid point \
                    (supported: P-256, P-384, P-521)"
            .to_owned());
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key bit string is not whole bytes")?;
    if oid == OID_ED25519 {
        let raw: [u8; 32] = bits
            .try_into()
            .map_err(|_| "Ed25519 public key is not 32 bytes".to_owned())?;
        check_ed25519(&raw)?;
        return Ok(PublicKey::Ed25519(raw));
    }
    if oid == OID_RSA {
        return public_from_pkcs1(bits);
    }
    Err(format!(
        "unsupported public key algorithm {oid} (supported: EC P-256/P-384/P-521, RSA, Ed25519)"
    ))
}

fn public_from_pkcs1(der: &[u8]) -> Result<PublicKey, String> {
    let utils = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.key_utils;
    let (n, _e) = (utils.rsa_pub_components_from_public_key)(der)
        .map_err(|e| format!("not a valid RSA public key: {e}"))?;
    warn_short_rsa(n.len() * 8);
    Ok(PublicKey::Rsa(der.to_vec()))
}

fn warn_short_rsa(bits: usize) {
    if bits < 2048 {
        tracing::warn!(
            bits,
            "RSA key is shorter than 2048 bits: too weak for production"
        );
    }
}

/// jsonwebtoken parses Ed25519 keys per token and only reports "does not verify"; check
/// the point decodes now so a bad key fails at start-up.
fn check_ed25519(raw: &[u8; 32]) -> Result<(), String> {
    let key = jsonwebtoken::DecodingKey::from_ed_der(raw);
    let zero_sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 64]);
    jsonwebtoken::crypto::verify(&zero_sig, b"", &key, jsonwebtoken::Algorithm::EdDSA)
        .map(|_| ())
        .map_err(|_| "not a valid Ed25519 public key".to_owned())
}

// --------------------------------------------------------------- private keys

/// Parses a signing key: PKCS#8 "PRIVATE KEY" (EC, RSA, Ed25519), SEC1 "EC PRIVATE KEY",
/// or PKCS#1 "RSA PRIVATE KEY"; as PEM, base64 of PEM/DER, or a file.
pub(crate) fn parse_private_key(text: &str) -> Result<PrivateKey, IdentityConfigError> {
    let input = Input::Private;
    match resolve(text, input)? {
        Material::Der(der) => private_from_pkcs8(&der)
            .or_else(|e| private_from_sec1(&der).map_err(|_| e))
            .or_else(|e| private_from_pkcs1(&der).map_err(|_| e))
            .map_err(|r| bad(input, r)),
        Material::Pem(pem) => {
            let blocks = pem_blocks(&pem).map_err(|r| bad(input, r))?;
            for (label, der) in &blocks {
                let parsed = match label.as_str() {
                    "PRIVATE KEY" => private_from_pkcs8(der),
                    "EC PRIVATE KEY" => private_from_sec1(der),
                    "RSA PRIVATE KEY" => private_from_pkcs1(der),
                    "ENCRYPTED PRIVATE KEY" => Err("encrypted private keys are not supported \
                                                    (decrypt with openssl pkey)"
                        .to_owned()),
                    "PUBLIC KEY" | "RSA PUBLIC KEY" => Err("this is a public key; signing \
                                                            needs the private key"
                        .to_owned()),
                    _ => continue,
                };
                return parsed.map_err(|r| bad(input, r));
            }
            Err(bad(input, "no private key block"))
        }
    }
}

fn private_from_pkcs8(der: &[u8]) -> Result<PrivateKey, String> {
    let info =
        PrivateKeyInfo::try_from(der).map_err(|e| format!("not a PKCS#8 private key: {e}"))?;
    let oid = info.algorithm.oid;
    if oid == OID_EC {
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::P256(k));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::P384(k));
        }
        if let Ok(k) = p521::SecretKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::P521(k));
        }
        return Err("EC private key on an unsupported curve or invalid \
                    (supported: P-256, P-384, P-521)"
            .to_owned());
    }
    if oid == OID_RSA {
        return private_from_pkcs1(info.private_key);
    }
    if oid == OID_ED25519 {
        let utils = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.key_utils;
        (utils.ed_pub_components_from_private_key)(der, &jsonwebtoken::jwk::EllipticCurve::Ed25519)
            .map_err(|_| "not a valid Ed25519 private key".to_owned())?;
        return Ok(PrivateKey::Ed25519(Zeroizing::new(der.to_vec())));
    }
    Err(format!(
        "unsupported private key algorithm {oid} (supported: EC P-256/P-384/P-521, RSA, Ed25519)"
    ))
}

fn private_from_sec1(der: &[u8]) -> Result<PrivateKey, String> {
    if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P384(k));
    }
    if let Ok(k) = p521::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P521(k));
    }
    Err("not a valid SEC1 EC private key on P-256, P-384 or P-521".to_owned())
}

fn private_from_pkcs1(der: &[u8]) -> Result<PrivateKey, String> {
    let utils = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.key_utils;
    let (n, _e) = (utils.rsa_pub_components_from_private_key)(der)
        .map_err(|_| "not a valid RSA private key".to_owned())?;
    warn_short_rsa(n.len() * 8);
    Ok(PrivateKey::Rsa(Zeroizing::new(der.to_vec())))
}

impl PrivateKey {
    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            Self::P256(_) => KeyKind::P256,
            Self::P384(_) => KeyKind::P384,
            Self::P521(_) => KeyKind::P521,
            Self::Rsa(_) => KeyKind::Rsa,
            Self::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The matching public key as SPKI PEM, the form `JWT_PUB` wants (base64'd).
    pub(crate) fn public_pem(&self) -> Result<String, String> {
        let err = |e: &dyn std::fmt::Display| format!("cannot encode public key: {e}");
        let utils = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.key_utils;
        let spki = match self {
            Self::P256(k) => k.public_key().to_public_key_pem(LineEnding::LF),
            Self::P384(k) => k.public_key().to_public_key_pem(LineEnding::LF),
            Self::P521(k) => k.public_key().to_public_key_pem(LineEnding::LF),
            Self::Rsa(pkcs1) => {
                let (n, e) =
                    (utils.rsa_pub_components_from_private_key)(pkcs1).map_err(|e| err(&e))?;
                let public = rsa_public_pkcs1(&n, &e).map_err(|e| err(&e))?;
                Ok(spki_pem(OID_RSA, Some(AnyRef::NULL), &public).map_err(|e| err(&e))?)
            }
            Self::Ed25519(pkcs8) => {
                let raw = (utils.ed_pub_components_from_private_key)(
                    pkcs8,
                    &jsonwebtoken::jwk::EllipticCurve::Ed25519,
                )
                .map_err(|e| err(&e))?;
                Ok(spki_pem(OID_ED25519, None, &raw).map_err(|e| err(&e))?)
            }
        };
        spki.map_err(|e| err(&e))
    }
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_pkcs1(n: &[u8], e: &[u8]) -> der::Result<Vec<u8>> {
    let n = UintRef::new(n)?;
    let e = UintRef::new(e)?;
    let body = (n.encoded_len()? + e.encoded_len()?)?;
    let mut out = Vec::new();
    der::Header::new(Tag::Sequence, body)?.encode_to_vec(&mut out)?;
    n.encode_to_vec(&mut out)?;
    e.encode_to_vec(&mut out)?;
    Ok(out)
}

fn spki_pem(
    oid: ObjectIdentifier,
    parameters: Option<AnyRef<'_>>,
    key: &[u8],
) -> der::Result<String> {
    let spki = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef { oid, parameters },
        subject_public_key: BitStringRef::from_bytes(key)?,
    };
    let der = spki.to_der()?;
    Ok(der::pem::encode_string("PUBLIC KEY", LineEnding::LF, &der)?)
}

/// SEC1 uncompressed point of an EC public key, the form jsonwebtoken's ES256/ES384
/// verifiers take.
pub(crate) fn p256_point(k: &p256::PublicKey) -> Vec<u8> {
    k.to_encoded_point(false).as_bytes().to_vec()
}

pub(crate) fn p384_point(k: &p384::PublicKey) -> Vec<u8> {
    k.to_encoded_point(false).as_bytes().to_vec()
}

// -------------------------------------------------------------- dev key pair

/// The development key pair, loaded or freshly made.
pub(crate) struct DevKey {
    pub(crate) key: p256::SecretKey,
    pub(crate) path: PathBuf,
    pub(crate) created: bool,
}

/// Loads `DATA_DIR/dev-jwt-es256.pem`, or creates it (mode 0600) with its public half
/// beside it. Creation goes through a temporary file and a hard link so that two processes
/// starting at once end up sharing one key rather than each keeping its own.
pub(crate) fn load_or_create_dev_key(data_dir: &Path) -> Result<DevKey, IdentityConfigError> {
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityConfigError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(data_dir).map_err(io_err("create data folder", data_dir))?;
    let path = data_dir.join(DEV_KEY_FILE);

    let mut created = false;
    if !path.exists() {
        let key = p256::SecretKey::random(&mut OsRng);
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| dev_bad(&path, format!("cannot encode new key: {e}")))?;
        created = crate::files::create_once(&path, pem.as_bytes())
            .map_err(io_err("write", &path))?
            == crate::files::Made::Created;
    }

    let text = Zeroizing::new(fs::read_to_string(&path).map_err(io_err("read", &path))?);
    warn_if_readable_by_others(&path);
    let key = match pem_blocks(&text)
        .map_err(|r| dev_bad(&path, r))?
        .iter()
        .find(|(label, _)| label == "PRIVATE KEY")
    {
        Some((_, der)) => p256::SecretKey::from_pkcs8_der(der).map_err(|_| {
            dev_bad(
                &path,
                "not a P-256 PKCS#8 key (delete it to get a fresh dev key)".to_owned(),
            )
        })?,
        None => return Err(dev_bad(&path, "no PRIVATE KEY block".to_owned())),
    };

    // The public half, for JWT_PUB elsewhere; best effort, it can always be re-derived.
    if let Ok(pub_pem) = key.public_key().to_public_key_pem(LineEnding::LF) {
        let pub_path = data_dir.join(DEV_PUB_FILE);
        if fs::read_to_string(&pub_path).ok().as_deref() != Some(pub_pem.as_str()) {
            if let Err(e) = fs::write(&pub_path, pub_pem) {
                tracing::warn!(path = %pub_path.display(), error = %e, "cannot write dev public key");
            }
        }
    }
    Ok(DevKey { key, path, created })
}

fn dev_bad(path: &Path, reason: String) -> IdentityConfigError {
    IdentityConfigError::BadKey {
        what: "dev key file",
        reason: format!("{}: {reason}", path.display()),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "dev JWT private key is readable by other users (chmod 600 it)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
