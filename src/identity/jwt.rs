//! JWT verification: one path for every algorithm.
//!
//! The signature is checked with the configured key only (jsonwebtoken's crypto for all
//! algorithms but ES512, p521 for ES512); the header's `kid`, `jku`, `x5u`, `x5c` and `jwk`
//! are never looked at. Claims are then validated here rather than by jsonwebtoken so that
//! ES512 tokens get exactly the same `exp`/`nbf`/`iss`/`aud` rules as the rest.

use base64::Engine;
use jsonwebtoken::DecodingKey;
use p521::ecdsa::signature::Verifier as _;
use serde_json::{Map, Value};

use super::alg::{join, JwtAlgorithm, KeyKind};
use super::keys::{self, PublicKey};

/// Longer than any sane claims set; stops a client making us hash and parse megabytes.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a JWT was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token is larger than {} KiB", MAX_TOKEN_LEN / 1024)]
    TooLarge,
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgNone,
    #[error("token algorithm {alg} is not allowed (allowed: {allowed})")]
    AlgNotAllowed { alg: String, allowed: String },
    #[error("token header has critical extensions (crit), which are not supported")]
    CriticalHeader,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has no exp")]
    MissingExp,
    #[error("token {0} is not a number")]
    NotANumber(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("token iss does not match JWT_ISSUER")]
    WrongIssuer,
    #[error("token aud does not include JWT_AUDIENCE")]
    WrongAudience,
}

enum VerifyKey {
    /// Every algorithm jsonwebtoken implements.
    Jwt(DecodingKey),
    /// ES512: jsonwebtoken has none.
    P521(p521::ecdsa::VerifyingKey),
}

/// Verifies tokens against one key, one allowed-algorithm set and one claims policy.
pub(crate) struct TokenVerifier {
    key: VerifyKey,
    allowed: Vec<JwtAlgorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: f64,
}

impl TokenVerifier {
    pub(crate) fn from_public(
        key: PublicKey,
        allowed: Vec<JwtAlgorithm>,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: std::time::Duration,
    ) -> Result<Self, String> {
        let key = match key {
            PublicKey::P256(k) => VerifyKey::Jwt(DecodingKey::from_ec_der(&keys::p256_point(&k))),
            PublicKey::P384(k) => VerifyKey::Jwt(DecodingKey::from_ec_der(&keys::p384_point(&k))),
            PublicKey::P521(k) => VerifyKey::P521(
                p521::ecdsa::VerifyingKey::from_affine(*k.as_affine())
                    .map_err(|_| "invalid P-521 public key".to_owned())?,
            ),
            PublicKey::Rsa(pkcs1) => VerifyKey::Jwt(DecodingKey::from_rsa_der(&pkcs1)),
            PublicKey::Ed25519(raw) => VerifyKey::Jwt(DecodingKey::from_ed_der(&raw)),
        };
        Ok(Self::new(key, allowed, issuer, audience, leeway))
    }

    pub(crate) fn from_secret(
        secret: &[u8],
        allowed: Vec<JwtAlgorithm>,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: std::time::Duration,
    ) -> Self {
        let key = VerifyKey::Jwt(DecodingKey::from_secret(secret));
        Self::new(key, allowed, issuer, audience, leeway)
    }

    fn new(
        key: VerifyKey,
        allowed: Vec<JwtAlgorithm>,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: std::time::Duration,
    ) -> Self {
        Self {
            key,
            allowed,
            issuer,
            audience,
            leeway_secs: leeway.as_secs_f64(),
        }
    }

    /// Clock skew tolerated on `exp` and `nbf`.
    pub(crate) fn leeway(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.leeway_secs)
    }

    pub(crate) fn allowed(&self) -> &[JwtAlgorithm] {
        &self.allowed
    }

    /// Checks `token` and returns its claims object. `now` is seconds since the epoch.
    pub(crate) fn verify(&self, token: &str, now: f64) -> Result<Map<String, Value>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("a JWT has three dot-separated parts"));
        };

        let header = decode_object(h64).ok_or(TokenError::Malformed(
            "header is not base64url of a JSON object",
        ))?;
        let alg_name = match header.get("alg") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(TokenError::Malformed("header has no alg")),
        };
        if alg_name.trim().eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        let alg = JwtAlgorithm::from_header(alg_name)
            .filter(|a| self.allowed.contains(a))
            .ok_or_else(|| TokenError::AlgNotAllowed {
                alg: printable(alg_name),
                allowed: join(&self.allowed),
            })?;
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        if header.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }

        let signature = b64url(s64).ok_or(TokenError::Malformed("signature is not base64url"))?;
        let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
        if !self.signature_ok(alg, signing_input, s64.trim_end_matches('='), &signature) {
            return Err(TokenError::BadSignature);
        }

        let claims = decode_object(p64).ok_or(TokenError::Malformed(
            "payload is not base64url of a JSON object",
        ))?;
        self.validate_claims(&claims, now)?;
        Ok(claims)
    }

    fn signature_ok(&self, alg: JwtAlgorithm, message: &[u8], sig64: &str, sig: &[u8]) -> bool {
        match (&self.key, alg.to_jsonwebtoken()) {
            (VerifyKey::Jwt(key), Some(jalg)) => {
                matches!(
                    jsonwebtoken::crypto::verify(sig64, message, key, jalg),
                    Ok(true)
                )
            }
            // RFC 7518 §3.4: R || S, each 66 bytes for P-521; hash SHA-512.
            (VerifyKey::P521(key), None) => p521::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            // The allowed set is checked against the key at start-up; never reached.
            _ => false,
        }
    }

    /// The same rules whatever the algorithm: `exp` required and numeric; `nbf` and `iat`
    /// numeric when present; `iss`/`aud` only when configured.
    pub(crate) fn validate_claims(
        &self,
        claims: &Map<String, Value>,
        now: f64,
    ) -> Result<(), TokenError> {
        let exp = numeric(claims, "exp")?.ok_or(TokenError::MissingExp)?;
        if now >= exp + self.leeway_secs {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = numeric(claims, "nbf")? {
            if nbf > now + self.leeway_secs {
                return Err(TokenError::NotYetValid);
            }
        }
        numeric(claims, "iat")?;
        if let Some(want) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
                return Err(TokenError::WrongIssuer);
            }
        }
        if let Some(want) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(s)) => s == want,
                Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(want)),
                _ => false,
            };
            if !ok {
                return Err(TokenError::WrongAudience);
            }
        }
        Ok(())
    }
}

/// Every key kind maps to a concrete verifier; this is how start-up checks that
/// `JWT_ALGORITHMS` only names algorithms the key can verify.
pub(crate) fn check_allowed(kind: KeyKind, allowed: &[JwtAlgorithm]) -> Result<(), String> {
    match allowed.iter().find(|a| !kind.supports(**a)) {
        Some(a) => Err(format!(
            "{a} cannot be verified with a {} (it can verify: {})",
            kind.describe(),
            join(kind.algorithms())
        )),
        None => Ok(()),
    }
}

fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(TokenError::NotANumber(name)),
        Some(_) => Err(TokenError::NotANumber(name)),
    }
}

/// base64url without padding (RFC 7515); trailing `=` tolerated as Go's jwt libraries did.
pub(crate) fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&b64url(part)?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// An attacker-chosen `alg` goes into a 401 body and the logs: keep it short and plain.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(24)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > 24 {
        out.push('…');
    }
    out
}
