//! JWS algorithm names and which keys may use them.
//!
//! jsonwebtoken's own `Algorithm` has no ES512, so Vellum keeps its own list and maps to
//! jsonwebtoken only where jsonwebtoken does the cryptography.

use std::fmt;

/// A JWS signature algorithm Vellum can verify and sign with. `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    ES256,
    ES384,
    ES512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 13] = [
        Self::HS256,
        Self::HS384,
        Self::HS512,
        Self::ES256,
        Self::ES384,
        Self::ES512,
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::EdDSA,
    ];

    /// The name as written in a JWS header (`alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::ES512 => "ES512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::EdDSA => "EdDSA",
        }
    }

    /// Exact match, as a token header must be (RFC 7515 names are case-sensitive).
    pub fn from_header(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Case-insensitive match, for operator input (`JWT_ALGORITHMS=es256`).
    pub fn from_config(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    /// The jsonwebtoken algorithm that does the cryptography, or `None` for ES512 which
    /// Vellum verifies with p521 itself.
    pub(crate) fn to_jsonwebtoken(self) -> Option<jsonwebtoken::Algorithm> {
        use jsonwebtoken::Algorithm as A;
        Some(match self {
            Self::HS256 => A::HS256,
            Self::HS384 => A::HS384,
            Self::HS512 => A::HS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::ES512 => return None,
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::PS256 => A::PS256,
            Self::PS384 => A::PS384,
            Self::PS512 => A::PS512,
            Self::EdDSA => A::EdDSA,
        })
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of key verifies (or signs) tokens. An EC key's curve fixes its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    P256,
    P384,
    P521,
    Rsa,
    Ed25519,
}

impl KeyKind {
    /// Every algorithm this key can verify; also the default allowed set (SPEC §1: "the
    /// key's own family only").
    pub fn algorithms(self) -> &'static [JwtAlgorithm] {
        use JwtAlgorithm as A;
        match self {
            Self::Hmac => &[A::HS256, A::HS384, A::HS512],
            Self::P256 => &[A::ES256],
            Self::P384 => &[A::ES384],
            Self::P521 => &[A::ES512],
            Self::Rsa => &[A::RS256, A::RS384, A::RS512, A::PS256, A::PS384, A::PS512],
            Self::Ed25519 => &[A::EdDSA],
        }
    }

    pub fn supports(self, alg: JwtAlgorithm) -> bool {
        self.algorithms().contains(&alg)
    }

    /// The algorithm a signer uses unless told otherwise.
    pub fn default_signing_algorithm(self) -> JwtAlgorithm {
        self.algorithms()[0]
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Hmac => "HMAC secret",
            Self::P256 => "EC P-256 key",
            Self::P384 => "EC P-384 key",
            Self::P521 => "EC P-521 key",
            Self::Rsa => "RSA key",
            Self::Ed25519 => "Ed25519 key",
        }
    }
}

/// "ES256, ES384" for messages.
pub(crate) fn join(algs: &[JwtAlgorithm]) -> String {
    algs.iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
