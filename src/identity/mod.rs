//! Identity: who is calling (SPEC §3).
//!
//! The HTTP layer hands over the strings it found ([`Credentials`]); [`Authenticator`] turns
//! them into an [`Identity`]: claims from a JWT (`userpolicy` header, then `userpolicy`
//! cookie, then `Authorization: Bearer`), else from the users file for a `USER_DN` sent by a
//! trusted proxy, else anonymous. A credential that is present but bad is an error, never a
//! fall-back to a weaker identity. Nothing here knows about HTTP types.
//!
//! Keys: `JWT_PUB` (any of ES256/384/512, RS*, PS*, EdDSA; gm-data's base64-of-PEM, PEM,
//! or a path), else `JWT_SECRET` (HS*), else a development ES256 key pair kept in the data
//! folder ([`DEV_KEY_FILE`]), announced with a loud warning.

mod alg;
mod jwt;
mod keys;
mod signer;
mod users;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::Claims;

pub use alg::{JwtAlgorithm, KeyKind};
pub use jwt::{TokenError, MAX_TOKEN_LEN};
pub use keys::{DEV_KEY_FILE, DEV_PUB_FILE};
pub use signer::TokenSigner;
pub use users::normalize_dn;

/// Identity settings (SPEC §1). Empty strings count as unset, so `JWT_PUB=` in an env file
/// behaves like no `JWT_PUB` at all. `Debug` redacts the secret.
#[derive(Clone)]
pub struct IdentityConfig {
    /// `JWT_PUB`: base64 of a PEM public key (gm-data's format), raw PEM text, or a path.
    pub jwt_pub: Option<String>,
    /// `JWT_SECRET`: HMAC secret (its UTF-8 bytes), used only if there is no `jwt_pub`.
    pub jwt_secret: Option<String>,
    /// `JWT_ALGORITHMS`: allowed algorithms; `None` or empty = the key's own family. May
    /// only narrow what the key can verify: naming another family is a config error.
    pub jwt_algorithms: Option<Vec<String>>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// `USERS_FILE`: gm-jwt-security's `{"users":[{"label":DN,"values":{...}}]}`.
    pub users_file: Option<PathBuf>,
    /// Peers whose `USER_DN` header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where the dev key pair lives when neither `jwt_pub` nor `jwt_secret` is set.
    pub data_dir: PathBuf,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

impl Default for IdentityConfig {
    /// The embedded defaults: dev key in `./vellum-data`, loopback proxies trusted, 5 s
    /// leeway.
    fn default() -> Self {
        Self {
            jwt_pub: None,
            jwt_secret: None,
            jwt_algorithms: None,
            jwt_issuer: None,
            jwt_audience: None,
            users_file: None,
            trusted_proxies: Self::default_trusted_proxies(),
            data_dir: PathBuf::from("./vellum-data"),
            leeway: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("jwt_pub", &self.jwt_pub)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("jwt_algorithms", &self.jwt_algorithms)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("users_file", &self.users_file)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("data_dir", &self.data_dir)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl IdentityConfig {
    /// `127.0.0.1/32,::1/128` (SPEC §1).
    pub fn default_trusted_proxies() -> Vec<ipnet::IpNet> {
        ["127.0.0.1/32", "::1/128"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    pub(crate) fn jwt_pub_value(&self) -> Option<&str> {
        non_empty(self.jwt_pub.as_deref().map(str::trim))
    }

    pub(crate) fn jwt_secret_value(&self) -> Option<&str> {
        non_empty(self.jwt_secret.as_deref())
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// What the HTTP layer found on the request. Values are passed as found; surrounding
/// whitespace, cookie quotes and a leading `Bearer ` are stripped here, and a value that is
/// then empty counts as absent (a cleared `userpolicy=` cookie is "logged out", not a bad
/// token). `Debug` shows which credentials are present, not their values.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    pub userpolicy_header: Option<&'a str>,
    pub userpolicy_cookie: Option<&'a str>,
    pub bearer: Option<&'a str>,
    pub user_dn: Option<&'a str>,
    pub peer: IpAddr,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |v: Option<&str>| v.map(|_| "[present]");
        f.debug_struct("Credentials")
            .field("userpolicy_header", &present(self.userpolicy_header))
            .field("userpolicy_cookie", &present(self.userpolicy_cookie))
            .field("bearer", &present(self.bearer))
            .field("user_dn", &self.user_dn)
            .field("peer", &self.peer)
            .finish()
    }
}

impl<'a> Credentials<'a> {
    /// No credentials at all, from `peer`.
    pub fn none(peer: IpAddr) -> Self {
        Self {
            userpolicy_header: None,
            userpolicy_cookie: None,
            bearer: None,
            user_dn: None,
            peer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    Jwt,
    UserDn,
    Anonymous,
}

/// The caller, as policies and events see it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub claims: Claims,
    /// sha256 hex of the accepted JWT (as gm-data records it); for USER_DN and anonymous
    /// callers, sha256 hex of the canonical claims JSON (keys sorted, no spaces).
    pub jwthash: String,
    pub kind: IdentityKind,
    /// When the token stops being accepted (`exp` plus the clock-skew leeway); `None` for
    /// USER_DN and anonymous callers, whose identity does not expire, and for an `exp` too
    /// far ahead for the clock to represent. A response that
    /// outlives its request (the notification feed) ends then: the token is checked once,
    /// when the request arrives.
    pub expires: Option<SystemTime>,
}

impl Identity {
    /// `{"label":"anonymous","values":{}}`.
    pub fn anonymous() -> Self {
        let claims = Claims::anonymous();
        Self {
            jwthash: canonical_hash(claims.raw()),
            claims,
            kind: IdentityKind::Anonymous,
            expires: None,
        }
    }
}

/// Where a refused token came from, so a 401 can say which of several credentials failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialPlace {
    Header,
    Cookie,
    Bearer,
}

impl std::fmt::Display for CredentialPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Header => "userpolicy header",
            Self::Cookie => "userpolicy cookie",
            Self::Bearer => "Authorization: Bearer",
        })
    }
}

/// A refused request (a 401). Messages never contain a token or secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// e.g. "token expired (userpolicy cookie)".
    #[error("{reason} ({place})")]
    Token {
        place: CredentialPlace,
        reason: TokenError,
    },
    #[error("USER_DN header from an untrusted address ({peer})")]
    UntrustedUserDn { peer: IpAddr },
    #[error("USER_DN {dn:?} is not in the users file")]
    UnknownDn { dn: String },
    #[error("USER_DN given but no users file is configured")]
    NoUsersFile,
}

/// Start-up problems: bad keys, unreadable users file, impossible algorithm lists.
#[derive(Debug, thiserror::Error)]
pub enum IdentityConfigError {
    #[error("{what}: {reason}")]
    BadKey { what: &'static str, reason: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("users file {}: {reason}", path.display())]
    UsersFile { path: PathBuf, reason: String },
    #[error("JWT_ALGORITHMS: {0}")]
    Algorithms(String),
    #[error("JWT_SECRET: {0}")]
    Secret(&'static str),
    #[error("cannot sign token: {0}")]
    Signing(String),
    #[error("no signing key: {0}")]
    NoSigningKey(String),
}

/// Turns [`Credentials`] into an [`Identity`]. Built once at start-up; `Send + Sync`.
pub struct Authenticator {
    verifier: jwt::TokenVerifier,
    key_kind: KeyKind,
    key_source: String,
    dev_key: Option<PathBuf>,
    users: Option<users::Users>,
    trusted_proxies: Vec<ipnet::IpNet>,
    anonymous: Identity,
    /// Tokens whose signature already verified, by SHA-256 of the token: a client sends
    /// the same token on every request, and an ES512 verification costs far more than the
    /// request. The claims rules (exp, nbf, iss, aud) are checked again on every use.
    verified: quick_cache::sync::Cache<[u8; 32], Arc<Map<String, Value>>>,
}

/// Verified tokens remembered (a few KiB each at most).
const VERIFIED_TOKENS: usize = 10_000;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("key", &self.key_source)
            .field("algorithms", &self.algorithms())
            .field("users", &self.users.as_ref().map(users::Users::len))
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads the key (`JWT_PUB`, else `JWT_SECRET`, else the dev key pair, created if
    /// missing and announced with a warning) and the users file. Every problem surfaces
    /// here, at start-up, rather than as a 401 on each request.
    pub fn from_config(cfg: &IdentityConfig) -> Result<Self, IdentityConfigError> {
        let issuer = non_empty(cfg.jwt_issuer.as_deref()).map(str::to_owned);
        let audience = non_empty(cfg.jwt_audience.as_deref()).map(str::to_owned);
        let algs = cfg.jwt_algorithms.as_deref();
        let mut dev_key = None;

        let (verifier, key_kind, key_source) = if let Some(jwt_pub) = cfg.jwt_pub_value() {
            if cfg.jwt_secret_value().is_some() {
                tracing::warn!("JWT_PUB and JWT_SECRET are both set: JWT_SECRET is ignored");
            }
            let key = keys::parse_public_key(jwt_pub)?;
            let kind = key.kind();
            let allowed = resolve_algorithms(kind, algs)?;
            let verifier =
                jwt::TokenVerifier::from_public(key, allowed, issuer, audience, cfg.leeway)
                    .map_err(|reason| IdentityConfigError::BadKey {
                        what: "JWT_PUB",
                        reason,
                    })?;
            (verifier, kind, format!("JWT_PUB ({})", kind.describe()))
        } else if let Some(secret) = cfg.jwt_secret_value() {
            if secret.len() < 32 {
                tracing::warn!(
                    bytes = secret.len(),
                    "JWT_SECRET is shorter than 32 bytes: easy to brute-force"
                );
            }
            let allowed = resolve_algorithms(KeyKind::Hmac, algs)?;
            let verifier = jwt::TokenVerifier::from_secret(
                secret.as_bytes(),
                allowed,
                issuer,
                audience,
                cfg.leeway,
            );
            (verifier, KeyKind::Hmac, "JWT_SECRET (HMAC)".to_owned())
        } else {
            let dev = keys::load_or_create_dev_key(&cfg.data_dir)?;
            let allowed = resolve_algorithms(KeyKind::P256, algs)?;
            tracing::warn!(
                path = %dev.path.display(),
                created = dev.created,
                "DEVELOPMENT JWT KEY IN USE: neither JWT_PUB nor JWT_SECRET is set, so tokens \
                 are verified with the ES256 key pair in the data folder. Anyone who can read \
                 that file can mint tokens for any identity, root included. Set JWT_PUB (or \
                 JWT_SECRET) before this server holds anything that matters."
            );
            let verifier = jwt::TokenVerifier::from_public(
                keys::PublicKey::P256(dev.key.public_key()),
                allowed,
                issuer,
                audience,
                cfg.leeway,
            )
            .map_err(|reason| IdentityConfigError::BadKey {
                what: "dev key file",
                reason,
            })?;
            let source = format!("development key {}", dev.path.display());
            dev_key = Some(dev.path);
            (verifier, KeyKind::P256, source)
        };

        let users = match &cfg.users_file {
            Some(path) => Some(users::Users::load(path)?),
            None => None,
        };
        let auth = Self {
            verifier,
            key_kind,
            key_source,
            dev_key,
            users,
            trusted_proxies: cfg.trusted_proxies.clone(),
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
            anonymous: Identity::anonymous(),
        };
        tracing::info!(
            key = %auth.key_source,
            algorithms = %alg::join(auth.verifier.allowed()),
            users = auth.users.as_ref().map_or(0, users::Users::len),
            "identity configured"
        );
        Ok(auth)
    }

    /// SPEC §3 order: `userpolicy` header, `userpolicy` cookie, Bearer; else `USER_DN`
    /// (only from a trusted proxy, looked up in the users file); else anonymous. The first
    /// JWT present decides: if it is bad the request fails even when a later one is good,
    /// since silently using a different credential than the one the client chose first
    /// would hide the problem.
    pub fn authenticate(&self, creds: &Credentials) -> Result<Identity, AuthError> {
        let tokens = [
            (
                CredentialPlace::Header,
                creds.userpolicy_header.map(clean_token),
            ),
            (
                CredentialPlace::Cookie,
                creds.userpolicy_cookie.map(clean_cookie),
            ),
            (CredentialPlace::Bearer, creds.bearer.map(clean_bearer)),
        ];
        for (place, token) in tokens {
            if let Some(token) = non_empty(token) {
                return self
                    .verify_token(token)
                    .map_err(|reason| AuthError::Token { place, reason });
            }
        }

        if let Some(dn) = non_empty(creds.user_dn.map(str::trim)) {
            if !self.is_trusted(creds.peer) {
                return Err(AuthError::UntrustedUserDn { peer: creds.peer });
            }
            let users = self.users.as_ref().ok_or(AuthError::NoUsersFile)?;
            let entry = users.lookup(dn).ok_or_else(|| AuthError::UnknownDn {
                dn: dn.chars().take(256).collect(),
            })?;
            return Ok(Identity {
                claims: entry.claims.clone(),
                jwthash: entry.jwthash.clone(),
                kind: IdentityKind::UserDn,
                expires: None,
            });
        }

        Ok(self.anonymous.clone())
    }

    /// The claims the users file gives the DN `dn`, if any (GET /access?user=).
    pub fn claims_for_dn(&self, dn: &str) -> Option<Claims> {
        Some(self.users.as_ref()?.lookup(dn)?.claims.clone())
    }

    /// Verified tokens held in the cache (for /metrics).
    pub fn cached_tokens(&self) -> u64 {
        self.verified.len() as u64
    }

    /// Verifies one JWT (already extracted) against the configured key and claim rules.
    pub fn verify_token(&self, token: &str) -> Result<Identity, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let claims = match self.verified.get(&digest) {
            Some(known) => {
                self.verifier.validate_claims(&known, now)?;
                Map::clone(&known)
            }
            None => {
                let claims = self.verifier.verify(token, now)?;
                self.verified.insert(digest, Arc::new(claims.clone()));
                claims
            }
        };
        // `verify` has checked that exp is a number in the future. Checked arithmetic: an exp
        // too far ahead for the clock to represent (1e19, 1e300) means no expiry, not a panic.
        let expires = claims
            .get("exp")
            .and_then(Value::as_f64)
            .and_then(|exp| Duration::try_from_secs_f64(exp).ok())
            .and_then(|exp| UNIX_EPOCH.checked_add(exp))
            .and_then(|t| t.checked_add(self.verifier.leeway()));
        Ok(Identity {
            claims: Claims::new(Value::Object(claims)),
            jwthash: hex::encode(digest),
            kind: IdentityKind::Jwt,
            expires,
        })
    }

    /// True when verifying with the generated development key.
    pub fn uses_dev_key(&self) -> bool {
        self.dev_key.is_some()
    }

    /// The dev private key file, when [`Authenticator::uses_dev_key`].
    pub fn dev_key_path(&self) -> Option<&Path> {
        self.dev_key.as_deref()
    }

    /// Allowed algorithms, e.g. `["ES512"]`, for `/config` and logs.
    pub fn algorithms(&self) -> Vec<String> {
        self.verifier
            .allowed()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect()
    }

    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }

