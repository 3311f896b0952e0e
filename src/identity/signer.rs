//! Minting tokens: `vellum token`, tests and benchmarks.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::EncodingKey;
use p256::pkcs8::EncodePrivateKey;
use p521::ecdsa::signature::Signer as _;
use serde_json::{Map, Value};

use super::alg::{join, JwtAlgorithm, KeyKind};
use super::keys::{self, PrivateKey};
use super::{IdentityConfig, IdentityConfigError};

enum SignKey {
    Jwt(EncodingKey),
    P521(Box<p521::ecdsa::SigningKey>),
}

/// Signs JWTs with one key and one algorithm. `Debug` shows the algorithm only.
pub struct TokenSigner {
    alg: JwtAlgorithm,
    kind: KeyKind,
    key: SignKey,
    public_pem: Option<String>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn signing_err(e: impl std::fmt::Display) -> IdentityConfigError {
    IdentityConfigError::Signing(e.to_string())
}

impl TokenSigner {
    /// From a private key given as PEM text, base64 of PEM, or a path: PKCS#8
    /// "PRIVATE KEY", SEC1 "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY". The algorithm
    /// follows the key: P-256 → ES256, P-384 → ES384, P-521 → ES512, RSA → RS256 (see
    /// [`TokenSigner::with_algorithm`]), Ed25519 → EdDSA.
    pub fn from_pem(pem_or_path: &str) -> Result<Self, IdentityConfigError> {
        Self::from_private(keys::parse_private_key(pem_or_path)?)
    }

    pub(crate) fn from_private(key: PrivateKey) -> Result<Self, IdentityConfigError> {
        let kind = key.kind();
        let public_pem = Some(key.public_pem().map_err(signing_err)?);
        let key = match key {
            PrivateKey::P256(k) => SignKey::Jwt(EncodingKey::from_ec_der(
                k.to_pkcs8_der().map_err(signing_err)?.as_bytes(),
            )),
            PrivateKey::P384(k) => SignKey::Jwt(EncodingKey::from_ec_der(
                k.to_pkcs8_der().map_err(signing_err)?.as_bytes(),
            )),
            PrivateKey::P521(k) => SignKey::P521(Box::new(
                p521::ecdsa::SigningKey::from_bytes(&k.to_bytes()).map_err(signing_err)?,
            )),
            PrivateKey::Rsa(pkcs1) => SignKey::Jwt(EncodingKey::from_rsa_der(&pkcs1)),
            PrivateKey::Ed25519(pkcs8) => SignKey::Jwt(EncodingKey::from_ed_der(&pkcs8)),
        };
        Ok(Self {
            alg: kind.default_signing_algorithm(),
            kind,
            key,
            public_pem,
        })
    }

    /// HMAC signer; `alg` is HS256, HS384 or HS512.
    pub fn hmac(secret: &[u8], alg: &str) -> Result<Self, IdentityConfigError> {
        if secret.is_empty() {
            return Err(IdentityConfigError::Secret("empty"));
        }
        let signer = Self {
            alg: JwtAlgorithm::HS256,
            kind: KeyKind::Hmac,
            key: SignKey::Jwt(EncodingKey::from_secret(secret)),
            public_pem: None,
        };
        signer.with_algorithm(alg)
    }

    /// The development ES256 key pair in `data_dir` (created if missing, private key file
    /// mode 0600): the key `vellum serve` verifies with when neither `JWT_PUB` nor
    /// `JWT_SECRET` is set.
    pub fn dev(data_dir: &Path) -> Result<Self, IdentityConfigError> {
        let dev = keys::load_or_create_dev_key(data_dir)?;
        if dev.created {
            tracing::info!(path = %dev.path.display(), "created development JWT key pair");
        }
        Self::from_private(PrivateKey::P256(dev.key))
    }

    /// The server's signing key as configured: HMAC for `JWT_SECRET` (the first HS
    /// algorithm in `JWT_ALGORITHMS`, else HS256), the dev key when neither `JWT_PUB` nor
    /// `JWT_SECRET` is set. With `JWT_PUB` the server holds no private key, so this fails.
    pub fn from_config(cfg: &IdentityConfig) -> Result<Self, IdentityConfigError> {
        if cfg.jwt_pub_value().is_some() {
            return Err(IdentityConfigError::NoSigningKey(
                "JWT_PUB is only a public key; give the matching private key to sign tokens"
                    .to_owned(),
            ));
        }
        if let Some(secret) = cfg.jwt_secret_value() {
            let algs = super::resolve_algorithms(KeyKind::Hmac, cfg.jwt_algorithms.as_deref())?;
            return Self::hmac(secret.as_bytes(), algs[0].as_str());
        }
        Self::dev(&cfg.data_dir)
    }

    /// Chooses another algorithm the key supports (e.g. PS256 or RS512 for an RSA key).
    pub fn with_algorithm(mut self, alg: &str) -> Result<Self, IdentityConfigError> {
        let parsed = JwtAlgorithm::from_config(alg)
            .filter(|a| self.kind.supports(*a))
            .ok_or_else(|| {
                signing_err(format!(
                    "a {} cannot sign {alg:?} (it can sign: {})",
                    self.kind.describe(),
                    join(self.kind.algorithms())
                ))
            })?;
        self.alg = parsed;
        Ok(self)
    }

    pub fn algorithm(&self) -> &str {
        self.alg.as_str()
    }

    /// Signs `claims` (a JSON object) with `iat` = now and `exp` = now + `ttl`, replacing
    /// any `exp`/`iat` given.
    pub fn sign(&self, claims: &Value, ttl: Duration) -> Result<String, IdentityConfigError> {
        let mut claims = claims
            .as_object()
            .cloned()
            .ok_or_else(|| signing_err("claims must be a JSON object"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(signing_err)?
            .as_secs();
        claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
        claims.insert("iat".into(), now.into());
        self.sign_with_header(&Map::new(), &Value::Object(claims))
    }

    /// Signs `claims` exactly as given, adding nothing: for tests that need expired,
    /// exp-less or oddly typed claims.
    pub fn sign_exact(&self, claims: &Value) -> Result<String, IdentityConfigError> {
        self.sign_with_header(&Map::new(), claims)
    }

    /// Header `{"alg": …, "typ": "JWT"}` plus `extra` (which may override either: tests use
    /// it to lie about `alg` or add `jwk`/`kid`).
    pub(crate) fn sign_with_header(
        &self,
        extra: &Map<String, Value>,
        claims: &Value,
    ) -> Result<String, IdentityConfigError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut header = Map::new();
        header.insert("alg".into(), self.alg.as_str().into());
        header.insert("typ".into(), "JWT".into());
        header.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let h = b64.encode(serde_json::to_vec(&header).map_err(signing_err)?);
        let p = b64.encode(serde_json::to_vec(claims).map_err(signing_err)?);
        let message = format!("{h}.{p}");
        let sig = match (&self.key, self.alg.to_jsonwebtoken()) {
            (SignKey::Jwt(key), Some(jalg)) => {
                jsonwebtoken::crypto::sign(message.as_bytes(), key, jalg).map_err(signing_err)?
            }
            (SignKey::P521(key), None) => {
                let sig: p521::ecdsa::Signature =
                    key.try_sign(message.as_bytes()).map_err(signing_err)?;
                b64.encode(sig.to_bytes())
            }
            _ => return Err(signing_err("key and algorithm do not match")),
        };
        Ok(format!("{message}.{sig}"))
    }

    /// The matching public key as SPKI PEM; `None` for HMAC.
    pub fn public_pem(&self) -> Option<String> {
        self.public_pem.clone()
    }

    /// The public key in gm-data's `JWT_PUB` form: base64 of the PEM.
    pub fn jwt_pub(&self) -> Option<String> {
        self.public_pem
            .as_ref()
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p))
    }
}