    /// Number of DNs in the users file (0 without one).
    pub fn user_count(&self) -> usize {
        self.users.as_ref().map_or(0, users::Users::len)
    }

    /// IPv4-mapped IPv6 peers (`::ffff:127.0.0.1`, as a dual-stack listener reports them)
    /// are checked as IPv4 too, so `127.0.0.1/32` keeps meaning what it says.
    fn is_trusted(&self, peer: IpAddr) -> bool {
        let mapped = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&peer) || mapped.is_some_and(|m| net.contains(&m)))
    }
}

/// The allowed set: the key's whole family by default, else the configured names, each of
/// which must be one the key can verify (so `JWT_ALGORITHMS` can narrow, never widen into
/// algorithm confusion).
pub(crate) fn resolve_algorithms(
    kind: KeyKind,
    configured: Option<&[String]>,
) -> Result<Vec<JwtAlgorithm>, IdentityConfigError> {
    let names: Vec<&str> = configured
        .unwrap_or_default()
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(kind.algorithms().to_vec());
    }
    let mut out = Vec::new();
    for name in names {
        if name.eq_ignore_ascii_case("none") {
            return Err(IdentityConfigError::Algorithms(
                "\"none\" (unsigned tokens) is never accepted".to_owned(),
            ));
        }
        let alg = JwtAlgorithm::from_config(name).ok_or_else(|| {
            IdentityConfigError::Algorithms(format!(
                "unknown algorithm {name:?} (known: {})",
                alg::join(&JwtAlgorithm::ALL)
            ))
        })?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    jwt::check_allowed(kind, &out).map_err(IdentityConfigError::Algorithms)?;
    Ok(out)
}

fn clean_token(s: &str) -> &str {
    s.trim()
}

/// Cookie values may be quoted (RFC 6265 allows `name="value"`).
fn clean_cookie(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .trim()
}

/// Accepts the bare token or the whole `Bearer <token>` header value.
fn clean_bearer(s: &str) -> &str {
    let s = s.trim();
    match s.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => s[7..].trim(),
        _ => s,
    }
}

/// sha256 hex of [`canonical_json`]: a stable `jwthash` for callers without a JWT.
pub(crate) fn canonical_hash(v: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(v).as_bytes()))
}

/// Compact JSON with object keys sorted at every level, so equal claims hash equally
/// whatever order a file listed them in.
pub fn canonical_json(v: &Value) -> String {
    // Canonical JSON is built from serde_json's own UTF-8 output.
    String::from_utf8(crate::model::canonical::to_vec(v)).unwrap_or_default()
}
